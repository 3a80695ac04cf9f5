"""GPT-2 small (124M: 12 layers, 12 heads, 768 dims, vocab 50257, context 1024; random weights) on
the CPU, CLLM against the identical PyTorch model (bench/step.py's), in one run. Prints ONE JSON line.

  training    tokens/s of forward + backward + AdamW with clipping over a (B,T) batch, the best of
              --steps timed steps after one warm-up step; peak RSS of the process (ru_maxrss), and
              above its RSS after imports (the model and its buffers)
  generation  tokens/s of batch-1 greedy decoding with a KV cache, --new tokens after a 64-token
              prompt (bench/step.py's loops)
  largest T   the largest T (a power of two up to 1024) at batch B whose memory CLLM's own estimate
              (ModelConfig.memory_bytes) says fits in the memory available now; --seq-lens measures
              other T too (T=1024 needs ~21 GiB by that estimate)

Each measurement runs in a fresh process started by this script, one at a time (peak RSS is per
process, and Numba's and torch's OpenMP runtimes slow each other when loaded together; see
bench/step.py), torch with torch.set_num_threads(2). On a shared machine compare the ratios.

JSON keys: bench, smoke, config, train {"T=..": {cllm, torch, speed_ratio, peak_rss_ratio}}, generate {prompt,
new_tokens, cllm, torch, speed_ratio}, largest_T_cllm_estimate, machine_load_1min, seconds; each engine's
entry is {tokens_per_s, peak_rss_gib, peak_above_imports_gib} or {error}. Without torch (the [interop]
extra) "torch" is null and not_run.torch says why.

Usage: .venv/bin/python bench/gpt2.py [--batch 4] [--seq-lens 256] [--steps 2] [--new 64] [--no-torch] [--smoke]
  --smoke: a 2-layer, 64-dim model (vocab 500) at B=2, T=32, one step, 8 new tokens
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.common import SMOKE_HELP, missing  # noqa: E402

GPT2 = {"vocab_size": 50257, "max_seq_len": 1024, "num_layers": 12, "num_heads": 12, "embed_dim": 768}
SMOKE = {"vocab_size": 500, "max_seq_len": 128, "num_layers": 2, "num_heads": 2, "embed_dim": 64}


def child(engine: str, task: str, sizes: dict, B: int, T: int, steps: int, new: int) -> dict:
    """One measurement in this (fresh) process. The imports are here, not at the top: torch (optional)
    is imported before CLLM, as bench/step.py does, and the parent process needs neither."""
    if engine == "torch":
        import torch  # optional (the interop extra)

        torch.set_num_threads(2)
    sys.path.insert(0, HERE)
    import step as S  # bench/step.py: the PyTorch model and both engines' loops

    from cllm.config import ModelConfig

    cfg = ModelConfig(**sizes)
    rng = np.random.default_rng(0)
    base = S.rss_now()
    if task == "train":
        if engine == "cllm":
            run, _, _ = S.numba_train(cfg, B, T, rng)  # the step, its losses, its durations
        else:
            run = S.torch_train(torch, cfg, B, T, rng)
        rate = max(S.timed_loop(run, 0.0, min_iters=1) for _ in range(steps)) * B * T
    else:
        S.NEW = new
        prompt = rng.integers(0, cfg.vocab_size, S.PROMPT)
        run = S.numba_generate(cfg, prompt) if engine == "cllm" else S.torch_generate(torch, cfg, prompt)
        rate = max(run() for _ in range(steps))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"tokens_per_s": round(rate, 2), "peak_rss_gib": round(peak / 2**30, 3),
            "peak_above_imports_gib": round((peak - base) / 2**30, 3)}


def measure(engine: str, task: str, args, T: int = 0) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", engine, task, "--batch", str(args.batch),
           "--steps", str(args.steps), "--new", str(args.new), "--seq-lens", str(T or 1)]
    cmd += ["--smoke"] if args.smoke else []
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def largest_t(sizes: dict, B: int) -> int:
    from cllm.config import ModelConfig, available_memory_bytes  # only here: the parent imports no CLLM at start

    cfg, have, best = ModelConfig(**sizes), available_memory_bytes(), 0
    for T in (64, 128, 256, 512, 1024):
        if cfg.memory_bytes(B, T) <= have:
            best = T
    return best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-lens", default="256")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    sizes = SMOKE if args.smoke else GPT2
    if args.child:
        print(json.dumps(child(*args.child, sizes, args.batch, int(args.seq_lens), args.steps, args.new)))
        return
    if args.smoke:
        args.batch, args.seq_lens, args.steps, args.new = 2, "32", 1, 8
    no_torch = "not asked for (--no-torch)" if args.no_torch else missing("torch", "interop")
    engines = ["cllm"] + ([] if no_torch else ["torch"])
    t0 = time.time()
    result = {"bench": "gpt2", "smoke": args.smoke, "config": {**sizes, "batch": args.batch}, "train": {},
              "generate": {}, "largest_T_cllm_estimate": largest_t(sizes, args.batch),
              "machine_load_1min": os.getloadavg()[0]}
    if no_torch:
        result["torch"], result["not_run"] = None, {"torch": no_torch}
    for T in (int(t) for t in args.seq_lens.split(",")):
        row = {e: measure(e, "train", args, T) for e in engines}
        if "torch" in row and "tokens_per_s" in row["torch"] and "tokens_per_s" in row["cllm"]:
            row["speed_ratio"] = round(row["cllm"]["tokens_per_s"] / row["torch"]["tokens_per_s"], 3)
            row["peak_rss_ratio"] = round(row["cllm"]["peak_rss_gib"] / row["torch"]["peak_rss_gib"], 3)
        result["train"][f"T={T}"] = row
    gen = {e: measure(e, "generate", args) for e in engines}
    if "torch" in gen and "tokens_per_s" in gen["torch"] and "tokens_per_s" in gen["cllm"]:
        gen["speed_ratio"] = round(gen["cllm"]["tokens_per_s"] / gen["torch"]["tokens_per_s"], 3)
    result["generate"] = {"prompt": 64, "new_tokens": args.new, **gen}
    result["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
