#!/usr/bin/env python3
"""Prepare benchmark: throughput and peak memory of `prepare_dataset` on a ~100 MB corpus.

    python bench/prepare.py [--mb 100] [--kinds char,word,bpe] [--keep DIR] [--smoke] [--filters-mb 20]
                            [--filters-budget-mb MB] [--memory-mb 20,100] [--memory-tokenizer char]
                            [--memory-budget-mb MB]

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

The filters part (key "filters"; --kinds none runs it alone) times the corpus filters of cllm/data/filters/
on a crawl's output folder built from the same texts: web-like pages of 1 to 24 paragraphs (about 3 KB on
average, as FineWeb's documents) on 20 sites, each site's pages with 3 boilerplate lines, a tenth of the pages
near-duplicates of earlier ones (7% of the words edited). One pass with every filter on (the pass that
decides), after a warm-up on a small corpus, on all of Numba's threads and on one, alternating, best of two
each. Its keys: corpus_bytes, pages, documents_in, documents_out, threads, filters_wall_s and filters_wall_MBps
(the filters' own wall time on every thread: reading and cleaning left out), filters_wall_MBps_1_thread,
filters_cpu_s and filters_MBps (their CPU time, all threads summed: on a shared machine the wall clock also
counts the time other processes take), MBps (CPU) and wall_MBps per filter, pass_MBps and pass_cpu_MBps (the
whole pass, wall clock and CPU), removed {rule: documents}, and minhash: MB/s (wall) of the MinHash signatures alone
(words hashed, 128 permutations, 3-word shingles) by cllm/data/filters/textstats.py's Numba kernels and by
datasketch's update_batch (where datasketch is installed), on the same pages. --filters-budget-mb MB adds runs
with that --filter-memory-mb (the filters' state on disk past it: cllm/data/filters/spill.py), alternating with the
default's on all threads, best of two: key "spill" {filter_memory_mb, filters_wall_MBps, pass_MBps,
filters_wall_over_memory, pass_over_memory (its MB/s over the default budget's, measured side by side),
wall_MBps per filter}.

The memory part (key "memory"; --memory-mb none skips it) runs `cli.py prepare CRAWL --out DIR --tokenizer T
--no-progress` (filters on: a crawl's default) in a child process on crawl outputs of each --memory-mb size, after
two runs on a 0.05 MB crawl (the first loads or compiles the Numba kernels; the second is the baseline: imports,
kernels, the language model), and reads each child's peak RSS (ru_maxrss, through a small wrapper process:
PEAK_RSS). Its crawls are web-like pages as above whose paragraphs are random sentences of the books' words (about 5
KB a page), so that a big crawl is not the books' few paragraphs over and over. Bounded means the peak grows with
the pages (their paths, lengths, hashes and MinHash signatures), not with the text nor with the token files (written
as they are encoded); with a small --memory-budget-mb (4) not with the pages either past the budget (their state on
disk: docs/design.md). Its keys: tokenizer, baseline_peak_rss_MB, baseline_corpus_MB, rss_MB_per_corpus_MB and
rss_KB_per_page (the peak's growth from the smallest to the largest crawl, per MB of corpus and per page),
peak_ratio and corpus_ratio (largest over smallest), runs [{corpus_MB, pages, largest_page_KB, documents_kept,
tokens, token_files_MB, peak_rss_MB, seconds, peak_above_baseline_MB, peak_above_baseline_over_largest_page}].
--memory-budget-mb MB passes --filter-memory-mb MB to each run (key filter_memory_mb; none: prepare's default).
--smoke: crawls of 0.1 and 0.3 MB.
"""

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numba  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import SMOKE_HELP  # noqa: E402
from cllm.data import strip_gutenberg  # noqa: E402
from cllm.data.clean import normalize_newlines  # noqa: E402
from cllm.data.corpus import corpus_at  # noqa: E402
from cllm.data.filters.neardup import NUM_PERM, SHINGLE, NearDuplicateIndex  # noqa: E402
from cllm.data.filters.textstats import word_stats  # noqa: E402
from cllm.data.prepare import PrepareOptions  # noqa: E402

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


def _books(file_chars: int | None = None) -> list[tuple[str, str]]:
    shared = ROOT.parent / "shared" / "data"
    sources = sorted(shared.glob("*.txt")) if shared.is_dir() else [ROOT / "data" / "tinyshakespeare.txt"]
    return [(p.stem, strip_gutenberg(normalize_newlines(p.read_text(encoding="utf-8-sig")))[:file_chars])
            for p in sources]


