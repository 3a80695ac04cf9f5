"""Rotary position embeddings (RoPE) on the q and k heads of a packed qkv buffer, in place.

Legend: B batch, T time, NH query heads, NKV key/value heads (NH % NKV == 0), hs head size (even),
maxT positions. qkv (B,T,(NH+2*NKV)*hs) holds per position the NH q heads, then the NKV k heads, then
the NKV v heads (untouched here): the first (NH+NKV)*hs channels of a row are the ones rotated.

HuggingFace's rotate-half convention (transformers' Llama, Qwen2, Mistral): with half = hs/2, dimension
i of a head is paired with dimension i + half and rotated by the angle p * inv_freq[i] at position p:
    y[i]        = x[i] * cos - x[i + half] * sin
    y[i + half] = x[i + half] * cos + x[i] * sin
llama.cpp's Llama kernel (its "normal" RoPE mode) pairs adjacent dimensions (2i, 2i+1) instead, with the
same angles: the interleaved convention. With P the per-head permutation (P x)[2i] = x[i],
(P x)[2i+1] = x[i + half], interleaved(P x) = P rotate_half(x). Attention scores are dot products within
a head, which a permutation shared by q and k leaves unchanged, so llama.cpp's HF->GGUF converter
(convert_hf_to_gguf.py, LlamaModel.permute) applies P to the rows of the q and k projection weights (per
head: reshape (2, half) -> swap the axes -> flatten) and runs its interleaved kernel on the result; the
v heads are not permuted. (Its "neox" mode, which it uses for Qwen2 among others, is rotate-half itself.)
tests/test_llama_kernels.py checks the relation.
"""
import numpy as np
from numba import njit, prange

from ._common import JIT, PARALLEL_MIN_WORK, PJIT


def rope_table(maxT: int, hs: int, theta: float, dtype=np.float32):
    """(cos, sin), each (maxT, hs/2) flattened: the angle of position p and pair i is p * theta^(-2i/hs),
    computed in float64 and then cast to dtype (so that float32 tables are correctly rounded)."""
    if hs % 2 or hs <= 0:
        raise ValueError(f"RoPE needs an even head size, got {hs}")
    inv_freq = theta ** (-np.arange(0, hs, 2, dtype=np.float64) / hs)  # (hs/2)
    angles = np.outer(np.arange(maxT, dtype=np.float64), inv_freq)  # (maxT, hs/2)
    return np.cos(angles).astype(dtype).ravel(), np.sin(angles).astype(dtype).ravel()


@njit(**JIT)
def _rotate_rows(qkv, cos, sin, T, NH, NKV, hs, pos0, r0, r1, sign):
    # rows r0..r1-1 of qkv (B*T rows): every q and k head rotated by the angles of its position
    # (row r is position pos0 + r % T); sign -1 rotates by the opposite angles (the backward)
    half = hs // 2
    W = (NH + 2 * NKV) * hs
    sg = qkv.dtype.type(sign)
    for r in range(r0, r1):
        p = pos0 + r % T
        c = cos[p * half:(p + 1) * half]
        s = sin[p * half:(p + 1) * half]
        for h in range(NH + NKV):
            o = r * W + h * hs
            x1 = qkv[o:o + half]  # slices indexed from 0: LLVM vectorizes the loop
            x2 = qkv[o + half:o + hs]
            for i in range(half):
                a = x1[i]
                b = x2[i]
                si = sg * s[i]
                x1[i] = a * c[i] - b * si
                x2[i] = b * c[i] + a * si


@njit(**JIT)
def _check_positions(cos, sin, T, hs, pos0):
    if pos0 < 0 or (pos0 + T) * (hs // 2) > cos.size or cos.size != sin.size:
        raise ValueError("RoPE: positions pos0..pos0+T-1 lie beyond the cos/sin table")


@njit(**PJIT)
def rope_forward(qkv, cos, sin, B, T, NH, NKV, hs, pos0=0):
    # qkv (B,T,(NH+2*NKV)*hs): its q and k heads rotated in place for positions pos0..pos0+T-1
    # (pos0 > 0: the new tokens of a decode step after pos0 cached ones);  cos, sin (maxT, hs/2) from
    # rope_table, maxT >= pos0 + T. Rows are independent (one thread when small).
    _check_positions(cos, sin, T, hs, pos0)
    if B * T * (NH + NKV) * hs < PARALLEL_MIN_WORK:
        _rotate_rows(qkv, cos, sin, T, NH, NKV, hs, pos0, 0, B * T, 1)
        return
    for r in prange(B * T):
        _rotate_rows(qkv, cos, sin, T, NH, NKV, hs, pos0, r, r + 1, 1)


@njit(**PJIT)
def rope_backward(dqkv, cos, sin, B, T, NH, NKV, hs, pos0=0):
    # dqkv (B,T,(NH+2*NKV)*hs): the gradient at the rotated q and k turned, in place, into the gradient
    # at the unrotated ones: the inverse (transposed) rotation; its v part is left as it is
    _check_positions(cos, sin, T, hs, pos0)
    if B * T * (NH + NKV) * hs < PARALLEL_MIN_WORK:
        _rotate_rows(dqkv, cos, sin, T, NH, NKV, hs, pos0, 0, B * T, -1)
        return
    for r in prange(B * T):
        _rotate_rows(dqkv, cos, sin, T, NH, NKV, hs, pos0, r, r + 1, -1)
