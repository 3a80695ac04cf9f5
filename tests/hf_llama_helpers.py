"""Llama-family HuggingFace directories for the import/export tests, written without torch: config.json
as transformers writes it (either spelling of RoPE's base), random float32 tensors under transformers'
names in model.safetensors or in shards with their index, and a byte-level BPE tokenizer.json in Llama
3's layout trained by the `tokenizers` library when it is installed.

The sizes are odd on purpose: 6 query heads over 2 key/value heads (head size 16; a width of 96 is
whole Q8_0 blocks), an MLP of 100 units (not a multiple of 64), rope_theta 500000, the LM head untied."""
from __future__ import annotations

import json
import os

import numpy as np
from safetensors.numpy import save_file

from cllm.interop.gguf import LLAMA3_SPLIT

SIZES = dict(hidden_size=96, intermediate_size=100, num_hidden_layers=2, num_attention_heads=6,
             num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6)
ARCH = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}


def llama_config(model_type: str = "llama", vocab_size: int = 300, tied: bool = False, new_rope: bool = True,
                 **changes) -> dict:
    """config.json of a Llama-family model at SIZES; new_rope: transformers 5's rope_parameters, else 4.x's
    rope_theta (+ rope_scaling null)."""
    cfg = {"architectures": [ARCH[model_type]], "model_type": model_type, "vocab_size": vocab_size,
           "hidden_act": "silu", "tie_word_embeddings": tied, "torch_dtype": "float32", "bos_token_id": 0,
           "eos_token_id": 0, **SIZES}
    if new_rope:
        cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": 500000.0}
    else:
        cfg.update(rope_theta=500000.0, rope_scaling=None)
    if model_type == "qwen2":
        cfg.update(use_sliding_window=False, sliding_window=None, max_window_layers=2)
    if model_type == "mistral":
        cfg.update(sliding_window=None, head_dim=16)
    cfg.update(changes)
    return cfg


def llama_tensors(cfg: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Random tensors of cfg under transformers' names (norm gains near 1, every tensor distinct)."""
    rng = np.random.default_rng(seed)
    V, C, F = cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"]
    hs = C // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hs, cfg["num_key_value_heads"] * hs

    def r(*shape, base=0.0):
        return (base + rng.normal(0.0, 0.1, shape)).astype(np.float32)

    out = {"model.embed_tokens.weight": r(V, C), "model.norm.weight": r(C, base=1.0)}
    if not cfg.get("tie_word_embeddings"):
        out["lm_head.weight"] = r(V, C)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        out.update({p + "input_layernorm.weight": r(C, base=1.0), p + "self_attn.q_proj.weight": r(q, C),
                    p + "self_attn.k_proj.weight": r(kv, C), p + "self_attn.v_proj.weight": r(kv, C),
                    p + "self_attn.o_proj.weight": r(C, C), p + "post_attention_layernorm.weight": r(C, base=1.0),
                    p + "mlp.gate_proj.weight": r(F, C), p + "mlp.up_proj.weight": r(F, C),
                    p + "mlp.down_proj.weight": r(C, F)})
        if cfg["model_type"] == "qwen2":
            out.update({p + "self_attn.q_proj.bias": r(q), p + "self_attn.k_proj.bias": r(kv),
                        p + "self_attn.v_proj.bias": r(kv)})
    return out


def write_llama_dir(path, cfg: dict, tensors: dict[str, np.ndarray], shards: int = 1, tokenizer=None) -> str:
    """An HF model directory: config.json, model.safetensors (or `shards` files and their index), and
    tokenizer.json when `tokenizer` (a `tokenizers.Tokenizer`) is given."""
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    names = sorted(tensors)
    if shards == 1:
        save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for s in range(shards):
            file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: tensors[n] for n in names[s::shards]}
            save_file(part, os.path.join(path, file), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(part, file))
        with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": sum(t.nbytes for t in tensors.values())}, "weight_map": weight_map},
                      f)
    if tokenizer is not None:
        tokenizer.save(os.path.join(path, "tokenizer.json"))
    return path


def llama3_tokenizer(text: str, vocab_size: int = 300):
    """A byte-level BPE in Llama 3's tokenizer.json layout (Split with its regex, then ByteLevel without
    one; merges ignored for a chunk that is a token), trained by `tokenizers` on text; its specials
    are <|begin_of_text|> (id 0) and <|end_of_text|> (id 1)."""
    import tokenizers as tk  # noqa: PLC0415 - optional: the test extra

    bpe = tk.Tokenizer(tk.models.BPE(ignore_merges=True))
    bpe.pre_tokenizer = tk.pre_tokenizers.Sequence([
        tk.pre_tokenizers.Split(tk.Regex(LLAMA3_SPLIT), "isolated"),
        tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
                                     initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator([text], trainer)
    return bpe


def save_bf16(tensors: dict[str, np.ndarray], path) -> dict[str, np.ndarray]:
    """Write float32 tensors as a bfloat16 safetensors file (each value's upper 16 bits: rounded toward
    zero), as the format lays it out (safetensors' numpy writer has no bfloat16); returns the float32
    values the file holds."""
    header, chunks, offset, held = {}, [], 0, {}
    for name, t in tensors.items():
        bits = (np.ascontiguousarray(t, np.float32).view(np.uint32) >> 16).astype("<u2")
        held[name] = (bits.astype(np.uint32) << 16).view(np.float32)
        header[name] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [offset, offset + bits.nbytes]}
        chunks.append(bits.tobytes())
        offset += bits.nbytes
    raw = json.dumps({"__metadata__": {"format": "pt"}, **header}).encode()
    raw += b" " * (-len(raw) % 8)  # the header is padded to 8 bytes
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw + b"".join(chunks))
    return held
