"""GGUF for llama.cpp (and ollama): a CLLM checkpoint as llama.cpp's `gpt2` architecture (a llama
checkpoint as its `llama` architecture, described at the end of this docstring), written with the
`gguf` package, the writer llama.cpp itself publishes (its gguf-py directory).

Metadata written, and where llama.cpp requires or reads each key:

    general.architecture                 "gpt2": llama_model_loader picks the architecture by it (required;
                                         the GGUFWriter writes it); src/llama-arch.cpp LLM_ARCH_NAMES
    general.name                         the checkpoint's directory (optional, shown in logs)
    general.file_type                    0 ALL_F32, 1 MOSTLY_F16, 7 MOSTLY_Q8_0 (gguf LlamaFileType; informative)
    general.quantization_version         2 (GGML_QNT_VERSION), written for q8_0 as convert_hf_to_gguf.py does
    gpt2.context_length                  maxT: llama_model::load_hparams get_key(LLM_KV_CONTEXT_LENGTH) (required);
                                         also position_embd's row count
    gpt2.embedding_length                C: load_hparams, LLM_KV_EMBEDDING_LENGTH (required)
    gpt2.block_count                     L: load_hparams, LLM_KV_BLOCK_COUNT (required)
    gpt2.feed_forward_length             4C: load_hparams, LLM_KV_FEED_FORWARD_LENGTH (n_ff: ffn_up's shape)
    gpt2.attention.head_count            NH: load_hparams, LLM_KV_ATTENTION_HEAD_COUNT (head_count_kv defaults
                                         to it: no grouped-query attention)
    gpt2.attention.layer_norm_epsilon    1e-5: src/models/gpt2.cpp load_arch_hparams get_key(...LAYERNORM_EPS)
                                         (required by the gpt2 loader)
    tokenizer.ggml.model                 "gpt2" (byte-level BPE): src/llama-vocab.cpp llama_vocab::impl::load
    tokenizer.ggml.pre                   the pre-split regex by name: "gpt-2" (GPT-2's) or "llama-bpe" (the
                                         GPT-4/cl100k split CLLM uses by default); llama-vocab.cpp maps these
                                         names to LLAMA_VOCAB_PRE_TYPE_GPT2 / _LLAMA3 and refuses unknown ones
    tokenizer.ggml.tokens                each id's token in GPT-2's byte-to-unicode spelling (as tokenizer.json)
    tokenizer.ggml.token_type            1 NORMAL, 3 CONTROL for the special tokens (llama-vocab.cpp)
    tokenizer.ggml.merges                "left right" in rank order: required for BPE ("cannot find tokenizer
                                         merges in model file", llama-vocab.cpp)
    tokenizer.ggml.bos_token_id / eos_token_id   <|endoftext|> (optional; read by llama-vocab.cpp)
    tokenizer.ggml.add_bos_token         false: GPT-2 starts without a BOS (llama-vocab.cpp add_bos)

Tensors, named and shaped as src/models/gpt2.cpp load_arch_tensors creates them (ggml lists the
fastest dimension first, so ggml {C, V} is NumPy (V, C): CLLM's (out, in) layout needs no transpose):

    token_embd.weight {C,V}  position_embd.weight {C,maxT}  output_norm.weight/bias {C}
    blk.{l}.attn_norm.weight/bias {C}  blk.{l}.attn_qkv.weight {C,3C} .bias {3C}
    blk.{l}.attn_output.weight {C,C} .bias {C}  blk.{l}.ffn_norm.weight/bias {C}
    blk.{l}.ffn_up.weight {C,4C} .bias {4C}  blk.{l}.ffn_down.weight {4C,C} .bias {C}
    (output.weight is optional there, TENSOR_NOT_REQUIRED: without it the head is token_embd, tied as in CLLM)

f16 and q8_0 store the 2-D weight matrices so and keep norms and biases f32 (llama.cpp's "mostly"
file types); a matrix whose rows are not a multiple of Q8_0's 32-value block stays f16.

A llama checkpoint (ModelConfig.arch "llama") is written as architecture `llama`, with the keys
src/models/llama.cpp and llama_model::load_hparams read: llama.context_length, .embedding_length,
.block_count, .feed_forward_length (F), .attention.head_count (NH), .attention.head_count_kv (NKV),
.attention.layer_norm_rms_epsilon, .rope.freq_base (rope_theta), .rope.dimension_count (hs: every
dimension rotated) and .vocab_size, and the tensors llama.cpp's load_arch_tensors creates:

    token_embd.weight {C,V}  output_norm.weight {C}  output.weight {C,V} (untied models only)
    blk.{l}.attn_norm.weight {C}  blk.{l}.attn_q.weight {C,NH*hs}  attn_k.weight / attn_v.weight {C,NKV*hs}
    blk.{l}.attn_q.bias / attn_k.bias / attn_v.bias (attention_bias only; optional in llama.cpp)
    blk.{l}.attn_output.weight {C,C}  blk.{l}.ffn_norm.weight {C}
    blk.{l}.ffn_gate.weight / ffn_up.weight {C,F}  blk.{l}.ffn_down.weight {F,C}

llama.cpp's llama graph runs RoPE in its "normal" mode, which rotates adjacent pairs of dimensions;
CLLM (as transformers) rotates dimension i with i + hs/2. The q and k rows (and biases) of every head
are therefore written permuted as llama.cpp's own converter writes them (convert_hf_to_gguf.py,
LlamaModel.permute): row 2i of a head is CLLM's row i, row 2i+1 is CLLM's row i + hs/2. The attention
scores, dot products within a head, are unchanged (cllm/kernels/rope.py states the relation).
"""
from __future__ import annotations