def build_corpus(d: Path, mb: float, file_chars: int | None = None) -> tuple[int, int, int]:
    """Files of whole books (or their first file_chars characters) until the corpus holds mb MB."""
    books = _books(file_chars)
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


def build_web_corpus(d: Path, mb: float, unique: bool = False) -> tuple[int, int, int]:
    """A crawl's output folder (pages/, manifest.jsonl) of web-like pages made of the books' paragraphs (their
    lines joined, as a page's text is): (bytes, pages, the largest page's bytes). See the module doc.
    unique: paragraphs of random sentences of the books' words instead (the memory part's crawls: the books'
    paragraphs, repeated on many pages of a site once the crawl outgrows them, would go as boilerplate)."""
    rng = random.Random(0)
    books = _books()
    if unique:
        vocab = [w for _, body in books for w in (w.strip(".,;:!?'\"-()[]") for w in body.split()) if w]
    else:
        paras = [" ".join(p.split()) for _, body in books for p in body.split("\n\n") if len(p) > 80]
    (d / "pages").mkdir(parents=True)
    sites = [[f"Home | News | Shop | About site {k}", f"Site {k} uses cookies to remember your settings.",
              f"Copyright 2026 Site {k}. All rights reserved."] for k in range(20)]
    total, n, largest, pages, manifest = 0, 0, 0, [], []
    while total < mb * 1_000_000:
        if pages and rng.random() < 0.1:  # a near-duplicate of an earlier page: 7% of its words edited
            words = rng.choice(pages).split(" ")
            for i in rng.sample(range(len(words)), len(words) * 7 // 100):
                words[i] = rng.choice(words)
            body = " ".join(words)
        else:
            body = f"Page {n}\n\n" + "\n\n".join(_random_paragraph(rng, vocab) if unique else rng.choice(paras)
                                                  for _ in range(rng.randint(1, 24)))
            pages.append(body)
        site = n % len(sites)
        text = "\n".join([*sites[site][:2], body, sites[site][2]]) + "\n"
        data = text.encode()
        (d / "pages" / f"{n:06d}.txt").write_bytes(data)
        manifest.append(json.dumps({"url": f"https://site{site}.example/{n}", "file": f"pages/{n:06d}.txt"}))
        total += len(data)
        largest = max(largest, len(data))
        n += 1
    (d / "manifest.jsonl").write_text("\n".join(manifest) + "\n")
    return total, n, largest


def _random_paragraph(rng: random.Random, vocab: list[str]) -> str:
    """3 to 8 sentences of 6 to 20 words drawn from vocab (the books' words: their frequencies)."""
    sentences = (" ".join(rng.choices(vocab, k=rng.randint(6, 20))) for _ in range(rng.randint(3, 8)))
    return " ".join(s[:1].upper() + s[1:] + "." for s in sentences)


def bench_filters(work: Path, mb: float, budget: float | None = None) -> dict:
    """The filters part (module doc); `budget`: also time the runs with that --filter-memory-mb."""
    crawl = work / "crawl"
    if crawl.exists():
        shutil.rmtree(crawl)
    total, npages, _ = build_web_corpus(crawl, mb)
    warm = work / "warm"  # the kernels compiled or loaded from Numba's cache and the language model loaded first
    if warm.exists():
        shutil.rmtree(warm)
    build_web_corpus(warm, 0.05)
    for _ in corpus_at(str(warm), PrepareOptions(filters="all", progress=False)):
        pass
    threads = numba.get_num_threads()
    runs = {}
    configs = [(threads, None), (1, None)] + [(threads, budget)] * (budget is not None)
    for n, mem in configs * 2:  # every core, one, (the budget's): alternating, best of two each
        numba.set_num_threads(n)
        options = PrepareOptions(filters="all", progress=False)
        if mem is not None:
            options.filter_memory_mb = mem
        corpus = corpus_at(str(crawl), options)
        t, cpu = time.perf_counter(), time.process_time()
        for _ in corpus:
            pass
        run = (time.perf_counter() - t, time.process_time() - cpu, corpus.filters)
        corpus.filters.close()  # its spill directory, if any
        key = n if mem is None else "budget"
        if key not in runs or run[0] < runs[key][0]:
            runs[key] = run
    numba.set_num_threads(threads)
    pass_s, pass_cpu, f = runs[threads]
    spent, wall = sum(f.seconds.values()), sum(f.wall.values())
    res = {"corpus_bytes": total, "pages": npages, "documents_in": f.documents_in, "documents_out": f.documents_out,
           "threads": threads, "filters_wall_s": round(wall, 2), "filters_wall_MBps": round(f.bytes_in / wall / 1e6, 1),
           "filters_cpu_s": round(spent, 2), "filters_MBps": round(f.bytes_in / spent / 1e6, 1),
           "filters_wall_MBps_1_thread": round(f.bytes_in / sum(runs[1][2].wall.values()) / 1e6, 1),
           "pass_MBps": round(f.bytes_in / pass_s / 1e6, 1), "pass_cpu_MBps": round(f.bytes_in / pass_cpu / 1e6, 1),
           "MBps": {name: round(f.bytes_in / s / 1e6, 1) for name, s in f.seconds.items() if s > 0},
           "wall_MBps": {name: round(f.bytes_in / s / 1e6, 1) for name, s in f.wall.items() if s > 0},
           "removed": {rule: c["documents"] for rule, c in f.counts_by_rule().items() if c["documents"]},
           "minhash": bench_minhash(crawl, min(mb, 5))}
    if budget is not None:
        b_s, _, b = runs["budget"]
        b_wall = sum(b.wall.values())
        res["spill"] = {"filter_memory_mb": budget, "filters_wall_MBps": round(b.bytes_in / b_wall / 1e6, 1),
                        "pass_MBps": round(b.bytes_in / b_s / 1e6, 1),
                        "filters_wall_over_memory": round(wall / b_wall, 2),  # its MB/s over the default's
                        "pass_over_memory": round(pass_s / b_s, 2),
                        "wall_MBps": {name: round(b.bytes_in / s / 1e6, 1) for name, s in b.wall.items() if s > 0}}
    return res


# runs a command and prints its peak RSS (KB): a small process of its own, because Linux gives an exec'd child at
# least the RSS its parent had when it forked (this bench's own, with the filters part's language model loaded)
PEAK_RSS = r"""
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""


def peak_rss(cmd: list[str]) -> tuple[int, float]:
    """(peak RSS in bytes, wall seconds) of a child process running `cmd` (ru_maxrss, which Linux gives in KB). A
    failure raises with the child's last lines."""
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", PEAK_RSS, *cmd], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(" | ".join(r.stderr.strip().splitlines()[-3:]))
    return int(r.stdout.split()[-1]) * 1024, time.perf_counter() - t


def bench_memory(work: Path, sizes: list[float], tokenizer: str, budget: float | None = None) -> dict:
    """The memory part (module doc): `cli.py prepare` on crawls of `sizes` MB, each in a child process
    (`budget`: its --filter-memory-mb)."""
    runs = []
    for mb in (0.05, 0.05, *sizes):  # the first run loads (or compiles) the Numba kernels: not measured
        crawl, out = work / "mem-crawl", work / "mem-out"
        for d in (crawl, out):
            if d.exists():
                shutil.rmtree(d)
        total, pages, largest = build_web_corpus(crawl, mb, unique=True)
        peak, seconds = peak_rss([sys.executable, str(ROOT / "cli.py"), "prepare", str(crawl), "--out", str(out),
                                  "--tokenizer", tokenizer, "--no-progress"]
                                 + ([] if budget is None else ["--filter-memory-mb", str(budget)]))
        meta = json.loads((out / "meta.json").read_text())
        tokens = meta["train_tokens"] + meta["val_tokens"]
        runs.append({"corpus_MB": round(total / 1e6, 2), "pages": pages, "largest_page_KB": round(largest / 1e3, 1),
                     "documents_kept": meta["corpus"]["documents"], "tokens": tokens,
                     "token_files_MB": round(tokens * np.dtype(meta["dtype"]).itemsize / 1e6, 1),
                     "peak_rss_MB": round(peak / 1e6, 1), "seconds": round(seconds, 1), "_bytes": total, "_peak": peak,
                     "_largest": largest})
    base, runs = runs[1], runs[2:]
    for r in runs:
        r["peak_above_baseline_MB"] = round((r["_peak"] - base["_peak"]) / 1e6, 1)
        r["peak_above_baseline_over_largest_page"] = round((r["_peak"] - base["_peak"]) / r["_largest"], 1)
    res = {"tokenizer": tokenizer, "filter_memory_mb": budget, "baseline_peak_rss_MB": base["peak_rss_MB"],
           "baseline_corpus_MB": base["corpus_MB"]}
    if len(runs) >= 2:  # the growth between the smallest and the largest crawl
        a, b = runs[0], runs[-1]
        grow = (b["_peak"] - a["_peak"]) / (b["_bytes"] - a["_bytes"])
        res["rss_MB_per_corpus_MB"] = round(grow, 3)
        res["rss_KB_per_page"] = round((b["_peak"] - a["_peak"]) / (b["pages"] - a["pages"]) / 1e3, 2)
        res["peak_ratio"] = round(b["_peak"] / a["_peak"], 2)
        res["corpus_ratio"] = round(b["_bytes"] / a["_bytes"], 2)
    for r in runs:
        del r["_bytes"], r["_peak"], r["_largest"]
    res["runs"] = runs
    return res


def bench_minhash(crawl: Path, mb: float) -> dict:
    """MB/s of MinHash signatures alone: the Numba kernels against datasketch (if installed), same pages."""
    docs, size = [], 0
    for p in sorted((crawl / "pages").iterdir()):
        docs.append(p.read_text(encoding="utf-8"))
        size += len(docs[-1].encode())
        if size >= mb * 1_000_000:
            break
    index = NearDuplicateIndex(0.5)
    index.signature(word_stats(np.frombuffer(b"warm up", np.uint8))[0])
    t = time.perf_counter()
    for doc in docs:
        index.signature(word_stats(np.frombuffer(doc.encode(), np.uint8))[0])
    out = {"bytes": size, "numba_MBps": round(size / (time.perf_counter() - t) / 1e6, 1)}
    try:
        from datasketch import MinHash  # noqa: PLC0415 (optional: only this comparison uses it)
    except ImportError:
        out["datasketch_MBps"] = None
        return out
    t = time.perf_counter()
    for doc in docs:
        words = doc.lower().split()
        m = MinHash(num_perm=NUM_PERM)
        m.update_batch([" ".join(words[i:i + SHINGLE]).encode() for i in range(max(len(words) - SHINGLE + 1, 1))])
    out["datasketch_MBps"] = round(size / (time.perf_counter() - t) / 1e6, 1)
    out["numba_over_datasketch"] = round(out["numba_MBps"] / out["datasketch_MBps"], 1)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=100)
    ap.add_argument("--kinds", default="char,word,bpe")
    ap.add_argument("--keep", default=None, help="build the corpus here and keep it")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    ap.add_argument("--filters-mb", type=float, default=20, help="MB of web pages for the filters part (0: skip)")
    ap.add_argument("--memory-mb", default="20,100",
                    help="MB of web pages of each crawl the memory part prepares, comma-separated (none: skip)")
    ap.add_argument("--memory-tokenizer", default="char", help="the memory part's --tokenizer (char, word, bpe)")
    ap.add_argument("--memory-budget-mb", type=float, default=None,
                    help="the memory part's --filter-memory-mb (default: prepare's)")
    ap.add_argument("--filters-budget-mb", type=float, default=None,
                    help="the filters part also times this --filter-memory-mb, alternating with the default")
    args = ap.parse_args()
    kinds = [] if args.kinds == "none" else args.kinds.split(",")
    unknown = set(kinds) - set(VOCAB)
    if unknown:
        ap.error(f"unknown --kinds {','.join(sorted(unknown))}: choose from {','.join(VOCAB)}")
    if args.smoke:
        args.mb = 0.2
        args.filters_mb = min(args.filters_mb, 0.3)
        args.memory_mb = "0.1,0.3"
    try:
        memory_mb = [] if args.memory_mb == "none" else [float(x) for x in args.memory_mb.split(",")]
    except ValueError:
        ap.error(f"--memory-mb takes MB numbers separated by commas (e.g. 20,100) or none, not {args.memory_mb!r}")
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
        for kind in kinds:
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
        if args.filters_mb > 0:
            res["filters"] = bench_filters(work, args.filters_mb, args.filters_budget_mb)
        if memory_mb:
            res["memory"] = bench_memory(work, memory_mb, args.memory_tokenizer, args.memory_budget_mb)
        print(json.dumps(res))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
