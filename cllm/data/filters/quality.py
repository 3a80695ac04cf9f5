"""Quality rules from published corpus pipelines: Gopher's document rules (Rae et al. 2021, "Scaling Language
Models: Methods, Analysis & Insights from Training Gopher", appendix A.1.1, MassiveWeb) and C4's line and page
rules (Raffel et al. 2020, "Exploring the Limits of Transfer Learning", section 2.2). Each threshold is a field
of QualitySettings, with the published value as its default.

A document is dropped by the first rule it fails, and that rule is the one reported. C4's line rules remove
lines (counted in lines and bytes) and drop the page only when fewer than `c4_min_sentences` sentences are
left. Left out: C4's page rules for curly brackets and for a list of bad words (a corpus of code or of medicine
would lose its good pages), and its 3-word minimum per line (it would take headings and verse).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import compress

import numpy as np

from cllm.data.filters.textstats import (
    NSTATS,
    S_BULLETS,
    S_C4_LOREM,
    S_C4_REMOVED,
    S_C4_SENTENCES,
    S_CHARS,
    S_DISTINCT,
    S_ELLIPSES,
    S_LETTER,
    S_NONBLANK,
    S_PYTHON,
    S_STOP,
    S_SYMBOLS,
    S_TOP,
    S_WORDS,
    pack,
    page_stats,
    pattern_starts,
    top_ngram_share,
    word_hash,
)

# Gopher's stop words: a document in English needs at least min_stop_words of them
STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
_STOP_HASHES = [word_hash(w) for w in STOP_WORDS]
BULLETS = ("•", "-", "*", "·", "‣", "◦", "▪", "–", "—", "→")
ELLIPSES = ("...", "…")
# C4 keeps lines that end in one of these (C4's own: . ! ? and a closing double quote), plus the CJK forms
TERMINAL = (".", "!", "?", '"', "”", "。", "！", "？")
POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
# textstats.page_stats' patterns (ASCII, lowercase): "javascript", the policies, "lorem ipsum"
_PATTERNS = ("javascript", *POLICY, "lorem ipsum")
PATTERNS = np.frombuffer("".join(_PATTERNS).encode(), np.uint8)
PATTERN_OFFSETS = np.cumsum([0, *(len(p) for p in _PATTERNS)]).astype(np.int64)
PATTERN_STARTS = pattern_starts(_PATTERNS)
STOP_HASHES = np.array([word_hash(w) for w in STOP_WORDS], np.uint64)

GOPHER_RULES = ("gopher_word_count", "gopher_mean_word_length", "gopher_symbol_ratio", "gopher_bullet_lines",
                "gopher_ellipsis_lines", "gopher_letter_words", "gopher_stop_words", "gopher_repetition")
C4_LINE_RULES = ("c4_javascript", "c4_cookies", "c4_terminal_punct")
C4_PAGE_RULES = ("c4_lorem_ipsum", "c4_min_sentences")


@dataclass(frozen=True)
class QualitySettings:
    """The quality rules' thresholds; the defaults are the published ones (Gopher's and C4's)."""

    min_words: int = 50  # Gopher: documents of 50 to 100,000 words
    max_words: int = 100_000
    min_mean_word_length: float = 3.0  # Gopher: mean word length 3 to 10 characters
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1  # Gopher: ("#" and ellipses) per word
    max_bullet_lines: float = 0.9  # Gopher: share of lines that start with a bullet
    max_ellipsis_lines: float = 0.3  # Gopher: share of lines that end with an ellipsis
    min_letter_words: float = 0.8  # Gopher: share of words with a letter
    min_stop_words: int = 2  # Gopher: of STOP_WORDS, English documents only (the list is English)
    max_duplicate_lines: float = 0.3  # Gopher's repetition: share of lines that repeat an earlier one
    max_top_2gram: float = 0.20  # Gopher's repetition: characters in the most frequent 2-, 3-, 4-gram
    max_top_3gram: float = 0.18
    max_top_4gram: float = 0.16
    c4_min_sentences: int = 5  # C4: pages with fewer sentences (after its line rules) are dropped


