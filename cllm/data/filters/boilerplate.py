"""Boilerplate lines: a line found on at least `min_pages` pages of one site (a cookie banner, a menu, a
footer) is removed from every page of that site. CCNet removes paragraphs repeated across a shard of
Common Crawl in the same way; here the group is the site (the host of the page's URL), so a sentence two
sites quote stays.

Counting needs every page first: BoilerplateCounter takes each page's distinct lines as 64-bit hashes
(8 bytes per page and distinct line, in an array), and `finish()` keeps the hashes seen on min_pages pages
or more. Python's str hash is random per process, which is enough: the counts and the removal run in the
same process.

Past its memory limit (FilterPipeline gives it 3/4 of --filter-memory-mb) the hashes go to disk: each time the
array reaches the limit it is sorted and written as a run of (distinct hash, pages) (cllm/data/filters/spill.py's
directory), and `finish()` counts the runs range by range of the hash's values: each range's part of every run
read, summed per hash; the same keys as counting in memory.
"""
from __future__ import annotations

import os
from array import array

import numpy as np

from cllm.data.filters.spill import SpillDir


def line_key(site: int, line: str) -> int:
    return hash((site, line.strip()))


class BoilerplateCounter:
    """`limit`: bytes of hashes kept in memory before they go to disk, in `spill` (None: never)."""

    def __init__(self, min_pages: int, limit: int | None = None, spill: SpillDir | None = None):
        self.min_pages = min_pages
        self._keys = array("q")
        self.limit = limit
        self.spill = spill if spill is not None else SpillDir()
        self._runs: list[tuple[str, str, int]] = []  # (hashes file, pages file, entries) of each run on disk

    def add(self, site: int, doc: str) -> None:
        self._keys.extend({line_key(site, line) for line in doc.split("\n") if line.strip()})
        if self.limit is not None and 8 * len(self._keys) > self.limit:
            self._write_run()

    def _write_run(self) -> None:
        """The hashes so far as a run on disk: distinct hashes sorted (int64) and their pages (int64)."""
        keys, self._keys = self._keys, array("q")
        values, counts = np.unique(np.frombuffer(keys, np.int64), return_counts=True)
        del keys
        paths = self.spill.file("lines"), self.spill.file("pages")
        values.tofile(paths[0])
        counts.astype(np.int64).tofile(paths[1])
        self._runs.append((*paths, values.size))

    def finish(self) -> set:
        """The keys of boilerplate lines. The hashes are sorted in place (np.unique's copies, mask and counts took
        ~5 times their 8 bytes a line at once): a key on m pages or more is one that equals the key m - 1 places on."""
        if self._runs:
            return self._finish_runs()
        keys, self._keys = self._keys, array("q")
        m = self.min_pages
        if len(keys) < m:
            return set()
        sorted_keys = np.frombuffer(keys, np.int64)  # a view: sorting it sorts the array
        sorted_keys.sort()
        hits = sorted_keys[m - 1:][sorted_keys[m - 1:] == sorted_keys[:len(keys) - m + 1]]  # with repeats
        return set(np.unique(hits).tolist())

    def _finish_runs(self) -> set:
        """finish() of the runs on disk: the hash's range cut into parts of about half the limit's entries (two
        int64 arrays of a part's entries, then np.unique's copies), each part's slice of every run read and its
        pages summed per hash."""
        if len(self._keys):
            self._write_run()
        total = sum(n for _, _, n in self._runs)
        parts = max(1, -(-total * 16 * 4 // max(self.limit or 0, 1 << 20)))
        bounds = [-(1 << 63) + (i * (1 << 64)) // parts for i in range(parts)] + [None]  # hashes are uniform
        out: set = set()
        try:
            for lo, hi in zip(bounds, bounds[1:]):
                keys, counts = [], []
                for lines, pages, n in self._runs:
                    run = np.memmap(lines, np.int64, "r", shape=(n,))  # searched only: a few pages read
                    a = int(np.searchsorted(run, lo))
                    b = n if hi is None else int(np.searchsorted(run, hi))
                    del run
                    keys.append(np.fromfile(lines, np.int64, b - a, offset=8 * a))
                    counts.append(np.fromfile(pages, np.int64, b - a, offset=8 * a))
                values, where = np.unique(np.concatenate(keys), return_inverse=True)
                pages_of = np.bincount(where, weights=np.concatenate(counts), minlength=values.size)
                out.update(values[pages_of >= self.min_pages].tolist())
        finally:
            for lines, pages, _ in self._runs:
                os.unlink(lines)
                os.unlink(pages)
            self._runs = []
        return out


def remove_lines(site: int, doc: str, boilerplate: set) -> tuple[str, list[str]]:
    """(doc without its boilerplate lines, the removed lines)."""
    kept, removed = [], []
    for line in doc.split("\n"):
        if line.strip() and line_key(site, line) in boilerplate:
            removed.append(line)
        else:
            kept.append(line)
    return ("\n".join(kept), removed) if removed else (doc, removed)
