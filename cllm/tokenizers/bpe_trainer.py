"""Training byte-level BPE, step by step (BPETokenizer.train runs them in order): count the distinct
pre-split chunks of the corpus (Numba for the built-in patterns, `regex` for others), link their
bytes into words, learn the merges with the kernels of cllm/kernels/bpe_train.py, and count how often
each final token occurs.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import regex

from cllm.tokenizers.base import progress_bar, text_pieces
from cllm.tokenizers.pre_split import char_classes


def count_chunks_regex(texts, pattern, gpt4, progress):
    """Distinct pre-split chunks with their counts, for any pattern (Python `regex` + Counter).
    Returns (docs, chars, distinct, chunks, sym (N,) int32 bytes of the multi-byte chunks,
    lens (W,), counts (W,), single (256,) counts of one-byte chunks)."""
    split = regex.compile(pattern).findall
    counts: Counter = Counter()
    docs = chars = 0
    with progress_bar(progress, desc="bpe: counting chunks", unit="doc") as bar:
        for text in texts:
            counts.update(split(text))
            docs += 1
            chars += len(text)
            bar.update(1)
    words, wcount = [], []
    single = np.zeros(256, np.int64)
    for chunk, n in counts.items():
        bs = chunk.encode("utf-8", "surrogatepass")
        if len(bs) == 1:
            single[bs[0]] += n
        else:
            words.append(bs)
            wcount.append(n)
    sym = np.frombuffer(b"".join(words), np.uint8).astype(np.int32)
    lens = np.fromiter(map(len, words), np.int64, len(words))
    return docs, chars, len(counts), sum(counts.values()), sym, lens, np.asarray(wcount, np.int64), single


def count_chunks_numba(texts, pattern, gpt4, progress):
    """The same for the built-in patterns, pre-split and counted by Numba kernels."""
    from cllm.kernels import bpe_split as K  # noqa: PLC0415 - costly: Numba and the kernels (~0.45 s); char and word tokenizers never need them

    cls = char_classes()
    table = K.new_chunk_cache()
    cstate = np.zeros(2, np.int64)
    pool = np.empty(1 << 16, np.uint32)  # code points of each distinct chunk
    ent = np.empty((1 << 12, 3), np.int64)  # (offset, length, count) per distinct chunk
    docs = chars = 0
    with progress_bar(progress, desc="bpe: counting chunks", unit="doc") as bar:
        for text in texts:
            for piece in text_pieces(text):  # 4 bytes a character: piece by piece
                cps = np.frombuffer(piece.encode("utf-32-le", "surrogatepass"), np.uint32)
                pos = 0
                while True:
                    pos = K.count_chunks(cps, pos, cls, gpt4, table, cstate, pool, ent)
                    if pos >= len(cps):
                        break
                    if cstate[0] >= len(ent):  # full: double what ran out and go on
                        ent = np.concatenate([ent, np.empty_like(ent)])
                    else:
                        pool = np.concatenate([pool, np.empty(max(len(pool), len(cps) - pos), np.uint32)])
            docs += 1
            chars += len(text)
            del text, piece, cps  # a streamed document is not kept while the next one is read
            bar.update(1)
    n_ent = int(cstate[0])
    sym, lens, counts, single = K.chunks_to_words(pool[: cstate[1]], ent, n_ent)
    return docs, chars, n_ent, int(ent[:n_ent, 2].sum()), sym, lens, counts, single


def link_words(lens: np.ndarray):
    """The words (lens (W,) bytes each, laid end to end) as linked lists of positions, the layout of
    cllm/kernels/bpe_train.py: (wstart (W,), wid (N,), nxt (N,), prv (N,)) int32."""
    W = len(lens)
    N = int(lens.sum())
    wstart = np.zeros(W, np.int32)
    if W:
        wstart[1:] = np.cumsum(lens)[:-1]
    wid = np.repeat(np.arange(W, dtype=np.int32), lens)  # (N,)
    pos = np.arange(N, dtype=np.int32)
    nxt = pos + 1  # (N,) next position, -1 at each word's end
    prv = pos - 1  # (N,) previous position, -1 at each word's start
    if W:
        ends = (wstart + lens - 1).astype(np.int64)
        nxt[ends] = -1
        prv[wstart] = -1
    return wstart, wid, nxt, prv


def learn_merges(sym, nxt, prv, wid, wstart, wcount_a, V: int, progress: bool):
    """Merge until the ids reach V (256 bytes + the merged tokens) or no pair is left; sym, nxt and
    prv are merged in place. Returns (merge_a, merge_b, merge_new) (M,) int32 in training order."""
    from cllm.kernels import bpe_train as K  # noqa: PLC0415 - costly: as in count_chunks_numba

    W, N = len(wstart), len(sym)
    wmark = np.zeros(W, np.int32)
    n_new = V - 256
    capacity = 3 * N + 16
    pairs, pa, pb, pcount, phead, occ_word, occ_next, heap_count, heap_pair, state = K.bpe_train_init(
        sym, nxt, prv, wid, wstart, wcount_a, capacity)
    tok_hash = np.zeros(V, np.uint64)  # (V,) polynomial hash of each token's bytes
    tok_pow = np.zeros(V, np.uint64)   # (V,) HASH_BASE ** len(bytes)
    tok_hash[:256] = np.arange(1, 257, dtype=np.uint64)
    tok_pow[:256] = K.HASH_BASE
    tok_ids = K.bpe_token_table(tok_hash, tok_pow)
    # one merge may reuse an id, so allow more merges than new ids
    max_merges = n_new + 1024
    merge_a = np.empty(max_merges, np.int32)
    merge_b = np.empty(max_merges, np.int32)
    merge_new = np.empty(max_merges, np.int32)
    n_merges, next_id = 0, 256
    step = max(1, n_new // 100)
    with progress_bar(progress, desc="bpe: merging", unit="tok", total=n_new) as bar:
        while next_id < V:
            room = max_merges - n_merges
            if room <= 0:
                merge_a, merge_b, merge_new = (np.concatenate([x, np.empty(max_merges, np.int32)])
                                               for x in (merge_a, merge_b, merge_new))
                max_merges *= 2
                room = max_merges - n_merges
            before, merges_before = next_id, n_merges
            n_merges, next_id = K.bpe_train_steps(
                sym, nxt, prv, wstart, wcount_a, wmark, pairs, pa, pb, pcount, phead,
                occ_word, occ_next, heap_count, heap_pair, state,
                tok_hash, tok_pow, tok_ids, next_id, V, min(step, room),
                merge_a, merge_b, merge_new, n_merges)
            bar.update(next_id - before)
            if n_merges == merges_before:
                break  # no pair left: every chunk is a single token
    return merge_a[:n_merges], merge_b[:n_merges], merge_new[:n_merges]


def token_counts(sym, wid, wcount_a, single, V: int) -> np.ndarray:
    """(V,) int64: how often each final token occurs in the training text (sym after the merges)."""
    alive = sym >= 0
    tc = np.bincount(sym[alive], weights=wcount_a[wid[alive]], minlength=V).astype(np.int64)
    tc[:256] += single
    return tc
