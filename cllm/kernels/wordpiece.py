"""Numba kernel for WordPiece training: merge the pair with the highest count(ab) / (count(a) count(b)).

Training works on the DEDUPLICATED words of the corpus: word w occurs wcount[w] times and is stored
once as its symbols, sym[wstart[w] : wstart[w] + wlen[w]] (a word shrinks in place as it merges).
The first symbol of a word is a word-start token, the others "##" continuation tokens, so a pair
(a, b) always has a continuation token b and merges into the token a + b[2:].

Layout (N = symbols of all words, P = pairs ever seen, V = vocabulary capacity):
    scount (V,) int64      occurrences of each symbol in the corpus (word counts included)
    pairs  typed dict      a << 32 | b -> pair index;  pa, pb (P,) int32, pcount (P,) int64
    phead (P,) int32, occ_word, occ_next (O,) int32     per pair, the words that (may) hold it
    shead (V,) int32, adj_pair, adj_next (2P,) int32    per symbol, the pairs it is part of
    heap_score (H,) float64, heap_pair (H,) int32        max-heap on (score, then smaller pair);
    pscore (P,) float64    score of the newest heap entry of each pair (-1: none)
    tok_hash, tok_len (V,) polynomial hash of each token's code points and its length; tokens (a
    typed dict hash -> id) so that a merge giving an existing string reuses its id
    state  int64 [pairs, occurrences, adjacency entries, heap size, vocabulary size, merges]

Why this heap is exact: a merge of (a, b) into c changes only the counts of a, b, c and of pairs
that hold one of them. Scores that rise are pushed at once (the pairs of a, b and c are visited);
an entry whose score has fallen is found stale when it reaches the top and pushed again with its
current score. So the top entry, once confirmed, is the true best pair.
"""
import numpy as np
from numba import njit, types
from numba.typed import Dict

from cllm.kernels._common import JIT
from cllm.kernels.bpe_train import _add_occurrence, _better, _key, _sift_down  # shared with the BPE trainer


@njit(**JIT)
def _score(pcount, scount, pa, pb, p):
    """WordPiece's likelihood score; with scount all -1 (frequency mode, see wp_train_init) the pair
    count itself, as BPE and HuggingFace's WordPieceTrainer rank pairs."""
    if pcount[p] <= 0:
        return -1.0
    if scount[0] < 0:
        return np.float64(pcount[p])
    return pcount[p] / (np.float64(scount[pa[p]]) * np.float64(scount[pb[p]]))


