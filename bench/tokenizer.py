#!/usr/bin/env python3
"""Tokenizer benchmark: prints one JSON line.

    python bench/tokenizer.py [--vocab 4096] [--baseline-kb 185] [--no-baseline] [--smoke]

- BPE training time on tiny Shakespeare to `--vocab` ids (Numba compile time reported apart).
- Training speed against a straightforward pure-Python BPE (minbpe's RegexTokenizer algorithm:
  recount all pairs of all chunks per merge) on the first `--baseline-kb` KB to vocab 512, both
  measured here, as a ratio.
- Encode throughput (MB/s of UTF-8 input) on tiny Shakespeare, one thread, best of several runs.
  The headline figures are cold: each run is the first call of a new tokenizer object, whose chunk
  cache is empty, on both sides (HF's BPE keeps a word cache too: each of its runs gets a new object).
  "cached" figures re-encode text whose every chunk CLLM's cache already holds; tiktoken has no such
  cache, so a ratio against a cached figure is not a like-for-like comparison and is never the headline.
- tiktoken (when installed): an Encoding built from the same merges and pattern; whether the ids are
  identical on the test texts, and the speed ratio (ours / tiktoken, >1 means we are faster).
- HuggingFace tokenizers (when installed): the exported tokenizer.json, ids parity and speed.
- "wordpiece" (needs tokenizers): WordPiece training time (likelihood and frequency scores) against
  HF's WordPieceTrainer, compression (tokens per byte of held-out text) of each vocabulary, and
  encoding MB/s against HF's WordPiece with the same vocabulary (identical ids checked), one thread.
- "rank_file" (needs tiktoken): a tiktoken rank file read by `import_tokenizer` and tiktoken, encoding
  `--big-mb` MB (the bundled corpora repeated, in 64 KB documents), MB/s of both and identical ids.
  The headline is the documents of the corpus's first copy, encoded by a new tokenizer (its cache
  filling as it goes, as on new text); "repeated_*" are the copies after it, whose chunks CLLM's cache
  already holds. `--rank-file PATH` uses that file (e.g. cl100k_base.tiktoken); without one (offline), a
  rank file is written from a CLLM BPE trained with cl100k's split pattern (`--vocab` ids), and the JSON
  says so.
All timings are taken in this one process, so under load compare the ratios, not the MB/s.

JSON keys: bench, smoke, corpus, corpus_bytes, vocab_size, numba_compile_or_load_s, bpe_train_s, baseline
{text_kb, vocab, pure_python_s, ours_s, speedup}, encode_tokens, encode_MBps, encode_cached_MBps, tiktoken
{version, identical_ids, MBps, ratio, ratio_cached}, hf_tokenizers {version, identical_ids, MBps, ratio,
ratio_cached}, wordpiece {vocab, train_MB, hf_train_s, hf_tokens_per_byte, frequency, likelihood, encode
{identical_ids, MBps, cached_MBps, hf_MBps, ratio, ratio_cached}}, rank_file {ranks, import_s, MB, documents,
identical_ids, MBps, tiktoken_MBps, ratio, repeated_MBps, repeated_tiktoken_MBps, repeated_ratio}. A side
whose package is missing is null, with not_run saying why.
  --smoke: the first 40 KB of tiny Shakespeare, 300 ids (WordPiece too), a 4 KB baseline, 0.2 MB for the rank file
"""

