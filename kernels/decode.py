"""One decoding step of the whole GPT with a KV cache: the cost of a new token is O(T) attention
plus the weight matrices, instead of a full forward over the prefix.

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

from ._common import JIT, PJIT
from .fastexp import exp_shifted
from .gelu import GELU_SCALE, tanh_f32
from .layernorm import layernorm_row
from .matmul import ROW_BLOCKS

# From this many weights on (4 MB in float32) a matrix-vector product is split over the threads.
# Below it, waking the sleeping thread team (OMP_WAIT_POLICY=PASSIVE, cllm/__init__.py: about 35 us
# per parallel region, measured) costs more than the second core saves; a decode step runs 4
# products per layer. Measured on the seed config (6 layers, 256 dims, vocab 5000): 1.15k tokens/s
# all serial, 1.36k with its LM head (1.28M weights) split.
PARALLEL_MATVEC_MIN = 1 << 20


@njit(**JIT)
def _matvec_block(out, x, weight, bias, nb, C, OC, o0, o1):
    # out[b, o0:o1] = weight[o0:o1] (rows, C) @ x[b] (C) + bias[o0:o1] for each of the nb rows.
    # One weight row at a time against every sequence, so the weights are read once: the step is
    # bound by reading them. A plain loop (LLVM vectorizes the dot product) reads them at about
    # twice the speed of BLAS's gemv on one core here (28 against 15 GB/s, the seed config's 24 MB).
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


@njit(**PJIT)
def _matvec_parallel(out, x, weight, bias, nb, C, OC):
    # the output channels split into one block per thread
    for blk in prange(ROW_BLOCKS):
        _matvec_block(out, x, weight, bias, nb, C, OC, blk * OC // ROW_BLOCKS, (blk + 1) * OC // ROW_BLOCKS)


@njit(**JIT)
def matvec_forward(out, x, weight, bias, nb, C, OC):
    # out (nb,OC) = x (nb,C) @ weight (OC,C)^T + bias (OC);  bias may be None. For a few rows the
    # product is bound by reading the weights once, so it is split over the output channels
    # (each thread reads its own rows of the weight) rather than over the input rows.
    if OC * C >= PARALLEL_MATVEC_MIN and ROW_BLOCKS > 1:
        _matvec_parallel(out, x, weight, bias, nb, C, OC)
    else:
        _matvec_block(out, x, weight, bias, nb, C, OC, 0, OC)


@njit(**JIT)
def _layernorm_rows(out, inp, weight, bias, R, C):
    # out, inp (R,C): serial, because R is a handful of rows and a thread launch costs more.
    for r in range(R):
        layernorm_row(out, inp, weight, bias, r * C, C)


@njit(**JIT)
def _gelu_inplace(h, N):
    # serial, for the same reason as _layernorm_rows
    s = h.dtype.type(GELU_SCALE)
    k = h.dtype.type(0.044715)
    half = h.dtype.type(0.5)
    one = h.dtype.type(1)
    for i in range(N):
        v = h[i]
        u = s * (v + k * v * v * v)
        th = tanh_f32(u) if h.itemsize == 4 else np.tanh(u)
        h[i] = half * v * (one + th)


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
    maxval = dt(-np.inf)
    for t in range(n):
        maxval = max(maxval, scores[t])
    inv = dt(1) / exp_shifted(scores, maxval, kbuf)
    for i in range(hs):
        out[i] = dt(0)
    for t in range(n):
        p = scores[t] * inv
        v = values[t]
        for i in range(hs):
            out[i] += p * v[i]


@njit(**JIT)
def decode_step(logits, kvcache, tokens, pos, wte, wpe, ln1w, ln1b, qkvw, qkvb, attprojw, attprojb,
                ln2w, ln2b, fcw, fcb, fcprojw, fcprojb, lnfw, lnfb, nb, L, C, NH, maxT, V):
    # logits (nb,V) for the next token of each sequence;  tokens (nb) int32, the tokens at
    # position `pos` (0-based, < maxT); their k and v are written into kvcache[:, :, pos].
    # Parameter views are the model's named tensors (design.md's order and shapes).
    hs = C // NH
    C2 = 2 * C
    C3 = 3 * C
    C4 = 4 * C
    dt = wte.dtype
    x = np.empty(nb * C, dtype=dt)  # residual stream (nb,C)
    xn = np.empty(nb * C, dtype=dt)  # normalized (nb,C)
    qkv = np.empty(nb * C3, dtype=dt)  # (nb,3C)
    atty = np.empty(nb * C, dtype=dt)  # attention output before its projection (nb,C)
    proj = np.empty(nb * C, dtype=dt)  # (nb,C)
    hid = np.empty(nb * C4, dtype=dt)  # MLP hidden (nb,4C)
    scores = np.empty(maxT, dtype=dt)  # attention row scratch
    kbuf = np.empty(maxT, dtype=np.float32)  # exp_shifted's scratch
    scale = wte.dtype.type(1) / np.sqrt(wte.dtype.type(hs))
    head = maxT * hs  # one head's (maxT, hs) block of keys or values
    for b in range(nb):
        ix = tokens[b]
        for c in range(C):
            x[b * C + c] = wte[ix * C + c] + wpe[pos * C + c]
    for l in range(L):
        _layernorm_rows(xn, x, ln1w[l * C:(l + 1) * C], ln1b[l * C:(l + 1) * C], nb, C)
        matvec_forward(qkv, xn, qkvw[l * C3 * C:(l + 1) * C3 * C], qkvb[l * C3:(l + 1) * C3], nb, C, C3)
        for b in range(nb):
            kbase = (b * L + l) * 2 * NH * head  # this sequence's and layer's keys; values follow
            vbase = kbase + NH * head
            for h in range(NH):
                ko = kbase + h * head
                vo = vbase + h * head
                q0 = b * C3 + h * hs
                for i in range(hs):  # this position's k (a column of keys_t) and v into the cache
                    kvcache[ko + i * maxT + pos] = qkv[q0 + C + i]
                    kvcache[vo + pos * hs + i] = qkv[q0 + C2 + i]
                n = pos + 1
                _attend_cached(atty[b * C + h * hs:b * C + (h + 1) * hs], qkv[q0:q0 + hs],
                               kvcache[ko:ko + head].reshape(hs, maxT), kvcache[vo:vo + n * hs].reshape(n, hs),
                               scores[:n], kbuf, scale)
        matvec_forward(proj, atty, attprojw[l * C * C:(l + 1) * C * C], attprojb[l * C:(l + 1) * C], nb, C, C)
        for i in range(nb * C):
            x[i] += proj[i]
        _layernorm_rows(xn, x, ln2w[l * C:(l + 1) * C], ln2b[l * C:(l + 1) * C], nb, C)
        matvec_forward(hid, xn, fcw[l * C4 * C:(l + 1) * C4 * C], fcb[l * C4:(l + 1) * C4], nb, C, C4)
        _gelu_inplace(hid, nb * C4)
        matvec_forward(proj, hid, fcprojw[l * C * C4:(l + 1) * C * C4], fcprojb[l * C:(l + 1) * C], nb, C4, C)
        for i in range(nb * C):
            x[i] += proj[i]
    _layernorm_rows(xn, x, lnfw, lnfb, nb, C)
    # tied LM head: only the V real rows of wte (Vp,C)
    matvec_forward(logits, xn, wte[: V * C], None, nb, C, V)
