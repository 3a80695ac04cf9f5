"""Corpus loading and cleaning, and token files (header validation, llm.c export)."""

import re
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cllm.data import (
    CorpusNotFoundError,
    EmptyCorpusError,
    TextDecodeError,
    TokenFileError,
    clean_text,
    load_corpus,
    read_token_file,
    write_token_file,
)
from cllm.data.clean import _OTHER_SPACE
from cllm.data.tokenfile import HEADER_BYTES, export_llmc_tokens, read_llmc_tokens
from cllm.errors import DataError, MissingDependencyError


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF showing `text` in Helvetica, with a correct xref table."""
    stream = f"BT /F1 24 Tf 72 700 Td ({text}) Tj ET".encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# cleaning


def test_clean_text_defaults_only_tidy_whitespace():
    assert clean_text("Hello,  World!\t42 \r\n\r\n\r\n\r\nNext line  \n") == "Hello, World! 42\n\nNext line\n"
    assert clean_text("  a\n\n\nb  ", keep_newlines=False) == "a b"
    assert clean_text("a  b", normalize_whitespace=False) == "a  b"


def test_the_whitespace_table_holds_every_space_of_unicode():
    """cllm/data/clean.py scans code points up to U+3000 only (all of them would cost ~0.15 s at import)."""
    every = [chr(i) for i in range(sys.maxunicode + 1) if chr(i).isspace() and chr(i) not in " \n"]
    assert _OTHER_SPACE == every and "\u3000" in every


def reference_whitespace(t):
    """normalize_whitespace as regular expressions (whitespace = str.isspace, as `re`'s \\s)."""
    t = t.replace("\r\n", "\n").replace("\r", "\n")
    final = t.endswith("\n")
    t = re.sub(r"[^\S\n]+", " ", t)
    t = re.sub(r" +\n", "\n", t)
    t = re.sub(r"\n{3,}", "\n\n", t).strip(" \n")
    return t + "\n" if final and t else t


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(" \n\r\t\x0b\x0c\x1c\x85\xa0\u2003\u3000ab.")), max_size=40))
def test_whitespace_normalization_matches_its_definition(text):
    assert clean_text(text, strip_gutenberg=False) == reference_whitespace(text)


def test_clean_text_flags():
    t = "Don't panic: 42 towels, 3.5 fish!"
    assert clean_text(t, lowercase=True) == "don't panic: 42 towels, 3.5 fish!"
    assert clean_text(t, remove_punctuation=True) == "Dont panic 42 towels 35 fish"
    assert clean_text(t, remove_numbers=True) == "Don't panic: towels, . fish!"
    assert clean_text(t, lowercase=True, remove_punctuation=True, remove_numbers=True) == "dont panic towels fish"


def test_gutenberg_header_and_footer_are_stripped():
    book = (
        "The Project Gutenberg EBook of X\r\nlicence blah\r\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\r\n"
        "Chapter 1\r\nIt was a dark night.\r\nEnd of the Project Gutenberg EBook of X\r\n"
        "*** END OF THIS PROJECT GUTENBERG EBOOK X ***\r\nlicence footer\r\n"
    )
    assert clean_text(book) == "Chapter 1\nIt was a dark night.\n"
    assert "licence" in clean_text(book, strip_gutenberg=False)
    assert clean_text("no markers here") == "no markers here"


# ---------------------------------------------------------------------------------------------
# loading


def make_tree(root):
    (root / "b").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"\xef\xbb\xbfalpha one\r\ntwo\r\n")  # BOM + CRLF
    (root / "b" / "c.md").write_text("# gamma\n")
    (root / "b" / "noext").write_text("delta text\n")
    (root / "dup.txt").write_text("alpha one\ntwo\n")  # same as a.txt once cleaned
    (root / ".hidden.txt").write_text("secret\n")
    (root / ".crawl").mkdir()
    (root / ".crawl" / "state.txt").write_text("crawler state\n")
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (root / "blob").write_bytes(b"abc\x00\x01\x02")
    (root / "recs.jsonl").write_text('{"text": "epsilon"}\n{"id": 3}\n\n{"text": "zeta"}\n')
    (root / "page.html").write_text(
        "<html><head><title>T</title><style>.x{color:red}</style><script>var secret=1;</script></head>"
        "<body><article><p>Visible paragraph text that a reader would see on this page, long enough to be the "
        "main content.</p>"
        "<p>And a second paragraph of ordinary prose for the extractor.</p></article></body></html>"
    )


