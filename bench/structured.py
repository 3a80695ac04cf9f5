#!/usr/bin/env python3
"""Grammar engines for structured output (cllm/serve/structured.py): prints one JSON line.

    python bench/structured.py [--smoke]

For each vocabulary and each engine installed (llguidance, outlines-core, xgrammar):
- vocab_s: turning the vocabulary into the engine's tokenizer object (once per model),
- compile_s: compiling one JSON schema (objects with string, integer, boolean, enum, array and nested fields)
  for that vocabulary (once per schema; cllm/serve/structured.py caches it),
- mask_us: the mean cost per token of computing the allowed-token mask and advancing by one token, replaying the
  same token sequences on every engine: JSON texts that cllm/serve/structured.py sampled at random under the
  schema (uniform among the allowed tokens, closing forced within the budget), so every engine sees the same
  states.
- cllm_us: the same per token for the whole of CLLM's constraint (llguidance's mask, the logits masked, and the
  closing walk that keeps the JSON closable within max_tokens), the cost a server step really pays.

Vocabularies: "char" (the 95 printable ASCII characters and newline: tiny Shakespeare's 65 characters have no '{'
or '"', so cannot spell JSON), "bpe4k" (CLLM's byte-level BPE trained on data/tinyshakespeare.txt to 4096 ids),
"gpt2size" (50257 byte-level tokens like GPT-2's: the 256 bytes and the most frequent words of data/*.txt with
and without a leading space, then their prefixes, then pairs of printable bytes, until 50257; GPT-2's own file
is not bundled offline).
xgrammar imports torch and transformers when imported (seconds, and torch is no run-time dependency of CLLM), so
it is measured here but not chosen. One process, one thread; under load compare the ratios.
"""
import argparse
import collections
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import regex

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAYON_NUM_THREADS", "1")

from bench.common import SMOKE_HELP, cpu_model, missing  # noqa: E402
from cllm.serve.structured import _Vocabulary, compile_json_grammar  # noqa: E402
from cllm.tokenizers import BPETokenizer  # noqa: E402
from cllm.tokenizers.char import CharTokenizer  # noqa: E402
from cllm.tokenizers.vocab_bpe import VocabBPETokenizer  # noqa: E402

SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string"}, "age": {"type": "integer"}, "ok": {"type": "boolean"},
    "color": {"enum": ["red", "green", "blue"]}, "tags": {"type": "array", "items": {"type": "string"}},
    "place": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "integer"}},
              "required": ["city", "zip"]}},
    "required": ["name", "age", "ok", "color", "tags", "place"]}


