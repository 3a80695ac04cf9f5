"""llama's block options (cllm/config.py: activation relu2, qk_norm, logit_softcap, zero_init_proj): their kernels
(cllm/kernels/relu2.py, qknorm.py, softcap.py) by finite differences in float64 and against PyTorch in float32
(a fixture made by tests/reference/make_block_reference.py; torch is not imported here), the decoding path
(float and int8) against the training forward, initialization, the config's round trip, and the refusals.
The whole model's finite differences with the options on are tests/test_llama_model.py's."""
import json
import math
import os

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from test_kernels import SETTINGS, assert_f32, check_backward, rand
from test_llama_model import batch, config, roughened
from train_helpers import TINY_FLAGS, all_threads_after, assert_clean_error, run_cli, tiny_config, write_corpus  # noqa: F401

import cllm.checkpoint as ck
import cllm.kernels as K
from cllm.config import ModelConfig
from cllm.device import CudaModel
from cllm.errors import ConfigError
from cllm.generation import Generator, SamplingConfig
from cllm.interop.gguf import export_gguf
from cllm.interop.hf import export_hf
from cllm.kernels._common import PARALLEL_MIN_WORK
from cllm.model import Model
from cllm.quantize import Int8Model, dequantize_in_place
from cllm.training import train

F64 = np.float64
F32 = np.float32
FIXTURE = os.path.join(os.path.dirname(__file__), "reference", "block_reference.npz")
ALL = dict(activation="relu2", qk_norm=True, logit_softcap=1.5, zero_init_proj=True)
seeds = st.integers(0, 2**31 - 1)


# ------------------------------------------------------------------ NumPy references
def np_qknorm(qkv, N, NH, NKV, hs, eps):
    x = qkv.reshape(N, NH + 2 * NKV, hs).copy()
    qk = x[:, :NH + NKV]
    rstd = 1 / np.sqrt((qk * qk).mean(-1, keepdims=True) + eps)
    x[:, :NH + NKV] = qk * rstd
    return x.ravel(), rstd.ravel()


# ------------------------------------------------------------------ relu2
@SETTINGS
@given(N=st.integers(1, 5), F=st.integers(1, 9), seed=seeds)
@example(N=1, F=1, seed=0)
@example(N=3, F=7, seed=2)
def test_relu2(N, F, seed):
    rng = np.random.default_rng(seed)
    inp = rand(rng, N * F, 2.0)
    inp += np.where(inp < 0, -0.05, 0.05)  # away from the kink at 0, where central differences straddle it
    x = {"inp": inp}
    W = rand(rng, N * F)
    out = np.empty(N * F)

    def loss():
        K.relu2_forward(out, x["inp"], N, F)
        return float(np.dot(out, W))

    loss()
    np.testing.assert_allclose(out, np.maximum(inp, 0) ** 2, rtol=1e-15, atol=0)
    g = check_backward(loss, x, lambda gr: K.relu2_backward(gr["inp"], W, x["inp"], N, F), rng)
    dx = np.full(N * F, np.nan)
    K.relu2_backward(dx, W, x["inp"], N, F, True)
    np.testing.assert_allclose(dx, g["inp"], rtol=1e-12, atol=1e-12)
    o32 = np.empty(N * F, F32)
    K.relu2_forward(o32, inp.astype(F32), N, F)
    assert_f32(o32, np.maximum(inp.astype(F32).astype(F64), 0) ** 2, "relu2 out")


# ------------------------------------------------------------------ QK-norm
@SETTINGS
@given(N=st.integers(1, 4), NKV=st.integers(1, 2), group=st.integers(1, 3), hs=st.sampled_from([2, 4, 6]),
       seed=seeds)
