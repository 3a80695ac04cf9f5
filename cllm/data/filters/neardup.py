"""Near-duplicate documents: MinHash over word shingles, with locality-sensitive hashing (LSH) to find the
candidates, and the candidates' signatures compared to keep only those whose estimated Jaccard
similarity reaches the threshold. The first document seen is kept; a later one that matches a kept
document is dropped.

Shingles are 3 words (normalized: cllm/data/filters/textstats.py): an edit of one word changes at most 3
shingles, so a copy with 10% of its words edited keeps a Jaccard similarity of about 0.57 to its original
(0.75 at 5%), while unrelated pages share almost no 3-word shingles. The default threshold, 0.5, catches such
copies; FineWeb's 5-word shingles at 0.75 would miss them (0.42 at 10%).

Signatures of K = 128 hash functions are cut into b bands of r rows (b*r <= K): two documents become
candidates when one band is equal, which happens with probability 1 - (1 - J^r)^b. r is the largest for
which a pair at the threshold is a candidate with probability >= 0.99 (fewest needless comparisons).
Memory: each kept document's signature (512 bytes, in blocks of SIGNATURE_BLOCK documents: the store grows
a block at a time, never copied) and its b band keys in an open-addressing table of arrays at most three
quarters full (12 bytes a slot: 0.7 to 1.3 KB a document at the default 42 bands; a dict of Python ints took
~4.6 KB). A band key keeps the first document seen under it: a later one that shares it is compared with that
one. The table's size changes no answer (a key is found wherever it sits), only how long probes run.

Past its memory limit (FilterPipeline gives it 3/4 of --filter-memory-mb) the index moves to disk
(cllm/data/filters/spill.py): the band keys to a SQLite table, the signatures to a file, and a batch of documents
is then looked up at once (seen_batch): its keys against the table as it was before the batch, then each document
in order against those and the keys its own earlier kept documents took, which is the same first-seen rule.
"""
from __future__ import annotations

import numpy as np

from cllm.data.filters.spill import MB, DiskMap, SignatureFile, SpillDir
from cllm.data.filters.textstats import band_keys, lsh_insert, lsh_lookup, lsh_rehash, minhash, minhash_batch, pack

NUM_PERM = 128
SHINGLE = 3
SIGNATURE_BLOCK = 4096  # kept documents' signatures per block (2 MB at 128 permutations)


def bands_for(threshold: float, num_perm: int = NUM_PERM) -> tuple[int, int]:
    """(b, r): the most rows per band for which a pair at `threshold` is a candidate with probability >= 0.99."""
    best = (num_perm, 1)
    for r in range(1, num_perm + 1):
        b = num_perm // r
        if 1 - (1 - threshold ** r) ** b >= 0.99:
            best = (b, r)
    return best


