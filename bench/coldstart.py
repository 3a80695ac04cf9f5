"""Cold start of `python cli.py generate` once Numba's on-disk cache is warm. Prints ONE JSON line.

  wall_s        the whole command in a new process (`cli.py generate PROMPT --max-new-tokens 1`),
                best and median of --runs, after one untimed run that fills the JIT cache
  split_s       the same stages timed inside one new process:
                  imports      the generate command's modules (numpy, numba, cllm, kernels)
                  model_load   checkpoint + tokenizer read, model built (configure_threads included)
                  cache_load   the first decode_step call: Numba loads the compiled kernel from
                               its cache (on a batch-1 KV cache of the model's size)
                  first_token  prefilling the prompt and sampling one token

JSON keys: bench, smoke, checkpoint, wall_s_best, wall_s_median, split_s {imports, model_load, cache_load,
first_token}, loadavg_1min.

Usage: .venv/bin/python bench/coldstart.py [--checkpoint checkpoints/shakespeare-char] [--runs 5] [--smoke]
(the checkpoint is any trained one, e.g. from the README's worked example)
  --smoke: one run of each, with an untrained 1-layer, 32-dim checkpoint written to a temporary directory
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import SMOKE_HELP  # noqa: E402
from bench.serve import make_checkpoint  # noqa: E402

# runs in a fresh interpreter and prints the split as JSON
SPLIT = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from cllm.completion import encode_prompt, load_for_generation
from cllm.generation import Generator, SamplingConfig
import cllm.kernels  # noqa: F401
t1 = time.perf_counter()
model, tok, _ = load_for_generation(sys.argv[1])
t2 = time.perf_counter()
model.decode_step(0, 0, model.new_kv_cache(1))
t3 = time.perf_counter()
ids = encode_prompt(tok, sys.argv[2], model.config.max_seq_len, print)
next(Generator(model).stream(ids, SamplingConfig(max_new_tokens=1, seed=0)))
t4 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "model_load": t2 - t1, "cache_load": t3 - t2, "first_token": t4 - t3}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=os.path.join("checkpoints", "shakespeare-char"))
    ap.add_argument("--prompt", default="ROMEO:")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    if args.smoke:
        with tempfile.TemporaryDirectory(prefix="cllm-bench-coldstart-") as tmp:
            args.checkpoint, args.runs = make_checkpoint(tmp, embed_dim=32, num_layers=1, context=16), 1
            return measure(args)
    if not os.path.exists(os.path.join(ROOT, args.checkpoint)) and not os.path.exists(args.checkpoint):
        sys.exit(f"error: no checkpoint at {args.checkpoint}; train one first (README, worked example)")
    measure(args)


def measure(args) -> None:
    cmd = [sys.executable, os.path.join(ROOT, "cli.py"), "generate", args.prompt, "--checkpoint", args.checkpoint,
           "--max-new-tokens", "1", "--no-stream"]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)  # fills the JIT cache if it is cold
    walls = []
    for _ in range(args.runs):
        t = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        walls.append(time.perf_counter() - t)
    splits = []
    for _ in range(args.runs):
        out = subprocess.run([sys.executable, "-c", SPLIT, args.checkpoint, args.prompt], cwd=ROOT, check=True,
                             capture_output=True, text=True)
        splits.append(json.loads(out.stdout.strip().splitlines()[-1]))
    split = {k: round(statistics.median(s[k] for s in splits), 3) for k in splits[0]}
    print(json.dumps({"bench": "coldstart", "smoke": args.smoke, "checkpoint": args.checkpoint,
                      "wall_s_best": round(min(walls), 3),
                      "wall_s_median": round(statistics.median(walls), 3), "split_s": split,
                      "loadavg_1min": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
