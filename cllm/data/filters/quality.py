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

import numpy as np

from cllm.data.filters.textstats import top_ngram_share, word_hash

# Gopher's stop words: a document in English needs at least min_stop_words of them
STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
_STOP_HASHES = [word_hash(w) for w in STOP_WORDS]
BULLETS = ("•", "-", "*", "·", "‣", "◦", "▪", "–", "—", "→")
ELLIPSES = ("...", "…")
# C4 keeps lines that end in one of these (C4's own: . ! ? and a closing double quote), plus the CJK forms
TERMINAL = (".", "!", "?", '"', "”", "。", "！", "？")
POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")

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


def gopher_rule(doc: str, lines: list[str], hashes, chars, letter, language: str, s: QualitySettings) -> str | None:
    """The first Gopher rule `doc` fails (its words: word_stats' arrays; its lines: doc.split("\\n")), or None."""
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
