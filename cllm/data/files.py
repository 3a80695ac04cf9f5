"""Finding and reading a corpus's files: which files a path holds (recursively, sorted; hidden, binary
and unsupported ones skipped and counted), and each one's text (UTF-8 or a detected encoding, HTML's
main text, PDF text through pypdf)."""

from __future__ import annotations

import codecs
import itertools
import json
import os
from collections import Counter

from charset_normalizer import from_bytes

from cllm import kinds
from cllm.data.clean import normalize_newlines
from cllm.data.errors import CorpusNotFoundError, TextDecodeError
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


def find_files(path: str) -> tuple[str, list[tuple[str, str]], Counter]:
    """(root, [(file path, kind)] sorted, Counter of skipped reasons) for a file or a directory."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CorpusNotFoundError(f"corpus path {path} does not exist; give a text file or a directory of text files")
    skipped: Counter = Counter()
    if os.path.isfile(path):
        kind = _file_kind(os.path.basename(path)) or "text"  # a file named explicitly is read as text
        if not os.access(path, os.R_OK):
            raise CorpusNotFoundError(f"cannot read {path}: permission denied; check its permissions")
        return os.path.dirname(path), [(path, kind)], skipped
    if not os.path.isdir(path):
        raise CorpusNotFoundError(f"corpus path {path} is neither a file nor a directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise CorpusNotFoundError(f"cannot read directory {path}: permission denied; check its permissions")
    root = path
    if is_crawl_output(path):
        root = os.path.join(path, "pages")  # a crawl's output: the manifest is not training text
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        hidden = [d for d in dirnames if d.startswith(".")]
        if hidden:
            skipped["hidden"] += len(hidden)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        claimed = {d: kinds.claimed_folder(os.path.join(dirpath, d)) for d in dirnames}  # data/digits: images
        for d, kind in claimed.items():
            if kind is not None:
                skipped[f"{kind} folders"] += 1
        dirnames[:] = [d for d in dirnames if claimed[d] is None]
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if name.startswith("."):
                skipped["hidden"] += 1
                continue
            kind = _file_kind(name)
            if kind is None:
                skipped["unsupported"] += 1
                continue
            files.append((full, kind))
    def key(fk):  # by path components: a folder's files sit where its name sorts, not after its parent's files
        return os.path.relpath(fk[0], root).split(os.sep)

    # the walk's order is often that order already (one folder: a crawl's pages/): checked one key at a time, as
    # sort() would hold every file's key at once (~150 bytes a file)
    keys = map(key, files)
    if any(a > b for a, b in itertools.pairwise(keys)):
        files.sort(key=key)
    return root, files, skipped


def is_crawl_output(path: str) -> bool:
    """Whether `path` is a crawl's output folder (cllm/scraper/output.py: manifest.jsonl and pages/)."""
    return os.path.isfile(os.path.join(path, "manifest.jsonl")) and os.path.isdir(os.path.join(path, "pages"))


def crawl_pages(path: str, site_of=lambda url: url) -> dict:
    """{page file's path (as find_files gives it): site_of(its URL)} from a crawl's manifest; {} for anything else.
    Lines that are not JSON objects with "file" and "url" (a torn last line, a duplicate's record) are passed.
    (cllm/data/corpus.py asks for its host's site id: the URLs themselves are not kept, ~100 bytes a page.)"""
    if not os.path.isdir(path) or not is_crawl_output(path):
        return {}
    pages = {}
    with open(os.path.join(path, "manifest.jsonl"), encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("file"), str) and isinstance(rec.get("url"), str):
                pages[os.path.join(path, *rec["file"].split("/"))] = site_of(rec.get("final_url") or rec["url"])
    return pages


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