import os

import numpy as np

from cllm.checkpoint import load_checkpoint
from cllm.config import ModelConfig
from cllm.errors import CheckpointError, MissingDependencyError, TokenizerError
from cllm.fileio import default_mode, fsync_path
from cllm.interop.hf import special_ids, tokenizer_files
from cllm.tokenizers import load_tokenizer
from cllm.tokenizers.bpe import PATTERNS

DTYPES = ("f32", "f16", "q8_0")
# Llama 3's split as its tokenizer.json spells it (an imported Llama 3 tokenizer keeps this string): the same
# split as CLLM's gpt4 pattern, and the one llama.cpp runs for tokenizer.ggml.pre "llama-bpe"
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
# split pattern -> llama.cpp tokenizer.ggml.pre
PRE_TOKENIZERS = {PATTERNS["gpt2"]: "gpt-2", PATTERNS["gpt4"]: "llama-bpe", LLAMA3_SPLIT: "llama-bpe"}
LAYER_TENSORS = {  # CLLM per-layer tensor -> llama.cpp name under blk.{l}.
    "ln1w": "attn_norm.weight", "ln1b": "attn_norm.bias", "qkvw": "attn_qkv.weight", "qkvb": "attn_qkv.bias",
    "attprojw": "attn_output.weight", "attprojb": "attn_output.bias", "ln2w": "ffn_norm.weight",
    "ln2b": "ffn_norm.bias", "fcw": "ffn_up.weight", "fcb": "ffn_up.bias", "fcprojw": "ffn_down.weight",
    "fcprojb": "ffn_down.bias",
}
GLOBAL_TENSORS = {"wpe": "position_embd.weight", "lnfw": "output_norm.weight", "lnfb": "output_norm.bias"}


