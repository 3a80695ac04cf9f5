"""HuggingFace transformers interop: a CLLM checkpoint as a GPT-2 or Llama directory, and back.

This module reads and writes the directory and GPT-2's names; cllm/interop/hf_llama.py holds the Llama
family's (a llama checkpoint exports as LlamaForCausalLM; Llama, Qwen2 and Mistral directories import).

    OUT_DIR/config.json             GPT2Config (model_type gpt2, GPT2LMHeadModel, tied head)
            model.safetensors       transformers' tensor names, Conv1D orientation, fp32
            generation_config.json  bos/eos ids
            tokenizer.json          the `tokenizers` library's file (byte-level BPE, or WordLevel for
            tokenizer_config.json   char and word), loaded by AutoTokenizer as PreTrainedTokenizerFast;
                                    the config holds the special tokens and the chat template, if any

Tensor names (transformers' GPT2LMHeadModel; transformers/models/gpt2/modeling_gpt2.py). GPT-2's
linear layers are Conv1D: y = x @ W + b with W (in, out), the transpose of CLLM's (out, in):

    wte (Vp,C)     -> transformer.wte.weight (V,C)       padded rows V..Vp dropped
    wpe            -> transformer.wpe.weight (maxT,C)
    ln1w/ln1b[l]   -> transformer.h.{l}.ln_1.weight/bias
    qkvw[l] (3C,C) -> transformer.h.{l}.attn.c_attn.weight (C,3C)   + qkvb -> .attn.c_attn.bias
    attprojw[l]    -> transformer.h.{l}.attn.c_proj.weight (C,C)^T  + attprojb
    ln2w/ln2b[l]   -> transformer.h.{l}.ln_2.weight/bias
    fcw[l] (4C,C)  -> transformer.h.{l}.mlp.c_fc.weight (C,4C)      + fcb
    fcprojw[l]     -> transformer.h.{l}.mlp.c_proj.weight (4C,C)    + fcprojb
    lnfw/lnfb      -> transformer.ln_f.weight/bias
    (lm_head.weight is tied to transformer.wte.weight and not stored, as transformers saves it)

Import reads the same names, with or without the `transformer.` prefix (GPT2Model and older hub
files), ignores the causal-mask buffers old files carry (`h.{l}.attn.bias`, `attn.masked_bias`),
and never opens a pickle (`pytorch_model.bin`): such a directory is refused with a line saying to
convert it to safetensors.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from cllm.checkpoint import load_checkpoint, save_checkpoint, set_pointer
from cllm.config import ModelConfig
from cllm.errors import CheckpointError, ConfigError, TokenizerError
from cllm.fileio import default_mode, fsync_path
from cllm.interop.hf_llama import (
    ARCHITECTURES,
    from_llama_tensors,
    llama_hf_config,
    model_config_from_llama,
    to_llama_tensors,
)
from cllm.tokenizers import load_tokenizer
from cllm.tokenizers.imports import import_tokenizer
from cllm.tokenizers.word import WORD_PATTERN

LAYER_NORM_EPS = 1e-5  # cllm/kernels/layernorm.py's eps: an HF model with another eps computes something else
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")  # transformers' names of GPT-2's tanh-approximated GELU
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
SAFETENSORS_DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": "<u2"}  # bfloat16's bits read as uint16

# per layer: CLLM tensor -> (HF name under transformer.h.{l}., transposed for Conv1D)
LAYER_NAMES = {
    "ln1w": ("ln_1.weight", False), "ln1b": ("ln_1.bias", False),
    "qkvw": ("attn.c_attn.weight", True), "qkvb": ("attn.c_attn.bias", False),
    "attprojw": ("attn.c_proj.weight", True), "attprojb": ("attn.c_proj.bias", False),
    "ln2w": ("ln_2.weight", False), "ln2b": ("ln_2.bias", False),
    "fcw": ("mlp.c_fc.weight", True), "fcb": ("mlp.c_fc.bias", False),
    "fcprojw": ("mlp.c_proj.weight", True), "fcprojb": ("mlp.c_proj.bias", False),
}
GLOBAL_NAMES = {"wpe": "wpe.weight", "lnfw": "ln_f.weight", "lnfb": "ln_f.bias"}  # wte: see below


# ---------------------------------------------------------------------------------------- tensors
def to_hf_tensors(config: ModelConfig, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """CLLM's named tensors -> transformers' GPT2LMHeadModel state dict (float32, contiguous)."""
    out = {"transformer.wte.weight": params["wte"][:config.vocab_size]}
    for name, hf in GLOBAL_NAMES.items():
        out["transformer." + hf] = params[name]
    for l in range(config.num_layers):
        for name, (hf, transpose) in LAYER_NAMES.items():
            t = params[name][l]
            out[f"transformer.h.{l}.{hf}"] = t.T if transpose else t
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def from_hf_tensors(config: ModelConfig, tensors: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """transformers' GPT-2 tensors (prefix already stripped) -> CLLM's named tensors of
    config.param_shapes(), the padded vocabulary rows zero. A missing or misshapen tensor is a
    CheckpointError naming it."""
    def get(hf: str, shape: tuple[int, ...]) -> np.ndarray:
        if hf not in tensors:
            raise CheckpointError(f"{where} has no tensor {hf!r}: not a GPT-2 model")
        t = tensors[hf]
        if tuple(t.shape) != shape:
            raise CheckpointError(f"tensor {hf!r} in {where} has shape {tuple(t.shape)}; its config.json says {shape}")
        return t.astype(np.float32, copy=False)

    shapes = config.param_shapes()
    V, C = config.vocab_size, config.embed_dim
    out = {name: np.zeros(shape, np.float32) for name, shape in shapes.items()}
    out["wte"][:V] = get("wte.weight", (V, C))
    for name, hf in GLOBAL_NAMES.items():
        out[name][...] = get(hf, shapes[name])
    for l in range(config.num_layers):
        for name, (hf, transpose) in LAYER_NAMES.items():
            shape = shapes[name][1:]
            t = get(f"h.{l}.{hf}", shape[::-1] if transpose else shape)
            out[name][l] = t.T if transpose else t
    return out


# ---------------------------------------------------------------------------------------- configs
def hf_config(config: ModelConfig, tokenizer) -> dict:
    """config.json of a GPT2LMHeadModel with CLLM's sizes (no dropout: CLLM trains without it)."""
    ids = _special_ids(tokenizer)
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": config.vocab_size, "n_positions": config.max_seq_len, "n_ctx": config.max_seq_len,
        "n_embd": config.embed_dim, "n_layer": config.num_layers, "n_head": config.num_heads, "n_inner": None,
        "activation_function": "gelu_new", "layer_norm_epsilon": LAYER_NORM_EPS,
        "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "initializer_range": 0.02,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True, "use_cache": True, "torch_dtype": "float32", **ids,
    }


