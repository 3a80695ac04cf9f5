"""HuggingFace's Llama family as CLLM's llama architecture: config.json and tensor names both ways.

Imported: LlamaForCausalLM, Qwen2ForCausalLM and MistralForCausalLM (without a sliding window).
Exported: LlamaForCausalLM. A model CLLM would compute differently (another activation, a RoPE
scaling, a sliding window, a bias CLLM's layout has no place for) is refused with one line naming it.

Tensor names (transformers/models/llama/modeling_llama.py; Qwen2 and Mistral use the same ones). Every
linear layer is nn.Linear, (out, in) as CLLM stores it, so nothing is transposed:

    wte (Vp,C)          <-> model.embed_tokens.weight (V,C)           padded rows V..Vp dropped on export
    ln1w[l] (C)         <-> model.layers.{l}.input_layernorm.weight
    qkvw[l] (QKV,C)     <-> model.layers.{l}.self_attn.q_proj.weight (NH*hs,C), k_proj (NKV*hs,C), v_proj
                            (NKV*hs,C): the three stacked by rows, in that order
    qkvb[l] (QKV)       <-> ...self_attn.q_proj.bias, k_proj.bias, v_proj.bias (attention_bias: Qwen2's layout)
    attprojw[l] (C,C)   <-> ...self_attn.o_proj.weight
    ln2w[l] (C)         <-> ...post_attention_layernorm.weight
    fcw[l] (2F,C)       <-> ...mlp.gate_proj.weight (F,C), mlp.up_proj.weight (F,C) stacked by rows
    fcprojw[l] (C,F)    <-> ...mlp.down_proj.weight
    lnfw (C)            <-> model.norm.weight
    lm_head (Vp,C)      <-> lm_head.weight (V,C), untied models only (tie_word_embeddings false)

transformers' LlamaAttention with attention_bias true also has an o_proj bias: an exported model with
q, k, v biases writes it as zeros (the same function), and an imported Llama's must be zero.
"""
from __future__ import annotations

import numpy as np

from cllm.config import ModelConfig
from cllm.errors import CheckpointError, ConfigError

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}
LAYER = "model.layers.{l}."
# buffers some older files carry, which hold no weights (transformers recomputes them)
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


# ---------------------------------------------------------------------------------------- configs
def rope_theta_from_hf(cfg: dict, where: str) -> float:
    """RoPE's base from either spelling of transformers' config (rope_theta and rope_scaling up to 4.x,
    rope_parameters from 5.0); a scaled or partial RoPE is refused (CLLM computes the plain one)."""
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or {}
    if not isinstance(params, dict) or not isinstance(scaling, dict):
        raise CheckpointError(f"{where}: rope_parameters/rope_scaling is not a JSON object")
    for spec in (params, scaling):
        kind = spec.get("rope_type", spec.get("type", "default"))
        if kind not in (None, "default"):
            raise CheckpointError(f"{where}: rope_scaling of type {kind!r}, which CLLM does not implement (it computes "
                                  "unscaled RoPE only)")
    if float(cfg.get("partial_rotary_factor", params.get("partial_rotary_factor", 1.0))) != 1.0:
        raise CheckpointError(f"{where}: a partial_rotary_factor, which CLLM does not implement (it rotates whole "
                              "heads)")
    return float(params.get("rope_theta", cfg.get("rope_theta", 10000.0)))


