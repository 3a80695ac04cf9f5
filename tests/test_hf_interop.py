"""`cli.py export-hf` / `import-hf` and `train --init-from`: a CLLM checkpoint loads in HuggingFace
transformers as GPT-2 with the same logits, greedy tokens and token ids; a GPT-2 saved by transformers
comes back with the same logits; a pickle is refused without being opened; the `cllm` script is cli.py.

The tests that run transformers skip, with the reason printed, when torch or transformers is absent
(`make test-interop` installs both, torch's CPU wheel, and runs these tests; `make test` does not
need them: torch is never more than a reference here)."""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import random
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from hf_llama_helpers import llama3_tokenizer, llama_config, llama_tensors, save_bf16, write_llama_dir
from safetensors.numpy import load_file
from test_chat_template import LLAMA3_TEMPLATE
from test_gguf import SAMPLE, TEXT, llama_forward_ggml, make_checkpoint
from train_helpers import ROOT, all_threads_after  # noqa: F401  (autouse)

from cllm import checkpoint as ck
from cllm import cli
from cllm.chat.template import CHATML_TEMPLATE, add_chat_tokens, apply_chat_template, render_text
from cllm.config import ModelConfig
from cllm.generation import Generator, SamplingConfig
from cllm.interop.gguf import LLAMA3_SPLIT
from cllm.model import Model
from cllm.optim import AdamW
from cllm.tokenizers import load_tokenizer, train_tokenizer
from cllm.tokenizers.imports import import_tokenizer
from cllm.training import TrainConfig, train

MISSING = ""
try:
    import torch
    import transformers
except ImportError as exc:  # the reason is printed by the skips below
    torch = transformers = None
    MISSING = f"{exc.name} is not installed: make test-interop (pip install -e '.[interop]')"
    if os.environ.get("CLLM_INTEROP_REQUIRED"):  # make test-interop: a missing reference is a failure, not a skip
        raise
needs_hf = pytest.mark.skipif(transformers is None, reason=MISSING)


@needs_hf
def test_transformers_and_huggingface_kernels_import_from_the_repository_root():
    """transformers 5 depends on HuggingFace's PyPI package `kernels`; a top-level `kernels` folder of CLLM's
    shadowed it from the checkout (`import transformers` failed there). Run as a user would, from the root."""
    code = ("import importlib.util, transformers, cllm.kernels.matmul\n"
            "from transformers import GPT2LMHeadModel\n"
            "spec = importlib.util.find_spec('kernels')\n"
            "print(transformers.__version__, spec.origin if spec else '-')")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    version, origin = r.stdout.split()
    # HuggingFace's kernels from site-packages (transformers 5 installs it) or none, never a folder of the checkout
    assert origin == "-" or "site-packages" in origin, origin
    if int(version.split(".")[0]) >= 5:
        assert origin != "-"
    expected = os.environ.get("CLLM_EXPECT_TRANSFORMERS")  # make test-interop pins the newest and the oldest
    assert expected is None or version == expected, (version, expected)


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory):
    """(checkpoint dir, model, tokenizer, exported HF dir)."""
    base = tmp_path_factory.mktemp("hf")
    run, model, tok = make_checkpoint(base / "run")
    assert cli.main(["export-hf", run, str(base / "hf")]) == 0
    return run, model, tok, str(base / "hf")


def test_export_writes_transformers_names_conv1d_layout_and_drops_padding(bpe_run):
    _, model, tok, hf = bpe_run
    cfg = model.config
    assert cfg.padded_vocab_size > cfg.vocab_size  # the padding the export must drop
    t = load_file(os.path.join(hf, "model.safetensors"))
    assert len(t) == 4 + 12 * cfg.num_layers  # no lm_head.weight: transformers ties it to wte
    np.testing.assert_array_equal(t["transformer.wte.weight"], model.tensor("wte")[:cfg.vocab_size])
    np.testing.assert_array_equal(t["transformer.wpe.weight"], model.tensor("wpe"))
    for l in range(cfg.num_layers):
        # Conv1D computes x @ W: W is (in, out), the transpose of CLLM's (out, in)
        np.testing.assert_array_equal(t[f"transformer.h.{l}.attn.c_attn.weight"], model.tensor("qkvw")[l].T)
        np.testing.assert_array_equal(t[f"transformer.h.{l}.mlp.c_proj.weight"], model.tensor("fcprojw")[l].T)
        np.testing.assert_array_equal(t[f"transformer.h.{l}.ln_2.bias"], model.tensor("ln2b")[l])
    with open(os.path.join(hf, "config.json")) as f:
        config = json.load(f)
    assert (config["model_type"], config["vocab_size"], config["n_positions"], config["n_layer"], config["n_head"],
            config["n_embd"]) == ("gpt2", cfg.vocab_size, cfg.max_seq_len, cfg.num_layers, cfg.num_heads, cfg.embed_dim)
    with open(os.path.join(hf, "generation_config.json")) as f:
        assert json.load(f)["eos_token_id"] == tok.eos_id