def gopher_rule_of_stats(st, language: str, s: QualitySettings) -> str | None:
    """gopher_rule from a document's numbers (its row of textstats.page_stats: the S_ columns), the same rule."""
    n = int(st[S_WORDS])
    if not s.min_words <= n <= s.max_words:
        return "gopher_word_count"
    if not s.min_mean_word_length <= int(st[S_CHARS]) / n <= s.max_mean_word_length:
        return "gopher_mean_word_length"
    if int(st[S_SYMBOLS]) / n > s.max_symbol_word_ratio:
        return "gopher_symbol_ratio"
    nonblank = int(st[S_NONBLANK])
    if nonblank:
        if int(st[S_BULLETS]) / nonblank > s.max_bullet_lines:
            return "gopher_bullet_lines"
        if int(st[S_ELLIPSES]) / nonblank > s.max_ellipsis_lines:
            return "gopher_ellipsis_lines"
    if int(st[S_LETTER]) / n < s.min_letter_words:
        return "gopher_letter_words"
    if language == "en" and int(st[S_STOP]) < s.min_stop_words:
        return "gopher_stop_words"
    if nonblank and 1 - int(st[S_DISTINCT]) / nonblank > s.max_duplicate_lines:
        return "gopher_repetition"
    for k, limit in ((2, s.max_top_2gram), (3, s.max_top_3gram), (4, s.max_top_4gram)):
        if st[S_TOP + k - 2] > limit:
            return "gopher_repetition"
    return None


def gopher_rule(doc: str, lines: list[str], hashes, chars, letter, language: str, s: QualitySettings) -> str | None:
    """The first Gopher rule `doc` fails (its words: word_stats' arrays; its lines: doc.split("\\n")), or None.
    The pipeline uses gopher_rule_of_stats (one kernel pass); this is its reference (tests/test_filters.py)."""
    n = hashes.size
    if not s.min_words <= n <= s.max_words:
        return "gopher_word_count"
    total_chars = int(chars.sum())
    if not s.min_mean_word_length <= total_chars / n <= s.max_mean_word_length:
        return "gopher_mean_word_length"
    if (doc.count("#") + doc.count("...") + doc.count("…")) / n > s.max_symbol_word_ratio:
        return "gopher_symbol_ratio"
    stripped = [line.strip() for line in lines]
    nonblank = [line for line in stripped if line]
    if nonblank:
        if sum(line.startswith(BULLETS) for line in nonblank) / len(nonblank) > s.max_bullet_lines:
            return "gopher_bullet_lines"
        if sum(line.endswith(ELLIPSES) for line in nonblank) / len(nonblank) > s.max_ellipsis_lines:
            return "gopher_ellipsis_lines"
    if np.count_nonzero(letter) / n < s.min_letter_words:
        return "gopher_letter_words"
    if language == "en" and sum(bool((hashes == h).any()) for h in _STOP_HASHES) < s.min_stop_words:
        return "gopher_stop_words"
    if nonblank and 1 - len(set(nonblank)) / len(nonblank) > s.max_duplicate_lines:
        return "gopher_repetition"
    for k, limit in ((2, s.max_top_2gram), (3, s.max_top_3gram), (4, s.max_top_4gram)):
        if top_ngram_share(hashes, chars, k) > limit:
            return "gopher_repetition"
    return None


def c4_line_rule(line: str) -> str | None:
    """The C4 line rule that removes `line`, or None (blank lines stay: they separate paragraphs)."""
    text = line.strip()
    if not text:
        return None
    low = text.lower()
    if "javascript" in low:
        return "c4_javascript"
    if "cookie" in low or "terms of use" in low or "privacy policy" in low:  # cheap test first
        if any(p in low for p in POLICY):
            return "c4_cookies"
    if not text.endswith(TERMINAL):
        return "c4_terminal_punct"
    return None


def c4_lines(doc: str) -> tuple[str, dict]:
    """(doc without the lines C4's line rules remove, {rule: [its removed lines]}), line by line in Python:
    PageStats.c4_lines' reference, and its way for a page holding U+0130 or U+212A."""
    kept, removed = [], {}
    for line in doc.split("\n"):
        rule = c4_line_rule(line)
        if rule is None:
            kept.append(line)
        else:
            removed.setdefault(rule, []).append(line)
    return ("\n".join(kept), removed) if removed else (doc, removed)


