"""Rotary position embeddings on the q and k heads of a packed qkv buffer, in place, as cllm/kernels/rope.py
(HuggingFace's rotate-half convention; that module says how it relates to llama.cpp's interleaved one).

Legend: B batch, T time, NH query heads, NKV key/value heads, hs head size (even), maxT positions.
One thread per rotated pair (row, head, i): dimensions i and i + hs/2 of one q or k head.
"""
from numba import cuda

from ._common import F32, THREADS, blocks


@cuda.jit
def _rope(qkv, cos, sin, BT, T, NH, NKV, hs, pos0, sign):
    half = hs // 2
    heads = NH + NKV  # the q heads, then the k heads: the first heads * hs channels of each row
    W = (NH + 2 * NKV) * hs
    for e in range(cuda.grid(1), BT * heads * half, cuda.gridsize(1)):
        i = e % half
        h = (e // half) % heads
        r = e // (half * heads)
        p = pos0 + r % T
        c = cos[p * half + i]
        s = sign * sin[p * half + i]
        o = r * W + h * hs + i
        a = qkv[o]
        b = qkv[o + half]
        qkv[o] = a * c - b * s
        qkv[o + half] = b * c + a * s


def _launch(qkv, cos, sin, B, T, NH, NKV, hs, pos0, sign):
    if pos0 < 0 or (pos0 + T) * (hs // 2) > cos.size or cos.size != sin.size:
        raise ValueError("RoPE: positions pos0..pos0+T-1 lie beyond the cos/sin table")
    n = B * T * (NH + NKV) * (hs // 2)
    _rope[blocks(n), THREADS](qkv, cos, sin, B * T, T, NH, NKV, hs, pos0, F32(sign))


def rope_forward(qkv, cos, sin, B, T, NH, NKV, hs, pos0=0):
    # qkv (B,T,(NH+2*NKV)*hs): q and k heads rotated in place for positions pos0..pos0+T-1;
    # cos, sin (maxT, hs/2) float32 device arrays (cllm/kernels/rope.rope_table), maxT >= pos0 + T
    _launch(qkv, cos, sin, B, T, NH, NKV, hs, pos0, 1)


def rope_backward(dqkv, cos, sin, B, T, NH, NKV, hs, pos0=0):
    # dqkv (B,T,(NH+2*NKV)*hs): the gradient at the rotated q, k turned in place into the gradient at the
    # unrotated ones (the inverse rotation); the v part is left as it is
    _launch(dqkv, cos, sin, B, T, NH, NKV, hs, pos0, -1)
