"""Sampling images from an image model, completing the top of an image, and grids of the results.

    pixels, labels = sample_images(model, tok, 16, SamplingConfig(temperature=1.0, seed=0), label="7")
    completions, given = complete_image(model, tok, image (H,W,C) uint8, 4, sampling)
    save_png(grid(pixels, cols=4), "samples.png")
    pngs, labels = sample_pngs(model, tok, 4, sampling)     # PNG files' bytes (the server's images)

Every sequence of a batch is at the same position of its record, so a batch of n images is decoded
with one KV cache of n sequences and one Model.decode_step per pixel. At a pixel position only colour
tokens may be drawn, at the label position only label tokens (the other logits are set to -inf
before temperature, top-k and top-p apply), so every sample is a whole image.
"""
from __future__ import annotations

import io

import numpy as np

from cllm.errors import ConfigError
from cllm.fileio import atomic_write_bytes
from cllm.generation import SamplingConfig, next_token
from cllm.vision.likelihood import logsumexp


def _check_model(model, tok) -> None:
    if model.config.max_seq_len < tok.record_len - 1 or model.config.vocab_size != tok.vocab_size:
        raise ConfigError(f"this checkpoint's model (context {model.config.max_seq_len}, vocabulary "
                          f"{model.config.vocab_size}) does not read {tok.width}x{tok.height} images of this tokenizer")


def _allowed(tok, position: int) -> np.ndarray:
    """(V,) bool: the tokens that may stand at `position` of a record."""
    mask = np.zeros(tok.vocab_size, bool)
    if tok.labelled and position == 1:
        mask[tok.label_offset:tok.bos_id] = True
    else:
        mask[:tok.num_colours] = True
    return mask


def fill_records(model, tok, fixed: np.ndarray, sampling) -> np.ndarray:
    """Complete records (n, record_len - 1) int32 where -1 marks a token to draw: known tokens are fed,
    missing ones sampled left to right with `sampling` (a cllm.generation.SamplingConfig)."""
    _check_model(model, tok)
    sampling.validate()
    seq = np.array(fixed, dtype=np.int32)
    n, P = seq.shape
    if (seq[:, 0] < 0).any():
        raise ConfigError("every record must start with a known token (<image>)")
    rng = np.random.default_rng(sampling.seed)
    cache = model.new_kv_cache(n)
    for pos in range(P - 1):
        logits = model.decode_step(seq[:, pos], pos, cache).astype(np.float64)  # (n, V): position pos + 1
        todo = np.flatnonzero(seq[:, pos + 1] < 0)
        if todo.size:
            logits[:, ~_allowed(tok, pos + 1)] = -np.inf
            for i in todo:
                seq[i, pos + 1] = next_token(logits[i], sampling, rng, [])
    return seq


def sample_images(model, tok, n: int, sampling, label=None) -> tuple[np.ndarray, list]:
    """n images (n, H, W, C) uint8 and their class names (None for a model without classes). `label`
    (a class name) conditions every sample; without it a model with classes draws the class too."""
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"--num-samples must be a positive integer, got {n!r}")
    fixed = np.full((n, tok.record_len - 1), -1, np.int32)
    fixed[:, 0] = tok.bos_id
    if label is not None:
        fixed[:, 1] = tok.label_id(label)
    seq = fill_records(model, tok, fixed, sampling)
    pixels = tok.dequantize(seq[:, tok.first_pixel:])
    names = [tok.classes[t - tok.label_offset] for t in seq[:, 1]] if tok.labelled else [None] * n
    return pixels, names


def label_posterior(model, tok, ids: np.ndarray, known: int) -> np.ndarray:
    """(L,) p(y | the first `known` pixels of ids (H*W,)), from log p(y, those pixels) for every class."""
    L = len(tok.classes)
    rec = tok.records(np.repeat(ids[None], L, axis=0), np.arange(L))
    rows = np.concatenate([rec, np.full((L, 1), tok.bos_id, np.int32)], axis=1)
    model.loss(rows[:, :-1], rows[:, 1:])
    logp = -model.token_losses()[:, :tok.first_pixel - 1 + known].sum(1, dtype=np.float64)  # (L, record_len) losses
    return np.exp(logp - logsumexp(logp))


