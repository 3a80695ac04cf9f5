"""Causal multi-head self-attention over packed q, k, v.

Legend: B batch, T time, C channels, NH heads, hs = C/NH head size.
inp (B,T,3C) holds, for each position, q (C) then k (C) then v (C); head h uses channels
[h*hs, (h+1)*hs) of each. att (B,NH,T,T) keeps the softmax probabilities, 0 above the diagonal
(t2 > t, the future): the backward reads them. The scaled scores are scratch, one head's (T,T) at a
time, which stays in cache (a (B,NH,T,T) scores buffer measured 9% slower at the medium config, L6 NH8 C256 T128).
The products run through cllm/kernels/blas.gemm on each head's channels in place (a row stride of 3C for
q, k, v, of C for out): no copies in or out, and the backward adds straight into dinp.
Dropout on the probabilities (drop > 0: the threshold of cllm/kernels/dropout.py, with its key): att keeps
the probabilities before dropout (the softmax backward needs them) and out = (att * M) @ v with M the
scaled mask of cllm/kernels/dropout.causal_mask_rows, built per head in scratch and rebuilt by the backward
from (key, element index): nothing per mask is stored. With drop = 0 no mask is built.
"""
import numpy as np
from numba import njit, prange

from ._common import PJIT
from .blas import NO_TRANS, TRANS, gemm
from .dropout import causal_mask_rows, keep_scale
from .fastexp import softmax_row

# Rows per block of the causal products: block i needs only the keys up to its last row, so with
# blocks of 32 rows a T = 128 head computes 5/8 of the full square's products.
CAUSAL_BLOCK = 32


@njit(**PJIT)
def attention_forward(out, att, inp, B, T, C, NH, drop=0, key=0):
    # out (B,T,C);  att (B,NH,T,T);  inp (B,T,3C);  drop, key: dropout on the probabilities
    # Per (b, h): S = q k^T / sqrt(hs) in causal blocks of rows (each up to its last key; what lies
    # above the diagonal is then set to 0), a causal softmax row by row, and out = att @ v in the
    # same blocks. BLAS runs single-threaded inside each parallel iteration.
    hs = C // NH
    C3 = 3 * C
    dt = inp.dtype.type
    scale = dt(1) / np.sqrt(dt(hs))
    zero = dt(0)
    scale_kept = keep_scale(inp, drop)
    for bh in prange(B * NH):
        b = bh // NH
        h = bh % NH
        q0 = b * T * C3 + h * hs  # head h's q in batch row b; its k is C further, its v 2C
        kbuf = np.empty(T, dtype=np.float32)  # exp_shifted's scratch
        Sf = np.empty(T * T, dtype=inp.dtype)  # this head's scores (T,T), row by row
        S = Sf.reshape(T, T)
        P = att[bh * T * T:(bh + 1) * T * T].reshape(T, T)
        for r0 in range(0, T, CAUSAL_BLOCK):  # rows r0..r1-1 need the scores of keys 0..r1-1 only
            r1 = min(T, r0 + CAUSAL_BLOCK)
            gemm(NO_TRANS, TRANS, r1 - r0, r1, hs, scale, inp, q0 + r0 * C3, C3, inp, q0 + C, C3, 0,
                 Sf, r0 * T, T)
        for t in range(T):  # rows as slices indexed from 0, so that LLVM vectorizes the loops
            n = t + 1
            srow = S[t]
            prow = P[t]
            softmax_row(prow[:n], srow[:n], kbuf)
            ptail = prow[n:]  # the causal mask: the future gets probability 0
            for i in range(T - n):
                ptail[i] = zero
        src, s0 = att, bh * T * T  # the probabilities that multiply v
        if drop > 0:
            src, s0 = np.empty(T * T, dtype=att.dtype), 0  # P * M, this head's dropped probabilities
            causal_mask_rows(src, key, bh * T * T, drop, scale_kept, T)
            for i in range(T * T):
                src[i] *= att[bh * T * T + i]
        for r0 in range(0, T, CAUSAL_BLOCK):  # out rows r0..r1-1 = P[r0:r1, :r1] @ v[:r1]
            r1 = min(T, r0 + CAUSAL_BLOCK)
            gemm(NO_TRANS, NO_TRANS, r1 - r0, hs, r1, 1, src, s0 + r0 * T, T, inp, q0 + 2 * C, C3, 0,
                 out, b * T * C + r0 * C + h * hs, C)


