"""Finding and reading a corpus's files: which files a path holds (recursively, sorted; hidden, binary
and unsupported ones skipped and counted), and each one's text (UTF-8 or a detected encoding, HTML's
main text, PDF text through pypdf)."""

from __future__ import annotations

import codecs
import heapq
import itertools
import json
import os
from collections import Counter

from charset_normalizer import from_bytes

from cllm import kinds
from cllm.data.clean import normalize_newlines
from cllm.data.errors import CorpusNotFoundError, TextDecodeError
from cllm.data.filters.spill import DiskDict, SpillDir
from cllm.errors import DataError, MissingDependencyError

TEXT_EXT = {".txt", ".md", ".markdown", ".text", ".rst", ""}
HTML_EXT = {".html", ".htm", ".xhtml"}
PDF_EXT = {".pdf"}
JSONL_EXT = {".jsonl"}


def _file_kind(name: str) -> str | None:
    ext = os.path.splitext(name)[1].lower()
    if ext in TEXT_EXT:
        return "text"
    if ext in HTML_EXT:
        return "html"
    if ext in PDF_EXT:
        return "pdf"
    if ext in JSONL_EXT:
        return "jsonl"
    return None


def find_files(path: str, spill: SpillDir | None = None, limit: int | None = None,
               pages=None) -> tuple[str, FileList, Counter]:
    """(root, FileList of the files in order by path components, Counter of skipped reasons) for a file or a
    directory. `spill`, `limit`: past `limit` files the list moves to disk (FileList); `pages`: crawl_pages'
    {page file: site id}, each file's site id (-1: none)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CorpusNotFoundError(f"corpus path {path} does not exist; give a text file or a directory of text files")
    skipped: Counter = Counter()
    if os.path.isfile(path):
        kind = _file_kind(os.path.basename(path)) or "text"  # a file named explicitly is read as text
        if not os.access(path, os.R_OK):
            raise CorpusNotFoundError(f"cannot read {path}: permission denied; check its permissions")
        files = FileList(os.path.dirname(path))
        files.append(path, kind)
        files.finish()
        return files.root, files, skipped
    if not os.path.isdir(path):
        raise CorpusNotFoundError(f"corpus path {path} is neither a file nor a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise CorpusNotFoundError(f"cannot read directory {path}: permission denied; check its permissions")
    root = path
    if is_crawl_output(path):
        root = os.path.join(path, "pages")  # a crawl's output: the manifest is not training text
    files = FileList(root, spill, limit)
    site_of = pages.get if pages else (lambda _: None)  # a dict's or a DiskDict's
    for full, kind in _walk(root, skipped):
        site = site_of(full)
        files.append(full, kind, -1 if site is None else site)
    files.finish()
    return root, files, skipped


def _walk(root: str, skipped: Counter):
    """(path, kind) of the supported files under `root`, folder by folder in no particular order (FileList sorts
    them): os.scandir's entries one at a time, where os.walk lists a whole folder (a crawl's pages/: every page's
    name at once). As os.walk: unreadable folders and symbolic links to folders are passed; hidden files and
    folders, folders of another kind (data/digits: images) and unsupported files are counted in `skipped`."""
    stack = [root]
    while stack:
        top = stack.pop()
        try:
            entries = os.scandir(top)
        except OSError:
            continue
        with entries:
            for entry in entries:
                name = entry.name
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                if is_dir:
                    if name.startswith("."):
                        skipped["hidden"] += 1
                        continue
                    kind = kinds.claimed_folder(entry.path)
                    if kind is not None:
                        skipped[f"{kind} folders"] += 1
                    elif not entry.is_symlink():
                        stack.append(entry.path)
                    continue
                if name.startswith("."):
                    skipped["hidden"] += 1
                    continue
                kind = _file_kind(name)
                if kind is None:
                    skipped["unsupported"] += 1
                    continue
                yield entry.path, kind


class FileList:
    """A corpus's files, (path, kind, site id or -1) each, in order by path components (a folder's files sit
    where its name sorts, as a sorted walk gives them). In a list up to `limit` files (no limit without `spill`);
    past it (prepare's --filter-memory-mb, cllm/data/corpus.py) in sorted runs of `limit` files in `spill` (a
    SpillDir), merged into one file of a JSON line a file, read back in each pass: the memory stops growing with
    the files. Iterating gives (path, kind); with_sites() gives (path, kind, site id)."""

    PER_FILE = 200  # bytes a file takes in the list: path string ~110, tuple 64, list slot 8 (tracemalloc)
    MIN_RUN = 4096  # files a run holds at least (a tiny budget: not one open file a few pages at the merge)

    def __init__(self, root: str, spill: SpillDir | None = None, limit: int | None = None):
        self.root = root
        self._prefix = len(os.path.join(root, ""))  # every path is root joined with its relative path
        self._items: list = []
        self._runs: list[str] = []  # sorted runs on disk, while appending
        self._file: str | None = None  # the whole list on disk, once finished past the limit
        self._spill = spill
        self._limit = None if spill is None or limit is None else max(limit, self.MIN_RUN)
        self._n = 0

    def _key(self, record) -> list[str]:
        return record[0][self._prefix:].split(os.sep)

    def append(self, path: str, kind: str, site: int = -1) -> None:
        self._items.append((path, kind, site))
        self._n += 1
        if self._limit is not None and len(self._items) >= self._limit:
            self._items.sort(key=self._key)
            self._runs.append(self._write(self._items, "files-run"))
            self._items = []

    def finish(self) -> None:
        """Put the files in order, after the last append."""
        if not self._runs:
            # the walk's order may be that order already: checked one key at a time, as sort(key=) holds every
            # file's key at once (~150 bytes a file)
            if any(a > b for a, b in itertools.pairwise(map(self._key, self._items))):
                if any(os.sep in path[self._prefix:] for path, _, _ in self._items):
                    self._items.sort(key=self._key)
                else:  # one folder (a crawl's pages/): the paths' order is that order, and needs no key a file
                    self._items.sort()
            return
        if self._items:
            self._items.sort(key=self._key)
            self._runs.append(self._write(self._items, "files-run"))
            self._items = []
        self._file = self._write(heapq.merge(*map(self._read, self._runs), key=self._key), "files")
        for run in self._runs:
            os.unlink(run)
        self._runs = []

    def _write(self, records, name: str) -> str:
        path = self._spill.file(name)
        with open(path, "w", encoding="utf-8") as f:
            for record in records:  # JSON: any file name (newlines, undecodable bytes as surrogates) reads back
                f.write(json.dumps(record) + "\n")
        return path

    @staticmethod
    def _read(path: str):
        with open(path, encoding="utf-8") as f:
            for line in f:
                yield tuple(json.loads(line))

    def with_sites(self):
        """(path, kind, site id or -1) of each file, in order."""
        return iter(self._items) if self._file is None else self._read(self._file)

    def __iter__(self):
        return ((path, kind) for path, kind, _ in self.with_sites())

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    def __eq__(self, other) -> bool:  # a list of (path, kind) compares with one (tests)
        return list(self) == list(other)

    __hash__ = None


def is_crawl_output(path: str) -> bool:
    """Whether `path` is a crawl's output folder (cllm/scraper/output.py: manifest.jsonl and pages/)."""
    return os.path.isfile(os.path.join(path, "manifest.jsonl")) and os.path.isdir(os.path.join(path, "pages"))