def test_export_refuses_a_non_empty_directory(bpe_run, tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("x")
    assert cli.main(["export-hf", bpe_run[0], str(tmp_path)]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["keep.txt"]


@needs_hf
def test_transformers_gives_cllm_logits_and_greedy_tokens(bpe_run):
    _, model, tok, hf = bpe_run
    gpt2 = transformers.AutoModelForCausalLM.from_pretrained(hf).eval()
    assert type(gpt2).__name__ == "GPT2LMHeadModel"
    ids = np.random.default_rng(3).integers(0, model.config.vocab_size, (3, model.config.max_seq_len))
    with torch.no_grad():
        got = gpt2(torch.tensor(ids)).logits.numpy()
    diff = float(np.abs(got - model.forward(ids)).max())
    print(f"largest |logit difference| CLLM vs transformers: {diff:.2e}")
    assert diff < 1e-4
    prompt = tok.encode("First Citizen:")
    n = model.config.max_seq_len - len(prompt)
    ours = list(Generator(model).stream(prompt, SamplingConfig(max_new_tokens=n, temperature=0, ignore_eos=True)))
    with torch.no_grad():
        theirs = gpt2.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                               pad_token_id=tok.eos_id)[0, len(prompt):].tolist()
    assert ours == theirs


@needs_hf
@pytest.mark.parametrize("kind", ["bpe", "char", "word"])
def test_auto_tokenizer_gives_cllm_ids(kind, bpe_run, tmp_path):
    if kind == "bpe":
        hf, tok = bpe_run[3], bpe_run[2]
    else:
        run, _, tok = make_checkpoint(tmp_path / "run", kind=kind, layers=1)
        hf = str(tmp_path / "hf")
        assert cli.main(["export-hf", run, hf]) == 0
    auto = transformers.AutoTokenizer.from_pretrained(hf)
    text = SAMPLE if kind != "char" else TEXT[:200]  # a char vocabulary has only the corpus's characters
    want = tok.encode(text, allowed_special="all") if kind == "bpe" else tok.encode(text)
    assert auto(text)["input_ids"] == want
    if kind != "word":  # transformers joins WordLevel tokens with spaces; CLLM's word decode has its own rules
        assert auto.decode(want) == tok.decode(want)


def pickle_bomb(marker: str) -> bytes:
    """A pickle that creates `marker` when it is loaded."""
    class Bomb:
        def __reduce__(self):
            return (open, (marker, "w"))
    return pickle.dumps(Bomb())


def test_import_refuses_a_pickle_without_opening_it(bpe_run, tmp_path, capsys):
    hf = tmp_path / "hf"
    shutil.copytree(bpe_run[3], hf)
    os.unlink(hf / "model.safetensors")
    marker = tmp_path / "pickle-was-loaded"
    (hf / "pytorch_model.bin").write_bytes(pickle_bomb(str(marker)))
    assert cli.main(["import-hf", str(hf), str(tmp_path / "ck")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pytorch_model.bin" in err and "convert it to safetensors" in err
    assert not marker.exists() and not (tmp_path / "ck").exists()


def test_export_then_import_gives_the_checkpoint_back(bpe_run, tmp_path):
    """Without torch: export-hf then import-hf gives the checkpoint's weights and tokenizer back."""
    _, model, tok, hf = bpe_run
    assert cli.main(["import-hf", hf, str(tmp_path / "imported")]) == 0
    back = ck.load_checkpoint(str(tmp_path / "imported"))
    assert back.model_config == model.config
    for name, tensor in back.params.items():
        np.testing.assert_array_equal(tensor, model.tensor(name), err_msg=name)
    imported_tok = load_tokenizer(back.tokenizer_path)
    assert imported_tok.encode(SAMPLE, allowed_special="all") == tok.encode(SAMPLE, allowed_special="all")


def test_train_init_from_starts_from_the_checkpoint_with_its_tokenizer(bpe_run, tmp_path):
    """`train --init-from`: the imported weights are the starting point (a learning rate of 1e-9 leaves
    them), the data is encoded with the checkpoint's tokenizer, the model keeps its context."""
    _, model, tok, hf = bpe_run
    assert cli.main(["import-hf", hf, str(tmp_path / "imported")]) == 0
    data = tmp_path / "data.txt"
    data.write_text(TEXT)
    cfg = TrainConfig(data=str(data), init_from=str(tmp_path / "imported"), checkpoint_dir=str(tmp_path / "ft"),
                      max_steps=1, learning_rate=1e-9, min_lr=0.0, warmup_steps=0, batch_size=2, seq_len=16,
                      eval_interval=1000, sample_interval=100000, val_fraction=0.2, threads=1, progress=False)
    train(cfg)
    tuned = ck.load_checkpoint(str(tmp_path / "ft"))
    assert tuned.model_config == model.config  # its 24 positions kept, though it trained on 16
    assert max(float(np.abs(tuned.params[k] - model.tensor(k)).max()) for k in tuned.params) < 1e-6
    assert load_tokenizer(tuned.tokenizer_path).encode(SAMPLE) == tok.encode(SAMPLE)
    # --resume continues the fine-tuning run: T 16 within the 24 positions, the same tokenizer
    train(dataclasses.replace(cfg, init_from=None, seq_len=None, max_steps=2, resume="latest"))
    again = ck.load_checkpoint(str(tmp_path / "ft"))
    assert again.state["step"] == 2 and again.model_config == model.config and again.train_config["seq_len"] == 16


@needs_hf
def test_gpt2_saved_by_transformers_imports_with_identical_logits(tmp_path):
    config = transformers.GPT2Config(vocab_size=300, n_positions=20, n_embd=48, n_layer=2, n_head=3)
    torch.manual_seed(0)
    gpt2 = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # GPT-2 initializes biases to zero and gains to one: make every tensor count
        for p in gpt2.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    gpt2.save_pretrained(tmp_path / "hf", safe_serialization=True)
    assert cli.main(["import-hf", str(tmp_path / "hf"), str(tmp_path / "ck")]) == 0
    model = ck.model_from_checkpoint(ck.load_checkpoint(str(tmp_path / "ck")))
    ids = np.random.default_rng(5).integers(0, 300, (2, 20))
    with torch.no_grad():
        want = gpt2(torch.tensor(ids)).logits.numpy()
    diff = float(np.abs(model.forward(ids) - want).max())
    print(f"largest |logit difference| transformers vs imported CLLM: {diff:.2e}")
    assert diff < 1e-4


def test_cllm_script_is_cli_py():
    script = shutil.which("cllm", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("no `cllm` script beside this Python: pip install -e . installs it")
    run = [subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT)
           for cmd in ([script, "--help"], [sys.executable, "cli.py", "--help"])]
    assert run[0].returncode == run[1].returncode == 0
    assert run[0].stdout == run[1].stdout and "export-gguf" in run[0].stdout


@needs_hf
def test_gpt2_style_vocabulary_survives_import_fine_tune_and_export(tmp_path):
    """A tokenizer whose ids are not CLLM's own order (GPT-2's: bytes in byte-level-alphabet order, the
    special token first) comes in with import-hf and goes out again through export-hf and export-gguf
    with the same ids."""
    import gguf  # noqa: PLC0415 - optional: the gguf extra
    import tokenizers as tk  # noqa: PLC0415 - optional: the test extra

    hf = tmp_path / "hf"
    bpe = tk.Tokenizer(tk.models.BPE())
    bpe.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tk.decoders.ByteLevel()
    bpe.train_from_iterator([TEXT], tk.trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>"],
                                                           initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet()))
    V = bpe.get_vocab_size()
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=V, n_positions=16, n_embd=32, n_layer=1,
                                                                n_head=2, bos_token_id=0, eos_token_id=0)).eval()
    gpt2.save_pretrained(hf, safe_serialization=True)
    bpe.save(str(hf / "tokenizer.json"))
    text = SAMPLE.replace("<|endoftext|>", "")  # tokenizers matches special tokens in text; CLLM's encode does not
    want = bpe.encode(text).ids
    assert want != list(text.encode()[:len(want)])  # not CLLM's byte = id order

    assert cli.main(["import-hf", str(hf), str(tmp_path / "ck")]) == 0
    back = ck.load_checkpoint(str(tmp_path / "ck"))
    assert load_tokenizer(back.tokenizer_path).encode(text) == want
    assert cli.main(["export-hf", str(tmp_path / "ck"), str(tmp_path / "out")]) == 0
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "out")(text)["input_ids"] == want
    assert cli.main(["export-gguf", str(tmp_path / "ck"), str(tmp_path / "m.gguf")]) == 0
    tokens = gguf.GGUFReader(str(tmp_path / "m.gguf")).fields["tokenizer.ggml.tokens"].contents()
    assert tokens == [bpe.id_to_token(i) for i in range(V)]


