"""The server's continuous batching (cllm/serve/batcher.py, cllm/serve/engine.py): concurrent sequences decode in
shared steps and each gets the tokens Generator.stream gives for its seed (gpt2 and llama, each with its own
sampling settings, through a context overflow too); a shared prompt prefix is reused from the prefix cache; a
consumer that stops frees its slot; the engine batches sampled choices and keeps beam search on its own path."""
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from cllm.config import ModelConfig
from cllm.generation import Generator, SamplingConfig
from cllm.model import Model
from cllm.serve.batcher import Batcher, PrefixCache
from cllm.serve.engine import CompletionRequest, Engine
from cllm.tokenizers import train_tokenizer

GPT2 = dict(vocab_size=31, max_seq_len=20, num_layers=2, num_heads=4, embed_dim=32)
LLAMA = dict(arch="llama", vocab_size=31, max_seq_len=20, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=32,
             ffn_dim=40)
EOS = 30


def roughened(cfg: ModelConfig) -> Model:
    model = Model(cfg, seed=2)
    model.params += np.random.default_rng(2).normal(0, 0.3, model.params.size).astype(np.float32)
    return model


def settings(i: int) -> SamplingConfig:
    """Different sampling per consumer; 30 tokens overflow the context of 20 (a re-prefill of its last half)."""
    return [SamplingConfig(max_new_tokens=30, temperature=0.9, seed=11, ignore_eos=True),
            SamplingConfig(max_new_tokens=12, temperature=0.0),
            SamplingConfig(max_new_tokens=15, temperature=1.2, top_k=5, repeat_penalty=1.3, seed=3),
            SamplingConfig(max_new_tokens=9, temperature=0.7, top_p=0.8, seed=5, presence_penalty=0.5),
            SamplingConfig(max_new_tokens=0, seed=1)][i % 5]


def consume_together(batcher: Batcher, prompts: list[list[int]], cfgs: list[SamplingConfig]) -> list[list[int]]:
    """Each prompt streamed on its own thread, all started at once: [tokens of each]."""
    out = [None] * len(prompts)
    start = threading.Barrier(len(prompts))

    def consume(i):
        start.wait()
        out[i] = list(batcher.stream(prompts[i], cfgs[i]))

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


