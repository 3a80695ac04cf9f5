"""Numba kernels for the GPT-4/GPT-2 pre-split of text into chunks, as a scanner over code points
(`next_chunk`, tested against the `regex` module by tests/test_tokenizers.py), and the chunk counter
used by BPE training (`count_chunks`, `chunks_to_words`), which makes no Python string per chunk.

cls (0x110000,) uint8: per code point, bit 1 = \\p{L}, 2 = \\p{N}, 4 = \\s, 8 = [\\r\\n]
(built from the `regex` module itself by cllm/tokenizers/pre_split.py char_classes, so the classes
are exactly the ones the pattern uses).
"""
import numpy as np
from numba import njit, types
from numba.typed import Dict

from cllm.kernels._common import JIT

CL_L, CL_N, CL_S, CL_NL = 1, 2, 4, 8


@njit(**JIT)
def _fold(c):
    """Simple case folding for the letters of the contraction alternative ('s 'd 'm 't 'll 've 're)."""
    if 65 <= c <= 90:
        return c + 32
    if c == 0x17F:  # LATIN SMALL LETTER LONG S folds to s
        return 115
    return c


@njit(**JIT)
def _contraction(cps, i, n, fold):
    """Length of '(?:[sdmt]|ll|ve|re) at i (case-insensitive when fold), else 0."""
    if cps[i] != 39 or i + 1 >= n:
        return 0
    d = np.int64(cps[i + 1])
    if fold:
        d = _fold(d)
    if d == 115 or d == 100 or d == 109 or d == 116:
        return 2
    if i + 2 < n:
        e = np.int64(cps[i + 2])
        if fold:
            e = _fold(e)
        if (d == 108 and e == 108) or (d == 118 and e == 101) or (d == 114 and e == 101):
            return 3
    return 0


@njit(**JIT)
def _is_other(k):
    return (k & (CL_L | CL_N | CL_S)) == 0


@njit(**JIT)
def _matches(k, want):
    """Class test: want CL_L or CL_N, or 0 for 'other' (not letter, number or space)."""
    if want == 0:
        return _is_other(k)
    return (k & want) != 0


@njit(**JIT)
def _space_run(cps, cls, i, n, gpt4):
    """End of the whitespace alternatives at i (cps[i] is \\s): GPT-4's \\s*[\\r\\n] first, then
    \\s+(?!\\S) (the run, minus its last character when a non-space follows), then \\s+."""
    e = i
    last_nl = -1
    while e < n and cls[cps[e]] & CL_S:
        if cls[cps[e]] & CL_NL:
            last_nl = e
        e += 1
    if gpt4 and last_nl >= 0:
        return last_nl + 1
    if e == n or e - i == 1:
        return e
    return e - 1


@njit(**JIT)
def chunk_key(cps, i, e):
    # FNV-1a over the code points cps[i:e], folded with the length: the dictionary key of a chunk
    h = np.uint64(1469598103934665603)
    for j in range(i, e):
        h = (h ^ np.uint64(cps[j])) * np.uint64(1099511628211)
    return np.int64(h ^ np.uint64(e - i))


@njit(**JIT)
def same_chunk(pool, s, cps, i, ln):
    # whether pool[s:s+ln] holds the same code points as cps[i:i+ln] (a hash match is not proof)
    for j in range(ln):
        if pool[s + j] != cps[i + j]:
            return False
    return True


@njit(**JIT)
def next_chunk(cps, cls, i, n, gpt4):
    """End of the pre-split chunk starting at i: GPT-4's (cl100k) or GPT-2's pattern, tried
    alternative by alternative exactly as the regex engine does."""
    k = _contraction(cps, i, n, gpt4)
    if k:
        return i + k
    c = cls[cps[i]]
    if gpt4:
        # [^\r\n\p{L}\p{N}]?+\p{L}+
        j = i
        if (c & (CL_L | CL_N | CL_NL)) == 0 and i + 1 < n and cls[cps[i + 1]] & CL_L:
            j = i + 1
        if cls[cps[j]] & CL_L:
            j += 1
            while j < n and cls[cps[j]] & CL_L:
                j += 1
            return j
        # \p{N}{1,3}
        if c & CL_N:
            j = i + 1
            while j < n and j < i + 3 and cls[cps[j]] & CL_N:
                j += 1
            return j
        # ' ?[^\s\p{L}\p{N}]++[\r\n]*'
        j = i
        if cps[i] == 32 and i + 1 < n and _is_other(cls[cps[i + 1]]):
            j = i + 1
        if _is_other(cls[cps[j]]):
            j += 1
            while j < n and _is_other(cls[cps[j]]):
                j += 1
            while j < n and cls[cps[j]] & CL_NL:
                j += 1
            return j
    else:
        # ' ?\p{L}+', then ' ?\p{N}+', then ' ?[^\s\p{L}\p{N}]+'
        for want in (CL_L, CL_N, 0):
            j = -1
            if cps[i] == 32 and i + 1 < n and _matches(cls[cps[i + 1]], want):
                j = i + 1
            elif _matches(c, want):
                j = i
            if j >= 0:
                j += 1
                while j < n and _matches(cls[cps[j]], want):
                    j += 1
                return j
    if c & CL_S:
        return _space_run(cps, cls, i, n, gpt4)
    return i + 1  # unreachable: every character is a letter, number, space or other


