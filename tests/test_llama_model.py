"""The llama architecture in the model (cllm/model.py): float64 finite differences of every parameter tensor,
parity with transformers' LlamaForCausalLM (tests/reference/make_llama_model_reference.py), KV-cache decoding
against the forward, int8 decoding, initialization, and the refusals."""
import math
import os

import numpy as np
import pytest

from cllm.config import ModelConfig
from cllm.model import MATRIX_PARAMS, Model
from cllm.quantize import Int8Model, dequantize_in_place

FIXTURE = os.path.join(os.path.dirname(__file__), "reference", "llama_model_reference.npz")


def config(**kw) -> ModelConfig:
    sizes = dict(arch="llama", vocab_size=13, max_seq_len=8, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=16,
                 ffn_dim=24)
    sizes.update(kw)
    return ModelConfig(**sizes)


def roughened(cfg: ModelConfig, dtype=np.float64, seed: int = 1) -> Model:
    """A model whose gains and biases are not 1 and 0, so that every parameter's gradient is exercised."""
    model = Model(cfg, seed=seed, dtype=dtype)
    model.params += np.random.default_rng(seed).normal(0, 0.2, model.params.size).astype(dtype)
    return model


def batch(cfg: ModelConfig, B: int, T: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, cfg.vocab_size, (B, T)).astype(np.int32),
            rng.integers(0, cfg.vocab_size, (B, T)).astype(np.int32))


# the block options (tests/test_block_options.py): all on, and relu2 with the soft-cap alone
ALL_OPTIONS = dict(activation="relu2", qk_norm=True, logit_softcap=1.5, zero_init_proj=True)


@pytest.mark.parametrize("tied,bias,nkv,options", [
    (True, False, 2, {}), (False, True, 2, {}), (False, False, 4, {}), (True, True, 1, {}),
    (True, False, 2, ALL_OPTIONS), (False, True, 1, ALL_OPTIONS), (True, False, 4, dict(qk_norm=True)),
    (False, False, 2, dict(activation="relu2", logit_softcap=0.7))])
def test_finite_differences_every_tensor(tied, bias, nkv, options):
    cfg = config(tie_embeddings=tied, attention_bias=bias, num_kv_heads=nkv, **options)
    model = roughened(cfg)
    idx, tgt = batch(cfg, 2, 7)
    model.zero_grad()
    model.loss(idx, tgt)
    model.backward()
    grads = model.grads.copy()
    rng = np.random.default_rng(5)
    eps = 1e-6
    for name in cfg.param_shapes():
        view, gview = model.p[name], model.g[name]
        rows = cfg.vocab_size * cfg.embed_dim if name in ("wte", "lm_head") else view.size  # not the padding
        for i in rng.choice(rows, 6, replace=False):
            old = view[i]
            view[i] = old + eps
            up = model.loss(idx, tgt)
            view[i] = old - eps
            down = model.loss(idx, tgt)
            view[i] = old
            numeric = (up - down) / (2 * eps)
            assert gview[i] == pytest.approx(numeric, rel=1e-5, abs=1e-8), (name, i)
    assert np.abs(grads).max() > 0
    assert ("lm_head" in cfg.param_shapes()) == (not tied) and ("qkvb" in cfg.param_shapes()) == bias


def test_logits_loss_and_gradients_equal_transformers_llama():
    ref = np.load(FIXTURE, allow_pickle=False)
    V, C, NH, NKV, F, L, maxT = (int(x) for x in ref["sizes"])
    cfg = ModelConfig(arch="llama", vocab_size=V, max_seq_len=maxT, num_layers=L, num_heads=NH, num_kv_heads=NKV,
                      embed_dim=C, ffn_dim=F, rope_theta=float(ref["rope_theta"]), norm_eps=float(ref["norm_eps"]),
                      tie_embeddings=False)
    assert list(cfg.param_shapes()) == [k[len("param_"):] for k in ref.files if k.startswith("param_")]
    model = Model(cfg, seed=None)
    for name, shape in cfg.param_shapes().items():
        assert ref[f"param_{name}"].shape == shape, name
        model.p[name][:] = ref[f"param_{name}"].ravel()
    logits, loss = model.forward(ref["idx"], ref["targets"])
    np.testing.assert_allclose(logits, ref["logits"], rtol=0, atol=1e-4)
    assert loss == pytest.approx(float(ref["loss"]), rel=1e-5)
    model.zero_grad()
    model.backward()
    for name, shape in cfg.param_shapes().items():
        want = ref[f"grad_{name}"]
        assert np.abs(want).max() > 0, name
        np.testing.assert_allclose(model.g[name].reshape(shape), want, rtol=0, atol=2e-4 * np.abs(want).max(),
                                   err_msg=name)
    # decoding the same model: prefill then decode steps give the forward's rows
    seq = ref["idx"][0]
    full = model.forward(seq[None]).copy()[0]
    cache = model.new_kv_cache(1)
    np.testing.assert_allclose(model.prefill(seq[:4], 0, cache), full[3], rtol=0, atol=1e-4)
    for t in range(4, seq.size):
        np.testing.assert_allclose(model.decode_step(seq[t:t + 1], t, cache)[0], full[t], rtol=0, atol=1e-4)