# ---------------------------------------------------------------------------------------- the Llama family
# Random models at odd sizes (tests/hf_llama_helpers.py: 6 query heads over 2 kv heads, head size 16, an MLP
# of 100, rope_theta 500000, untied unless said): LlamaForCausalLM, Qwen2ForCausalLM (q, k, v biases) and
# MistralForCausalLM without a sliding window.

def read_dir(path) -> tuple[dict, dict[str, np.ndarray]]:
    """(config.json, every tensor) of an HF directory, sharded or not."""
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    tensors = {}
    for name in sorted(os.listdir(path)):
        if name.endswith(".safetensors"):
            tensors.update(load_file(os.path.join(path, name)))
    return cfg, tensors


def hf_rope_theta(cfg: dict) -> float:
    return (cfg.get("rope_parameters") or {}).get("rope_theta", cfg.get("rope_theta"))


@pytest.mark.parametrize("model_type, tied, shards, new_rope", [
    ("llama", False, 3, False), ("llama", True, 1, True), ("qwen2", False, 2, True), ("mistral", False, 1, False)],
    ids=["llama-untied-sharded-4.x-config", "llama-tied", "qwen2-biases-sharded", "mistral"])
def test_llama_family_round_trip_gives_identical_tensors_config_and_token_ids(model_type, tied, shards, new_rope,
                                                                             tmp_path):
    """Without torch: HF dir -> import-hf -> CLLM checkpoint -> export-hf -> a LlamaForCausalLM directory
    with the same tensors (plus a zero o_proj bias where the model has q, k, v biases: LlamaAttention's
    attention_bias adds one), the same sizes in config.json, and a tokenizer giving the same ids."""
    tokenizers = pytest.importorskip("tokenizers", reason="the tokenizers package (test extra) is not installed")
    tok = llama3_tokenizer(TEXT)
    cfg = llama_config(model_type, vocab_size=tok.get_vocab_size(), tied=tied, new_rope=new_rope)
    tensors = llama_tensors(cfg)
    hf = write_llama_dir(tmp_path / "hf", cfg, tensors, shards=shards, tokenizer=tok)
    assert cli.main(["import-hf", hf, str(tmp_path / "ck")]) == 0
    back = ck.load_checkpoint(str(tmp_path / "ck"))
    c = back.model_config
    assert (c.arch, c.num_kv_heads, c.ffn_dim, c.rope_theta, c.norm_eps, c.tie_embeddings, c.attention_bias) == \
        ("llama", 2, 100, 500000.0, 1e-6, tied, model_type == "qwen2")
    assert c.padded_vocab_size > c.vocab_size and not back.params["wte"][c.vocab_size:].any()  # padding is zero
    text = SAMPLE.replace("<|endoftext|>", "")
    want_ids = tok.encode(text, add_special_tokens=False).ids
    assert load_tokenizer(back.tokenizer_path).encode(text) == want_ids

    assert cli.main(["export-hf", str(tmp_path / "ck"), str(tmp_path / "out")]) == 0
    out_cfg, out = read_dir(tmp_path / "out")
    expected = dict(tensors)
    if model_type == "qwen2":
        for l in range(cfg["num_hidden_layers"]):
            expected[f"model.layers.{l}.self_attn.o_proj.bias"] = np.zeros(96, np.float32)
    assert set(out) == set(expected)
    for name, t in expected.items():
        np.testing.assert_array_equal(out[name], t, err_msg=name)
    assert out_cfg["architectures"] == ["LlamaForCausalLM"] and out_cfg["model_type"] == "llama"
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings"):
        assert out_cfg[key] == cfg[key], key
    assert out_cfg["rope_theta"] == hf_rope_theta(out_cfg) == hf_rope_theta(cfg) == 500000.0
    assert out_cfg["attention_bias"] == (model_type == "qwen2") and out_cfg["hidden_act"] == "silu"
    assert tokenizers.Tokenizer.from_file(str(tmp_path / "out" / "tokenizer.json")).encode(
        text, add_special_tokens=False).ids == want_ids
    # and back again: the exported directory imports to the same checkpoint
    assert cli.main(["import-hf", str(tmp_path / "out"), str(tmp_path / "ck2")]) == 0
    again = ck.load_checkpoint(str(tmp_path / "ck2"))
    assert again.model_config == c
    for name, t in back.params.items():
        np.testing.assert_array_equal(again.params[name], t, err_msg=name)


