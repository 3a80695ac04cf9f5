"""SwiGLU, the gated MLP activation of Llama: out = silu(gate) * up, silu(g) = g * sigmoid(g) = g / (1 + exp(-g)).

Legend: N rows (B*T), F hidden units.
inp (N,2F) holds per row the gate projection (first F) then the up projection (next F): one product
with the stacked (2F, C) weight makes both. In float32 exp(-g) is cllm/kernels/fastexp.py's polynomial
with the power of two added to the exponent bits, in loops LLVM vectorizes (libm's expf is a scalar
call), and in fewer passes than fastexp.exp_shifted (no clamp-copy, no sum): 0.58 against 0.7 ns per
element of the forward on one thread, measured; -g is clamped to [-87, 88], where exp stays a normal
float32 (the sigmoid changes by under 1e-37 beyond it). In float64 (the gradient tests) np.exp is used.
"""
import numpy as np
from numba import njit, prange

from ._common import JIT, PARALLEL_MIN_WORK, PJIT, ROW_BLOCKS
from .fastexp import _LN2_HI, _LN2_LO, _LOG2E, _P0, _P1, _P2, _P3, _P4, _P5

_LO, _HI = -87.0, 88.0


@njit(**JIT)
def _exp_neg_span(e, g, kbits):
    # e (n) = exp(-g (n));  kbits (>= n) int32 scratch (the powers of two, as exponent-field increments)
    n = e.size
    if g.itemsize != 4:
        for i in range(n):
            e[i] = np.exp(-g[i])
        return
    f = np.float32
    for i in range(n):  # exp(v) = 2^k exp(r), |r| <= ln2/2, exp(r) a polynomial in r
        v = min(max(-g[i], f(_LO)), f(_HI))
        k = np.floor(v * f(_LOG2E) + f(0.5))
        r = v - k * f(_LN2_HI) - k * f(_LN2_LO)
        p = f(_P0) * r + f(_P1)
        p = p * r + f(_P2)
        p = p * r + f(_P3)
        p = p * r + f(_P4)
        p = p * r + f(_P5)
        e[i] = p * r * r + r + f(1)
        kbits[i] = np.int32(k) << 23
    bits = e.view(np.int32)  # times 2^k: exp(r) lies in [0.7, 1.42], so the field stays in range
    for i in range(n):
        bits[i] += kbits[i]


@njit(**JIT)
def swiglu_rows(out, inp, F, r0, r1):
    # rows r0..r1-1 of swiglu_forward on the calling thread (also the rows that a fused product just made)
    one = inp.dtype.type(1)
    e = np.empty(F, dtype=inp.dtype)
    kbits = np.empty(F, dtype=np.int32)
    for n in range(r0, r1):
        g = inp[2 * n * F:(2 * n + 1) * F]  # slices indexed from 0: LLVM vectorizes the loops
        u = inp[(2 * n + 1) * F:(2 * n + 2) * F]
        y = out[n * F:(n + 1) * F]
        _exp_neg_span(e, g, kbits)
        for i in range(F):
            y[i] = g[i] * u[i] / (one + e[i])


@njit(**JIT)
def swiglu_backward_rows(dinp, dout, inp, F, r0, r1, overwrite):
    # rows r0..r1-1 of swiglu_backward on the calling thread
    dt = inp.dtype.type
    one = dt(1)
    e = np.empty(F, dtype=inp.dtype)
    kbits = np.empty(F, dtype=np.int32)
    for n in range(r0, r1):
        g = inp[2 * n * F:(2 * n + 1) * F]
        u = inp[(2 * n + 1) * F:(2 * n + 2) * F]
        dg = dinp[2 * n * F:(2 * n + 1) * F]
        du = dinp[(2 * n + 1) * F:(2 * n + 2) * F]
        dy = dout[n * F:(n + 1) * F]
        _exp_neg_span(e, g, kbits)
        for i in range(F):
            s = one / (one + e[i])  # sigmoid(g);  silu'(g) = s (1 + g (1 - s))
            vg = dy[i] * u[i] * s * (one + g[i] * (one - s))
            vu = dy[i] * g[i] * s
            dg[i] = vg if overwrite else dg[i] + vg
            du[i] = vu if overwrite else du[i] + vu


@njit(**PJIT)
def swiglu_forward(out, inp, N, F):
    # out (N,F) = silu(inp[:, :F]) * inp[:, F:];  inp (N,2F) gate then up per row.
    # One block of rows per thread (one thread when small).
    if N * F < PARALLEL_MIN_WORK:
        swiglu_rows(out, inp, F, 0, N)
        return
    nblk = min(ROW_BLOCKS, N)
    for blk in prange(nblk):
        swiglu_rows(out, inp, F, blk * N // nblk, (blk + 1) * N // nblk)


@njit(**PJIT)
def swiglu_backward(dinp, dout, inp, N, F, overwrite=False):
    # dinp (N,2F) += [dout * u * silu'(g), dout * silu(g)] (= with overwrite: what it held is ignored);
    # dout (N,F);  inp (N,2F) the forward's input (g, u per row)
    if N * F < PARALLEL_MIN_WORK:
        swiglu_backward_rows(dinp, dout, inp, F, 0, N, overwrite)
        return
    nblk = min(ROW_BLOCKS, N)
    for blk in prange(nblk):
        swiglu_backward_rows(dinp, dout, inp, F, blk * N // nblk, (blk + 1) * N // nblk, overwrite)
