"""prepare: token datasets, the deterministic split, the cache, and the CLI's bad-input messages."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cllm.data import prepare_dataset, read_token_file
from cllm.data.errors import EmptyCorpusError
from cllm.errors import DataError, TokenizerError

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT / "data" / "tinyshakespeare.txt"


def run_cli(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


def test_char_dataset_matches_nanogpt_shakespeare_char(tmp_path):
    # nanoGPT's prepare.py: 65 characters, first 90% train = 1,003,854 ids, val 111,540
    ds = prepare_dataset(SHAKESPEARE, tmp_path, tokenizer="char", normalize_whitespace=False, progress=False)
    assert ds.tokenizer.vocab_size == 65
    train, val = read_token_file(ds.train_path), read_token_file(ds.val_path)
    assert (len(train), len(val)) == (1_003_854, 111_540)
    assert train.dtype == np.uint16
    text = SHAKESPEARE.read_text()
    assert ds.tokenizer.decode(train[:200]) == text[:200]
    assert ds.tokenizer.decode(val[-50:]) == text[-50:]
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["train_tokens"] == 1_003_854 and meta["vocab_size"] == 65 and meta["split"] == "position"
    assert sorted(os.listdir(tmp_path)) == ["meta.json", "tokenizer.json", "train.bin", "val.bin"]


def make_docs(root, n=10):
    root.mkdir(exist_ok=True)
    docs = [f"Document number {i} says hello {'again ' * i}and ends." for i in range(n)]
    for i, d in enumerate(docs):
        (root / f"doc{i:02d}.txt").write_text(d)
    return docs


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_several_documents_split_at_boundaries_with_eos(tmp_path, kind):
    docs = make_docs(tmp_path / "c")
    ds = prepare_dataset(
        tmp_path / "c", tmp_path / "out", tokenizer=kind, vocab_size=280, val_fraction=0.2, progress=False
    )
    tok, eos = ds.tokenizer, ds.tokenizer.eos_id
    train, val = ds.train_tokens().tolist(), ds.val_tokens().tolist()

    # EOS closes every document; split the streams back into documents
    def split(ids):
        out, cur = [], []
        for i in ids:
            if i == eos:
                out.append(tok.decode(cur))
                cur = []
            else:
                cur.append(i)
        assert cur == []
        return out

    got_train, got_val = split(train), split(val)
    assert got_train + got_val == [tok.decode(tok.encode(d)) for d in docs]
    # val is the tail of documents holding about 20% of the characters
    lengths = [len(d) for d in docs]
    assert len(got_val) == len(docs) - ds.meta["val_first_document"] >= 1
    share = sum(lengths[ds.meta["val_first_document"] :]) / sum(lengths)
    assert 0.1 <= share <= 0.4 and ds.meta["split"] == "documents"


def test_cache_reuse_and_invalidation(tmp_path):
    make_docs(tmp_path / "c")
    out = tmp_path / "out"
    first = prepare_dataset(tmp_path / "c", out, tokenizer="char", progress=False)
    assert not first.cached
    stamp = (out / "train.bin").stat().st_mtime_ns
    again = prepare_dataset(tmp_path / "c", out, tokenizer="char", progress=False)
    assert again.cached and (out / "train.bin").stat().st_mtime_ns == stamp
    assert again.meta == first.meta
    # any change rebuilds: an option, a file's content, a new file
    assert not prepare_dataset(tmp_path / "c", out, tokenizer="char", lowercase=True, progress=False).cached
    assert prepare_dataset(tmp_path / "c", out, tokenizer="char", lowercase=True, progress=False).cached
    assert not prepare_dataset(
        tmp_path / "c", out, tokenizer="char", lowercase=True, val_fraction=0.3, progress=False
    ).cached
    (tmp_path / "c" / "doc03.txt").write_text("Changed text with a new letter: Z!")
    ds = prepare_dataset(tmp_path / "c", out, tokenizer="char", lowercase=True, val_fraction=0.3, progress=False)
    assert not ds.cached and "!" in ds.tokenizer._token_to_id
    (tmp_path / "c" / "extra.txt").write_text("one more document")
    assert not prepare_dataset(
        tmp_path / "c", out, tokenizer="char", lowercase=True, val_fraction=0.3, progress=False
    ).cached
    # a damaged cache is rebuilt, not trusted
    with open(out / "val.bin", "ab") as f:
        f.write(b"\0\0")
    ds = prepare_dataset(tmp_path / "c", out, tokenizer="char", lowercase=True, val_fraction=0.3, progress=False)
    assert not ds.cached and len(read_token_file(ds.val_path)) == ds.meta["val_tokens"]


def test_bad_options(tmp_path):
    make_docs(tmp_path / "c")
    with pytest.raises(TokenizerError, match="unknown tokenizer"):
        prepare_dataset(tmp_path / "c", tmp_path / "o", tokenizer="sentencepiece")
    with pytest.raises(DataError, match="val fraction"):
        prepare_dataset(tmp_path / "c", tmp_path / "o", val_fraction=1.0)
    (tmp_path / "tiny.txt").write_text("x")
    with pytest.raises(EmptyCorpusError, match="gives no training tokens"):  # 1 token: 90% of it is 0
        prepare_dataset(tmp_path / "tiny.txt", tmp_path / "o", progress=False)
    assert not (tmp_path / "o" / "meta.json").exists()


def test_cli_prepare_writes_dataset_then_reuses_it(tmp_path):
    make_docs(tmp_path / "c")
    r = run_cli(
        "prepare", tmp_path / "c", "--tokenizer", "bpe", "--vocab-size", "300", "--out", tmp_path / "out", "--llmc"
    )
    assert r.returncode == 0, r.stderr
    assert "train.bin" in r.stdout and "10 documents" in r.stdout
    assert {"tokenizer.json", "train.bin", "val.bin", "meta.json", "train_llmc.bin", "val_llmc.bin"} <= set(
        os.listdir(tmp_path / "out")
    )
    r = run_cli(
        "prepare", tmp_path / "c", "--tokenizer", "bpe", "--vocab-size", "300", "--out", tmp_path / "out", "--llmc"
    )
    assert r.returncode == 0 and "reused cached dataset" in r.stdout


@pytest.mark.parametrize(
    "case", ["missing", "empty_dir", "no_text", "small_vocab", "word_vocab", "bad_kind", "strict_utf8", "unwritable"]
)
def test_cli_bad_input_is_one_clear_error(tmp_path, case):
    make_docs(tmp_path / "c", 3)
    (tmp_path / "empty").mkdir()
    (tmp_path / "binonly").mkdir()
    (tmp_path / "binonly" / "x.bin").write_bytes(b"\0\1")
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 ok")
    (tmp_path / "file").write_text("not a dir")
    args, msg = {
        "missing": ([tmp_path / "nope"], "does not exist"),
        "empty_dir": ([tmp_path / "empty"], "no text files"),
        "no_text": ([tmp_path / "binonly"], "no text files"),
        "small_vocab": ([tmp_path / "c", "--tokenizer", "bpe", "--vocab-size", "100"], "too small for byte-level BPE"),
        "word_vocab": ([tmp_path / "c", "--tokenizer", "word", "--vocab-size", "3"], "special tokens"),
        "bad_kind": ([tmp_path / "c", "--tokenizer", "unigram"], "unknown tokenizer"),
        "strict_utf8": ([tmp_path / "bad.txt", "--encoding", "utf-8"], "not valid UTF-8"),
        "unwritable": ([tmp_path / "c", "--out", tmp_path / "file" / "sub"], "cannot write to output directory"),
    }[case]
    if "--out" not in args:
        args = [*args, "--out", tmp_path / "out"]
    r = run_cli("prepare", *args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and msg in lines[0], r.stderr
    out = tmp_path / "out"
    if out.exists():  # nothing half-written: no temporary files, no dataset without its meta.json
        assert not [f for f in os.listdir(out) if f.endswith(".tmp")]
        assert not (out / "meta.json").exists()


def test_cli_default_output_is_the_ignored_data_cache(tmp_path):
    make_docs(tmp_path / "c", 3)
    r = run_cli("prepare", tmp_path / "c", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "data" / ".cache" / "c-char" / "meta.json").exists()
