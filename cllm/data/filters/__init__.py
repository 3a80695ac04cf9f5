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

Memory: what grows with the corpus (the near-duplicate index, the boilerplate line hashes, the exact-duplicate
hashes of cllm/data/corpus.py) stays in memory up to --filter-memory-mb (256 MB): the near-dup index and the
boilerplate counter (which run in different passes) may take 3/4 of it each, the exact-duplicate hashes 1/4.
Past its share a part moves to files in a temporary directory next to the dataset (cllm/data/filters/spill.py),
with the same answers, so that the memory stops growing with the pages.

The report (DIR/filters.json, written by cllm/data/prepare.py; its format in docs/design.md) gives, per rule,
the documents, lines and UTF-8 bytes it removed and a few examples; DIR/documents.jsonl gives each
document's source, detected language and the rule that removed it (null: kept).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
import weakref
from collections import Counter
from dataclasses import dataclass

from cllm.config import option
from cllm.data.filters.boilerplate import BoilerplateCounter, remove_lines
from cllm.data.filters.language import classify_many, parse_languages, sample
from cllm.data.filters.neardup import NearDuplicateIndex
from cllm.data.filters.quality import (
    C4_LINE_RULES,
    C4_PAGE_RULES,
    GOPHER_RULES,
    PageStats,
    QualitySettings,
    gopher_rule_of_stats,
)
from cllm.data.filters.spill import MB, SpillDir
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
    filter_memory_mb: float = option(256, "memory (MB) the per-corpus state (near-dup index, line and duplicate "
                                          "hashes, the file list, document lengths) may take before it moves to a "
                                          "temporary directory in --out; the dataset is the same either way (0: on "
                                          "disk from the start)")


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
    b = options.filter_memory_mb
    if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b < 1 << 40:
        raise DataError(f"--filter-memory-mb must be a number of MB >= 0, got {b!r}; e.g. 256")


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


class RuleCount:
    """What one rule removed: whole documents, lines, their UTF-8 bytes, and a few examples."""

    def __init__(self):
        self.documents = 0
        self.lines = 0
        self.bytes = 0
        self.examples: list[dict] = []

    def as_dict(self) -> dict:
        return {"documents": self.documents, "lines": self.lines, "bytes": self.bytes, "examples": self.examples}


class DocumentLog:
    """Each document's (source, language or None, its probability, the rule that removed it or None), in order,
    kept in a temporary file (a JSON line each, FLUSH records at a time) rather than in memory: one record a
    document is the only part of the report that grows with the corpus. Iterating reads them back."""

    FLUSH = 4096

    def __init__(self):
        self._file = tempfile.TemporaryFile("w+", encoding="ascii")  # the file is deleted when closed
        self.close = weakref.finalize(self, self._file.close)  # closed with the log: no unclosed-file warning
        self._pending: list[str] = []
        self.count = 0

    def append(self, record: tuple) -> None:
        self._pending.append(json.dumps(record))  # ASCII escapes: a path's lone surrogates round-trip
        self.count += 1
        if len(self._pending) >= self.FLUSH:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._file.write("\n".join(self._pending) + "\n")
            self._pending = []

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        self._flush()
        self._file.seek(0)
        try:
            for line in self._file:
                yield tuple(json.loads(line))
        finally:  # the next append goes at the end, even after a read left off early
            self._file.seek(0, os.SEEK_END)


