"""Corpus filters of `prepare`, after cleaning and exact de-duplication (cllm/data/corpus.py), in this order:

  boilerplate   lines found on many pages of one site, removed from each (cllm/data/filters/boilerplate.py)
  language      the language of each document is detected (py3langid) and recorded; with --languages, a
                document in another language is dropped (cllm/data/filters/language.py)
  gopher        Gopher's quality rules: drop the document (cllm/data/filters/quality.py)
  c4            C4's line rules (remove lines), then its page rules (drop the document)
  near-dup      MinHash + LSH near-duplicates: the first copy is kept (cllm/data/filters/neardup.py)

Which run by default depends on the source. A crawl's output folder (cllm/scraper/output.py: manifest.jsonl
and pages/) is web text: all four filters run. Text files (books, the bundled corpora) get none: C4's line
rule would gut verse (tiny Shakespeare's lines end without punctuation), Gopher's 50-word minimum would drop
short notes, and near-duplicate removal would drop a book's second edition a user put there on purpose; so
`prepare data/` gives the dataset it gave before the filters existed. `--filters` chooses otherwise.

The first full pass over the corpus decides (each document's fate, its language); later passes reuse the
decisions and only redo the line removals, so both passes see the same text. The boilerplate filter needs a
pass of its own before them (every page's lines must be counted before any page is cut).

The report (DIR/filters.json, written by cllm/data/prepare.py; its format in docs/design.md) gives, per rule,
the documents, lines and UTF-8 bytes it removed and a few examples; DIR/documents.jsonl gives each
document's source, detected language and the rule that removed it (null: kept).
"""
from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from cllm.config import option
from cllm.data.filters.boilerplate import BoilerplateCounter, remove_lines
from cllm.data.filters.language import detect, parse_languages
from cllm.data.filters.neardup import NearDuplicateIndex
from cllm.data.filters.quality import (
    C4_LINE_RULES,
    C4_PAGE_RULES,
    GOPHER_RULES,
    QualitySettings,
    c4_line_rule,
    c4_page_rule,
    gopher_rule,
)
from cllm.data.filters.textstats import word_stats
from cllm.errors import DataError

FILTERS = ("boilerplate", "gopher", "c4", "near-dup")
RULES = ("boilerplate", "language", *GOPHER_RULES, *C4_LINE_RULES, *C4_PAGE_RULES, "near_duplicate")
EXAMPLES = 3  # examples per rule in the report
EXCERPT = 200  # characters of a dropped document shown as an example
REPORT_FORMAT = "cllm-filter-report"
REPORT_VERSION = 1


@dataclass
class FilterOptions:
    """The corpus filters' flags of `prepare` (see the module doc), each default written here once."""

    filters: str = option("auto", "corpus filters: auto (all for a crawl's output folder, none for text files), "
                                  "all, none, or a comma list of boilerplate, gopher, c4, near-dup")
    languages: str = option("", "keep documents in these languages only (ISO 639 codes, e.g. en,fr; none: "
                                "keep all); each document's detected language is recorded either way")
    near_dup_threshold: float = option(0.5, "near-dup: estimated Jaccard similarity of 3-word shingles "
                                            "(0 < t <= 1) from which a document is a copy of an earlier one")
    boilerplate_min_pages: int = option(3, "boilerplate: a line on this many pages of one site (>= 2) is removed")


def resolve_filters(spec: str, source_kind: str) -> tuple[str, ...]:
    """The filters `spec` (--filters) turns on for a source of `source_kind` ("web" or "text"), in FILTERS' order."""
    spec = (spec or "").strip().lower()
    if spec == "auto":
        return FILTERS if source_kind == "web" else ()
    if spec == "all":
        return FILTERS
    if spec in ("none", ""):
        return ()
    names = {n.strip() for n in spec.split(",") if n.strip()}
    bad = sorted(names - set(FILTERS))
    if bad:
        raise DataError(f"unknown filter(s) {', '.join(bad)} in --filters; use auto, all, none or a comma list of "
                        f"{', '.join(FILTERS)}")
    return tuple(n for n in FILTERS if n in names)


def check_options(options: FilterOptions) -> None:
    t = options.near_dup_threshold
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 1:
        raise DataError(f"--near-dup-threshold must be a number in (0, 1], got {t!r}; e.g. 0.5")
    m = options.boilerplate_min_pages
    if isinstance(m, bool) or not isinstance(m, int) or m < 2:
        raise DataError(f"--boilerplate-min-pages must be an integer >= 2, got {m!r}; e.g. 3")


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _c4_lines(doc: str) -> tuple[str, dict]:
    """(doc without the lines C4's line rules remove, {rule: [its removed lines]})."""
    kept, removed = [], {}
    for line in doc.split("\n"):
        rule = c4_line_rule(line)
        if rule is None:
            kept.append(line)
        else:
            removed.setdefault(rule, []).append(line)
    return ("\n".join(kept), removed) if removed else (doc, removed)


