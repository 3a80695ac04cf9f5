"""exp over a row of scores, vectorized: the softmax kernels' exponentials.

Legend: n element count.
libm's expf is a scalar call (about 5 ns); in float32 a Cephes-style polynomial with the power of
two added to the exponent bits runs in LLVM's vector loops instead (about 0.5 ns per element),
within 4 float32 ulps of the exact value (tests/test_kernels.py: test_exp_shifted). In float64 (the gradient
tests) np.exp is used.
"""

import numpy as np
from numba import njit

from ._common import JIT

_LOG2E = 1.44269504088896341
_LN2_HI = 0.693359375  # ln 2 split in two so that k * _LN2_HI is exact in float32
_LN2_LO = -2.12194440e-4
_LOWEST = -87.0  # exp(-87) ~ 1.6e-38: keeps 2^k a normal float (k >= -125), see below
_P0, _P1, _P2 = 1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3
_P3, _P4, _P5 = 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1


@njit(**JIT)
def exp_shifted(x, shift, kbuf):
    # x (n) = exp(x - shift), returning the sum. The arguments must not exceed `shift` by much
    # (softmax: shift is the row's maximum); kbuf (>= n) float32 scratch. Pass row slices: indexing
    # from 0 lets LLVM vectorize (an offset index defeats it). A NaN input gives NaN (the clamp
    # keeps it), so non-finite losses are still caught; -inf gives 1.6e-38 rather than 0 in float32.
    n = x.size
    if x.itemsize != 4:
        total = x.dtype.type(0)
        for i in range(n):
            e = np.exp(x[i] - shift)
            x[i] = e
            total += e
        return total
    f = np.float32
    for i in range(n):  # exp(v) = 2^k * exp(r), |r| <= ln2/2; the polynomial is exp(r)
        v = x[i] - shift
        v = max(v, f(_LOWEST))
        k = np.floor(v * f(_LOG2E) + f(0.5))
        r = v - k * f(_LN2_HI) - k * f(_LN2_LO)
        p = f(_P0) * r + f(_P1)
        p = p * r + f(_P2)
        p = p * r + f(_P3)
        p = p * r + f(_P4)
        p = p * r + f(_P5)
        x[i] = p * r * r + r + f(1)
        kbuf[i] = k
    # times 2^k: k added to the exponent field (exp(r) lies in [0.7, 1.42], so the field stays
    # positive for k >= -125)
    bits = x.view(np.int32)
    for i in range(n):
        bits[i] += np.int32(kbuf[i]) << 23
    total = f(0)
    for i in range(n):
        total += x[i]
    return total


# In float32, attention probabilities below 2^-64 are stored as exactly 0. A sharp head (scores spread by
# more than ~87, as Muon without --qk-norm learns) otherwise keeps probabilities near 1e-38, and the
# backward's products of them with gradients are subnormal floats, which x86 computes on a slow path:
# measured, such a run's backward slowed 4-22x (cProfile, docs/training.md). Below 2^-64 a probability
# changes neither out = P V nor its gradient within float32's precision (2^-24 of the largest term).
ATTENTION_FLOOR = 2.0**-64


@njit(**JIT)
def attention_floor(x):
    # softmax_row's floor for attention over x's dtype: ATTENTION_FLOOR in float32; float64 (the gradient
    # tests against finite differences) keeps every probability
    dt = x.dtype.type
    return dt(ATTENTION_FLOOR) if x.itemsize == 4 else dt(0)


@njit(**JIT)
def softmax_row(dst, src, kbuf, floor):
    # dst (n) = softmax(src (n)), shifted by the row's maximum; dst may be src itself;
    # kbuf (>= n) float32 scratch for exp_shifted; probabilities below floor are stored as 0 (attention_floor;
    # 0 keeps all, as the vocabulary softmax must: its loss takes -log p). Shared by the training softmaxes
    # and decoding.
    dt = dst.dtype.type
    maxval = dt(-np.inf)
    for i in range(src.size):
        maxval = max(maxval, src[i])
        dst[i] = src[i]
    inv = dt(1) / exp_shifted(dst, maxval, kbuf)
    low = dt(floor)
    for i in range(dst.size):
        p = dst[i] * inv
        dst[i] = dt(0) if p < low else p  # a NaN stays NaN, for the loss guard to see
