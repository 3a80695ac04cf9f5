"""Decoding with a KV cache: one step of the whole model (gpt2: _forward_rows; llama: llama_forward_rows)
costs O(T) attention plus the weight matrices,
instead of a full forward over the prefix. `prefill` feeds a whole prompt in one call. One forward,
_forward_rows, serves both, float32 or int8 weights; its LayerNorm, GELU, residual sums and (from
GEMM_MIN_ROWS rows on) linear layers are the training forward's kernels. Its own: the attention
over the cache, and the matrix-vector products of a few rows (docs/design.md, Decoding, says why).

Legend: nb number of sequences decoded together (1 for sampling, the beam width for beam search),
L layers, C channels, NH heads, hs = C/NH, maxT maximum sequence length, V vocab, Vp padded vocab.
kvcache (nb, L, 2, NH, ...): for each sequence and layer, the keys then the values of each head,
head-major: a head's keys are one contiguous (hs, maxT) block, transposed so that the scores of
all positions are built along contiguous rows, and its values one contiguous (maxT, hs) block.
(A position-major (nb, L, maxT, 2C) layout put a head's consecutive keys 2C floats apart, and the
per-token cost grew much faster than the attention's FLOPs.)
"""
import numpy as np
from numba import njit, prange

from ._common import JIT, PARALLEL_MIN_WORK, PJIT
from .fastexp import attention_floor, softmax_row
from .gelu import gelu_span
from .gqa import gqa_prefill
from .layernorm import layernorm_rows
from .matmul import PARALLEL_MATVEC_MIN, ROW_BLOCKS, matmul_forward
from .qknorm import qknorm_row
from .quant import dequantize_int8_rows, matvec_int8_forward
from .relu2 import relu2_rows
from .residual import add_span
from .rmsnorm import rmsnorm_row
from .rope import rope_forward
from .softcap import softcap_forward
from .swiglu import swiglu_rows


@njit(**JIT)
def _matvec_rows(out, x, weight, bias, nb, C, OC, o0, o1):
    # out[b, o0:o1] = weight[o0:o1] (rows, C) @ x[b] (C) + bias[o0:o1] for each of the nb rows, one weight
    # row at a time against every sequence, so the weights are read once: the step is bound by reading
    # them. A plain loop (LLVM vectorizes the dot product) reads them at about twice the speed of BLAS's
    # gemv on one core here (28 against 15 GB/s, the medium config's 24 MB).
    zero = x.dtype.type(0)
    for o in range(o0, o1):
        w = weight[o * C:(o + 1) * C]
        for b in range(nb):
            xb = x[b * C:(b + 1) * C]
            s = zero
            for c in range(C):
                s += w[c] * xb[c]
            if bias is not None:
                s += bias[o]
            out[b * OC + o] = s


@njit(**JIT)
def _matvec_block(out, x, weight, bias, nb, C, OC, o0, o1):
    # _matvec_rows's product, four weight rows at a time: each element of x[b] loaded feeds four
    # multiply-adds instead of one, which is what bounds a many-row step once the weights are in cache
    # (a batched decoding step): 1.2-2.2x _matvec_rows at 16 rows, within 10% of one BLAS gemm call,
    # on the Intel Xeon 2-core machine (C 256 to 1024, OC 256 to 5,000). A row's sums are computed the
    # same way whatever nb is, so a sequence's logits do not depend on the batch around it. o0 is a
    # multiple of 4 (or the end) for the same reason.
    zero = x.dtype.type(0)
    o = o0
    while o + 4 <= o1:
        w0 = weight[o * C:(o + 1) * C]
        w1 = weight[(o + 1) * C:(o + 2) * C]
        w2 = weight[(o + 2) * C:(o + 3) * C]
        w3 = weight[(o + 3) * C:(o + 4) * C]
        for b in range(nb):
            xb = x[b * C:(b + 1) * C]
            s0 = zero
            s1 = zero
            s2 = zero
            s3 = zero
            for c in range(C):
                xc = xb[c]
                s0 += w0[c] * xc
                s1 += w1[c] * xc
                s2 += w2[c] * xc
                s3 += w3[c] * xc
            if bias is not None:
                s0 += bias[o]
                s1 += bias[o + 1]
                s2 += bias[o + 2]
                s3 += bias[o + 3]
            r = b * OC + o
            out[r] = s0
            out[r + 1] = s1
            out[r + 2] = s2
            out[r + 3] = s3
        o += 4
    _matvec_rows(out, x, weight, bias, nb, C, OC, o, o1)


