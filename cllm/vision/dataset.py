"""A folder of images -> a token dataset (DIR/tokenizer.json, train.bin, val.bin, meta.json), the same
files a text corpus becomes, so that training, checkpoints and resume are unchanged.

Each image is one record of the image tokenizer (cllm/vision/tokenizer.py); records are written one
after another and each split ends with one more `<image>` token, so that the window of the last image
(record_len + 1 tokens: its record and the target after `<end>`) exists. Training draws windows that
start at record boundaries (BatchSampler's `align`), and validation's disjoint windows of record_len
tokens start there too, so every pixel is always seen at its own position.

Split: a fixed permutation (seed 0) of the images; its last `val_fraction` goes to val. Cache: as for
text, meta.json holds a key hashing the image files and the options.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time

import numpy as np

from cllm.data.prepare import PreparedDataset, PrepareOptions
from cllm.data.tokenfile import TokenFileWriter, read_token_header
from cllm.errors import CLLMError, ConfigError, DataError
from cllm.evaluate import window_losses
from cllm.fileio import atomic_write_text
from cllm.tokenizers import load_tokenizer
from cllm.vision.images import find_images, is_image_name, load_images
from cllm.vision.tokenizer import ImageTokenizer

PREPARE_VERSION = 1


def is_image_source(path) -> bool:
    """True for an image file, or a directory whose files and whose sub-folders' files (ImageFolder's
    two levels; deeper ones are not looked at, so that a text tree is not walked twice) are mostly
    images. data/ is text: its images lie three levels down, in data/digits/train/<digit>/."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return is_image_name(path)
    if not os.path.isdir(path) or os.path.exists(os.path.join(path, "meta.json")):
        return False  # missing (reported by the text loader), or a prepared dataset
    images = others = 0
    for entry in _visible(path):
        for e in (_visible(entry.path) if entry.is_dir() else [entry]):
            if e.is_file():
                images += is_image_name(e.name)
                others += not is_image_name(e.name)
    return images > others


def holds_images(path: str) -> bool:
    """An image folder, or a folder of image folders (data/digits: train/ and test/): a text corpus
    skips it whole, its README included."""
    return is_image_source(path) or any(e.is_dir() and is_image_source(e.path) for e in _visible(path))


def _visible(path: str) -> list:
    try:
        return [e for e in os.scandir(path) if not e.name.startswith(".")]
    except OSError:
        return []


