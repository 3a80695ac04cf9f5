"""Vision (cllm/vision): the image tokenizer, k-means in Numba, refusing bad image files, and a tiny
image model that learns stripes, samples them by class, completes them and classifies them."""

from __future__ import annotations

import base64
import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serve_helpers import tiny_run

from cllm import cli
from cllm.checkpoint import load_checkpoint, model_from_checkpoint
from cllm.data import prepare_dataset, read_token_file
from cllm.data.files import find_files
from cllm.errors import DataError, TokenizerError
from cllm.generation import SamplingConfig
from cllm.serve.engine import Engine
from cllm.serve.server import create_app
from cllm.tokenizers import TokenizerFileError, load_tokenizer
from cllm.training import TrainConfig, sample_text, train
from cllm.vision.dataset import is_image_source
from cllm.vision.images import load_images
from cllm.vision.likelihood import evaluate_images
from cllm.vision.palette import kmeans, kmeans_palette
from cllm.vision.sampling import complete_image, sample_images
from cllm.vision.tokenizer import ImageTokenizer

ROOT = Path(__file__).resolve().parents[1]


# ---- tokenizer ---------------------------------------------------------------------------------
def test_grayscale_round_trip_error_is_half_a_level():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (5, 6, 7, 1), dtype=np.uint8)
    for K in (2, 5, 17, 256):
        tok = ImageTokenizer.train(pixels, palette=K)
        back = tok.dequantize(tok.quantize(pixels)).astype(np.int64)
        step = 255 / (K - 1)
        assert np.abs(back - pixels).max() <= step / 2 + 0.5  # + 0.5: the levels are rounded to integers
        assert tok.vocab_size == K + 2  # colours, <image>, <end>


def test_rgb_round_trip_is_the_nearest_palette_colour():
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (4, 5, 5, 3), dtype=np.uint8)
    tok = ImageTokenizer.train(pixels, classes=["a", "b"], palette=12)
    assert 2 <= tok.num_colours <= 12
    flat = pixels.reshape(-1, 3).astype(np.int64)
    back = tok.dequantize(tok.quantize(pixels)).reshape(-1, 3).astype(np.int64)
    got = ((back - flat) ** 2).sum(1)
    nearest = ((flat[:, None, :] - tok.palette[None].astype(np.int64)) ** 2).sum(2).min(1)  # brute force
    assert np.array_equal(got, nearest)
    # an image made of palette colours comes back exactly
    exact = tok.palette[rng.integers(0, tok.num_colours, 30)].reshape(1, 5, 6, 3)
    tok2 = ImageTokenizer(5, 6, tok.palette)
    assert np.array_equal(tok2.dequantize(tok2.quantize(exact)), exact)


def test_few_colours_give_an_exact_palette():
    pixels = np.zeros((2, 3, 3, 3), np.uint8)
    pixels[0, 1] = (200, 10, 10)
    pal = kmeans_palette(pixels.reshape(-1, 3), 16)
    assert sorted(map(tuple, pal.tolist())) == [(0, 0, 0), (200, 10, 10)]


def test_records_save_and_load(tmp_path):
    pixels = np.random.default_rng(2).integers(0, 256, (3, 2, 4, 1), dtype=np.uint8)
    tok = ImageTokenizer.train(pixels, classes=["cat", "dog"], palette=4)
    rec = tok.encode_images(pixels, [1, 0, 1])
    assert rec.shape == (3, tok.record_len) == (3, 1 + 1 + 8 + 1)
    assert (rec[:, 0] == tok.bos_id).all() and (rec[:, -1] == tok.eos_id).all()
    assert rec[:, 1].tolist() == [tok.label_id("dog"), tok.label_id("cat"), tok.label_id("dog")]
    tok.save(tmp_path / "tokenizer.json")
    back = load_tokenizer(tmp_path)
    assert back.kind == "image" and back.classes == ["cat", "dog"] and back.vocab_size == tok.vocab_size
    assert np.array_equal(back.encode_images(pixels, [1, 0, 1]), rec)
    assert back.train_stats["images"] == 3
    with pytest.raises(TokenizerError, match="unknown class"):
        back.label_id("bird")
    text = (tmp_path / "tokenizer.json").read_text().replace('"height": 2', '"height": "2"')
    (tmp_path / "bad.json").write_text(text)
    with pytest.raises(TokenizerFileError, match="height"):
        load_tokenizer(tmp_path / "bad.json")


