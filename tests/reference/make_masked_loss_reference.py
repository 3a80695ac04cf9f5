"""Builds the fixture masked_loss_reference.npz for tests/test_masked_loss.py. Two parts:

1. PyTorch's masked cross-entropy (float64): F.cross_entropy(logits, targets, ignore_index=-1), the mean over
   the positions whose target is not -1, its gradient with respect to the logits, and reduction="none"'s
   per-position losses (0 where ignored). Random logits (N, V), targets with -1 at random positions.
2. CLLM's own unmasked numbers, float32: a tiny gpt2 and a tiny llama model's mean loss, per-token losses and
   gradients of one forward/backward with every target in the vocabulary. This part was run at the commit
   before the masked loss existed, so that the test that reads it shows the masked code gives the unmasked
   path's bits unchanged. Running the script again must reproduce those values exactly.

Run by hand (torch is never a dependency of CLLM, nor imported by the tests):
    PYTHONPATH=$PWD .venv/bin/python tests/reference/make_masked_loss_reference.py
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

from cllm.config import ModelConfig
from cllm.model import Model

N, V = 12, 7  # rows of logits, vocabulary

CONFIGS = {  # the tiny models of part 2 (tests/test_masked_loss.py builds the same)
    "gpt2": ModelConfig(vocab_size=11, max_seq_len=6, num_layers=2, num_heads=2, embed_dim=8, padded_vocab_size=13),
    "llama": ModelConfig(arch="llama", vocab_size=11, max_seq_len=6, num_layers=2, num_heads=4, num_kv_heads=2,
                         embed_dim=16, ffn_dim=24, padded_vocab_size=13, tie_embeddings=False, attention_bias=True),
}
B, T = 2, 6


def torch_part(rng) -> dict:
    logits = rng.normal(0, 2.0, (N, V))
    targets = rng.integers(0, V, N)
    targets[[1, 4, 5, 10]] = -1
    x = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(targets, dtype=torch.long)
    loss = F.cross_entropy(x, t, ignore_index=-1)
    loss.backward()
    token = F.cross_entropy(x.detach(), t, ignore_index=-1, reduction="none")
    return {"ce_logits": logits, "ce_targets": targets.astype(np.int32), "ce_loss": np.float64(loss.item()),
            "ce_dlogits": x.grad.numpy(), "ce_token_losses": token.numpy()}


def model_batch(cfg: ModelConfig, seed: int):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, cfg.vocab_size, (B, T)).astype(np.int32),
            rng.integers(0, cfg.vocab_size, (B, T)).astype(np.int32))


def model_for(cfg: ModelConfig) -> Model:
    """float32, gains and biases not 1 and 0 (every parameter carries gradient), padded rows 0."""
    model = Model(cfg, seed=3)
    model.params += np.random.default_rng(3).normal(0, 0.05, model.params.size).astype(np.float32)
    for name in ("wte", "lm_head"):
        if name in model.p:
            model.p[name][cfg.vocab_size * cfg.embed_dim:] = 0
    return model


def cllm_part() -> dict:
    out = {}
    for arch, cfg in CONFIGS.items():
        model = model_for(cfg)
        idx, targets = model_batch(cfg, 5)
        model.zero_grad()
        _, loss = model.forward(idx, targets)
        out[f"{arch}_token_losses"] = model.token_losses().copy()
        model.backward()
        out[f"{arch}_loss"] = np.float64(loss)
        out[f"{arch}_grads"] = model.grads.copy()
    return out


def main():
    rng = np.random.default_rng(0)
    fixture = {**torch_part(rng), **cllm_part()}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "masked_loss_reference.npz")
    np.savez_compressed(path, **fixture)
    print(f"wrote {path}: {', '.join(fixture)}")


if __name__ == "__main__":
    main()
