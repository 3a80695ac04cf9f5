"""The Llama family's kernels (cllm/kernels/rmsnorm.py, rope.py, swiglu.py) against PyTorch's equivalent, in
this process, float32 on the CPU. Prints ONE JSON line.

  rmsnorm  forward and backward (dinp with overwrite, dweight) against transformers' formula
           x * rsqrt(mean(x^2) + eps) * w with autograd, and against torch.nn.functional.rms_norm
  rope     forward and backward in place on a packed GQA qkv (B,T,(NH+2*NKV)*hs) against transformers'
           q * cos + rotate_half(q) * sin on the q and k heads (a new tensor) with autograd
  swiglu   forward and backward against F.silu(gate) * up with autograd
  fused    the MLP's first product (C -> 2F) with SwiGLU applied per thread block right after it (as
           cllm/kernels/matmul.matmul_gelu_forward does for GELU) against matmul_forward then swiglu_forward
Each figure is the shortest of --repeats calls in microseconds, the two sides alternating call by call (on a
loaded machine both see the same load); `ratio` is torch / cllm (above 1: CLLM faster), or separate / fused.
Without torch the CLLM figures alone are printed. --smoke: tiny sizes, 2 repeats (a check that it runs).

Usage: .venv/bin/python bench/llama_ops.py [--repeats 30] [--smoke]
"""

import argparse
import json
import os
import sys
import time

import numpy as np
from numba import njit, prange

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cllm.kernels as K  # noqa: E402
from bench.common import SMOKE_HELP, missing  # noqa: E402
from cllm.kernels._common import PJIT, ROW_BLOCKS  # noqa: E402
from cllm.kernels.matmul import linear_rows  # noqa: E402
from cllm.kernels.swiglu import swiglu_rows  # noqa: E402
from cllm.runtime import configure_threads  # noqa: E402

try:  # optional: without torch only CLLM's figures are printed
    import torch
except ImportError:
    torch = None

F32 = np.float32


def race(ours, theirs, repeats: int) -> dict:
    """Shortest of `repeats` calls of each, alternating; microseconds and theirs / ours."""
    ours()  # compiles, or loads from the cache
    if theirs is not None:
        theirs()
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for j, call in enumerate((ours, theirs)):
            if call is None:
                continue
            t0 = time.perf_counter()
            call()
            best[j] = min(best[j], time.perf_counter() - t0)
    result = {"cllm_us": round(best[0] * 1e6, 1)}
    if theirs is not None:
        result.update(torch_us=round(best[1] * 1e6, 1), ratio=round(best[1] / best[0], 2))
    return result


def backward_call(out, dout, *leaves):
    # one autograd backward through a graph kept for the next call, gradients reset first
    def call():
        for x in leaves:
            x.grad = None
        out.backward(dout, retain_graph=True)
    return call


def rmsnorm(N, C, repeats, rng):
    eps = 1e-6
    x, w, dout = rng.standard_normal(N * C).astype(F32), (1 + 0.1 * rng.standard_normal(C)).astype(F32), \
        rng.standard_normal(N * C).astype(F32)
    out, rstd, dx, dw = np.empty(N * C, F32), np.empty(N, F32), np.empty(N * C, F32), np.zeros(C, F32)
    fwd = lambda: K.rmsnorm_forward(out, rstd, x, w, N, C, eps)  # noqa: E731
    fwd()
    bwd = lambda: K.rmsnorm_backward(dx, dw, dout, x, w, rstd, N, C, True)  # noqa: E731
    if torch is None:
        return {"forward": race(fwd, None, repeats), "backward": race(bwd, None, repeats)}
    tx = torch.from_numpy(x.reshape(N, C).copy()).requires_grad_()
    tw = torch.from_numpy(w.copy()).requires_grad_()
    td = torch.from_numpy(dout.reshape(N, C))

    def hf():
        return tx * torch.rsqrt(tx.pow(2).mean(-1, keepdim=True) + eps) * tw

    def fused():
        return torch.nn.functional.rms_norm(tx, (C,), tw, eps)

    return {"forward": race(fwd, hf, repeats), "backward": race(bwd, backward_call(hf(), td, tx, tw), repeats),
            "forward_vs_F.rms_norm": race(fwd, fused, repeats),
            "backward_vs_F.rms_norm": race(bwd, backward_call(fused(), td, tx, tw), repeats)}


