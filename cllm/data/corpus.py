"""Load a corpus: a file or a directory tree of text, Markdown, HTML, PDF and JSONL files.

    corpus = load_corpus("books/", lowercase=True)   # any CorpusOptions field (below)
    for doc in corpus: ...            # streams: one document in memory at a time
    corpus.stats                      # documents, characters, lines, tokens, vocabulary, ...

A directory is walked recursively in sorted order (deterministic); hidden files and directories
are skipped (a crawl keeps its state in OUT_DIR/.crawl/), as are binary files and unsupported
extensions, each counted in `stats.skipped` and reported in one warning. A crawl's output
directory (`manifest.jsonl` + `pages/`) is read from `pages/` only, each page with its site (the host
of its URL in the manifest).

Documents: one per file, one per line of a .jsonl file (its "text" field; its "url", if any, gives its
site). Exact duplicate documents (after cleaning) are dropped and counted. With FilterOptions (`prepare`'s
flags), the corpus filters of cllm/data/filters/ run next. Iterating twice gives the same documents.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from array import array
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np
from tqdm import tqdm

from cllm.config import option
from cllm.data.clean import CleaningOptions, clean_owned, options_of
from cllm.data.errors import EmptyCorpusError
from cllm.data.files import (
    FileList,
    crawl_pages,
    decode_text,
    find_files,
    looks_binary,
    read_bytes,
    read_html,
    read_pdf,
)
from cllm.data.filters import FilterOptions, FilterPipeline, check_options
from cllm.data.filters.spill import MB, DiskDict, DiskSet, SpillDir
from cllm.errors import DataError


@dataclass
class CorpusOptions(CleaningOptions):
    """How a corpus is read: its encoding, de-duplication, progress bars and the cleaning flags; the
    flags of `tokenizer train` (and, with the dataset's own, of `prepare`), each default written here once."""

    encoding: str = option("auto", "auto (UTF-8, else a detected encoding) or utf-8 (invalid UTF-8 is an error)")
    dedupe: bool = option(True, "drop documents seen before (exact duplicates)")
    progress: bool = option(True, "show progress bars")


# the corpus filters' batches (_filtered): enough pages for both cores to share each kernel call, few MB
FILTER_BATCH = 256
FILTER_BATCH_CHARS = 4_000_000


def _filtered(filters: FilterPipeline, docs, stats: "CorpusStats"):
    """The documents that `filters` keep of `docs` ((path, document, site) each), as it gives them: FILTER_BATCH
    documents (or FILTER_BATCH_CHARS characters) at a time, so that its kernels run once per batch and on every
    core, while memory holds one batch, not the corpus."""
    batch: list = []
    size = 0
    for path, doc, site in docs:
        batch.append((doc, path, site))
        size += len(doc)
        del doc
        if len(batch) >= FILTER_BATCH or size >= FILTER_BATCH_CHARS:
            yield from _kept(filters.apply_batch(batch), stats)
            batch, size = [], 0
    if batch:
        yield from _kept(filters.apply_batch(batch), stats)


def _kept(docs: list, stats: "CorpusStats"):
    for doc in docs:
        if doc is None:
            stats.filtered += 1
        else:
            yield doc


@dataclass
class CorpusStats:
    """What the original C loader printed, plus what was skipped. Filled by a full pass over the corpus."""

    files: int = 0
    documents: int = 0
    characters: int = 0
    lines: int = 0
    tokens: int = 0  # whitespace-separated words
    vocabulary: int = 0  # distinct whitespace-separated words
    duplicates: int = 0
    filtered: int = 0  # documents the corpus filters dropped (cllm/data/filters/)
    empty: int = 0  # documents with no text left after cleaning
    bytes: int = 0
    skipped: dict = field(default_factory=dict)  # reason -> number of files
    decoded_with_fallback: int = 0  # files that were not UTF-8

    @property
    def avg_chars_per_document(self) -> float:
        return self.characters / self.documents if self.documents else 0.0

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["avg_chars_per_document"] = round(self.avg_chars_per_document, 1)
        return d

    def summary(self) -> str:
        s = (
            f"{self.documents:,} documents from {self.files:,} files, {self.characters:,} characters, "
            f"{self.lines:,} lines, {self.tokens:,} words, vocabulary {self.vocabulary:,}, "
            f"{self.avg_chars_per_document:,.0f} characters per document"
        )
        extra = [f"{n} {reason}" for reason, n in sorted(self.skipped.items())]
        if self.duplicates:
            extra.append(f"{self.duplicates} duplicate documents dropped")
        if self.filtered:
            extra.append(f"{self.filtered} documents filtered out")
        if self.empty:
            extra.append(f"{self.empty} empty documents dropped")
        return s + (" (skipped: " + ", ".join(extra) + ")" if extra else "")


def _count_words(doc: str, vocab: set) -> int:
    """Whitespace-separated words of doc (added to vocab), split ~64 KB at a time at a line or
    word boundary, so that a big document never becomes one list of all its words."""
    n, pos, words = len(doc), 0, 0
    while pos < n:
        end = doc.find("\n", pos + 65536)
        if end < 0 or end > pos + (1 << 20):  # no newline nearby: cut at a space instead
            end = doc.find(" ", pos + 65536)
        end = n if end < 0 else end + 1
        part = doc[pos:end].split()
        words += len(part)
        vocab.update(part)
        pos = end
    return words


class Corpus:
    """A re-iterable stream of cleaned documents, with statistics filled in by each full pass."""

    def __init__(self, path, options: CorpusOptions, spill_parent: str | None = None):
        self.path = os.fspath(path)
        self._sites: dict = {}  # host -> site id
        filtering = isinstance(options, FilterOptions)  # prepare's options: a memory budget and a spill directory
        spill, files_limit = None, None
        if filtering:
            check_options(options)
            spill = SpillDir(spill_parent)  # shared with the filters (DIR/filters-spill-*.tmp)
            memory = int(options.filter_memory_mb * MB)
            files_limit = memory // 4 // FileList.PER_FILE  # files (and manifest pages) in memory, past it on disk
            self._lengths_limit = memory // 8 // 8  # document lengths in memory (8 bytes each)
        # {page file: site id or None} of a crawl's output (a dict, or a DiskDict past the limit), else {}
        pages = crawl_pages(self.path, self._site_id, spill, files_limit)
        try:
            root, files, skipped = find_files(self.path, spill, files_limit, pages)
            web = bool(pages)
        finally:
            if isinstance(pages, DiskDict):
                pages.close()
        del pages
        self.filters = FilterPipeline(options, "web" if web else "text", root, spill) if filtering else None
        self.files = files  # FileList: (path, kind) when iterated; with_sites() adds each file's site id
        self._skipped = skipped
        self.options = options
        self.cleaning = options.cleaning()  # {flag: bool}, as meta.json records it
        self.encoding = options.encoding
        self.dedupe = options.dedupe
        self.progress = options.progress
        self.stats = CorpusStats()
        self.doc_lengths = DocLengths()  # characters of each document, in order (for splits): 8 bytes a document
        self._complete = False

    def _new_lengths(self) -> "DocLengths":
        if self.filters is None:
            return DocLengths()
        return DocLengths(self.filters.spill, self._lengths_limit)

    def __iter__(self):
        return self._documents()

    def _site_id(self, url) -> int | None:
        """A small integer for the host of `url` (None without one): the boilerplate filter's groups."""
        if not isinstance(url, str):
            return None
        host = urlsplit(url).hostname
        return None if host is None else self._sites.setdefault(host, len(self._sites))

    @property
    def documents(self) -> list[str]:
        """All documents as a list (holds the whole corpus in memory; iterate to stream)."""
        return list(self)

    def _raw_documents(self, skipped: Counter, stats: CorpusStats):
        """Uncleaned documents, file by file, as (path, [text], bytes, site id or None): the caller pops
        the text out of the list, so that this generator does not keep it (nor the file's bytes) alive
        while the document is cleaned and tokenized."""
        for path, kind, site in self.files.with_sites():
            site = None if site < 0 else site
            if kind == "pdf":
                yield path, [read_pdf(path)], os.path.getsize(path), site
                continue
            raw = read_bytes(path)
            nbytes = len(raw)
            if kind == "html":
                box = [read_html(raw, path)]
                del raw
                yield path, box, nbytes, site
                continue
            if looks_binary(raw):
                skipped["binary"] += 1
                continue
            text, fallback = decode_text(raw, path, self.encoding)
            del raw
            stats.decoded_with_fallback += fallback
            if kind == "jsonl":
                for lineno, line in enumerate(text.split("\n"), 1):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(
                            f"{path}:{lineno} is not valid JSON ({exc.msg}); each line of a .jsonl file must be "
                            'one JSON object with a "text" field'
                        ) from None
                    if isinstance(rec, dict) and isinstance(rec.get("text"), str):
                        yield path, [rec["text"]], 0, self._site_id(rec.get("url"))
                    else:
                        skipped["jsonl records without text"] += 1
                stats.bytes += nbytes
            else:
                box = [text]
                del text
                yield path, box, nbytes, site

    def _cleaned(self, skipped: Counter, stats: CorpusStats, bar=None):
        """(path, cleaned document, site) of every document, exact duplicates and empty ones counted and left out."""
        seen = SeenDocuments(self.filters)
        last_path = None
        for path, box, nbytes, site in self._raw_documents(skipped, stats):
            if bar is not None and path != last_path:
                bar.update(os.path.getsize(last_path) if last_path else 0)
                last_path = path
            stats.bytes += nbytes
            doc = clean_owned(box, self.options)
            if not doc.strip():
                stats.empty += 1
                continue
            if self.dedupe and seen.add(doc):
                stats.duplicates += 1
                continue
            yield path, doc, site
            del doc
        seen.close()  # (a pass left off early leaves its file to the spill directory's removal)
        if bar is not None and last_path:
            bar.update(os.path.getsize(last_path))

    def _documents(self):
        filters = self.filters
        if filters is not None and filters.needs_boilerplate_pass:  # every page's lines counted first
            filters.count_boilerplate((doc, site) for _, doc, site in self._cleaned(Counter(), CorpusStats()))
        stats = CorpusStats(files=len(self.files))
        skipped = Counter(self._skipped)
        vocab: set = set()
        lengths = self._new_lengths()
        total = sum(os.path.getsize(p) for p, _ in self.files)
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            desc="reading corpus",
            disable=None if self.progress else True,
            leave=False,
        ) as bar:
            if filters is not None:
                filters.begin_pass()
            docs = self._cleaned(skipped, stats, bar)
            for doc in (_filtered(filters, docs, stats) if filters is not None else (d for _, d, _ in docs)):
                stats.documents += 1
                stats.characters += len(doc)
                lengths.append(len(doc))
                if not self._complete:  # the word statistics once: they cost memory and time
                    stats.lines += doc.count("\n") + (not doc.endswith("\n"))
                    stats.tokens += _count_words(doc, vocab)
                yield doc
                del doc  # not alive while the next file is read and cleaned
        if filters is not None:
            filters.end_pass(complete=True)
        self._end_pass(stats, skipped, vocab, lengths)

    def _end_pass(self, stats: "CorpusStats", skipped: Counter, vocab: set, lengths: "DocLengths") -> None:
        """After a full pass: the statistics (a later pass keeps the first one's word counts), the
        skipped files' warning (once), and an empty corpus refused."""
        stats.skipped = dict(skipped)
        if self._complete:  # a later pass: keep the first pass's word statistics
            for name in ("lines", "tokens", "vocabulary"):
                setattr(stats, name, getattr(self.stats, name))
        else:
            stats.vocabulary = len(vocab)
        self.stats = stats
        self.doc_lengths.close()  # an earlier pass's (its length is still known)
        self.doc_lengths = lengths
        if not self._complete:
            self._complete = True
            nskip = sum(skipped.values())
            if nskip:
                warnings.warn(
                    f"{self.path}: skipped " + ", ".join(f"{n} {r}" for r, n in sorted(skipped.items())), stacklevel=3
                )
        if stats.documents == 0:
            if not self.files:
                raise EmptyCorpusError(
                    f"{self.path} holds no text files (.txt, .md, .html, .pdf, .jsonl or text without an "
                    "extension); point to a directory with text"
                )
            raise EmptyCorpusError(
                f"the corpus at {self.path} is empty after cleaning ({stats.files} file(s), {stats.empty} empty, "
                f"{stats.duplicates} duplicate, {stats.filtered} filtered out); give it files with text or relax the "
                "cleaning flags" + (" or the filters (--filters none, --languages)" if stats.filtered else "")
            )


