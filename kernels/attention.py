"""Causal multi-head self-attention over packed q, k, v.

Legend: B batch, T time, C channels, NH heads, hs = C/NH head size.
inp (B,T,3C) holds, for each position, q (C) then k (C) then v (C); head h uses channels
[h*hs, (h+1)*hs) of each. preatt and att (B,NH,T,T) keep the scaled scores and the softmax
probabilities; entries above the diagonal (t2 > t, the future) are 0 in both.
"""
import numpy as np
from numba import njit, prange

from ._common import JIT, PJIT


@njit(**JIT)
def attention_row(out, o_off, preatt, att, a_off, q, q_off, kv, kv_base, n, C, hs, stride):
    # One query row against n keys: the query is q[q_off:q_off+hs]; key j is kv[kv_base + j*stride
    # + i] and its value lies C channels further on. Writes scores and probabilities to
    # preatt/att[a_off:a_off+n] and the weighted sum of values to out[o_off:o_off+hs].
    # Shared by the training forward (q and kv both the packed qkv) and the KV-cache decode step.
    dt = q.dtype.type
    scale = dt(1) / np.sqrt(dt(hs))
    maxval = dt(-np.inf)
    for t2 in range(n):
        k_off = kv_base + t2 * stride
        s = dt(0)
        for i in range(hs):
            s += q[q_off + i] * kv[k_off + i]
        s *= scale
        preatt[a_off + t2] = s
        if s > maxval:
            maxval = s
    total = dt(0)
    for t2 in range(n):
        e = np.exp(preatt[a_off + t2] - maxval)
        att[a_off + t2] = e
        total += e
    inv = dt(1) / total
    for t2 in range(n):
        att[a_off + t2] *= inv
    for i in range(hs):
        out[o_off + i] = dt(0)
    for t2 in range(n):
        a = att[a_off + t2]
        v_off = kv_base + t2 * stride + C
        for i in range(hs):
            out[o_off + i] += a * kv[v_off + i]


@njit(**PJIT)
def attention_forward(out, preatt, att, inp, B, T, C, NH):
    # out (B,T,C);  preatt, att (B,NH,T,T);  inp (B,T,3C)
    hs = C // NH
    C3 = 3 * C
    zero = inp.dtype.type(0)
    for idx in prange(B * NH * T):  # every (b, h, t) row is independent
        b = idx // (NH * T)
        h = (idx // T) % NH
        t = idx % T
        a_off = ((b * NH + h) * T + t) * T
        base = b * T * C3 + h * hs
        attention_row(out, b * T * C + t * C + h * hs, preatt, att, a_off,
                      inp, base + t * C3, inp, base + C, t + 1, C, hs, C3)
        for t2 in range(t + 1, T):  # the causal mask: the future gets probability 0
            preatt[a_off + t2] = zero
            att[a_off + t2] = zero


@njit(**PJIT)
def attention_backward(dinp, dpreatt, datt, dout, inp, att, B, T, C, NH):
    # dinp (B,T,3C) += ...;  dpreatt, datt (B,NH,T,T) += ...;  dout (B,T,C);  inp (B,T,3C);
    # att (B,NH,T,T). O(T^2 hs) per head: the softmax backward of row t uses one dot product
    # sum_t2 att*datt instead of llm.c's double loop over t2, t3.
    # Each call adds exactly its own contribution to every output (local increments are used
    # throughout), so calling it twice gives twice the gradient, intermediates included.
    hs = C // NH
    C3 = 3 * C
    dt = inp.dtype.type
    scale = dt(1) / np.sqrt(dt(hs))
    # Parallel over (b, h): dk and dv of a position get contributions from every later query.
    for bh in prange(B * NH):
        b = bh // NH
        h = bh % NH
        local = np.empty(T, dtype=inp.dtype)  # this call's datt increment for one row
        for t in range(T):
            a_off = (bh * T + t) * T
            q_off = b * T * C3 + t * C3 + h * hs
            do_off = b * T * C + t * C + h * hs
            # out = att @ v  ->  datt = dout . v,  dv += att * dout
            s = dt(0)
            for t2 in range(t + 1):
                v_off = b * T * C3 + t2 * C3 + 2 * C + h * hs
                d = dt(0)
                for i in range(hs):
                    d += dout[do_off + i] * inp[v_off + i]
                    dinp[v_off + i] += att[a_off + t2] * dout[do_off + i]
                local[t2] = d
                datt[a_off + t2] += d
                s += att[a_off + t2] * d
            # softmax backward: dpreatt = att * (datt - sum(att * datt)); then the scores
            # s = scale * q . k  ->  dq += scale * dpreatt * k,  dk += scale * dpreatt * q
            for t2 in range(t + 1):
                dp = att[a_off + t2] * (local[t2] - s)
                dpreatt[a_off + t2] += dp
                k_off = b * T * C3 + t2 * C3 + C + h * hs
                g = dp * scale
                for i in range(hs):
                    dinp[q_off + i] += g * inp[k_off + i]
                    dinp[k_off + i] += g * inp[q_off + i]
