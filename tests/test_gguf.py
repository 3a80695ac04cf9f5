"""`cli.py export-gguf`: the file reads back with llama.cpp's own reader (gguf.GGUFReader), its
tensors are the checkpoint's under the names and shapes llama.cpp's gpt2 loader creates, its
metadata holds what that loader requires, and its vocabulary reproduces CLLM's token ids."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from hf_llama_helpers import llama3_tokenizer, llama_config, llama_tensors, write_llama_dir

from cllm import checkpoint as ck
from cllm import cli
from cllm.config import ModelConfig
from cllm.model import Model
from cllm.tokenizers import train_tokenizer

gguf = pytest.importorskip("gguf", reason="the gguf package is not installed (pip install -e '.[gguf]')")

TEXT = ("First Citizen: Before we proceed any further, hear me speak.\nAll: Speak, speak.\n"
        "Second Citizen: We'll  don't 1234567 cafe\u0301 na\u00efve \u00fcber \u65e5\u672c\u8a9e \u2603!\n\n") * 20
SAMPLE = "Hello there,  ROMEO!\n\n  We'll see \u00fcber 12345 \u2603\u65e5\u672c <|endoftext|> end"


def make_checkpoint(directory, kind: str = "bpe", pattern: str = "gpt4", layers: int = 2, seed: int = 0, **arch):
    """A checkpoint of a small model with every parameter random (biases and norm gains too, so that
    a swapped or transposed tensor shows in the logits) and a `kind` tokenizer trained on TEXT; `arch`
    holds ModelConfig fields to change (arch="llama", num_heads=6, ...). Returns (checkpoint dir, model, tokenizer)."""
    kw = {"pattern": pattern} if kind == "bpe" else {}
    tok = train_tokenizer(kind, TEXT, 300 if kind == "bpe" else None, progress=False, **kw)
    config = ModelConfig(**{"vocab_size": tok.vocab_size, "max_seq_len": 24, "num_layers": layers, "num_heads": 2,
                            "embed_dim": 64, **arch})
    model = Model(config, seed=None)
    rng = np.random.default_rng(seed)
    model.params[:] = rng.normal(0.0, 0.1, model.params.size).astype(np.float32)
    for name in ("ln1w", "ln2w", "lnfw"):
        model.p[name][:] += 1.0
    for name in ("wte", "lm_head"):
        if name in model.p:
            model.p[name][config.vocab_size * config.embed_dim:] = 0  # the padded rows, as training keeps them
    ck.save_checkpoint(str(directory), "step_000000", model, tokenizer=tok)
    ck.set_pointer(str(directory), "latest", "step_000000")
    return str(directory), model, tok


@pytest.fixture(scope="module")
def bpe_checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("gguf") / "run")


@pytest.fixture(scope="module")
def exported(bpe_checkpoint, tmp_path_factory):
    """dtype -> GGUFReader of the checkpoint exported with `cli.py export-gguf --dtype dtype`."""
    out = tmp_path_factory.mktemp("gguf_out")
    readers = {}
    for dtype in ("f32", "f16", "q8_0"):
        path = str(out / f"model-{dtype}.gguf")
        assert cli.main(["export-gguf", bpe_checkpoint[0], path, "--dtype", dtype]) == 0
        readers[dtype] = gguf.GGUFReader(path)
    return readers


def llama_cpp_shapes(config: ModelConfig) -> dict[str, list[int]]:
    """The ggml shapes (fastest dimension first) llama.cpp's src/models/gpt2.cpp creates its tensors with."""
    C, V, T, L = config.embed_dim, config.vocab_size, config.max_seq_len, config.num_layers
    shapes = {"token_embd.weight": [C, V], "position_embd.weight": [C, T], "output_norm.weight": [C],
              "output_norm.bias": [C]}
    for l in range(L):
        shapes.update({f"blk.{l}.{k}": v for k, v in {
            "attn_norm.weight": [C], "attn_norm.bias": [C], "attn_qkv.weight": [C, 3 * C], "attn_qkv.bias": [3 * C],
            "attn_output.weight": [C, C], "attn_output.bias": [C], "ffn_norm.weight": [C], "ffn_norm.bias": [C],
            "ffn_up.weight": [C, 4 * C], "ffn_up.bias": [4 * C], "ffn_down.weight": [4 * C, C],
            "ffn_down.bias": [C]}.items()})
    return shapes