class FilterPipeline:
    """The filters of one corpus (see the module doc). `apply_batch([(doc, source, site), ...])` gives each
    document to keep (maybe with lines removed) or None; `apply(doc, source, site)` one document's."""

    def __init__(self, options: FilterOptions, source_kind: str, root: str, spill: SpillDir | None = None):
        check_options(options)
        self.source_kind = source_kind
        self.active = resolve_filters(options.filters, source_kind)
        self.languages = parse_languages(options.languages)
        self.threshold = float(options.near_dup_threshold)
        self.min_pages = int(options.boilerplate_min_pages)
        self.quality = QualitySettings()
        self.root = root
        self.memory = int(options.filter_memory_mb * MB)  # bytes: 3/4 for the near-dup index or line hashes
        self.spill = spill or SpillDir()  # where state beyond self.memory goes (prepare's: in DIR)
        self.boilerplate: set | None = None  # keys of boilerplate lines, once counted
        self._decisions: bytearray | None = None  # per document: 0 (kept) or 1 + the index in RULES of its rule
        self._counting: tuple = ()  # CPU and wall seconds the boilerplate counting took
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
        if getattr(self, "documents", None) is not None:
            self.documents.close()  # an earlier, unfinished first pass's
        self.documents = DocumentLog()  # each document's record, on disk
        # CPU seconds per filter (and the counting pass's, if any), for bench/prepare.py: the process's CPU time,
        # not the wall clock's, which counts the time other processes take on a shared machine
        self.seconds: Counter = Counter()
        self.wall: Counter = Counter()  # wall seconds per filter, as `seconds` (the kernels use every core)
        if self._counting:
            self.seconds["boilerplate counting"], self.wall["boilerplate counting"] = self._counting
        self._pass = bytearray()  # the decisions of the pass under way (a byte a document, not a list's 8)
        self._close_index()
        self._index = (NearDuplicateIndex(self.threshold, limit=self.memory * 3 // 4, spill=self.spill)
                       if "near-dup" in self.active else None)

    def _close_index(self) -> None:
        if getattr(self, "_index", None) is not None:
            self._index.close()
        self._index = None

    def close(self) -> None:
        """Delete the files of the state on disk, if any (prepare calls it when done, or on error)."""
        self._close_index()
        self.spill.close()

    # --- the passes ---------------------------------------------------------------------------

    @property
    def needs_boilerplate_pass(self) -> bool:
        return "boilerplate" in self.active and self.boilerplate is None

    def count_boilerplate(self, pages) -> None:
        """The pass before the others: `pages` yields (document, site id or None)."""
        counter = BoilerplateCounter(self.min_pages, self.memory * 3 // 4, self.spill)
        spent = [0.0, 0.0]  # the counting's own CPU and wall seconds, not the reading's
        for doc, site in pages:
            if site is not None:
                t = self._now()
                counter.add(site, doc)
                spent = [s + b - a for s, a, b in zip(spent, t, self._now())]
        t = self._now()
        self.boilerplate = counter.finish()
        self._counting = tuple(s + b - a for s, a, b in zip(spent, t, self._now()))
        self.seconds["boilerplate counting"], self.wall["boilerplate counting"] = self._counting

    def begin_pass(self) -> None:
        if self._decisions is None:
            self._reset()
        self._i = 0

    def end_pass(self, complete: bool) -> None:
        """After a pass; `complete`: it read every document (only then are its decisions final)."""
        if self._decisions is None and complete:
            self._decisions = self._pass
            self._close_index()  # its signatures are no longer needed

    def apply(self, doc: str, source: str, site: int | None) -> str | None:
        """apply_batch of one document."""
        return self.apply_batch([(doc, source, site)])[0]

    def apply_batch(self, items: list[tuple[str, str, int | None]]) -> list[str | None]:
        """For each (document, source, site id or None) of a batch, in order: the document to keep (maybe with
        lines removed) or None. The same decisions and report whatever the batches (tests/test_filters.py);
        a batch is what the kernels run over at once (cllm/data/corpus.py sends BATCH documents)."""
        i = self._i
        self._i += len(items)
        if self._decisions is not None:  # a later pass: the first pass's decisions, the same line removals
            keep = [k for k in range(len(items)) if self._decisions[i + k] == 0]
            docs = self._remove_lines([(items[k][0], items[k][2]) for k in keep])
            out: list[str | None] = [None] * len(items)
            for k, doc in zip(keep, docs):
                out[k] = doc
            return out
        return self._decide(items)

    def _timed(self, name: str, t: tuple[float, float]) -> tuple[float, float]:
        """Adds the CPU and wall seconds since t (a _now()) to filter `name`'s; returns now."""
        now = self._now()
        self.seconds[name] += now[0] - t[0]
        self.wall[name] += now[1] - t[1]
        return now

    def _now(self) -> tuple[float, float]:
        return self.clock(), time.perf_counter()

    def _boilerplate(self, items: list[tuple[str, int | None]]) -> list[tuple[str, list[str]]]:
        """For each (document, site id or None): (the document without its site's boilerplate lines, those).
        Python's line loop: a kernel over the batch (hashing the stripped lines) measured no faster."""
        if "boilerplate" in self.active and self.boilerplate:
            return [remove_lines(site, doc, self.boilerplate) if site is not None else (doc, []) for doc, site in items]
        return [(doc, []) for doc, _ in items]

    def _remove_lines(self, items: list[tuple[str, int | None]]) -> list[str]:
        """A later pass: the first pass's boilerplate and C4 line removals again (same text, same result)."""
        docs = [doc for doc, _ in self._boilerplate(items)]
        if "c4" in self.active and docs:
            pages = PageStats(docs, words=False)
            docs = [pages.c4_lines(k)[0] for k in range(len(docs))]
        return docs

    def _decide(self, items: list[tuple[str, str, int | None]]) -> list[str | None]:
        """The first pass's work on a batch: each filter runs over the documents the earlier ones kept."""
        n = len(items)
        docs: list[str | None] = [doc for doc, _, _ in items]
        rules: list[str | None] = [None] * n
        langs: list[tuple] = [(None, None)] * n
        sources = [source for _, source, _ in items]
        for doc in docs:
            self.documents_in += 1
            self.bytes_in += _nbytes(doc)
        t = self._now()
        for k, (doc, removed) in enumerate(self._boilerplate([(doc, site) for doc, _, site in items])):
            source = sources[k]
            if removed:
                self._count_lines("boilerplate", removed, source)
                if not doc.strip():
                    rules[k] = self._drop("boilerplate", doc, source)
            docs[k] = doc
        t = self._timed("boilerplate", t)
        alive = [k for k in range(n) if rules[k] is None]
        for k, (lang, score) in zip(alive, classify_many([sample(docs[k]) for k in alive])):
            langs[k] = (lang, round(score, 3))
            if self.languages and lang not in self.languages:
                rules[k] = self._drop("language", docs[k], sources[k], lang)
        t = self._timed("language", t)
        alive = [k for k in alive if rules[k] is None]
        if ("gopher" in self.active or "c4" in self.active) and alive:
            pages = PageStats([docs[k] for k in alive])
            t = self._timed("gopher", t)  # the kernel's pass serves both: Gopher's line statistics come first
            if "gopher" in self.active:
                for j, k in enumerate(alive):
                    rule = gopher_rule_of_stats(pages.stats[j], langs[k][0], self.quality)
                    if rule is not None:
                        rules[k] = self._drop(rule, docs[k], sources[k])
            t = self._timed("gopher", t)
            if "c4" in self.active:
                for j, k in enumerate(alive):
                    if rules[k] is not None:
                        continue
                    doc, removed, rule = pages.c4(j, self.quality)
                    for name, lines in removed.items():
                        self._count_lines(name, lines, sources[k])
                    docs[k] = doc
                    if rule is not None:
                        rules[k] = self._drop(rule, doc, sources[k])
            t = self._timed("c4", t)
            alive = [k for k in alive if rules[k] is None]
        if self._index is not None and alive:
            matches = self._index.seen_batch(self._index.signatures_of([docs[k] for k in alive]))
            for k, match in zip(alive, matches):
                if match >= 0:
                    rules[k] = self._drop("near_duplicate", docs[k], sources[k])
            self._timed("near-dup", t)
        out: list[str | None] = [None] * n
        for k in range(n):
            self._pass.append(0 if rules[k] is None else 1 + RULES.index(rules[k]))
            self.documents.append((sources[k], *langs[k], rules[k]))
            if rules[k] is None:
                self.documents_out += 1
                self.bytes_out += _nbytes(docs[k])
                self.languages_seen[langs[k][0]] += 1
                out[k] = docs[k]
        return out

    def _count_lines(self, rule: str, lines: list[str], source: str) -> None:
        c = self.counts[rule]
        c.lines += len(lines)
        if lines:  # each line and its newline
            c.bytes += _nbytes("\n".join(lines)) + 1
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
