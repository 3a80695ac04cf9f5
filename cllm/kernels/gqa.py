"""Causal grouped-query attention (GQA) over packed q, k, v, with decoding from a KV cache of the kv heads.

Legend: B batch, T time, NH query heads, NKV key/value heads (NH % NKV == 0), hs head size, C = NH*hs,
W = (NH + 2*NKV)*hs the packed row, rep = NH/NKV query heads per kv head, maxT cache positions.
qkv (B,T,W) holds, for each position, the NH query heads, then the NKV key heads, then the NKV value
heads, hs channels each (HuggingFace's q_proj, k_proj, v_proj outputs side by side). Query head h reads
kv head h // rep, as HF's repeat_kv repeats each kv head rep times in a row. With NKV == NH the row is
GPT-2's (B,T,3C) q, k, v: cllm/kernels/attention.py runs GPT-2's attention through these kernels.
Dropout on the probabilities (drop > 0, the threshold of cllm/kernels/dropout.py, with its key): head
(b, h)'s mask is drawn at counters (b*NH + h)*T*T onwards, att keeps the probabilities before dropout
and out = (att * M) @ v with M the scaled mask, built per head in scratch and rebuilt by the backward
from (key, element index): nothing per mask is stored.
att (B,NH,T,T) keeps the probabilities, 0 above the diagonal (the future); the scaled scores are scratch,
one head's (T,T) at a time, which stays in cache (a (B,NH,T,T) scores buffer measured 9% slower at L6
NH8 C256 T128). Products run through cllm/kernels/blas.gemm on the heads' channels in place (row stride
W for q, k, v; C for out; no copies in or out, and the backward adds straight into dqkv), in causal
blocks of rows.

KV cache, one layer: kcache and vcache (B, NKV, maxT, hs) each: per batch row and kv head, position p's
key (or value) is the contiguous hs floats at ((b*NKV + g)*maxT + p)*hs. Only the NKV kv heads are
stored (rep times smaller than caching every query head's), and a kv head's keys are one (maxT, hs)
matrix, so the rep query heads that share it score against all positions in one product, reading the
keys once. The model keeps one such pair per layer (views into a flat buffer); positions 0..pos-1 must
hold the earlier tokens' keys and values when position pos is decoded.
"""
import numpy as np
from numba import njit, prange

from ._common import JIT, PARALLEL_MIN_WORK, PJIT
from .blas import NO_TRANS, TRANS, gemm
from .dropout import causal_mask_rows, keep_scale
from .fastexp import attention_floor, softmax_row

# Rows per block of the causal products: block i needs only the keys up to its last row, so with
# blocks of 32 rows a T = 128 head computes 5/8 of the full square's products.
CAUSAL_BLOCK = 32


@njit(**JIT)
def _forward_head(out, att, qkv, b, h, T, NH, NKV, hs, drop, key):
    # one (batch row b, query head h) of gqa_forward: S = q k^T / sqrt(hs) in causal blocks of rows,
    # the causal softmax row by row into att, out = att @ v (or (att * M) @ v with dropout) in the same blocks
    C = NH * hs
    W = (NH + 2 * NKV) * hs
    g = h // (NH // NKV)
    dt = qkv.dtype.type
    scale = dt(1) / np.sqrt(dt(hs))
    zero = dt(0)
    q0 = b * T * W + h * hs
    k0 = b * T * W + C + g * hs
    v0 = k0 + NKV * hs
    bh = b * NH + h
    kbuf = np.empty(T, dtype=np.float32)  # exp_shifted's scratch
    Sf = np.empty(T * T, dtype=qkv.dtype)  # this head's scores (T,T), row by row
    S = Sf.reshape(T, T)
    P = att[bh * T * T:(bh + 1) * T * T].reshape(T, T)
    for r0 in range(0, T, CAUSAL_BLOCK):  # rows r0..r1-1 need the scores of keys 0..r1-1 only
        r1 = min(T, r0 + CAUSAL_BLOCK)
        gemm(NO_TRANS, TRANS, r1 - r0, r1, hs, scale, qkv, q0 + r0 * W, W, qkv, k0, W, 0, Sf, r0 * T, T)
    floor = attention_floor(qkv)
    for t in range(T):  # rows as slices indexed from 0, so that LLVM vectorizes the loops
        n = t + 1
        prow = P[t]
        softmax_row(prow[:n], S[t][:n], kbuf, floor)
        ptail = prow[n:]  # the causal mask: the future gets probability 0
        for i in range(T - n):
            ptail[i] = zero
    src, s0 = att, bh * T * T  # the probabilities that multiply v
    if drop > 0:
        src, s0 = np.empty(T * T, dtype=att.dtype), 0  # P * M, this head's dropped probabilities
        causal_mask_rows(src, key, bh * T * T, drop, keep_scale(qkv, drop), T)
        for i in range(T * T):
            src[i] *= att[bh * T * T + i]
    for r0 in range(0, T, CAUSAL_BLOCK):  # out rows r0..r1-1 = P[r0:r1, :r1] @ v[:r1]
        r1 = min(T, r0 + CAUSAL_BLOCK)
        gemm(NO_TRANS, NO_TRANS, r1 - r0, hs, r1, 1, src, s0 + r0 * T, T, qkv, v0, W, 0,
             out, b * T * C + r0 * C + h * hs, C)


