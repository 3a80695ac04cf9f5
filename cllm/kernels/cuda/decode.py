"""Decoding with a KV cache on the device, as cllm/kernels/decode.py: R rows (tokens) at once, each of a
sequence at a position, through every layer; the linear layers are matrix-vector products for a few
rows and the training forward's matmul for more (cllm/kernels/cuda/matmul.linear).

Legend: R rows, L layers, C channels, NH heads, hs = C/NH, maxT positions, V vocab.
kvcache (nb, L, 2, NH, ...) in cllm/kernels/decode.py's layout: per sequence and layer, each head's keys
transposed (hs, maxT), then each head's values (maxT, hs). rows (3R) int32 on the device: the
tokens, then each row's sequence, then its position. Every row's k and v go into the cache before
any row attends, so the rows of one call may continue one sequence (prefill).
llama_forward_rows is llama's, in cllm/kernels/decode.llama_forward_rows's cache layout (the NKV kv heads).
"""
import math

import numpy as np
from numba import cuda

from ._common import F32, ROW_THREADS, THREADS, blocks
from .elementwise import encoder_forward, gelu_forward, residual_forward
from .gqa import attend_row, gqa_prefill
from .layernorm import layernorm_forward
from .matmul import linear
from .rmsnorm import rmsnorm_forward
from .rope import rope_forward
from .swiglu import swiglu_forward


@cuda.jit
def _embed_rows(x, rows, wte, wpe, R, C):
    for e in range(cuda.grid(1), R * C, cuda.gridsize(1)):
        r = e // C
        c = e % C
        x[e] = wte[rows[r] * C + c] + wpe[rows[2 * R + r] * C + c]


@cuda.jit
def _kv_write(kvcache, qkv, rows, l, R, L, C, NH, maxT):
    # row r's k (a column of its head's transposed keys) and v, at its position
    hs = C // NH
    head = maxT * hs
    for e in range(cuda.grid(1), R * C, cuda.gridsize(1)):
        r = e // C
        c = e % C
        h = c // hs
        i = c % hs
        p = rows[2 * R + r]
        kbase = (rows[R + r] * L + l) * 2 * NH * head
        kvcache[kbase + h * head + i * maxT + p] = qkv[r * 3 * C + C + c]
        kvcache[kbase + (NH + h) * head + p * hs + i] = qkv[r * 3 * C + 2 * C + c]


@cuda.jit
def _attend_cached(atty, qkv, kvcache, scores, rows, l, R, L, C, NH, maxT, scale):
    # one block per (row, head) over the row's positions 0..rows[2R + r] (gqa.attend_row): the keys are
    # transposed (hs, maxT), so the threads' positions are adjacent floats; scores: a row of maxT per pair
    buf = cuda.shared.array(ROW_THREADS, dtype=F32)
    hs = C // NH
    head = maxT * hs
    for rh in range(cuda.blockIdx.x, R * NH, cuda.gridDim.x):
        r = rh // NH
        h = rh % NH
        kb = (rows[R + r] * L + l) * 2 * NH * head + h * head
        attend_row(atty, r * C + h * hs, qkv, r * 3 * C + h * hs, kvcache, kb, 1, maxT, kvcache, kb + NH * head, scores,
                   rh * maxT, buf, rows[2 * R + r] + 1, hs, scale)


def scratch(R, C, NH, maxT):
    """Device work buffers for R rows (reused across calls of that size)."""
    f = np.float32
    return {"x": cuda.device_array(R * C, f), "xn": cuda.device_array(R * C, f), "qkv": cuda.device_array(R * 3 * C, f),
            "atty": cuda.device_array(R * C, f), "proj": cuda.device_array(R * C, f),
            "hid": cuda.device_array(R * 4 * C, f), "mean": cuda.device_array(R, f), "rstd": cuda.device_array(R, f),
            "scores": cuda.device_array(R * NH * maxT, f)}