# ---- k-means -----------------------------------------------------------------------------------
def numpy_lloyd(points, centres, iterations):
    c = centres.astype(np.float64).copy()
    for _ in range(iterations):
        d = ((points[:, None, :].astype(np.float64) - c[None]) ** 2).sum(2)
        labels = d.argmin(1)  # ties: the lower index
        for k in range(len(c)):
            if (labels == k).any():
                c[k] = points[labels == k].astype(np.float64).mean(0)
        c = c.astype(np.float32).astype(np.float64)  # the kernel stores centres in float32
    d = ((points[:, None, :].astype(np.float64) - c[None]) ** 2).sum(2)
    return c, d.argmin(1)


@pytest.mark.parametrize("integer", [True, False])
def test_kmeans_equals_numpy(integer):
    rng = np.random.default_rng(3)
    if integer:  # pixel-like data with many exact ties
        points = rng.integers(0, 8, (500, 3)).astype(np.float32) * 32
    else:
        points = rng.normal(size=(700, 3)).astype(np.float32)
    init = points[rng.choice(len(points), 6, replace=False)].copy()
    for iterations in (1, 4):
        got_c, got_l = kmeans(points, init, iterations)
        want_c, want_l = numpy_lloyd(points, init, iterations)
        assert np.array_equal(got_l, want_l)
        np.testing.assert_allclose(got_c, want_c, rtol=1e-6, atol=1e-5)


# ---- bad files -----------------------------------------------------------------------------------
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height 8-bit grey pixels, with almost no data after it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )


def bad_folder(root: Path) -> Path:
    rng = np.random.default_rng(4)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L").save(root / f"good{i}.png")
    (root / "corrupt.png").write_bytes(b"this is not an image at all" * 10)
    buf = root / "noise.png"
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8), "L").save(buf)
    (root / "truncated.png").write_bytes(buf.read_bytes()[:2000])
    buf.unlink()
    (root / "bomb.png").write_bytes(bomb_png(100_000, 100_000))
    (root / "notes.txt").write_text("not an image")
    return root


def test_bad_image_files_are_refused_with_a_reason_each(tmp_path):
    messages = []
    images = load_images(bad_folder(tmp_path), warn=messages.append)
    assert len(images.pixels) == 2 and [Path(f).name for f in images.files] == ["good0.png", "good1.png"]
    assert dict(images.skipped) == {"corrupt": 1, "truncated": 1, "too large": 1, "not an image": 1}
    assert len(messages) == 3
    assert any("corrupt.png" in m and "corrupt" in m for m in messages)
    assert any("truncated.png" in m and "truncated" in m for m in messages)
    assert any("bomb.png" in m and "too many pixels" in m for m in messages)
    # a limit of our own, checked from the header before any pixel is decoded
    small = load_images(tmp_path / "good0.png", max_pixels=1000, warn=messages.append)
    assert len(small.pixels) == 1
    with pytest.raises(DataError, match="no usable images"):
        load_images(tmp_path / "good0.png", max_pixels=63, warn=messages.append)
    assert "more than the limit of 63" in messages[-1]


def test_cli_refuses_a_folder_without_usable_images(tmp_path):
    (tmp_path / "a.png").write_bytes(b"garbage")
    (tmp_path / "b.jpg").write_bytes(bomb_png(50_000, 50_000))
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "cli.py"),
            "train",
            str(tmp_path),
            "--checkpoint-dir",
            str(tmp_path / "run"),
            "--max-steps",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "error: no usable images" in r.stderr and "1 corrupt" in r.stderr and "1 too large" in r.stderr


def test_mixed_sizes_need_image_size(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (12, 10), (255, 0, 0)).save(tmp_path / "b.png")
    with pytest.raises(DataError, match="--image-size"):
        load_images(tmp_path)
    images = load_images(tmp_path, size=6)  # centre-crop to a square, then resize
    assert images.pixels.shape == (2, 6, 6, 3) and not images.grayscale
    assert (images.pixels[1] == (255, 0, 0)).all()


# ---- a tiny model learns stripes -----------------------------------------------------------------
H = W = 4


def stripes(kind: str, phase: int) -> np.ndarray:
    """(H, W) uint8: horizontal (rows alternate) or vertical (columns alternate) black/white stripes."""
    idx = np.arange(H)[:, None] if kind == "h" else np.arange(W)[None, :]
    return np.broadcast_to(((idx + phase) % 2) * 255, (H, W)).astype(np.uint8)


def is_stripes(img: np.ndarray, kind: str) -> bool:
    return any(np.array_equal(img[..., 0], stripes(kind, p)) for p in (0, 1))


