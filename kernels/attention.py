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


@njit(**JIT)
def _gather_head(dst, inp, b, h, T, C, hs, part):
    # dst (T,hs) = the q (part 0), k (1) or v (2) channels of head h for batch row b of inp (B,T,3C)
    C3 = 3 * C
    base = b * T * C3 + part * C + h * hs
    for t in range(T):
        o = base + t * C3
        for i in range(hs):
            dst[t, i] = inp[o + i]


@njit(**JIT)
def _scatter_add_head(dst, src, b, h, T, width, hs, offset, factor):
    # dst rows of `width` channels (B,T,width): dst[b, t, offset + h*hs + i] += factor * src[t, i]
    base = b * T * width + offset + h * hs
    for t in range(T):
        o = base + t * width
        for i in range(hs):
            dst[o + i] += factor * src[t, i]


@njit(**PJIT)
def attention_forward(out, preatt, att, inp, B, T, C, NH):
    # out (B,T,C);  preatt, att (B,NH,T,T);  inp (B,T,3C)
    # Per (b, h): S = q k^T / sqrt(hs) with BLAS (the full square; its upper half is then masked),
    # a causal softmax row by row, and out = att @ v with BLAS. BLAS runs single-threaded inside
    # each parallel iteration.
    hs = C // NH
    dt = inp.dtype.type
    scale = dt(1) / np.sqrt(dt(hs))
    zero = dt(0)
    for bh in prange(B * NH):
        b = bh // NH
        h = bh % NH
        q = np.empty((T, hs), dtype=inp.dtype)
        k = np.empty((T, hs), dtype=inp.dtype)
        v = np.empty((T, hs), dtype=inp.dtype)
        y = np.empty((T, hs), dtype=inp.dtype)
        _gather_head(q, inp, b, h, T, C, hs, 0)
        _gather_head(k, inp, b, h, T, C, hs, 1)
        _gather_head(v, inp, b, h, T, C, hs, 2)
        S = preatt[bh * T * T:(bh + 1) * T * T].reshape(T, T)
        P = att[bh * T * T:(bh + 1) * T * T].reshape(T, T)
        np.dot(q, k.T, S)
        for t in range(T):
            maxval = dt(-np.inf)
            for t2 in range(t + 1):
                S[t, t2] *= scale
                if S[t, t2] > maxval:
                    maxval = S[t, t2]
            total = zero
            for t2 in range(t + 1):
                e = np.exp(S[t, t2] - maxval)
                P[t, t2] = e
                total += e
            inv = dt(1) / total
            for t2 in range(t + 1):
                P[t, t2] *= inv
            for t2 in range(t + 1, T):  # the causal mask: the future gets probability 0
                S[t, t2] = zero
                P[t, t2] = zero
        np.dot(P, v, y)
        for t in range(T):
            o = b * T * C + t * C + h * hs
            for i in range(hs):
                out[o + i] = y[t, i]


@njit(**PJIT)
def attention_backward(dinp, dpreatt, datt, dout, inp, att, B, T, C, NH):
    # dinp (B,T,3C) += ...;  dpreatt, datt (B,NH,T,T) += ...;  dout (B,T,C);  inp (B,T,3C);
    # dpreatt and datt may be None: the model reads neither, and skipping them saves writing (and
    # zeroing) two (B,NH,T,T) arrays per layer.
    # att (B,NH,T,T). O(T^2 hs) per head, with BLAS for the four products:
    #   dP = dout_h v^T,  dv = P^T dout_h,  dS = P * (dP - rowsum(P * dP)),
    #   dq = dS k / sqrt(hs),  dk = dS^T q / sqrt(hs)
    # Each call adds exactly its own contribution to every output (the local dP and dS are used,
    # not the accumulated buffers), so calling it twice gives twice the gradient everywhere.
    hs = C // NH
    C3 = 3 * C
    dt = inp.dtype.type
    scale = dt(1) / np.sqrt(dt(hs))
    for bh in prange(B * NH):  # parallel over (b, h): each writes only its own head's slices
        b = bh // NH
        h = bh % NH
        q = np.empty((T, hs), dtype=inp.dtype)
        k = np.empty((T, hs), dtype=inp.dtype)
        v = np.empty((T, hs), dtype=inp.dtype)
        dy = np.empty((T, hs), dtype=inp.dtype)
        g = np.empty((T, hs), dtype=inp.dtype)  # scratch for dq, dk, dv
        dP = np.empty((T, T), dtype=inp.dtype)
        _gather_head(q, inp, b, h, T, C, hs, 0)
        _gather_head(k, inp, b, h, T, C, hs, 1)
        _gather_head(v, inp, b, h, T, C, hs, 2)
        for t in range(T):
            o = b * T * C + t * C + h * hs
            for i in range(hs):
                dy[t, i] = dout[o + i]
        P = att[bh * T * T:(bh + 1) * T * T].reshape(T, T)
        np.dot(dy, v.T, dP)
        np.dot(P.T, dy, g)
        _scatter_add_head(dinp, g, b, h, T, C3, hs, 2 * C, dt(1))
        a0 = bh * T * T
        for t in range(T):
            s = dt(0)
            for t2 in range(t + 1):
                if datt is not None:
                    datt[a0 + t * T + t2] += dP[t, t2]
                s += P[t, t2] * dP[t, t2]
            for t2 in range(t + 1):
                dS = P[t, t2] * (dP[t, t2] - s)
                dP[t, t2] = dS
                if dpreatt is not None:
                    dpreatt[a0 + t * T + t2] += dS
            for t2 in range(t + 1, T):
                dP[t, t2] = dt(0)
        np.dot(dP, k, g)
        _scatter_add_head(dinp, g, b, h, T, C3, hs, 0, scale)
        np.dot(dP.T, q, g)
        _scatter_add_head(dinp, g, b, h, T, C3, hs, C, scale)