@pytest.mark.parametrize("arch", [GPT2, LLAMA], ids=["gpt2", "llama"])
def test_batched_sequences_get_the_tokens_of_the_unbatched_path(arch):
    model = roughened(ModelConfig(**arch))
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, 30, size=n).tolist() for n in (3, 7, 1, 12, 5, 4)]  # 6 < GEMM_MIN_ROWS rows
    cfgs = [settings(i) for i in range(len(prompts))]
    want = [list(Generator(model, eos_id=EOS).stream(p, c)) for p, c in zip(prompts, cfgs)]
    batcher = Batcher(model, eos_id=EOS, prefix_cache_bytes=0)
    got = consume_together(batcher, prompts, cfgs)
    assert got == want
    assert sum(len(w) for w in want) > 40
    assert batcher.stats["rows"] > batcher.stats["steps"]  # some steps decoded several sequences
    assert sorted(batcher._free) == list(range(batcher._cache.size // model.config.kv_cache_size(1)))


@pytest.mark.parametrize("arch", [GPT2, LLAMA], ids=["gpt2", "llama"])
def test_a_shared_prefix_is_reused_and_gives_the_full_prefill(arch):
    model = roughened(ModelConfig(**{**arch, "max_seq_len": 64}))
    rng = np.random.default_rng(1)
    head = rng.integers(0, 30, size=40).tolist()
    first, second = head + [1, 2, 3], head[:36] + [4, 5, 6, 7, 8]
    # a prompt is stored once its first token is out: never an EOS here
    cfg = SamplingConfig(max_new_tokens=6, temperature=0.0, ignore_eos=True)
    batcher = Batcher(model, eos_id=EOS, min_prefix=8)
    assert list(batcher.stream(first, cfg)) == list(Generator(model, eos_id=EOS).stream(first, cfg))
    assert batcher.stats["prefix_tokens_reused"] == 0
    got = list(batcher.stream(second, cfg))
    assert batcher.stats["prefix_tokens_reused"] == 36 and batcher.prefix.hits == 1
    assert got == list(Generator(model, eos_id=EOS).stream(second, cfg))
    # the logits after a prefix hit, into a cache that held another sequence: a full prefill's, to float32 rounding
    cache = model.new_kv_cache(1)
    model.prefill(rng.integers(0, 30, size=60).astype(np.int32), 0, cache)
    n = batcher.prefix.lookup(second, cache)
    assert n == len(second) - 1  # its own entry now (stored after its first token)
    np.testing.assert_allclose(model.prefill(np.array(second[n:], np.int32), n, cache),
                               model.prefill(np.array(second, np.int32), 0, model.new_kv_cache(1)), rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", [GPT2, LLAMA], ids=["gpt2", "llama"])
def test_kv_positions_are_the_prompt_positions_exactly(arch):
    # HostDecoding.kv_positions: views (writes reach the cache) of positions 0..n-1 only: copied from one cache
    # into a cache holding another sequence, they carry the prompt over whole (the continuation's logits are equal
    # bit for bit), and together they are n/maxT of the cache
    model = roughened(ModelConfig(**arch))
    rng = np.random.default_rng(3)
    prompt, rest = rng.integers(0, 30, size=9).astype(np.int32), rng.integers(0, 30, size=4).astype(np.int32)
    a, b = model.new_kv_cache(1), model.new_kv_cache(1)
    model.prefill(prompt, 0, a)
    model.prefill(rng.integers(0, 30, size=15).astype(np.int32), 0, b)
    views = model.kv_positions(b, prompt.size)
    assert sum(v.size for v in views) * model.config.max_seq_len == prompt.size * b.size
    for dst, src in zip(views, model.kv_positions(a, prompt.size)):
        dst[...] = src
    assert np.array_equal(model.prefill(rest, prompt.size, b), model.prefill(rest, prompt.size, a))


def test_prefix_cache_keeps_the_most_recent_within_its_budget():
    # caches of 10 floats whose position i is element i: an entry keeps its prompt's positions only
    def positions(cache, n):
        return (cache[:n],)

    pc = PrefixCache(max_bytes=2 * 4 * 4, min_tokens=2, positions=positions)  # two entries of 4 positions
    for i in range(3):
        pc.store([i, 1, 2, 3], np.full(10, i, dtype=np.float32))
    cache = np.full(10, -1, dtype=np.float32)
    assert pc.lookup([0, 1, 2, 3, 4], cache) == 0 and cache[0] == -1  # evicted
    assert pc.lookup([2, 1, 2, 9], cache) == 3
    assert list(cache) == [2, 2, 2, 2] + [-1] * 6  # the entry's positions, nothing beyond
    assert pc.lookup([1, 1, 2, 3], cache) == 3  # at most len - 1: one token is left for the logits
    assert pc.lookup([1, 7], cache) == 0  # under min_tokens


def test_a_consumer_that_stops_frees_its_slot():
    model = roughened(ModelConfig(**GPT2))
    batcher = Batcher(model, eos_id=EOS, prefix_cache_bytes=0)
    stream = batcher.stream([1, 2, 3], SamplingConfig(max_new_tokens=1000, temperature=1.0, seed=0, ignore_eos=True))
    assert len([next(stream) for _ in range(3)]) == 3
    stream.close()
    assert list(batcher.stream([4], SamplingConfig(max_new_tokens=2, temperature=0.0, ignore_eos=True)))
    assert not batcher._active and len(batcher._free) == batcher._cache.size // model.config.kv_cache_size(1)


def test_a_failing_step_reaches_its_consumers_and_the_loop_goes_on():
    model = roughened(ModelConfig(**GPT2))
    batcher = Batcher(model, eos_id=EOS, prefix_cache_bytes=0)
    cfg = SamplingConfig(max_new_tokens=4, temperature=0.0, ignore_eos=True)
    real = model.decode_batch

    def broken(*args):
        raise RuntimeError("the kernel fell over")

    model.decode_batch = broken
    with pytest.raises(RuntimeError, match="fell over"):
        list(batcher.stream([1, 2], cfg))
    model.decode_batch = real
    assert list(batcher.stream([1, 2], cfg)) == list(Generator(model, eos_id=EOS).stream([1, 2], cfg))


def test_engine_batches_sampled_choices_and_keeps_beam_search_apart(tmp_path):
    tok = train_tokenizer("char", ["the cat sat on the mat; the dog ran far away.\n"], None, progress=False)
    model = roughened(ModelConfig(**{**GPT2, "vocab_size": tok.vocab_size, "max_seq_len": 48}))
    batched, plain = Engine(model, tok, str(tmp_path / "x")), Engine(model, tok, str(tmp_path / "x"), batching=False)
    assert plain.batcher is None and batched.batcher is not None

    def run(engine, req):
        texts = {}

        def emit(kind, index, *rest):
            if kind == "delta":
                texts[index] = texts.get(index, "") + rest[0]
        usage = engine.run(req, threading.Event(), emit)
        return texts, usage["completion_tokens"]

    req = CompletionRequest(prompts=["the cat", "a dog "], max_tokens=10, temperature=0.8, seed=4, n=2, stop=["."])
    assert batched.unbatched_reason(req) is None
    assert run(batched, req) == run(plain, req)
    assert batched.batcher.stats["rows"] > 0
    beams = CompletionRequest(prompts=["the"], max_tokens=5, beam_width=2)
    assert batched.unbatched_reason(beams) == "beam search"
    assert run(batched, beams) == run(plain, beams)


def test_bench_serve_sweep_smoke():
    # bench/serve.py --sweep (docs/performance.md's serving table) on its smoke model: every request answered
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "bench/serve.py", "--sweep", "--smoke"], cwd=root, capture_output=True,
                       text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert all(row["errors"] == 0 and row["tokens_per_s"] > 0 for row in out["clients"].values())
    assert out["engine_tokens_per_s"]["batched"]["2"] > 0 and out["prefix"]["warm_ttft_s"] > 0