@pytest.fixture(scope="module")
def stripes_model(tmp_path_factory):
    """A 1-layer model trained on 4x4 stripes in two class folders (h, v); trained once."""
    root = tmp_path_factory.mktemp("stripes")
    for split, n in (("train", 40), ("test", 6)):
        for kind in ("h", "v"):
            (root / split / kind).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(stripes(kind, i % 2), "L").save(root / split / kind / f"{i}.png")
    cfg = TrainConfig(
        data=str(root / "train"),
        palette=2,
        embed_dim=32,
        num_layers=1,
        num_heads=2,
        batch_size=16,
        # 500 steps, not fewer: the sampling tests below draw at temperature 1 and need every sample
        # right. After 150 steps 2 to 14 of 120 samples broke the pattern (four seeds), so whether
        # the tests passed depended on float rounding; after 500, none of 480 did.
        max_steps=500,
        learning_rate=1e-2,
        min_lr=1e-3,
        warmup_steps=10,
        eval_interval=500,
        sample_interval=10**6,
        checkpoint_dir=str(root / "run"),
        progress=False,
        threads=1,
        seed=0,
    )
    summary = train(cfg)
    ckpt = load_checkpoint(str(root / "run"))
    return summary, model_from_checkpoint(ckpt), load_tokenizer(ckpt.tokenizer_path), root


