#!/usr/bin/env python3
"""Prepare benchmark: throughput and peak memory of `prepare_dataset` on a ~100 MB corpus.

    python bench/prepare.py [--mb 100] [--kinds char,word,bpe] [--keep DIR] [--smoke]

The corpus is built from the shared texts (../shared/data, else data/tinyshakespeare.txt):
copies of each book (Gutenberg boilerplate removed), each file made unique by a first line so that
deduplication keeps it. Each tokenizer kind runs in a fresh child process, which reports its RSS
after imports and Numba loading (baseline) and its peak RSS during `prepare_dataset` (VmHWM, reset
after the warm-up through /proc/self/clear_refs; ru_maxrss where that is missing): streaming means the
peak above the baseline is a small multiple of the largest file, not of the corpus.
The peak is also given per pass: reading + training the tokenizer (which must keep the corpus's
distinct characters, words or BPE chunks with their counts), then encoding + writing, whose own
growth (peak minus the RSS it starts from) is what one document at a time costs.
Prints one JSON line. Its keys: bench, smoke, corpus_bytes, files, largest_file_bytes, build_s, kinds {KIND:
{seconds, MBps, train_tokens, val_tokens, vocab_size, baseline_rss_MB, peak_rss_MB, peak_above_baseline_MB,
peak_above_baseline_over_largest_file, peak_above_baseline_over_corpus, train_pass_peak_above_baseline_MB,
encode_pass_peak_above_baseline_MB, encode_pass_peak_above_baseline_over_largest_file,
encode_pass_start_above_baseline_MB, encode_pass_growth_over_largest_file} or {error}}.
  --smoke: a 0.2 MB corpus of 50 KB files, vocabularies of 1,000 words and 300 BPE ids
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import SMOKE_HELP  # noqa: E402
from cllm.data import strip_gutenberg  # noqa: E402
from cllm.data.clean import normalize_newlines  # noqa: E402

VOCAB = {"char": None, "word": 8192, "bpe": 4096}
SMOKE_VOCAB = {"char": None, "word": 1000, "bpe": 300}

CHILD = r"""
import json, os, resource, sys, time, psutil
sys.path.insert(0, {root!r})
from cllm.data import prepare_dataset
from cllm.tokenizers import train_tokenizer
kind, corpus, out, vocab = sys.argv[1], sys.argv[2], sys.argv[3], (int(sys.argv[4]) if sys.argv[4] != "None" else None)
t = train_tokenizer(kind, "warm up the kernels " * 50, vocab_size=300 if kind == "bpe" else None, progress=False)
t.encode("warm up")
base = psutil.Process().memory_info().rss
def hwm():  # peak RSS (VmHWM) since the reset below; ru_maxrss where /proc is missing
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
def reset_peak():  # Linux: VmHWM starts again from the current RSS
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
reset_peak()  # the warm-up's own transients are not prepare's
from cllm.data.tokenfile import TokenFileWriter
phase = {{}}
def enter(self, _enter=TokenFileWriter.__enter__):  # the first output file opens when pass 2 begins
    if "train_peak" not in phase:
        phase["train_peak"] = hwm()  # pass 1: reading + training
        phase["encode_start"] = psutil.Process().memory_info().rss  # what training left behind
        reset_peak()
    return _enter(self)
TokenFileWriter.__enter__ = enter
t0 = time.perf_counter()
ds = prepare_dataset(corpus, out, tokenizer=kind, vocab_size=vocab, progress=False, force=True)
dt = time.perf_counter() - t0
peak = hwm()
print(json.dumps({{"seconds": dt, "baseline_rss": base, "peak_rss": max(peak, phase.get("train_peak", 0)),
                  "encode_peak_rss": peak, "train_peak_rss": phase.get("train_peak", peak),
                  "encode_start_rss": phase.get("encode_start", base), "train_tokens": ds.meta["train_tokens"],
                  "val_tokens": ds.meta["val_tokens"], "vocab_size": ds.meta["vocab_size"],
                  "documents": ds.meta["corpus"]["documents"]}}))
