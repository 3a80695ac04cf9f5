"""Data-parallel training speed: 1 process x 2 threads against 2 MPI processes x 1 thread, on the
medium config (6 layers, 8 heads, 256 dims, T 128, vocab 5000; batch 32 per step in total), and the
time each step spends in the gradient Allreduce. Prints ONE JSON line.

Each measurement runs the real training step (cllm.training's recipe: forward + backward per
micro-batch, one in-place Allreduce of the flat gradients, AdamW) in a fresh process, so that the two
setups do not share a warm cache or thread pool.

JSON keys: bench, smoke, config, global_batch, one_process_two_threads, two_processes_one_thread (each
{processes, threads, step_s, tokens_per_sec, allreduce_ms, allreduce_bytes}), ratio_two_processes (two
processes' tokens/s over one's), allreduce_share_of_step, loadavg_1min.

Usage: .venv/bin/python bench/mpi.py [--steps 6] [--batch 32] [--smoke]     (needs the [mpi] extra)
  --smoke: a 2-layer, 64-dim model (T 32, vocab 500), 2 sequences a step, one timed step
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import SMOKE_HELP  # noqa: E402
from cllm.config import ModelConfig  # noqa: E402
from cllm.distributed import world  # noqa: E402
from cllm.model import Model  # noqa: E402
from cllm.optim import AdamW  # noqa: E402
from cllm.runtime import configure_threads  # noqa: E402

CONFIGS = {  # name -> (model, T)
    "medium": (ModelConfig(vocab_size=5000, max_seq_len=128, num_layers=6, num_heads=8, embed_dim=256), 128),
    "tiny": (ModelConfig(vocab_size=500, max_seq_len=32, num_layers=2, num_heads=2, embed_dim=64), 32),  # --smoke's
}


def worker(name: str, steps: int, global_batch: int, threads: int) -> None:
    comm = world()
    configure_threads(threads)
    cfg, T = CONFIGS[name]
    B = global_batch // comm.size
    model, opt = Model(cfg, seed=0), AdamW()
    rng = np.random.default_rng(comm.rank)
    x = rng.integers(0, cfg.vocab_size, (B, T))
    y = rng.integers(0, cfg.vocab_size, (B, T))
    step_times, reduce_times = [], []
    for i in range(steps + 1):  # step 0 warms up (allocation, first calls)
        comm.barrier()
        t0 = time.perf_counter()
        model.zero_grad()
        _, loss = model.forward(x, y)
        model.backward()
        t1 = time.perf_counter()
        if comm.size > 1:
            comm.allreduce_sum_(model.grads)
            model.grads *= np.float32(1.0 / comm.size)
        t2 = time.perf_counter()
        opt.step(model, loss=loss)
        if i:
            step_times.append(time.perf_counter() - t0)
            reduce_times.append(t2 - t1)
    if comm.is_main:
        step = float(np.median(step_times))
        print(json.dumps({"processes": comm.size, "threads": threads, "step_s": round(step, 4),
                          "tokens_per_sec": round(global_batch * T / step, 1),
                          "allreduce_ms": round(float(np.median(reduce_times)) * 1e3, 2),
                          "allreduce_bytes": int(model.grads.nbytes)}))


def run(cmd) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        sys.exit(f"bench/mpi.py: {' '.join(cmd[:3])} ... failed (exit {out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(lines[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--config", default="medium", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.config, args.steps, args.batch, args.threads)
        return
    if args.smoke:
        args.config, args.steps, args.batch = "tiny", 1, 2
    if args.batch < 2 or args.batch % 2:
        ap.error("--batch must be even (it is split between two processes)")
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    if mpiexec is None:
        sys.exit("bench/mpi.py needs MPI: pip install -e '.[mpi]'")
    me = [sys.executable, os.path.abspath(__file__), "--worker", "--config", args.config, "--steps", str(args.steps),
          "--batch", str(args.batch)]
    single = run(me + ["--threads", "2"])
    multi = run([mpiexec, "-n", "2"] + me + ["--threads", "1"])
    cfg, T = CONFIGS[args.config]
    sizes = f"L{cfg.num_layers} NH{cfg.num_heads} C{cfg.embed_dim} T{T} V{cfg.vocab_size}"
    print(json.dumps({"bench": "mpi", "smoke": args.smoke, "config": f"{args.config} ({sizes})",
                      "global_batch": args.batch,
                      "one_process_two_threads": single, "two_processes_one_thread": multi,
                      "ratio_two_processes": round(multi["tokens_per_sec"] / single["tokens_per_sec"], 3),
                      "allreduce_share_of_step": round(multi["allreduce_ms"] / 1e3 / multi["step_s"], 4),
                      "loadavg_1min": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
