"""SwiGLU, the gated MLP activation of Llama: out = silu(gate) * up, silu(g) = g * sigmoid(g).

Legend: N rows (B*T), F hidden units.
inp (N,2F) holds per row the gate projection (first F) then the up projection (next F): one product
with the stacked (2F, C) weight makes both. The sigmoid's exponential is cllm/kernels/fastexp.exp_shifted,
which LLVM vectorizes in float32 (libm's expf is a scalar call); its argument -g is clamped to
[-87, 88] first, where exp stays a normal float32: the sigmoid changes by under 1e-37 beyond it.
"""
import numpy as np
from numba import njit, prange

from ._common import JIT, PARALLEL_MIN_WORK, PJIT, ROW_BLOCKS
from .fastexp import exp_shifted

_LO, _HI = -87.0, 88.0


@njit(**JIT)
def _sigmoid_span(s, g, kbuf):
    # s (n) = sigmoid(g (n));  kbuf (>= n) float32 scratch of exp_shifted
    dt = g.dtype.type
    lo, hi = dt(_LO), dt(_HI)
    for i in range(s.size):
        s[i] = min(max(-g[i], lo), hi)
    exp_shifted(s, dt(0), kbuf)
    one = dt(1)
    for i in range(s.size):
        s[i] = one / (one + s[i])


@njit(**JIT)
def swiglu_rows(out, inp, F, r0, r1):
    # rows r0..r1-1 of swiglu_forward on the calling thread (also the rows that a fused product just made)
    s = np.empty(F, dtype=inp.dtype)
    kbuf = np.empty(F, dtype=np.float32)
    for n in range(r0, r1):
        g = inp[2 * n * F:(2 * n + 1) * F]  # slices indexed from 0: LLVM vectorizes the loops
        u = inp[(2 * n + 1) * F:(2 * n + 2) * F]
        y = out[n * F:(n + 1) * F]
        _sigmoid_span(s, g, kbuf)
        for i in range(F):
            y[i] = g[i] * s[i] * u[i]


@njit(**JIT)
def swiglu_backward_rows(dinp, dout, inp, F, r0, r1, overwrite):
    # rows r0..r1-1 of swiglu_backward on the calling thread
    dt = inp.dtype.type
    one = dt(1)
    s = np.empty(F, dtype=inp.dtype)
    kbuf = np.empty(F, dtype=np.float32)
    for n in range(r0, r1):
        g = inp[2 * n * F:(2 * n + 1) * F]
        u = inp[(2 * n + 1) * F:(2 * n + 2) * F]
        dg = dinp[2 * n * F:(2 * n + 1) * F]
        du = dinp[(2 * n + 1) * F:(2 * n + 2) * F]
        dy = dout[n * F:(n + 1) * F]
        _sigmoid_span(s, g, kbuf)
        for i in range(F):
            # silu'(g) = s (1 + g (1 - s))
            vg = dy[i] * u[i] * s[i] * (one + g[i] * (one - s[i]))
            vu = dy[i] * g[i] * s[i]
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
