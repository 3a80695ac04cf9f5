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
from numba import njit, prange

from cllm.kernels._common import JIT, PJIT

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
    returns how many keys it took. The caller keeps the table at most 3/4 full."""
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
def _count_features(hits):
    """(feature indices int64 (F,) sorted, their counts float32 (F,)) of the features hits (int64 (H,))."""
    hits = np.sort(hits)
    idx = np.empty(hits.size, np.int64)
    counts = np.empty(hits.size, np.float32)
    u = 0
    for i in range(hits.size):
        if u > 0 and hits[i] == idx[u - 1]:
            counts[u - 1] += 1
        else:
            idx[u] = hits[i]
            counts[u] = 1
            u += 1
    return idx[:u], counts[:u]


@njit(**JIT)
def nb_classify(idx, counts, table, prior, scale, alias):
    """(class, probability) of naive Bayes over the features idx with their counts: scores = prior + sum of
    log(1 + count) * table[feature] (table: float16 (F, C) as its uint16 bits, made float32 by moving the
    exponent and mantissa bits: exact for the normal numbers that py3langid's table holds only (checked on
    loading: cllm/data/filters/language.py); a lookup table was a gather per value, 1.5x slower), times `scale`,
    through a softmax; alias (P, 2): pairs of columns of one class, the second's probability added to the
    first's."""
    C = prior.size
    scores = prior.copy()
    if idx.size == 0:  # no feature: every class alike
        scores[:] = 0
    bits = np.empty(C, np.uint32)
    values = bits.view(np.float32)
    for i in range(idx.size):
        w = np.float32(np.log1p(counts[i]))
        row = table[idx[i]]
        for c in range(C):
            h = np.uint32(row[c])
            bits[c] = (((h & np.uint32(0x8000)) << np.uint32(16))
                       | (((h & np.uint32(0x7FFF)) << np.uint32(13)) + np.uint32(112 << 23)))  # rebias 15 -> 127
        for c in range(C):
            scores[c] += w * values[c]
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


# --- batches of documents: one kernel call per batch, its documents spread over the cores (prange) ---------------
# A batch is the documents' UTF-8 bytes concatenated (buf uint8 (N,)) with offsets int64 (D + 1,): document d is
# buf[offsets[d]:offsets[d + 1]]. Its lines (split at "\n", as str.split("\n")) are numbered across the batch:
# document d's first line is line_base[d] = d + the newlines before it.



