"""Softmax over the vocabulary, cross-entropy, and their fused backward, as cllm/kernels/softmax.py.

Legend: B batch, T time, V vocab, Vp padded vocab (rows of Vp, only the first V real).
The softmax takes a row per block at a time (shared-memory max and sum); the others one thread per
element or row. A target of -1 (PyTorch's ignore_index convention) has loss 0 and a zero logits gradient, as
in cllm/kernels/softmax.py (the kernels test target < 0).
"""
import math

from numba import cuda

from ._common import F32, ROW_THREADS, THREADS, block_max, block_sum, blocks


@cuda.jit
def _softmax_forward(probs, logits, BT, V, Vp):
    buf = cuda.shared.array(ROW_THREADS, dtype=F32)
    tid = cuda.threadIdx.x
    for row in range(cuda.blockIdx.x, BT, cuda.gridDim.x):
        _softmax_row(probs, logits, buf, row * Vp, tid, V, Vp)


@cuda.jit(device=True, inline=True)
def _softmax_row(probs, logits, buf, o, tid, V, Vp):
    mx = F32(-math.inf)
    for i in range(tid, V, ROW_THREADS):
        mx = max(mx, logits[o + i])
    mx = block_max(buf, mx)
    s = F32(0)
    for i in range(tid, V, ROW_THREADS):
        e = math.exp(logits[o + i] - mx)
        probs[o + i] = e
        s += e
    inv = F32(1) / block_sum(buf, s)
    for i in range(tid, Vp, ROW_THREADS):
        probs[o + i] = probs[o + i] * inv if i < V else F32(0)


def softmax_forward(probs, logits, B, T, V, Vp):
    # probs, logits (B,T,Vp); padded entries [V, Vp) of probs are set to 0
    _softmax_forward[blocks(B * T, 1), ROW_THREADS](probs, logits, B * T, V, Vp)


@cuda.jit
def _crossentropy_forward(losses, probs, targets, BT, Vp):
    for bt in range(cuda.grid(1), BT, cuda.gridsize(1)):
        ix = targets[bt]
        losses[bt] = -math.log(probs[bt * Vp + ix]) if ix >= 0 else F32(0)


def crossentropy_forward(losses, probs, targets, B, T, Vp):
    # losses (B,T) = -log probs[b,t,targets[b,t]], 0 where the target is -1;  probs (B,T,Vp);  targets (B,T) int32
    _crossentropy_forward[blocks(B * T), THREADS](losses, probs, targets, B * T, Vp)


@cuda.jit
def _crossentropy_softmax_backward(dlogits, dlosses, probs, targets, BT, V, Vp, overwrite):
    for e in range(cuda.grid(1), BT * Vp, cuda.gridsize(1)):
        bt = e // Vp
        i = e % Vp
        ix = targets[bt]
        if i < V and ix >= 0:
            v = (probs[e] - (F32(1) if i == ix else F32(0))) * dlosses[bt]
            dlogits[e] = v if overwrite else dlogits[e] + v
        elif overwrite:  # a padded column, or a row whose target is -1
            dlogits[e] = F32(0)


def crossentropy_softmax_backward(dlogits, dlosses, probs, targets, B, T, V, Vp, overwrite=False):
    # dlogits (B,T,Vp) += (probs - onehot(target)) * dlosses, first V columns; with overwrite, =
    # instead and the padded columns set to 0; a row whose target is -1 gets nothing (with overwrite: zeros)
    _crossentropy_softmax_backward[blocks(B * T * Vp), THREADS](dlogits, dlosses, probs, targets, B * T, V, Vp,
                                                                overwrite)


def crossentropy_softmax_backward_inplace(probs, dlosses, targets, B, T, V, Vp):
    # probs (B,T,Vp) becomes the logits' gradient, as cllm/kernels/softmax.py's kernel of this name: each
    # thread reads its element before it writes it, so the out-of-place kernel serves
    _crossentropy_softmax_backward[blocks(B * T * Vp), THREADS](probs, dlosses, probs, targets, B * T, V, Vp, True)
