"""Causal multi-head self-attention over packed q, k, v.

Legend: B batch, T time, C channels, NH heads, hs = C/NH head size.
inp (B,T,3C) holds, for each position, q (C) then k (C) then v (C); head h uses channels
[h*hs, (h+1)*hs) of each. preatt and att (B,NH,T,T) keep the scaled scores and the softmax
probabilities; entries above the diagonal (t2 > t, the future) are 0 in both.
"""
import numpy as np
from numba import njit, prange

from ._common import JIT, PJIT
from .fastexp import exp_shifted


@njit(**JIT)
def _gather_head(dst, inp, b, h, T, C, hs, part, factor):
    # dst (T,hs) = factor * the q (part 0), k (1) or v (2) channels of head h for batch row b of
    # inp (B,T,3C). Rows are copied as slices indexed from 0, which LLVM vectorizes.
    C3 = 3 * C
    base = b * T * C3 + part * C + h * hs
    for t in range(T):
        src = inp[base + t * C3:base + t * C3 + hs]
        row = dst[t]
        for i in range(hs):
            row[i] = factor * src[i]


@njit(**JIT)
def _scatter_add_head(dst, src, b, h, T, width, hs, offset, factor):
    # dst rows of `width` channels (B,T,width): dst[b, t, offset + h*hs + i] += factor * src[t, i]
    base = b * T * width + offset + h * hs
    for t in range(T):
        out = dst[base + t * width:base + t * width + hs]
        row = src[t]
        for i in range(hs):
            out[i] += factor * row[i]


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
    one = dt(1)
    for bh in prange(B * NH):
        b = bh // NH
        h = bh % NH
        q = np.empty((T, hs), dtype=inp.dtype)
        k = np.empty((T, hs), dtype=inp.dtype)
        v = np.empty((T, hs), dtype=inp.dtype)
        y = np.empty((T, hs), dtype=inp.dtype)
        kbuf = np.empty(T, dtype=np.float32)  # exp_shifted's scratch
        _gather_head(q, inp, b, h, T, C, hs, 0, scale)  # q / sqrt(hs): S comes out scaled
        _gather_head(k, inp, b, h, T, C, hs, 1, one)
        _gather_head(v, inp, b, h, T, C, hs, 2, one)
        S = preatt[bh * T * T:(bh + 1) * T * T].reshape(T, T)
        P = att[bh * T * T:(bh + 1) * T * T].reshape(T, T)
        np.dot(q, k.T, S)
        for t in range(T):  # rows as slices indexed from 0, so that LLVM vectorizes the loops
            n = t + 1
            srow = S[t]
            prow = P[t]
            maxval = dt(-np.inf)
            for t2 in range(n):
                maxval = max(maxval, srow[t2])
                prow[t2] = srow[t2]
            inv = dt(1) / exp_shifted(prow[:n], maxval, kbuf)
            for t2 in range(n):
                prow[t2] *= inv
            stail = srow[n:]  # the causal mask: the future gets score 0 and probability 0
            ptail = prow[n:]
            for i in range(T - n):
                stail[i] = zero
                ptail[i] = zero
        np.dot(P, v, y)
        for t in range(T):
            dst = out[b * T * C + t * C + h * hs:b * T * C + t * C + (h + 1) * hs]
            row = y[t]
            for i in range(hs):
                dst[i] = row[i]


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
        one = dt(1)
        _gather_head(q, inp, b, h, T, C, hs, 0, one)
        _gather_head(k, inp, b, h, T, C, hs, 1, one)
        _gather_head(v, inp, b, h, T, C, hs, 2, one)
        for t in range(T):
            src = dout[b * T * C + t * C + h * hs:b * T * C + t * C + (h + 1) * hs]
            row = dy[t]
            for i in range(hs):
                row[i] = src[i]
        P = att[bh * T * T:(bh + 1) * T * T].reshape(T, T)
        np.dot(dy, v.T, dP)
        np.dot(P.T, dy, g)
        _scatter_add_head(dinp, g, b, h, T, C3, hs, 2 * C, dt(1))
        a0 = bh * T * T
        for t in range(T):  # rows as slices indexed from 0 (vectorized)
            prow = P[t]
            drow = dP[t]
            if datt is not None:
                da = datt[a0 + t * T:a0 + t * T + t + 1]
                for t2 in range(t + 1):
                    da[t2] += drow[t2]
            s = dt(0)
            for t2 in range(t + 1):
                s += prow[t2] * drow[t2]
            for t2 in range(t + 1):
                drow[t2] = prow[t2] * (drow[t2] - s)
            if dpreatt is not None:
                dpa = dpreatt[a0 + t * T:a0 + t * T + t + 1]
                for t2 in range(t + 1):
                    dpa[t2] += drow[t2]
            dtail = drow[t + 1:]
            for i in range(T - t - 1):
                dtail[i] = dt(0)
        np.dot(dP, k, g)
        _scatter_add_head(dinp, g, b, h, T, C3, hs, 0, scale)
        np.dot(dP.T, q, g)
        _scatter_add_head(dinp, g, b, h, T, C3, hs, C, scale)