def pack(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(buf, offsets) of a batch of texts (see above)."""
    data = [t.encode("utf-8", "surrogatepass") for t in texts]
    offsets = np.zeros(len(data) + 1, np.int64)
    np.cumsum([len(b) for b in data], out=offsets[1:])
    return np.frombuffer(b"".join(data), np.uint8), offsets


# per-document statistics of page_stats (columns of its stats array)
S_WORDS, S_CHARS, S_SYMBOLS, S_NONBLANK, S_BULLETS, S_ELLIPSES, S_LETTER, S_STOP, S_DISTINCT = range(9)
S_TOP = 9  # S_TOP + k - 2: the top k-gram share, k = 2, 3, 4
# C4's, over the lines its line rules keep: lines removed, whether one holds "lorem ipsum", count_sentences; and
# whether a line is LINE_FALLBACK (then these three are not set: Python's rules decide the document)
S_C4_REMOVED, S_C4_LOREM, S_C4_SENTENCES, S_PYTHON = 12, 13, 14, 15
NSTATS = 16
# page_stats' line rules: 0 kept; 1, 2, 3: C4's javascript, cookies, terminal punctuation (C4_LINE_RULES' order);
# 4: the line holds a character whose str.lower() is ASCII (U+0130, U+212A), so Python decides it
LINE_FALLBACK = 4
FALLBACK_BIT = 1 << 30  # _patterns' bit for those two characters
# line flags: bit 0 non-blank (line.strip() is not empty), bit 1 holds "lorem ipsum" (ASCII case ignored)
F_NONBLANK, F_LOREM = 1, 2


@njit(**JIT)
def _is_space(cp):
    """str.isspace() of one code point (what str.strip() strips): tests/test_filters.py checks every one."""
    if cp <= 32:
        return cp == 32 or 9 <= cp <= 13 or 28 <= cp <= 31
    if cp < 0x85:
        return False
    return (cp == 0x85 or cp == 0xA0 or cp == 0x1680 or 0x2000 <= cp <= 0x200A or cp == 0x2028 or cp == 0x2029
            or cp == 0x202F or cp == 0x205F or cp == 0x3000)


@njit(**JIT)
def _code_point(buf, i):
    """(code point, its length in bytes) of the UTF-8 sequence at buf[i] (lone surrogates as Python's
    surrogatepass writes them decode like any 3-byte sequence)."""
    b = np.int64(buf[i])
    if b < 0x80:
        return b, 1
    if b < 0xE0:
        return ((b & 0x1F) << 6) | (np.int64(buf[i + 1]) & 0x3F), 2
    if b < 0xF0:
        return ((b & 0x0F) << 12) | ((np.int64(buf[i + 1]) & 0x3F) << 6) | (np.int64(buf[i + 2]) & 0x3F), 3
    return (((b & 0x07) << 18) | ((np.int64(buf[i + 1]) & 0x3F) << 12) | ((np.int64(buf[i + 2]) & 0x3F) << 6)
            | (np.int64(buf[i + 3]) & 0x3F)), 4


@njit(**JIT)
def _last_start(buf, start, end):
    """The first byte of the last code point of buf[start:end] (end > start)."""
    j = end - 1
    while j > start and (buf[j] & 0xC0) == 0x80:
        j -= 1
    return j


@njit(**JIT)
def _strip(buf, start, end):
    """(i, j): buf[i:j] is buf[start:end] as str.strip() leaves it (i == j: blank)."""
    i = start
    while i < end:
        cp, m = _code_point(buf, i)
        if not _is_space(cp):
            break
        i += m
    j = end
    while j > i:
        t = _last_start(buf, i, j)
        cp, m = _code_point(buf, t)
        if not _is_space(cp):
            break
        j = t
    return i, j


def pattern_starts(patterns: list[str]) -> np.ndarray:
    """_patterns' table: uint32 (256,), the bits of the patterns (lowercase ASCII) that begin with each byte, in
    either case, and FALLBACK_BIT on the first bytes of U+0130 and U+212A."""
    starts = np.zeros(256, np.uint32)
    for q, p in enumerate(patterns):
        starts[ord(p[0])] |= 1 << q
        starts[ord(p[0].upper())] |= 1 << q
    starts[0xC4] |= FALLBACK_BIT
    starts[0xE2] |= FALLBACK_BIT
    return starts


@njit(**JIT)
def _patterns(buf, start, end, pats, pat_offsets, starts):
    """The patterns buf[start:end] holds, its ASCII letters lowercased: bit q for pattern q (pats[pat_offsets[q]:
    pat_offsets[q + 1]], lowercase ASCII), and FALLBACK_BIT for U+0130 or U+212A (whose str.lower() is ASCII).
    One pass: only at a byte that begins a pattern (starts: pattern_starts) are the patterns compared."""
    found = 0
    for i in range(start, end):
        cand = starts[buf[i]]
        if cand == 0:
            continue
        if cand & FALLBACK_BIT:
            if ((buf[i] == 0xC4 and i + 1 < end and buf[i + 1] == 0xB0)
                    or (buf[i] == 0xE2 and i + 2 < end and buf[i + 1] == 0x84 and buf[i + 2] == 0xAA)):
                found |= FALLBACK_BIT
            continue
        for q in range(pat_offsets.size - 1):
            if not (cand >> q) & 1 or (found >> q) & 1:
                continue
            p0, p1 = pat_offsets[q], pat_offsets[q + 1]
            if i + p1 - p0 > end:
                continue
            ok = True
            for t in range(1, p1 - p0):
                c = buf[i + t]
                if 65 <= c <= 90:
                    c += 32
                if c != pats[p0 + t]:
                    ok = False
                    break
            if ok:
                found |= 1 << q
    return found


@njit(**JIT)
def _marks(buf, start, end):
    """quality.count_sentences' marks in one line buf[start:end]: ". ", "! ", "? ", '." ', '!" ', '?" ', ".” ",
    "。 ", "！ ", "？ ", each counted on its own (as str.count does, pattern by pattern)."""
    n = 0
    for p in range(start + 1, end):
        if buf[p] != 32:
            continue
        b = buf[p - 1]
        if b == 46 or b == 33 or b == 63:  # . ! ?
            n += 1
        elif b == 34 and p - 2 >= start and (buf[p - 2] == 46 or buf[p - 2] == 33 or buf[p - 2] == 63):  # ." !" ?"
            n += 1
        elif p - 3 >= start and buf[p - 3] == 0xE2 and buf[p - 2] == 0x80 and b == 0x9D:  # ” after "."
            if p - 4 >= start and buf[p - 4] == 46:
                n += 1
        elif p - 3 >= start and ((buf[p - 3] == 0xE3 and buf[p - 2] == 0x80 and b == 0x82)  # 。
                                 or (buf[p - 3] == 0xEF and buf[p - 2] == 0xBC and (b == 0x81 or b == 0x9F))):  # ！？
            n += 1
    return n


@njit(**JIT)
def _line_hash(buf, start, end):
    h = FNV_OFFSET
    for i in range(start, end):
        h = (h ^ np.uint64(buf[i])) * FNV_PRIME
    return h if h != 0 else np.uint64(1)


@njit(**JIT)
def _same_bytes(buf, a0, a1, b0, b1):
    if a1 - a0 != b1 - b0:
        return False
    for i in range(a1 - a0):
        if buf[a0 + i] != buf[b0 + i]:
            return False
    return True


@njit(**JIT)
def _page_stats_one(buf, s, e, lb, words, stop_hashes, pats, pat_offsets, starts, stats, line_rule, line_marks,
                    line_flags,
                    line_start, line_end):
    """page_stats of one document buf[s:e] (its row of stats and its lines from line lb on)."""
    # the lines, their stripped extent, Gopher's line statistics and C4's line rules
    nlines = 0
    p = s
    while True:
        q = p
        while q < e and buf[q] != 10:
            q += 1
        line_start[lb + nlines] = p
        line_end[lb + nlines] = q
        nlines += 1
        if q >= e:
            break
        p = q + 1
    size = 1
    while size < 2 * nlines:
        size *= 2
    keys = np.zeros(size, np.uint64)  # distinct stripped non-blank lines: hash -> line (open addressing)
    first = np.zeros(size, np.int64)
    mask = np.uint64(size - 1)
    strip0 = np.empty(nlines, np.int64)
    strip1 = np.empty(nlines, np.int64)
    nonblank = bullets = ellipses = distinct = 0
    python = removed = lorem = sentences = 0
    npol = pat_offsets.size - 3  # patterns: javascript, the policies, lorem ipsum
    for k in range(nlines):
        ln = lb + k
        a, z = line_start[ln], line_end[ln]
        i, j = _strip(buf, a, z)
        strip0[k], strip1[k] = i, j
        line_marks[ln] = _marks(buf, a, z)
        if i == j:  # blank: kept, not counted
            line_rule[ln] = 0
            line_flags[ln] = 0
            continue
        nonblank += 1
        flags = F_NONBLANK
        found = _patterns(buf, i, j, pats, pat_offsets, starts)
        if (found >> (npol + 1)) & 1:
            flags |= F_LOREM
        line_flags[ln] = flags
        cp0, m = _code_point(buf, i)
        if (cp0 == 0x2022 or cp0 == 45 or cp0 == 42 or cp0 == 0xB7 or cp0 == 0x2023 or cp0 == 0x25E6
                or cp0 == 0x25AA or cp0 == 0x2013 or cp0 == 0x2014 or cp0 == 0x2192):  # quality.BULLETS
            bullets += 1
        t = _last_start(buf, i, j)
        cp1, m = _code_point(buf, t)
        if cp1 == 0x2026 or (j - i >= 3 and buf[j - 1] == 46 and buf[j - 2] == 46 and buf[j - 3] == 46):
            ellipses += 1
        h = _line_hash(buf, i, j)
        slot = h & mask
        while keys[slot] != 0:
            if keys[slot] == h and _same_bytes(buf, i, j, strip0[first[slot]], strip1[first[slot]]):
                break
            slot = (slot + np.uint64(1)) & mask
        if keys[slot] == 0:
            keys[slot] = h
            first[slot] = k
            distinct += 1
        if found & FALLBACK_BIT:
            line_rule[ln] = LINE_FALLBACK
            python = 1
        elif found & 1:
            line_rule[ln] = 1
        else:
            rule = 0
            if found & ((1 << (npol + 1)) - 2):
                rule = 2
            if rule == 0 and not (cp1 == 46 or cp1 == 33 or cp1 == 63 or cp1 == 34 or cp1 == 0x201D
                                  or cp1 == 0x3002 or cp1 == 0xFF01 or cp1 == 0xFF1F):  # quality.TERMINAL
                rule = 3
            line_rule[ln] = rule
    stats[S_PYTHON] = python
    if not python:
        for ln in range(lb, lb + nlines):
            if line_rule[ln] != 0:
                removed += 1
            else:
                sentences += line_marks[ln] + (line_flags[ln] & F_NONBLANK)
                lorem |= (line_flags[ln] & F_LOREM) != 0
    stats[S_C4_REMOVED] = removed
    stats[S_C4_LOREM] = lorem
    stats[S_C4_SENTENCES] = sentences
    stats[S_NONBLANK] = nonblank
    stats[S_BULLETS] = bullets
    stats[S_ELLIPSES] = ellipses
    stats[S_DISTINCT] = distinct
    if not words:  # C4's line rules only
        return
    # the symbols: "#", "..." (non-overlapping, as str.count) and "…"
    symbols = 0
    i = s
    while i < e:
        b = buf[i]
        if b == 35:
            symbols += 1
        elif b == 46 and i + 2 < e and buf[i + 1] == 46 and buf[i + 2] == 46:
            symbols += 1
            i += 3
            continue
        elif b == 0xE2 and i + 2 < e and buf[i + 1] == 0x80 and buf[i + 2] == 0xA6:
            symbols += 1
        i += 1
    hashes, chars, letter = word_stats(buf[s:e])
    total = 0
    nletter = 0
    for w in range(hashes.size):
        total += chars[w]
        nletter += letter[w]
    stop = 0
    for q in range(stop_hashes.size):
        for w in range(hashes.size):
            if hashes[w] == stop_hashes[q]:
                stop += 1
                break
    stats[S_WORDS] = hashes.size
    stats[S_CHARS] = total
    stats[S_SYMBOLS] = symbols
    stats[S_LETTER] = nletter
    stats[S_STOP] = stop
    for k in range(2, 5):
        stats[S_TOP + k - 2] = top_ngram_share(hashes, chars, k)


@njit(**PJIT)
def page_stats(buf, offsets, line_base, words, stop_hashes, pats, pat_offsets, starts, stats, line_rule, line_marks,
               line_flags,
               line_start, line_end):
    """Gopher's and C4's numbers of each document of a batch, in one pass over its bytes (the rules then only
    compare them: cllm/data/filters/quality.py). Per document, stats float64 (D, NSTATS) (the S_ columns); per
    line (L lines in all), line_rule uint8 (L,), line_marks int32 (L,) (count_sentences' marks), line_flags uint8
    (L,) (F_ bits), line_start, line_end int64 (L,) (the line is buf[line_start:line_end], without its newline).
    pats uint8: the lowercase patterns "javascript", the cookie policies, "lorem ipsum", pattern q being
    pats[pat_offsets[q]:pat_offsets[q + 1]], starts their pattern_starts; stop_hashes uint64: the stop words'
    hashes (word_hash). words False: the lines' numbers only (S_WORDS, S_CHARS, S_SYMBOLS, S_LETTER, S_STOP and
    S_TOP's columns not set), for C4's line rules alone."""
    for d in prange(offsets.size - 1):
        _page_stats_one(buf, offsets[d], offsets[d + 1], line_base[d], words, stop_hashes, pats, pat_offsets, starts,
                        stats[d], line_rule, line_marks, line_flags, line_start, line_end)


@njit(**PJIT)
def minhash_batch(buf, offsets, shingle, a, b, out):
    """out uint32 (D, K): minhash() of the words (word_stats) of each document of a batch."""
    for d in prange(offsets.size - 1):
        out[d] = minhash(word_stats(buf[offsets[d]:offsets[d + 1]])[0], shingle, a, b)


# texts a thread walks through the language model's automaton side by side (classify_batch)
LANES = 8


@njit(**PJIT)
def classify_batch(nextmove, rowbase, output, table, prior, alias, buf, offsets, best, prob):
    """The language of each text of a batch: best int64 (D,) and prob float64 (D,), naive Bayes (nb_classify,
    scaled by 1 / sqrt(the text's bytes)) over the text's byte n-grams, found by py3langid's automaton: state ->
    nextmove[rowbase[state] + byte], a state that ends a feature giving output[state] >= 0. The automaton's
    table (39 MB) misses the caches at nearly every byte, and one text's walk waits for each miss in turn; LANES
    texts walked side by side overlap their misses (1.2x faster)."""
    D = offsets.size - 1
    for g in prange((D + LANES - 1) // LANES):
        d0 = g * LANES
        G = min(d0 + LANES, D) - d0
        longest = 1
        for lane in range(G):
            longest = max(longest, offsets[d0 + lane + 1] - offsets[d0 + lane])
        hits = np.empty((G, longest), np.int64)  # each text's features, in the order found
        nhits = np.zeros(G, np.int64)
        state = np.zeros(G, np.int64)
        for i in range(longest):
            for lane in range(G):
                pos = offsets[d0 + lane] + i
                if pos < offsets[d0 + lane + 1]:
                    s = nextmove[rowbase[state[lane]] + buf[pos]]
                    state[lane] = s
                    f = output[s]
                    if f >= 0:
                        hits[lane, nhits[lane]] = f
                        nhits[lane] += 1
        for lane in range(G):
            d = d0 + lane
            idx, counts = _count_features(hits[lane, :nhits[lane]])
            scale = 1.0 / np.sqrt(max(offsets[d + 1] - offsets[d], 1))
            best[d], prob[d] = nb_classify(idx, counts, table, prior, scale, alias)
