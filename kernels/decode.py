"""One decoding step of the whole GPT with a KV cache: the cost of a new token is O(T) attention
plus the weight matrices, instead of a full forward over the prefix.

Legend: nb number of sequences decoded together (1 for sampling, the beam width for beam search),
L layers, C channels, NH heads, hs = C/NH, maxT maximum sequence length, V vocab, Vp padded vocab.
kvcache (nb, L, maxT, 2C): for each sequence, layer and position, k (C) then v (C).
"""
import numpy as np
from numba import njit

from ._common import JIT
from .attention import attention_row
from .gelu import gelu_forward
from .layernorm import layernorm_row
from .matmul import matmul_forward
from .residual import residual_forward


@njit(**JIT)
def _layernorm_rows(out, inp, weight, bias, R, C):
    # out, inp (R,C): serial, because R is a handful of rows and a thread launch costs more.
    for r in range(R):
        layernorm_row(out, inp, weight, bias, r * C, C)


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
    scores = np.empty(maxT, dtype=dt)  # preatt row scratch
    probs = np.empty(maxT, dtype=dt)  # att row scratch
    for b in range(nb):
        ix = tokens[b]
        for c in range(C):
            x[b * C + c] = wte[ix * C + c] + wpe[pos * C + c]
    for l in range(L):
        _layernorm_rows(xn, x, ln1w[l * C:(l + 1) * C], ln1b[l * C:(l + 1) * C], nb, C)
        matmul_forward(qkv, xn, qkvw[l * C3 * C:(l + 1) * C3 * C], qkvb[l * C3:(l + 1) * C3], nb, 1, C, C3)
        for b in range(nb):
            cache_off = ((b * L + l) * maxT + pos) * C2
            for c in range(C2):
                kvcache[cache_off + c] = qkv[b * C3 + C + c]
            kv_base = (b * L + l) * maxT * C2
            for h in range(NH):
                attention_row(atty, b * C + h * hs, scores, probs, 0,
                              qkv, b * C3 + h * hs, kvcache, kv_base + h * hs, pos + 1, C, hs, C2)
        matmul_forward(proj, atty, attprojw[l * C * C:(l + 1) * C * C], attprojb[l * C:(l + 1) * C], nb, 1, C, C)
        residual_forward(x, x, proj, nb * C)
        _layernorm_rows(xn, x, ln2w[l * C:(l + 1) * C], ln2b[l * C:(l + 1) * C], nb, C)
        matmul_forward(hid, xn, fcw[l * C4 * C:(l + 1) * C4 * C], fcb[l * C4:(l + 1) * C4], nb, 1, C, C4)
        gelu_forward(hid, hid, nb * C4)
        matmul_forward(proj, hid, fcprojw[l * C * C4:(l + 1) * C * C4], fcprojb[l * C:(l + 1) * C], nb, 1, C4, C)
        residual_forward(x, x, proj, nb * C)
    _layernorm_rows(xn, x, lnfw, lnfb, nb, C)
    # tied LM head: only the V real rows of wte (Vp,C)
    matmul_forward(logits, xn, wte[: V * C], None, nb, 1, C, V)