def crawl_pages(path: str, site_of=lambda url: url, spill: SpillDir | None = None, limit: int | None = None):
    """{page file's path (as find_files gives it): site_of(its URL)} from a crawl's manifest; {} for anything else.
    Lines that are not JSON objects with "file" and "url" (a torn last line, a duplicate's record) are passed; a
    file named twice keeps its last record's site. Past `limit` pages (with `spill`) the map moves to a DiskDict
    in `spill` (the caller closes it), so that the manifest is never held whole.
    (cllm/data/corpus.py asks for its host's site id: the URLs themselves are not kept, ~100 bytes a page.)"""
    if not os.path.isdir(path) or not is_crawl_output(path):
        return {}
    pages: dict = {}
    disk = None
    with open(os.path.join(path, "manifest.jsonl"), encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("file"), str) and isinstance(rec.get("url"), str):
                pages[os.path.join(path, *rec["file"].split("/"))] = site_of(rec.get("final_url") or rec["url"])
                if spill is not None and limit is not None and len(pages) > max(limit, FileList.MIN_RUN):
                    if disk is None:
                        disk = DiskDict(spill.file("pages"), 1 << 20)
                    disk.update(pages.items())  # in the manifest's order: a later record replaces an earlier
                    pages = {}
    if disk is None:
        return pages
    disk.update(pages.items())
    return disk