def gguf_tensors(config: ModelConfig, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """llama.cpp's gpt2 tensor name -> float32 array (NumPy order), padded vocabulary rows dropped."""
    out = {"token_embd.weight": params["wte"][:config.vocab_size]}
    out.update({gg: params[name] for name, gg in GLOBAL_TENSORS.items()})
    for l in range(config.num_layers):
        out.update({f"blk.{l}.{gg}": params[name][l] for name, gg in LAYER_TENSORS.items()})
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def permute_rope_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Rows (or bias entries) of n_head heads in rotate-half order -> llama.cpp's interleaved order:
    per head, (2, hs/2) -> (hs/2, 2), so that row 2i is row i and row 2i+1 is row i + hs/2."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama_gguf_tensors(config: ModelConfig, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """llama.cpp's llama tensor name -> float32 array (NumPy order), padded vocabulary rows dropped, q and
    k in llama.cpp's interleaved row order."""
    V, F = config.vocab_size, config.ffn_dim
    NH, NKV, hs = config.num_heads, config.num_kv_heads, config.head_size
    k0, v0 = NH * hs, (NH + NKV) * hs
    out = {"token_embd.weight": params["wte"][:V], "output_norm.weight": params["lnfw"]}
    if not config.tie_embeddings:
        out["output.weight"] = params["lm_head"][:V]
    for l in range(config.num_layers):
        p, qkv = f"blk.{l}.", params["qkvw"][l]
        out.update({p + "attn_norm.weight": params["ln1w"][l], p + "attn_q.weight": permute_rope_rows(qkv[:k0], NH),
                    p + "attn_k.weight": permute_rope_rows(qkv[k0:v0], NKV), p + "attn_v.weight": qkv[v0:],
                    p + "attn_output.weight": params["attprojw"][l], p + "ffn_norm.weight": params["ln2w"][l],
                    p + "ffn_gate.weight": params["fcw"][l][:F], p + "ffn_up.weight": params["fcw"][l][F:],
                    p + "ffn_down.weight": params["fcprojw"][l]})
        if config.attention_bias:
            b = params["qkvb"][l]
            out.update({p + "attn_q.bias": permute_rope_rows(b[:k0], NH),
                        p + "attn_k.bias": permute_rope_rows(b[k0:v0], NKV), p + "attn_v.bias": b[v0:]})
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def vocabulary(tokenizer) -> tuple[list[str], list[int], list[str], str]:
    """(tokens, token types, merges, tokenizer.ggml.pre) of a byte-level BPE tokenizer, in the
    spelling of its HuggingFace tokenizer.json (which llama.cpp's convert script copies too)."""
    if getattr(tokenizer, "kind", None) not in ("bpe", "bpe-vocab"):
        raise TokenizerError(f"GGUF export needs a byte-level BPE tokenizer, and this checkpoint's is "
                             f"{getattr(tokenizer, 'kind', None)!r}: llama.cpp's gpt2 tokenizer model reads BPE "
                             "tokens and merges only; train with --tokenizer bpe")
    pre = PRE_TOKENIZERS.get(tokenizer.pattern)
    if pre is None:
        raise TokenizerError("GGUF export needs the gpt2 or gpt4 (Llama 3's) pre-split pattern (llama.cpp knows "
                             "its pre-tokenizers by name); this tokenizer has another one")
    # llama.cpp ignores merges (takes a chunk that is a token whole) for the llama-bpe split only, as
    # Llama 3's tokenizer.json says (src/llama-vocab.cpp, LLAMA_VOCAB_PRE_TYPE_LLAMA3: ignore_merges)
    whole_words = getattr(tokenizer, "whole_words", False) and pre != "llama-bpe"
    if whole_words or any(getattr(tokenizer, k, False) for k in ("prefix_space", "nfc")):
        raise TokenizerError("this imported tokenizer ignores merges, adds a prefix space or normalizes to NFC, "
                             "which llama.cpp's gpt2 tokenizer does not; it cannot go into a GGUF file exactly")
    model = tokenizer_files(tokenizer, 0)["tokenizer.json"]["model"]
    tokens = [""] * tokenizer.vocab_size
    for text, i in model["vocab"].items():
        tokens[i] = text
    special = set(special_ids(tokenizer).values())
    types = [3 if i in special else 1 for i in range(len(tokens))]  # gguf.TokenType CONTROL / NORMAL
    return tokens, types, list(model["merges"]), pre


def _stored(array: np.ndarray, dtype: str):
    """(data to write, ggml type or None for a plain float array) of one tensor."""
    import gguf  # noqa: PLC0415 - optional: the gguf extra

    if array.ndim < 2 or dtype == "f32":
        return array, None
    if dtype == "q8_0" and array.shape[-1] % 32 == 0:
        q = gguf.GGMLQuantizationType.Q8_0
        return gguf.quants.quantize(array, q), q
    return array.astype(np.float16), None


def export_gguf(checkpoint: str, out_path: str, dtype: str = "f32") -> tuple[str, ModelConfig, int]:
    """Write CHECKPOINT as a GGUF file for llama.cpp (atomically); returns (checkpoint path, config,
    bytes written)."""
    if dtype not in DTYPES:
        raise CheckpointError(f"unknown GGUF type {dtype!r}; choose one of {', '.join(DTYPES)}")
    try:
        import gguf  # noqa: PLC0415 - optional: the gguf extra
    except ImportError:
        raise MissingDependencyError("GGUF export needs the gguf package (llama.cpp's writer): "
                                     "pip install -e '.[gguf]'") from None
    ckpt = load_checkpoint(checkpoint)
    config = ckpt.model_config
    config.check_exportable("export-gguf (llama.cpp's keys)")
    if ckpt.tokenizer_path is None:
        raise CheckpointError(f"{ckpt.path} has no tokenizer, and a GGUF file must carry one for llama.cpp")
    tokenizer = load_tokenizer(ckpt.tokenizer_path)
    vocab = vocabulary(tokenizer)
    out_path = os.path.abspath(os.fspath(out_path))
    directory = os.path.dirname(out_path)
    if not os.path.isdir(directory):
        raise CheckpointError(f"the directory of {out_path!r} does not exist; create it or choose another path")
    tmp = os.path.join(directory, f".{os.path.basename(out_path)}.{os.getpid()}.tmp")
    llama = config.arch == "llama"
    writer = gguf.GGUFWriter(tmp, "llama" if llama else "gpt2")  # writes general.architecture
    try:
        writer.add_name(os.path.basename(os.path.dirname(ckpt.path)) or "cllm")
        _add_model_keys(writer, config, dtype)
        _add_tokenizer_keys(writer, tokenizer, *vocab)
        tensors = llama_gguf_tensors(config, ckpt.params) if llama else gguf_tensors(config, ckpt.params)
        for name, array in tensors.items():
            data, raw_dtype = _stored(array, dtype)
            writer.add_tensor(name, data, raw_dtype=raw_dtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        _publish(tmp, out_path)
    except OSError as exc:
        raise CheckpointError(f"cannot write {out_path!r}: {exc.strerror or exc}; choose another path") from exc
    finally:
        writer.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
    return ckpt.path, config, os.path.getsize(out_path)


def _add_model_keys(writer, config: ModelConfig, dtype: str) -> None:
    """The file type and the gpt2.* or llama.* hyperparameters (the module doc lists where llama.cpp reads
    each); GGUFWriter prefixes each key with the architecture it was created with."""
    import gguf  # noqa: PLC0415 - optional: the gguf extra

    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                          "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype])
    if dtype == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(config.max_seq_len)
    writer.add_embedding_length(config.embed_dim)
    writer.add_block_count(config.num_layers)
    writer.add_feed_forward_length(config.ffn_dim)
    writer.add_head_count(config.num_heads)
    if config.arch != "llama":
        writer.add_layer_norm_eps(1e-5)  # cllm/kernels/layernorm.py
        return
    writer.add_head_count_kv(config.num_kv_heads)
    writer.add_layer_norm_rms_eps(config.norm_eps)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_rope_dimension_count(config.head_size)
    writer.add_vocab_size(config.vocab_size)


def _add_tokenizer_keys(writer, tokenizer, tokens: list[str], types: list[int], merges: list[str], pre: str) -> None:
    """The tokenizer.ggml.* keys of a byte-level BPE tokenizer (`vocabulary`'s tokens, types, merges, pre)."""
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    if tokenizer.bos_id is not None:
        writer.add_bos_token_id(tokenizer.bos_id)
    if tokenizer.eos_id is not None:
        writer.add_eos_token_id(tokenizer.eos_id)
    writer.add_add_bos_token(False)


def _publish(tmp: str, out_path: str) -> None:
    """Give the written temporary file the usual permissions, fsync it and rename it to out_path (atomic;
    cllm/fileio.py's atomic_open does the same for files it opens itself, which GGUFWriter does not allow)."""
    os.chmod(tmp, default_mode())
    fsync_path(tmp)
    os.replace(tmp, out_path)
    fsync_path(os.path.dirname(out_path))