def forward_rows(logits, kvcache, rows, weights, layers, work, R, L, C, NH, maxT, V, first_logit_row):
    # logits (R - first_logit_row, V) for the rows from first_logit_row on;  weights: (wte, wpe, lnfw,
    # lnfb);  layers: per layer (ln1w, ln1b, qkvw, qkvb, attprojw, attprojb, ln2w, ln2b, fcw, fcb,
    # fcprojw, fcprojb) device views;  work: scratch(R, ...)
    wte, wpe, lnfw, lnfb = weights
    x, xn, qkv, atty, proj, hid = work["x"], work["xn"], work["qkv"], work["atty"], work["proj"], work["hid"]
    mean, rstd = work["mean"], work["rstd"]
    scale = F32(1.0 / math.sqrt(C // NH))
    _embed_rows[blocks(R * C), THREADS](x, rows, wte, wpe, R, C)
    for l, (ln1w, ln1b, qkvw, qkvb, attprojw, attprojb, ln2w, ln2b, fcw, fcb, fcprojw, fcprojb) in enumerate(layers):
        layernorm_forward(xn, mean, rstd, x, ln1w, ln1b, 1, R, C)
        linear(qkv, xn, qkvw, qkvb, R, C, 3 * C)
        _kv_write[blocks(R * C), THREADS](kvcache, qkv, rows, l, R, L, C, NH, maxT)
        _attend_cached[blocks(R * NH, 1), ROW_THREADS](atty, qkv, kvcache, work["scores"], rows, l, R, L, C, NH, maxT,
                                                       scale)
        linear(proj, atty, attprojw, attprojb, R, C, C)
        residual_forward(x, x, proj, R * C)
        layernorm_forward(xn, mean, rstd, x, ln2w, ln2b, 1, R, C)
        linear(hid, xn, fcw, fcb, R, C, 4 * C)
        gelu_forward(hid, hid, R * 4 * C)
        linear(proj, hid, fcprojw, fcprojb, R, 4 * C, C)
        residual_forward(x, x, proj, R * C)
    nl = R - first_logit_row
    layernorm_forward(xn, mean, rstd, x[first_logit_row * C:], lnfw, lnfb, 1, nl, C)
    linear(logits, xn, wte, None, nl, C, V)  # the tied LM head: wte's first V rows


@cuda.jit
def _llama_rope_rows(qkv, cos, sin, rows, R, NH, NKV, hs):
    # a batched step's RoPE: row r's q and k heads rotated for its own position rows[2R + r] (as rope.py's _rope)
    half = hs // 2
    heads = NH + NKV
    W = (NH + 2 * NKV) * hs
    for e in range(cuda.grid(1), R * heads * half, cuda.gridsize(1)):
        i = e % half
        r = e // (half * heads)
        o = r * W + ((e // half) % heads) * hs + i
        p = rows[2 * R + r]
        c = cos[p * half + i]
        s = sin[p * half + i]
        a = qkv[o]
        b = qkv[o + half]
        qkv[o] = a * c - b * s
        qkv[o + half] = b * c + a * s


@cuda.jit
def _llama_kv_write_rows(kvcache, qkv, rows, l, R, L, NH, NKV, hs, maxT):
    # row r's k and v of every kv head into its sequence's (rows[R + r]) layer-l cache at its position
    W = (NH + 2 * NKV) * hs
    half = NKV * maxT * hs
    for e in range(cuda.grid(1), R * NKV * hs, cuda.gridsize(1)):
        i = e % hs
        g = (e // hs) % NKV
        r = e // (NKV * hs)
        c = (rows[R + r] * L + l) * 2 * half + (g * maxT + rows[2 * R + r]) * hs + i
        kvcache[c] = qkv[r * W + (NH + g) * hs + i]
        kvcache[c + half] = qkv[r * W + (NH + NKV + g) * hs + i]


@cuda.jit
def _llama_attend_rows(out, qkv, kvcache, scores, rows, l, R, L, NH, NKV, hs, maxT, scale):
    # one block per (row, query head) over the row's own sequence and positions 0..rows[2R + r]
    # (gqa.attend_row, keys (maxT, hs) per kv head); scores: a row of maxT per (row, head)
    buf = cuda.shared.array(ROW_THREADS, dtype=F32)
    W = (NH + 2 * NKV) * hs
    half = NKV * maxT * hs
    for rh in range(cuda.blockIdx.x, R * NH, cuda.gridDim.x):
        r = rh // NH
        h = rh % NH
        c0 = (rows[R + r] * L + l) * 2 * half + (h // (NH // NKV)) * maxT * hs
        attend_row(out, rh * hs, qkv, r * W + h * hs, kvcache, c0, hs, 1, kvcache, c0 + half, scores, rh * maxT, buf,
                   rows[2 * R + r] + 1, hs, scale)


def llama_scratch(R, C, QKV, F, NH=1, maxT=0):
    """Device work buffers of llama_forward_rows for R rows (QKV = (NH+2*NKV)*hs, F the MLP width; NH and maxT:
    the batched step's attention scores, (R, NH, maxT))."""
    f = np.float32
    return {"scores": cuda.device_array(max(1, R * NH * maxT), f),
            "x": cuda.device_array(R * C, f), "xn": cuda.device_array(R * C, f), "qkv": cuda.device_array(R * QKV, f),
            "atty": cuda.device_array(R * C, f), "proj": cuda.device_array(R * C, f),
            "hid": cuda.device_array(R * 2 * F, f), "act": cuda.device_array(R * F, f), "rstd": cuda.device_array(R, f)}


def llama_forward_rows(logits, kvcache, tokens, weights, layers, cos, sin, work, B, T, pos0, L, C, NH, NKV, F, maxT,
                       V, eps, first_logit_row, rows=None):
    # As cllm/kernels/decode.llama_forward_rows: B sequences of T tokens (device int32 (B*T)) at positions
    # pos0..pos0+T-1;  kvcache (B, L, 2, NKV, maxT, hs);  weights: (wte, lnfw, LM head);  layers: per layer
    # (ln1w, qkvw, qkvb or None, attprojw, ln2w, fcw, fcprojw);  cos, sin: the RoPE tables on the device.
    # rows (device int32 (3B): tokens, sequences, positions, as forward_rows's), T = 1: a batched decode step,
    # row b the cache's sequence rows[B + b] at its own position rows[2B + b] (tokens and pos0 unused).
    wte, lnfw, head = weights
    R, hs = B * T, C // NH
    QKV = (NH + 2 * NKV) * hs
    half = NKV * maxT * hs  # one sequence's and layer's keys (then as many values)
    x, xn, qkv, atty, proj = work["x"], work["xn"], work["qkv"], work["atty"], work["proj"]
    hid, act, rstd = work["hid"], work["act"], work["rstd"]
    encoder_forward(x, tokens if rows is None else rows[:R], wte, None, 1, R, C)
    for l, (ln1w, qkvw, qkvb, attprojw, ln2w, fcw, fcprojw) in enumerate(layers):
        rmsnorm_forward(xn, rstd, x, ln1w, R, C, eps)
        linear(qkv, xn, qkvw, qkvb, R, C, QKV)
        if rows is not None:  # each row at its own position in its own sequence
            _llama_rope_rows[blocks(R * (NH + NKV) * (hs // 2)), THREADS](qkv, cos, sin, rows, R, NH, NKV, hs)
            _llama_kv_write_rows[blocks(R * NKV * hs), THREADS](kvcache, qkv, rows, l, R, L, NH, NKV, hs, maxT)
            _llama_attend_rows[blocks(R * NH, 1), ROW_THREADS](atty, qkv, kvcache, work["scores"], rows, l, R, L, NH,
                                                               NKV, hs, maxT, F32(1.0 / math.sqrt(hs)))
        else:
            rope_forward(qkv, cos, sin, B, T, NH, NKV, hs, pos0)
            for b in range(B):
                k0 = (b * L + l) * 2 * half
                gqa_prefill(atty[b * T * C:(b + 1) * T * C], qkv[b * T * QKV:(b + 1) * T * QKV],
                            kvcache[k0:k0 + half], kvcache[k0 + half:k0 + 2 * half], 1, T, NH, NKV, hs, pos0, maxT)
        linear(proj, atty, attprojw, None, R, C, C)
        residual_forward(x, x, proj, R * C)
        rmsnorm_forward(xn, rstd, x, ln2w, R, C, eps)
        linear(hid, xn, fcw, None, R, C, 2 * F)
        swiglu_forward(act, hid, R, F)
        linear(proj, act, fcprojw, None, R, F, C)
        residual_forward(x, x, proj, R * C)
    nl = R - first_logit_row
    rmsnorm_forward(xn, rstd, x[first_logit_row * C:], lnfw, nl, C, eps)
    linear(logits, xn, head, None, nl, C, V)  # the LM head's first V rows
