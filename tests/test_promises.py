"""Promises of the README and of `--help` that no other test held to, each through the command line
as a user types it: --epochs (whole and fractional), --max-time, --val-fraction, the samples
(--sample-interval/--sample-prompt/--sample-tokens), train --vocab-size, training from a folder of
mixed files and from a crawl's output, the design card's `train --embed-dim 256` then `generate`, and
the crawler's connect timeout against a socket that never accepts."""
from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from crawl_helpers import page, para, serve
from train_helpers import CLI, ROOT, TINY_FLAGS, prepared_dataset, read_metrics, run_cli, write_corpus


def train_cli(data, run, *flags, timeout: float = 120) -> subprocess.CompletedProcess:
    """`cli.py train DATA` with the tiny model into `run`; must succeed."""
    r = run_cli("train", data, *TINY_FLAGS, "--checkpoint-dir", run, "--no-progress", *flags, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    return r


def token_count(path) -> int:
    """Tokens in a token file, from its size alone: a 1024-byte header whose third int32 is the
    bytes per token, then the ids."""
    itemsize = int(np.fromfile(path, dtype="<i4", count=3)[2])
    return (os.path.getsize(path) - 1024) // itemsize


def train_steps(run) -> list[int]:
    return [r["step"] for r in read_metrics(run) if "train_loss" in r]


def load_run_tokenizer(run):
    from cllm.tokenizers import load_tokenizer

    return load_tokenizer(str(Path(run) / "latest" / "tokenizer.json"))


# ---------------------------------------------------------------------------------------- length
@pytest.mark.parametrize("epochs,grad_accum", [("2", 1), ("0.3", 2)])
def test_epochs_sets_the_number_of_steps(tmp_path_factory, tmp_path, epochs, grad_accum):
    data = prepared_dataset(tmp_path_factory)
    n_train = token_count(data / "train.bin")
    B, T = 4, 16  # TINY_FLAGS
    exact = float(epochs) * n_train / (B * T * grad_accum)  # an epoch: the training split once
    expected = math.ceil(exact)
    assert expected > 5 and (exact != expected or epochs == "2")  # a fraction of a step is a whole step
    run = tmp_path / "run"
    r = train_cli(data, run, "--epochs", epochs, "--grad-accum", grad_accum, "--warmup-steps", 2,
                  "--eval-interval", 100000, "--checkpoint-interval", 100000)
    assert train_steps(run) == list(range(1, expected + 1)), (expected, r.stderr[-2000:])
    assert f"done: {expected} steps" in r.stderr


def test_max_time_stops_training_within_a_bound(tmp_path_factory, tmp_path):
    data = prepared_dataset(tmp_path_factory)
    run = tmp_path / "run"
    budget = 2.0
    t0 = time.monotonic()
    # a million steps of the tiny model would take an hour: only the time limit can end this run
    train_cli(data, run, "--max-steps", 1_000_000, "--max-time", budget, "--eval-interval", 100000,
              "--checkpoint-interval", 100000, "--warmup-steps", 2, timeout=90)
    wall = time.monotonic() - t0
    records = [r for r in read_metrics(run) if "train_loss" in r]
    assert 10 < len(records) < 1_000_000
    last = records[-1]["elapsed_s"]
    # the limit is checked every step: the run ends with the first step that finishes past it
    assert budget <= last < budget + 1.5, last
    assert records[-2]["elapsed_s"] < budget + 1.0
    assert (run / "latest").exists()
    assert wall < 60, wall


def test_val_fraction_sets_the_split_sizes(tmp_path):
    corpus = write_corpus(tmp_path / "text")  # one document: split by position
    run = tmp_path / "run"
    train_cli(corpus, run, "--val-fraction", "0.25", "--max-steps", 1)
    n_train, n_val = token_count(run / "dataset" / "train.bin"), token_count(run / "dataset" / "val.bin")
    total = n_train + n_val
    assert total > 1000
    assert abs(n_val - 0.25 * total) <= 1, (n_train, n_val)
    # the held-out tail is the validation split, not text dropped: every character is in one split
    text = corpus.read_text(encoding="utf-8")
    assert total in (len(text), len(text.rstrip("\n")))


# ---------------------------------------------------------------------------------------- samples
@pytest.mark.parametrize("prompt", ["Hello, world", "1984"])
def test_samples_at_their_interval_from_the_prompt_with_their_length(tmp_path_factory, tmp_path, prompt):
    data = prepared_dataset(tmp_path_factory)  # char tokenizer: one token is one character
    r = train_cli(data, tmp_path / "run", "--max-steps", 8, "--sample-interval", 3, "--sample-prompt", prompt,
                  "--sample-tokens", 7, "--eval-interval", 100000, "--checkpoint-interval", 100000)
    # the corpus has no '-': a sample's text cannot hold the closing line
    samples = re.findall(r"^--- sample at step (\d+) ---\n(.*?)\n---$", r.stderr, flags=re.MULTILINE | re.DOTALL)
    assert [int(step) for step, _ in samples] == [3, 6], r.stderr[-2000:]
    for _, body in samples:
        assert body.startswith(prompt), body
        assert len(body) == len(prompt) + 7, body


# ---------------------------------------------------------------------------------------- vocab
@pytest.mark.parametrize("kind,size", [("word", 24), ("bpe", 300)])
def test_train_vocab_size_is_honoured(tmp_path, kind, size):
    corpus = write_corpus(tmp_path / "text", n_lines=400)
    run = tmp_path / "run"
    train_cli(corpus, run, "--tokenizer", kind, "--vocab-size", size, "--max-steps", 1)
    tok = load_run_tokenizer(run)
    assert tok.kind == kind and tok.vocab_size == size
    assert json.loads((run / "latest" / "config.json").read_text())["model"]["vocab_size"] == size


# ---------------------------------------------------------------------------------------- inputs
def minimal_pdf(lines: list[str]) -> bytes:
    """A one-page PDF whose text is `lines` in Helvetica: what pypdf (the PDF reader) extracts. Written
    by hand because pypdf cannot lay out text; offsets of the cross-reference table computed here."""
    text = " ".join(f"({line}) Tj 0 -14 Td" for line in lines)
    content = f"BT /F1 12 Tf 72 720 Td {text} ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
                b"/Resources << /Font << /F1 5 0 R >> >> >>"),
               (b"<< /Length %d >>\nstream\n" % len(content)) + content + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def sentences(word: str, n: int) -> str:
    return " ".join(f"the {word} sat on the mat and the {word} ran far away." for _ in range(n))


