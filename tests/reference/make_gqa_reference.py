"""Builds the fixture gqa_reference.npz: grouped-query attention written out in PyTorch (float64), with
autograd's gradients, for tests/test_gqa.py.

Run by hand, once (torch is never a dependency of CLLM, nor imported by the tests):
    .venv/bin/pip install torch==2.13.0
    .venv/bin/python tests/reference/make_gqa_reference.py

The attention is the one HuggingFace's Llama runs (eager path): q, k, v split from the packed
(B,T,(NH+2*NKV)*hs) rows, each kv head repeated NH/NKV times in a row (repeat_kv), causal softmax of
q k^T / sqrt(hs), times v. Inputs are float32 values (drawn here with NumPy), so the tests run CLLM's
float32 kernels on exactly the numbers that torch saw; torch computes in float64.
Saved per case i: i_sizes (B, T, NH, NKV, hs), i_qkv, i_dout (float32), i_out, i_att, i_dqkv (float64).
"""
import os

import numpy as np
import torch

torch.set_default_dtype(torch.float64)

# (B, T, NH, NKV, hs): groups of 2, 3 and 4 query heads, a group of 1 (plain multi-head), one kv head
# for all (multi-query), odd head sizes, T = 1, and T = 40 (two causal blocks of 32 rows)
CASES = [(2, 7, 4, 2, 8), (1, 5, 3, 1, 5), (2, 6, 2, 2, 4), (1, 1, 6, 2, 3), (1, 40, 6, 3, 7), (2, 9, 8, 2, 6)]


def repeat_kv(x, rep):
    # (B, NKV, T, hs) -> (B, NKV*rep, T, hs): kv head g becomes heads g*rep .. g*rep + rep - 1
    b, nkv, t, hs = x.shape
    return x[:, :, None].expand(b, nkv, rep, t, hs).reshape(b, nkv * rep, t, hs)


def gqa(qkv, B, T, NH, NKV, hs):
    """qkv (B,T,(NH+2NKV)*hs) -> out (B,T,NH*hs), probabilities (B,NH,T,T)"""
    q, k, v = qkv.split([NH * hs, NKV * hs, NKV * hs], dim=-1)
    q = q.view(B, T, NH, hs).transpose(1, 2)
    k = repeat_kv(k.view(B, T, NKV, hs).transpose(1, 2), NH // NKV)
    v = repeat_kv(v.view(B, T, NKV, hs).transpose(1, 2), NH // NKV)
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    scores = (q @ k.transpose(-2, -1)) / np.sqrt(hs)
    att = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
    return (att @ v).transpose(1, 2).reshape(B, T, NH * hs), att


def main():
    rng = np.random.default_rng(0)
    arrays = {}
    for i, (B, T, NH, NKV, hs) in enumerate(CASES):
        W = (NH + 2 * NKV) * hs
        qkv = rng.standard_normal((B, T, W)).astype(np.float32)
        dout = rng.standard_normal((B, T, NH * hs)).astype(np.float32)
        x = torch.tensor(qkv.astype(np.float64), requires_grad=True)
        out, att = gqa(x, B, T, NH, NKV, hs)
        out.backward(torch.tensor(dout.astype(np.float64)))
        arrays.update({f"{i}_sizes": np.array([B, T, NH, NKV, hs], dtype=np.int64), f"{i}_qkv": qkv.ravel(),
                       f"{i}_dout": dout.ravel(), f"{i}_out": out.detach().numpy().ravel(),
                       f"{i}_att": att.detach().numpy().ravel(), f"{i}_dqkv": x.grad.numpy().ravel()})
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gqa_reference.npz")
    np.savez_compressed(path, **arrays)
    print(f"wrote {path}: {len(CASES)} cases")


if __name__ == "__main__":
    main()