class RuleCount:
    """What one rule removed: whole documents, lines, their UTF-8 bytes, and a few examples."""

    def __init__(self):
        self.documents = 0
        self.lines = 0
        self.bytes = 0
        self.examples: list[dict] = []

    def as_dict(self) -> dict:
        return {"documents": self.documents, "lines": self.lines, "bytes": self.bytes, "examples": self.examples}


class FilterPipeline:
    """The filters of one corpus (see the module doc). `apply(doc, source, site)` gives the document to keep
    (maybe with lines removed) or None."""

    def __init__(self, options: FilterOptions, source_kind: str, root: str):
        check_options(options)
        self.source_kind = source_kind
        self.active = resolve_filters(options.filters, source_kind)
        self.languages = parse_languages(options.languages)
        self.threshold = float(options.near_dup_threshold)
        self.min_pages = int(options.boilerplate_min_pages)
        self.quality = QualitySettings()
        self.root = root
        self.boilerplate: set | None = None  # keys of boilerplate lines, once counted
        self._decisions: list | None = None  # per document: None (kept) or the rule that dropped it
        self._counting = 0.0  # seconds the boilerplate counting took
        self.clock = time.process_time
        self._reset()

    @property
    def enabled(self) -> bool:
        """Whether anything can be removed (else the filters only record languages)."""
        return bool(self.active or self.languages)

    def settings(self) -> dict:
        """What the dataset depends on (part of its cache key; meta.json's "options")."""
        out = {"source_kind": self.source_kind, "filters": list(self.active), "languages": list(self.languages)}
        if "near-dup" in self.active:
            out["near_dup_threshold"] = self.threshold
        if "boilerplate" in self.active:
            out["boilerplate_min_pages"] = self.min_pages
        if "gopher" in self.active or "c4" in self.active:
            out["quality"] = dict(self.quality.__dict__)
        return out

    def _reset(self) -> None:
        self.counts = {rule: RuleCount() for rule in RULES}
        self.documents_in = self.bytes_in = self.documents_out = self.bytes_out = 0
        self.languages_seen: Counter = Counter()
        # each document's (source, language or None, its probability, the rule that removed it or None)
        self.documents: list[tuple] = []
        # CPU seconds per filter (and the counting pass's, if any), for bench/prepare.py: the process's CPU time,
        # not the wall clock's, which counts the time other processes take on a shared machine
        self.seconds: Counter = Counter()
        if self._counting:
            self.seconds["boilerplate counting"] = self._counting
        self._pass: list = []
        self._index = NearDuplicateIndex(self.threshold) if "near-dup" in self.active else None

    # --- the passes ---------------------------------------------------------------------------

    @property
    def needs_boilerplate_pass(self) -> bool:
        return "boilerplate" in self.active and self.boilerplate is None

    def count_boilerplate(self, pages) -> None:
        """The pass before the others: `pages` yields (document, site id or None)."""
        counter = BoilerplateCounter(self.min_pages)
        spent = 0.0  # the counting's own time, not the reading's
        for doc, site in pages:
            if site is not None:
                t = self.clock()
                counter.add(site, doc)
                spent += self.clock() - t
        t = self.clock()
        self.boilerplate = counter.finish()
        self.seconds["boilerplate counting"] = self._counting = spent + self.clock() - t

    def begin_pass(self) -> None:
        if self._decisions is None:
            self._reset()
        self._i = 0

    def end_pass(self, complete: bool) -> None:
        """After a pass; `complete`: it read every document (only then are its decisions final)."""
        if self._decisions is None and complete:
            self._decisions = self._pass
            self._index = None  # its signatures are no longer needed

    def apply(self, doc: str, source: str, site: int | None) -> str | None:
        i = self._i
        self._i += 1
        if self._decisions is not None:  # a later pass: the first pass's decision, the same line removals
            if self._decisions[i] is not None:
                return None
            return self._remove_lines(doc, site)
        self._lang = (None, None)
        rule, doc = self._decide(doc, source, site)
        self._pass.append(rule)
        self.documents.append((source, *self._lang, rule))
        return doc

    def _remove_lines(self, doc: str, site: int | None) -> str:
        """A later pass: the first pass's boilerplate and C4 line removals again (same text, same result)."""
        if "boilerplate" in self.active and site is not None and self.boilerplate:
            doc = remove_lines(site, doc, self.boilerplate)[0]
        if "c4" in self.active:
            doc = _c4_lines(doc)[0]
        return doc

    def _decide(self, doc: str, source: str, site: int | None) -> tuple[str | None, str | None]:
        """(the rule that drops doc or None, doc as kept or None); the first pass's work."""
        nbytes = _nbytes(doc)
        self.documents_in += 1
        self.bytes_in += nbytes
        clock = self.clock
        t = clock()
        if "boilerplate" in self.active and site is not None and self.boilerplate:
            doc, removed = remove_lines(site, doc, self.boilerplate)
            if removed:
                self._count_lines("boilerplate", removed, source)
                if not doc.strip():
                    self.seconds["boilerplate"] += clock() - t
                    return self._drop("boilerplate", doc, source), None
        t1 = clock()
        self.seconds["boilerplate"] += t1 - t
        lang, score = detect(doc)
        self._lang = (lang, round(score, 3))
        t2 = clock()
        self.seconds["language"] += t2 - t1
        if self.languages and lang not in self.languages:
            return self._drop("language", doc, source, lang), None
        words = None
        if "gopher" in self.active:
            lines = doc.split("\n")
            words = word_stats(np.frombuffer(doc.encode("utf-8", "surrogatepass"), np.uint8))
            rule = gopher_rule(doc, lines, *words, lang, self.quality)
            if rule is not None:
                self.seconds["gopher"] += clock() - t2
                return self._drop(rule, doc, source), None
        t3 = clock()
        self.seconds["gopher"] += t3 - t2
        if "c4" in self.active:
            before = doc
            doc = self._remove_lines_c4(doc, source)
            words = None if doc is not before else words
            rule = c4_page_rule(doc, self.quality)
            if rule is not None:
                self.seconds["c4"] += clock() - t3
                return self._drop(rule, doc, source), None
        t4 = clock()
        self.seconds["c4"] += t4 - t3
        if self._index is not None:
            if words is None:
                words = word_stats(np.frombuffer(doc.encode("utf-8", "surrogatepass"), np.uint8))
            if self._index.seen(words[0]) >= 0:
                self.seconds["near-dup"] += clock() - t4
                return self._drop("near_duplicate", doc, source), None
        self.seconds["near-dup"] += clock() - t4
        self.documents_out += 1
        self.bytes_out += _nbytes(doc)
        self.languages_seen[lang] += 1
        return None, doc

    def _remove_lines_c4(self, doc: str, source: str) -> str:
        doc, removed = _c4_lines(doc)
        for rule, lines in removed.items():
            self._count_lines(rule, lines, source)
        return doc

    def _count_lines(self, rule: str, lines: list[str], source: str) -> None:
        c = self.counts[rule]
        c.lines += len(lines)
        c.bytes += sum(_nbytes(line) + 1 for line in lines)  # and its newline
        for line in lines:
            if len(c.examples) >= EXAMPLES:
                break
            if all(e["text"] != line for e in c.examples):
                c.examples.append({"source": self.relative(source), "text": line[:EXCERPT]})

    def _drop(self, rule: str, doc: str, source: str, language: str | None = None) -> str:
        c = self.counts[rule]
        c.documents += 1
        c.bytes += _nbytes(doc)
        if len(c.examples) < EXAMPLES:
            example = {"source": self.relative(source), "text": doc[:EXCERPT]}
            if language is not None:
                example["language"] = language
            c.examples.append(example)
        return rule

    def relative(self, source: str) -> str:
        """A document's source as the report shows it: its path inside the corpus."""
        return os.path.relpath(source, self.root) if self.root and os.path.isabs(source) == os.path.isabs(
            self.root) else source

    # --- what was removed ---------------------------------------------------------------------

    def counts_by_rule(self) -> dict:
        """{rule: {documents, lines, bytes}} of the rules that removed something (meta.json's "filters")."""
        return {rule: {k: v for k, v in c.as_dict().items() if k != "examples"}
                for rule, c in self.counts.items() if c.documents or c.lines}

    def report(self) -> dict:
        """The report file's content (DIR/filters.json; docs/design.md describes it)."""
        return {
            "format": REPORT_FORMAT,
            "version": REPORT_VERSION,
            "settings": self.settings(),
            "documents_in": self.documents_in,
            "bytes_in": self.bytes_in,
            "documents_out": self.documents_out,
            "bytes_out": self.bytes_out,
            "languages": dict(self.languages_seen.most_common()),
            "rules": {rule: c.as_dict() for rule, c in self.counts.items()},
        }
