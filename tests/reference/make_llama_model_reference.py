"""Builds the fixture llama_model_reference.npz: a whole Llama model in transformers, float32, with autograd.

Run by hand, once (torch and transformers are never dependencies of CLLM, nor imported by the tests):
    .venv/bin/pip install torch==2.13.0 transformers
    .venv/bin/python tests/reference/make_llama_model_reference.py

transformers' LlamaForCausalLM with random weights at odd sizes: 6 query heads over 2 key/value heads of 8
channels (C = 48), an MLP of 68 units (not a multiple of 64), 3 layers, rope_theta 500000, an untied LM
head, a vocabulary of 61 (CLLM pads it to 64 rows). The weights are saved under CLLM's names and shapes
(cllm/config.py's llama layout): q_proj, k_proj, v_proj stacked into qkvw, gate_proj and up_proj into
fcw, the layers stacked, wte and lm_head padded with zero rows. Also saved: a batch of inputs and
targets, the logits, the mean cross-entropy loss and every parameter's gradient (the same names).
tests/test_llama_model.py loads it into CLLM's Model and compares.
"""
import os

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

V, VP, C, NH, NKV, F, L, MAXT, THETA, EPS = 61, 64, 48, 6, 2, 68, 3, 16, 500000.0, 1e-5
B, T = 2, 11


def stack(tensors):
    return np.stack([t.detach().numpy() for t in tensors])


def padded(matrix):
    out = np.zeros((VP, C), dtype=np.float32)
    out[:V] = matrix
    return out


def cllm_tensors(model, grad: bool) -> dict:
    """CLLM's llama parameters (or their gradients) from the HF model, in cllm/config.py's order."""
    def get(p):
        return p.grad if grad else p.data

    layers = model.model.layers
    att = [layer.self_attn for layer in layers]
    mlp = [layer.mlp for layer in layers]
    return {
        "wte": padded(get(model.model.embed_tokens.weight).numpy()),
        "ln1w": stack(get(layer.input_layernorm.weight) for layer in layers),
        "qkvw": stack(torch.cat([get(a.q_proj.weight), get(a.k_proj.weight), get(a.v_proj.weight)]) for a in att),
        "attprojw": stack(get(a.o_proj.weight) for a in att),
        "ln2w": stack(get(layer.post_attention_layernorm.weight) for layer in layers),
        "fcw": stack(torch.cat([get(m.gate_proj.weight), get(m.up_proj.weight)]) for m in mlp),
        "fcprojw": stack(get(m.down_proj.weight) for m in mlp),
        "lnfw": get(model.model.norm.weight).numpy().copy(),
        "lm_head": padded(get(model.lm_head.weight).numpy()),
    }


def main():
    torch.manual_seed(2026)
    config = LlamaConfig(vocab_size=V, hidden_size=C, intermediate_size=F, num_hidden_layers=L,
                         num_attention_heads=NH, num_key_value_heads=NKV, max_position_embeddings=MAXT,
                         rope_theta=THETA, rms_norm_eps=EPS, tie_word_embeddings=False, attention_bias=False,
                         mlp_bias=False, attn_implementation="eager")
    model = LlamaForCausalLM(config).float()
    with torch.no_grad():  # weights larger than HF's init (std 0.02), so that every layer shapes the logits
        for name, p in model.named_parameters():
            if p.dim() == 1:  # the RMSNorm gains
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.15 * torch.randn_like(p))
    rng = np.random.default_rng(7)
    idx = rng.integers(0, V, (B, T)).astype(np.int32)
    targets = rng.integers(0, V, (B, T)).astype(np.int32)
    out = model(torch.tensor(idx, dtype=torch.long))
    logits = out.logits  # (B,T,V)
    loss = torch.nn.functional.cross_entropy(logits.reshape(B * T, V), torch.tensor(targets, dtype=torch.long)
                                             .reshape(-1))
    loss.backward()
    arrays = {f"param_{k}": v for k, v in cllm_tensors(model, grad=False).items()}
    arrays.update({f"grad_{k}": v for k, v in cllm_tensors(model, grad=True).items()})
    arrays.update({"idx": idx, "targets": targets, "logits": logits.detach().numpy(), "loss": np.array(loss.item()),
                   "sizes": np.array([V, C, NH, NKV, F, L, MAXT]), "rope_theta": np.array(THETA),
                   "norm_eps": np.array(EPS)})
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "llama_model_reference.npz")
    np.savez_compressed(path, **arrays)
    print(f"wrote {path}: loss {loss.item():.6f}")


if __name__ == "__main__":
    main()