def as_float(t) -> np.ndarray:
    """A GGUFReader tensor dequantized to float32 in NumPy order (the reverse of ggml's)."""
    return gguf.quants.dequantize(t.data, t.tensor_type).reshape(list(reversed(t.shape.tolist())))


def checkpoint_tensor(model, name: str) -> np.ndarray:
    """What the llama.cpp tensor `name` must hold, read from CLLM's model by its own names."""
    cfg = model.config
    if name == "token_embd.weight":
        return model.tensor("wte")[:cfg.vocab_size]
    fixed = {"position_embd.weight": "wpe", "output_norm.weight": "lnfw", "output_norm.bias": "lnfb"}
    if name in fixed:
        return model.tensor(fixed[name])
    _, layer, rest = name.split(".", 2)
    cllm = {"attn_norm.weight": "ln1w", "attn_norm.bias": "ln1b", "attn_qkv.weight": "qkvw", "attn_qkv.bias": "qkvb",
            "attn_output.weight": "attprojw", "attn_output.bias": "attprojb", "ffn_norm.weight": "ln2w",
            "ffn_norm.bias": "ln2b", "ffn_up.weight": "fcw", "ffn_up.bias": "fcb", "ffn_down.weight": "fcprojw",
            "ffn_down.bias": "fcprojb"}[rest]
    return model.tensor(cllm)[int(layer)]


def test_tensors_have_llama_cpp_names_shapes_and_the_checkpoint_values(bpe_checkpoint, exported):
    _, model, _ = bpe_checkpoint
    want = llama_cpp_shapes(model.config)
    worst = {}
    for dtype, reader in exported.items():
        got = {t.name: t for t in reader.tensors}
        assert set(got) == set(want)  # output.weight left out: llama.cpp ties it to token_embd
        for name, t in got.items():
            assert t.shape.tolist() == want[name], name
            ref, value = checkpoint_tensor(model, name), as_float(t)
            if dtype == "f32" or len(want[name]) == 1:  # norms and biases stay f32 in every type
                assert t.tensor_type == gguf.GGMLQuantizationType.F32, name
                np.testing.assert_array_equal(value, ref, err_msg=name)
                continue
            err = np.abs(value - ref)
            if dtype == "f16":
                assert t.tensor_type == gguf.GGMLQuantizationType.F16
                assert (err <= np.abs(ref) * 2.0**-11 + 2.0**-24).all(), name  # half a unit in the last place
            else:
                assert t.tensor_type == gguf.GGMLQuantizationType.Q8_0
                # each 32-value block: scale d = its max / 127, stored as f16; values round to d * int8, so
                # the error is at most d/2 plus 127 times the f16 rounding of d (2^-11 relative)
                d = np.abs(ref).reshape(-1, 32).max(axis=1, keepdims=True) / 127
                assert (err.reshape(-1, 32) <= d * (0.5 + 127 * 2.0**-11)).all(), name
            worst[dtype] = max(worst.get(dtype, 0.0), float(err.max()))
    print("largest |difference| from the checkpoint:", worst)


def test_metadata_holds_what_llama_cpp_gpt2_loader_reads(bpe_checkpoint, exported):
    _, model, tok = bpe_checkpoint
    cfg = model.config
    for dtype, reader in exported.items():
        meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
        assert meta["general.architecture"] == "gpt2"
        assert meta["general.file_type"] == {"f32": 0, "f16": 1, "q8_0": 7}[dtype]  # llama.h LLAMA_FTYPE_*
        assert meta["gpt2.context_length"] == cfg.max_seq_len
        assert meta["gpt2.embedding_length"] == cfg.embed_dim
        assert meta["gpt2.block_count"] == cfg.num_layers
        assert meta["gpt2.feed_forward_length"] == 4 * cfg.embed_dim
        assert meta["gpt2.attention.head_count"] == cfg.num_heads
        assert meta["gpt2.attention.layer_norm_epsilon"] == pytest.approx(1e-5)
        assert meta["tokenizer.ggml.model"] == "gpt2"
        assert meta["tokenizer.ggml.pre"] == "llama-bpe"  # CLLM's default GPT-4 split, llama.cpp's llama3 type
        assert len(meta["tokenizer.ggml.tokens"]) == cfg.vocab_size == tok.vocab_size
        assert meta["tokenizer.ggml.bos_token_id"] == meta["tokenizer.ggml.eos_token_id"] == tok.eos_id
        assert meta["tokenizer.ggml.add_bos_token"] is False
        types = meta["tokenizer.ggml.token_type"]
        assert [i for i, t in enumerate(types) if t == gguf.TokenType.CONTROL] == [tok.eos_id]