def test_llama_in_bfloat16_imports_exactly(tmp_path):
    """Most Llama-family models are published in bfloat16, which NumPy has no type for: import-hf widens
    it to float32 exactly (a model whose tensors are all bfloat16, one shard of two holding them)."""
    cfg = llama_config("qwen2")
    tensors = llama_tensors(cfg)
    names = sorted(tensors)
    hf = write_llama_dir(tmp_path / "hf", cfg, {n: tensors[n] for n in names[1::2]}, shards=1)
    os.rename(os.path.join(hf, "model.safetensors"), os.path.join(hf, "model-00001-of-00002.safetensors"))
    held = save_bf16({n: tensors[n] for n in names[::2]}, os.path.join(hf, "model-00002-of-00002.safetensors"))
    weight_map = {n: f"model-0000{2 if n in held else 1}-of-00002.safetensors" for n in names}
    with open(os.path.join(hf, "model.safetensors.index.json"), "w") as f:
        json.dump({"weight_map": weight_map}, f)
    assert cli.main(["import-hf", hf, str(tmp_path / "ck")]) == 0
    assert cli.main(["export-hf", str(tmp_path / "ck"), str(tmp_path / "out")]) == 0
    _, out = read_dir(tmp_path / "out")
    for name in names:
        want = held.get(name, tensors[name])
        assert name not in held or not np.array_equal(want, tensors[name])  # bfloat16 did round
        np.testing.assert_array_equal(out[name], want, err_msg=name)