def _special_ids(tokenizer) -> dict:
    if tokenizer is None:
        return {}
    ids = {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.pad_id}
    return {k: v for k, v in ids.items() if v is not None}


def model_config_from_hf(cfg: dict, where: str) -> ModelConfig:
    """A ModelConfig from a GPT-2 config.json; a model CLLM would compute differently is refused."""
    if cfg.get("model_type") != "gpt2":
        raise CheckpointError(f"{where} describes a {cfg.get('model_type')!r} model; CLLM imports model_type gpt2, "
                              f"{', '.join(ARCHITECTURES)}")
    checks = [
        (cfg.get("activation_function", "gelu_new") in TANH_GELUS,
         f"activation_function {cfg.get('activation_function')!r} (CLLM computes the tanh GELU, gelu_new)"),
        (abs(float(cfg.get("layer_norm_epsilon", LAYER_NORM_EPS)) - LAYER_NORM_EPS) < 1e-12,
         f"layer_norm_epsilon {cfg.get('layer_norm_epsilon')} (CLLM's LayerNorm uses {LAYER_NORM_EPS})"),
        (cfg.get("n_inner") in (None, 4 * int(cfg.get("n_embd", 0))),
         f"n_inner {cfg.get('n_inner')} (CLLM's MLP is 4 x n_embd)"),
        (cfg.get("scale_attn_weights", True), "scale_attn_weights false"),
        (not cfg.get("scale_attn_by_inverse_layer_idx", False), "scale_attn_by_inverse_layer_idx true"),
        (cfg.get("tie_word_embeddings", True), "an untied LM head (tie_word_embeddings false)"),
    ]
    bad = [what for ok, what in checks if not ok]
    if bad:
        raise CheckpointError(f"{where}: this GPT-2 variant has {'; '.join(bad)}, which CLLM's model does not compute")
    try:
        return ModelConfig(vocab_size=cfg["vocab_size"], max_seq_len=cfg["n_positions"], num_layers=cfg["n_layer"],
                           num_heads=cfg["n_head"], embed_dim=cfg["n_embd"])
    except KeyError as exc:
        raise CheckpointError(f"{where} lacks {exc.args[0]!r}: not a GPT-2 config.json") from None
    except ConfigError as exc:
        raise CheckpointError(f"{where} holds an impossible model: {exc}") from None