def prose(word: str, seed: int) -> str:
    """Eight sentences about `word`, different for each seed."""
    rng = random.Random(seed)
    things = ("garden", "river", "bridge", "market", "lantern", "harbor", "teacher", "window", "village", "orchard")
    acts = ("watched", "crossed", "painted", "visited", "repaired", "followed", "measured", "described")
    return " ".join(f"The {word} {rng.choice(acts)} the {rng.choice(things)} near the {rng.choice(things)} and "
                    f"{rng.choice(acts)} a {rng.choice(things)} with the {rng.choice(things)}." for _ in range(8))


def test_train_from_a_folder_of_mixed_files(tmp_path):
    pytest.importorskip("pypdf", reason="reading PDF files needs the [pdf] extra (pypdf)")
    src = tmp_path / "mixed"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text(sentences("alpha", 6) + "\n", encoding="utf-8")
    (src / "b.md").write_text("# Bravo\n\n" + sentences("bravo", 6) + "\n\n* a list item\n", encoding="utf-8")
    (src / "sub" / "c.html").write_text(page("Charlie", body=para(sentences("charlie", 2))), encoding="utf-8")
    (src / "d.pdf").write_bytes(minimal_pdf([sentences("delta", 1)] * 6))
    (src / "e.jsonl").write_text("".join(json.dumps({"text": sentences(f"echo{i}", 5)}) + "\n" for i in range(3)),
                                 encoding="utf-8")
    (src / "notes.bin").write_bytes(b"\x00\x01 not text")  # skipped, with a count
    run = tmp_path / "run"
    r = train_cli(src, run, "--tokenizer", "word", "--max-steps", 3)
    meta = json.loads((run / "dataset" / "meta.json").read_text())
    assert meta["corpus"]["files"] == 5 and meta["corpus"]["documents"] == 4 + 3, meta["corpus"]
    tok = load_run_tokenizer(run)
    for word in ("alpha", "bravo", "charlie", "delta", "echo0", "echo1", "echo2"):  # one from every kind of file
        ids = tok.encode(word)
        assert len(ids) == 1 and ids[0] != tok.unk_id, word
    assert tok.encode("obj") == [tok.unk_id]  # the PDF's text, not its syntax
    assert train_steps(run) == [1, 2, 3] and (run / "latest").exists(), r.stderr[-2000:]


