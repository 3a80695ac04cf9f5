"""Builds the fixture gpt_reference.npz with an independent GPT written in PyTorch (float64).

Run by hand, once (torch is never a dependency of CLLM, nor imported by the tests):
    .venv/bin/pip install torch==2.13.0
    .venv/bin/python tests/reference/make_reference.py

The model is the one docs/design.md describes: pre-LayerNorm blocks, causal multi-head attention over a
packed qkv projection, GELU (tanh approximation) MLP with 4C hidden units, learned positions, final
LayerNorm, LM head tied to the first V rows of wte (Vp, C). Its weights are drawn here with NumPy
(not by CLLM), every tensor random, so that biases and LayerNorm gains carry gradients too.
Saved: inputs, targets, the flat initial parameters in CLLM's layout (docs/design.md's order), logits,
loss, every parameter gradient by name, the losses of 10 AdamW steps, and the hyperparameters.
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
torch.manual_seed(0)

V, Vp, maxT, L, NH, C = 37, 64, 8, 2, 2, 16
B, T = 3, 8  # T == maxT: the last learned position is used
LR, BETA1, BETA2, EPS, WD, CLIP, STEPS = 1e-2, 0.9, 0.95, 1e-8, 0.1, 1.3, 10  # clips some steps, not others
DECAYED = ("wte", "wpe", "qkvw", "attprojw", "fcw", "fcprojw")

SHAPES = {  # docs/design.md's order
    "wte": (Vp, C), "wpe": (maxT, C),
    "ln1w": (L, C), "ln1b": (L, C),
    "qkvw": (L, 3 * C, C), "qkvb": (L, 3 * C),
    "attprojw": (L, C, C), "attprojb": (L, C),
    "ln2w": (L, C), "ln2b": (L, C),
    "fcw": (L, 4 * C, C), "fcb": (L, 4 * C),
    "fcprojw": (L, C, 4 * C), "fcprojb": (L, C),
    "lnfw": (C,), "lnfb": (C,),
}


def init_weights(rng):
    w = {}
    for name, shape in SHAPES.items():
        if name in ("ln1w", "ln2w", "lnfw"):
            w[name] = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name in ("attprojw", "fcprojw"):
            w[name] = 0.02 / np.sqrt(2 * L) * rng.standard_normal(shape) * 4
        elif name in DECAYED:
            w[name] = 0.08 * rng.standard_normal(shape)
        else:  # biases
            w[name] = 0.02 * rng.standard_normal(shape)
    w["wte"][V:] = 0.0  # padded vocabulary rows
    return w


def no_dropout(x, site, layer):
    return x


def gpt_forward(P, idx, drop=no_dropout):
    """P: name -> tensor of SHAPES; idx (B,T) long -> logits (B,T,V). drop(x, site, layer) is
    dropout at nanoGPT's sites (make_dropout_reference.py): "embedding", "attention", "attproj", "fcproj"."""
    Bn, Tn = idx.shape
    hs = C // NH
    x = drop(P["wte"][idx] + P["wpe"][:Tn], "embedding", 0)
    mask = torch.tril(torch.ones(Tn, Tn, dtype=torch.bool))
    for l in range(L):
        h = F.layer_norm(x, (C,), P["ln1w"][l], P["ln1b"][l], eps=1e-5)
        qkv = F.linear(h, P["qkvw"][l], P["qkvb"][l])
        q, k, v = qkv.split(C, dim=-1)
        q = q.view(Bn, Tn, NH, hs).transpose(1, 2)
        k = k.view(Bn, Tn, NH, hs).transpose(1, 2)
        v = v.view(Bn, Tn, NH, hs).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / np.sqrt(hs)
        att = drop(att.masked_fill(~mask, float("-inf")).softmax(dim=-1), "attention", l)
        y = (att @ v).transpose(1, 2).reshape(Bn, Tn, C)
        x = x + drop(F.linear(y, P["attprojw"][l], P["attprojb"][l]), "attproj", l)
        h = F.layer_norm(x, (C,), P["ln2w"][l], P["ln2b"][l], eps=1e-5)
        h = F.gelu(F.linear(h, P["fcw"][l], P["fcb"][l]), approximate="tanh")
        x = x + drop(F.linear(h, P["fcprojw"][l], P["fcprojb"][l]), "fcproj", l)
    x = F.layer_norm(x, (C,), P["lnfw"], P["lnfb"], eps=1e-5)
    return x @ P["wte"][:V].T


def main():
    rng = np.random.default_rng(20240326)
    weights = init_weights(rng)
    inputs = rng.integers(0, V, (B, T)).astype(np.int32)
    targets = rng.integers(0, V, (B, T)).astype(np.int32)
    P = {name: torch.nn.Parameter(torch.tensor(w)) for name, w in weights.items()}
    idx, tgt = torch.tensor(inputs, dtype=torch.long), torch.tensor(targets, dtype=torch.long)

    logits = gpt_forward(P, idx)
    loss = F.cross_entropy(logits.reshape(-1, V), tgt.reshape(-1))
    loss.backward()
    out = {
        "inputs": inputs, "targets": targets,
        "params": np.concatenate([weights[n].ravel() for n in SHAPES]),
        "logits": logits.detach().numpy(), "loss": np.float64(loss.item()),
        "sizes": np.array([V, Vp, maxT, L, NH, C, B, T], np.int64),
        "hyper": np.array([LR, BETA1, BETA2, EPS, WD, CLIP, STEPS], np.float64),
    }
    for name in SHAPES:
        out["grad_" + name] = P[name].grad.numpy().copy()

    params = list(P.values())
    opt = torch.optim.AdamW(
        [{"params": [P[n] for n in SHAPES if n in DECAYED], "weight_decay": WD},
         {"params": [P[n] for n in SHAPES if n not in DECAYED], "weight_decay": 0.0}],
        lr=LR, betas=(BETA1, BETA2), eps=EPS)
    losses, norms = [], []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(gpt_forward(P, idx).reshape(-1, V), tgt.reshape(-1))
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, CLIP)))
        opt.step()
        losses.append(loss.item())
    out["losses"] = np.array(losses)
    out["grad_norms"] = np.array(norms)
    out["final_params"] = np.concatenate([P[n].detach().numpy().ravel() for n in SHAPES])
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpt_reference.npz")
    np.savez_compressed(path, **out)
    print(f"wrote {path}: loss {out['loss']:.6f}, losses {np.round(losses, 4)}, "
          f"grad norms {np.round(norms, 3)} (clip {CLIP}), {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