def rope(B, T, NH, NKV, hs, repeats, rng):
    Wd = (NH + 2 * NKV) * hs
    cos, sin = K.rope_table(T, hs, 10000.0, F32)
    qkv, dq = rng.standard_normal(B * T * Wd).astype(F32), rng.standard_normal(B * T * Wd).astype(F32)
    fwd = lambda: K.rope_forward(qkv, cos, sin, B, T, NH, NKV, hs, 0)  # noqa: E731 (rotates in place, again)
    bwd = lambda: K.rope_backward(dq, cos, sin, B, T, NH, NKV, hs, 0)  # noqa: E731
    if torch is None:
        return {"forward": race(fwd, None, repeats), "backward": race(bwd, None, repeats)}
    tq = torch.from_numpy(qkv.reshape(B, T, Wd).copy()).requires_grad_()
    c = torch.from_numpy(np.concatenate([cos.reshape(T, -1)] * 2, 1))  # (T, hs) as transformers holds them
    s = torch.from_numpy(np.concatenate([sin.reshape(T, -1)] * 2, 1))

    def rotate_half(x):
        return torch.cat((-x[..., hs // 2:], x[..., :hs // 2]), dim=-1)

    def hf():
        q, k, _ = tq.split([NH * hs, NKV * hs, NKV * hs], dim=-1)
        q = q.view(B, T, NH, hs).transpose(1, 2)
        k = k.view(B, T, NKV, hs).transpose(1, 2)
        return q * c + rotate_half(q) * s, k * c + rotate_half(k) * s

    def hf_backward():
        q, k = hf()
        return torch.cat((q.transpose(1, 2).reshape(B, T, -1), k.transpose(1, 2).reshape(B, T, -1)), -1)

    out = hf_backward()
    td = torch.from_numpy(rng.standard_normal(tuple(out.shape)).astype(F32))
    return {"forward": race(fwd, hf, repeats), "backward": race(bwd, backward_call(out, td, tq), repeats)}


def swiglu(N, F, repeats, rng):
    inp, dout = rng.standard_normal(N * 2 * F).astype(F32), rng.standard_normal(N * F).astype(F32)
    out, din = np.empty(N * F, F32), np.empty(N * 2 * F, F32)
    fwd = lambda: K.swiglu_forward(out, inp, N, F)  # noqa: E731
    bwd = lambda: K.swiglu_backward(din, dout, inp, N, F, True)  # noqa: E731
    if torch is None:
        return {"forward": race(fwd, None, repeats), "backward": race(bwd, None, repeats)}
    ti = torch.from_numpy(inp.reshape(N, 2 * F).copy()).requires_grad_()
    td = torch.from_numpy(dout.reshape(N, F))

    def hf():
        g, u = ti.split(F, dim=-1)
        return torch.nn.functional.silu(g) * u

    return {"forward": race(fwd, hf, repeats), "backward": race(bwd, backward_call(hf(), td, ti), repeats)}


@njit(**PJIT)
def matmul_swiglu_forward(out, act, inp, weight, N, C, F):
    # the candidate fusion: out (N,2F) = inp (N,C) @ weight (2F,C)^T, then act (N,F) = swiglu(out), each
    # thread's block of rows right after its product, in one parallel region
    nblk = min(ROW_BLOCKS, N)
    for blk in prange(nblk):
        r0 = blk * N // nblk
        r1 = (blk + 1) * N // nblk
        linear_rows(out, inp, weight, None, C, 2 * F, r0, r1)
        swiglu_rows(act, out, F, r0, r1)


def fused(N, C, F, repeats, rng):
    inp, w = rng.standard_normal(N * C).astype(F32), (0.05 * rng.standard_normal(2 * F * C)).astype(F32)
    pre, act = np.empty(N * 2 * F, F32), np.empty(N * F, F32)

    def separate():
        K.matmul_forward(pre, inp, w, None, 1, N, C, 2 * F)
        K.swiglu_forward(act, pre, N, F)

    r = race(lambda: matmul_swiglu_forward(pre, act, inp, w, N, C, F), separate, repeats)
    return {"fused_us": r["cllm_us"], "separate_us": r["torch_us"], "ratio": r["ratio"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    threads = configure_threads()
    if torch is not None:
        torch.set_num_threads(threads)
    repeats = 2 if args.smoke else args.repeats
    # a small Llama at B*T = 2048 rows: C 512, 8 query heads and 4 kv heads of 64, SwiGLU hidden 1408
    B, T, C, NH, NKV, hs, F = (1, 8, 16, 2, 1, 8, 24) if args.smoke else (8, 256, 512, 8, 4, 64, 1408)
    rng = np.random.default_rng(0)
    result = {
        "bench": "llama_ops", "dtype": "float32", "threads": threads, "torch": torch.__version__ if torch else None,
        "sizes": {"B": B, "T": T, "C": C, "NH": NH, "NKV": NKV, "hs": hs, "F": F},
        "rmsnorm": rmsnorm(B * T, C, repeats, rng),
        "rope": rope(B, T, NH, NKV, hs, repeats, rng),
        "swiglu": swiglu(B * T, F, repeats, rng),
        "fused_matmul_swiglu": fused(B * T, C, F, max(2, repeats // 3), rng),
        "loadavg_1min": os.getloadavg()[0],
        "smoke": args.smoke,
    }
    if torch is None:  # bench/common.py's convention: the side that did not run is null, and not_run says why
        result["not_run"] = {"torch": missing("torch", "interop")}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
