"""Builds the fixture dropout_reference.npz: make_reference.py's independent GPT in PyTorch (float64)
with dropout at nanoGPT's sites, given the masks CLLM draws for one key.

Run by hand, once (torch is never a dependency of CLLM, nor imported by the tests):
    .venv/bin/pip install torch==2.13.0
    .venv/bin/python tests/reference/make_dropout_reference.py

The masks come from CLLM's counter-based generator (cllm/kernels/dropout.py) so that both sides drop the
same elements; everything else (the network, the 1/(1-p) scaling, the gradients) is PyTorch's.
Saved: inputs, targets, the flat parameters, p and the key, the four masks (uint8), logits, loss and
every parameter gradient by name. tests/test_dropout.py checks that CLLM still draws these masks.
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the repository: cllm, kernels

import make_reference as R  # noqa: E402  (sets torch's default dtype to float64)

from cllm.kernels.dropout import derive_key, dropout_mask, dropout_threshold  # noqa: E402
from cllm.model import DROP_ATTENTION, DROP_ATTPROJ, DROP_EMBEDDING, DROP_FCPROJ  # noqa: E402

P_DROP = 0.25  # exactly 2^30 / 2^32: CLLM's drop probability is the same number
KEY = 2026


def cllm_masks(B, T):
    """site -> (layers, ...) uint8 masks as Model.forward draws them for KEY (1 = kept)."""
    threshold = dropout_threshold(P_DROP)
    sites = {"embedding": (DROP_EMBEDDING, 1, (B, T, R.C)), "attention": (DROP_ATTENTION, R.L, (B, R.NH, T, T)),
             "attproj": (DROP_ATTPROJ, R.L, (B, T, R.C)), "fcproj": (DROP_FCPROJ, R.L, (B, T, R.C))}
    out = {}
    for name, (site, layers, shape) in sites.items():
        masks = np.zeros((layers, *shape), np.uint8)
        for l in range(layers):
            dropout_mask(masks[l].reshape(-1), masks[l].size, threshold, derive_key(KEY, l, site))
        out[name] = masks
    return out


def main():
    rng = np.random.default_rng(20260301)
    weights = R.init_weights(rng)
    B, T = R.B, R.T
    inputs = rng.integers(0, R.V, (B, T)).astype(np.int32)
    targets = rng.integers(0, R.V, (B, T)).astype(np.int32)
    masks = cllm_masks(B, T)
    P = {name: torch.nn.Parameter(torch.tensor(w)) for name, w in weights.items()}

    def drop(x, site, layer):  # inverted dropout, as torch.nn.functional.dropout scales
        return x * torch.tensor(masks[site][layer], dtype=x.dtype) / (1.0 - P_DROP)

    logits = R.gpt_forward(P, torch.tensor(inputs, dtype=torch.long), drop)
    loss = F.cross_entropy(logits.reshape(-1, R.V), torch.tensor(targets, dtype=torch.long).reshape(-1))
    loss.backward()
    out = {"inputs": inputs, "targets": targets,
           "params": np.concatenate([weights[n].ravel() for n in R.SHAPES]),
           "sizes": np.array([R.V, R.Vp, R.maxT, R.L, R.NH, R.C, B, T], np.int64),
           "p": np.float64(P_DROP), "key": np.int64(KEY),
           "logits": logits.detach().numpy(), "loss": np.float64(loss.item())}
    out.update({"mask_" + name: m for name, m in masks.items()})
    for name in R.SHAPES:
        out["grad_" + name] = P[name].grad.numpy().copy()
    path = os.path.join(HERE, "dropout_reference.npz")
    np.savez_compressed(path, **out)
    kept = np.mean(np.concatenate([m.ravel() for m in masks.values()]))
    print(f"wrote {path}: loss {out['loss']:.6f}, {kept:.3f} of mask elements kept, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