def test_decoding_equals_the_forward_rows_for_several_sequences_and_a_prefill_from_pos0():
    cfg = config(tie_embeddings=False, attention_bias=True, max_seq_len=12)
    model = roughened(cfg, np.float64)
    idx, _ = batch(cfg, 3, 12, seed=2)
    full = model.forward(idx).copy()
    cache = model.new_kv_cache(3)
    assert cache.size == 3 * cfg.num_layers * cfg.max_seq_len * 2 * cfg.num_kv_heads * cfg.head_size
    for t in range(12):
        np.testing.assert_allclose(model.decode_step(idx[:, t], t, cache), full[:, t], rtol=0, atol=1e-12)
    # a prefill in two parts (positions 0..6, then 7..11: RoPE at pos0 > 0, 8+ rows take the gemm path)
    one = model.new_kv_cache(1)
    np.testing.assert_allclose(model.prefill(idx[1, :7], 0, one), full[1, 6], rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.prefill(idx[1, 7:], 7, one), full[1, 11], rtol=0, atol=1e-12)
    # the context slid: a re-prefill restarts positions at 0, as the forward over the kept tokens does
    kept = idx[2, 6:]
    np.testing.assert_allclose(model.prefill(kept, 0, model.new_kv_cache(1)), model.forward(kept[None])[0, -1],
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("tied", [True, False])
def test_int8_decoding_equals_the_float_decoding_of_the_rounded_weights(tied):
    cfg = config(tie_embeddings=tied, attention_bias=True, max_seq_len=12)
    model = roughened(cfg, np.float32)
    int8 = Int8Model(model)
    assert len(int8._scales) == (5 if tied else 6)  # lm_head is quantized too
    dequantize_in_place(model)
    idx, _ = batch(cfg, 2, 10, seed=3)
    full = model.forward(idx).copy()
    got = int8.forward(idx)
    np.testing.assert_allclose(got, full, rtol=0, atol=1e-4 * np.abs(full).max())
    c8, cf = int8.new_kv_cache(1), model.new_kv_cache(1)
    a = int8.prefill(idx[0, :9], 0, c8)  # 9 rows: the int8 gemm path (dequantized per layer)
    np.testing.assert_allclose(a, model.prefill(idx[0, :9], 0, cf), rtol=0, atol=1e-4 * np.abs(a).max())
    np.testing.assert_allclose(int8.params_to_host(), model.params, rtol=0, atol=1e-6)


def test_initialization_is_nanogpts():
    cfg = config(num_layers=3, embed_dim=64, num_heads=4, num_kv_heads=2, ffn_dim=96, vocab_size=200,
                 tie_embeddings=False, attention_bias=True)
    model = Model(cfg, seed=0)
    t = model.tensor
    for name in ("ln1w", "ln2w", "lnfw"):
        assert (t(name) == 1).all(), name
    assert not t("qkvb").any()
    for name in ("wte", "lm_head"):
        assert t(name)[:200].std() == pytest.approx(0.02, rel=0.05) and not t(name)[200:].any(), name
    assert t("qkvw").std() == pytest.approx(0.02, rel=0.05) and t("fcw").std() == pytest.approx(0.02, rel=0.05)
    for name in ("attprojw", "fcprojw"):  # the residual projections: 0.02 / sqrt(2L)
        assert t(name).std() == pytest.approx(0.02 / math.sqrt(6), rel=0.05), name
    assert "lm_head" in MATRIX_PARAMS  # weight-decayed as every other matrix (cllm/optim.py)


def test_memory_estimate_counts_llamas_buffers():
    cfg = config(num_kv_heads=1, ffn_dim=40)
    model = Model(cfg, seed=0)
    idx, tgt = batch(cfg, 2, 8)
    model.loss(idx, tgt)
    model.backward()
    assert model.acts.size == cfg.num_activations(2, 8) and model.grad_acts.size == cfg.num_grad_activations(2, 8)
    assert cfg.activation_shapes(2, 8)["qkv"] == (2, 2, 8, (4 + 2) * 4)
    assert cfg.memory_bytes(2, 8) > cfg.memory_bytes(2, 8, training=False) > 4 * cfg.num_parameters()


@pytest.mark.parametrize("nkv", [2, 4])
def test_finite_differences_through_fixed_dropout_masks(nkv):
    # dropout at the four sites (embeddings, probabilities, both projections) with one key is a fixed
    # function of the parameters: its gradient equals central differences; evaluation then drops nothing
    cfg = config(num_kv_heads=nkv)
    model = roughened(cfg)
    idx, tgt = batch(cfg, 2, 7)
    plain = model.loss(idx, tgt)
    p, key = 0.3, 4242
    dropped = model.loss(idx, tgt, dropout=p, dropout_key=key)
    assert abs(dropped - plain) > 1e-3  # the masks change the function
    model.zero_grad()
    model.backward()
    grads = {name: model.g[name].copy() for name in cfg.param_shapes()}
    rng = np.random.default_rng(6)
    eps = 1e-6
    for name in cfg.param_shapes():
        view = model.p[name]
        rows = cfg.vocab_size * cfg.embed_dim if name == "wte" else view.size
        for i in rng.choice(rows, 4, replace=False):
            old = view[i]
            view[i] = old + eps
            up = model.loss(idx, tgt, dropout=p, dropout_key=key)
            view[i] = old - eps
            down = model.loss(idx, tgt, dropout=p, dropout_key=key)
            view[i] = old
            assert grads[name][i] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-8), (name, i)
    assert model.loss(idx, tgt) == plain