def c4_page_rule(doc: str, s: QualitySettings) -> str | None:
    """The C4 page rule that drops `doc` (after its line rules), or None."""
    if "lorem ipsum" in doc.lower():
        return "c4_lorem_ipsum"
    if count_sentences(doc) < s.c4_min_sentences:
        return "c4_min_sentences"
    return None


def count_sentences(doc: str) -> int:
    """Sentence ends: a terminal mark (or one and a closing quote) before a space, plus the non-blank lines, each of
    which ends one after C4's line rule. str.count, at ~1 GB/s, rather than a regex (~80 MB/s)."""
    marks = sum(doc.count(m + " ") for m in (".", "!", "?", '."', '!"', '?"', ".”", "。", "！", "？"))
    return marks + sum(1 for line in doc.split("\n") if line.strip())


class PageStats:
    """textstats.page_stats of a batch of documents (one kernel pass over their bytes, spread over the cores):
    `stats[j]` for gopher_rule_of_stats, and C4's line and page rules of document j (c4_lines, c4), which give
    what c4_lines and c4_page_rule give (tests/test_filters.py). words False: C4's alone (the words' numbers
    not counted)."""

    def __init__(self, docs: list[str], words: bool = True):
        self.docs = docs
        buf, offsets = pack(docs)
        self.line_base = np.zeros(len(docs) + 1, np.int64)  # document j's lines: line_base[j]:line_base[j + 1]
        np.cumsum([doc.count("\n") + 1 for doc in docs], out=self.line_base[1:])
        nlines = int(self.line_base[-1])
        self.stats = np.empty((len(docs), NSTATS), np.float64)
        self.line_rule = np.empty(nlines, np.uint8)
        self.line_marks = np.empty(nlines, np.int32)
        self.line_flags = np.empty(nlines, np.uint8)
        line_start, line_end = np.empty(nlines, np.int64), np.empty(nlines, np.int64)
        page_stats(buf, offsets, self.line_base[:-1], words, STOP_HASHES, PATTERNS, PATTERN_OFFSETS, PATTERN_STARTS,
                   self.stats, self.line_rule, self.line_marks, self.line_flags, line_start, line_end)

    def _python(self, j: int) -> bool:
        """Whether a line of document j holds a character whose str.lower() is ASCII: Python's rules decide it."""
        return bool(self.stats[j, S_PYTHON])

    def c4_lines(self, j: int) -> tuple[str, dict]:
        """(document j without the lines C4's line rules remove, {rule: [its removed lines]})."""
        doc = self.docs[j]
        if self._python(j):
            return c4_lines(doc)
        if not self.stats[j, S_C4_REMOVED]:
            return doc, {}
        rules = self.line_rule[self.line_base[j]:self.line_base[j + 1]]
        lines = doc.split("\n")
        removed: dict = {}
        for q in np.flatnonzero(rules).tolist():
            removed.setdefault(C4_LINE_RULES[rules[q] - 1], []).append(lines[q])
        return "\n".join(compress(lines, (rules == 0).tolist())), removed

    def c4(self, j: int, s: QualitySettings = QualitySettings()) -> tuple[str, dict, str | None]:
        """(c4_lines(j)'s document and removed lines, the C4 page rule that then drops it or None)."""
        doc, removed = self.c4_lines(j)
        if self._python(j):
            return doc, removed, c4_page_rule(doc, s)
        if self.stats[j, S_C4_LOREM]:
            return doc, removed, "c4_lorem_ipsum"
        return doc, removed, "c4_min_sentences" if self.sentences(j) < s.c4_min_sentences else None

    def sentences(self, j: int) -> int | None:
        """count_sentences of document j after C4's line rules, or None where Python's rules decide them: the
        marks of the kept lines (no mark holds a newline) and the kept non-blank lines."""
        return None if self._python(j) else int(self.stats[j, S_C4_SENTENCES])