def test_directory_is_walked_sorted_skipping_hidden_binary_and_duplicates(tmp_path):
    make_tree(tmp_path)
    with pytest.warns(UserWarning, match="skipped 1 binary, 2 hidden, 1 jsonl records without text, 1 unsupported"):
        corpus = load_corpus(tmp_path, progress=False)
    docs = corpus.documents
    # order: a.txt, b/c.md, b/noext, (blob: binary), (dup.txt: duplicate), page.html, recs.jsonl
    assert docs[0] == "alpha one\ntwo\n"
    assert docs[1:3] == ["# gamma\n", "delta text\n"]
    assert "Visible paragraph text" in docs[3] and "secret" not in docs[3] and "color" not in docs[3]
    assert docs[4:] == ["epsilon", "zeta"]
    s = corpus.stats
    assert s.documents == 6 and s.duplicates == 1
    assert s.skipped == {"hidden": 2, "unsupported": 1, "binary": 1, "jsonl records without text": 1}
    assert s.characters == sum(map(len, docs))
    assert s.tokens == sum(len(d.split()) for d in docs)
    assert list(corpus.doc_lengths) == [len(d) for d in docs]
    assert list(corpus) == docs  # re-iterable, same documents


def test_crawl_output_reads_pages_only(tmp_path):
    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "0001.txt").write_text("page text\n")
    (tmp_path / "manifest.jsonl").write_text('{"url": "http://x", "text": "not training text"}\n')
    (tmp_path / ".crawl").mkdir()
    (tmp_path / ".crawl" / "frontier.txt").write_text("state\n")
    assert load_corpus(tmp_path, progress=False).documents == ["page text\n"]


def test_pdf_is_read_with_pypdf(tmp_path):
    pytest.importorskip("pypdf")
    (tmp_path / "doc.pdf").write_bytes(minimal_pdf("Hello from a PDF"))
    assert load_corpus(tmp_path / "doc.pdf", progress=False).documents == ["Hello from a PDF"]


def test_pdf_without_pypdf_says_how_to_install(tmp_path, monkeypatch):
    (tmp_path / "doc.pdf").write_bytes(minimal_pdf("x"))
    monkeypatch.setitem(sys.modules, "pypdf", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'cllm\[pdf\]'"):
        load_corpus(tmp_path, progress=False)


def test_non_utf8_falls_back_to_detection_or_fails_clearly(tmp_path):
    text = "Le café était très animé ce matin-là; les garçons servaient des crêpes à la crème. " * 20
    (tmp_path / "latin.txt").write_bytes(text.encode("cp1252"))
    corpus = load_corpus(tmp_path, progress=False)
    assert corpus.documents == [text.strip()]
    assert corpus.stats.decoded_with_fallback == 1
    with pytest.raises(TextDecodeError, match="not valid UTF-8.*latin.txt|latin.txt.*not valid UTF-8"):
        load_corpus(tmp_path, encoding="utf-8", progress=False)


def test_bad_corpus_paths(tmp_path):
    with pytest.raises(CorpusNotFoundError, match="does not exist"):
        load_corpus(tmp_path / "nope", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptyCorpusError, match="no text files"):
        load_corpus(tmp_path / "empty", progress=False)
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "a.txt").write_text("  \n\n")
    with pytest.raises(EmptyCorpusError, match="empty after cleaning"):
        load_corpus(tmp_path / "blank", progress=False)
    (tmp_path / "punct").mkdir()
    (tmp_path / "punct" / "a.txt").write_text("!!! ... ???")
    with pytest.raises(EmptyCorpusError, match="empty after cleaning"):
        load_corpus(tmp_path / "punct", remove_punctuation=True, progress=False)
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2 is not valid JSON"):
        load_corpus(tmp_path / "bad.jsonl", progress=False)
    with pytest.raises(DataError, match="unknown corpus option"):
        load_corpus(tmp_path, stem=True)


# ---------------------------------------------------------------------------------------------
# token files