class DocLengths:
    """The characters of each document, in order (prepare's split, cllm/data/prepare.py): an array of 8 bytes a
    document up to `limit` of them (no limit without `spill`), past it written to a flat int64 file in `spill`
    (a SpillDir) a block of `limit` at a time, so that memory stops growing with the documents."""

    MIN_BLOCK = 4096  # lengths a block holds at least (a tiny budget: not one write a document)
    CHUNK = 1 << 16  # lengths chunks() reads from the file at a time

    def __init__(self, spill: SpillDir | None = None, limit: int | None = None):
        self._buf = array("q")
        self._spill = spill
        self._limit = None if spill is None or limit is None else max(limit, self.MIN_BLOCK)
        self._path: str | None = None
        self._file = None
        self._on_disk = 0

    def append(self, n: int) -> None:
        self._buf.append(n)
        if self._limit is not None and len(self._buf) >= self._limit:
            if self._file is None:
                self._path = self._spill.file("lengths")
                self._file = open(self._path, "wb")  # noqa: SIM115 (appended to until close)
            self._buf.tofile(self._file)
            self._on_disk += len(self._buf)
            self._buf = array("q")

    def __len__(self) -> int:
        return self._on_disk + len(self._buf)

    def chunks(self):
        """The lengths in order, as int64 arrays of up to CHUNK (all of them in one while in memory)."""
        if self._file is not None:
            self._file.flush()
            for start in range(0, self._on_disk, self.CHUNK):
                yield np.fromfile(self._path, np.int64, min(self.CHUNK, self._on_disk - start), offset=8 * start)
        if self._buf:
            yield np.frombuffer(self._buf, np.int64)

    def __iter__(self):
        for chunk in self.chunks():
            yield from chunk.tolist()

    def close(self) -> None:
        """Delete the file, if any (len() still answers)."""
        if self._file is not None:
            self._file.close()
            os.unlink(self._path)
            self._file = None
            self._buf = array("q")


