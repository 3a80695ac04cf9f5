"""k-means (Lloyd's algorithm) over points in D dimensions: the colour palette of an image tokenizer.

Legend: N points, K centres, D dimensions (3 for RGB). Points and centres are flat float32 arrays,
row-major (N*D) and (K*D). Distances are summed in float64: for pixel values (integers, and centres
that are float32) every term is exact, so equal distances are exactly equal and ties go to the lower
centre index, as NumPy's argmin does (tests/test_vision.py compares the two).
"""
import numpy as np
from numba import njit, prange

from ._common import JIT, PARALLEL_MIN_WORK, PJIT


@njit(**JIT)
def _nearest(labels, dist, points, centers, i0, i1, K, D):
    for i in range(i0, i1):
        best, best_d = 0, np.inf
        for k in range(K):
            d = 0.0
            for j in range(D):
                diff = np.float64(points[i * D + j]) - np.float64(centers[k * D + j])
                d += diff * diff
            if d < best_d:
                best, best_d = k, d
        labels[i] = best
        dist[i] = best_d


@njit(**PJIT)
def kmeans_assign(labels, dist, points, centers, N, K, D):
    # labels (N) int32 = index of the nearest centre; dist (N) float64 = its squared distance
    # points (N*D) float32, centers (K*D) float32; ties go to the lower centre index
    if N * K < PARALLEL_MIN_WORK:
        _nearest(labels, dist, points, centers, 0, N, K, D)
        return
    blocks = 64
    for b in prange(blocks):
        _nearest(labels, dist, points, centers, b * N // blocks, (b + 1) * N // blocks, K, D)


@njit(**JIT)
def kmeans_update(centers, counts, points, labels, N, K, D):
    # centers (K*D) = mean of the points (N*D) whose label (N) is k, summed in float64;
    # counts (K) int64 = points per centre; a centre with no points keeps its value
    sums = np.zeros(K * D, np.float64)
    counts[:] = 0
    for i in range(N):
        k = labels[i]
        counts[k] += 1
        for j in range(D):
            sums[k * D + j] += points[i * D + j]
    for k in range(K):
        if counts[k] > 0:
            for j in range(D):
                centers[k * D + j] = sums[k * D + j] / counts[k]
