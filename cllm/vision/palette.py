"""Colour palettes: K evenly spaced grey levels, or K colours learnt by k-means over sampled pixels
(Image GPT's approach; its palette has 512 colours), and nearest-colour quantization.

    palette = kmeans_palette(pixels (n, 3) uint8, K=16, seed=0)  # (K', 3) uint8, K' <= K
    ids = quantize(pixels, palette)                             # (n,) int32 nearest colour
"""
from __future__ import annotations

import numpy as np

from cllm.errors import TokenizerError

MAX_SAMPLE = 200_000  # pixels k-means learns from (a uniform sample of the data's pixels)


def gray_levels(K: int) -> np.ndarray:
    """(K, 1) uint8: round(k * 255 / (K - 1)), k = 0..K-1 (K = 17 holds every 0..16 value x 255/16)."""
    if not 2 <= K <= 256:
        raise TokenizerError(f"--palette must be between 2 and 256 grey levels, got {K}")
    return np.rint(np.arange(K) * 255.0 / (K - 1)).astype(np.uint8)[:, None]


def quantize(pixels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(n,) int32 index of the nearest palette colour (squared distance, ties: the lower index) for
    pixels (n, C) uint8 and a palette (K, C) uint8."""
    from cllm.kernels.kmeans import kmeans_assign  # noqa: PLC0415 (costly: Numba, ~0.45 s; see kmeans below)

    pts = np.ascontiguousarray(pixels, dtype=np.float32).reshape(-1)
    n, C = pixels.shape
    labels = np.empty(n, np.int32)
    dist = np.empty(n, np.float64)
    kmeans_assign(labels, dist, pts, np.ascontiguousarray(palette, dtype=np.float32).reshape(-1), n, len(palette), C)
    return labels


def _kmeanspp(points: np.ndarray, K: int, rng: np.random.Generator) -> np.ndarray:
    """(K, D) float32 initial centres by k-means++ (each new centre drawn with probability
    proportional to the squared distance to the nearest centre so far)."""
    n = len(points)
    centres = [points[rng.integers(n)]]
    d = ((points - centres[0]) ** 2).sum(1, dtype=np.float64)
    for _ in range(1, K):
        total = d.sum()
        if total == 0:
            break
        i = int(np.searchsorted(np.cumsum(d), rng.random() * total, side="right"))
        centres.append(points[min(i, n - 1)])
        d = np.minimum(d, ((points - centres[-1]) ** 2).sum(1, dtype=np.float64))
    return np.asarray(centres, dtype=np.float32)


def kmeans(points: np.ndarray, centres: np.ndarray, iterations: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's algorithm in Numba (cllm/kernels/kmeans.py) from the given centres: (centres (K, D) float32,
    labels (n,) int32). Stops early when no label changes."""
    # imported here: costly at start-up (Numba and the kernels, ~0.45 s), and cllm/kinds.py's lookup imports this
    # module for every prepare and train, of text too
    from cllm.kernels.kmeans import kmeans_assign, kmeans_update  # noqa: PLC0415

    n, D = points.shape
    K = len(centres)
    pts = np.ascontiguousarray(points, dtype=np.float32).reshape(-1)
    c = np.ascontiguousarray(centres, dtype=np.float32).reshape(-1).copy()
    labels, previous = np.empty(n, np.int32), np.full(n, -1, np.int32)
    dist, counts = np.empty(n, np.float64), np.zeros(K, np.int64)
    for _ in range(iterations):
        kmeans_assign(labels, dist, pts, c, n, K, D)
        if np.array_equal(labels, previous):
            break
        previous[:] = labels
        kmeans_update(c, counts, pts, labels, n, K, D)
    kmeans_assign(labels, dist, pts, c, n, K, D)
    return c.reshape(K, D), labels


def kmeans_palette(pixels: np.ndarray, K: int, seed: int = 0, iterations: int = 30) -> np.ndarray:
    """(K', C) uint8 palette for pixels (n, C) uint8: the distinct colours themselves when there are at
    most K of them (exact), else k-means++ and Lloyd over a sample of MAX_SAMPLE pixels, rounded and
    de-duplicated, most used colour first."""
    if not 2 <= K <= 4096:
        raise TokenizerError(f"--palette must be between 2 and 4096 colours, got {K}")
    distinct = np.unique(pixels, axis=0)
    if len(distinct) <= K:
        return distinct.astype(np.uint8)
    rng = np.random.default_rng(seed)
    sample = pixels if len(pixels) <= MAX_SAMPLE else pixels[rng.choice(len(pixels), MAX_SAMPLE, replace=False)]
    sample = sample.astype(np.float32)
    centres, labels = kmeans(sample, _kmeanspp(sample, K, rng), iterations)
    counts = np.bincount(labels, minlength=len(centres))
    order = np.argsort(-counts, kind="stable")
    palette = np.clip(np.rint(centres[order]), 0, 255).astype(np.uint8)
    _, first = np.unique(palette, axis=0, return_index=True)
    return palette[np.sort(first)]
