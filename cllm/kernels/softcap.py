"""Logit soft-capping (Gemma 2, modded-nanogpt; --logit-softcap X): y = X * tanh(x / X), which bounds every
logit to (-X, X) smoothly and leaves small ones almost unchanged.

Legend: N elements (B*T*Vp for the logits). The backward needs only the output: dy/dx = 1 - (y/X)^2,
so the forward may overwrite its input (the model caps its logits in place and keeps no uncapped copy).
"""
import numpy as np
from numba import njit, prange

from ._common import JIT, PARALLEL_MIN_WORK, PJIT, ROW_BLOCKS


@njit(**JIT)
def _softcap_span(out, inp, cap, i0, i1):
    dt = inp.dtype.type
    c = dt(cap)
    inv = dt(1) / c
    for i in range(i0, i1):
        out[i] = c * np.tanh(inp[i] * inv)


@njit(**JIT)
def _softcap_backward_span(dinp, dout, out, cap, i0, i1, overwrite):
    dt = out.dtype.type
    inv = dt(1) / dt(cap)
    one = dt(1)
    for i in range(i0, i1):
        t = out[i] * inv  # tanh(x / cap)
        v = dout[i] * (one - t * t)
        dinp[i] = v if overwrite else dinp[i] + v


@njit(**PJIT)
def softcap_forward(out, inp, N, cap):
    # out (N) = cap * tanh(inp (N) / cap);  out may be inp (in place);  cap > 0
    if N < PARALLEL_MIN_WORK:
        _softcap_span(out, inp, cap, 0, N)
        return
    for blk in prange(ROW_BLOCKS):
        _softcap_span(out, inp, cap, blk * N // ROW_BLOCKS, (blk + 1) * N // ROW_BLOCKS)


@njit(**PJIT)
def softcap_backward(dinp, dout, out, N, cap, overwrite=False):
    # dinp (N) += dout * (1 - (out / cap)^2) (= with overwrite; dinp may then be dout, in place);
    # out (N) the forward's output
    if N < PARALLEL_MIN_WORK:
        _softcap_backward_span(dinp, dout, out, cap, 0, N, overwrite)
        return
    for blk in prange(ROW_BLOCKS):
        _softcap_backward_span(dinp, dout, out, cap, blk * N // ROW_BLOCKS, (blk + 1) * N // ROW_BLOCKS, overwrite)