def _cache_key(found, options: dict) -> str:
    h = hashlib.blake2b(digest_size=20)
    h.update(json.dumps({"image_prepare_version": PREPARE_VERSION, "options": options}, sort_keys=True).encode())
    for f in found.files:
        h.update(b"\0" + os.path.relpath(f, found.root).encode("utf-8", "surrogatepass") + b"\0")
        with open(f, "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()


def _cached(out_dir: str, key: str):
    try:
        with open(os.path.join(out_dir, "meta.json"), encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("cache_key") != key:
            return None
        paths = [os.path.join(out_dir, f"{s}.bin") for s in ("train", "val")]
        if [read_token_header(p)["count"] for p in paths] != [meta["train_tokens"], meta["val_tokens"]]:
            return None
        tok = load_tokenizer(os.path.join(out_dir, "tokenizer.json"))
    except (OSError, ValueError, KeyError, CLLMError):
        return None
    return PreparedDataset(out_dir, tok, *paths, meta, cached=True)


def check_image_options(image_size, palette) -> None:
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ConfigError(f"--image-size must be a positive integer, got {image_size!r}")
    if isinstance(palette, bool) or not isinstance(palette, int) or not 2 <= palette <= 4096:
        raise ConfigError(f"--palette must be an integer from 2 to 4096, got {palette!r}")


def prepare_image_dataset(data_path, out_dir, opts: PrepareOptions) -> PreparedDataset:
    """Read, tokenize and split the images at data_path into out_dir; returns a PreparedDataset. Of the
    PrepareOptions (cllm/data/prepare.py) it reads image_size, grayscale, palette, val_fraction and force;
    grayscale False still reads grayscale when every image is (PNG mode L, ...)."""
    image_size, grayscale, palette, val_fraction = opts.image_size, opts.grayscale, opts.palette, opts.val_fraction
    check_image_options(image_size, palette)
    found = find_images(data_path)
    options = {"image_size": image_size, "grayscale": bool(grayscale), "palette": palette,
               "val_fraction": float(val_fraction)}
    key = _cache_key(found, options)
    out_dir = os.fspath(out_dir)
    if not opts.force and (cached := _cached(out_dir, key)) is not None:
        return cached
    t0 = time.perf_counter()
    images = load_images(data_path, image_size, True if grayscale else None)
    n = len(images.pixels)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and (n_val == 0 or n_val == n):
        raise DataError(f"{n} image(s) under {data_path} cannot be split with --val-fraction {val_fraction}; "
                        "give more images")
    order = np.random.default_rng(0).permutation(n)
    train_idx, val_idx = np.sort(order[:n - n_val]), np.sort(order[n - n_val:])
    tok = ImageTokenizer.train(images.pixels[train_idx], images.classes, palette)
    labels = images.labels
    os.makedirs(out_dir, exist_ok=True)
    meta_path = os.path.join(out_dir, "meta.json")
    if os.path.exists(meta_path):
        os.unlink(meta_path)
    paths = [os.path.join(out_dir, f"{s}.bin") for s in ("train", "val")]
    counts = []
    for path, idx in zip(paths, (train_idx, val_idx)):
        with TokenFileWriter(path, tok.vocab_size) as w:
            w.write(tok.encode_images(images.pixels[idx], None if labels is None else labels[idx]).reshape(-1))
            w.write([tok.bos_id])  # the target after the last <end> (see the module doc)
        counts.append(w.count)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    meta = {"format": "cllm-dataset", "version": 1, "kind": "image", "cache_key": key,
            "source": os.path.abspath(os.fspath(data_path)), "tokenizer": "image", "vocab_size": tok.vocab_size,
            "train_tokens": counts[0], "val_tokens": counts[1], "train_images": len(train_idx),
            "val_images": len(val_idx), "record_len": tok.record_len, "bos_id": tok.bos_id, "eos_id": tok.eos_id,
            "pad_id": None, "unk_id": None, "options": options, "classes": images.classes,
            "image": {"height": tok.height, "width": tok.width, "channels": tok.channels,
                      "palette_size": tok.num_colours},
            "skipped": dict(images.skipped), "seconds": round(time.perf_counter() - t0, 3)}
    atomic_write_text(meta_path, json.dumps(meta, indent=1) + "\n")
    if images.skipped:  # each refused file had its own line; this is the count
        print(summary(meta), file=sys.stderr)
    return PreparedDataset(out_dir, tok, paths[0], paths[1], meta)


def summary(meta: dict) -> str:
    img = meta["image"]
    skipped = ", ".join(f"{n} {r}" for r, n in sorted(meta["skipped"].items()) if n)
    classes = f", {len(meta['classes'])} classes" if meta["classes"] else ", no classes"
    size = f"{img['width']}x{img['height']}x{img['channels']}"
    return (f"images: {meta['train_images']:,} train + {meta['val_images']:,} val, {size}, palette "
            f"{img['palette_size']}{classes}" + (f" (skipped: {skipped})" if skipped else ""))


def image_seq_len(tokenizer, requested: int | None) -> int:
    """The context an image model trains with: one record. A different --seq-len is refused."""
    R = tokenizer.record_len
    if requested is not None and requested != R:
        raise ConfigError(f"an image model's context is one image: {R} tokens for {tokenizer.width}x"
                          f"{tokenizer.height} images; drop --seq-len (it was {requested})")
    return R


def evaluate_records(model, tokens: np.ndarray, tokenizer, batch_size: int) -> dict:
    """Validation over every image record of a split (tokens: records then one `<image>`):
    loss (mean nats per token over every target, as training's validation loss) and bits per
    dimension, -log2 p(label, pixels) / (pixels x channels): the label's and the pixels' targets only."""
    R = tokenizer.record_len
    n = (len(tokens) - 1) // R
    first = tokenizer.first_pixel - 1 - tokenizer.labelled  # target column of the label (or first pixel)
    last = tokenizer.first_pixel - 1 + tokenizer.pixels_per_image  # one past the last pixel's target column
    total = image_nats = 0.0
    for losses, _ in window_losses(model, tokens, R, batch_size):  # the windows are the records
        total += float(losses.sum(dtype=np.float64))
        image_nats += float(losses[:, first:last].sum(dtype=np.float64))
    return {"loss": total / (n * R), "bits_per_dim": image_nats / np.log(2) / (n * tokenizer.dims_per_image),
            "images": n}