import argparse
import base64
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import regex

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAYON_NUM_THREADS", "1")  # HF tokenizers: one thread, like us (before they are imported)
os.environ.setdefault("RAYON_RS_NUM_CPUS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.common import SMOKE_HELP, missing  # noqa: E402
from cllm.tokenizers import BPETokenizer  # noqa: E402
from cllm.tokenizers.imports import TIKTOKEN_PATTERNS, import_tokenizer  # noqa: E402
from cllm.tokenizers.wordpiece import SPECIALS, WordPieceTokenizer  # noqa: E402


def best_of(n, fn):
    best, out = float("inf"), None
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def minbpe_train(text, vocab_size, pattern):
    """minbpe's RegexTokenizer.train, verbatim in spirit: every merge recounts every pair."""
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
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--baseline-kb", type=int, default=185)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument(
        "--rank-file", default=None, help="a tiktoken rank file (cl100k_base.tiktoken); default: one written here"
    )
    ap.add_argument("--big-mb", type=float, default=100, help="MB of text for the rank-file encoding comparison")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    if args.smoke:
        args.vocab, args.baseline_kb, args.big_mb = 300, 4, 0.2

    text = (ROOT / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    shared = ROOT.parent / "shared" / "data"
    extra = (
        [p.read_text(encoding="utf-8-sig") for p in sorted(shared.glob("*.txt")) if p.name != "tinyshakespeare.txt"]
        if shared.is_dir()
        else []
    )
    if args.smoke:
        text, extra = text[:40_000], [t[:40_000] for t in extra[:1]]
    res = {
        "bench": "tokenizer",
        "smoke": args.smoke,
        "corpus": "tinyshakespeare",
        "corpus_bytes": len(text.encode()),
        "vocab_size": args.vocab,
    }
    # the reference sides whose package is missing: null in the JSON, the reason in not_run
    not_run = {"tiktoken": missing("tiktoken", "test"), "hf_tokenizers": missing("tokenizers", "test")}
    not_run["wordpiece"], not_run["rank_file"] = not_run["hf_tokenizers"], not_run["tiktoken"]
    res.update({side: None for side, reason in not_run.items() if reason})

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
        res["baseline"] = {
            "text_kb": args.baseline_kb,
            "vocab": 512,
            "pure_python_s": round(py_s, 2),
            "ours_s": round(ours_s, 4),
            "speedup": round(py_s / ours_s, 1),
        }

    nbytes = len(text.encode())

    def cold():  # a new tokenizer object: empty chunk cache, merge table not built yet
        fresh = BPETokenizer(tok.merges, pattern=tok.pattern, special_tokens=list(tok.special_tokens))
        return fresh.encode(text)

    cold_s, ids = best_of(3, cold)
    cached_s, _ = best_of(5, lambda: tok.encode(text))  # tok's cache holds every chunk of text after the first
    res["encode_tokens"] = len(ids)
    res["encode_MBps"] = round(nbytes / cold_s / 1e6, 2)
    res["encode_cached_MBps"] = round(nbytes / cached_s / 1e6, 2)
    assert tok.decode(ids) == text

    if not not_run["tiktoken"]:
        import tiktoken  # optional (the test and bench extras)

        enc = tiktoken.Encoding(
            "cllm-bench",
            pat_str=tok.pattern,
            mergeable_ranks={b: i for i, b in enumerate(tok.vocab_bytes)},
            special_tokens=tok.special_tokens,
        )
        same = all(enc.encode_ordinary(s) == tok.encode(s) for s in [text] + extra)
        tk_s, _ = best_of(5, lambda: enc.encode_ordinary(text))
        res["tiktoken"] = {
            "version": tiktoken.__version__,
            "identical_ids": same,
            "MBps": round(nbytes / tk_s / 1e6, 2),
            "ratio": round(tk_s / cold_s, 2),
            "ratio_cached": round(tk_s / cached_s, 2),
        }
    if not not_run["hf_tokenizers"]:
        import tokenizers  # optional (the test and bench extras)

        with tempfile.TemporaryDirectory() as d:
            tok.export_hf(os.path.join(d, "tokenizer.json"))
            # a new object for each timed run: HF's BPE caches words as CLLM caches chunks
            fresh_hf = [tokenizers.Tokenizer.from_file(os.path.join(d, "tokenizer.json")) for _ in range(4)]
        hf = fresh_hf.pop()
        same = all(hf.encode(s).ids == tok.encode(s, allowed_special="all") for s in [text] + extra)
        hf_s, _ = best_of(3, lambda: fresh_hf.pop().encode(text))
        res["hf_tokenizers"] = {
            "version": tokenizers.__version__,
            "identical_ids": same,
            "MBps": round(nbytes / hf_s / 1e6, 2),
            "ratio": round(hf_s / cold_s, 2),
            "ratio_cached": round(hf_s / cached_s, 2),
        }
        res["wordpiece"] = bench_wordpiece(text, args.vocab)
    if not not_run["rank_file"]:
        res["rank_file"] = bench_rank_file([text] + extra, args)
    not_run = {k: v for k, v in not_run.items() if v}
    if not_run:
        res["not_run"] = not_run
    print(json.dumps(res))


def bench_wordpiece(text, vocab):
    """WordPiece: CLLM against HuggingFace tokenizers, one thread each, the same text."""
    import tokenizers  # optional (the test and bench extras)
    from tokenizers import models, normalizers, pre_tokenizers, trainers

    cut = int(len(text) * 0.9)
    train, held = text[:cut], text[cut:]
    n_train, n_held, n_all = len(train.encode()), len(held.encode()), len(text.encode())
    WordPieceTokenizer.train(train[:5000], 200, progress=False)  # compile (or load the cache)

    def hf_train():
        hf = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
        hf.normalizer = normalizers.BertNormalizer(lowercase=True)
        hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab, special_tokens=list(SPECIALS), show_progress=False)
        hf.train_from_iterator([train], trainer)
        return hf

    out = {"vocab": vocab, "train_MB": round(n_train / 1e6, 3)}
    hf_s, hf = best_of(2, hf_train)
    out["hf_train_s"] = round(hf_s, 3)
    out["hf_tokens_per_byte"] = round(len(hf.encode(held, add_special_tokens=False).ids) / n_held, 5)
    for score in ("frequency", "likelihood"):
        s, tok = best_of(2, lambda score=score: WordPieceTokenizer.train(train, vocab, score=score, progress=False))
        out[score] = {
            "train_s": round(s, 3),
            "train_ratio_to_hf": round(s / hf_s, 2),
            "tokens_per_byte": round(len(tok.encode(held)) / n_held, 5),
        }
    with tempfile.TemporaryDirectory() as d:
        tok.export_hf(os.path.join(d, "tokenizer.json"))
        hf_same = tokenizers.Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    docs = [p for p in text.split("\n\n") if p]

    def cold():  # a new tokenizer object: empty word cache (HF's WordPiece keeps none)
        fresh = WordPieceTokenizer(tok._id_to_token)
        return [fresh.encode(p) for p in docs]

    cold_s, ids = best_of(3, cold)
    cached_s, _ = best_of(3, lambda: [tok.encode(p) for p in docs])
    hf_doc_s, hf_ids = best_of(3, lambda: [e.ids for e in hf_same.encode_batch(docs, add_special_tokens=False)])
    hf_whole_s, _ = best_of(3, lambda: hf_same.encode(text, add_special_tokens=False))
    hf_best = min(hf_doc_s, hf_whole_s)
    out["encode"] = {
        "identical_ids": ids == hf_ids,
        "MBps": round(n_all / cold_s / 1e6, 2),
        "cached_MBps": round(n_all / cached_s / 1e6, 2),
        "hf_MBps": round(n_all / hf_best / 1e6, 2),
        "ratio": round(hf_best / cold_s, 2),
        "ratio_cached": round(hf_best / cached_s, 2),
    }
    return out