@example(N=1, NKV=1, group=1, hs=2, seed=0)
@example(N=3, NKV=2, group=2, hs=6, seed=1)
def test_qknorm(N, NKV, group, hs, seed):
    NH, eps = NKV * group, 1e-5
    QKV = (NH + 2 * NKV) * hs
    rng = np.random.default_rng(seed)
    x = {"qkv": rand(rng, N * QKV, 2.0) + 0.3}
    W = rand(rng, N * QKV)
    out, rstd = np.empty(N * QKV), np.empty(N * (NH + NKV))

    def loss():
        out[:] = x["qkv"]
        K.qknorm_forward(out, rstd, N, NH, NKV, hs, eps)
        return float(np.dot(out, W))

    def backward(gr):  # the kernel works in place on the output's gradient; the check wants it added
        d = W.copy()
        K.qknorm_backward(d, out, rstd, N, NH, NKV, hs)
        gr["qkv"] += d

    loss()
    want, want_rstd = np_qknorm(x["qkv"], N, NH, NKV, hs, eps)
    np.testing.assert_allclose(out, want, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(rstd, want_rstd, rtol=1e-13)
    check_backward(loss, x, backward, rng)
    q32, r32 = x["qkv"].astype(F32), np.empty(N * (NH + NKV), F32)
    K.qknorm_forward(q32, r32, N, NH, NKV, hs, eps)
    assert_f32(q32, np_qknorm(x["qkv"].astype(F32).astype(F64), N, NH, NKV, hs, eps)[0], "qknorm out")


def test_qknorm_commutes_with_rope():
    # why the model may normalize after RoPE where modded-nanogpt normalizes before: a rotation of pairs keeps
    # each head's sum of squares, so both orders give the same q and k
    B, T, NH, NKV, hs, eps = 2, 5, 4, 2, 8, 1e-5
    cos, sin = K.rope_table(8, hs, 10000.0, F64)
    qkv = rand(np.random.default_rng(3), B * T * (NH + 2 * NKV) * hs, 2.0)
    after, before, rstd = qkv.copy(), qkv.copy(), np.empty(B * T * (NH + NKV))
    K.rope_forward(after, cos, sin, B, T, NH, NKV, hs)
    K.qknorm_forward(after, rstd, B * T, NH, NKV, hs, eps)
    K.qknorm_forward(before, rstd, B * T, NH, NKV, hs, eps)
    K.rope_forward(before, cos, sin, B, T, NH, NKV, hs)
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-13)


# ------------------------------------------------------------------ logit soft-cap
@SETTINGS
@given(N=st.integers(1, 40), cap=st.sampled_from([0.5, 3.0, 30.0]), seed=seeds)
@example(N=1, cap=3.0, seed=0)
def test_softcap(N, cap, seed):
    rng = np.random.default_rng(seed)
    x = {"inp": rand(rng, N, 4.0)}
    W = rand(rng, N)
    out = np.empty(N)

    def loss():
        K.softcap_forward(out, x["inp"], N, cap)
        return float(np.dot(out, W))

    loss()
    np.testing.assert_allclose(out, cap * np.tanh(x["inp"] / cap), rtol=1e-14, atol=1e-15)
    g = check_backward(loss, x, lambda gr: K.softcap_backward(gr["inp"], W, out, N, cap), rng)
    inplace = W.copy()  # the model's use: the gradient overwritten in place
    K.softcap_backward(inplace, inplace, out, N, cap, True)
    np.testing.assert_allclose(inplace, g["inp"], rtol=1e-12, atol=1e-12)
    o32 = x["inp"].astype(F32)
    K.softcap_forward(o32, o32, N, cap)  # in place
    assert_f32(o32, cap * np.tanh(x["inp"].astype(F32).astype(F64) / cap), "softcap out")


