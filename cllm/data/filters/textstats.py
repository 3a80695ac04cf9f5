"""Numba kernels over a document's UTF-8 bytes: its words' hashes and statistics, MinHash signatures of its
word shingles and their LSH band keys, Gopher's top n-gram repetition, and the byte n-gram features of
py3langid's model (cllm/data/filters/language.py). One pass over the bytes in compiled code replaces
Python's per-word loops, which would cap the filters at a few MB/s (bench/prepare.py measures them).

A word is a run of bytes other than ASCII whitespace (as str.split() after cllm/data/clean.py has turned
every other whitespace into spaces). Its hash (FNV-1a, 64 bits) is of its normalized form: ASCII letters
lowercased, ASCII punctuation dropped, so that "Word," and "word" are one word for near-duplicates.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from cllm.kernels._common import JIT

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
MIX = np.uint64(0x9E3779B97F4A7C15)


def word_hash(word: str) -> np.uint64:
    """word_stats' hash of one word, in Python (for a few words: the stop-word list)."""
    h = int(FNV_OFFSET)
    for b in word.encode("utf-8"):
        if 65 <= b <= 90:
            b += 32
        if b >= 128 or 97 <= b <= 122 or 48 <= b <= 57:
            h = ((h ^ b) * int(FNV_PRIME)) & 0xFFFFFFFFFFFFFFFF
    return np.uint64(h)


@njit(**JIT)
def word_stats(buf):
    """(hashes uint64 (W,), chars int32 (W,), has_letter uint8 (W,)) of the W words of buf (uint8 (N,), UTF-8).
    has_letter: an ASCII letter or any non-ASCII byte (accented and non-Latin letters; the few non-ASCII
    symbols count as letters too, an approximation of Gopher's "word with an alphabetic character")."""
    n = buf.size
    cap = n // 2 + 1  # a word takes a byte and a separator
    hashes = np.empty(cap, np.uint64)
    chars = np.empty(cap, np.int32)
    letter = np.empty(cap, np.uint8)
    w = 0
    i = 0
    while i < n:
        b = buf[i]
        if b == 32 or b == 10 or b == 9 or b == 13 or b == 11 or b == 12:
            i += 1
            continue
        h = FNV_OFFSET
        c = 0
        a = 0
        while i < n:
            b = buf[i]
            if b == 32 or b == 10 or b == 9 or b == 13 or b == 11 or b == 12:
                break
            if b >= 128:
                a = 1
                h = (h ^ np.uint64(b)) * FNV_PRIME
                if (b & 0xC0) != 0x80:  # a lead byte: one more character
                    c += 1
            else:
                c += 1
                if 65 <= b <= 90:
                    b += 32
                if 97 <= b <= 122:
                    a = 1
                    h = (h ^ np.uint64(b)) * FNV_PRIME
                elif 48 <= b <= 57:
                    h = (h ^ np.uint64(b)) * FNV_PRIME
            i += 1
        hashes[w] = h
        chars[w] = c
        letter[w] = a
        w += 1
    return hashes[:w], chars[:w], letter[:w]


@njit(**JIT)
def _shingle_hash(hashes, start, k):
    h = MIX
    for j in range(start, start + k):
        h = (h ^ hashes[j]) * FNV_PRIME
        h ^= h >> np.uint64(29)
    return h


@njit(**JIT)
def minhash(hashes, shingle, a, b):
    """The MinHash signature (uint32 (K,)) of the set of `shingle`-word shingles of the words `hashes`
    (uint64 (W,)): for each of the K hash functions x -> (a*x + b) mod 2^64 (a odd), the top 32 bits, the
    minimum over the shingles. A document shorter than a shingle is one shingle of all its words."""
    K = a.size
    sig = np.full(K, np.uint32(0xFFFFFFFF), np.uint32)
    W = hashes.size
    if W == 0:
        return sig
    k = min(shingle, W)
    for s in range(W - k + 1):
        x = _shingle_hash(hashes, s, k)
        for j in range(K):
            v = np.uint32((a[j] * x + b[j]) >> np.uint64(32))
            if v < sig[j]:
                sig[j] = v
    return sig


@njit(**JIT)
def top_ngram_share(hashes, chars, n):
    """Gopher's repetition measure: the characters covered by the most frequent n-gram of words (its
    characters times its count) over all words' characters; 0 with fewer than n words or no repeat.
    Counted in an open-addressing table of the n-grams' hashes (linear in the words; a sort was 3x slower)."""
    W = hashes.size
    if W < n:
        return 0.0
    m = W - n + 1
    size = 1
    while size < 2 * m:
        size *= 2
    keys = np.zeros(size, np.uint64)  # 0: empty (a hash of 0 is taken as 1)
    counts = np.zeros(size, np.int32)
    firsts = np.zeros(size, np.int32)
    mask = np.uint64(size - 1)
    best_count = 1
    best_start = 0
    for s in range(m):
        h = _shingle_hash(hashes, s, n)
        if h == 0:
            h = np.uint64(1)
        slot = h & mask
        while keys[slot] != 0 and keys[slot] != h:
            slot = (slot + np.uint64(1)) & mask
        if keys[slot] == 0:
            keys[slot] = h
            firsts[slot] = s
        counts[slot] += 1
        if counts[slot] > best_count:
            best_count = counts[slot]
            best_start = firsts[slot]
    if best_count < 2:
        return 0.0
    gram_chars = 0
    total = 0
    for j in range(best_start, best_start + n):
        gram_chars += chars[j]
    for j in range(W):
        total += chars[j]
    return gram_chars * best_count / max(total, 1)