async def test_train_from_a_crawls_output_directory(tmp_path):
    n = 4
    # distinct prose on each page: a crawl's output is filtered by default (cllm/data/filters/), and pages of
    # one repeated sentence would go as spam and near-duplicates
    routes = {"/": page("Home", [f"/p{i}" for i in range(n)], body=f"<p>{prose('home', n)}</p>"),
              **{f"/p{i}": page(f"Page {i}", body=f"<p>{prose(f'foxtrot{i}', i)}</p>") for i in range(n)}}
    out = tmp_path / "crawl"
    async with serve(routes) as site:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, CLI, "scrape", site.url("/"), str(out), "--delay-ms", "0", "--jitter-ms", "0",
            "--min-chars", "20", "--no-progress", cwd=ROOT, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
    saved = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(saved) == n + 1
    run = tmp_path / "run"
    r = await asyncio.to_thread(train_cli, out, run, "--tokenizer", "word", "--max-steps", 3)
    meta = json.loads((run / "dataset" / "meta.json").read_text())
    assert meta["corpus"]["files"] == n + 1, meta["corpus"]  # the pages, not manifest.jsonl nor .crawl/
    tok = load_run_tokenizer(run)
    for word in ["home", *(f"foxtrot{i}" for i in range(n))]:
        assert tok.encode(word) != [tok.unk_id], word
    assert tok.encode("sha256") == [tok.unk_id]  # a key of the manifest: not training text
    assert train_steps(run) == [1, 2, 3], r.stderr[-2000:]


def test_design_card_train_embed_dim_256_then_generate(tmp_path):
    # The card's command is `python cli.py train --embed-dim 256` then `python cli.py generate "prompt"`.
    # On the bundled data/ (1.1 MB: 1,312 steps of 768 tokens at C=256) it measured 1.7 steps/s here
    # (about 13 minutes), so this runs the same flags on a copy of data/'s three short essays (4 KB):
    # the defaults otherwise (1 epoch, default checkpoint directory), in a fresh working directory.
    essays = tmp_path / "essays"
    essays.mkdir()
    for name in ("machine_learning.txt", "mathematics.txt", "programming.txt"):
        shutil.copy(ROOT / "data" / name, essays / name)
    work = tmp_path / "work"
    work.mkdir()

    def cli(*args):
        return subprocess.run([sys.executable, CLI, *args], cwd=work, capture_output=True, text=True, timeout=300,
                              check=False)

    r = cli("train", str(essays), "--embed-dim", "256")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    latest = work / "checkpoints" / "run" / "latest"
    assert latest.exists()
    assert json.loads((latest / "config.json").read_text())["model"]["embed_dim"] == 256
    g = cli("generate", "prompt")
    assert g.returncode == 0 and "Traceback" not in g.stderr, g.stderr[-3000:]
    assert len(g.stdout.replace("prompt", "", 1).strip()) >= 50, g.stdout  # 200 new tokens by default


# ---------------------------------------------------------------------------------------- crawler
def test_crawler_connect_timeout_against_a_socket_that_never_accepts(tmp_path):
    timeout = 1.0
    with socket.socket() as listener, socket.socket() as closed:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        # fill the accept queue, which nobody drains: Linux then drops new SYNs and a connect hangs
        fillers = [socket.socket() for _ in range(4)]
        for s in fillers:
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
        probe = socket.socket()
        probe.settimeout(0.5)
        with pytest.raises(TimeoutError):  # the premise: this port does not answer
            probe.connect(("127.0.0.1", port))
        probe.close()
        closed.bind(("127.0.0.1", 0))  # bound, never listening: refused at once
        refused = closed.getsockname()[1]
        args = ["--timeout", str(timeout), "--retries", "0", "--no-progress"]

        def scrape(p, out):
            t0 = time.monotonic()
            r = run_cli("scrape", f"http://127.0.0.1:{p}/", tmp_path / out, *args, timeout=60)
            return r, time.monotonic() - t0

        fast, t_fast = scrape(refused, "refused")  # what starting the command costs here
        slow, t_slow = scrape(port, "hangs")
        for s in fillers:
            s.close()
    for r in (fast, slow):
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "timeout" in slow.stderr and f"{timeout:g} s" in slow.stderr, slow.stderr
    # the hung connect is given up after the timeout: not sooner, and not much later
    assert t_slow >= timeout and t_slow - t_fast < timeout + 1.5, (t_fast, t_slow)