@njit(**JIT)
def _rebuild(hs, hp, pa, pb, pcount, scount, pscore, state):
    """Drop every stale entry: one fresh entry per live pair, heapified."""
    n = 0
    for p in range(state[0]):
        s = _score(pcount, scount, pa, pb, p)
        pscore[p] = s
        if s > 0:
            hs[n] = s
            hp[n] = p
            n += 1
    for i in range(n // 2 - 1, -1, -1):
        _sift_down(hs, hp, pa, pb, i, n)
    state[3] = n


@njit(**JIT)
def _push(hs, hp, pa, pb, pcount, scount, pscore, state, p, s):
    if state[3] >= hs.shape[0]:
        _rebuild(hs, hp, pa, pb, pcount, scount, pscore, state)
        return  # the rebuilt heap holds p with its current score
    i = state[3]
    hs[i] = s
    hp[i] = p
    state[3] = i + 1
    pscore[p] = s
    while i > 0:
        parent = (i - 1) // 2
        if not _better(hs, hp, pa, pb, i, parent):
            break
        hs[i], hs[parent] = hs[parent], hs[i]
        hp[i], hp[parent] = hp[parent], hp[i]
        i = parent


@njit(**JIT)
def _pair(pairs, pa, pb, pcount, phead, pscore, shead, adj_pair, adj_next, state, a, b):
    """Index of pair (a, b), created (count 0, listed under a and b) when new."""
    key = _key(a, b)
    if key in pairs:
        return pairs[key]
    p = np.int32(state[0])
    state[0] = p + 1
    pairs[key] = p
    pa[p] = a
    pb[p] = b
    pcount[p] = 0
    phead[p] = -1
    pscore[p] = -1.0
    for k in range(2):
        t = a if k == 0 else b
        e = state[2]
        state[2] = e + 1
        adj_pair[e] = p
        adj_next[e] = shead[t]
        shead[t] = e
    return p


@njit(**JIT)
def wp_train_init(sym, wstart, wlen, wcount, scount, pairs, pa, pb, pcount, phead, pscore, occ_word, occ_next,
                  shead, adj_pair, adj_next, hs, hp, state):
    """Count every symbol and adjacent pair of the words (weighted by wcount) and fill the heap.
    scount[0] = -1 on entry selects frequency mode (id 0 is a special token, never in a word)."""
    freq = scount[0] < 0
    for w in range(wlen.shape[0]):
        s, f = wstart[w], wcount[w]
        for i in range(wlen[w]):
            scount[sym[s + i]] += f
        for i in range(wlen[w] - 1):
            p = _pair(pairs, pa, pb, pcount, phead, pscore, shead, adj_pair, adj_next, state,
                      np.int64(sym[s + i]), np.int64(sym[s + i + 1]))
            _add_occurrence(phead, occ_word, occ_next, state, p, w)
            pcount[p] += f
    if freq:
        scount[:] = -1
    _rebuild(hs, hp, pa, pb, pcount, scount, pscore, state)


@njit(**JIT)
def _merge_word(sym, s, L, a, b, c, f, scount, pairs, pa, pb, pcount, phead, pscore, occ_word, occ_next,
                shead, adj_pair, adj_next, state, w):
    """Merge every (a, b) of the word sym[s:s+L] left to right into c; returns the new length."""
    found = False
    for i in range(L - 1):
        if sym[s + i] == a and sym[s + i + 1] == b:
            found = True
            break
    if not found:
        return L  # a stale entry of the pair's word list
    for i in range(L - 1):
        pcount[pairs[_key(sym[s + i], sym[s + i + 1])]] -= f
    n = 0
    i = 0
    while i < L:
        if i < L - 1 and sym[s + i] == a and sym[s + i + 1] == b:
            sym[s + n] = c
            if scount[0] >= 0:
                scount[a] -= f
                scount[b] -= f
                scount[c] += f
            i += 2
        else:
            sym[s + n] = sym[s + i]
            i += 1
        n += 1
    for i in range(n - 1):
        x, y = sym[s + i], sym[s + i + 1]
        p = _pair(pairs, pa, pb, pcount, phead, pscore, shead, adj_pair, adj_next, state, np.int64(x), np.int64(y))
        pcount[p] += f
        if x == c or y == c:
            _add_occurrence(phead, occ_word, occ_next, state, p, w)
    return n


@njit(**JIT)
def _new_token(a, b, tok_hash, tok_len, powtab, prefix_hash, tokens, state):
    """Id of the string token a + token b without its "##": the existing one, or the next free id."""
    k = tok_len[b] - 2
    h = tok_hash[a] * powtab[k] + (tok_hash[b] - prefix_hash * powtab[k])
    if h in tokens:
        return np.int64(tokens[h])
    c = state[4]
    state[4] = c + 1
    tokens[h] = np.int32(c)
    tok_hash[c] = h
    tok_len[c] = tok_len[a] + k
    return c


@njit(**JIT)
def wp_train_steps(sym, wstart, wlen, wcount, wmark, scount, pairs, pa, pb, pcount, phead, pscore, occ_word, occ_next,
                   shead, adj_pair, adj_next, hs, hp, state, tok_hash, tok_len, powtab, prefix_hash, tokens,
                   V, n_steps, merge_a, merge_b, merge_new):
    """Up to n_steps merges (fewer when the vocabulary reaches V ids or no pair is left), recorded in
    merge_a/merge_b/merge_new[state[5]:]. Returns the number made by this call."""
    done = 0
    while done < n_steps and state[4] < V and state[3] > 0:
        p = hp[0]
        s = hs[0]
        n = state[3] - 1
        hs[0] = hs[n]
        hp[0] = hp[n]
        state[3] = n
        _sift_down(hs, hp, pa, pb, 0, n)
        if s != pscore[p]:
            continue  # an older entry of a pair pushed again since
        cur = _score(pcount, scount, pa, pb, p)
        if cur <= 0:
            pscore[p] = -1.0
            continue
        if cur < s:
            _push(hs, hp, pa, pb, pcount, scount, pscore, state, p, cur)
            continue
        a, b = np.int64(pa[p]), np.int64(pb[p])
        c = _new_token(a, b, tok_hash, tok_len, powtab, prefix_hash, tokens, state)
        m = state[5]
        merge_a[m] = a
        merge_b[m] = b
        merge_new[m] = c
        state[5] = m + 1
        o = phead[p]
        while o >= 0:
            w = occ_word[o]
            if wmark[w] != m + 1:
                wmark[w] = m + 1
                wlen[w] = _merge_word(sym, wstart[w], wlen[w], a, b, c, wcount[w], scount, pairs, pa, pb, pcount, phead,
                                      pscore, occ_word, occ_next, shead, adj_pair, adj_next, state, w)
            o = occ_next[o]
        for k in range(3):  # push every pair of a, b, c whose score rose
            t = a if k == 0 else (b if k == 1 else c)
            e = shead[t]
            while e >= 0:
                q = adj_pair[e]
                sc = _score(pcount, scount, pa, pb, q)
                if sc > pscore[q]:
                    _push(hs, hp, pa, pb, pcount, scount, pscore, state, q, sc)
                e = adj_next[e]
        done += 1
    return done


@njit(**JIT)
def new_token_table():
    return Dict.empty(key_type=types.uint64, value_type=types.int32)


@njit(**JIT)
def new_pair_table():
    return Dict.empty(key_type=types.int64, value_type=types.int32)


@njit(**JIT)
def fill_token_table(tokens, tok_hash, n):
    for i in range(n):
        tokens[tok_hash[i]] = np.int32(i)