class SeenDocuments:
    """The exact-duplicate check of one pass: a 16-byte hash per document, in a set (~91 bytes each, measured
    with tracemalloc) up to a quarter of the filters' memory budget (FilterPipeline.memory; no limit without
    the filters), then in a SQLite table in their spill directory (cllm/data/filters/spill.py)."""

    PER_HASH = 91

    def __init__(self, filters: FilterPipeline | None = None):
        self._set: set = set()
        self._disk: DiskSet | None = None
        self._filters = filters
        self._limit = None if filters is None else filters.memory // 4 // self.PER_HASH  # hashes in memory

    def add(self, doc: str) -> bool:
        """Whether an identical document was seen (a 16-byte hash of it joins the seen otherwise)."""
        h = hashlib.blake2b(digest_size=16)
        for i in range(0, len(doc), 1 << 16):  # not the whole document's bytes at once
            h.update(doc[i : i + (1 << 16)].encode("utf-8", "surrogatepass"))
        digest = h.digest()
        if self._disk is not None:
            return self._disk.add(digest)
        if digest in self._set:
            return True
        self._set.add(digest)
        if self._limit is not None and len(self._set) > self._limit:
            self._disk = DiskSet(self._filters.spill.file("seen"), max(self._filters.memory // 8, 1 << 20))
            self._disk.add_many(sorted(self._set))
            self._set = set()
        return False

    def close(self) -> None:
        if self._disk is not None:
            self._disk.close()
            self._disk = None


def open_corpus(path, **options) -> Corpus:
    """A Corpus over `path` without reading it yet (the first full iteration fills `stats`); `options` are
    CorpusOptions' fields (the cleaning flags, encoding, dedupe, progress)."""
    return corpus_at(path, options_of(CorpusOptions, options, "corpus option"))


def corpus_at(path, options: CorpusOptions, spill_parent: str | None = None) -> Corpus:
    """open_corpus for options given as a CorpusOptions (or a subclass: cllm/data/prepare.py's PrepareOptions, whose
    state past --filter-memory-mb goes to a temporary directory in `spill_parent`: prepare's DIR)."""
    if options.encoding not in ("auto", "utf-8"):
        raise DataError(
            f"encoding {options.encoding!r} is not supported; use 'auto' (UTF-8, else detected) or 'utf-8' (strict)"
        )
    return Corpus(path, options, spill_parent)


def load_corpus(path, **options) -> Corpus:
    """Open `path` and read it once to fill `stats` (and to raise EmptyCorpusError early); `options` are
    CorpusOptions' fields. The result streams its documents when iterated."""
    corpus = open_corpus(path, **options)
    for _ in corpus:
        pass
    return corpus
