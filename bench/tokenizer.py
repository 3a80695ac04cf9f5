#!/usr/bin/env python3
"""Tokenizer benchmark: prints one JSON line.

    python bench/tokenizer.py [--vocab 4096] [--baseline-kb 185] [--no-baseline]

- BPE training time on tiny Shakespeare to `--vocab` ids (Numba compile time reported apart).
- Training speed against a straightforward pure-Python BPE (minbpe's RegexTokenizer algorithm:
  recount all pairs of all chunks per merge) on the first `--baseline-kb` KB to vocab 512, both
  measured here, as a ratio.
- Encode throughput (MB/s of UTF-8 input) on tiny Shakespeare, one thread, best of several runs:
  "cold" is the first call of a new tokenizer object (empty chunk cache), "warm" a repeated call.
- tiktoken (when installed): an Encoding built from the same merges and pattern; whether the ids are
  identical on the test texts, and the speed ratio (ours / tiktoken, >1 means we are faster).
- HuggingFace tokenizers (when installed): the exported tokenizer.json, ids parity and speed.
"""
import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAYON_NUM_THREADS", "1")  # HF tokenizers: one thread, like us
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def best_of(n, fn):
    best, out = float("inf"), None
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def minbpe_train(text, vocab_size, pattern):
    """minbpe's RegexTokenizer.train, verbatim in spirit: every merge recounts every pair."""
    import regex

    ids = [list(ch.encode("utf-8")) for ch in regex.findall(pattern, text)]
    merges = {}
    for i in range(vocab_size - 256):
        stats = {}
        for chunk in ids:
            for pair in zip(chunk, chunk[1:]):
                stats[pair] = stats.get(pair, 0) + 1
        if not stats:
            break
        pair = max(stats, key=stats.get)
        idx = 256 + i
        new_ids = []
        for chunk in ids:
            out, j = [], 0
            while j < len(chunk):
                if j < len(chunk) - 1 and chunk[j] == pair[0] and chunk[j + 1] == pair[1]:
                    out.append(idx)
                    j += 2
                else:
                    out.append(chunk[j])
                    j += 1
            new_ids.append(out)
        ids = new_ids
        merges[pair] = idx
    return merges


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--baseline-kb", type=int, default=185)
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()

    from cllm.tokenizers import BPETokenizer

    text = (ROOT / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    shared = ROOT.parent / "shared" / "data"
    extra = [p.read_text(encoding="utf-8-sig") for p in sorted(shared.glob("*.txt")) if p.name != "tinyshakespeare.txt"] if shared.is_dir() else []
    res = {"bench": "tokenizer", "corpus": "tinyshakespeare", "corpus_bytes": len(text.encode()), "vocab_size": args.vocab}

    t = time.perf_counter()
    BPETokenizer.train(text[:5000], 300, progress=False).encode(text[:5000])  # compile (or load the cache)
    res["numba_compile_or_load_s"] = round(time.perf_counter() - t, 3)

    train_s, tok = best_of(3, lambda: BPETokenizer.train(text, args.vocab, progress=False))
    res["bpe_train_s"] = round(train_s, 3)

    if not args.no_baseline:
        sub = text[: args.baseline_kb * 1024]
        ours_s, small = best_of(3, lambda: BPETokenizer.train(sub, 512, special_tokens=[], progress=False))
        t = time.perf_counter()
        minbpe_train(sub, 512, small.pattern)
        py_s = time.perf_counter() - t
        res["baseline"] = {"text_kb": args.baseline_kb, "vocab": 512, "pure_python_s": round(py_s, 2), "ours_s": round(ours_s, 4),
                           "speedup": round(py_s / ours_s, 1)}

    nbytes = len(text.encode())
    def cold():  # a new tokenizer object: empty chunk cache, merge table not built yet
        fresh = BPETokenizer(tok.merges, pattern=tok.pattern, special_tokens=list(tok.special_tokens))
        return fresh.encode(text)

    cold_s, ids = best_of(3, cold)
    warm_s, _ = best_of(5, lambda: tok.encode(text))
    res["encode_tokens"] = len(ids)
    res["encode_cold_MBps"] = round(nbytes / cold_s / 1e6, 2)
    res["encode_warm_MBps"] = round(nbytes / warm_s / 1e6, 2)
    assert tok.decode(ids) == text

    try:
        import tiktoken
    except ImportError:
        res["tiktoken"] = "not installed (pip install tiktoken)"
    else:
        enc = tiktoken.Encoding("cllm-bench", pat_str=tok.pattern, mergeable_ranks={b: i for i, b in enumerate(tok.vocab_bytes)},
                                special_tokens=tok.special_tokens)
        same = all(enc.encode_ordinary(s) == tok.encode(s) for s in [text] + extra)
        tk_s, _ = best_of(5, lambda: enc.encode_ordinary(text))
        res["tiktoken"] = {"version": tiktoken.__version__, "identical_ids": same, "MBps": round(nbytes / tk_s / 1e6, 2),
                           "ratio_warm": round(tk_s / warm_s, 2), "ratio_cold": round(tk_s / cold_s, 2)}
    try:
        import tokenizers
    except ImportError:
        res["hf_tokenizers"] = "not installed"
    else:
        with tempfile.TemporaryDirectory() as d:
            tok.export_hf(os.path.join(d, "tokenizer.json"))
            hf = tokenizers.Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        same = all(hf.encode(s).ids == tok.encode(s, allowed_special="all") for s in [text] + extra)
        hf_s, _ = best_of(3, lambda: hf.encode(text))
        res["hf_tokenizers"] = {"version": tokenizers.__version__, "identical_ids": same, "MBps": round(nbytes / hf_s / 1e6, 2),
                                "ratio_warm": round(hf_s / warm_s, 2)}
    print(json.dumps(res))


if __name__ == "__main__":
    main()