def test_serial_and_parallel_paths_agree():
    # above PARALLEL_MIN_WORK the kernels split the work over threads: the same numbers as row by row
    rng = np.random.default_rng(0)
    F = 64
    N = PARALLEL_MIN_WORK // F + 3
    inp = rng.standard_normal(N * F).astype(F32)
    out, ref = np.empty_like(inp), np.empty_like(inp)
    K.relu2_forward(out, inp, N, F)
    for n in range(0, N, 512):  # small calls: the serial path
        m = min(512, N - n)
        K.relu2_forward(ref[n * F:(n + m) * F], inp[n * F:(n + m) * F], m, F)
    np.testing.assert_array_equal(out, ref)
    K.softcap_forward(out, inp, inp.size, 2.0)
    np.testing.assert_array_equal(out, np.concatenate([_softcap_serial(inp[i:i + 4096], 2.0)
                                                       for i in range(0, inp.size, 4096)]))
    NH, NKV, hs = 4, 2, 16
    rows = PARALLEL_MIN_WORK // ((NH + 2 * NKV) * hs) + 3
    qkv = rng.standard_normal(rows * (NH + 2 * NKV) * hs).astype(F32)
    a, r1, r2 = qkv.copy(), np.empty(rows * (NH + NKV), F32), np.empty(rows * (NH + NKV), F32)
    K.qknorm_forward(a, r1, rows, NH, NKV, hs, 1e-5)
    b = qkv.copy()
    W = (NH + 2 * NKV) * hs
    for n in range(rows):
        K.qknorm_forward(b[n * W:(n + 1) * W], r2[n * (NH + NKV):(n + 1) * (NH + NKV)], 1, NH, NKV, hs, 1e-5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(r1, r2)


def _softcap_serial(x, cap):
    out = np.empty_like(x)
    K.softcap_forward(out, x, x.size, cap)
    return out


# ------------------------------------------------------------------ PyTorch parity (float32)
@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def close(got, want, name, rtol=1e-5):
    # float32 against PyTorch's float32: within ~1e-5 of the tensor's largest element
    assert got.dtype == F32, f"{name} is {got.dtype}"
    scale = float(np.abs(want).max())
    assert scale > 0, f"the reference {name} is all zero"
    err = float(np.abs(got.astype(F64).ravel() - want.astype(F64).ravel()).max())
    assert err <= rtol * scale, f"{name}: max abs diff {err:g} vs max {scale:g}"


def test_relu2_matches_pytorch(ref):
    inp, dout = ref["relu2_inp"], ref["relu2_dout"]
    N, F = inp.shape
    out, din = np.empty(N * F, F32), np.full(N * F, np.nan, F32)
    K.relu2_forward(out, inp.ravel(), N, F)
    close(out, ref["relu2_out"], "relu2 out")
    K.relu2_backward(din, dout.ravel(), inp.ravel(), N, F, True)
    close(din, ref["relu2_dinp"], "relu2 dinp")


def test_qknorm_matches_pytorch(ref):
    N, NH, NKV, hs = (int(v) for v in ref["qk_sizes"])
    qkv, rstd = ref["qk_inp"].ravel().copy(), np.empty(N * (NH + NKV), F32)
    K.qknorm_forward(qkv, rstd, N, NH, NKV, hs, float(ref["qk_eps"]))
    close(qkv, ref["qk_out"], "qknorm out")
    d = ref["qk_dout"].ravel().copy()
    K.qknorm_backward(d, qkv, rstd, N, NH, NKV, hs)
    close(d, ref["qk_dinp"], "qknorm dqkv")


def test_softcap_matches_pytorch(ref):
    x, cap = ref["cap_inp"], float(ref["cap"])
    out = np.empty_like(x)
    K.softcap_forward(out, x, x.size, cap)
    close(out, ref["cap_out"], "softcap out")
    d = ref["cap_dout"].copy()
    K.softcap_backward(d, d, out, x.size, cap, True)
    close(d, ref["cap_dinp"], "softcap dinp")


# ------------------------------------------------------------------ the model: shapes, init, decoding
def test_relu2_has_an_fc_of_f_rows_and_the_options_change_the_logits():
    cfg = config(**ALL)
    assert cfg.param_shapes()["fcw"] == (2, 24, 16) and config().param_shapes()["fcw"] == (2, 48, 16)
    assert cfg.activation_shapes(2, 3)["qk_rstd"] == (2, 2, 3, 4 + 2)
    assert cfg.num_activations(2, 3) == sum(math.prod(s) for s in cfg.activation_shapes(2, 3).values())
    idx, tgt = batch(cfg, 2, 7)
    model = roughened(cfg)
    capped = model.forward(idx)
    assert np.abs(capped).max() < 1.5  # the cap holds
    uncapped = Model(config(activation="relu2", qk_norm=True), seed=None, dtype=F64)
    uncapped.load_params(model.params)
    plain = uncapped.forward(idx)
    assert np.abs(plain).max() > 1.5
    np.testing.assert_allclose(capped, 1.5 * np.tanh(plain / 1.5), rtol=1e-12, atol=1e-13)


def test_zero_init_proj_zeroes_the_projections_only():
    cfg = config(zero_init_proj=True)
    zero, plain = Model(cfg, seed=4), Model(config(), seed=4)
    for name in cfg.param_shapes():
        if name in ("attprojw", "fcprojw"):
            assert not zero.tensor(name).any() and plain.tensor(name).std() > 0, name
        else:
            np.testing.assert_array_equal(zero.tensor(name), plain.tensor(name), err_msg=name)
    # a block starting at zero is the identity: the logits are the embeddings through the final norm and head
    idx, tgt = batch(cfg, 1, 5)
    zero.loss(idx, tgt)
    zero.backward()
    assert np.abs(zero.g["attprojw"]).max() > 0 and np.abs(zero.g["fcprojw"]).max() > 0


@pytest.mark.parametrize("options", [ALL, dict(activation="relu2"), dict(qk_norm=True), dict(logit_softcap=2.0)])
def test_decoding_equals_the_forward_with_the_options(options):
    cfg = config(tie_embeddings=False, max_seq_len=12, **options)
    model = roughened(cfg, np.float64)
    idx, _ = batch(cfg, 3, 12, seed=2)
    full = model.forward(idx).copy()
    cache = model.new_kv_cache(3)
    for t in range(12):
        np.testing.assert_allclose(model.decode_step(idx[:, t], t, cache), full[:, t], rtol=0, atol=1e-12)
    one = model.new_kv_cache(1)  # a prefill of 9 rows: the gemm path
    np.testing.assert_allclose(model.prefill(idx[1, :9], 0, one), full[1, 8], rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.prefill(idx[1, 9:], 9, one), full[1, 11], rtol=0, atol=1e-12)


def test_greedy_generation_is_the_forwards_argmax():
    cfg = config(max_seq_len=12, **ALL)
    model = roughened(cfg, np.float32, seed=3)
    prompt = [1, 5, 2]
    got = list(Generator(model).stream(prompt, SamplingConfig(max_new_tokens=8, temperature=0, seed=0)))
    want = list(prompt)
    for _ in range(8):
        want.append(int(np.argmax(model.forward(np.array([want], dtype=np.int32))[0, -1])))
    assert got == want[len(prompt):]


def test_int8_decoding_equals_the_rounded_float_forward():
    cfg = config(max_seq_len=12, tie_embeddings=False, **ALL)
    model = roughened(cfg, np.float32)
    int8 = Int8Model(model)
    dequantize_in_place(model)
    idx, _ = batch(cfg, 2, 10, seed=3)
    full = model.forward(idx).copy()
    np.testing.assert_allclose(int8.forward(idx), full, rtol=0, atol=1e-4 * np.abs(full).max())
    a = int8.prefill(idx[0, :9], 0, int8.new_kv_cache(1))  # 9 rows: the int8 gemm path
    np.testing.assert_allclose(a, model.prefill(idx[0, :9], 0, model.new_kv_cache(1)), rtol=0,
                               atol=1e-4 * np.abs(a).max())


# ------------------------------------------------------------------ config: round trip, old files, refusals
def test_config_round_trip_and_old_files_load_unchanged(tmp_path):
    cfg = config(**ALL)
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    old = config().to_dict()
    for name in ALL:  # a config.json written before the options existed
        del old[name]
    loaded = ModelConfig.from_dict(old)
    options = (loaded.activation, loaded.qk_norm, loaded.logit_softcap, loaded.zero_init_proj)
    assert options == ("swiglu", False, 0, False)
    assert loaded.param_shapes() == config().param_shapes()
    assert ModelConfig().activation == "gelu"
    model = roughened(cfg, np.float32)
    path = ck.save_checkpoint(str(tmp_path), "step_000001", model)
    back = ck.load_checkpoint(path)
    assert back.model_config == cfg


def test_bad_options_are_one_clear_error():
    for kw, msg in ((dict(qk_norm=True), "--qk-norm"), (dict(logit_softcap=30.0), "--logit-softcap 30"),
                    (dict(zero_init_proj=True), "--zero-init-proj"), (dict(activation="relu2"), "--activation relu2")):
        with pytest.raises(ConfigError, match="use --arch llama") as e:
            ModelConfig(**kw)  # gpt2
        assert msg in str(e.value)
    with pytest.raises(ConfigError, match="choose one of: swiglu, relu2"):
        config(activation="gelu")
    for cap in (-1.0, math.inf, math.nan, True):
        with pytest.raises(ConfigError, match="logit_softcap"):
            config(logit_softcap=cap)
    with pytest.raises(ConfigError, match="--activation relu2, --qk-norm.*--device cuda"):
        CudaModel(Model(config(**ALL), seed=0))
    assert config(zero_init_proj=True).forward_options() == []


def test_export_of_a_model_with_options_is_refused(tmp_path):
    path = ck.save_checkpoint(str(tmp_path), "step_000001", Model(config(qk_norm=True), seed=0))
    with pytest.raises(ConfigError, match="export-hf .*cannot express --qk-norm"):
        export_hf(path, str(tmp_path / "hf"))
    with pytest.raises(ConfigError, match="export-gguf .*cannot express --qk-norm"):
        export_gguf(path, str(tmp_path / "m.gguf"))
    assert not (tmp_path / "hf").exists() and not (tmp_path / "m.gguf").exists()
    config(zero_init_proj=True).check_exportable("export-hf")  # init only: the file is the same model


def test_train_flags_reach_the_checkpoint(tmp_path):
    corpus = write_corpus(tmp_path / "text")
    cfg = tiny_config(corpus, tmp_path / "run", max_steps=3, arch="llama", activation="relu2", qk_norm=True,
                      logit_softcap=5.0, zero_init_proj=True)
    summary = train(cfg)
    assert summary["steps"] == 3 and math.isfinite(summary["final_train_loss"])
    saved = ck.load_checkpoint(str(tmp_path / "run" / "latest")).model_config
    assert (saved.activation, saved.qk_norm, saved.logit_softcap, saved.zero_init_proj) == ("relu2", True, 5.0, True)


def test_cli_refuses_the_options_for_gpt2_and_a_bad_activation(tmp_path):
    corpus = write_corpus(tmp_path / "text")
    r = run_cli("train", corpus, *TINY_FLAGS, "--qk-norm", "--checkpoint-dir", tmp_path / "a")
    assert_clean_error(r, "--qk-norm", "--arch llama")
    r = run_cli("train", corpus, *TINY_FLAGS, "--arch", "llama", "--activation", "relu3", "--checkpoint-dir",
                tmp_path / "b")
    assert_clean_error(r, "relu3", "swiglu, relu2")
