"""GELU, tanh approximation (GPT-2's): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

Legend: N element count.
In float32 the tanh is a rational function (a degree-13/6 minimax fit on [-7.9, 7.9], the one
Eigen uses for float) that LLVM vectorizes; libm's tanhf is a scalar call and made GELU a quarter of
the training step. In float64 (the gradient tests) the exact np.tanh is used.
"""
import numpy as np
from numba import njit, prange

from ._common import JIT, PJIT, ROW_BLOCKS

GELU_SCALE = np.sqrt(2.0 / np.pi)

# numerator (odd powers 1..13) and denominator (even powers 0..6) of the rational tanh
_A1, _A3, _A5, _A7 = 4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08
_A9, _A11, _A13 = -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16
_B0, _B2, _B4, _B6 = 4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06
_CLAMP = 7.90531110763549805  # beyond it the fit is 1 to float32 precision


@njit(inline="always", **JIT)
def tanh_f32(x):
    # x float32 -> tanh(x), within a few float32 ulps; exactly +-1 beyond the fit's range, so that
    # gelu' = ... (1 - tanh^2) x ... is exact for large activations. Branch-free (a clamp and two
    # selects) so that LLVM vectorizes the loops that call it: 0.9 ns per element instead of 4.5.
    c = np.float32(_CLAMP)
    xc = min(max(x, -c), c)
    x2 = xc * xc
    p = x2 * np.float32(_A13) + np.float32(_A11)
    p = x2 * p + np.float32(_A9)
    p = x2 * p + np.float32(_A7)
    p = x2 * p + np.float32(_A5)
    p = x2 * p + np.float32(_A3)
    p = x2 * p + np.float32(_A1)
    p = xc * p
    q = x2 * np.float32(_B6) + np.float32(_B4)
    q = x2 * q + np.float32(_B2)
    q = x2 * q + np.float32(_B0)
    r = p / q
    r = np.float32(1) if x >= c else r
    r = np.float32(-1) if x <= -c else r
    return r


@njit(**JIT)
def gelu_span(out, inp):
    # out (n) = gelu(inp (n)) on one thread: gelu_forward's blocks, and the rows that
    # cllm/kernels/matmul.matmul_gelu_forward has just computed. Pass slices indexed from 0 (vectorized).
    s = inp.dtype.type(GELU_SCALE)
    k = inp.dtype.type(0.044715)
    half = inp.dtype.type(0.5)
    one = inp.dtype.type(1)
    if inp.itemsize == 4:
        for i in range(out.size):
            x = inp[i]
            out[i] = half * x * (one + tanh_f32(s * (x + k * x * x * x)))
    else:
        for i in range(out.size):
            x = inp[i]
            out[i] = half * x * (one + np.tanh(s * (x + k * x * x * x)))


@njit(**JIT)
def gelu_grad(x, th, s, k3, half, one):
    # d gelu / dx at x, given th = tanh(s (x + k x^3))
    return half * (one + th) + x * half * (one - th * th) * s * (one + k3 * x * x)


@njit(**JIT)
def gelu_backward_span(dinp, inp, dout, overwrite):
    # dinp (n) += gelu'(inp (n)) * dout (n) (= with overwrite) on one thread: gelu_backward's blocks,
    # and the rows of dout that cllm/kernels/matmul.matmul_gelu_backward has just computed
    s = inp.dtype.type(GELU_SCALE)
    k = inp.dtype.type(0.044715)
    k3 = inp.dtype.type(3.0 * 0.044715)
    half = inp.dtype.type(0.5)
    one = inp.dtype.type(1)
    if inp.itemsize == 4:
        for i in range(dinp.size):
            x = inp[i]
            th = tanh_f32(s * (x + k * x * x * x))
            g = gelu_grad(x, th, s, k3, half, one) * dout[i]
            dinp[i] = g if overwrite else dinp[i] + g
    else:
        for i in range(dinp.size):
            x = inp[i]
            th = np.tanh(s * (x + k * x * x * x))
            g = gelu_grad(x, th, s, k3, half, one) * dout[i]
            dinp[i] = g if overwrite else dinp[i] + g


@njit(**PJIT)
def gelu_forward(out, inp, N):
    # out (N) = gelu(inp (N));  one contiguous block per thread
    for blk in prange(ROW_BLOCKS):
        i0 = blk * N // ROW_BLOCKS
        i1 = (blk + 1) * N // ROW_BLOCKS
        gelu_span(out[i0:i1], inp[i0:i1])


@njit(**PJIT)
def gelu_backward(dinp, inp, dout, N, overwrite=False):
    # dinp (N) += gelu'(inp) * dout  (= with overwrite: what dinp held is ignored, NaN included)
    for blk in prange(ROW_BLOCKS):
        i0 = blk * N // ROW_BLOCKS
        i1 = (blk + 1) * N // ROW_BLOCKS
        gelu_backward_span(dinp[i0:i1], inp[i0:i1], dout[i0:i1], overwrite)