@pytest.mark.parametrize("vocab,dtype", [(65, np.uint16), (65536, np.uint16), (70000, np.uint32)])
def test_token_file_round_trip(tmp_path, vocab, dtype):
    ids = np.array([0, 1, vocab - 1, 7], np.int64)
    assert write_token_file(tmp_path / "t.bin", [ids[:2], ids[2:]], vocab_size=vocab) == 4
    back = read_token_file(tmp_path / "t.bin")
    assert isinstance(back, np.memmap) and back.dtype == dtype
    assert back.tolist() == ids.tolist()
    assert (tmp_path / "t.bin").stat().st_size == HEADER_BYTES + 4 * np.dtype(dtype).itemsize


def test_token_file_header_validation(tmp_path):
    write_token_file(tmp_path / "good.bin", np.arange(10), vocab_size=10)
    raw = (tmp_path / "good.bin").read_bytes()
    header = np.frombuffer(raw[:HEADER_BYTES], "<i4").copy()

    def variant(name, h=None, body=None):
        (tmp_path / name).write_bytes(
            (h if h is not None else header).tobytes() + (body if body is not None else raw[HEADER_BYTES:])
        )
        return tmp_path / name

    bad_magic = header.copy()
    bad_magic[0] = 12345
    llmc = header.copy()
    llmc[0] = 20240520
    version = header.copy()
    version[1] = 2
    width = header.copy()
    width[2] = 3
    cases = {
        variant("magic.bin", bad_magic): "wrong magic",
        variant("llmc.bin", llmc): "llm.c token file",
        variant("version.bin", version): "version 2",
        variant("width.bin", width): "invalid token width",
        variant("truncated.bin", body=raw[HEADER_BYTES:-2]): "header says 10 tokens",
        variant("longer.bin", body=raw[HEADER_BYTES:] + b"\0\0"): "header says 10 tokens",
        tmp_path / "missing.bin": "does not exist",
    }
    (tmp_path / "short.bin").write_bytes(raw[:100])
    cases[tmp_path / "short.bin"] = "too short"
    for path, msg in cases.items():
        with pytest.raises(TokenFileError, match=msg):
            read_token_file(path)


def test_llmc_token_export(tmp_path):
    write_token_file(tmp_path / "t.bin", np.array([5, 50256, 0]), vocab_size=50257)
    assert export_llmc_tokens(tmp_path / "t.bin", tmp_path / "llmc.bin") == 3
    h = np.fromfile(tmp_path / "llmc.bin", "<i4", 256)
    assert h[:3].tolist() == [20240520, 1, 3] and not h[3:].any()
    assert np.fromfile(tmp_path / "llmc.bin", "<u2", offset=1024).tolist() == [5, 50256, 0]
    assert read_llmc_tokens(tmp_path / "llmc.bin").tolist() == [5, 50256, 0]
    write_token_file(tmp_path / "big.bin", np.array([1]), vocab_size=70000)
    with pytest.raises(DataError, match="uint16"):
        export_llmc_tokens(tmp_path / "big.bin", tmp_path / "x.bin")
    assert not (tmp_path / "x.bin").exists()


def test_html_without_the_crawler_extractor_falls_back_to_lxml(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cllm.scraper.extract", None)  # import fails -> lxml fallback
    (tmp_path / "p.html").write_text(
        "<html><head><script>var hidden=1;</script><style>p{}</style></head><body><p>Shown words.</p></body></html>"
    )
    docs = load_corpus(tmp_path, progress=False).documents
    assert len(docs) == 1 and "Shown words." in docs[0] and "hidden" not in docs[0] and "p{}" not in docs[0]


def test_word_statistics_of_a_big_document_are_exact():
    # tiny Shakespeare (1.1 MB) is counted 64 KB at a time: the totals must equal a plain split()
    path = __import__("pathlib").Path(__file__).resolve().parents[1] / "data" / "tinyshakespeare.txt"
    text = path.read_text(encoding="utf-8")
    s = load_corpus(path, normalize_whitespace=False, progress=False).stats
    words = text.split()
    assert (s.documents, s.characters, s.lines) == (1, 1_115_394, 40_000)
    assert (s.tokens, s.vocabulary) == (len(words), len(set(words)))