class NearDuplicateIndex:
    """The kept documents' signatures; `seen(hashes)` says whether a document (its word hashes) is a near
    duplicate of one of them, and adds it to them when it is not. `limit`: bytes its in-memory state may take
    before it moves to files in `spill` (None: never)."""

    def __init__(self, threshold: float, num_perm: int = NUM_PERM, shingle: int = SHINGLE, seed: int = 1,
                 limit: int | None = None, spill: SpillDir | None = None):
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, 2**63, num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)  # odd
        self.b = rng.integers(0, 2**63, num_perm, dtype=np.uint64)
        self.threshold = threshold
        self.shingle = shingle
        self.bands, self.rows = bands_for(threshold, num_perm)
        self.table_keys = np.zeros(1024, np.uint64)  # band key -> kept document (lsh_lookup, lsh_insert)
        self.table_docs = np.zeros(1024, np.int32)
        self.used = 0
        self._found = np.empty(self.bands, np.int64)
        self._blocks: list[np.ndarray] = []  # kept documents' signatures: uint32 (SIGNATURE_BLOCK, K) each
        self.count = 0
        self.limit = limit
        self.spill = spill if spill is not None else SpillDir()
        self._disk: DiskMap | None = None  # once on disk: band key -> kept document
        self._sigs: SignatureFile | None = None  # once on disk: the kept documents' signatures

    def memory_bytes(self, more: int = 1) -> int:
        """The in-memory state's bytes once `more` documents are kept: the signature blocks and the table, three
        times the table if it must grow (the old one is alive while the new one, twice its size, fills)."""
        blocks = -(-(self.count + more) // SIGNATURE_BLOCK)
        table = self.table_keys.nbytes + self.table_docs.nbytes
        grow = 4 * (self.used + more * self.bands) > 3 * self.table_keys.size
        return blocks * SIGNATURE_BLOCK * 4 * self.a.size + table * (3 if grow else 1)

    @property
    def on_disk(self) -> bool:
        return self._disk is not None

    def close(self) -> None:
        """Delete the files of the index on disk (if it is)."""
        if self._disk is not None:
            self._disk.close()
            self._sigs.close()
            self._disk = self._sigs = None

    def signature(self, hashes: np.ndarray) -> np.ndarray:
        return minhash(hashes, self.shingle, self.a, self.b)

    def signatures_of(self, docs: list[str]) -> np.ndarray:
        """uint32 (D, K): the signature of each document's words (word_stats), in one kernel call."""
        buf, offsets = pack(docs)
        out = np.empty((len(docs), self.a.size), np.uint32)
        minhash_batch(buf, offsets, self.shingle, self.a, self.b, out)
        return out

    def seen(self, hashes: np.ndarray) -> int:
        """seen_signature of a document's word hashes."""
        return self.seen_signature(self.signature(hashes))

    def seen_batch(self, sigs: np.ndarray) -> list[int]:
        """seen_signature of each of the signatures uint32 (D, K), in order."""
        out = []
        for d in range(len(sigs)):
            if self._disk is None and self.limit is not None and self.memory_bytes() > self.limit:
                self._to_disk()
            if self._disk is not None:
                return out + self._seen_on_disk(sigs[d:])
            out.append(self.seen_signature(sigs[d]))
        return out

    def seen_signature(self, sig: np.ndarray) -> int:
        """The index of the kept document whose signature this one's matches, or -1 (and this one joins the
        kept)."""
        if self._disk is not None:
            return self._seen_on_disk(sig[None, :])[0]
        keys = band_keys(sig, self.bands, self.rows)
        found = lsh_lookup(self.table_keys, self.table_docs, keys, self._found)
        for other in dict.fromkeys(self._found[:found].tolist()):  # each candidate once, in band order
            block, row = divmod(other, SIGNATURE_BLOCK)
            if np.count_nonzero(self._blocks[block][row] == sig) >= self.threshold * sig.size:
                return other
        block, row = divmod(self.count, SIGNATURE_BLOCK)
        if row == 0:
            self._blocks.append(np.empty((SIGNATURE_BLOCK, sig.size), np.uint32))
        self._blocks[block][row] = sig
        if 4 * (self.used + keys.size) > 3 * self.table_keys.size:
            self._grow()
        self.used += lsh_insert(self.table_keys, self.table_docs, keys, self.count)
        self.count += 1
        return -1

    def _grow(self) -> None:
        """Double the table: it stays at most three quarters full, so probes stay short (linear probing: ~8.5 slots
        for a key not there at 3/4, ~2.5 at 1/2; a document's 42 lookups are a small part of its time), and it
        takes 16 to 32 bytes a key rather than 24 to 48."""
        keys, docs = self.table_keys, self.table_docs
        self.table_keys = np.zeros(2 * keys.size, np.uint64)
        self.table_docs = np.zeros(2 * keys.size, np.int32)
        lsh_rehash(self.table_keys, self.table_docs, keys, docs)

    def _to_disk(self) -> None:
        """Move the kept documents' signatures and the band table to files (the table sorted by key: SQLite
        inserts keys in order fastest), and free their memory."""
        limit = self.limit if self.limit is not None else 0
        self._sigs = SignatureFile(self.spill.file("signatures"), self.a.size)
        for block, start in enumerate(range(0, self.count, SIGNATURE_BLOCK)):
            self._sigs.append(self._blocks[block][:min(SIGNATURE_BLOCK, self.count - start)])
        # SQLite's page cache: half the limit, between 1 and 64 MB (more is not faster: the lookups are random)
        self._disk = DiskMap(self.spill.file("bands"), min(max(limit // 2, MB), 64 * MB))
        taken = self.table_keys != 0
        order = np.argsort(self.table_keys[taken])
        keys = self.table_keys[taken][order].view(np.int64).tolist()
        self._disk.put_new(zip(keys, self.table_docs[taken][order].tolist()))
        self._blocks = []
        self.table_keys = np.zeros(1, np.uint64)  # unused from here on
        self.table_docs = np.zeros(1, np.int32)

    def _seen_on_disk(self, sigs: np.ndarray) -> list[int]:
        """seen_signature of each signature of a batch (uint32 (D, K)), the index on disk: the batch's band keys
        are looked up at once in the table as it was before the batch (a key keeps its first document, so those
        found stay the answer), the rest in the keys the batch's own kept documents took before each one."""
        keys = np.empty((len(sigs), self.bands), np.uint64)
        for d in range(len(sigs)):
            keys[d] = band_keys(sigs[d], self.bands, self.rows)
        keys[keys == 0] = 1  # as lsh_lookup and lsh_insert take a key of 0
        rows = keys.view(np.int64).tolist()
        before = self._disk.get_many(np.unique(keys.view(np.int64)).tolist())
        taken: dict[int, int] = {}  # keys the batch's kept documents took: key -> document
        first = self.count
        kept: list[np.ndarray] = []  # their signatures
        out = []
        for sig, row in zip(sigs, rows):
            found = [before[k] if k in before else taken[k] for k in row if k in before or k in taken]
            match = -1
            for other in dict.fromkeys(found):  # each candidate once, in band order
                theirs = kept[other - first] if other >= first else self._sigs.read(other)
                if np.count_nonzero(theirs == sig) >= self.threshold * sig.size:
                    match = other
                    break
            if match < 0:
                for k in row:
                    if k not in before:
                        taken.setdefault(k, self.count)
                kept.append(sig)
                self.count += 1
            out.append(match)
        if kept:
            self._sigs.append(np.stack(kept))
            new = np.fromiter(taken.keys(), np.int64, len(taken))
            docs = np.fromiter(taken.values(), np.int64, len(taken))
            order = np.argsort(new)  # in key order: SQLite's B-tree fills page by page
            self._disk.put_new(zip(new[order].tolist(), docs[order].tolist()))
        return out
