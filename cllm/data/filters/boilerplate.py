"""Boilerplate lines: a line found on at least `min_pages` pages of one site (a cookie banner, a menu, a
footer) is removed from every page of that site. CCNet removes paragraphs repeated across a shard of
Common Crawl in the same way; here the group is the site (the host of the page's URL), so a sentence two
sites quote stays.

Counting needs every page first: BoilerplateCounter takes each page's distinct lines as 64-bit hashes
(8 bytes per page and distinct line, in an array), and `finish()` keeps the hashes seen on min_pages pages
or more. Python's str hash is random per process, which is enough: the counts and the removal run in the
same process.
"""
from __future__ import annotations

from array import array

import numpy as np


def line_key(site: int, line: str) -> int:
    return hash((site, line.strip()))


class BoilerplateCounter:
    def __init__(self, min_pages: int):
        self.min_pages = min_pages
        self._keys = array("q")

    def add(self, site: int, doc: str) -> None:
        self._keys.extend({line_key(site, line) for line in doc.split("\n") if line.strip()})

    def finish(self) -> set:
        """The keys of boilerplate lines. The hashes are sorted in place (np.unique's copies, mask and counts took
        ~5 times their 8 bytes a line at once): a key on m pages or more is one that equals the key m - 1 places on."""
        keys, self._keys = self._keys, array("q")
        m = self.min_pages
        if len(keys) < m:
            return set()
        sorted_keys = np.frombuffer(keys, np.int64)  # a view: sorting it sorts the array
        sorted_keys.sort()
        hits = sorted_keys[m - 1:][sorted_keys[m - 1:] == sorted_keys[:len(keys) - m + 1]]  # with repeats
        return set(np.unique(hits).tolist())


def remove_lines(site: int, doc: str, boilerplate: set) -> tuple[str, list[str]]:
    """(doc without its boilerplate lines, the removed lines)."""
    kept, removed = [], []
    for line in doc.split("\n"):
        if line.strip() and line_key(site, line) in boilerplate:
            removed.append(line)
        else:
            kept.append(line)
    return ("\n".join(kept), removed) if removed else (doc, removed)
