"""Numba kernels for byte-level BPE: training (pair counts updated incrementally) and encoding.

Training works on the DEDUPLICATED pre-split chunks of the corpus ("words"): a word that occurs
`count` times is stored once and every pair count it contributes is weighted by `count`.

Layout (N = total bytes of the distinct words, W = number of distinct words):
    sym  (N,) int32   symbol id at each position; -1 once the position was merged into its left
    nxt  (N,) int32   next live position in the same word, -1 at the word's end
    prv  (N,) int32   previous live position in the same word, -1 at the word's start
    wid  (N,) int32   word of each position;   wstart (W,) int32 first position of each word
    wcount (W,) int64 how often the word occurs in the corpus
Pairs (a, b) get a dense index through a typed dict keyed by a << 32 | b:
    pa, pb (P,) int32, pcount (P,) int64, phead (P,) int32 head of the pair's list of words
    occ_word, occ_next (O,) int32   singly linked lists of words that (may) contain a pair;
                                    stale entries are harmless, a word is rescanned when merged
    heap_count (H,) int64, heap_pair (H,) int32   max-heap on (count, then smaller pair first);
                                    entries are upper bounds of the count, checked when popped
    tok_hash, tok_pow (V,) uint64   polynomial hash of each token's bytes and BASE**len, so that a
                                    merge producing bytes that already have an id reuses that id
                                    (as HuggingFace's trainer does); Python verifies the bytes after.
Each merge touches only the words in its pair's list: cost ~ the number of occurrences merged
(a word on the list is rescanned whole, so a pathological chunk of millions of letters is slow).

Below the trainer: the encoder (`_merge_chunk`, `bpe_encode_text` with its chunk cache), the
GPT-4/GPT-2 pre-split as a scanner over code points (`next_chunk`, tested against `regex`), and
the chunk counter used by training (`count_chunks`, `chunks_to_words`).
"""
import numpy as np
from numba import njit, types
from numba.typed import Dict

from kernels._common import JIT  # one decorator set and one cache directory for all Numba code

HASH_BASE = np.uint64(1099511628211)  # FNV prime: any odd 64-bit multiplier works


@njit(**JIT)
def _key(a, b):
    return (np.int64(a) << 32) | np.int64(b)


@njit(**JIT)
def _better(heap_count, heap_pair, pa, pb, i, j):
    """Is heap entry i above entry j? Larger count first; ties: the smaller (a, b) pair first."""
    ci, cj = heap_count[i], heap_count[j]
    if ci != cj:
        return ci > cj
    pi, pj = heap_pair[i], heap_pair[j]
    if pa[pi] != pa[pj]:
        return pa[pi] < pa[pj]
    return pb[pi] < pb[pj]


@njit(**JIT)
def _sift_down(heap_count, heap_pair, pa, pb, i, n):
    while True:
        left = 2 * i + 1
        if left >= n:
            return
        best = left
        right = left + 1
        if right < n and _better(heap_count, heap_pair, pa, pb, right, left):
            best = right
        if _better(heap_count, heap_pair, pa, pb, best, i):
            heap_count[i], heap_count[best] = heap_count[best], heap_count[i]
            heap_pair[i], heap_pair[best] = heap_pair[best], heap_pair[i]
            i = best
        else:
            return


@njit(**JIT)
def _push(heap_count, heap_pair, pa, pb, state, count, pair):
    n = state[2]
    heap_count[n] = count
    heap_pair[n] = pair
    state[2] = n + 1
    i = n
    while i > 0:
        parent = (i - 1) // 2
        if _better(heap_count, heap_pair, pa, pb, i, parent):
            heap_count[i], heap_count[parent] = heap_count[parent], heap_count[i]
            heap_pair[i], heap_pair[parent] = heap_pair[parent], heap_pair[i]
            i = parent
        else:
            return


@njit(**JIT)
def _pair_index(pairs, pa, pb, pcount, phead, state, a, b):
    """Index of pair (a, b), creating it with count 0 when new. state[0] = number of pairs."""
    k = _key(a, b)
    if k in pairs:
        return pairs[k]
    p = state[0]
    state[0] = p + 1
    pairs[k] = p
    pa[p] = a
    pb[p] = b
    pcount[p] = 0
    phead[p] = -1
    return p


@njit(**JIT)
def _add_occurrence(phead, occ_word, occ_next, state, p, w):
    if phead[p] != -1 and occ_word[phead[p]] == w:
        return  # this word is already at the head of the pair's list
    o = state[1]
    state[1] = o + 1
    occ_word[o] = w
    occ_next[o] = phead[p]
    phead[p] = o