def llama3_split_ids(tokens: list[str], merges: list[str], text: str) -> list[int]:
    """Encode `text` with an independent BPE (HuggingFace `tokenizers`) built from the GGUF's tokens and
    merges only, pre-split by the regex llama.cpp runs for tokenizer.ggml.pre = "llama-bpe"
    (src/llama-vocab.cpp, LLAMA_VOCAB_PRE_TYPE_LLAMA3)."""
    tokenizers = pytest.importorskip("tokenizers", reason="the tokenizers package is not installed")
    llama3 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
              r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
    vocab = {t: i for i, t in enumerate(tokens)}
    bpe = tokenizers.models.BPE(vocab, [tuple(m.split(" ")) for m in merges])
    tk = tokenizers.Tokenizer(bpe)
    tk.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
        tokenizers.pre_tokenizers.Split(tokenizers.Regex(llama3), "isolated"),
        tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return tk.encode(text).ids


def test_vocabulary_reproduces_cllm_ids(bpe_checkpoint, exported):
    _, _, tok = bpe_checkpoint
    meta = exported["f32"].fields
    tokens = meta["tokenizer.ggml.tokens"].contents()
    merges = meta["tokenizer.ggml.merges"].contents()
    text = SAMPLE.replace("<|endoftext|>", "")  # special tokens are matched apart from BPE in llama.cpp
    assert llama3_split_ids(tokens, merges, text) == tok.encode(text)
    assert tokens[tok.eos_id] == "<|endoftext|>"


def gpt2_forward_ggml(reader, ids: np.ndarray, n_head: int) -> np.ndarray:
    """Logits (T, V) computed from the GGUF tensors the way llama.cpp's gpt2 graph does
    (src/models/gpt2.cpp): ggml_mul_mat(W, x) with W of ggml shape {in, out} is x @ W_numpy.T."""
    w = {t.name: as_float(t) for t in reader.tensors}

    def norm(x, name):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * w[name + ".weight"] + w[name + ".bias"]

    def linear(x, name):
        return x @ w[name + ".weight"].T + w[name + ".bias"]

    x = (w["token_embd.weight"][ids] + w["position_embd.weight"][: len(ids)]).astype(np.float64)
    T, C = x.shape
    hs = C // n_head
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(sum(1 for t in reader.tensors if t.name.endswith("attn_qkv.weight"))):
        q, k, v = np.split(linear(norm(x, f"blk.{l}.attn_norm"), f"blk.{l}.attn_qkv"), 3, axis=-1)
        q, k, v = (a.reshape(T, n_head, hs).transpose(1, 0, 2) for a in (q, k, v))
        att = q @ k.transpose(0, 2, 1) / np.sqrt(hs) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        y = (att / att.sum(-1, keepdims=True)) @ v
        x = x + linear(y.transpose(1, 0, 2).reshape(T, C), f"blk.{l}.attn_output")
        h = linear(norm(x, f"blk.{l}.ffn_norm"), f"blk.{l}.ffn_up")
        h = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))
        x = x + linear(h, f"blk.{l}.ffn_down")
    return norm(x, "output_norm") @ w["token_embd.weight"].T  # no output.weight: the head is token_embd


def test_llama_cpp_graph_on_the_gguf_tensors_gives_cllm_logits(bpe_checkpoint, exported):
    _, model, tok = bpe_checkpoint
    ids = np.array(tok.encode(SAMPLE, allowed_special="all")[:24])
    ref = model.forward(ids[None, :])[0]
    diffs = {}
    for dtype, reader in exported.items():
        got = gpt2_forward_ggml(reader, ids, model.config.num_heads)
        diffs[dtype] = float(np.abs(got - ref).max())
    print("largest |logit difference| against CLLM:", diffs)
    assert diffs["f32"] < 1e-4
    assert diffs["f16"] < 2e-2 and diffs["q8_0"] < 0.1  # rounding of the weights only


