"""Grouped-query attention (cllm/kernels/gqa.py, which GPT-2's attention also runs) timed against PyTorch.
Prints ONE JSON line.

  vs_torch      NKV < NH (4 query heads per kv head, hs 64): the forward, forward + backward, and one
                decode step from a KV cache of maxT positions, against torch's
                scaled_dot_product_attention(is_causal, enable_gqa) on the same numbers (autograd for the
                backward; the decode step writes the new k, v into torch's cache and attends over it).
                ratio = torch / cllm (> 1: cllm faster)
Each figure is the shortest of --repeats calls in microseconds (the calls of a side taken in turns), the
best of --rounds rounds. Torch runs in a worker process that this script starts (torch.set_num_threads as
Numba's thread count), in turns with CLLM round by round: loaded into one process, Numba's and torch's
OpenMP runtimes slow whichever runs second by 2 to 4x (bench/step.py measured it), which would make the
ratio an artifact. On a loaded machine compare only the ratios.

Usage: .venv/bin/python bench/gqa.py [--repeats 20] [--rounds 3] [--smoke] [--no-torch]
"""
import os
import sys

# the torch worker gets the environment as it was before CLLM's import set its OpenMP wait policy
USER_ENV = dict(os.environ)

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # bench.common, as a script run from anywhere
from bench.common import SMOKE_HELP, missing  # noqa: E402

# (B, T, NH, NKV, hs); maxT for the decode step (its position is maxT - 1)
FULL = {"gqa": (4, 256, 8, 2, 64), "decode": (4, 32, 4, 64), "maxT": 1024}
SMOKE = {"gqa": (2, 9, 4, 2, 4), "decode": (2, 4, 2, 4), "maxT": 16}


def round_us(calls: dict, repeats: int) -> dict:
    """name -> the shortest of `repeats` calls in microseconds, the calls taken in turns (one of each, then
    again), so that a burst of load on the machine hits them all alike."""
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(repeats):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: s * 1e6 for name, s in best.items()}


def data(sizes: dict):
    """The inputs both sides use (float32, seeded): qkv, dout of the gqa case; the decode case's row and caches."""
    rng = np.random.default_rng(0)
    B, T, NH, NKV, hs = sizes["gqa"]
    nb, dNH, dNKV, dhs = sizes["decode"]
    maxT = sizes["maxT"]
    f = np.float32
    return {"qkv": rng.standard_normal(B * T * (NH + 2 * NKV) * hs).astype(f),
            "dout": rng.standard_normal(B * T * NH * hs).astype(f),
            "row": rng.standard_normal(nb * (dNH + 2 * dNKV) * dhs).astype(f),
            "kcache": rng.standard_normal(nb * dNKV * maxT * dhs).astype(f),
            "vcache": rng.standard_normal(nb * dNKV * maxT * dhs).astype(f)}


def gqa_calls(K, sizes: dict) -> dict:
    """name -> a call of CLLM's gqa kernels on data(sizes), the calls torch_calls times too."""
    d = data(sizes)
    B, T, NH, NKV, hs = sizes["gqa"]
    f = np.float32
    out, att, dqkv = np.empty(B * T * NH * hs, f), np.empty(B * NH * T * T, f), np.empty_like(d["qkv"])

    def forward_backward():
        K.gqa_forward(out, att, d["qkv"], B, T, NH, NKV, hs)
        K.gqa_backward(dqkv, d["dout"], d["qkv"], att, B, T, NH, NKV, hs, True)

    nb, dNH, dNKV, dhs = sizes["decode"]
    maxT = sizes["maxT"]
    d_out = np.empty(nb * dNH * dhs, f)
    return {"forward": lambda: K.gqa_forward(out, att, d["qkv"], B, T, NH, NKV, hs),
            "forward_backward": forward_backward,
            "decode_step": lambda: K.gqa_decode(d_out, d["row"], d["kcache"], d["vcache"], nb, dNH, dNKV, dhs,
                                                maxT - 1, maxT)}