"""


def build_corpus(d: Path, mb: float, file_chars: int | None = None) -> tuple[int, int, int]:
    """Files of whole books (or their first file_chars characters) until the corpus holds mb MB."""
    shared = ROOT.parent / "shared" / "data"
    sources = sorted(shared.glob("*.txt")) if shared.is_dir() else [ROOT / "data" / "tinyshakespeare.txt"]
    books = [(p.stem, strip_gutenberg(normalize_newlines(p.read_text(encoding="utf-8-sig")))[:file_chars])
             for p in sources]
    total, n, largest = 0, 0, 0
    k = 0
    while total < mb * 1_000_000:
        name, body = books[k % len(books)]
        data = f"Copy {k} of {name}.\n{body}".encode()
        sub = d / f"part{k // 50:03d}"
        sub.mkdir(exist_ok=True)
        (sub / f"{name}-{k:05d}.txt").write_bytes(data)
        total += len(data)
        largest = max(largest, len(data))
        n += 1
        k += 1
    return total, n, largest


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=100)
    ap.add_argument("--kinds", default="char,word,bpe")
    ap.add_argument("--keep", default=None, help="build the corpus here and keep it")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    unknown = set(args.kinds.split(",")) - set(VOCAB)
    if unknown:
        ap.error(f"unknown --kinds {','.join(sorted(unknown))}: choose from {','.join(VOCAB)}")
    if args.smoke:
        args.mb = 0.2
    work = Path(args.keep or tempfile.mkdtemp(prefix="cllm-bench-prepare-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        corpus = work / "corpus"
        if corpus.exists():
            shutil.rmtree(corpus)
        corpus.mkdir()
        t = time.perf_counter()
        total, nfiles, largest = build_corpus(corpus, args.mb, 50_000 if args.smoke else None)
        res = {
            "bench": "prepare",
            "smoke": args.smoke,
            "corpus_bytes": total,
            "files": nfiles,
            "largest_file_bytes": largest,
            "build_s": round(time.perf_counter() - t, 1),
            "kinds": {},
        }
        for kind in args.kinds.split(","):
            vocab = (SMOKE_VOCAB if args.smoke else VOCAB)[kind]
            r = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    CHILD.format(root=str(ROOT)),
                    kind,
                    str(corpus),
                    str(work / f"out-{kind}"),
                    str(vocab),
                ],
                capture_output=True,
                text=True,
            )
            if r.returncode != 0:
                res["kinds"][kind] = {"error": r.stderr.strip().splitlines()[-1:]}
                continue
            c = json.loads(r.stdout.strip().splitlines()[-1])
            extra = c["peak_rss"] - c["baseline_rss"]
            res["kinds"][kind] = {
                "seconds": round(c["seconds"], 1),
                "MBps": round(total / c["seconds"] / 1e6, 2),
                "train_tokens": c["train_tokens"],
                "val_tokens": c["val_tokens"],
                "vocab_size": c["vocab_size"],
                "baseline_rss_MB": round(c["baseline_rss"] / 1e6, 1),
                "peak_rss_MB": round(c["peak_rss"] / 1e6, 1),
                "peak_above_baseline_MB": round(extra / 1e6, 1),
                "peak_above_baseline_over_largest_file": round(extra / largest, 1),
                "peak_above_baseline_over_corpus": round(extra / total, 3),
                # the two passes: reading + training the tokenizer, then encoding + writing
                "train_pass_peak_above_baseline_MB": round((c["train_peak_rss"] - c["baseline_rss"]) / 1e6, 1),
                "encode_pass_peak_above_baseline_MB": round((c["encode_peak_rss"] - c["baseline_rss"]) / 1e6, 1),
                "encode_pass_peak_above_baseline_over_largest_file": round(
                    (c["encode_peak_rss"] - c["baseline_rss"]) / largest, 1
                ),
                # pass 2's own growth: from the RSS it starts with (the tokenizer and what training left)
                "encode_pass_start_above_baseline_MB": round((c["encode_start_rss"] - c["baseline_rss"]) / 1e6, 1),
                "encode_pass_growth_over_largest_file": round(
                    (c["encode_peak_rss"] - c["encode_start_rss"]) / largest, 1
                ),
            }
        print(json.dumps(res))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