def test_refusals_are_one_line_and_write_nothing(tmp_path, capsys):
    char_dir, _, _ = make_checkpoint(tmp_path / "char", kind="char", layers=1)
    out = tmp_path / "x.gguf"
    assert cli.main(["export-gguf", char_dir, str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: GGUF export needs a byte-level BPE tokenizer") and "\n" not in err
    assert cli.main(["export-gguf", char_dir, str(out), "--dtype", "q4"]) == 2
    assert "unknown GGUF type 'q4'" in capsys.readouterr().err
    assert cli.main(["export-gguf", str(tmp_path / "missing"), str(out)]) == 2
    assert not out.exists() and not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


# ---------------------------------------------------------------------------------------- llama
# A Llama-family HuggingFace directory (tests/hf_llama_helpers.py: 6 query heads over 2 kv heads, an MLP of
# 100, rope_theta 500000) imported with import-hf and exported with export-gguf as llama.cpp's `llama`.

@pytest.fixture(scope="module", params=[("llama", False), ("qwen2", True)], ids=["llama-untied", "qwen2-tied"])
def llama_exported(request, tmp_path_factory):
    """(HF config, HF tensors, tokenizers.Tokenizer, {dtype: GGUFReader}) of a random model."""
    pytest.importorskip("tokenizers", reason="the tokenizers package (test extra) builds the Llama 3 tokenizer")
    model_type, tied = request.param
    base = tmp_path_factory.mktemp("llama_gguf")
    tok = llama3_tokenizer(TEXT)
    cfg = llama_config(model_type, vocab_size=tok.get_vocab_size(), tied=tied)
    tensors = llama_tensors(cfg, seed=1)
    hf = write_llama_dir(base / "hf", cfg, tensors, tokenizer=tok)
    assert cli.main(["import-hf", hf, str(base / "ck")]) == 0
    readers = {}
    for dtype in ("f32", "f16", "q8_0"):
        assert cli.main(["export-gguf", str(base / "ck"), str(base / f"{dtype}.gguf"), "--dtype", dtype]) == 0
        readers[dtype] = gguf.GGUFReader(str(base / f"{dtype}.gguf"))
    return cfg, tensors, tok, readers


def unpermute_rope_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of llama.cpp's converter permutation: per head, row 2i -> i and row 2i+1 -> i + hs/2."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama_cpp_llama_tensors(cfg: dict, hf: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What each tensor of llama.cpp's llama loader (src/models/llama.cpp load_arch_tensors) must hold,
    from the HF tensors (nn.Linear's (out, in) is ggml's {in, out}: no transpose), q and k un-permuted."""
    want = {"token_embd.weight": hf["model.embed_tokens.weight"], "output_norm.weight": hf["model.norm.weight"]}
    if not cfg["tie_word_embeddings"]:
        want["output.weight"] = hf["lm_head.weight"]
    for l in range(cfg["num_hidden_layers"]):
        p, g = f"model.layers.{l}.", f"blk.{l}."
        names = {"attn_norm.weight": "input_layernorm.weight", "attn_q.weight": "self_attn.q_proj.weight",
                 "attn_k.weight": "self_attn.k_proj.weight", "attn_v.weight": "self_attn.v_proj.weight",
                 "attn_output.weight": "self_attn.o_proj.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
                 "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
                 "ffn_down.weight": "mlp.down_proj.weight"}
        if cfg["model_type"] == "qwen2":
            names.update({"attn_q.bias": "self_attn.q_proj.bias", "attn_k.bias": "self_attn.k_proj.bias",
                          "attn_v.bias": "self_attn.v_proj.bias"})
        want.update({g + k: hf[p + v] for k, v in names.items()})
    return want


def test_llama_gguf_tensors_are_the_hf_tensors_in_llama_cpp_names_and_q_k_order(llama_exported):
    cfg, hf, _, readers = llama_exported
    want = llama_cpp_llama_tensors(cfg, hf)
    NH, NKV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    for dtype, reader in readers.items():
        got = {t.name: t for t in reader.tensors}
        assert set(got) == set(want), dtype
        for name, t in got.items():
            value = as_float(t)
            assert value.shape == want[name].shape, name
            if ".attn_q." in name or ".attn_k." in name:
                permuted = value
                value = unpermute_rope_rows(value, NH if ".attn_q." in name else NKV)
                assert not np.array_equal(permuted, value)  # the rows did move
            if dtype == "f32" or t.data.ndim == 1:
                assert t.tensor_type == gguf.GGMLQuantizationType.F32, name
                np.testing.assert_array_equal(value, want[name], err_msg=name)
            else:
                # q8_0 needs rows of whole 32-value blocks: ffn_down's 100 inputs stay f16
                q8 = dtype == "q8_0" and t.shape[0] % 32 == 0
                kind = gguf.GGMLQuantizationType.Q8_0 if q8 else gguf.GGMLQuantizationType.F16
                assert t.tensor_type == kind, name
                np.testing.assert_allclose(value, want[name], atol=0.01 if q8 else 1e-3, err_msg=name)


def test_llama_gguf_metadata_holds_what_llama_cpp_llama_loader_reads(llama_exported):
    cfg, _, tok, readers = llama_exported
    meta = {k: f.contents() for k, f in readers["q8_0"].fields.items() if not k.startswith("GGUF.")}
    assert meta["general.architecture"] == "llama" and meta["general.file_type"] == 7
    want = {"llama.context_length": 64, "llama.embedding_length": 96, "llama.block_count": 2,
            "llama.feed_forward_length": 100, "llama.attention.head_count": 6, "llama.attention.head_count_kv": 2,
            "llama.rope.dimension_count": 16, "llama.vocab_size": tok.get_vocab_size()}
    assert {k: meta[k] for k in want} == want
    assert meta["llama.rope.freq_base"] == 500000.0
    assert meta["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    # Llama 3's split and ignore_merges: llama.cpp's llama-bpe pre-tokenizer
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "llama-bpe"
    assert meta["tokenizer.ggml.tokens"] == [tok.id_to_token(i) for i in range(tok.get_vocab_size())]
    text = SAMPLE.replace("<|endoftext|>", "")
    assert llama3_split_ids(meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.merges"], text) == \
        tok.encode(text, add_special_tokens=False).ids


def llama_forward_ggml(reader, ids: np.ndarray) -> np.ndarray:
    """Logits (T, V) computed from the GGUF tensors and keys the way llama.cpp's llama graph does
    (src/models/llama.cpp; RMSNorm, ggml_rope_ext in its normal mode, grouped-query attention,
    SiLU-gated MLP), in float64. Normal-mode RoPE turns adjacent dimensions (2i, 2i+1) of a head by the
    angle p * freq_base^(-2i/n_rot) (ggml-cpu's rope_f32); query head h reads key/value head
    h // (NH/NKV) (ggml_mul_mat's broadcast over heads)."""
    meta = {k: f.contents() for k, f in reader.fields.items()}
    w = {t.name: as_float(t).astype(np.float64) for t in reader.tensors}
    NH, NKV = meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"]
    eps, n_rot = meta["llama.attention.layer_norm_rms_epsilon"], meta["llama.rope.dimension_count"]
    x = w["token_embd.weight"][ids]
    T, C = x.shape
    hs = C // NH
    angle = np.arange(T)[:, None] * meta["llama.rope.freq_base"] ** (-np.arange(0, n_rot, 2) / n_rot)
    cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]  # (T, 1, n_rot/2)

    def rms_norm(x, name):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w[name + ".weight"]

    def linear(x, name):
        y = x @ w[name + ".weight"].T
        return y + w[name + ".bias"] if name + ".bias" in w else y

    def rope(a):  # (T, heads, hs): the pairs of the first n_rot dimensions
        out = a.copy()
        x0, x1 = a[..., 0:n_rot:2], a[..., 1:n_rot:2]
        out[..., 0:n_rot:2], out[..., 1:n_rot:2] = x0 * cos - x1 * sin, x0 * sin + x1 * cos
        return out

    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(meta["llama.block_count"]):
        h = rms_norm(x, f"blk.{l}.attn_norm")
        q = rope(linear(h, f"blk.{l}.attn_q").reshape(T, NH, hs))
        k = np.repeat(rope(linear(h, f"blk.{l}.attn_k").reshape(T, NKV, hs)), NH // NKV, axis=1)
        v = np.repeat(linear(h, f"blk.{l}.attn_v").reshape(T, NKV, hs), NH // NKV, axis=1)
        att = np.einsum("thd,shd->hts", q, k) / np.sqrt(hs) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        y = np.einsum("hts,shd->thd", att / att.sum(-1, keepdims=True), v).reshape(T, C)
        x = x + linear(y, f"blk.{l}.attn_output")
        h = rms_norm(x, f"blk.{l}.ffn_norm")
        gate = linear(h, f"blk.{l}.ffn_gate")
        x = x + linear(gate / (1 + np.exp(-gate)) * linear(h, f"blk.{l}.ffn_up"), f"blk.{l}.ffn_down")
    head = w.get("output.weight", w["token_embd.weight"])  # no output.weight: tied to token_embd
    return rms_norm(x, "output_norm") @ head.T


@pytest.mark.parametrize("arch", [dict(tie_embeddings=True, attention_bias=True), dict(tie_embeddings=False)],
                         ids=["tied-qkv-bias", "untied"])
def test_llama_cpp_llama_graph_on_a_cllm_llama_gives_its_logits(arch, tmp_path):
    """A llama checkpoint of CLLM's own (6 heads over 2 kv heads, MLP 100, rope_theta 500000), exported
    as llama.cpp's llama and run through its graph in NumPy, gives CLLM's logits."""
    run, model, tok = make_checkpoint(tmp_path / "run", arch="llama", num_heads=6, num_kv_heads=2, ffn_dim=100,
                                      rope_theta=500000.0, norm_eps=1e-6, embed_dim=96, **arch)
    ids = np.array(tok.encode(SAMPLE, allowed_special="all")[:24])
    ref = model.forward(ids[None, :])[0, :, :tok.vocab_size]
    diffs = {}
    for dtype in ("f32", "f16", "q8_0"):
        assert cli.main(["export-gguf", run, str(tmp_path / f"{dtype}.gguf"), "--dtype", dtype]) == 0
        reader = gguf.GGUFReader(str(tmp_path / f"{dtype}.gguf"))
        assert ("output.weight" in {t.name for t in reader.tensors}) != arch["tie_embeddings"]
        diffs[dtype] = float(np.abs(llama_forward_ggml(reader, ids) - ref).max())
    print("largest |logit difference| llama.cpp graph vs CLLM:", diffs)
    assert diffs["f32"] < 1e-4
    # rounding of the weights only (measured 3.0e-3 and 9.2e-2 on these seeded weights of std 0.1)
    assert diffs["f16"] < 2e-2 and diffs["q8_0"] < 0.2


# ---------------------------------------------------------------------------------------- llama.cpp itself
def llama_cpp_module():
    """llama-cpp-python's llama_cpp (llama.cpp built as a library) when it can be imported: installed, or
    from the directory CLLM_LLAMA_CPP_PYTHON names (e.g. a `pip install --target DIR` of its source
    distribution, kept outside the repository); None otherwise."""
    extra = os.environ.get("CLLM_LLAMA_CPP_PYTHON")
    if extra and extra not in sys.path:
        sys.path.append(extra)
    try:
        import llama_cpp  # noqa: PLC0415 - optional: built from source, minutes of compiling
    except ImportError:
        return None
    return llama_cpp


LLAMA_ODD = dict(arch="llama", num_heads=6, num_kv_heads=2, ffn_dim=100, embed_dim=96, rope_theta=500000.0,
                 norm_eps=1e-6)


@pytest.mark.parametrize("arch", [{}, dict(LLAMA_ODD, tie_embeddings=False),
                                  dict(LLAMA_ODD, tie_embeddings=True, attention_bias=True)],
                         ids=["gpt2", "llama-untied", "llama-tied-qkv-bias"])
def test_llama_cpp_runs_the_exported_gguf_with_cllm_tokens_and_logits(arch, tmp_path):
    """llama.cpp itself (through llama-cpp-python) loads the f32 GGUF, tokenizes the text to CLLM's ids
    and computes CLLM's logits at every position (its KV cache kept f32, flash attention off)."""
    llama_cpp = llama_cpp_module()
    if llama_cpp is None:
        pytest.skip("llama-cpp-python is not importable: build it from source outside the repository (pip install "
                    "--target DIR --no-binary :all: llama-cpp-python, minutes) and set CLLM_LLAMA_CPP_PYTHON=DIR")
    run, model, tok = make_checkpoint(tmp_path / "run", **arch)
    path = str(tmp_path / "model.gguf")
    assert cli.main(["export-gguf", run, path]) == 0
    f32 = 0  # GGML_TYPE_F32
    llm = llama_cpp.Llama(path, n_ctx=model.config.max_seq_len, n_batch=model.config.max_seq_len, n_threads=1,
                          logits_all=True, flash_attn=False, type_k=f32, type_v=f32, verbose=False)
    text = SAMPLE.replace("<|endoftext|>", "")
    ids = tok.encode(text)[:model.config.max_seq_len]
    assert llm.tokenize(text.encode(), add_bos=False, special=False)[:len(ids)] == ids
    llm.eval(ids)
    got = np.array(llm.scores[:len(ids)])
    diff = float(np.abs(got - model.forward(np.array([ids]))[0, :, :tok.vocab_size]).max())
    print(f"largest |logit difference| llama.cpp vs CLLM ({model.config.arch}): {diff:.2e}")
    # measured 3.0e-6 (llama) and 1.1e-3 (gpt2): ggml's CPU GELU reads a table of float16 values
    # (ggml-cpu/vec.h, GGML_GELU_FP16), SiLU it computes in float32
    assert diff < (1e-4 if model.config.arch == "llama" else 5e-3)


def test_llama_cpp_runs_an_imported_llama3_style_model_with_its_token_ids(tmp_path):
    """A Llama-family directory with a Llama 3-layout tokenizer (its split, merges ignored for a chunk that
    is a token), imported and exported to GGUF: llama.cpp's llama-bpe tokenizer gives the ids of the
    `tokenizers` library and its llama graph CLLM's logits (a Qwen2: q, k, v biases)."""
    llama_cpp = llama_cpp_module()
    if llama_cpp is None:
        pytest.skip("llama-cpp-python is not importable: build it from source outside the repository (pip install "
                    "--target DIR --no-binary :all: llama-cpp-python, minutes) and set CLLM_LLAMA_CPP_PYTHON=DIR")
    pytest.importorskip("tokenizers", reason="the tokenizers package (test extra) builds the Llama 3 tokenizer")
    tok = llama3_tokenizer(TEXT)
    cfg = llama_config("qwen2", vocab_size=tok.get_vocab_size())
    hf = write_llama_dir(tmp_path / "hf", cfg, llama_tensors(cfg, seed=2), tokenizer=tok)
    assert cli.main(["import-hf", hf, str(tmp_path / "ck")]) == 0
    assert cli.main(["export-gguf", str(tmp_path / "ck"), str(tmp_path / "m.gguf")]) == 0
    T = cfg["max_position_embeddings"]
    llm = llama_cpp.Llama(str(tmp_path / "m.gguf"), n_ctx=T, n_batch=T, n_threads=1, logits_all=True,
                          flash_attn=False, type_k=0, type_v=0, verbose=False)  # 0: GGML_TYPE_F32
    text = SAMPLE.replace("<|endoftext|>", "") + TEXT[:300]
    want = tok.encode(text, add_special_tokens=False).ids
    assert llm.tokenize(text.encode(), add_bos=False, special=False) == want
    ids = want[:T]
    llm.eval(ids)
    model = ck.model_from_checkpoint(ck.load_checkpoint(str(tmp_path / "ck")))
    diff = float(np.abs(np.array(llm.scores[:T]) - model.forward(np.array([ids]))[0, :, :cfg["vocab_size"]]).max())
    print(f"largest |logit difference| llama.cpp vs CLLM (imported qwen2): {diff:.2e}")
    assert diff < 1e-4