def model_config_from_llama(cfg: dict, where: str) -> ModelConfig:
    """A llama ModelConfig from a Llama, Qwen2 or Mistral config.json; what CLLM would compute
    differently is refused, every such feature named in one line."""
    kind = cfg.get("model_type")
    try:
        C, NH = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        sliding = cfg.get("sliding_window") if kind == "mistral" or cfg.get("use_sliding_window") else None
        checks = [
            (cfg.get("hidden_act", "silu") == "silu", f"hidden_act {cfg.get('hidden_act')!r} (CLLM's MLP is SwiGLU)"),
            (sliding is None, f"a sliding attention window of {sliding} (CLLM attends to the whole context)"),
            (all(t == "full_attention" for t in cfg.get("layer_types") or []),
             f"layer_types {cfg.get('layer_types')} (CLLM's layers all attend to the whole context)"),
            (not cfg.get("mlp_bias", False), "biases in the MLP (mlp_bias)"),
            (cfg.get("head_dim") in (None, C // NH), f"head_dim {cfg.get('head_dim')} (CLLM's is hidden_size / "
                                                      f"num_attention_heads = {C // NH})"),
            (int(cfg.get("pretraining_tp", 1)) == 1, f"pretraining_tp {cfg.get('pretraining_tp')}"),
        ]
        bad = [what for ok, what in checks if not ok]
        if bad:
            raise CheckpointError(f"{where}: this {kind} model has {'; '.join(bad)}, which CLLM's model does not "
                                  "compute")
        theta = rope_theta_from_hf(cfg, where)
        return ModelConfig(
            arch="llama", vocab_size=int(cfg["vocab_size"]), max_seq_len=int(cfg["max_position_embeddings"]),
            num_layers=int(cfg["num_hidden_layers"]), num_heads=NH, embed_dim=C,
            num_kv_heads=int(cfg.get("num_key_value_heads") or NH), ffn_dim=int(cfg["intermediate_size"]),
            rope_theta=theta, norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            # Qwen2 always has q, k, v biases; a Llama with attention_bias has them too (and an o_proj bias
            # that must be zero, checked with the tensors)
            attention_bias=kind == "qwen2" or bool(cfg.get("attention_bias", False)))
    except KeyError as exc:
        raise CheckpointError(f"{where} lacks {exc.args[0]!r}: not a {kind} config.json") from None
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where} holds a value of the wrong type ({exc})") from None
    except ConfigError as exc:
        raise CheckpointError(f"{where} holds a model CLLM cannot build: {exc}") from None


def llama_hf_config(config: ModelConfig, special: dict) -> dict:
    """config.json of a LlamaForCausalLM with CLLM's sizes. RoPE's base is written in both spellings:
    rope_theta (transformers 4.x) and rope_parameters (5.x)."""
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": config.vocab_size, "max_position_embeddings": config.max_seq_len,
        "hidden_size": config.embed_dim, "intermediate_size": config.ffn_dim,
        "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads, "head_dim": config.head_size, "hidden_act": "silu",
        "rms_norm_eps": config.norm_eps, "rope_theta": config.rope_theta, "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "attention_bias": config.attention_bias, "attention_dropout": 0.0, "mlp_bias": False, "pretraining_tp": 1,
        "tie_word_embeddings": config.tie_embeddings, "initializer_range": 0.02, "use_cache": True,
        "torch_dtype": "float32", **special,
    }


# ---------------------------------------------------------------------------------------- tensors
def _splits(config: ModelConfig) -> tuple[int, int]:
    """Row offsets in qkvw where the k rows and the v rows start."""
    q = config.num_heads * config.head_size
    return q, q + config.num_kv_heads * config.head_size


