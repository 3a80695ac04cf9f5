"""Two choices of issue #18's second round, each timed against its alternative in this process.
Prints ONE JSON line.

  error_model  a serial loop over 1M float32 values compiled with NumPy's error model (cllm/kernels/_common.py)
               and with Numba's default, Python's (a zero check before every division): GELU's rational
               tanh (cllm/kernels/gelu.gelu_span) and AdamW's update of one block (cllm/kernels/adamw._adamw_block)
  fused_gelu   the MLP's first product with its GELU in one parallel region (matmul_gelu_forward) against
               matmul_forward then gelu_forward, at the baby GPT's and the medium config's sizes (B*T rows,
               C -> 4C). (The same fusion in the backward, the projection's input gradient with the GELU's
               backward, measured 0.93-1.03x the two kernels and was not kept.)
Each figure is the shortest of --repeats timed calls, in microseconds; `ratio` is alternative / chosen.

JSON keys: bench, smoke, error_model {gelu, adamw}, fused_gelu {baby, medium}, loadavg_1min; each
comparison is {n or BT and C, chosen_us, alternative_us, ratio}.

Usage: .venv/bin/python bench/kernels.py [--repeats 50] [--smoke]
  --smoke: 4,096 values for the error model, BT 64 and C 32 for the fusion, 2 repeats
"""

import argparse
import json
import os
import sys
import time

import numpy as np
from numba import njit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cllm.kernels as K  # noqa: E402
from bench.common import SMOKE_HELP  # noqa: E402
from cllm.kernels._common import JIT  # noqa: E402
from cllm.kernels.adamw import _adamw_block  # noqa: E402
from cllm.kernels.gelu import gelu_span  # noqa: E402
from cllm.runtime import configure_threads  # noqa: E402


def best_us(call, repeats: int) -> float:
    call()  # compiles, or loads from the cache
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
    return round(best * 1e6, 1)


def pair(chosen: float, alternative: float) -> dict:
    return {"chosen_us": chosen, "alternative_us": alternative, "ratio": round(alternative / chosen, 2)}


def error_model(n: int, repeats: int) -> dict:
    python_model = {**JIT, "error_model": "python", "cache": False}
    gelu_python = njit(**python_model)(gelu_span.py_func)
    adamw_python = njit(**python_model)(_adamw_block.py_func)
    rng = np.random.default_rng(0)
    x, out = rng.standard_normal(n).astype(np.float32), np.empty(n, np.float32)
    p, g = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    m, v = np.zeros(n, np.float32), np.ones(n, np.float32)
    f = np.float32
    args = (f(0.9), f(0.999), f(0.1), f(0.001), f(1.0), f(1e-3), f(1.0), f(1e-8))
    return {
        "gelu": {"n": n, **pair(best_us(lambda: gelu_span(out, x), repeats),
                                best_us(lambda: gelu_python(out, x), repeats))},
        "adamw": {"n": n, **pair(best_us(lambda: _adamw_block(p, g, m, v, *args), repeats),
                                 best_us(lambda: adamw_python(p, g, m, v, *args), repeats))},
    }


def fused_gelu(BT: int, C: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    H = 4 * C
    inp, w_fc, b_fc = (rng.standard_normal(n).astype(np.float32) for n in (BT * C, H * C, H))
    pre, act = np.empty(BT * H, np.float32), np.empty(BT * H, np.float32)

    def separate():
        K.matmul_forward(pre, inp, w_fc, b_fc, 1, BT, C, H)
        K.gelu_forward(act, pre, BT * H)

    return {"BT": BT, "C": C, **pair(best_us(lambda: K.matmul_gelu_forward(pre, act, inp, w_fc, b_fc, 1, BT, C, H),
                                             repeats), best_us(separate, repeats))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    configure_threads()
    if args.smoke:
        n, baby, medium, repeats, medium_repeats = 1 << 12, (64, 32), (64, 32), 2, 2
    else:  # 1M values; the baby GPT's B*T and C, the medium config's
        n, baby, medium = 1 << 20, (768, 128), (4096, 256)
        repeats, medium_repeats = args.repeats, max(5, args.repeats // 5)
    result = {
        "bench": "kernels",
        "smoke": args.smoke,
        "error_model": error_model(n, repeats),
        "fused_gelu": {"baby": fused_gelu(*baby, repeats), "medium": fused_gelu(*medium, medium_repeats)},
        "loadavg_1min": os.getloadavg()[0],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
