"""ReLU squared, the MLP activation of modded-nanogpt (--activation relu2): out = max(x, 0)^2.

Legend: N rows (B*T), F hidden units. inp and out (N,F): unlike SwiGLU there is no gate, so the fc
product that feeds it has F rows, not 2F. The backward reads the forward's input: d/dx = 2 max(x, 0).
"""
from numba import njit, prange

from ._common import JIT, PARALLEL_MIN_WORK, PJIT, ROW_BLOCKS


@njit(**JIT)
def relu2_rows(out, inp, F, r0, r1):
    # rows r0..r1-1 of relu2_forward on the calling thread
    zero = inp.dtype.type(0)
    for n in range(r0, r1):
        x = inp[n * F:(n + 1) * F]  # slices indexed from 0: LLVM vectorizes the loop
        y = out[n * F:(n + 1) * F]
        for i in range(F):
            r = max(x[i], zero)
            y[i] = r * r


@njit(**JIT)
def _relu2_backward_rows(dinp, dout, inp, F, r0, r1, overwrite):
    dt = inp.dtype.type
    zero, two = dt(0), dt(2)
    for n in range(r0, r1):
        x = inp[n * F:(n + 1) * F]
        dy = dout[n * F:(n + 1) * F]
        dx = dinp[n * F:(n + 1) * F]
        for i in range(F):
            v = two * max(x[i], zero) * dy[i]
            dx[i] = v if overwrite else dx[i] + v


@njit(**PJIT)
def relu2_forward(out, inp, N, F):
    # out (N,F) = max(inp, 0)^2;  inp (N,F). One block of rows per thread (one thread when small).
    if N * F < PARALLEL_MIN_WORK:
        relu2_rows(out, inp, F, 0, N)
        return
    nblk = min(ROW_BLOCKS, N)
    for blk in prange(nblk):
        relu2_rows(out, inp, F, blk * N // nblk, (blk + 1) * N // nblk)


@njit(**PJIT)
def relu2_backward(dinp, dout, inp, N, F, overwrite=False):
    # dinp (N,F) += 2 max(inp, 0) * dout (= with overwrite: what it held is ignored);  inp the forward's input
    if N * F < PARALLEL_MIN_WORK:
        _relu2_backward_rows(dinp, dout, inp, F, 0, N, overwrite)
        return
    nblk = min(ROW_BLOCKS, N)
    for blk in prange(nblk):
        _relu2_backward_rows(dinp, dout, inp, F, blk * N // nblk, (blk + 1) * N // nblk, overwrite)