def complete_image(model, tok, image: np.ndarray, n: int, sampling, rows: int | None = None,
                   label=None) -> tuple[np.ndarray, np.ndarray]:
    """(n completions (n, H, W, C), the quantized original (H, W, C)): the first `rows` rows (default
    half) of `image` are kept exactly (as the palette quantizes them) and the rest is sampled. For a
    model with classes and no `label`, each completion's class is drawn from p(class | kept rows)."""
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"--num-samples must be a positive integer, got {n!r}")
    rows = tok.height // 2 if rows is None else rows
    if not 0 < rows < tok.height:
        raise ConfigError(f"rows to keep must lie in 1..{tok.height - 1}, got {rows}")
    ids = tok.quantize(image)[0]
    known = rows * tok.width
    fixed = np.full((n, tok.record_len - 1), -1, np.int32)
    fixed[:, 0] = tok.bos_id
    fixed[:, tok.first_pixel:tok.first_pixel + known] = ids[:known]
    if tok.labelled:
        if label is not None:
            fixed[:, 1] = tok.label_id(label)
        else:
            post = label_posterior(model, tok, ids, known)
            rng = np.random.default_rng(None if sampling.seed is None else sampling.seed + 7919)
            greedy = sampling.temperature == 0
            draws = np.full(n, np.argmax(post)) if greedy else rng.choice(len(post), n, p=post)
            fixed[:, 1] = tok.label_offset + draws
    seq = fill_records(model, tok, fixed, sampling)
    return tok.dequantize(seq[:, tok.first_pixel:]), tok.dequantize(ids)[0]


def grid(images: np.ndarray, cols: int | None = None, scale: int | None = None, pad: int = 1):
    """A PIL image of images (n, H, W, C) uint8 in a grid of `cols` columns (default: about square),
    each enlarged `scale` times without smoothing (default: to at least 32 pixels), 1-pixel gaps."""
    from PIL import Image  # noqa: PLC0415 (costly at start-up, ~25-60 ms, and only pictures need it)

    n, H, W, C = images.shape
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    scale = scale or max(1, int(np.ceil(32 / max(H, W))))
    h, w = H * scale, W * scale
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, C), 128, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        big = img.repeat(scale, axis=0).repeat(scale, axis=1)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = big
    return Image.fromarray(canvas[:, :, 0] if C == 1 else canvas, "L" if C == 1 else "RGB")


def completion_row(original: np.ndarray, completions: np.ndarray, rows: int) -> np.ndarray:
    """(n + 2, H, W, C): the original, the part the model was given (the rest grey), the completions."""
    given = original.copy()
    given[rows:] = 128
    return np.concatenate([original[None], given[None], completions])


def completion_grid(original: np.ndarray, completions: np.ndarray, rows: int, scale: int | None = None):
    """One row of a grid: completion_row's images."""
    return grid(completion_row(original, completions, rows), cols=len(completions) + 2, scale=scale)


def save_png(img, path: str) -> None:
    """Write a PIL image as PNG atomically (a reader never sees half a file)."""
    atomic_write_bytes(str(path), png_bytes(img))


def png_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def sample_pngs(model, tok, n: int, sampling, label=None, as_grid: bool = False) -> tuple[list[bytes], list]:
    """n samples as PNG files' bytes: one PNG of them all in a grid (as_grid), else one per image at its own
    size (a PNG pixel per pixel); and the n images' class names (None for a model without classes). The
    image kind's `sample_pngs` (cllm/vision/kind.py): what POST /v1/images/generations returns."""
    pixels, labels = sample_images(model, tok, n, sampling, label=label)
    if as_grid:
        return [png_bytes(grid(pixels))], labels
    return [png_bytes(grid(p[None], scale=1, pad=0)) for p in pixels], labels


def sample_picture(model, tok, prompt: str, n_tokens: int, seed: int, temperature: float = 0.8) -> str:
    """One image sampled (its class too, for a model with classes) and drawn as text (ImageTokenizer.decode):
    the sample printed during training. `prompt` and `n_tokens` do not apply: a sample is one whole image."""
    fixed = np.full((1, tok.record_len - 1), -1, np.int32)
    fixed[:, 0] = tok.bos_id
    seq = fill_records(model, tok, fixed, SamplingConfig(temperature=temperature, top_k=0, seed=seed))
    return tok.decode(seq[0])