@njit(**JIT)
def split_offsets(cps, cls, gpt4):
    """Chunk boundaries (K+1,) of the whole text, for testing the pre-split against `regex`."""
    n = cps.shape[0]
    out = np.empty(n + 1, np.int64)
    k = 0
    i = 0
    out[0] = 0
    while i < n:
        i = next_chunk(cps, cls, i, n, gpt4)
        k += 1
        out[k] = i
    return out[: k + 1]


@njit(**JIT)
def _utf8(cps, s, e, toks):
    """UTF-8 bytes of cps[s:e] into toks; returns the byte count."""
    L = 0
    for i in range(s, e):
        c = np.int64(cps[i])
        if c < 0x80:
            toks[L] = c
            L += 1
        elif c < 0x800:
            toks[L] = 0xC0 | (c >> 6)
            toks[L + 1] = 0x80 | (c & 0x3F)
            L += 2
        elif c < 0x10000:
            toks[L] = 0xE0 | (c >> 12)
            toks[L + 1] = 0x80 | ((c >> 6) & 0x3F)
            toks[L + 2] = 0x80 | (c & 0x3F)
            L += 3
        else:
            toks[L] = 0xF0 | (c >> 18)
            toks[L + 1] = 0x80 | ((c >> 12) & 0x3F)
            toks[L + 2] = 0x80 | ((c >> 6) & 0x3F)
            toks[L + 3] = 0x80 | (c & 0x3F)
            L += 4
    return L


@njit(**JIT)
def new_chunk_cache():
    return Dict.empty(key_type=types.int64, value_type=types.int64)


# ---------------------------------------------------------------------------------------------
# Counting the distinct chunks of a corpus for training (built-in patterns), without making a
# Python string per chunk. table: chunk hash (open addressing: +1 on a collision) -> entry e;
# ent[e] = (offset in pool, length in code points, count); cstate = [entries, pool used].


@njit(**JIT)
def count_chunks(cps, start, cls, gpt4, table, cstate, pool, ent):
    """Count the chunks of cps from `start`; returns the position reached, which is < len(cps)
    only when the pool or the entry array is full (grow them and call again from there)."""
    n = cps.shape[0]
    i = start
    while i < n:
        e = next_chunk(cps, cls, i, n, gpt4)
        ln = e - i
        key = chunk_key(cps, i, e)
        found = -1
        while key in table:
            x = table[key]
            if ent[x, 1] == ln and same_chunk(pool, ent[x, 0], cps, i, ln):
                found = x
                break
            key += 1  # a different chunk with this hash: probe the next key
        if found >= 0:
            ent[found, 2] += 1
        else:
            ne, used = cstate[0], cstate[1]
            if ne >= ent.shape[0] or used + ln > pool.shape[0]:
                return i
            for j in range(ln):
                pool[used + j] = cps[i + j]
            ent[ne, 0] = used
            ent[ne, 1] = ln
            ent[ne, 2] = 1
            table[key] = ne
            cstate[0] = ne + 1
            cstate[1] = used + ln
        i = e
    return i


@njit(**JIT)
def chunks_to_words(pool, ent, n_ent):
    """UTF-8 bytes of the counted chunks: (sym (N,) int32 bytes of the multi-byte chunks, lens (W,),
    counts (W,), single (256,) counts of the one-byte chunks, which have no pairs)."""
    toks = np.empty(4 * (pool.shape[0] + 1), np.int32)
    nb = np.empty(n_ent, np.int64)
    total = 0
    for e in range(n_ent):
        L = _utf8(pool, ent[e, 0], ent[e, 0] + ent[e, 1], toks)
        nb[e] = L
        if L > 1:
            total += L
    sym = np.empty(total, np.int32)
    W = 0
    for e in range(n_ent):
        if nb[e] > 1:
            W += 1
    lens = np.empty(W, np.int64)
    counts = np.empty(W, np.int64)
    single = np.zeros(256, np.int64)
    w = 0
    m = 0
    for e in range(n_ent):
        L = _utf8(pool, ent[e, 0], ent[e, 0] + ent[e, 1], toks)
        if L == 1:
            single[toks[0]] += ent[e, 2]
        else:
            for j in range(L):
                sym[m + j] = toks[j]
            m += L
            lens[w] = L
            counts[w] = ent[e, 2]
            w += 1
    return sym, lens, counts, single
