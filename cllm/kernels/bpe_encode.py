"""Numba kernels for encoding text with byte-level BPE merges: the merge of one chunk, whole-text
encoding for the built-in patterns (pre-split, chunk cache and merges all here, so no Python object
is made per chunk), the path for custom patterns (chunks already split by `regex`), and the seeding
of the chunk cache with whole-vocabulary tokens for imported BPE vocabularies.
"""
import numpy as np
from numba import njit, types
from numba.typed import Dict

from cllm.kernels._common import JIT
from cllm.kernels.bpe_split import _utf8, chunk_key, next_chunk, same_chunk
from cllm.kernels.bpe_train import _key


@njit(**JIT)
def _rank(ranks, a, b, none):
    k = _key(a, b)
    if k in ranks:
        return ranks[k]
    return none


@njit(**JIT)
def bpe_encode_chunks(data, offsets, ranks, out, out_offsets):
    """Encode K byte chunks with the merge table (the path for custom pre-split patterns).

    data (M,) int32 bytes of all chunks; offsets (K+1,) int64 chunk boundaries in data;
    ranks: typed dict a << 32 | b -> rank << 32 | new_id (rank = merge order, lower merges first);
    out (M,) int32 receives the ids, out_offsets (K+1,) int64 their boundaries. Returns ids written."""
    n_out = 0
    k = offsets.shape[0] - 1
    maxlen = 1
    for c in range(k):
        maxlen = max(maxlen, offsets[c + 1] - offsets[c])
    toks = np.empty(maxlen, np.int32)
    prank = np.empty(maxlen, np.int64)
    out_offsets[0] = 0
    for c in range(k):
        L = offsets[c + 1] - offsets[c]
        for i in range(L):
            toks[i] = data[offsets[c] + i]
        L = _merge_chunk(toks, prank, L, ranks)
        for i in range(L):
            out[n_out + i] = toks[i]
        n_out += L
        out_offsets[c + 1] = n_out
    return n_out


@njit(**JIT)
def bpe_build_ranks(merge_a, merge_b, merge_new):
    """The encoder's table: pair key -> rank << 32 | new id; the first merge of a pair wins."""
    ranks = Dict.empty(key_type=types.int64, value_type=types.int64)
    for r in range(merge_a.shape[0]):
        k = _key(merge_a[r], merge_b[r])
        if k not in ranks:
            ranks[k] = (np.int64(r) << 32) | np.int64(merge_new[r])
    return ranks


@njit(**JIT)
def _merge_chunk(toks, prank, L, ranks):
    """Apply the merges to toks[:L]; returns the new length.

    Same result as merging the lowest-rank pair, leftmost first, one at a time (HuggingFace,
    tiktoken): once the lowest rank r is found, every non-overlapping occurrence of that pair is
    merged in one left-to-right pass, because a merge can only create pairs of higher rank than r.
    So a round costs O(L) and a long run ("=====...") needs few rounds, not O(L) rounds."""
    NONE = np.int64(1) << 62
    while L > 1:
        best = NONE
        for i in range(L - 1):
            prank[i] = _rank(ranks, toks[i], toks[i + 1], NONE)
            if prank[i] < best:
                best = prank[i]
        if best == NONE:
            break
        new = np.int32(best & 0xFFFFFFFF)
        w = 0
        i = 0
        while i < L:
            if i < L - 1 and prank[i] == best:
                toks[w] = new
                i += 2
            else:
                toks[w] = toks[i]
                i += 1
            w += 1
        L = w
    return L


@njit(**JIT)
def bpe_encode_text(cps, start, cls, gpt4, ranks, cache, cstate, cache_cps, cache_ids, ent, out):
    """Encode the text cps (code points, (n,) uint32) from `start`, writing ids into out until it
    is nearly full. Returns (position reached, ids written); call again from that position.

    The chunk cache: `cache` maps a 64-bit hash of a chunk's code points to an entry e;
    ent[e] = (cps offset, cps length, ids offset, ids length) into cache_cps / cache_ids.
    A hit is confirmed by comparing code points (a hash collision is only a miss).
    cstate = [entries, cps used, ids used] is updated in place; a chunk is not cached when the
    pools are full (the caller grows or clears them between calls)."""
    n = cps.shape[0]
    cap = out.shape[0]
    toks = np.empty(64, np.int32)
    prank = np.empty(64, np.int64)
    m = 0
    i = start
    while i < n:
        e = next_chunk(cps, cls, i, n, gpt4)
        ln = e - i
        if m + 4 * ln > cap:
            break  # the caller empties `out` and calls again
        key = chunk_key(cps, i, e)
        hit = -1
        if key in cache:
            x = cache[key]
            if ent[x, 1] == ln and same_chunk(cache_cps, ent[x, 0], cps, i, ln):
                hit = x
        if hit >= 0:
            s = ent[hit, 2]
            for j in range(ent[hit, 3]):
                out[m + j] = cache_ids[s + j]
            m += ent[hit, 3]
        else:
            if 4 * ln > toks.shape[0]:
                toks = np.empty(8 * ln, np.int32)
                prank = np.empty(8 * ln, np.int64)
            L = _utf8(cps, i, e, toks)
            L = _merge_chunk(toks, prank, L, ranks)
            for j in range(L):
                out[m + j] = toks[j]
            m += L
            ne, cu, iu = cstate[0], cstate[1], cstate[2]
            if (key not in cache and ne < ent.shape[0] and cu + ln <= cache_cps.shape[0]
                    and iu + L <= cache_ids.shape[0]):
                for j in range(ln):
                    cache_cps[cu + j] = cps[i + j]
                for j in range(L):
                    cache_ids[iu + j] = toks[j]
                ent[ne, 0] = cu
                ent[ne, 1] = ln
                ent[ne, 2] = iu
                ent[ne, 3] = L
                cache[key] = ne
                cstate[0] = ne + 1
                cstate[1] = cu + ln
                cstate[2] = iu + L
        i = e
    return i, m


# Imported byte-level BPE: tiktoken (and HuggingFace's BPE with `ignore_merges`) looks a whole
# pre-split chunk up in the vocabulary first and uses its id when it is there, merging only chunks
# that are not tokens. bpe_encode_text consults its chunk cache before merging, so entering every
# vocabulary token that is valid text as a cached chunk gives exactly that rule at no cost per chunk.


@njit(**JIT)
def seed_chunk_cache(cache, cstate, cache_cps, cache_ids, ent, cps, offsets, ids):
    """Enter token t (code points cps[offsets[t]:offsets[t+1]], id ids[t]) as a cached chunk whose
    ids are [ids[t]], for every t, in the layout bpe_encode_text reads (see its docstring).
    cps (M,) uint32, offsets (K+1,) int64, ids (K,) int32; the pools must have room for all.
    Returns the number of tokens entered (a 64-bit key already present keeps its first entry)."""
    k = 0
    for t in range(ids.shape[0]):
        s, e = offsets[t], offsets[t + 1]
        key = chunk_key(cps, s, e)
        if key in cache:
            continue
        ne, cu, iu = cstate[0], cstate[1], cstate[2]
        for j in range(e - s):
            cache_cps[cu + j] = cps[s + j]
        cache_ids[iu] = ids[t]
        ent[ne, 0] = cu
        ent[ne, 1] = e - s
        ent[ne, 2] = iu
        ent[ne, 3] = 1
        cache[key] = ne
        cstate[0] = ne + 1
        cstate[1] = cu + (e - s)
        cstate[2] = iu + 1
        k += 1
    return k
