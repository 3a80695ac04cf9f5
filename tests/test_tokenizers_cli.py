"""`cli.py tokenizer ...`: train, encode, decode, stats, export-hf, and its errors."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *map(str, args)], capture_output=True, text=True, cwd=ROOT
    )


def test_tokenizer_cli_round_trip(tmp_path):
    (tmp_path / "c.txt").write_text("hello hello world, hello there world\n" * 20)
    tok = tmp_path / "tok.json"
    r = run_cli("tokenizer", "train", tmp_path / "c.txt", "--kind", "bpe", "--vocab-size", "270", "--out", tok)
    assert r.returncode == 0, r.stderr
    assert json.loads(tok.read_text())["kind"] == "bpe"
    r = run_cli("tokenizer", "encode", tok, "hello world")
    ids = r.stdout.split()
    assert r.returncode == 0 and 1 <= len(ids) < len("hello world")
    r = run_cli("tokenizer", "decode", tok, ",".join(ids))
    assert r.returncode == 0 and r.stdout == "hello world\n"
    r = run_cli("tokenizer", "stats", tok)
    assert json.loads(r.stdout)["vocab_size"] == 270
    r = run_cli("tokenizer", "export-hf", tok, tmp_path / "hf.json")
    assert r.returncode == 0 and json.loads((tmp_path / "hf.json").read_text())["model"]["type"] == "BPE"


def test_tokenizer_cli_errors(tmp_path):
    for args, msg in (
        (["frobnicate"], "unknown tokenizer action"),
        (["encode", tmp_path / "missing.json", "x"], "does not exist"),
        (["encode", tmp_path / "missing.json"], "missing TEXT; see 'cli.py tokenizer encode --help'"),
    ):
        r = run_cli("tokenizer", *args)
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert r.stderr.startswith("error:") and msg in r.stderr, r.stderr
