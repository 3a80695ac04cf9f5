"""Softmax over the vocabulary and cross-entropy, with their fused backward.

Legend: B batch, T time, V vocab, Vp padded vocab (rows of Vp, only the first V are real).

A target of IGNORE_INDEX (-1, PyTorch's ignore_index convention) means "no loss at this position" (supervised
fine-tuning scores the assistant's tokens only): the cross-entropy kernels give it loss 0 and a zero logits
gradient, and never read probs at it. They test target < 0; the model's input check lets -1 through and no
other negative id.
"""
import numpy as np
from numba import njit, prange

from ._common import PJIT
from .fastexp import softmax_row

IGNORE_INDEX = -1  # a target that has no loss (see the module's docstring)


@njit(**PJIT)
def softmax_forward(probs, logits, B, T, V, Vp):
    # probs, logits (B,T,Vp); padded entries [V, Vp) of probs are set to 0
    # Rows are handled as slices indexed from 0: LLVM vectorizes those loops, not ones indexed
    # o + i (it cannot prove o + i >= 0).
    dt = logits.dtype.type
    for bt in prange(B * T):
        out = probs[bt * Vp:(bt + 1) * Vp]
        kbuf = np.empty(V, dtype=np.float32)
        softmax_row(out[:V], logits[bt * Vp:bt * Vp + V], kbuf, dt(0))
        for i in range(V, Vp):
            out[i] = dt(0)


@njit(**PJIT)
def crossentropy_forward(losses, probs, targets, B, T, Vp):
    # losses (B,T) = -log probs[b,t,targets[b,t]], 0 where the target is -1;  probs (B,T,Vp);  targets (B,T) int32
    for bt in prange(B * T):
        ix = targets[bt]
        losses[bt] = -np.log(probs[bt * Vp + ix]) if ix >= 0 else losses.dtype.type(0)


@njit(**PJIT)
def crossentropy_softmax_backward(dlogits, dlosses, probs, targets, B, T, V, Vp, overwrite=False):
    # dlogits (B,T,Vp) += (probs - onehot(target)) * dlosses;  only the first V columns. With
    # overwrite, = instead of += (what dlogits held is ignored) and the padded columns are set to 0.
    # A row whose target is -1 gets nothing (with overwrite: zeros).
    one = probs.dtype.type(1)
    zero = probs.dtype.type(0)
    for bt in prange(B * T):
        d = dlosses[bt]
        ix = targets[bt]
        if ix < 0:
            if overwrite:
                row = dlogits[bt * Vp:(bt + 1) * Vp]
                for i in range(Vp):
                    row[i] = zero
            continue
        p = probs[bt * Vp:bt * Vp + V]
        g = dlogits[bt * Vp:bt * Vp + V]
        for i in range(V):  # one add per element (adding p d, then subtracting d, would round twice)
            v = (p[i] - (one if i == ix else zero)) * d
            g[i] = v if overwrite else g[i] + v
        if overwrite:
            pad = dlogits[bt * Vp + V:(bt + 1) * Vp]
            for i in range(Vp - V):
                pad[i] = zero


@njit(**PJIT)
def crossentropy_softmax_backward_inplace(probs, dlosses, targets, B, T, V, Vp):
    # probs (B,T,Vp) becomes dlogits = (probs - onehot(target)) * dlosses, the padded columns 0: what
    # crossentropy_softmax_backward with overwrite writes, without a (B,T,Vp) buffer of its own (the
    # training backward reads the probabilities nowhere else). One array read and written at the same
    # index: two arrays that overlap would send LLVM's vectorized loop to its scalar fallback.
    # A row whose target is -1 becomes zeros.
    one = probs.dtype.type(1)
    zero = probs.dtype.type(0)
    for bt in prange(B * T):
        d = dlosses[bt]
        g = probs[bt * Vp:(bt + 1) * Vp]
        ix = targets[bt]
        if ix < 0:
            for i in range(Vp):
                g[i] = zero
            continue
        p_target = g[ix]
        for i in range(V):
            g[i] *= d
        g[ix] = (p_target - one) * d  # one rounding, as (p - 1) * d in crossentropy_softmax_backward
        for i in range(V, Vp):
            g[i] = zero
