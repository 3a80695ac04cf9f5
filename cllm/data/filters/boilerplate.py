"""Boilerplate lines: a line found on at least `min_pages` pages of one site (a cookie banner, a menu, a
footer) is removed from every page of that site. CCNet removes paragraphs repeated across a shard of
Common Crawl in the same way; here the group is the site (the host of the page's URL), so a sentence two
sites quote stays.

Counting needs every page first: BoilerplateCounter takes each page's distinct lines as 64-bit hashes of the
site and the stripped line (8 bytes per page and distinct line, in arrays), and `finish()` keeps the hashes seen
on min_pages pages or more. The hashes are textstats.line_keys', a batch of pages at a time in one kernel call.
"""
from __future__ import annotations

from itertools import compress

import numpy as np

from cllm.data.filters.textstats import line_keys, pack


class LineKeys:
    """line_keys of a batch of (document, site id) pairs: document j's lines are keys[base[j]:base[j + 1]]."""

    def __init__(self, docs: list[str], sites: list[int]):
        buf, offsets = pack(docs)
        self.base = np.zeros(len(docs) + 1, np.int64)
        np.cumsum([doc.count("\n") + 1 for doc in docs], out=self.base[1:])
        self.keys = np.empty(int(self.base[-1]), np.uint64)
        self.first = np.empty(int(self.base[-1]), np.uint8)
        line_keys(buf, offsets, self.base[:-1], np.asarray(sites, np.int64), self.keys, self.first)


class BoilerplateCounter:
    def __init__(self, min_pages: int):
        self.min_pages = min_pages
        self._keys: list[np.ndarray] = []

    def add_batch(self, docs: list[str], sites: list[int]) -> None:
        """Count each page's distinct non-blank lines once."""
        if docs:
            batch = LineKeys(docs, sites)
            self._keys.append(batch.keys[batch.first.astype(bool)])

    def finish(self) -> np.ndarray:
        """The keys of boilerplate lines, sorted (for remove_lines)."""
        keys = np.concatenate(self._keys) if self._keys else np.empty(0, np.uint64)
        values, counts = np.unique(keys, return_counts=True)
        self._keys = []
        return values[counts >= self.min_pages]


def remove_lines(docs: list[str], sites: list[int], boilerplate: np.ndarray) -> list[tuple[str, list[str]]]:
    """For each document of a batch (its site id in sites): (the document without its boilerplate lines, the
    removed lines); boilerplate: finish()'s sorted keys."""
    if not docs:
        return []
    batch = LineKeys(docs, sites)
    where = np.minimum(np.searchsorted(boilerplate, batch.keys), max(boilerplate.size - 1, 0))
    gone = (batch.keys != 0) & (boilerplate[where] == batch.keys) if boilerplate.size else np.zeros(0, bool)
    out = []
    hits = np.add.reduceat(gone, batch.base[:-1]) if gone.size else np.zeros(len(docs), np.int64)
    for j, doc in enumerate(docs):
        if not hits[j]:
            out.append((doc, []))
            continue
        lines = doc.split("\n")
        mask = gone[batch.base[j]:batch.base[j + 1]]
        out.append(("\n".join(compress(lines, (~mask).tolist())), list(compress(lines, mask.tolist()))))
    return out