@njit(**PJIT)
def _matvec_parallel(out, x, weight, bias, nb, C, OC):
    # the output channels split into one block per thread, each starting at a multiple of 4 (see
    # _matvec_block: the same sums as the serial product)
    for blk in prange(ROW_BLOCKS):
        o0 = min(OC, (blk * OC // ROW_BLOCKS + 3) // 4 * 4)
        o1 = OC if blk == ROW_BLOCKS - 1 else min(OC, ((blk + 1) * OC // ROW_BLOCKS + 3) // 4 * 4)
        _matvec_block(out, x, weight, bias, nb, C, OC, o0, o1)


@njit(**JIT)
def matvec_forward(out, x, weight, bias, nb, C, OC):
    # out (nb,OC) = x (nb,C) @ weight (OC,C)^T + bias (OC);  bias may be None. For a few rows the
    # product is bound by reading the weights once, so it is split over the output channels
    # (each thread reads its own rows of the weight) rather than over the input rows. The work that
    # pays for waking the thread team grows with the rows: nb * OC * C multiply-adds.
    if OC * C * nb >= PARALLEL_MATVEC_MIN and ROW_BLOCKS > 1:
        _matvec_parallel(out, x, weight, bias, nb, C, OC)
    else:
        _matvec_block(out, x, weight, bias, nb, C, OC, 0, OC)


@njit(**JIT)
def _attend_cached(out, q, keys_t, values, scores, kbuf, scale):
    # One head, one query: out (hs) = softmax(q keys^T * scale) @ values;  q (hs);  keys_t (hs,maxT)
    # the cached keys transposed, of which positions 0..n-1 are used;  values (n,hs);  scores (n),
    # kbuf (>= n) scratch. Plain loops over contiguous rows: hs is small (32 to 64), where BLAS's
    # per-call cost outweighs its speed, and the transposed keys make the score loop run along
    # positions (vectorized) instead of ending each position with a horizontal sum.
    n, hs = values.shape
    dt = scores.dtype.type
    for t in range(n):
        scores[t] = dt(0)
    for i in range(hs):
        krow = keys_t[i]
        qi = q[i] * scale
        for t in range(n):
            scores[t] += krow[t] * qi
    softmax_row(scores, scores, kbuf, attention_floor(scores))
    for i in range(hs):
        out[i] = dt(0)
    for t in range(n):
        p = scores[t]
        v = values[t]
        for i in range(hs):
            out[i] += p * v[i]


@njit(**JIT)
def _attend_pairs(atty, qkv, kvcache, seq, pos, l, L, NH, hs, maxT, scale, scores, kbuf, first, step):
    # _forward_rows's attention for the (row, head) pairs first, first + step, ... of the R * NH: row r (of seq
    # and pos (R)) and head h attend over positions 0..pos[r] of the sequence's layer-l cache. atty (R,C) out;
    # qkv (R,3C); scores (>= maxT) and kbuf (>= maxT, float32) scratch.
    C = NH * hs
    C3 = 3 * C
    head = maxT * hs  # one head's block of keys or values
    for rh in range(first, pos.size * NH, step):
        r = rh // NH
        h = rh % NH
        kbase = (seq[r] * L + l) * 2 * NH * head  # the sequence's and layer's keys; values follow
        n = pos[r] + 1
        ko = kbase + h * head
        vo = kbase + (NH + h) * head
        q0 = r * C3 + h * hs
        _attend_cached(atty[r * C + h * hs:r * C + (h + 1) * hs], qkv[q0:q0 + hs],
                       kvcache[ko:ko + head].reshape(hs, maxT), kvcache[vo:vo + n * hs].reshape(n, hs),
                       scores[:n], kbuf, scale)


@njit(**PJIT)
def _attend_pairs_parallel(atty, qkv, kvcache, seq, pos, l, L, NH, hs, maxT, scale, scores, kbuf):
    # _attend_pairs over the threads, each with its own scratch row of scores and kbuf (ROW_BLOCKS, maxT): thread
    # b takes pairs b, b + ROW_BLOCKS, ..., so a prompt's short early rows and long late ones are shared alike
    for blk in prange(ROW_BLOCKS):
        _attend_pairs(atty, qkv, kvcache, seq, pos, l, L, NH, hs, maxT, scale, scores[blk], kbuf[blk], blk,
                      ROW_BLOCKS)


# From this many rows on, a linear layer is the training forward's matmul (row blocks over the
# threads, one gemm each) rather than matrix-vector products: prefilling a prompt (or the beam
# search's wide steps) then reads the weights once per block of rows. Below it, the blocked
# products of _matvec_block are as fast as one gemm call, and faster than two half-size ones, each
# packing the whole weight matrix (measured at 16 rows on the Intel Xeon 2-core machine: 97-129 us
# against 96-128 for one gemm and 158-229 for matmul_forward's two), which is what a batched
# decoding step of the server's concurrent requests runs (cllm/serve/batcher.py).
# INT8_GEMM_MIN_ROWS: the same for int8 weights, whose products (cllm/kernels/quant.py) are not
# blocked, so that dequantizing the matrix once for a gemm pays from fewer rows.
GEMM_MIN_ROWS = 32
INT8_GEMM_MIN_ROWS = 8


@njit(**JIT)
def _linear(out, x, weight, scales, which, r0, bias, R, C, OC, wbuf):
    # out (R,OC) = x (R,C) @ weight (OC,C)^T + bias (OC);  bias may be None. scales None: weight is
    # float; else weight is int8 and scales[which][r0:r0 + OC] its rows' scales (cllm/kernels/quant.py),
    # and a product over many rows dequantizes the weight into wbuf (>= OC*C floats) once and runs
    # the float gemm. The int8 branches slice the scales themselves: a helper returning an array or
    # None would give Optional(array) (Numba prunes `x is None` only for an argument typed None), and
    # a prange kernel reads an Optional argument wrongly (Numba's launcher passes the bare array, the
    # loop body reads its "present" flag from past its end): the int8 product raised "expected
    # array(float32, 1d, C), got None" at random (tests/test_quantize.py).
    if R < (GEMM_MIN_ROWS if scales is None else INT8_GEMM_MIN_ROWS):
        _matvec(out, x, weight, scales, which, r0, bias, R, C, OC)
    elif scales is None:
        matmul_forward(out, x, weight, bias, 1, R, C, OC)
    else:
        w = wbuf[:OC * C]
        dequantize_int8_rows(w, weight, scales[which][r0:r0 + OC], OC, C)
        matmul_forward(out, x, w, bias, 1, R, C, OC)


@njit(**JIT)
def _matvec(out, x, weight, scales, which, r0, bias, R, C, OC):
    # a matrix-vector product of float weights (scales None) or int8 ones (see _linear)
    if scales is None:
        matvec_forward(out, x, weight, bias, R, C, OC)
    else:
        matvec_int8_forward(out, x, weight, scales[which][r0:r0 + OC], bias, R, C, OC)


@njit(**JIT)
def _forward_rows(logits, kvcache, tokens, seq, pos, wte, wpe, ln1w, ln1b, qkvw, qkvb, attprojw, attprojb,
                  ln2w, ln2b, fcw, fcb, fcprojw, fcprojb, lnfw, lnfb, scales, R, L, C, NH, maxT, V,
                  first_logit_row):
    # R rows: row r is token tokens[r] of sequence seq[r] at position pos[r] (int arrays (R)). Every
    # row's k and v go into its sequence's cache first, then each row attends over its sequence's
    # positions 0..pos[r] (earlier positions already cached, or rows of this call). logits
    # (R - first_logit_row, V) for the rows from first_logit_row on. scales: None, or the int8
    # model's (wte, qkvw, attprojw, fcw, fcprojw) scales, those five weights being int8
    # (cllm/kernels/quant.py; cllm/quantize.py).
    hs = C // NH
    C2 = 2 * C
    C3 = 3 * C
    C4 = 4 * C
    dt = wpe.dtype
    wsize = 0  # an int8 layer dequantized for a gemm: only int8 weights over many rows need it
    if scales is not None and R >= INT8_GEMM_MIN_ROWS:
        wsize = C4 * C
    wbuf = np.empty(wsize, dtype=dt)
    # the residual stream (R,C): x enters a layer, x2 = x + attention (training's residual2), then
    # x = x2 + MLP (residual3); two buffers, because cllm/kernels/residual.add_span vectorizes only
    # when its output is not an input
    x = np.empty(R * C, dtype=dt)
    x2 = np.empty(R * C, dtype=dt)
    xn = np.empty(R * C, dtype=dt)  # normalized (R,C)
    mean = np.empty(R, dtype=dt)  # each row's LayerNorm statistics (layernorm_rows writes them; unread)
    rstd = np.empty(R, dtype=dt)
    qkv = np.empty(R * C3, dtype=dt)  # (R,3C)
    atty = np.empty(R * C, dtype=dt)  # attention output before its projection (R,C)
    proj = np.empty(R * C, dtype=dt)  # (R,C)
    hid = np.empty(R * C4, dtype=dt)  # MLP hidden (R,4C)
    # gelu(hid) (R,4C), not in place: with out = inp, LLVM's overlap check sends gelu_span's loop to its
    # scalar version (10x slower, measured)
    hid_gelu = np.empty(R * C4, dtype=dt)
    scores = np.empty(maxT, dtype=dt)  # attention row scratch
    kbuf = np.empty(maxT, dtype=np.float32)  # exp_shifted's scratch
    scale = dt.type(1) / np.sqrt(dt.type(hs))
    head = maxT * hs  # one head's block of keys or values
    # the attention's (row, head) pairs over the threads when their work pays for waking them: a prompt's
    # prefill (512 tokens of the medium config at context 1024: 77 -> 47 ms; the last 51 of them after a
    # prefix-cache hit: 14.3 -> 8.5 ms), a batched step of 16 rows (3.2-4.0 -> 2.7-3.0 ms at position 60)
    attention_work = (np.sum(pos) + R) * C  # rows x positions attended x channels
    parallel_attention = attention_work >= PARALLEL_MIN_WORK and ROW_BLOCKS > 1
    scores2 = np.empty((ROW_BLOCKS if parallel_attention else 0, maxT), dtype=dt)
    kbuf2 = np.empty((ROW_BLOCKS if parallel_attention else 0, maxT), dtype=np.float32)
    for r in range(R):
        ix = tokens[r]
        p = pos[r]
        if scales is None:
            for c in range(C):
                x[r * C + c] = wte[ix * C + c] + wpe[p * C + c]
        else:
            for c in range(C):
                x[r * C + c] = dt.type(wte[ix * C + c]) * scales[0][ix] + wpe[p * C + c]
    for l in range(L):
        layernorm_rows(xn, mean, rstd, x, ln1w[l * C:(l + 1) * C], ln1b[l * C:(l + 1) * C], C, 0, R)
        _linear(qkv, xn, qkvw[l * C3 * C:(l + 1) * C3 * C], scales, 1, l * C3, qkvb[l * C3:(l + 1) * C3],
                R, C, C3, wbuf)
        for r in range(R):  # this layer's k (a column of keys_t) and v of every row into the cache
            kbase = (seq[r] * L + l) * 2 * NH * head  # the sequence's and layer's keys; values follow
            p = pos[r]
            for h in range(NH):
                ko = kbase + h * head
                vo = kbase + (NH + h) * head
                q0 = r * C3 + h * hs
                for i in range(hs):
                    kvcache[ko + i * maxT + p] = qkv[q0 + C + i]
                    kvcache[vo + p * hs + i] = qkv[q0 + C2 + i]
        if parallel_attention:
            _attend_pairs_parallel(atty, qkv, kvcache, seq, pos, l, L, NH, hs, maxT, scale, scores2, kbuf2)
        else:
            _attend_pairs(atty, qkv, kvcache, seq, pos, l, L, NH, hs, maxT, scale, scores, kbuf, 0, 1)
        _linear(proj, atty, attprojw[l * C * C:(l + 1) * C * C], scales, 2, l * C,
                attprojb[l * C:(l + 1) * C], R, C, C, wbuf)
        add_span(x2, x, proj)
        layernorm_rows(xn, mean, rstd, x2, ln2w[l * C:(l + 1) * C], ln2b[l * C:(l + 1) * C], C, 0, R)
        _linear(hid, xn, fcw[l * C4 * C:(l + 1) * C4 * C], scales, 3, l * C4,
                fcb[l * C4:(l + 1) * C4], R, C, C4, wbuf)
        gelu_span(hid_gelu, hid)
        _linear(proj, hid_gelu, fcprojw[l * C * C4:(l + 1) * C * C4], scales, 4, l * C,
                fcprojb[l * C:(l + 1) * C], R, C4, C, wbuf)
        add_span(x, x2, proj)
    f0 = first_logit_row
    layernorm_rows(xn, mean, rstd, x, lnfw, lnfb, C, f0, R)
    # tied LM head: only the V real rows of wte (Vp,C)
    _matvec(logits, xn[f0 * C:], wte[: V * C], scales, 0, 0, None, R - f0, C, V)


@njit(**JIT)
def decode_step(logits, kvcache, tokens, pos, wte, wpe, ln1w, ln1b, qkvw, qkvb, attprojw, attprojb,
                ln2w, ln2b, fcw, fcb, fcprojw, fcprojb, lnfw, lnfb, scales, nb, L, C, NH, maxT, V):
    # logits (nb,V) for the next token of each sequence;  tokens (nb) int32, the tokens at
    # position `pos` (0-based, < maxT); their k and v are written into kvcache at `pos`.
    # Parameter views are the model's named tensors (docs/design.md's order and shapes); scales None
    # (float weights) or an int8 model's (see _forward_rows).
    seq = np.arange(nb)
    positions = np.full(nb, pos)
    _forward_rows(logits, kvcache, tokens, seq, positions, wte, wpe, ln1w, ln1b, qkvw, qkvb, attprojw, attprojb,
                  ln2w, ln2b, fcw, fcb, fcprojw, fcprojb, lnfw, lnfb, scales, nb, L, C, NH, maxT, V, 0)


@njit(**JIT)
def decode_batch(logits, kvcache, tokens, seq, positions, wte, wpe, ln1w, ln1b, qkvw, qkvb, attprojw, attprojb,
                 ln2w, ln2b, fcw, fcb, fcprojw, fcprojb, lnfw, lnfb, scales, nb, L, C, NH, maxT, V):
    # One step of nb sequences, each at its own position: row b is token tokens[b] of the cache's
    # sequence seq[b] at position positions[b] (int64 arrays (nb)); logits (nb,V). The linear layers read
    # their weights once for all nb rows, which is what makes a batched step cheaper than nb steps.
    _forward_rows(logits, kvcache, tokens, seq, positions, wte, wpe, ln1w, ln1b, qkvw, qkvb, attprojw, attprojb,
                  ln2w, ln2b, fcw, fcb, fcprojw, fcprojb, lnfw, lnfb, scales, nb, L, C, NH, maxT, V, 0)


@njit(**JIT)
def prefill(logits, kvcache, tokens, pos0, wte, wpe, ln1w, ln1b, qkvw, qkvb, attprojw, attprojb,
            ln2w, ln2b, fcw, fcb, fcprojw, fcprojb, lnfw, lnfb, scales, L, C, NH, maxT, V):
    # One sequence: tokens (n) int32 at positions pos0..pos0+n-1 (< maxT) in one call, their k and v
    # written into kvcache (positions before pos0 must hold the earlier tokens); logits (V) for the
    # token after the last. The same results as n decode steps, with the linear layers as matrix
    # products over all n rows.
    n = tokens.size
    seq = np.zeros(n, dtype=np.int64)
    positions = pos0 + np.arange(n)
    _forward_rows(logits, kvcache, tokens, seq, positions, wte, wpe, ln1w, ln1b, qkvw, qkvb, attprojw, attprojb,
                  ln2w, ln2b, fcw, fcb, fcprojw, fcprojb, lnfw, lnfb, scales, n, L, C, NH, maxT, V, n - 1)


@njit(**JIT)
def _rmsnorm_rows(out, inp, weight, eps, C, r0, r1):
    # rows r0..r1-1 of out (R,C) = RMSNorm(inp (R,C)) * weight (C)
    for r in range(r0, r1):
        rmsnorm_row(out[r * C:(r + 1) * C], inp[r * C:(r + 1) * C], weight, eps, C)


@njit(**JIT)
def llama_forward_rows(logits, kvcache, tokens, wte, ln1w, qkvw, qkvb, attprojw, ln2w, fcw, fcprojw, lnfw, head,
                       head_scale, cos, sin, scales, B, T, pos0, L, C, NH, NKV, F, maxT, V, eps, first_logit_row,
                       relu2=False, qk_norm=False, softcap=0.0, seq=None, positions=None):
    # The llama decoding forward: B sequences of T new tokens each, tokens (B*T) int32 at positions
    # pos0..pos0+T-1 (decode_step: B sequences, T = 1; prefill: one sequence, T tokens). Each layer's k and
    # v go into the cache first (cllm/kernels/gqa.py's gqa_prefill), then every row attends over its
    # sequence's positions 0..its own. kvcache (B, L, 2, NKV, maxT, hs): per sequence and layer, the kv heads'
    # keys (NKV,maxT,hs), then their values: only the NKV kv heads are kept (NH/NKV times less than gpt2's
    # per-head cache). logits (R - first_logit_row, V) for rows first_logit_row..R-1 (R = B*T).
    # head: wte or lm_head (the model's LM head);  qkvb may be None;  cos, sin: rope_table (maxT, hs/2).
    # scales None (float weights) or the int8 model's scales of (wte, qkvw, attprojw, fcw, fcprojw[, lm_head])
    # (cllm/quantize.py), those weights int8; head_scale is the index of the LM head's in it.
    # The block options (cllm/config.py), as the training forward (cllm/model.py) applies them: relu2, the
    # MLP is relu(fc x)^2 with an fc of F rows (else SwiGLU, 2F); qk_norm, each q and k head RMS-normalized
    # after RoPE (so the cache holds normalized keys); softcap > 0, logits = softcap tanh(logits / softcap).
    # seq, positions (int64 (B)), T = 1: a batched decode step instead, row b the cache's sequence seq[b] at its
    # own position positions[b] (pos0 unused); RoPE and the attention go row by row, the linear layers over all.
    R = B * T
    hs = C // NH
    QKV = (NH + 2 * NKV) * hs
    F2 = F if relu2 else 2 * F  # rows of fcw
    layer_cache = 2 * NKV * maxT * hs  # one sequence's and layer's keys and values
    dt = lnfw.dtype
    wsize = 0  # an int8 matrix dequantized for a gemm over many rows: the largest one
    if scales is not None and R >= INT8_GEMM_MIN_ROWS:
        wsize = max(QKV * C, C * C, F2 * C, C * F)
    wbuf = np.empty(wsize, dtype=dt)
    x = np.empty(R * C, dtype=dt)  # the residual stream entering a layer (R,C)
    x2 = np.empty(R * C, dtype=dt)  # after the attention's residual sum
    xn = np.empty(R * C, dtype=dt)  # normalized (R,C)
    qkv = np.empty(R * QKV, dtype=dt)  # (R, QKV) q|k|v, q and k rotated in place
    atty = np.empty(R * C, dtype=dt)
    proj = np.empty(R * C, dtype=dt)
    hid = np.empty(R * F2, dtype=dt)  # gate|up (R,2F) (relu2: (R,F))
    act = np.empty(R * F, dtype=dt)  # silu(gate) * up (R,F) (relu2: relu(hid)^2)
    qk_rstd = np.empty(NH + NKV, dtype=dt)  # qk_norm's statistics of one row (unread here)
    for r in range(R):
        ix = tokens[r]
        if scales is None:
            x[r * C:(r + 1) * C] = wte[ix * C:(ix + 1) * C]
        else:
            for c in range(C):
                x[r * C + c] = dt.type(wte[ix * C + c]) * scales[0][ix]
    for l in range(L):
        _rmsnorm_rows(xn, x, ln1w[l * C:(l + 1) * C], eps, C, 0, R)
        if qkvb is None:
            _linear(qkv, xn, qkvw[l * QKV * C:(l + 1) * QKV * C], scales, 1, l * QKV, None, R, C, QKV, wbuf)
        else:
            _linear(qkv, xn, qkvw[l * QKV * C:(l + 1) * QKV * C], scales, 1, l * QKV, qkvb[l * QKV:(l + 1) * QKV],
                    R, C, QKV, wbuf)
        if positions is None:
            rope_forward(qkv, cos, sin, B, T, NH, NKV, hs, pos0)
        else:
            for r in range(R):
                rope_forward(qkv[r * QKV:(r + 1) * QKV], cos, sin, 1, 1, NH, NKV, hs, positions[r])
        if qk_norm:
            for r in range(R):
                qknorm_row(qkv[r * QKV:(r + 1) * QKV], qk_rstd, NH, NKV, hs, eps)
        for b in range(B):
            s, p = b, pos0
            if positions is not None:
                s, p = seq[b], positions[b]
            k0 = (s * L + l) * layer_cache
            gqa_prefill(atty[b * T * C:(b + 1) * T * C], qkv[b * T * QKV:(b + 1) * T * QKV],
                        kvcache[k0:k0 + layer_cache // 2], kvcache[k0 + layer_cache // 2:k0 + layer_cache],
                        1, T, NH, NKV, hs, p, maxT)
        _linear(proj, atty, attprojw[l * C * C:(l + 1) * C * C], scales, 2, l * C, None, R, C, C, wbuf)
        add_span(x2, x, proj)
        _rmsnorm_rows(xn, x2, ln2w[l * C:(l + 1) * C], eps, C, 0, R)
        _linear(hid, xn, fcw[l * F2 * C:(l + 1) * F2 * C], scales, 3, l * F2, None, R, C, F2, wbuf)
        if relu2:
            relu2_rows(act, hid, F, 0, R)
        else:
            swiglu_rows(act, hid, F, 0, R)
        _linear(proj, act, fcprojw[l * C * F:(l + 1) * C * F], scales, 4, l * C, None, R, F, C, wbuf)
        add_span(x, x2, proj)
    f0 = first_logit_row
    _rmsnorm_rows(xn, x, lnfw, eps, C, f0, R)
    _matvec(logits, xn[f0 * C:], head[:V * C], scales, head_scale, 0, None, R - f0, C, V)
    if softcap > 0:
        softcap_forward(logits, logits, logits.size, softcap)
