"""Builds the fixture block_reference.npz: the llama block options' operations in PyTorch float32, with autograd.

Run by hand, once (torch is never a dependency of CLLM, nor imported by the tests):
    .venv/bin/pip install torch==2.13.0
    .venv/bin/python tests/reference/make_block_reference.py

Each operation is written with torch's own ops, as modded-nanogpt writes it: relu2 F.relu(x).square();
QK-norm F.rms_norm over each head's hs channels (no gain) of the q and k heads of a packed qkv buffer
(q heads, then k heads, then v heads, left alone); the logit soft-cap cap * tanh(x / cap). The inputs are
drawn here with NumPy in float32; the gradients are those of sum(out * dout) for a random dout.
tests/test_block_options.py runs CLLM's float32 kernels on the same inputs.
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

RN, RF = 7, 12  # relu2 rows, hidden units
QN, NH, NKV, HS, EPS = 5, 4, 2, 8, 1e-5  # QK-norm rows, heads, head size
SN, CAP = 40, 3.0  # soft-cap elements, cap


def grads(out, dout, x):
    (out * dout).sum().backward()
    return x.grad.numpy()


def relu2(rng):
    x = torch.tensor(rng.standard_normal((RN, RF)).astype(np.float32) * 2, requires_grad=True)
    dout = torch.tensor(rng.standard_normal((RN, RF)).astype(np.float32))
    out = F.relu(x).square()
    return {"relu2_inp": x.detach().numpy(), "relu2_dout": dout.numpy(), "relu2_out": out.detach().numpy(),
            "relu2_dinp": grads(out, dout, x)}


def qknorm(rng):
    qkv = torch.tensor(rng.standard_normal((QN, NH + 2 * NKV, HS)).astype(np.float32) * 3 + 0.5, requires_grad=True)
    dout = torch.tensor(rng.standard_normal((QN, NH + 2 * NKV, HS)).astype(np.float32))
    qk = F.rms_norm(qkv[:, :NH + NKV], (HS,), eps=EPS)
    out = torch.cat([qk, qkv[:, NH + NKV:]], dim=1)
    return {"qk_inp": qkv.detach().numpy(), "qk_dout": dout.numpy(), "qk_out": out.detach().numpy(),
            "qk_dinp": grads(out, dout, qkv), "qk_sizes": np.array([QN, NH, NKV, HS]), "qk_eps": np.array(EPS)}


def softcap(rng):
    x = torch.tensor(rng.standard_normal(SN).astype(np.float32) * 4, requires_grad=True)
    dout = torch.tensor(rng.standard_normal(SN).astype(np.float32))
    out = CAP * torch.tanh(x / CAP)
    return {"cap_inp": x.detach().numpy(), "cap_dout": dout.numpy(), "cap_out": out.detach().numpy(),
            "cap_dinp": grads(out, dout, x), "cap": np.array(CAP)}


def main():
    rng = np.random.default_rng(0)
    out = {**relu2(rng), **qknorm(rng), **softcap(rng)}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "block_reference.npz")
    np.savez(path, **out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
