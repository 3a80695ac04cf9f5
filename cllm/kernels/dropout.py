"""Dropout with counter-based masks: whether element i is kept is a hash of (key, i), nothing else.

Legend: N element count, T time.
GPUs draw dropout masks from Philox, a counter-based generator: the random bits of element i are a
function of (key, counter i), so any thread can draw any element in any order and the same key gives
the same mask again. The same idea here with a cheaper mixer: element i of a stream is kept when the
high 32 bits of mix64(key + i * GOLDEN) (SplitMix64's output for counter i under that key) are at
least `threshold`, the drop probability p scaled to 2^32. Consequences the model relies on:
- the backward recomputes the mask from (key, i) instead of storing it (0 bytes per mask);
- masks do not depend on threads or blocking, so a resumed run draws exactly the masks it would have;
- every stream (seed, step, micro-batch, layer, site) gets its own key from derive_key.
Kept elements are scaled by 1 / (1 - p) (inverted dropout), so evaluation runs the plain network.
"""
import numpy as np
from numba import njit, prange

from ._common import JIT, PARALLEL_MIN_WORK, PJIT
from .matmul import ROW_BLOCKS

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio: SplitMix64's counter increment
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
TWO32 = 1 << 32


def dropout_threshold(p: float) -> int:
    """The integer the kernels take for a drop probability p in [0, 1): round(p * 2^32); 0 = off."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must lie in [0, 1), got {p!r}")
    return min(TWO32 - 1, int(round(p * TWO32)))


@njit(**JIT)
def mix64(z):
    # SplitMix64's finalizer: a bijection of uint64 in which each input bit flips each output bit
    # with probability close to 1/2 (so neighbouring counters give unrelated bits)
    z = (z ^ (z >> np.uint64(30))) * _MUL1
    z = (z ^ (z >> np.uint64(27))) * _MUL2
    return z ^ (z >> np.uint64(31))


@njit(**JIT)
def derive_key(key, a, b):
    # a new key (int64, >= 0) from a key and two counters, e.g. (seed; step, micro-batch) or
    # (micro-batch key; layer, site); 63 bits so that every key reaches the kernels as one int64 type
    z = mix64(np.uint64(key) + _GOLDEN)
    z = mix64(z ^ (np.uint64(a) * _MUL1 + _GOLDEN))
    z = mix64(z ^ (np.uint64(b) * _MUL2 + _GOLDEN))
    return np.int64(z >> np.uint64(1))


@njit(**JIT)
def keep(key, i, threshold):
    # whether element i of the stream `key` is kept: P(kept) = 1 - threshold / 2^32
    return (mix64(np.uint64(key) + np.uint64(i) * _GOLDEN) >> np.uint64(32)) >= np.uint64(threshold)


@njit(**JIT)
def keep_scale(x, threshold):
    # 1 / (1 - p) in x's dtype for the threshold of p (integer and constant arithmetic only, so that
    # a float32 kernel stays float32)
    dt = x.dtype.type
    return dt(1) / (dt(1) - dt(threshold) * dt(2.0 ** -32))


@njit(**JIT)
def dropout_span(out, inp, key, i0, threshold, scale):
    # out[i] = inp[i] * scale where element i0 + i is kept, else 0 (a block of one stream)
    zero = out.dtype.type(0)
    for i in range(out.size):
        out[i] = inp[i] * scale if keep(key, i0 + i, threshold) else zero


@njit(**PJIT)
def dropout_forward(out, inp, N, threshold, key):
    # out (N) = inp (N) * mask / (1 - p); out may be inp (the model drops in place). threshold from
    # dropout_threshold(p), key from derive_key. One contiguous block per thread, or one for a small N.
    scale = keep_scale(out, threshold)
    if N < PARALLEL_MIN_WORK:
        dropout_span(out[:N], inp[:N], key, 0, threshold, scale)
        return
    for blk in prange(ROW_BLOCKS):
        i0 = blk * N // ROW_BLOCKS
        i1 = (blk + 1) * N // ROW_BLOCKS
        dropout_span(out[i0:i1], inp[i0:i1], key, i0, threshold, scale)


@njit(**JIT)  # dropout_forward below runs the blocks in parallel
def dropout_backward(dinp, dout, N, threshold, key):
    # dinp (N) = dout (N) * mask / (1 - p), the forward's mask recomputed from (key, i). Writes (=),
    # unlike the accumulating backward kernels: the model applies it in place (dinp is dout), turning
    # the gradient of the dropped output into that of its input.
    dropout_forward(dinp, dout, N, threshold, key)


@njit(**JIT)
def dropout_mask(mask, N, threshold, key):
    # mask (N) uint8 = 1 where element i of the stream is kept: the forward's mask, for tests and
    # the PyTorch reference
    for i in range(N):
        mask[i] = 1 if keep(key, i, threshold) else 0


@njit(**JIT)
def causal_mask_rows(M, key, i0, threshold, scale, T):
    # M (T,T) = mask / (1 - p) of one head's attention probabilities, element (t, t2) of the stream
    # at counter i0 + t*T + t2; 0 above the diagonal (the future, where the probabilities are 0)
    zero = M.dtype.type(0)
    for t in range(T):
        for t2 in range(T):
            keep_it = t2 <= t and keep(key, i0 + t * T + t2, threshold)
            M[t * T + t2] = scale if keep_it else zero