def sentencepiece_byte_fallback_json(vocab_size: int) -> dict:
    """A tokenizer.json in Llama 2's / TinyLlama's layout: a BPE over "▁"-marked text with byte fallback
    (<0x00>..<0xFF> tokens), trained by `tokenizers`."""
    import tokenizers as tk  # noqa: PLC0415 - optional: the test extra

    sp = tk.Tokenizer(tk.models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    sp.normalizer = tk.normalizers.Sequence([tk.normalizers.Prepend("\u2581"), tk.normalizers.Replace(" ", "\u2581")])
    sp.decoder = tk.decoders.Sequence([tk.decoders.Replace("\u2581", " "), tk.decoders.ByteFallback(),
                                       tk.decoders.Fuse(), tk.decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    sp.train_from_iterator([TEXT], tk.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                          show_progress=False))
    return json.loads(sp.to_str())


LLAMA_REFUSALS = {  # name -> (model type, config changes, tensor change, what the one line names)
    "rope-scaling-llama3": ("llama", {"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}},
                            None, "rope_scaling of type 'llama3'"),
    "rope-scaling-4.x-linear": ("llama", {"rope_scaling": {"type": "linear", "factor": 2.0}}, None,
                                "rope_scaling of type 'linear'"),
    "mistral-sliding-window": ("mistral", {"sliding_window": 4096}, None, "sliding attention window of 4096"),
    "qwen2-sliding-window": ("qwen2", {"use_sliding_window": True, "sliding_window": 32}, None,
                             "sliding attention window of 32"),
    "gelu": ("llama", {"hidden_act": "gelu"}, None, "hidden_act 'gelu'"),
    "mlp-bias": ("llama", {"mlp_bias": True}, None, "biases in the MLP"),
    "head-dim": ("llama", {"head_dim": 32}, None, "head_dim 32"),
    "other-model-type": ("llama", {"model_type": "gemma"}, None, "CLLM imports model_type gpt2, llama, qwen2, mistral"),
    "o-proj-bias": ("llama", {"attention_bias": True}, "o_bias", "o_proj.bias is not zero"),
    "extra-tensor": ("llama", {}, "extra", "has no place for, e.g. 'model.layers.0.mlp.up_proj.bias'"),
    "missing-tensor": ("llama", {}, "missing", "has no tensor 'model.layers.1.mlp.down_proj.weight'"),
    "untied-head-in-tied-config": ("llama", {"tie_word_embeddings": True}, "head", "lm_head.weight differs"),
    "sentencepiece-byte-fallback": ("llama", {}, "sentencepiece", "byte_fallback = True"),
}


@pytest.mark.parametrize("case", list(LLAMA_REFUSALS))
def test_llama_family_refusals_are_one_line_and_write_nothing(case, tmp_path, capsys):
    model_type, changes, tensor_change, message = LLAMA_REFUSALS[case]
    cfg = {**llama_config(model_type), **changes}
    base = llama_config(model_type)  # the tensors of the model without the change
    tensors = llama_tensors(dict(base, attention_bias=False, tie_word_embeddings=False))
    if tensor_change == "o_bias":  # a Llama with attention_bias: q, k, v and o biases, o's not zero
        for l in range(2):
            tensors.update({f"model.layers.{l}.self_attn.{p}_proj.bias": np.full(n, 0.1, np.float32)
                            for p, n in (("q", 96), ("k", 32), ("v", 32), ("o", 96))})
    elif tensor_change == "extra":
        tensors["model.layers.0.mlp.up_proj.bias"] = np.zeros(100, np.float32)
    elif tensor_change == "missing":
        del tensors["model.layers.1.mlp.down_proj.weight"]
    hf = write_llama_dir(tmp_path / "hf", cfg, tensors)
    if tensor_change == "sentencepiece":
        pytest.importorskip("tokenizers", reason="the tokenizers package (test extra) builds the tokenizer")
        with open(os.path.join(hf, "tokenizer.json"), "w") as f:
            json.dump(sentencepiece_byte_fallback_json(cfg["vocab_size"]), f)
    assert cli.main(["import-hf", hf, str(tmp_path / "ck")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err
    assert not (tmp_path / "ck").exists()


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def hf_llama(request, tmp_path_factory):
    """A random transformers model (every weight random, norms near 1) at the odd sizes, saved with its
    Llama 3-layout tokenizer, imported with import-hf and exported again with export-hf and export-gguf.
    Returns a namespace: model (transformers, eval), tok (tokenizers.Tokenizer), hf, ck, out (exported HF
    dir) and gguf {dtype: path}."""
    if transformers is None:
        pytest.skip(MISSING)
    pytest.importorskip("tokenizers", reason="the tokenizers package (test extra) is not installed")
    base = tmp_path_factory.mktemp(f"hf_{request.param}")
    tok = llama3_tokenizer(TEXT)
    cfg = llama_config(request.param, vocab_size=tok.get_vocab_size(), new_rope=False)
    kwargs = {k: v for k, v in cfg.items() if k not in ("architectures", "model_type", "torch_dtype")}
    config = transformers.AutoConfig.for_model(request.param, **kwargs)
    torch.manual_seed(1)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # transformers initializes norms to one and weights at 0.02: make every tensor count
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(base / "hf", safe_serialization=True)
    tok.save(str(base / "hf" / "tokenizer.json"))
    assert cli.main(["import-hf", str(base / "hf"), str(base / "ck")]) == 0
    assert cli.main(["export-hf", str(base / "ck"), str(base / "out")]) == 0
    ggufs = {}
    for dtype in ("f32", "f16", "q8_0"):
        ggufs[dtype] = str(base / f"{dtype}.gguf")
        assert cli.main(["export-gguf", str(base / "ck"), ggufs[dtype], "--dtype", dtype]) == 0
    return SimpleNamespace(model=model, tok=tok, hf=str(base / "hf"), ck=str(base / "ck"), out=str(base / "out"),
                           gguf=ggufs, config=cfg)


def hf_logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


@needs_hf
def test_exported_llama_loads_in_transformers_with_the_original_logits_and_token_ids(hf_llama):
    """transformers reads export-hf's LlamaForCausalLM (a Qwen2 comes back as a Llama with a zero o_proj
    bias) and computes the original model's logits; AutoTokenizer gives the tokenizer's ids."""
    out = transformers.AutoModelForCausalLM.from_pretrained(hf_llama.out).eval()
    assert type(out).__name__ == "LlamaForCausalLM"
    ids = np.random.default_rng(4).integers(0, hf_llama.config["vocab_size"], (2, 64))
    diff = float(np.abs(hf_logits(out, ids) - hf_logits(hf_llama.model, ids)).max())
    print(f"largest |logit difference| exported vs original ({hf_llama.config['model_type']}): {diff:.2e}")
    assert diff < 1e-5
    text = SAMPLE.replace("<|endoftext|>", "")
    want = hf_llama.tok.encode(text, add_special_tokens=False).ids
    assert transformers.AutoTokenizer.from_pretrained(hf_llama.out)(text)["input_ids"] == want


@needs_hf
def test_llama_cpp_graph_on_the_exported_gguf_gives_transformers_logits(hf_llama):
    """The GGUF export end to end without CLLM's forward: its tensors, read back with the gguf package
    and run through llama.cpp's llama graph written in NumPy (tests/test_gguf.py), give the logits of the
    transformers model the checkpoint was imported from."""
    import gguf  # noqa: PLC0415 - optional: the gguf extra

    ids = np.array(hf_llama.tok.encode(TEXT[:400], add_special_tokens=False).ids[:64])
    want = hf_logits(hf_llama.model, ids[None, :])[0]
    diffs = {dtype: float(np.abs(llama_forward_ggml(gguf.GGUFReader(path), ids) - want).max())
             for dtype, path in hf_llama.gguf.items()}
    print(f"largest |logit difference| llama.cpp graph vs transformers ({hf_llama.config['model_type']}):", diffs)
    assert diffs["f32"] < 1e-4
    assert diffs["f16"] < 2e-2 and diffs["q8_0"] < 0.1  # rounding of the weights only


def imported_model(hf_llama):
    """CLLM's Model of the imported checkpoint."""
    return ck.model_from_checkpoint(ck.load_checkpoint(hf_llama.ck))


@needs_hf
def test_imported_llama_gives_transformers_logits_and_32_greedy_tokens(hf_llama):
    model = imported_model(hf_llama)
    ids = np.random.default_rng(3).integers(0, hf_llama.config["vocab_size"], (2, 64))
    diff = float(np.abs(model.forward(ids)[..., :hf_llama.config["vocab_size"]] - hf_logits(hf_llama.model, ids)).max())
    print(f"largest |logit difference| CLLM vs transformers ({hf_llama.config['model_type']}): {diff:.2e}")
    assert diff < 1e-4
    prompt = hf_llama.tok.encode("First Citizen:", add_special_tokens=False).ids
    n = 32
    ours = list(Generator(model).stream(prompt, SamplingConfig(max_new_tokens=n, temperature=0, ignore_eos=True)))
    with torch.no_grad():
        theirs = hf_llama.model.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                         pad_token_id=0)[0, len(prompt):].tolist()
    assert len(theirs) == n and ours == theirs


@needs_hf
def test_adamw_steps_on_the_imported_llama_give_transformers_losses(hf_llama):
    """Five AdamW steps (weight decay on the matrices, none on norms and biases, the gradient clipped to
    a global norm of 1) on the imported model and on transformers' own: the same losses."""
    lr, betas, eps, wd, clip, steps = 1e-2, (0.9, 0.95), 1e-8, 0.1, 1.0, 5
    rng = np.random.default_rng(7)
    V = hf_llama.config["vocab_size"]
    idx, targets = rng.integers(0, V, (2, 32)), rng.integers(0, V, (2, 32))

    model = imported_model(hf_llama)
    opt = AdamW(lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=wd, grad_clip=clip)
    ours, our_norms = [], []
    for _ in range(steps):
        model.zero_grad()
        _, loss = model.forward(idx, targets)
        model.backward()
        our_norms.append(opt.step(model, loss=loss))
        ours.append(loss)

    torch_model = transformers.AutoModelForCausalLM.from_pretrained(hf_llama.hf).train()  # no dropout in these
    named = dict(torch_model.named_parameters())
    decayed = [p for n, p in named.items() if n.endswith("weight") and "norm" not in n]
    torch_opt = torch.optim.AdamW([{"params": decayed, "weight_decay": wd},
                                   {"params": [p for p in named.values() if all(p is not d for d in decayed)],
                                    "weight_decay": 0.0}], lr=lr, betas=betas, eps=eps)
    theirs, their_norms = [], []
    x, y = torch.tensor(idx), torch.tensor(targets)
    for _ in range(steps):
        torch_opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(torch_model(x).logits.reshape(-1, V), y.reshape(-1))
        loss.backward()
        their_norms.append(float(torch.nn.utils.clip_grad_norm_(list(named.values()), clip)))
        torch_opt.step()
        theirs.append(loss.item())
    print(f"losses ({hf_llama.config['model_type']}): CLLM {np.round(ours, 6)} transformers {np.round(theirs, 6)}")
    assert theirs[-1] < theirs[0] - 0.5  # the steps do train
    np.testing.assert_allclose(our_norms, their_norms, rtol=1e-4)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)


@needs_hf
def test_an_embedding_wider_than_the_tokenizer_imports_as_padding(tmp_path):
    """Qwen2.5's case: config.json's vocab_size (151,936) exceeds its tokenizer's 151,665 tokens. The rows
    past the tokenizer become padding (V..Vp): the model's logits are transformers' first V, generation can
    only give ids the tokenizer decodes, and export-hf writes the tokenizer's V rows."""
    pytest.importorskip("tokenizers", reason="the tokenizers package (test extra) is not installed")
    tok = llama3_tokenizer(TEXT)
    V = tok.get_vocab_size()
    cfg = llama_config("qwen2", vocab_size=V + 37, new_rope=False)
    kwargs = {k: v for k, v in cfg.items() if k not in ("architectures", "model_type", "torch_dtype")}
    torch.manual_seed(2)
    hf_model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model("qwen2", **kwargs))
    hf_model.eval()
    hf_model.save_pretrained(tmp_path / "hf", safe_serialization=True)
    tok.save(str(tmp_path / "hf" / "tokenizer.json"))
    assert cli.main(["import-hf", str(tmp_path / "hf"), str(tmp_path / "ck")]) == 0
    model = ck.model_from_checkpoint(ck.load_checkpoint(str(tmp_path / "ck")))
    assert (model.config.vocab_size, model.config.padded_vocab_size) == (V, 64 * -(-(V + 37) // 64))
    ids = np.random.default_rng(5).integers(0, V, (2, 40))
    want = hf_logits(hf_model, ids)[..., :V]
    assert float(np.abs(model.forward(ids) - want).max()) < 1e-4
    assert cli.main(["export-hf", str(tmp_path / "ck"), str(tmp_path / "out")]) == 0
    out = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert out.config.vocab_size == V
    assert float(np.abs(hf_logits(out, ids) - want).max()) < 1e-4


# ---- chat templates: transformers' apply_chat_template gives CLLM's ids (cllm/chat/template.py)

CHAT_PIECES = ["Hello", " world", "speak", ",", "?", "\n", "\n\n", " ", "  ", "\t", "\u00fcber", " \u2603",
               "\u65e5\u672c", "'s", "12345", "\U0001f600", "<b>&", "{{ x }}", "<|im_end|>", "<|eot_id|>"]


def random_conversations(seed: int, n: int = 100):
    """n conversations: an optional system message, then 1..6 user and assistant messages in random order, whose
    contents join random pieces (unicode, newlines, other templates' special tokens, nothing at all)."""
    rng = random.Random(seed)

    def text() -> str:
        return "".join(rng.choice(CHAT_PIECES) for _ in range(rng.randint(0, 12)))

    for _ in range(n):
        conv = [{"role": "system", "content": text()}] if rng.random() < 0.5 else []
        conv += [{"role": rng.choice(["user", "assistant"]), "content": text()} for _ in range(rng.randint(1, 6))]
        yield conv, rng.random() < 0.5


def transformers_chat_ids(auto, conv, add_generation_prompt: bool) -> list[int]:
    out = auto.apply_chat_template(conv, tokenize=True, add_generation_prompt=add_generation_prompt)
    return out if isinstance(out, list) else out["input_ids"]  # transformers 5 returns a BatchEncoding


def assert_same_chat_ids(auto, tok, seed: int):
    n = 0
    for conv, gen in random_conversations(seed):
        assert transformers_chat_ids(auto, conv, gen) == apply_chat_template(tok, conv, gen), (conv, gen)
        n += 1
    assert n == 100


@needs_hf
def test_default_chat_template_after_export_hf_gives_cllm_ids(tmp_path):
    tok = add_chat_tokens(train_tokenizer("bpe", TEXT, 300, progress=False))
    model = Model(ModelConfig(vocab_size=tok.vocab_size, max_seq_len=16, num_layers=1, num_heads=2, embed_dim=32))
    run, hf = str(tmp_path / "run"), str(tmp_path / "hf")
    ck.save_checkpoint(run, "step_000000", model, tokenizer=tok)
    ck.set_pointer(run, "latest", "step_000000")
    assert cli.main(["export-hf", run, hf]) == 0
    auto = transformers.AutoTokenizer.from_pretrained(hf)
    assert auto.chat_template == CHATML_TEMPLATE
    assert_same_chat_ids(auto, tok, seed=0)
    back = str(tmp_path / "back")  # import-hf keeps the template in the checkpoint's tokenizer
    assert cli.main(["import-hf", hf, back]) == 0
    assert load_tokenizer(ck.load_checkpoint(back).tokenizer_path).chat_template == CHATML_TEMPLATE


def foreign_chat_dir(path, specials: list[str], config: dict) -> str:
    """A HuggingFace tokenizer directory made by the `tokenizers` library (Llama 3's byte-level BPE layout,
    trained on TEXT with `specials`) and a tokenizer_config.json holding `config`."""
    import tokenizers as tk

    bpe = tk.Tokenizer(tk.models.BPE(ignore_merges=True))
    bpe.pre_tokenizer = tk.pre_tokenizers.Sequence([
        tk.pre_tokenizers.Split(tk.Regex(LLAMA3_SPLIT), "isolated"),
        tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    bpe.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                     initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([TEXT], trainer)
    os.makedirs(path)
    bpe.save(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", **config}, f)
    return str(path)


@needs_hf
@pytest.mark.parametrize("style", ["chatml", "llama3"])
def test_chat_template_from_tokenizer_config_gives_transformers_ids(style, tmp_path):
    pytest.importorskip("tokenizers", reason="the tokenizers package (test extra) builds the tokenizer")
    if style == "chatml":  # Qwen2's layout: no BOS, the list form of named templates
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        config = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                  "chat_template": [{"name": "default", "template": CHATML_TEMPLATE},
                                    {"name": "tool_use", "template": "{{ tools | tojson }}"}]}
    else:
        specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
        config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": LLAMA3_TEMPLATE}
    hf = foreign_chat_dir(tmp_path / "hf", specials, config)
    auto = transformers.AutoTokenizer.from_pretrained(hf)
    tok = import_tokenizer(hf)
    assert tok.chat_template == (CHATML_TEMPLATE if style == "chatml" else LLAMA3_TEMPLATE)
    assert_same_chat_ids(auto, tok, seed=1)
    # the template sees the special tokens the config names, and no others (CLLM's guessed BOS stays out)
    probe = "{{ bos_token is defined }} {{ bos_token }}|{{ eos_token }}|{{ pad_token }}|{{ unk_token is defined }}"
    conv = [{"role": "user", "content": "hi"}]
    want = auto.apply_chat_template(conv, chat_template=probe, tokenize=False)
    assert render_text(probe, conv, **tok.special_token_strings()) == want
