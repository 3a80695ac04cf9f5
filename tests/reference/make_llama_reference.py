"""Builds the fixture llama_reference.npz: RMSNorm, RoPE and SwiGLU in PyTorch float32, with autograd.

Run by hand, once (torch is never a dependency of CLLM, nor imported by the tests):
    .venv/bin/pip install torch==2.13.0
    .venv/bin/python tests/reference/make_llama_reference.py

Each operation is written with torch's own ops, the way transformers' Llama computes it in float32:
RMSNorm x * rsqrt(mean(x^2) + eps) * w; RoPE q * cos + rotate_half(q) * sin with rotate_half(x) =
cat(-x2, x1) and cos, sin of cat(freqs, freqs), on the q and k heads of a packed qkv buffer (q heads,
then k heads, then v heads; grouped-query: NKV < NH) at positions pos0..pos0+T-1; SwiGLU
silu(gate) * up with gate, up the two halves of each row. The inputs are drawn here with NumPy in
float32; the gradients are those of sum(out * dout) for a random dout. tests/test_llama_kernels.py
runs CLLM's float32 kernels on the same inputs.
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

N, C, EPS = 6, 20, 1e-6  # RMSNorm rows, channels
B, T, NH, NKV, HS, POS0, MAXT, THETA = 2, 5, 4, 2, 8, 3, 12, 10000.0  # RoPE
FN, FF = 7, 12  # SwiGLU rows, hidden units


def grads(out, dout, *inputs):
    (out * dout).sum().backward()
    return [x.grad.numpy() for x in inputs]


def rmsnorm(rng):
    x = torch.tensor(rng.standard_normal((N, C)).astype(np.float32) * 2 + 0.5, requires_grad=True)
    w = torch.tensor(1 + 0.3 * rng.standard_normal(C).astype(np.float32), requires_grad=True)
    dout = torch.tensor(rng.standard_normal((N, C)).astype(np.float32))
    rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS)
    out = x * rstd * w
    dx, dw = grads(out, dout, x, w)
    return {"rms_inp": x.detach().numpy(), "rms_weight": w.detach().numpy(), "rms_dout": dout.numpy(),
            "rms_out": out.detach().numpy(), "rms_rstd": rstd.detach().numpy()[:, 0], "rms_dinp": dx,
            "rms_dweight": dw, "rms_eps": np.array(EPS)}


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope(rng):
    # the table as transformers' LlamaRotaryEmbedding builds it (float32 inverse frequencies and angles)
    inv_freq = 1.0 / (THETA ** (torch.arange(0, HS, 2, dtype=torch.int64).float() / HS))
    freqs = torch.arange(MAXT).float()[:, None] * inv_freq[None, :]  # (MAXT, HS/2)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[POS0:POS0 + T], emb.sin()[POS0:POS0 + T]  # (T, HS) at positions POS0..POS0+T-1
    qkv = torch.tensor(rng.standard_normal((B, T, (NH + 2 * NKV) * HS)).astype(np.float32), requires_grad=True)
    q, k, v = qkv.split([NH * HS, NKV * HS, NKV * HS], dim=-1)
    q = q.view(B, T, NH, HS).transpose(1, 2)  # (B, NH, T, HS), as the Llama attention holds them
    k = k.view(B, T, NKV, HS).transpose(1, 2)
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    out = torch.cat((q.transpose(1, 2).reshape(B, T, -1), k.transpose(1, 2).reshape(B, T, -1), v), dim=-1)
    dout = torch.tensor(rng.standard_normal(out.shape).astype(np.float32))
    (dqkv,) = grads(out, dout, qkv)
    return {"rope_qkv": qkv.detach().numpy(), "rope_out": out.detach().numpy(), "rope_dout": dout.numpy(),
            "rope_dqkv": dqkv, "rope_cos": emb.cos()[:, :HS // 2].numpy(), "rope_sin": emb.sin()[:, :HS // 2].numpy(),
            "rope_sizes": np.array([B, T, NH, NKV, HS, POS0, MAXT]), "rope_theta": np.array(THETA)}


def swiglu(rng):
    inp = torch.tensor(rng.standard_normal((FN, 2 * FF)).astype(np.float32) * 3, requires_grad=True)
    gate, up = inp.split(FF, dim=-1)
    out = F.silu(gate) * up
    dout = torch.tensor(rng.standard_normal((FN, FF)).astype(np.float32))
    (dinp,) = grads(out, dout, inp)
    return {"swiglu_inp": inp.detach().numpy(), "swiglu_out": out.detach().numpy(), "swiglu_dout": dout.numpy(),
            "swiglu_dinp": dinp}


def main():
    rng = np.random.default_rng(2026)
    arrays = {**rmsnorm(rng), **rope(rng), **swiglu(rng)}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "llama_reference.npz")
    np.savez_compressed(path, **arrays)
    print(f"wrote {path}: {', '.join(sorted(arrays))}")


if __name__ == "__main__":
    main()