@njit(**JIT)
def bpe_train_init(sym, nxt, prv, wid, wstart, wcount, capacity):
    """Count every adjacent pair once (weighted by word counts) and build the heap.

    Returns (pairs dict, pa, pb, pcount, phead, occ_word, occ_next, heap_count, heap_pair, state)
    with state = [n_pairs, n_occurrences, heap_size, 0, 0] (int64)."""
    pairs = Dict.empty(key_type=types.int64, value_type=types.int64)
    pa = np.empty(capacity, np.int32)
    pb = np.empty(capacity, np.int32)
    # every table is sized for the worst case (3N) but filled only as pairs appear (_pair_index sets
    # pcount and phead): np.empty leaves the untouched pages unallocated, so the resident memory
    # follows the pairs actually met (the full tables would be ~40 bytes per entry)
    pcount = np.empty(capacity, np.int64)
    phead = np.empty(capacity, np.int32)
    occ_word = np.empty(capacity, np.int32)
    occ_next = np.empty(capacity, np.int32)
    heap_count = np.empty(capacity, np.int64)
    heap_pair = np.empty(capacity, np.int32)
    state = np.zeros(5, np.int64)
    n = sym.shape[0]
    for i in range(n - 1):
        if nxt[i] == -1:
            continue
        w = wid[i]
        p = _pair_index(pairs, pa, pb, pcount, phead, state, sym[i], sym[i + 1])
        pcount[p] += wcount[w]
        _add_occurrence(phead, occ_word, occ_next, state, p, w)
    for p in range(state[0]):  # all pairs into the heap, then sift: O(P)
        heap_count[p] = pcount[p]
        heap_pair[p] = p
    state[2] = state[0]
    for i in range(state[0] // 2 - 1, -1, -1):
        _sift_down(heap_count, heap_pair, pa, pb, i, state[0])
    return pairs, pa, pb, pcount, phead, occ_word, occ_next, heap_count, heap_pair, state


@njit(**JIT)
def bpe_train_steps(sym, nxt, prv, wstart, wcount, wmark, pairs, pa, pb, pcount, phead,
                    occ_word, occ_next, heap_count, heap_pair, state,
                    tok_hash, tok_pow, tok_ids, next_id, vocab_end, max_steps,
                    merge_a, merge_b, merge_new, n_merges):
    """Do up to `max_steps` merges, or until ids reach `vocab_end`, or no pair is left.

    Writes merges into merge_a/merge_b/merge_new from index n_merges on.
    Returns (n_merges, next_id) after these steps."""
    steps = 0
    while steps < max_steps and next_id < vocab_end:
        # pop the best pair whose heap count is current (lazy deletion of stale entries)
        best = -1
        while state[2] > 0:
            c = heap_count[0]
            p = heap_pair[0]
            if c == pcount[p] and c > 0:
                best = p
                break
            last = state[2] - 1
            if pcount[p] > 0 and pcount[p] != c:  # stale: re-file it at its current count
                heap_count[0] = pcount[p]
            else:  # dead (count 0) or a duplicate: remove
                heap_count[0] = heap_count[last]
                heap_pair[0] = heap_pair[last]
                state[2] = last
            _sift_down(heap_count, heap_pair, pa, pb, 0, state[2])
        if best == -1:
            break  # no pair left: every word is a single token
        # take it off the heap
        last = state[2] - 1
        heap_count[0] = heap_count[last]
        heap_pair[0] = heap_pair[last]
        state[2] = last
        _sift_down(heap_count, heap_pair, pa, pb, 0, last)

        a = pa[best]
        b = pb[best]
        h = tok_hash[a] * tok_pow[b] + tok_hash[b]
        pw = tok_pow[a] * tok_pow[b]
        hk = np.int64(h ^ (pw * np.uint64(31)))
        if hk in tok_ids:
            new = tok_ids[hk]
        else:
            new = next_id
            next_id += 1
            tok_ids[hk] = new
            tok_hash[new] = h
            tok_pow[new] = pw
        merge_a[n_merges] = a
        merge_b[n_merges] = b
        merge_new[n_merges] = new
        n_merges += 1
        steps += 1

        # apply the merge in every word on the pair's list, left to right within each word
        o = phead[best]
        phead[best] = -1
        while o != -1:
            w = occ_word[o]
            o = occ_next[o]
            if wmark[w] == n_merges:
                continue
            wmark[w] = n_merges
            cw = wcount[w]
            i = wstart[w]
            while i != -1:
                j = nxt[i]
                if j == -1:
                    break
                if sym[i] == a and sym[j] == b:
                    left = prv[i]
                    right = nxt[j]
                    if left != -1:
                        q = _pair_index(pairs, pa, pb, pcount, phead, state, sym[left], a)
                        pcount[q] -= cw
                        q = _pair_index(pairs, pa, pb, pcount, phead, state, sym[left], new)
                        pcount[q] += cw
                        _add_occurrence(phead, occ_word, occ_next, state, q, w)
                        _push(heap_count, heap_pair, pa, pb, state, pcount[q], q)
                    if right != -1:
                        q = _pair_index(pairs, pa, pb, pcount, phead, state, b, sym[right])
                        pcount[q] -= cw
                        q = _pair_index(pairs, pa, pb, pcount, phead, state, new, sym[right])
                        pcount[q] += cw
                        _add_occurrence(phead, occ_word, occ_next, state, q, w)
                        _push(heap_count, heap_pair, pa, pb, state, pcount[q], q)
                    pcount[best] -= cw
                    sym[i] = new
                    sym[j] = -1
                    nxt[i] = right
                    if right != -1:
                        prv[right] = i
                    i = right
                else:
                    i = j
    return n_merges, next_id


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
def bpe_token_table(tok_hash, tok_pow):
    """hash key of a token's bytes -> id, for the 256 single bytes (training adds the rest)."""
    ids = Dict.empty(key_type=types.int64, value_type=types.int64)
    for i in range(256):
        ids[np.int64(tok_hash[i] ^ (tok_pow[i] * np.uint64(31)))] = i
    return ids


# ---------------------------------------------------------------------------------------------
# Whole-text encoding for the built-in patterns: the regex pre-split, the chunk cache and the
# merges all run here, so no Python object is made per chunk.
#
# cls (0x110000,) uint8: per code point, bit 1 = \p{L}, 2 = \p{N}, 4 = \s, 8 = [\r\n]
# (built from the `regex` module itself, so the classes are exactly the ones the pattern uses).

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
            if key not in cache and ne < ent.shape[0] and cu + ln <= cache_cps.shape[0] and iu + L <= cache_ids.shape[0]:
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
