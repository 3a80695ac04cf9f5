"""The optimizer's share of a training step: AdamW against Muon (cllm/optim.py) on the same model and batch.
Prints ONE JSON line.

For each architecture (gpt2, llama) and optimizer (adamw, muon), in this process: the forward + backward of
one (B,T) batch and the optimizer's step are timed separately, each the shortest of --steps, the
configurations taken in turns round by round (so that a burst of load hits them all alike). share =
step / (forward + backward + step). The default size is the 30-minute recipe's (docs/training.md: 4 layers,
4 heads, 192 wide, T=128, B=16, character vocabulary 65); Muon's Newton-Schulz products do not grow with
the batch, so its share falls as B*T grows (--batch, --seq-len).

JSON keys: bench, smoke, cpu, threads, config {layers, heads, embed, seq_len, batch, vocab}, results
{"<arch>/<optimizer>": {fwd_bwd_ms, step_ms, share}}, loadavg_1min.

Usage: .venv/bin/python bench/optimizer.py [--layers 4] [--heads 4] [--embed 192] [--seq-len 128] [--batch 16]
           [--steps 10] [--rounds 3] [--smoke]
"""
import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import SMOKE_HELP, cpu_model  # noqa: E402
from cllm.config import ModelConfig  # noqa: E402
from cllm.model import Model  # noqa: E402
from cllm.optim import AdamW, Muon  # noqa: E402
from cllm.runtime import configure_threads  # noqa: E402

VOCAB = 65  # tiny Shakespeare's characters


def shortest_ms(call, n: int) -> float:
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--embed", type=int, default=192)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10, help="timed calls per configuration and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args(argv)
    if args.smoke:
        args.layers, args.heads, args.embed, args.seq_len, args.batch, args.steps, args.rounds = 1, 2, 32, 16, 2, 2, 1
    if min(args.layers, args.heads, args.embed, args.seq_len, args.batch, args.steps, args.rounds) < 1:
        ap.error("every size, --steps and --rounds must be at least 1")
    threads = configure_threads()
    B, T = args.batch, args.seq_len
    rng = np.random.default_rng(0)
    idx, tgt = rng.integers(0, VOCAB, (B, T)).astype(np.int32), rng.integers(0, VOCAB, (B, T)).astype(np.int32)
    setups = {}
    for arch in ("gpt2", "llama"):
        cfg = ModelConfig(arch=arch, vocab_size=VOCAB, max_seq_len=T, num_layers=args.layers, num_heads=args.heads,
                          embed_dim=args.embed)
        for name, opt in (("adamw", AdamW(lr=2e-3)), ("muon", Muon(lr=2e-3))):
            model = Model(cfg, seed=0)

            def fwd_bwd(model=model):
                model.zero_grad()
                model.loss(idx, tgt)
                model.backward()

            fwd_bwd()
            opt.step(model)  # compiles, allocates the state
            setups[f"{arch}/{name}"] = (fwd_bwd, lambda model=model, opt=opt: opt.step(model))
    best = {key: [float("inf"), float("inf")] for key in setups}
    for _ in range(args.rounds):
        for key, (fwd_bwd, step) in setups.items():
            best[key][0] = min(best[key][0], shortest_ms(fwd_bwd, args.steps))
            best[key][1] = min(best[key][1], shortest_ms(step, args.steps))
    results = {key: {"fwd_bwd_ms": round(f, 3), "step_ms": round(s, 3), "share": round(s / (f + s), 4)}
               for key, (f, s) in best.items()}
    print(json.dumps({"bench": "optimizer", "smoke": args.smoke, "cpu": cpu_model(), "threads": threads,
                      "config": {"layers": args.layers, "heads": args.heads, "embed": args.embed, "seq_len": T,
                                 "batch": B, "vocab": VOCAB},
                      "results": results, "loadavg_1min": os.getloadavg()[0]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
