"""Residual connection: out = inp1 + inp2.

Legend: N element count.
No backward kernel: the sum passes its output's gradient to both inputs unchanged, so the model's
backward reads the residual stream's gradient in place (cllm/model.py's _backward_graph).
"""
from numba import njit, prange

from ._common import JIT, PARALLEL_MIN_WORK, PJIT
from .matmul import ROW_BLOCKS


@njit(**JIT)
def add_span(out, inp1, inp2):
    for i in range(out.size):
        out[i] = inp1[i] + inp2[i]


@njit(**PJIT)
def residual_forward(out, inp1, inp2, N):
    # out (N) = inp1 (N) + inp2 (N);  one contiguous block per thread, or one for a small N
    if N < PARALLEL_MIN_WORK:
        add_span(out[:N], inp1[:N], inp2[:N])
        return
    for blk in prange(ROW_BLOCKS):
        i0 = blk * N // ROW_BLOCKS
        i1 = (blk + 1) * N // ROW_BLOCKS
        add_span(out[i0:i1], inp1[i0:i1], inp2[i0:i1])