def bench_rank_file(texts, args):
    """tiktoken's rank file through import_tokenizer (the bpe-vocab tokenizer) against tiktoken."""
    import tiktoken  # optional (the test and bench extras)
    from tiktoken.load import load_tiktoken_bpe

    out = {}
    with tempfile.TemporaryDirectory() as d:
        path = args.rank_file
        if path is None:
            bpe = BPETokenizer.train("".join(texts), args.vocab, pattern="gpt4", special_tokens=[], progress=False)
            path = os.path.join(d, "cllm_cl100k_pattern.tiktoken")
            with open(path, "wb") as f:
                f.write(b"".join(base64.b64encode(bs) + b" %d\n" % i for i, bs in enumerate(bpe.vocab_bytes)))
            out["ranks"] = f"written from a CLLM BPE of {args.vocab} ids with cl100k's pattern (no cl100k file offline)"
        else:
            out["ranks"] = path
        pattern = None if args.rank_file else "cl100k"
        t = time.perf_counter()
        tok = import_tokenizer(path, pattern=pattern)
        out["import_s"] = round(time.perf_counter() - t, 3)
        import_tokenizer(path, pattern=pattern).encode_array(texts[0][:2000])  # compile (or load the cache)
        os.environ["TIKTOKEN_CACHE_DIR"] = ""  # read the local file without caching a copy
        ranks = load_tiktoken_bpe(path)
    enc = tiktoken.Encoding("bench", pat_str=TIKTOKEN_PATTERNS["cl100k"], mergeable_ranks=ranks, special_tokens={})
    corpus = "".join(texts)
    reps = max(1, int(args.big_mb * 1e6 / len(corpus.encode())))
    big = corpus * reps
    docs = [big[i : i + 65536] for i in range(0, len(big), 65536)]
    del big
    # the documents of the first copy of the corpus (new text to tok's empty cache), then the repeats
    first = -(-len(corpus) // 65536)
    parts = {"first": docs[:first], "repeated": docs[first:]}
    ours, theirs, seconds = [], [], {}
    for name, part in parts.items():
        t = time.perf_counter()
        ours += [tok.encode_array(p) for p in part]
        seconds[name] = time.perf_counter() - t
        t = time.perf_counter()
        theirs += [enc.encode_ordinary(p) for p in part]
        seconds["tiktoken_" + name] = time.perf_counter() - t
    same = all(len(a) == len(b) and a.tolist() == b for a, b in zip(ours, theirs))
    n_first = sum(len(p.encode()) for p in parts["first"])
    n_repeated = sum(len(p.encode()) for p in parts["repeated"])
    out.update(
        {
            "MB": round((n_first + n_repeated) / 1e6, 1),
            "documents": len(docs),
            "identical_ids": same,
            "MBps": round(n_first / seconds["first"] / 1e6, 2),
            "tiktoken_MBps": round(n_first / seconds["tiktoken_first"] / 1e6, 2),
            "ratio": round(seconds["tiktoken_first"] / seconds["first"], 2),
        }
    )
    if parts["repeated"]:  # none when --big-mb holds less than two copies
        out.update(
            {
                "repeated_MBps": round(n_repeated / seconds["repeated"] / 1e6, 2),
                "repeated_tiktoken_MBps": round(n_repeated / seconds["tiktoken_repeated"] / 1e6, 2),
                "repeated_ratio": round(seconds["tiktoken_repeated"] / seconds["repeated"], 2),
            }
        )
    return out


if __name__ == "__main__":
    main()