# ---------------------------------------------------------------------------------------- tokenizers
def tokenizer_files(tokenizer, max_len: int) -> dict[str, dict]:
    """file name -> JSON of the tokenizer in a form AutoTokenizer loads with the same ids: byte-level
    BPE as CLLM writes it (BPETokenizer.export_hf); char and word as a WordLevel model whose
    pre-split is the CLLM tokenizer's (each character; WORD_PATTERN's matches)."""
    kind = getattr(tokenizer, "kind", None)
    if hasattr(tokenizer, "export_hf"):  # byte-level BPE (trained or imported), WordPiece
        with tempfile.TemporaryDirectory() as tmp:
            tokenizer.export_hf(os.path.join(tmp, "tokenizer.json"))
            with open(os.path.join(tmp, "tokenizer.json"), encoding="utf-8") as f:
                tok_json = json.load(f)
    elif kind in ("char", "word"):
        tok_json = _word_level_json(tokenizer)
    else:
        raise TokenizerError(f"cannot export a {kind!r} tokenizer to HuggingFace; it has no tokenizer.json form")
    # the special-token strings a chat template sees: the same in transformers as in CLLM (cllm/chat/template.py)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_len,
              "clean_up_tokenization_spaces": False, "add_bos_token": False, "add_eos_token": False,
              **tokenizer.special_token_strings()}
    if getattr(tokenizer, "chat_template", None) is not None:
        config["chat_template"] = tokenizer.chat_template
    return {"tokenizer.json": tok_json, "tokenizer_config.json": config}


def special_ids(tokenizer) -> dict[str, int]:
    """special token -> id (an imported byte-level BPE keeps its file's specials apart)."""
    return getattr(tokenizer, "specials", None) or getattr(tokenizer, "special_tokens", {})


def _word_level_json(tokenizer) -> dict:
    vocab = {tokenizer.id_to_token(i): i for i in range(tokenizer.vocab_size)}
    if tokenizer.kind == "char":
        # one piece per character; an unseen character has no id: CLLM drops it, and tokenizers raises
        # (its unk_token must be a string, and this one is no character of the vocabulary)
        split = {"type": "Split", "pattern": {"Regex": r"[\s\S]"}, "behavior": "Isolated", "invert": False}
        decoder, unk = {"type": "Fuse"}, "<unk>"
    else:
        # the pattern's matches are the pieces, everything else (spaces) is dropped: invert + Removed
        pattern = WORD_PATTERN.replace("\\u2019", "\u2019")  # Oniguruma spells escapes differently
        split = {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Removed", "invert": True}
        decoder, unk = None, tokenizer.id_to_token(tokenizer.unk_id)
    specials = [i for i in (tokenizer.pad_id, tokenizer.unk_id, tokenizer.bos_id, tokenizer.eos_id,
                            getattr(tokenizer, "mask_id", None)) if i is not None]
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": tokenizer.id_to_token(i), "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True} for i in sorted(set(specials))],
        "normalizer": None, "pre_tokenizer": split, "post_processor": None, "decoder": decoder,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": unk},
    }