def torch_calls(torch, sizes: dict) -> dict:
    """name -> the same computation in PyTorch (SDPA with enable_gqa; autograd for the backward)."""
    import torch.nn.functional as F  # noqa: PLC0415 (torch is optional)

    d = data(sizes)
    B, T, NH, NKV, hs = sizes["gqa"]
    qkv = torch.from_numpy(d["qkv"]).view(B, T, (NH + 2 * NKV) * hs).requires_grad_(True)
    dout = torch.from_numpy(d["dout"]).view(B, T, NH * hs)

    def attend(x):  # (B,T,W) -> (B,T,NH*hs), as HF's Llama attention lays out q, k, v
        q, k, v = x.split([NH * hs, NKV * hs, NKV * hs], dim=-1)
        q = q.view(B, T, NH, hs).transpose(1, 2)
        k = k.view(B, T, NKV, hs).transpose(1, 2)
        v = v.view(B, T, NKV, hs).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return y.transpose(1, 2).reshape(B, T, NH * hs)

    def forward():
        with torch.no_grad():
            attend(qkv)

    def forward_backward():
        qkv.grad = None
        attend(qkv).backward(dout)

    nb, dNH, dNKV, dhs = sizes["decode"]
    maxT = sizes["maxT"]
    row = torch.from_numpy(d["row"]).view(nb, dNH + 2 * dNKV, dhs)
    kc = torch.from_numpy(d["kcache"]).view(nb, dNKV, maxT, dhs)
    vc = torch.from_numpy(d["vcache"]).view(nb, dNKV, maxT, dhs)

    def decode_step():
        with torch.no_grad():
            kc[:, :, maxT - 1] = row[:, dNH:dNH + dNKV]
            vc[:, :, maxT - 1] = row[:, dNH + dNKV:]
            q = row[:, :dNH].unsqueeze(2)  # (nb, NH, 1, hs): the last position attends to every cached one
            F.scaled_dot_product_attention(q, kc, vc, enable_gqa=True).reshape(nb, dNH * dhs)

    return {"forward": forward, "forward_backward": forward_backward, "decode_step": decode_step}


def torch_worker(sizes: dict, repeats: int, threads: int) -> None:
    """Builds the torch calls, says "ready", then times one round per line read on stdin (one JSON line each)."""
    import torch  # noqa: PLC0415 (optional)

    torch.set_num_threads(threads)
    calls = torch_calls(torch, sizes)
    for call in calls.values():
        call()  # warm-up
    print("ready", flush=True)
    for _ in sys.stdin:
        print(json.dumps(round_us(calls, repeats)), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--torch-worker", help=argparse.SUPPRESS)  # JSON: sizes, repeats, threads
    args = ap.parse_args()
    if args.repeats < 1 or args.rounds < 1:
        print("bench/gqa.py: --repeats and --rounds must be at least 1", file=sys.stderr)
        return 2
    if args.torch_worker:
        w = json.loads(args.torch_worker)
        torch_worker(w["sizes"], w["repeats"], w["threads"])
        return 0
    sizes = SMOKE if args.smoke else FULL
    repeats, rounds = (2, 1) if args.smoke else (args.repeats, args.rounds)

    sys.path.insert(0, ROOT)
    # CLLM only here, after the worker's branch: the worker loads torch's OpenMP runtime, not Numba's
    import cllm.kernels as K  # noqa: PLC0415
    from cllm.runtime import configure_threads  # noqa: PLC0415

    threads = configure_threads()
    calls = gqa_calls(K, sizes)
    for call in calls.values():
        call()  # compiles, or loads from the cache
    worker = None
    if not args.no_torch and importlib.util.find_spec("torch") is not None:
        spec = json.dumps({"sizes": sizes, "repeats": repeats, "threads": threads})
        worker = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--torch-worker", spec],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=USER_ENV)
        if worker.stdout.readline().strip() != "ready":
            print("bench/gqa.py: the torch worker did not start", file=sys.stderr)
            return 1
    ours, theirs = {}, {}
    for _ in range(rounds):  # CLLM's round, then torch's, in turns
        for name, us in round_us(calls, repeats).items():
            ours[name] = min(ours.get(name, float("inf")), us)
        if worker is not None:
            worker.stdin.write("\n")
            worker.stdin.flush()
            for name, us in json.loads(worker.stdout.readline()).items():
                theirs[name] = min(theirs.get(name, float("inf")), us)
    if worker is not None:
        worker.stdin.close()
        worker.wait()

    def r(x):
        return round(x, 1)

    vs_torch = {}
    for name in ("forward", "forward_backward", "decode_step"):
        entry = {"cllm_us": r(ours[name])}
        if name in theirs:
            entry.update(torch_us=r(theirs[name]), ratio=round(theirs[name] / ours[name], 2))
        vs_torch[name] = entry
    result = {"bench": "gqa", "smoke": args.smoke, "threads": threads,
              "sizes": {"gqa (B,T,NH,NKV,hs)": sizes["gqa"],
                        "decode (B,NH,NKV,hs)": sizes["decode"], "maxT": sizes["maxT"]},
              "vs_torch": vs_torch if worker is not None else None,
              "loadavg_1min": os.getloadavg()[0]}
    if worker is None:  # bench/common.py's convention: the side that did not run is null, and not_run says why
        result["not_run"] = {"vs_torch": "--no-torch" if args.no_torch else missing("torch", "interop")}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
