"""Data-parallel training speed: 1 process x 2 threads against 2 MPI processes x 1 thread, on the
seed's config (6 layers, 8 heads, 256 dims, T 128, vocab 5000; batch 32 per step in total), and the
time each step spends in the gradient Allreduce. Prints ONE JSON line.

Each measurement runs the real training step (cllm.training's recipe: forward + backward per
micro-batch, one in-place Allreduce of the flat gradients, AdamW) in a fresh process, so that the two
setups do not share a warm cache or thread pool.

Usage: .venv/bin/python bench/mpi.py [--steps 6] [--batch 32]      (needs the [mpi] extra)
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


def worker(steps: int, global_batch: int, threads: int) -> None:
    from cllm.config import ModelConfig
    from cllm.distributed import world
    from cllm.model import Model
    from cllm.optim import AdamW
    from cllm.runtime import configure_threads

    comm = world()
    configure_threads(threads)
    cfg = ModelConfig(vocab_size=5000, max_seq_len=128, num_layers=6, num_heads=8, embed_dim=256)
    B, T = global_batch // comm.size, 128
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
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.worker:
        worker(args.steps, args.batch, args.threads)
        return
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
    if mpiexec is None:
        sys.exit("bench/mpi.py needs MPI: pip install -e '.[mpi]'")
    me = [sys.executable, os.path.abspath(__file__), "--worker", "--steps", str(args.steps), "--batch", str(args.batch)]
    single = run(me + ["--threads", "2"])
    multi = run([mpiexec, "-n", "2"] + me + ["--threads", "1"])
    print(json.dumps({"bench": "mpi", "config": "seed (L6 NH8 C256 T128 V5000)", "global_batch": args.batch,
                      "one_process_two_threads": single, "two_processes_one_thread": multi,
                      "ratio_two_processes": round(multi["tokens_per_sec"] / single["tokens_per_sec"], 3),
                      "allreduce_share_of_step": round(multi["allreduce_ms"] / 1e3 / multi["step_s"], 4),
                      "loadavg_1min": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