@njit(**PJIT)
def attention_backward(dinp, dout, inp, att, B, T, C, NH, overwrite=False, drop=0, key=0):
    # dinp (B,T,3C) += ... (= with overwrite: what it held is ignored; each element of dinp is
    # written by exactly one product);  dout (B,T,C);  inp (B,T,3C);  att (B,NH,T,T).
    # O(T^2 hs) per head, with BLAS for the four products:
    #   dP = dout_h v^T,  dv += P^T dout_h,  dS = P * (dP - rowsum(P * dP)),
    #   dq += dS k / sqrt(hs),  dk += dS^T q / sqrt(hs)
    # dP and dS are one head's scratch, never written out: nothing but a test would read them
    # (tests/test_kernels.py computes them in NumPy). Each call adds exactly its own contribution to
    # dinp, so calling it twice gives twice the gradient.
    # With dropout (drop, key as in the forward): the mask M is rebuilt, dv uses P * M, and dP is
    # multiplied by M (the gradient of the probabilities before dropout).
    hs = C // NH
    C3 = 3 * C
    dt = inp.dtype.type
    scale = dt(1) / np.sqrt(dt(hs))
    beta = 0 if overwrite else 1
    scale_kept = keep_scale(inp, drop)
    for bh in prange(B * NH):  # parallel over (b, h): each writes only its own head's slices
        b = bh // NH
        h = bh % NH
        q0 = b * T * C3 + h * hs  # head h's q (and dq) in batch row b; k is C further, v 2C
        y0 = b * T * C + h * hs  # head h's rows of dout
        dP = np.empty((T, T), dtype=inp.dtype)
        P = att[bh * T * T:(bh + 1) * T * T].reshape(T, T)
        dPf = dP.reshape(T * T)
        src, s0 = att, bh * T * T  # the probabilities that multiplied v
        M = dPf  # the scaled mask (only read with dropout)
        if drop > 0:
            M, src, s0 = np.empty(T * T, dtype=att.dtype), np.empty(T * T, dtype=att.dtype), 0
            causal_mask_rows(M, key, bh * T * T, drop, scale_kept, T)
            for i in range(T * T):
                src[i] = att[bh * T * T + i] * M[i]
        for r0 in range(0, T, CAUSAL_BLOCK):
            r1 = min(T, r0 + CAUSAL_BLOCK)
            # dP rows r0..r1-1, keys 0..r1-1 (the rest is masked below)
            gemm(NO_TRANS, TRANS, r1 - r0, r1, hs, 1, dout, y0 + r0 * C, C, inp, q0 + 2 * C, C3, 0, dPf, r0 * T, T)
            # dv rows r0..r1-1 += P[r0:, r0:r1]^T dy[r0:]: only queries at or after a key attend to it
            gemm(TRANS, NO_TRANS, r1 - r0, hs, T - r0, 1, src, s0 + r0 * T + r0, T, dout, y0 + r0 * C, C,
                 beta, dinp, q0 + 2 * C + r0 * C3, C3)
        for t in range(T):  # rows as slices indexed from 0 (vectorized)
            prow = P[t]
            drow = dP[t]
            if drop > 0:  # the gradient of the dropped probabilities -> of the probabilities
                mrow = M[t * T:t * T + t + 1]
                for t2 in range(t + 1):
                    drow[t2] *= mrow[t2]
            s = dt(0)
            for t2 in range(t + 1):
                s += prow[t2] * drow[t2]
            for t2 in range(t + 1):
                drow[t2] = prow[t2] * (drow[t2] - s)
            dtail = drow[t + 1:]
            for i in range(T - t - 1):
                dtail[i] = dt(0)
        for r0 in range(0, T, CAUSAL_BLOCK):  # the same two triangles for dq and dk
            r1 = min(T, r0 + CAUSAL_BLOCK)
            gemm(NO_TRANS, NO_TRANS, r1 - r0, hs, r1, scale, dPf, r0 * T, T, inp, q0 + C, C3, beta,
                 dinp, q0 + r0 * C3, C3)
            gemm(TRANS, NO_TRANS, r1 - r0, hs, T - r0, scale, dPf, r0 * T + r0, T, inp, q0 + r0 * C3, C3, beta,
                 dinp, q0 + C + r0 * C3, C3)