def vocabularies(smoke: bool) -> dict:
    text = (ROOT / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    out = {"char": CharTokenizer([chr(c) for c in range(32, 127)] + ["\n"])}
    out["bpe4k"] = BPETokenizer.train(text[:40_000] if smoke else text, vocab_size=600 if smoke else 4096,
                                      progress=False)
    if not smoke:
        out["gpt2size"] = gpt2_sized(50257)
    return out


def gpt2_sized(size: int) -> VocabBPETokenizer:
    """A byte-level vocabulary of `size` tokens from the bundled corpora (see the module's docstring); no merges,
    which only encoding needs."""
    words = collections.Counter()
    for path in sorted((ROOT / "data").glob("*.txt")):
        words.update(regex.findall(r"\p{L}+|\p{N}+|[^\s\p{L}\p{N}]+", path.read_text(encoding="utf-8")))
    vocab = {bytes([b]): b for b in range(256)}
    ranked = [w for w, _ in words.most_common()]
    for w in ranked:
        for form in (" " + w, w):
            if len(vocab) < size - 1:
                vocab.setdefault(form.encode("utf-8"), len(vocab))
    for n in range(2, 12):  # prefixes until the size is reached
        for w in ranked:
            if len(vocab) >= size - 1:
                break
            vocab.setdefault((" " + w)[:n].encode("utf-8"), len(vocab))
    printable = [bytes([b]) for b in range(32, 127)]
    for a in printable:  # then pairs of printable bytes, if the corpora ran out
        for b in printable:
            if len(vocab) < size - 1:
                vocab.setdefault(a + b, len(vocab))
    return VocabBPETokenizer(vocab, [], specials={"<|endoftext|>": len(vocab)})


def sequences(tok, n: int, budget: int) -> list[list[int]]:
    """n token sequences of complete JSON for SCHEMA: uniform among the allowed tokens, closed within budget. No
    backslash escapes: outlines-core's string pattern refuses some that JSON (and llguidance) allows."""
    grammar = compile_json_grammar(tok, SCHEMA)
    vocab = _Vocabulary(tok)
    no_escape = np.array([b"\\" not in bs for bs in vocab.tokens[:tok.vocab_size]])
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        c = grammar.constraint(budget)
        ids = []
        for step in range(budget):
            allowed = np.isfinite(c.mask(np.zeros(tok.vocab_size)))
            allowed = np.flatnonzero(allowed & no_escape if (allowed & no_escape).any() else allowed)
            ids.append(c.commit(int(rng.choice(allowed)), budget - step))
            if c.done:
                break
        json.loads(tok.decode(ids))
        out.append(ids)
    return out


def bench_llguidance(tok, seqs):
    import llguidance  # noqa: PLC0415 (optional: one of the engines compared)

    t = time.perf_counter()
    vocab = _Vocabulary(tok)
    ll = llguidance.LLTokenizer(llguidance.TokenizerWrapper(vocab), n_vocab=len(vocab.tokens),
                                slices=llguidance.LLTokenizer.json_slices())
    vocab_s = time.perf_counter() - t
    t = time.perf_counter()
    grammar = llguidance.LLMatcher.grammar_from_json_schema(SCHEMA, overrides={"whitespace_flexible": False})
    llguidance.LLMatcher(ll, grammar, log_level=0)
    compile_s = time.perf_counter() - t
    n, t = 0, time.perf_counter()
    for ids in seqs:
        m = llguidance.LLMatcher(ll, grammar, log_level=0)
        for tid in ids:
            m.compute_bitmask()
            assert m.consume_token(tid)
            n += 1
    return {"vocab_s": vocab_s, "compile_s": compile_s, "mask_us": (time.perf_counter() - t) / n * 1e6}


def bench_outlines(tok, seqs):
    import outlines_core  # noqa: PLC0415 (optional: one of the engines compared)

    t = time.perf_counter()
    vocab = _Vocabulary(tok)
    table = collections.defaultdict(list)
    for i, bs in enumerate(vocab.tokens):
        if i not in vocab.special_set:
            table[bs].append(i)
    ov = outlines_core.Vocabulary(vocab.eos_token_id, dict(table))
    vocab_s = time.perf_counter() - t
    t = time.perf_counter()
    pattern = outlines_core.json_schema.build_regex_from_schema(json.dumps(SCHEMA), "")
    index = outlines_core.Index(pattern, ov)
    compile_s = time.perf_counter() - t
    mask = np.zeros((len(vocab.tokens) + 31) // 32, dtype=np.int32)
    n, refused, t = 0, 0, time.perf_counter()
    for ids in seqs:
        guide = outlines_core.Guide(index)
        for tid in ids:
            guide.write_mask_into(mask.ctypes.data, mask.size, 4)
            n += 1
            try:
                guide.advance(tid, return_tokens=False)
            except ValueError:  # its JSON pattern differs on some string or number: the rest is skipped
                refused += 1
                break
    return {"vocab_s": vocab_s, "compile_s": compile_s, "mask_us": (time.perf_counter() - t) / n * 1e6,
            "sequences_refused": refused}


def bench_xgrammar(tok, seqs):
    import xgrammar  # noqa: PLC0415 (optional, and imports torch: measured, not used by CLLM)

    t = time.perf_counter()
    vocab = _Vocabulary(tok)
    info = xgrammar.TokenizerInfo(vocab.tokens, vocab_type=xgrammar.VocabType.RAW,
                                  stop_token_ids=[vocab.eos_token_id])
    compiler = xgrammar.GrammarCompiler(info, max_threads=1)
    vocab_s = time.perf_counter() - t
    t = time.perf_counter()
    compiled = compiler.compile_json_schema(json.dumps(SCHEMA), any_whitespace=False, separators=(",", ":"))
    compile_s = time.perf_counter() - t
    bitmask = xgrammar.allocate_token_bitmask(1, len(vocab.tokens))
    n, refused, t = 0, 0, time.perf_counter()
    for ids in seqs:
        m = xgrammar.GrammarMatcher(compiled)
        for tid in ids:
            m.fill_next_token_bitmask(bitmask)
            n += 1
            if not m.accept_token(tid):  # its JSON grammar differs on some string or number: the rest is skipped
                refused += 1
                break
    return {"vocab_s": vocab_s, "compile_s": compile_s, "mask_us": (time.perf_counter() - t) / n * 1e6,
            "sequences_refused": refused}


def bench_cllm(tok, seqs, budget):
    """CLLM's whole constraint per token: mask the logits, commit (closing walk included)."""
    grammar = compile_json_grammar(tok, SCHEMA)
    logits = np.zeros(tok.vocab_size)
    n, t = 0, time.perf_counter()
    for ids in seqs:
        c = grammar.constraint(budget)
        for step, tid in enumerate(ids):
            c.mask(logits)
            assert c.commit(tid, budget - step) == tid
            n += 1
    return {"cllm_us": (time.perf_counter() - t) / n * 1e6, "min_tokens": grammar.min_tokens}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    engines = {"llguidance": bench_llguidance, "outlines_core": bench_outlines, "xgrammar": bench_xgrammar}
    n_seq, budget = (2, 120) if args.smoke else (8, 160)
    report = {"bench": "structured", "smoke": args.smoke, "cpu": cpu_model(), "schema": SCHEMA, "vocabularies": {}}
    for name, tok in vocabularies(args.smoke).items():
        seqs = sequences(tok, n_seq, budget)
        row = {"vocab_size": tok.vocab_size, "tokens": sum(map(len, seqs))}
        row.update(bench_cllm(tok, seqs, budget))
        for engine, fn in engines.items():
            why = missing(engine, "structured-bench")
            if why or (args.smoke and engine != "llguidance"):
                row[engine] = None
                row.setdefault("not_run", {})[engine] = why or "--smoke measures llguidance only"
                continue
            row[engine] = {k: round(v, 4) for k, v in fn(tok, seqs).items()}
        report["vocabularies"][name] = row
    print(json.dumps(report))


if __name__ == "__main__":
    main()