# ---------------------------------------------------------------------------------------- export
def export_hf(checkpoint: str, out_dir: str) -> tuple[str, ModelConfig]:
    """Write CHECKPOINT as a transformers GPT-2 (or, for a llama checkpoint, LlamaForCausalLM) directory
    OUT_DIR (new or empty), all files or none:
    they are written into a temporary directory beside it that is renamed into place."""
    ckpt = load_checkpoint(checkpoint)
    config = ckpt.model_config
    config.check_exportable("export-hf (transformers' config)")
    tokenizer = load_tokenizer(ckpt.tokenizer_path) if ckpt.tokenizer_path else None
    files = tokenizer_files(tokenizer, config.max_seq_len) if tokenizer is not None else {}
    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise CheckpointError(f"{out_dir!r} already exists and is not an empty directory; choose a new OUT_DIR")
    parent = os.path.dirname(out_dir)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix="." + os.path.basename(out_dir) + ".", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise CheckpointError(f"cannot write to {parent!r}: {exc.strerror or exc}; choose another OUT_DIR") from exc
    llama = config.arch == "llama"
    try:
        tensors = to_llama_tensors(config, ckpt.params) if llama else to_hf_tensors(config, ckpt.params)
        save_file(tensors, os.path.join(tmp, "model.safetensors"),
                  metadata={"format": "pt"})  # transformers refuses a safetensors file without format=pt
        files["config.json"] = llama_hf_config(config, _special_ids(tokenizer)) if llama else hf_config(config,
                                                                                                       tokenizer)
        files["generation_config.json"] = {"_from_model_config": True, **_special_ids(tokenizer)}
        for name, obj in files.items():
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                json.dump(obj, f, ensure_ascii=False, indent=1)
        _publish_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ckpt.path, config


def _publish_dir(tmp: str, out_dir: str) -> None:
    """fsync tmp's files and rename tmp to out_dir (replacing an empty directory)."""
    os.chmod(tmp, default_mode(directory=True))
    for name in os.listdir(tmp):
        os.chmod(os.path.join(tmp, name), default_mode())
        fsync_path(os.path.join(tmp, name))
    if os.path.isdir(out_dir):
        os.rmdir(out_dir)  # empty (checked before): os.replace cannot replace a directory
    os.replace(tmp, out_dir)
    fsync_path(os.path.dirname(out_dir))


# ---------------------------------------------------------------------------------------- import
def read_hf_tensors(hf_dir: str) -> dict[str, np.ndarray]:
    """The tensors of model.safetensors (or its shards), names without the `transformer.` prefix and
    without the causal-mask buffers; a pickle-only directory is refused, never opened."""
    single = os.path.join(hf_dir, "model.safetensors")
    index = os.path.join(hf_dir, "model.safetensors.index.json")
    if os.path.isfile(single):
        files = [single]
    elif os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{index} is unreadable or not a safetensors index ({exc})") from None
        files = [os.path.join(hf_dir, os.path.basename(s)) for s in shards]
    else:
        pickles = sorted(f for f in os.listdir(hf_dir) if f.endswith(PICKLE_SUFFIXES))
        if pickles:
            raise CheckpointError(f"{hf_dir} holds its weights as {pickles[0]}, a pickle file, which CLLM never loads "
                                  "(loading a pickle can run code); convert it to safetensors first, e.g. "
                                  "transformers' model.save_pretrained(dir, safe_serialization=True)")
        raise CheckpointError(f"{hf_dir} has no model.safetensors; not a HuggingFace model directory")
    tensors = {}
    for file in files:
        try:
            tensors.update(load_safetensors(file))
        except (SafetensorError, OSError, ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"{file} is missing, corrupt or holds a dtype other than float32, float16 or "
                                  f"bfloat16 ({exc})") from None
    out = {}
    for name, t in tensors.items():
        name = name.removeprefix("transformer.")
        if name.endswith(("attn.bias", "attn.masked_bias")) and t.ndim == 4:
            continue  # the causal mask older transformers stored as a buffer
        out[name] = t
    return out


