"""Residual connection: out = inp1 + inp2.

Legend: N element count.
"""
from numba import njit, prange

from ._common import JIT, PARALLEL_MIN_WORK, PJIT
from .matmul import ROW_BLOCKS


@njit(**JIT)
def _add(out, inp1, inp2):
    for i in range(out.size):
        out[i] = inp1[i] + inp2[i]


@njit(**JIT)
def _add_to_both(dinp1, dinp2, dout, overwrite):
    for i in range(dout.size):
        d = dout[i]
        dinp1[i] = d if overwrite else dinp1[i] + d
        dinp2[i] = d if overwrite else dinp2[i] + d


@njit(**PJIT)
def residual_forward(out, inp1, inp2, N):
    # out (N) = inp1 (N) + inp2 (N);  one contiguous block per thread, or one for a small N
    if N < PARALLEL_MIN_WORK:
        _add(out[:N], inp1[:N], inp2[:N])
        return
    for blk in prange(ROW_BLOCKS):
        i0 = blk * N // ROW_BLOCKS
        i1 = (blk + 1) * N // ROW_BLOCKS
        _add(out[i0:i1], inp1[i0:i1], inp2[i0:i1])


@njit(**PJIT)
def residual_backward(dinp1, dinp2, dout, N, overwrite=False):
    # dinp1, dinp2 (N) += dout (N)  (= with overwrite: what they held is ignored)
    if N < PARALLEL_MIN_WORK:
        _add_to_both(dinp1[:N], dinp2[:N], dout[:N], overwrite)
        return
    for blk in prange(ROW_BLOCKS):
        i0 = blk * N // ROW_BLOCKS
        i1 = (blk + 1) * N // ROW_BLOCKS
        _add_to_both(dinp1[i0:i1], dinp2[i0:i1], dout[i0:i1], overwrite)
