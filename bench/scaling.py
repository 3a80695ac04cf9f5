"""How the Numba engine's cost grows with the sequence length T, the width C and the decoding position.
Prints ONE JSON line.

  step_vs_T    training step (forward + backward + AdamW) for T in 64..512 (L 4, NH 4, C 128, B 8)
  step_vs_C    the same for C in 64..512 (T 64)
  decode_ms_vs_pos  milliseconds per generated token at positions 0..511 (batch 1, KV cache, baby GPT)
For each point: milliseconds, model FLOPs (6 N per token + 12 L C T per token for attention), and
`cost_per_flop` = (ms / FLOPs) relative to the first point: a value that climbs means the step grows
faster than its arithmetic (memory traffic, the T x T attention matrices, cache misses).

JSON keys: bench, smoke, step_vs_T [{T, ms, gflop, cost_per_flop}], step_vs_C [{C, ...}], decode_ms_vs_pos
[{pos, ...}], loadavg_1min.

Usage: .venv/bin/python bench/scaling.py [--repeats 3] [--smoke]
  --smoke: T in 16, 32 and C in 32, 64 at B 2, one timed step each, decoding to position 64
"""

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import SMOKE_HELP  # noqa: E402
from cllm.config import ModelConfig  # noqa: E402
from cllm.model import Model  # noqa: E402
from cllm.optim import AdamW  # noqa: E402


def step_ms(cfg: ModelConfig, B: int, T: int, repeats: int) -> float:
    model, opt = Model(cfg, seed=0), AdamW()
    rng = np.random.default_rng(0)
    x = rng.integers(0, cfg.vocab_size, (B, T))
    y = rng.integers(0, cfg.vocab_size, (B, T))
    best = float("inf")
    for i in range(repeats + 1):  # the first is warm-up (allocation, compilation)
        t = time.perf_counter()
        model.zero_grad()
        _, loss = model.forward(x, y)
        model.backward()
        opt.step(model, loss=loss)
        if i:
            best = min(best, time.perf_counter() - t)
    return best * 1e3


def step_flops(cfg: ModelConfig, B: int, T: int) -> float:
    n = cfg.num_parameters() - (cfg.padded_vocab_size - cfg.vocab_size) * cfg.embed_dim
    return B * T * (6 * n + 12 * cfg.num_layers * cfg.embed_dim * T)


def curve(points):
    base = points[0]["ms"] / points[0]["gflop"]
    for p in points:
        p["cost_per_flop"] = round(p["ms"] / p["gflop"] / base, 3)
    return points


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    if args.smoke:
        B, Ts, Cs, positions, args.repeats = 2, (16, 32), (32, 64), (8, 16, 32, 48), 1
    else:
        B, Ts, Cs, positions = 8, (64, 128, 256, 512), (64, 128, 256, 512), (16, 64, 128, 256, 384, 496)
    decode_len = positions[-1] + 16  # each position's figure is the median of the 32 around it
    out = {"bench": "scaling", "smoke": args.smoke}
    pts = []
    for T in Ts:
        cfg = ModelConfig(vocab_size=65, max_seq_len=T, num_layers=4, num_heads=4, embed_dim=128)
        pts.append(
            {"T": T, "ms": round(step_ms(cfg, B, T, args.repeats), 2), "gflop": round(step_flops(cfg, B, T) / 1e9, 3)}
        )
    out["step_vs_T"] = curve(pts)
    pts = []
    for C in Cs:
        cfg = ModelConfig(vocab_size=65, max_seq_len=64, num_layers=4, num_heads=4, embed_dim=C)
        pts.append(
            {"C": C, "ms": round(step_ms(cfg, B, 64, args.repeats), 2), "gflop": round(step_flops(cfg, B, 64) / 1e9, 3)}
        )
    out["step_vs_C"] = curve(pts)
    cfg = ModelConfig(vocab_size=65, max_seq_len=decode_len, num_layers=4, num_heads=4, embed_dim=128)
    model = Model(cfg, seed=0)
    cache = model.new_kv_cache(1)
    times = []
    for pos in range(decode_len):
        t = time.perf_counter()
        model.decode_step(np.array([pos % 65], dtype=np.int32), pos, cache)
        times.append(time.perf_counter() - t)
    # per-token FLOPs: 2 N for the weights + 4 L C (pos + 1) for the attention over the cache
    n = cfg.num_parameters() - (cfg.padded_vocab_size - cfg.vocab_size) * cfg.embed_dim
    out["decode_ms_vs_pos"] = curve(
        [
            {
                "pos": p,
                "ms": round(float(np.median(times[max(1, p - 16) : p + 16])) * 1e3, 4),
                "gflop": round((2 * n + 4 * cfg.num_layers * cfg.embed_dim * (p + 1)) / 1e9, 6),
            }
            for p in positions
        ]
    )
    out["loadavg_1min"] = os.getloadavg()[0]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