def read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise CorpusNotFoundError(f"{path} disappeared while reading the corpus") from None
    except OSError as exc:
        raise CorpusNotFoundError(f"cannot read {path}: {exc.strerror}; check its permissions") from None


def decode_text(raw: bytes, path: str, encoding: str) -> tuple[str, bool]:
    """(text, used_fallback). UTF-8 with the BOM stripped; else (encoding "auto", CorpusOptions') a detected
    encoding; "utf-8" makes invalid UTF-8 an error. CRLF/CR become LF."""
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[3:]
    fallback = False
    try:
        if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            text = raw.decode("utf-16")
        else:
            text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if encoding != "auto":
            raise TextDecodeError(
                f"{path} is not valid UTF-8 (byte {exc.start}: {raw[exc.start : exc.start + 4]!r}); convert it to "
                "UTF-8 (e.g. `iconv -f latin1 -t utf-8`) or pass --encoding auto to detect its encoding"
            ) from None
        results = from_bytes(raw)
        best = results.best()
        if best is not None:
            # single-byte code pages often tie (same chaos and coherence): prefer windows-1252,
            # the most common one for Western text, as browsers do for unlabeled pages
            ties = [m for m in results if m.chaos == best.chaos and m.coherence == best.coherence]
            best = next((m for m in ties if m.encoding == "cp1252"), best)
        if best is None:
            raise TextDecodeError(
                f"{path} is not valid UTF-8 and its encoding could not be detected; convert it to UTF-8 "
                "(e.g. with iconv)"
            ) from None
        text = str(best)
        fallback = True
    return normalize_newlines(text), fallback


def looks_binary(raw: bytes) -> bool:
    head = raw[:8192]
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False
    return b"\x00" in head


def read_pdf(path: str) -> str:
    try:
        import pypdf  # noqa: PLC0415 (optional: the [pdf] extra)
    except ImportError:
        raise MissingDependencyError(
            f"reading the PDF file {path} needs pypdf; install it with `pip install 'cllm[pdf]'` "
            "(or `pip install pypdf`)"
        ) from None
    try:
        reader = pypdf.PdfReader(path)
        return "\n\n".join((page.extract_text() or "") for page in reader.pages)
    except Exception as exc:  # pypdf raises many types for damaged files
        raise DataError(
            f"cannot read the PDF file {path} ({exc.__class__.__name__}: {exc}); it may be damaged or encrypted, "
            "remove it from the corpus"
        ) from None


def read_html(raw: bytes, path: str) -> str:
    # imported here: costly at start-up (~40 ms) for every corpus reader, and only HTML files need it; and
    # optional (a CLLM without cllm/scraper/ reads HTML too)
    try:
        from cllm.scraper.extract import extract_html  # noqa: PLC0415
    except ImportError:  # the crawler's extractor is the one to use; lxml's text as a fallback
        import lxml.html  # noqa: PLC0415

        doc = lxml.html.fromstring(raw or b"<html></html>")
        for bad in doc.xpath("//script|//style|//noscript|//template"):
            bad.drop_tree()
        return doc.text_content()
    return extract_html(raw, url=None).text
