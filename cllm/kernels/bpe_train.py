"""Numba kernels for training byte-level BPE: pair counts updated incrementally, merge by merge.

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

The chunks come from cllm/kernels/bpe_split.py (count_chunks, chunks_to_words); the merges learned here
are applied by cllm/kernels/bpe_encode.py. The heap helpers are shared with cllm/kernels/wordpiece.py.
"""
import numpy as np
from numba import njit, types
from numba.typed import Dict

from cllm.kernels._common import JIT  # one decorator set and one cache directory for all Numba code

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


# one compiled loop over merges, kept whole: split into functions it would pay a call per merge and
# pass its twenty arrays through each
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
def bpe_token_table(tok_hash, tok_pow):
    """hash key of a token's bytes -> id, for the 256 single bytes (training adds the rest)."""
    ids = Dict.empty(key_type=types.int64, value_type=types.int64)
    for i in range(256):
        ids[np.int64(tok_hash[i] ^ (tok_pow[i] * np.uint64(31)))] = i
    return ids
