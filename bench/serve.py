"""Benchmark `cli.py serve`: concurrent streaming clients against a real server process.

    python bench/serve.py [--checkpoint DIR] [--clients 16] [--requests 200] [--max-tokens 64]
                          [--max-concurrent 2] [--threads N] [--smoke]

Without --checkpoint it serves an untrained model of `train`'s default size (128 dims, 4 layers,
4 heads, context 64) with a char tokenizer of the bundled tinyshakespeare text: weights do not
change the speed. Every request streams `max_tokens` tokens (`ignore_eos`). Meanwhile /health is
probed every 50 ms, to see whether the event loop stays responsive while the workers generate.

Prints one JSON line: requests/s, generated tokens/s, p50/p99 latency and time to first token,
errors (must be 0), /health latency under load, the server's peak RSS, and as the reference the
tokens/s of the same model generating alone in this process (no server, one worker thread with
the server's per-worker Numba threads), with their ratio, and the CPU seconds of server and clients.

JSON keys: bench, smoke, clients, requests, max_tokens, server_max_concurrent, cpus, model {embed_dim, num_layers,
num_heads, context, vocab_size}, wall_s, req_per_s, tokens_per_s, latency_p50_s, latency_p99_s, ttft_p50_s,
ttft_p99_s, errors, error_samples, health_probes, health_p50_ms, health_p99_ms, health_max_ms,
server_peak_rss_mb, server_cpu_s, client_cpu_s, reference_tokens_per_s, server_vs_reference.

  --smoke: an untrained 1-layer, 32-dim model (context 16), 2 clients, 4 requests of 4 tokens

    python bench/serve.py --sweep [--rounds 3] [--medium] [--smoke]

The batching table (docs/performance.md, Serving) instead: one server (--max-concurrent 16) under 1, 4 and 16
clients in turn, alternated over --rounds rounds (the machine may be shared: the median of each), the aggregate
tokens/s and the time to first token of each, and the ratio of 16 clients' tokens/s to one's; then the prefix
case, on the same model with a context of 1024: the time to first token of a 512-token prompt the server has
not seen (cold) against one whose first 90% it has (the previous cold prompt's first 461 tokens, then 51 new
ones), alternated, one client, one token each. Also the same client counts in this process through Engine.run
(no HTTP, no client process), batched and with the batcher off, alternated. JSON keys: bench, smoke, model,
clients {N: {tokens_per_s, ttft_p50_s, errors}}, tokens_per_s_16_vs_1, engine_tokens_per_s {batched, unbatched:
{N: tokens/s}}, engine_16_vs_1, engine_batched_vs_unbatched_at_16, prefix {prompt_tokens, shared_tokens,
cold_ttft_s, warm_ttft_s, warm_vs_cold}.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import numba
import numpy as np
import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import SMOKE_HELP  # noqa: E402
from cllm.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from cllm.completion import load_for_generation  # noqa: E402
from cllm.config import ModelConfig  # noqa: E402
from cllm.generation import Generator, SamplingConfig  # noqa: E402
from cllm.model import Model  # noqa: E402
from cllm.serve.engine import CompletionRequest, Engine  # noqa: E402
from cllm.tokenizers import load_tokenizer, train_tokenizer  # noqa: E402


def make_checkpoint(directory: str, embed_dim: int = 128, num_layers: int = 4, context: int = 64, num_heads: int = 4,
                    tokenizer: str = "char", vocab_size: int | None = None) -> str:
    with open(os.path.join(ROOT, "data", "tinyshakespeare.txt"), encoding="utf-8") as f:
        text = f.read()
    tok = train_tokenizer(tokenizer, [text], vocab_size, progress=False)
    model = Model(ModelConfig(vocab_size=tok.vocab_size, max_seq_len=context, num_layers=num_layers,
                              num_heads=num_heads, embed_dim=embed_dim), seed=0)
    return save_checkpoint(directory, "step_000000", model, tokenizer=tok)


def model_checkpoint(directory: str, args, context: int) -> str:
    """An untrained model of the size the flags give (weights do not change the speed)."""
    return make_checkpoint(directory, args.embed_dim, args.num_layers, context, args.num_heads, args.tokenizer,
                           args.vocab_size)


def reference_tokens_per_s(checkpoint: str, max_tokens: int, n: int = 8, threads=None) -> float:
    """Generation alone, in this process, through the same Generator the server uses, on a worker
    thread as in the server (on a loaded machine the main thread's OpenMP team can be far slower:
    see the closing note of the serving issue)."""
    with ThreadPoolExecutor(1) as pool:  # the best of 3: the machine may be shared
        return max(pool.submit(_reference, checkpoint, max_tokens, n, threads).result() for _ in range(3))


def _reference(checkpoint: str, max_tokens: int, n: int, threads) -> float:
    model, tok, _ = load_for_generation(checkpoint, None, threads)
    numba.set_num_threads(threads or numba.config.NUMBA_NUM_THREADS)  # per thread: as in a server worker
    gen = Generator(model, eos_id=tok.eos_id)
    ids = tok.encode("ROMEO:")
    list(gen.stream(ids, SamplingConfig(max_new_tokens=4, seed=0)))  # compile / load the kernels
    t0 = time.perf_counter()
    count = 0
    for i in range(n):
        count += sum(1 for _ in gen.stream(ids, SamplingConfig(max_new_tokens=max_tokens, seed=i, ignore_eos=True)))
    return count / (time.perf_counter() - t0)


def start_server(checkpoint: str, args) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, os.path.join(ROOT, "cli.py"), "serve", checkpoint, "--port", "0",
           "--max-concurrent", str(args.max_concurrent), "--max-queue", str(max(64, args.clients))]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.batch_threads:
        cmd += ["--batch-threads", str(args.batch_threads)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        m = re.search(r"on (http://127\.0\.0\.1:\d+/)", line)
        if m:
            return proc, m.group(1)
    proc.wait()
    raise SystemExit("the server did not start:\n" + "".join(lines))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        return psutil.Process(pid).memory_info().rss / 2 ** 20  # current, not peak
    except Exception:
        return None


async def run_load(url: str, args, prompt: str = "ROMEO:") -> dict:
    latencies, ttfts, tokens, errors = [], [], [], []
    health_ms = []
    next_request = iter(range(args.requests))
    done = asyncio.Event()

    async def one(session, i):
        body = {"prompt": prompt, "max_tokens": args.max_tokens, "temperature": 0.8, "seed": i, "stream": True,
                "ignore_eos": True, "stream_options": {"include_usage": True}}
        t0 = time.perf_counter()
        first = None
        usage = None
        async with session.post(url + "v1/completions", json=body) as r:
            if r.status != 200:
                errors.append(f"HTTP {r.status}: {(await r.text())[:200]}")
                return
            buffer = b""
            finished = False
            async for data in r.content.iter_any():
                buffer += data
                while b"\n\n" in buffer:
                    event, buffer = buffer.split(b"\n\n", 1)
                    payload = event[len(b"data: "):]
                    if payload == b"[DONE]":
                        finished = True
                        continue
                    chunk = json.loads(payload)
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    elif first is None and any(c["text"] for c in chunk["choices"]):
                        first = time.perf_counter()
        if not finished or usage is None or usage["completion_tokens"] != args.max_tokens:
            errors.append(f"request {i}: finished={finished} usage={usage}")
            return
        latencies.append(time.perf_counter() - t0)
        ttfts.append((first or time.perf_counter()) - t0)
        tokens.append(usage["completion_tokens"])

    async def client(session):
        for i in next_request:
            try:
                await one(session, i)
            except Exception as exc:  # noqa: BLE001 (every failure is an error to count)
                errors.append(f"request {i}: {exc!r}")

    async def probe(session):
        while not done.is_set():
            t0 = time.perf_counter()
            async with session.get(url + "health") as r:
                await r.read()
            health_ms.append((time.perf_counter() - t0) * 1e3)
            await asyncio.sleep(0.05)

    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=args.clients + 2)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        prober = asyncio.create_task(probe(session))
        t0 = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(args.clients)))
        wall = time.perf_counter() - t0
        done.set()
        await prober

    def pct(values, q, scale=1.0):
        return round(float(np.percentile(values, q)) * scale, 4) if values else None

    return {"wall_s": round(wall, 3), "req_per_s": round(len(latencies) / wall, 3),
            "tokens_per_s": round(sum(tokens) / wall, 1),
            "latency_p50_s": pct(latencies, 50), "latency_p99_s": pct(latencies, 99),
            "ttft_p50_s": pct(ttfts, 50), "ttft_p99_s": pct(ttfts, 99),
            "errors": len(errors), "error_samples": errors[:3],
            "health_probes": len(health_ms), "health_p50_ms": pct(health_ms, 50), "health_p99_ms": pct(health_ms, 99),
            "health_max_ms": round(max(health_ms), 2) if health_ms else None}


SWEEP_CLIENTS = (1, 4, 16)
PREFIX_PROMPT, PREFIX_SHARED = 512, 461  # tokens (characters: the char tokenizer), 90% shared


async def first_token_s(url: str, prompt: list[int]) -> float:
    """Seconds from sending a streamed one-token request to its first text."""
    body = {"prompt": prompt, "max_tokens": 1, "temperature": 0.0, "stream": True, "ignore_eos": True}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        t0 = time.perf_counter()
        async with session.post(url + "v1/completions", json=body) as r:
            if r.status != 200:
                raise SystemExit(f"HTTP {r.status}: {(await r.text())[:200]}")
            async for data in r.content.iter_any():
                if b'"text": "' in data or b'"text":"' in data:
                    return time.perf_counter() - t0
    raise SystemExit("no token came back")


def engine_tokens_per_s(engine: Engine, clients: int, requests_per_client: int, max_tokens: int) -> float:
    """Aggregate tokens/s of `clients` threads each running requests through Engine.run (no HTTP)."""
    count = [0] * clients

    def client(k):
        engine.init_worker()
        for r in range(requests_per_client):
            req = CompletionRequest(prompts=["ROMEO:"], max_tokens=max_tokens, temperature=0.8, seed=100 * k + r,
                                    ignore_eos=True)
            count[k] += engine.run(req, threading.Event(), lambda *a: None)["completion_tokens"]

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(count) / (time.perf_counter() - t0)


def engine_sweep(checkpoint: str, clients, args) -> dict:
    """The same client counts in this process through Engine.run, batched and unbatched (batching=False: each
    request decodes on its own thread, as before cllm/serve/batcher.py), alternated: the batcher's gain without
    the HTTP and client costs."""
    engines = {"batched": Engine.load(checkpoint), "unbatched": Engine.load(checkpoint)}
    engines["unbatched"].batcher = None
    for engine in engines.values():
        engine.warm_up()
    runs = {name: {c: [] for c in clients} for name in engines}
    for _ in range(args.rounds):
        for c in clients:
            for name, engine in engines.items():
                runs[name][c].append(engine_tokens_per_s(engine, c, args.requests_per_client, args.max_tokens))
    return {name: {c: round(float(np.median(v)), 1) for c, v in by.items()} for name, by in runs.items()}


def sweep(args, tmp: str) -> dict:
    """The batching table and the prefix case (the module's docstring)."""
    checkpoint = args.checkpoint or model_checkpoint(tmp, args, args.context)
    clients = (1, 2) if args.smoke else SWEEP_CLIENTS
    args.max_concurrent = max(clients)
    runs = {c: [] for c in clients}
    proc, url = start_server(checkpoint, args)
    try:
        for _ in range(args.rounds):
            for c in clients:
                load = argparse.Namespace(**{**vars(args), "clients": c, "requests": c * args.requests_per_client})
                runs[c].append(asyncio.run(run_load(url, load)))
    finally:
        proc.terminate()
        proc.wait(30)
    in_process = engine_sweep(checkpoint, clients, args)
    table = {c: {"tokens_per_s": float(np.median([r["tokens_per_s"] for r in rs])),
                 "ttft_p50_s": round(float(np.median([r["ttft_p50_s"] for r in rs])), 4),
                 "errors": sum(r["errors"] for r in rs)} for c, rs in runs.items()}
    n, shared = (24, 21) if args.smoke else (PREFIX_PROMPT, PREFIX_SHARED)
    long_dir = os.path.join(tmp, "long")
    os.makedirs(long_dir, exist_ok=True)
    long_ckpt = model_checkpoint(long_dir, args, 2 * n)
    # the prompts as token ids (what the prefix cache matches), cut from the bundled text's tokens
    with open(os.path.join(ROOT, "data", "tinyshakespeare.txt"), encoding="utf-8") as f:
        ids = load_tokenizer(load_checkpoint(long_ckpt).tokenizer_path).encode(f.read()[:200_000])
    proc, url = start_server(long_ckpt, args)
    cold, warm = [], []
    try:
        asyncio.run(first_token_s(url, ids[:n]))  # the kernels of this size, compiled or loaded
        for i in range(2 if args.smoke else 8):
            prompt = ids[(2 * i + 1) * n:(2 * i + 2) * n]  # a text the server has not seen
            cold.append(asyncio.run(first_token_s(url, prompt)))
            other = ids[(2 * i + 2) * n:(2 * i + 3) * n]
            warm.append(asyncio.run(first_token_s(url, prompt[:shared] + other[:n - shared])))
    finally:
        proc.terminate()
        proc.wait(30)
    one, most = table[clients[0]]["tokens_per_s"], table[clients[-1]]["tokens_per_s"]
    cold_s, warm_s = float(np.median(cold)), float(np.median(warm))
    cfg = load_checkpoint(checkpoint).model_config
    batched = in_process["batched"]
    return {"bench": "serve_sweep", "smoke": args.smoke, "cpus": len(os.sched_getaffinity(0)),
            "model": {"embed_dim": cfg.embed_dim, "num_layers": cfg.num_layers, "num_heads": cfg.num_heads,
                      "context": cfg.max_seq_len, "vocab_size": cfg.vocab_size},
            "max_tokens": args.max_tokens, "rounds": args.rounds, "clients": table,
            f"tokens_per_s_{clients[-1]}_vs_1": round(most / one, 2),
            "engine_tokens_per_s": in_process,
            f"engine_{clients[-1]}_vs_1": round(batched[clients[-1]] / batched[clients[0]], 2),
            f"engine_batched_vs_unbatched_at_{clients[-1]}": round(
                batched[clients[-1]] / in_process["unbatched"][clients[-1]], 2),
            "prefix": {"prompt_tokens": n, "shared_tokens": shared, "cold_ttft_s": round(cold_s, 4),
                       "warm_ttft_s": round(warm_s, 4), "warm_vs_cold": round(warm_s / cold_s, 3)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", help="default: an untrained model of train's default size")
    ap.add_argument("--embed-dim", type=int, default=128, help="the untrained model's size (without --checkpoint)")
    ap.add_argument("--num-layers", type=int, default=4)
    ap.add_argument("--num-heads", type=int, default=4)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--tokenizer", choices=("char", "bpe"), default="char", help="the untrained model's tokenizer, "
                    "trained on the bundled text")
    ap.add_argument("--vocab-size", type=int, default=None, help="with --tokenizer bpe")
    ap.add_argument("--medium", action="store_true", help="the medium config: 6 layers, 8 heads, 256 dims, "
                    "context 128, BPE 5000 (sets the five flags above)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--max-concurrent", type=int, default=2, help="the server's --max-concurrent")
    ap.add_argument("--threads", type=int, default=None, help="the server's --threads (Numba threads)")
    ap.add_argument("--batch-threads", type=int, default=None, help="the server's --batch-threads")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    ap.add_argument("--sweep", action="store_true", help="the batching table: 1, 4, 16 clients and the prefix case")
    ap.add_argument("--rounds", type=int, default=3, help="--sweep: rounds of alternated client counts")
    ap.add_argument("--requests-per-client", type=int, default=4, help="--sweep: requests of each client per run")
    args = ap.parse_args()
    if args.medium:
        args.embed_dim, args.num_layers, args.num_heads, args.context = 256, 6, 8, 128
        args.tokenizer, args.vocab_size = "bpe", 5000
    if args.sweep:
        if args.smoke:
            args.embed_dim, args.num_layers, args.context = 32, 1, 16
            args.max_tokens, args.rounds, args.requests_per_client = 4, 1, 1
        with tempfile.TemporaryDirectory(prefix="cllm-bench-serve-") as tmp:
            print(json.dumps(sweep(args, tmp)))
        return
    if args.smoke:
        args.embed_dim, args.num_layers, args.context = 32, 1, 16
        args.clients, args.requests, args.max_tokens = 2, 4, 4
    with tempfile.TemporaryDirectory(prefix="cllm-bench-serve-") as tmp:
        checkpoint = args.checkpoint or model_checkpoint(tmp, args, args.context)
        proc, url = start_server(checkpoint, args)
        try:
            cpu0 = cpu_seconds(proc.pid)
            client_cpu0 = time.process_time()
            result = asyncio.run(run_load(url, args))
            client_cpu = time.process_time() - client_cpu0
            rss = peak_rss_mb(proc.pid)
            cpu = cpu_seconds(proc.pid) - cpu0
        finally:
            proc.terminate()
            proc.wait(30)
        per_worker = args.threads or max(1, len(os.sched_getaffinity(0)) // args.max_concurrent)
        runs = 2 if args.smoke else 8
        reference = reference_tokens_per_s(checkpoint, args.max_tokens, n=runs, threads=per_worker)
        cfg = load_checkpoint(checkpoint).model_config
    out = {"bench": "serve", "smoke": args.smoke, "clients": args.clients, "requests": args.requests,
           "max_tokens": args.max_tokens,
           "server_max_concurrent": args.max_concurrent, "cpus": len(os.sched_getaffinity(0)),
           "model": {"embed_dim": cfg.embed_dim, "num_layers": cfg.num_layers, "num_heads": cfg.num_heads,
                     "context": cfg.max_seq_len, "vocab_size": cfg.vocab_size},
           **result, "server_peak_rss_mb": round(rss, 1) if rss else None,
           "server_cpu_s": round(cpu, 2), "client_cpu_s": round(client_cpu, 2),
           "reference_tokens_per_s": round(reference, 1),
           "server_vs_reference": round(result["tokens_per_s"] / reference, 3) if reference else None}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