def test_tiny_model_learns_stripes(stripes_model):
    summary, _, tok, root = stripes_model
    assert tok.classes == ["h", "v"] and tok.record_len == 2 + 1 + H * W
    # every target is determined except the class (1 bit) and the first pixel's phase (1 bit):
    # 2 ln 2 nats over 19 targets is the floor, 0.073 nats per token
    assert summary["val_loss"] < 0.12, summary
    metrics = [json.loads(line) for line in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    bpd = [m["val_bits_per_dim"] for m in metrics if "val_bits_per_dim" in m]
    assert bpd and bpd[-1] < 0.25  # 2 bits per 16-pixel image is 0.125


def test_the_sample_printed_in_training_is_a_whole_image(stripes_model):
    """An image model's training sample is the image kind's (cllm/kinds.py): one sampled record drawn as text,
    its class then H rows of W characters, whatever the prompt and token count."""
    _, model, tok, _ = stripes_model
    for seed in range(4):
        lines = sample_text(model, tok, "", 50, seed=seed).splitlines()
        assert len(lines) == 1 + H and lines[0] in ("[h]", "[v]")
        rows = lines[1:]
        assert all(len(r) == W for r in rows)
        lines_of_one_colour = rows if lines[0] == "[h]" else ["".join(c) for c in zip(*rows)]
        assert all(len(set(line)) == 1 for line in lines_of_one_colour), lines


def test_class_conditioning_changes_samples(stripes_model):
    _, model, tok, _ = stripes_model
    for kind in ("h", "v"):
        pixels, labels = sample_images(model, tok, 6, SamplingConfig(temperature=1.0, seed=1), label=kind)
        assert labels == [kind] * 6
        assert all(is_stripes(p, kind) for p in pixels), pixels[..., 0]
    pixels, labels = sample_images(model, tok, 12, SamplingConfig(temperature=1.0, seed=2))
    assert set(labels) == {"h", "v"}  # unconditioned, the model draws the class too
    assert all(is_stripes(p, k) for p, k in zip(pixels, labels))


def test_completion_keeps_the_given_half(stripes_model):
    _, model, tok, _ = stripes_model
    for kind in ("h", "v"):
        image = stripes(kind, 1)[:, :, None]
        out, original = complete_image(model, tok, image, 5, SamplingConfig(temperature=1.0, seed=3))
        assert np.array_equal(original, image)
        assert (out[:, : H // 2] == image[None, : H // 2]).all()
        assert all(np.array_equal(o, image) for o in out)  # the top half determines the rest
        # the bottom three rows sampled from one given row of a horizontal pattern: still stripes
        out, _ = complete_image(model, tok, image, 3, SamplingConfig(temperature=1.0, seed=4), rows=1)
        assert (out[:, :1] == image[None, :1]).all()


def test_classification_and_bits_per_dim(stripes_model):
    _, model, tok, root = stripes_model
    r = evaluate_images(model, tok, str(root / "test"), classify=True)
    assert r["accuracy"] == 1.0 and r["confusion_matrix"] == [[6, 0], [0, 6]]
    assert r["bits_per_dim"] <= r["bits_per_dim_joint"] < 0.25


def test_generate_and_evaluate_commands(stripes_model, tmp_path, capsys):
    _, _, _, root = stripes_model
    run = str(root / "run")
    out = tmp_path / "grid.png"
    assert (
        cli.main(
            [
                "generate",
                "--checkpoint",
                run,
                "--image-out",
                str(out),
                "--num-samples",
                "4",
                "--seed",
                "0",
                "--class",
                "v",
            ]
        )
        == 0
    )
    img = Image.open(out)
    assert img.size[0] == img.size[1] > 2 * 4 * 8  # 2 x 2 cells of 4x4 pixels enlarged 8 times, with gaps
    out2 = tmp_path / "completions.png"
    assert (
        cli.main(
            [
                "generate",
                "--checkpoint",
                run,
                "--image-out",
                str(out2),
                "--num-samples",
                "3",
                "--complete",
                str(root / "test" / "h" / "0.png"),
            ]
        )
        == 0
    )
    assert Image.open(out2).size[0] > 5 * 32
    assert cli.main(["evaluate", run, "--classify", str(root / "test")]) == 0
    text = capsys.readouterr().out
    assert "accuracy     1.0000" in text and "bits/dim" in text
    assert cli.main(["generate", "--checkpoint", run, "--image-out", str(tmp_path / "x.png"), "--class", "cat"]) == 2
    assert "unknown class 'cat'" in capsys.readouterr().err


async def test_serve_returns_png_images(stripes_model, aiohttp_client):
    _, _, _, root = stripes_model
    client = await aiohttp_client(create_app(Engine.load(str(root / "run"), threads=1)))
    r = await client.post("/v1/images/generations", json={"n": 3, "class": "h", "seed": 0})
    assert r.status == 200, await r.text()
    body = await r.json()
    assert [d["class"] for d in body["data"]] == ["h"] * 3
    for d in body["data"]:
        img = np.asarray(Image.open(io.BytesIO(base64.b64decode(d["b64_json"]))))
        assert img.shape == (H, W) and is_stripes(img[:, :, None], "h")
    r = await client.post("/v1/images/generations", json={"n": 2, "class": "v", "seed": 1, "grid": True})
    body = await r.json()
    assert len(body["data"]) == 1 and body["data"][0]["classes"] == ["v", "v"]
    grid = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"]))))
    assert grid.shape[1] > 2 * W  # both images, enlarged, side by side
    r = await client.post("/v1/images/generations", json={"n": 2, "class": "cat"})
    assert r.status == 400 and (await r.json())["error"]["param"] == "class"


async def test_serve_says_a_text_model_makes_no_images(aiohttp_client, tmp_path_factory):
    client = await aiohttp_client(create_app(Engine.load(str(tiny_run(tmp_path_factory)["run"]), threads=1)))
    r = await client.post("/v1/images/generations", json={"n": 1})
    assert r.status == 400 and (await r.json())["error"]["code"] == "images_not_supported"


def test_rgb_folder_becomes_a_dataset(tmp_path):
    rng = np.random.default_rng(5)
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [250, 250, 250]], np.uint8)
    for i in range(10):  # 12x9 images of four colours; resized to 6x6 they blend a little
        Image.fromarray(colours[rng.integers(0, 4, (9, 12))], "RGB").save(tmp_path / f"{i}.png")
    ds = prepare_dataset(
        str(tmp_path), str(tmp_path / "out"), image_size=6, palette=8, val_fraction=0.2, progress=False
    )
    tok = ds.tokenizer
    assert tok.kind == "image" and tok.channels == 3 and not tok.labelled and 4 <= tok.num_colours <= 8
    train = np.asarray(read_token_file(ds.train_path))
    assert len(train) == 8 * tok.record_len + 1 and ds.meta["val_images"] == 2
    records = train[:-1].reshape(8, tok.record_len)
    assert (records[:, 0] == tok.bos_id).all() and (records[:, -1] == tok.eos_id).all()
    assert (records[:, 1:-1] < tok.num_colours).all()
    again = prepare_dataset(
        str(tmp_path), str(tmp_path / "out"), image_size=6, palette=8, val_fraction=0.2, progress=False
    )
    assert again.cached


def test_the_text_corpus_skips_image_folders():
    _, files, skipped = find_files(str(ROOT / "data"))
    assert files and not any("digits" in f for f, _ in files)  # not even data/digits/README.md
    assert skipped["image folders"] == 1
    assert not is_image_source(ROOT / "data") and is_image_source(ROOT / "data" / "digits" / "train")