@njit(**PJIT)
def gqa_forward(out, att, qkv, B, T, NH, NKV, hs, drop=0, key=0):
    # out (B,T,NH*hs);  att (B,NH,T,T) the probabilities (the backward reads them);  qkv (B,T,W);
    # drop, key: dropout on the probabilities (0: none)
    # Parallel over (b, h): each writes only its own head's rows of out and its (T,T) of att. BLAS runs
    # single-threaded inside each parallel iteration; small work stays on the calling thread.
    if B * NH * T * T * hs < PARALLEL_MIN_WORK:
        for bh in range(B * NH):
            _forward_head(out, att, qkv, bh // NH, bh % NH, T, NH, NKV, hs, drop, key)
    else:
        for bh in prange(B * NH):
            _forward_head(out, att, qkv, bh // NH, bh % NH, T, NH, NKV, hs, drop, key)


@njit(**JIT)
def _backward_group(dqkv, dout, qkv, att, b, g, T, NH, NKV, hs, overwrite, drop, key):
    # one (batch row b, kv head g) of gqa_backward: its rep query heads one after the other, each adding
    # its share into the kv head's dk and dv (the first one sets them with overwrite). Per query head h:
    #   dP = dout_h v^T,  dv += P^T dout_h,  dS = P * (dP - rowsum(P * dP)),
    #   dq_h += dS k / sqrt(hs),  dk += dS^T q_h / sqrt(hs)
    # Each head's own dP and dS are used, never an accumulated buffer, so a call adds exactly its gradient.
    # With dropout the head's mask M is rebuilt: dv uses P * M and dP is multiplied by M.
    C = NH * hs
    W = (NH + 2 * NKV) * hs
    rep = NH // NKV
    dt = qkv.dtype.type
    scale = dt(1) / np.sqrt(dt(hs))
    k0 = b * T * W + C + g * hs  # kv head g's k (and dk) in batch row b; its v is NKV*hs further
    v0 = k0 + NKV * hs
    dP = np.empty((T, T), dtype=qkv.dtype)
    dPf = dP.reshape(T * T)
    beta_q = 0 if overwrite else 1  # every dq element is written by exactly one product
    if drop > 0:  # scratch for one head's scaled mask M and dropped probabilities P * M
        M, dropped = np.empty(T * T, dtype=att.dtype), np.empty(T * T, dtype=att.dtype)
    else:
        M, dropped = dPf, dPf  # never read
    for r in range(rep):
        h = g * rep + r
        q0 = b * T * W + h * hs
        y0 = b * T * C + h * hs  # head h's rows of dout
        a0 = (b * NH + h) * T * T
        beta_kv = 0 if overwrite and r == 0 else 1  # the group's first head sets dk, dv with overwrite
        P = att[a0:a0 + T * T].reshape(T, T)
        src, s0 = att, a0  # the probabilities that multiplied v
        if drop > 0:
            causal_mask_rows(M, key, a0, drop, keep_scale(qkv, drop), T)
            for i in range(T * T):
                dropped[i] = att[a0 + i] * M[i]
            src, s0 = dropped, 0
        for r0 in range(0, T, CAUSAL_BLOCK):
            r1 = min(T, r0 + CAUSAL_BLOCK)
            # dP rows r0..r1-1, keys 0..r1-1 (the rest is masked below)
            gemm(NO_TRANS, TRANS, r1 - r0, r1, hs, 1, dout, y0 + r0 * C, C, qkv, v0, W, 0, dPf, r0 * T, T)
            # dv rows r0..r1-1 += P[r0:, r0:r1]^T dy[r0:]: only queries at or after a key attend to it
            gemm(TRANS, NO_TRANS, r1 - r0, hs, T - r0, 1, src, s0 + r0 * T + r0, T, dout, y0 + r0 * C, C,
                 beta_kv, dqkv, v0 + r0 * W, W)
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
            gemm(NO_TRANS, NO_TRANS, r1 - r0, hs, r1, scale, dPf, r0 * T, T, qkv, k0, W, beta_q,
                 dqkv, q0 + r0 * W, W)
            gemm(TRANS, NO_TRANS, r1 - r0, hs, T - r0, scale, dPf, r0 * T + r0, T, qkv, q0 + r0 * W, W, beta_kv,
                 dqkv, k0 + r0 * W, W)


@njit(**PJIT)
def gqa_backward(dqkv, dout, qkv, att, B, T, NH, NKV, hs, overwrite=False, drop=0, key=0):
    # dqkv (B,T,W) += ... (= with overwrite: what it held is ignored);  dout (B,T,NH*hs);  qkv (B,T,W);
    # att (B,NH,T,T) from gqa_forward; drop, key: the forward's dropout. Parallel over (b, kv head): a kv
    # head's dk and dv collect the gradients of all its rep query heads, so one iteration owns the whole
    # group (its query heads' dq and its kv head's dk, dv) and no two threads ever add into the same gradient.
    if B * NH * T * T * hs < PARALLEL_MIN_WORK:
        for bg in range(B * NKV):
            _backward_group(dqkv, dout, qkv, att, bg // NKV, bg % NKV, T, NH, NKV, hs, overwrite, drop, key)
    else:
        for bg in prange(B * NKV):
            _backward_group(dqkv, dout, qkv, att, bg // NKV, bg % NKV, T, NH, NKV, hs, overwrite, drop, key)


@njit(**JIT)
def _write_cache(kcache, vcache, qkv, B, T, NH, NKV, hs, pos0, maxT):
    # qkv (B,T,W): position pos0 + t's k and v of every kv head into kcache, vcache (B,NKV,maxT,hs)
    W = (NH + 2 * NKV) * hs
    for b in range(B):
        for t in range(T):
            row = qkv[(b * T + t) * W:(b * T + t + 1) * W]
            for g in range(NKV):
                c0 = ((b * NKV + g) * maxT + pos0 + t) * hs
                kc = kcache[c0:c0 + hs]
                vc = vcache[c0:c0 + hs]
                k = row[(NH + g) * hs:(NH + g + 1) * hs]
                v = row[(NH + NKV + g) * hs:(NH + NKV + g + 1) * hs]
                for i in range(hs):
                    kc[i] = k[i]
                    vc[i] = v[i]


@njit(**JIT)
def _decode_group(out, qkv_row, kcache, vcache, b, g, NH, NKV, hs, pos, maxT):
    # one (batch row b, kv head g) of gqa_decode: the group's rep query heads are rep consecutive rows
    # of hs channels in the qkv row, so S (rep, n) = Q K^T and out (rep, hs) = softmax(S) V are each one
    # product over the cached positions 0..n-1 (the keys read once for the whole group)
    W = (NH + 2 * NKV) * hs
    rep = NH // NKV
    n = pos + 1
    dt = qkv_row.dtype.type
    scale = dt(1) / np.sqrt(dt(hs))
    c0 = (b * NKV + g) * maxT * hs
    S = np.empty(rep * n, dtype=qkv_row.dtype)
    kbuf = np.empty(n, dtype=np.float32)  # exp_shifted's scratch
    gemm(NO_TRANS, TRANS, rep, n, hs, scale, qkv_row, b * W + g * rep * hs, hs, kcache, c0, hs, 0, S, 0, n)
    for r in range(rep):
        srow = S[r * n:(r + 1) * n]
        softmax_row(srow, srow, kbuf, attention_floor(S))
    gemm(NO_TRANS, NO_TRANS, rep, hs, n, 1, S, 0, n, vcache, c0, hs, 0, out, b * NH * hs + g * rep * hs, hs)


@njit(**PJIT)
def gqa_decode(out, qkv_row, kcache, vcache, B, NH, NKV, hs, pos, maxT):
    # out (B,NH*hs): position pos's attention output of every query head;  qkv_row (B,W) that position's
    # q, k, v;  kcache, vcache (B,NKV,maxT,hs): pos's k and v are written there first (pos < maxT), then
    # each query head attends over positions 0..pos. Parallel over (b, kv head) when the work is large.
    _write_cache(kcache, vcache, qkv_row, B, 1, NH, NKV, hs, pos, maxT)
    if B * NH * (pos + 1) * hs < PARALLEL_MIN_WORK:
        for bg in range(B * NKV):
            _decode_group(out, qkv_row, kcache, vcache, bg // NKV, bg % NKV, NH, NKV, hs, pos, maxT)
    else:
        for bg in prange(B * NKV):
            _decode_group(out, qkv_row, kcache, vcache, bg // NKV, bg % NKV, NH, NKV, hs, pos, maxT)


@njit(**JIT)
def _prefill_head(out, qkv, kcache, vcache, b, h, T, NH, NKV, hs, pos0, maxT):
    # one (batch row b, query head h) of gqa_prefill: rows t = 0..T-1 (position pos0 + t) attend to cached
    # positions 0..pos0+t, in causal blocks of rows as _forward_head (block rows r0..r1-1 need the keys up
    # to position pos0 + r1 - 1 only)
    C = NH * hs
    W = (NH + 2 * NKV) * hs
    g = h // (NH // NKV)
    N = pos0 + T  # positions the last row attends to
    dt = qkv.dtype.type
    scale = dt(1) / np.sqrt(dt(hs))
    zero = dt(0)
    q0 = b * T * W + h * hs
    c0 = (b * NKV + g) * maxT * hs
    kbuf = np.empty(N, dtype=np.float32)
    Sf = np.empty(T * N, dtype=qkv.dtype)  # scores, then probabilities (T,N)
    S = Sf.reshape(T, N)
    for r0 in range(0, T, CAUSAL_BLOCK):
        r1 = min(T, r0 + CAUSAL_BLOCK)
        gemm(NO_TRANS, TRANS, r1 - r0, pos0 + r1, hs, scale, qkv, q0 + r0 * W, W, kcache, c0, hs, 0, Sf, r0 * N, N)
    for t in range(T):
        n = pos0 + t + 1
        srow = S[t]
        softmax_row(srow[:n], srow[:n], kbuf, attention_floor(S))
        tail = srow[n:]  # the block's product below reads up to pos0 + r1 - 1: the future must be 0
        for i in range(N - n):
            tail[i] = zero
    for r0 in range(0, T, CAUSAL_BLOCK):
        r1 = min(T, r0 + CAUSAL_BLOCK)
        gemm(NO_TRANS, NO_TRANS, r1 - r0, hs, pos0 + r1, 1, Sf, r0 * N, N, vcache, c0, hs, 0,
             out, (b * T + r0) * C + h * hs, C)


@njit(**PJIT)
def gqa_prefill(out, qkv, kcache, vcache, B, T, NH, NKV, hs, pos0, maxT):
    # out (B,T,NH*hs);  qkv (B,T,W) positions pos0..pos0+T-1 (pos0 + T <= maxT);  kcache, vcache
    # (B,NKV,maxT,hs): the block's k and v are written there, positions before pos0 must hold the earlier
    # tokens'. The same results as T gqa_decode steps (and with pos0 = 0, as gqa_forward's out); the
    # re-prefill after the context window slides is a call with pos0 = 0 over the kept tokens.
    _write_cache(kcache, vcache, qkv, B, T, NH, NKV, hs, pos0, maxT)
    if B * NH * T * (pos0 + T) * hs < PARALLEL_MIN_WORK:
        for bh in range(B * NH):
            _prefill_head(out, qkv, kcache, vcache, bh // NH, bh % NH, T, NH, NKV, hs, pos0, maxT)
    else:
        for bh in prange(B * NH):
            _prefill_head(out, qkv, kcache, vcache, bh // NH, bh % NH, T, NH, NKV, hs, pos0, maxT)