@njit(**JIT)
def band_keys(sig, bands, rows):
    """uint64 (bands,): a hash of each band of `rows` values of the signature sig (uint32 (K,)), its band
    index mixed in, so that one dict holds every band's buckets."""
    keys = np.empty(bands, np.uint64)
    for band in range(bands):
        h = FNV_OFFSET ^ (np.uint64(band) * MIX)
        for j in range(band * rows, (band + 1) * rows):
            h = (h ^ np.uint64(sig[j])) * FNV_PRIME
        keys[band] = h
    return keys


@njit(**JIT)
def lsh_lookup(table_keys, table_docs, keys, out):
    """The kept documents that share a band with this one: for each band key (keys uint64 (B,)), the document
    table_docs holds under it in the open-addressing table (table_keys uint64 (S,), S a power of 2, 0 empty;
    a key of 0 is taken as 1), written to out (int64 (B,)); returns how many."""
    mask = np.uint64(table_keys.size - 1)
    n = 0
    for b in range(keys.size):
        k = keys[b] if keys[b] != 0 else np.uint64(1)
        slot = k & mask
        while table_keys[slot] != 0:
            if table_keys[slot] == k:
                out[n] = table_docs[slot]
                n += 1
                break
            slot = (slot + np.uint64(1)) & mask
    return n


@njit(**JIT)
def lsh_insert(table_keys, table_docs, keys, doc):
    """Put document `doc` under each band key not already taken (the first document seen keeps a key);
    returns how many keys it took. The caller keeps the table at most half full."""
    mask = np.uint64(table_keys.size - 1)
    added = 0
    for b in range(keys.size):
        k = keys[b] if keys[b] != 0 else np.uint64(1)
        slot = k & mask
        while table_keys[slot] != 0 and table_keys[slot] != k:
            slot = (slot + np.uint64(1)) & mask
        if table_keys[slot] == 0:
            table_keys[slot] = k
            table_docs[slot] = doc
            added += 1
    return added


@njit(**JIT)
def lsh_rehash(new_keys, new_docs, keys, docs):
    """Every (key, document) of the table (keys, docs) put into the empty, larger table (new_keys, new_docs)."""
    mask = np.uint64(new_keys.size - 1)
    for i in range(keys.size):
        k = keys[i]
        if k == 0:
            continue
        slot = k & mask
        while new_keys[slot] != 0:
            slot = (slot + np.uint64(1)) & mask
        new_keys[slot] = k
        new_docs[slot] = docs[i]


@njit(**JIT)
def dfa_features(nextmove, rowbase, output, text):
    """(feature indices int64 (F,) sorted, their counts float32 (F,)) of text (uint8 (N,)): the byte n-grams
    of a language model given as an automaton: state -> nextmove[rowbase[state] + byte], and a state that
    ends a feature gives output[state] >= 0 (langid.py's model, which py3langid ships)."""
    hits = np.empty(text.size, np.int64)
    k = 0
    state = 0
    for i in range(text.size):
        state = nextmove[rowbase[state] + text[i]]
        f = output[state]
        if f >= 0:
            hits[k] = f
            k += 1
    hits = np.sort(hits[:k])
    idx = np.empty(k, np.int64)
    counts = np.empty(k, np.float32)
    u = 0
    for i in range(k):
        if u > 0 and hits[i] == idx[u - 1]:
            counts[u - 1] += 1
        else:
            idx[u] = hits[i]
            counts[u] = 1
            u += 1
    return idx[:u], counts[:u]


@njit(**JIT)
def nb_classify(idx, counts, table, lut, prior, scale, alias):
    """(class, probability) of naive Bayes over the features idx with their counts: scores = prior + sum of
    log(1 + count) * table[feature] (table: float16 (F, C) as its uint16 bits, read through lut (float32
    (65536,)): NumPy converts float16 at ~8 ns an element), times `scale`, through a softmax; alias (P, 2):
    pairs of columns of one class, the second's probability added to the first's."""
    C = prior.size
    scores = prior.copy()
    if idx.size == 0:  # no feature: every class alike
        scores[:] = 0
    for i in range(idx.size):
        w = np.float32(np.log1p(counts[i]))
        row = table[idx[i]]
        for c in range(C):
            scores[c] += w * lut[row[c]]
    top = scores.max()
    total = 0.0
    for c in range(C):
        scores[c] = np.exp((scores[c] - top) * scale)
        total += scores[c]
    for p in range(alias.shape[0]):
        scores[alias[p, 0]] += scores[alias[p, 1]]
        scores[alias[p, 1]] = 0
    best = np.argmax(scores)
    return best, scores[best] / total
