"""Numba kernels over a document's UTF-8 bytes: its words' hashes and statistics, MinHash signatures of its
word shingles, and Gopher's top n-gram repetition. One pass over the bytes in compiled code replaces
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
    characters times its count) over all words' characters; 0 with fewer than n words."""
    W = hashes.size
    if W < n:
        return 0.0
    m = W - n + 1
    grams = np.empty(m, np.uint64)
    for s in range(m):
        grams[s] = _shingle_hash(hashes, s, n)
    order = np.argsort(grams)
    best_count = 0
    best_start = 0
    run = 1
    for t in range(1, m + 1):
        if t < m and grams[order[t]] == grams[order[t - 1]]:
            run += 1
            continue
        if run > best_count:
            best_count = run
            best_start = order[t - 1]
        run = 1
    if best_count < 2:
        return 0.0
    gram_chars = 0
    total = 0
    for j in range(best_start, best_start + n):
        gram_chars += chars[j]
    for j in range(W):
        total += chars[j]
    return gram_chars * best_count / max(total, 1)