def load_safetensors(path: str) -> dict[str, np.ndarray]:
    """A safetensors file's tensors. NumPy has no bfloat16, the type most Llama-family models are published
    in, so a file holding one is read here (8-byte header length, JSON header, data) and each bfloat16
    tensor widened exactly to float32: its 16 bits are a float32's upper half."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    specs = {k: v for k, v in header.items() if k != "__metadata__"}
    if not any(spec["dtype"] == "BF16" for spec in specs.values()):
        return load_file(path)
    data = np.memmap(path, np.uint8, "r", offset=8 + size)
    out = {}
    for name, spec in specs.items():
        if spec["dtype"] not in SAFETENSORS_DTYPES:
            raise ValueError(f"tensor {name!r} is {spec['dtype']}")
        begin, end = spec["data_offsets"]
        t = data[begin:end].view(SAFETENSORS_DTYPES[spec["dtype"]]).reshape(spec["shape"])
        out[name] = (t.astype(np.uint32) << 16).view(np.float32) if spec["dtype"] == "BF16" else np.array(t)
    return out


def import_hf(hf_dir: str, checkpoint_dir: str) -> tuple[str, bool]:
    """Read a GPT-2, Llama, Qwen2 or Mistral HuggingFace directory into CHECKPOINT_DIR/step_000000 (with `latest`); its
    tokenizer.json, when present, becomes the checkpoint's tokenizer. Returns (step directory,
    whether a tokenizer came along)."""
    hf_dir = os.fspath(hf_dir)
    if not os.path.isdir(hf_dir):
        raise CheckpointError(f"{hf_dir!r} is not a directory; give a HuggingFace model directory (config.json + "
                              "model.safetensors)")
    cfg_path = os.path.join(hf_dir, "config.json")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{hf_dir} has no config.json; not a HuggingFace model directory") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{cfg_path} is unreadable or not valid JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_path} is not a JSON object; not a HuggingFace config.json")
    if cfg.get("model_type") in ARCHITECTURES:
        config = model_config_from_llama(cfg, cfg_path)
        params = from_llama_tensors(config, read_hf_tensors(hf_dir), hf_dir)
    else:
        config = model_config_from_hf(cfg, cfg_path)
        tensors = read_hf_tensors(hf_dir)
        _check_tied_head(tensors, hf_dir)
        params = from_hf_tensors(config, tensors, hf_dir)
    if not all(np.isfinite(t).all() for t in params.values()):
        raise CheckpointError(f"{hf_dir} holds non-finite weights (NaN or Inf): the model is broken")
    tokenizer = _read_tokenizer(hf_dir, config)
    if tokenizer is not None and tokenizer.vocab_size < config.vocab_size:
        # Qwen2.5's embedding has 151,936 rows for 151,665 tokens: the rows past the tokenizer are padding
        # (ModelConfig's V..Vp), which no output reaches, so nothing can generate an id it cannot decode
        config = dataclasses.replace(config, vocab_size=tokenizer.vocab_size,
                                     padded_vocab_size=config.padded_vocab_size)
    checkpoint_dir = os.fspath(checkpoint_dir)
    if os.path.lexists(os.path.join(checkpoint_dir, "latest")):
        raise CheckpointError(f"{checkpoint_dir!r} already holds checkpoints (it has a 'latest' link); import into "
                              "a new directory")
    if os.path.exists(checkpoint_dir) and not os.path.isdir(checkpoint_dir):
        raise CheckpointError(f"{checkpoint_dir!r} is a file, not a directory; choose another checkpoint directory")
    model = _ParamsModel(config, params)
    source = {"imported_from": os.path.abspath(hf_dir), "format": "huggingface"}
    try:
        path = save_checkpoint(checkpoint_dir, "step_000000", model, tokenizer=tokenizer, train_config=source,
                               state={"step": 0, **source})
        set_pointer(checkpoint_dir, "latest", "step_000000")
    except OSError as exc:
        raise CheckpointError(f"cannot write the checkpoint to {checkpoint_dir!r}: {exc.strerror or exc}; choose "
                              "another directory") from exc
    return path, tokenizer is not None


class _ParamsModel:
    """What save_checkpoint reads of a model (config, named_tensors), without allocating a Model's
    gradient and optimizer buffers (4x the parameters) just to save weights."""

    def __init__(self, config: ModelConfig, params: dict[str, np.ndarray]):
        self.config, self._params = config, params

    def named_tensors(self) -> dict[str, np.ndarray]:
        return self._params


def _check_tied_head(tensors: dict[str, np.ndarray], where: str) -> None:
    head = tensors.pop("lm_head.weight", None)
    if head is not None and "wte.weight" in tensors and not np.array_equal(head, tensors["wte.weight"]):
        raise CheckpointError(f"{where} has an LM head (lm_head.weight) different from its token embedding; CLLM's "
                              "head is tied to the embedding, so this model cannot be imported exactly")


def _read_tokenizer(hf_dir: str, config: ModelConfig):
    path = os.path.join(hf_dir, "tokenizer.json")
    if not os.path.isfile(path):
        return None
    tokenizer = import_tokenizer(path)
    if tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(f"{path} has {tokenizer.vocab_size:,} tokens but the model's vocabulary is "
                              f"{config.vocab_size:,}: the model has no embedding for the last ones")
    return tokenizer
