"""Softmax over the vocabulary and cross-entropy, with their fused backward.

Legend: B batch, T time, V vocab, Vp padded vocab (rows of Vp, only the first V are real).
"""
import numpy as np
from numba import njit, prange

from ._common import PJIT


@njit(**PJIT)
def softmax_forward(probs, logits, B, T, V, Vp):
    # probs, logits (B,T,Vp); padded entries [V, Vp) of probs are set to 0
    dt = logits.dtype.type
    for bt in prange(B * T):
        o = bt * Vp
        maxval = dt(-np.inf)
        for i in range(V):
            if logits[o + i] > maxval:
                maxval = logits[o + i]
        total = dt(0)
        for i in range(V):
            e = np.exp(logits[o + i] - maxval)
            probs[o + i] = e
            total += e
        inv = dt(1) / total
        for i in range(V):
            probs[o + i] *= inv
        for i in range(V, Vp):
            probs[o + i] = dt(0)


@njit(**PJIT)
def crossentropy_forward(losses, probs, targets, B, T, Vp):
    # losses (B,T) = -log probs[b,t,targets[b,t]];  probs (B,T,Vp);  targets (B,T) int32
    for bt in prange(B * T):
        losses[bt] = -np.log(probs[bt * Vp + targets[bt]])


@njit(**PJIT)
def crossentropy_softmax_backward(dlogits, dlosses, probs, targets, B, T, V, Vp):
    # dlogits (B,T,Vp) += (probs - onehot(target)) * dlosses;  only the first V columns
    one = probs.dtype.type(1)
    for bt in prange(B * T):
        o = bt * Vp
        d = dlosses[bt]
        ix = targets[bt]
        for i in range(V):
            indicator = one if i == ix else probs.dtype.type(0)
            dlogits[o + i] += (probs[o + i] - indicator) * d