def to_llama_tensors(config: ModelConfig, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """CLLM's named tensors -> a LlamaForCausalLM state dict (float32, contiguous)."""
    V, F = config.vocab_size, config.ffn_dim
    k0, v0 = _splits(config)
    out = {"model.embed_tokens.weight": params["wte"][:V], "model.norm.weight": params["lnfw"]}
    if not config.tie_embeddings:
        out["lm_head.weight"] = params["lm_head"][:V]
    for l in range(config.num_layers):
        p = LAYER.format(l=l)
        qkv = params["qkvw"][l]
        out.update({p + "input_layernorm.weight": params["ln1w"][l],
                    p + "self_attn.q_proj.weight": qkv[:k0], p + "self_attn.k_proj.weight": qkv[k0:v0],
                    p + "self_attn.v_proj.weight": qkv[v0:], p + "self_attn.o_proj.weight": params["attprojw"][l],
                    p + "post_attention_layernorm.weight": params["ln2w"][l],
                    p + "mlp.gate_proj.weight": params["fcw"][l][:F], p + "mlp.up_proj.weight": params["fcw"][l][F:],
                    p + "mlp.down_proj.weight": params["fcprojw"][l]})
        if config.attention_bias:
            b = params["qkvb"][l]
            out.update({p + "self_attn.q_proj.bias": b[:k0], p + "self_attn.k_proj.bias": b[k0:v0],
                        p + "self_attn.v_proj.bias": b[v0:],
                        p + "self_attn.o_proj.bias": np.zeros(config.embed_dim, np.float32)})
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def from_llama_tensors(config: ModelConfig, tensors: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """A Llama/Qwen2/Mistral state dict -> CLLM's named tensors of config.param_shapes() (padded
    vocabulary rows zero). A missing, misshapen or unexpected tensor is a CheckpointError naming it."""
    left = {k: v for k, v in tensors.items() if not k.endswith(IGNORED_SUFFIXES)}

    def take(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in left:
            raise CheckpointError(f"{where} has no tensor {name!r}: not the Llama-family model its config.json "
                                  "describes")
        t = left.pop(name)
        if tuple(t.shape) != shape:
            raise CheckpointError(f"tensor {name!r} in {where} has shape {tuple(t.shape)}; its config.json says "
                                  f"{shape}")
        return t.astype(np.float32, copy=False)

    shapes = config.param_shapes()
    V, C, F, hs = config.vocab_size, config.embed_dim, config.ffn_dim, config.head_size
    NH, NKV = config.num_heads, config.num_kv_heads
    out = {name: np.zeros(shape, np.float32) for name, shape in shapes.items()}
    out["wte"][:V] = take("model.embed_tokens.weight", (V, C))
    out["lnfw"][:] = take("model.norm.weight", (C,))
    head = left.pop("lm_head.weight", None)
    if config.tie_embeddings:
        if head is not None and not np.array_equal(head, out["wte"][:V]):
            raise CheckpointError(f"{where}: config.json ties the LM head to the embedding (tie_word_embeddings) but "
                                  "lm_head.weight differs from model.embed_tokens.weight")
    else:
        if head is None:
            raise CheckpointError(f"{where} has no tensor 'lm_head.weight' though its config.json says "
                                  "tie_word_embeddings false")
        left["lm_head.weight"] = head
        out["lm_head"][:V] = take("lm_head.weight", (V, C))
    for l in range(config.num_layers):
        p = LAYER.format(l=l)
        out["ln1w"][l] = take(p + "input_layernorm.weight", (C,))
        out["qkvw"][l] = np.concatenate([take(p + "self_attn.q_proj.weight", (NH * hs, C)),
                                         take(p + "self_attn.k_proj.weight", (NKV * hs, C)),
                                         take(p + "self_attn.v_proj.weight", (NKV * hs, C))])
        if config.attention_bias:
            out["qkvb"][l] = np.concatenate([take(p + "self_attn.q_proj.bias", (NH * hs,)),
                                             take(p + "self_attn.k_proj.bias", (NKV * hs,)),
                                             take(p + "self_attn.v_proj.bias", (NKV * hs,))])
            o_bias = left.pop(p + "self_attn.o_proj.bias", None)
            if o_bias is not None and np.any(o_bias):
                raise CheckpointError(f"{where}: {p}self_attn.o_proj.bias is not zero, and CLLM's layout has biases "
                                      "on q, k and v only (Qwen2's)")
        out["attprojw"][l] = take(p + "self_attn.o_proj.weight", (C, C))
        out["ln2w"][l] = take(p + "post_attention_layernorm.weight", (C,))
        out["fcw"][l] = np.concatenate([take(p + "mlp.gate_proj.weight", (F, C)),
                                        take(p + "mlp.up_proj.weight", (F, C))])
        out["fcprojw"][l] = take(p + "mlp.down_proj.weight", (C, F))
    if left:
        raise CheckpointError(f"{where} holds tensors CLLM's llama layout has no place for, e.g. {sorted(left)[0]!r}; "
                              "importing without them would compute another model")
    return out
