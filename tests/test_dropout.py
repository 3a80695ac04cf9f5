"""Dropout (cllm/kernels/dropout.py, the model's four sites, the training loop): the fraction dropped,
finite differences through fixed masks, PyTorch parity given the same masks (a fixture made by
tests/reference/make_dropout_reference.py; torch is not imported here), evaluation without dropout,
and a bit-identical resume with dropout on."""
import json
import math
import os

import numpy as np
import pytest
from test_reference import NAMES, make_model
from train_helpers import (
    all_threads_after,  # noqa: F401  (autouse)
    prepared_dataset,
    tiny_config,
    train_losses,
)

import cllm.kernels as K
from cllm import checkpoint as ck
from cllm.config import ModelConfig
from cllm.kernels.dropout import derive_key, dropout_mask, dropout_threshold
from cllm.model import Model
from cllm.training import train

FIXTURE = os.path.join(os.path.dirname(__file__), "reference", "dropout_reference.npz")


def _mask(n, p, key):
    m = np.empty(n, np.uint8)
    dropout_mask(m, n, dropout_threshold(p), key)
    return m


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_the_fraction_dropped_and_independent_streams(p):
    n = 1 << 20
    a, b = _mask(n, p, derive_key(1, 0, 0)), _mask(n, p, derive_key(1, 0, 1))
    sigma = math.sqrt(p * (1 - p) / n)
    for m in (a, b):
        assert abs((1 - m.mean()) - p) < 5 * sigma, (1 - m.mean(), p)
    # two streams (micro-batches, ranks, layers) are independent: both kept with probability (1-p)^2
    both = np.mean(a & b)
    q = (1 - p) ** 2
    assert abs(both - q) < 5 * math.sqrt(q * (1 - q) / n), (both, q)
    # neighbouring elements are independent too (the counter is hashed, not stepped)
    pairs = np.mean(a[:-1] & a[1:])
    assert abs(pairs - q) < 5 * math.sqrt(q * (1 - q) / n)


def test_keys_differ_per_counter_and_masks_repeat():
    keys = {derive_key(1337, step, micro) for step in range(50) for micro in range(4)}
    assert len(keys) == 200 and all(0 <= k < 2 ** 63 for k in keys)
    assert derive_key(1337, 3, 1) == derive_key(1337, 3, 1) != derive_key(1338, 3, 1)
    np.testing.assert_array_equal(_mask(1000, 0.3, 5), _mask(1000, 0.3, 5))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_kernels_scale_kept_elements_and_split_blocks_alike(dtype):
    from cllm.kernels._common import PARALLEL_MIN_WORK

    p, key = 0.25, derive_key(9, 9, 9)
    n = PARALLEL_MIN_WORK + 12345  # the parallel path; its first n0 elements match the serial path's
    x = np.random.default_rng(0).standard_normal(n).astype(dtype)
    out = np.empty_like(x)
    K.dropout_forward(out, x, n, dropout_threshold(p), key)
    kept = _mask(n, p, key).astype(bool)
    np.testing.assert_array_equal(out[~kept], 0)
    np.testing.assert_allclose(out[kept], x[kept] / dtype(1 - p), rtol=1e-6 if dtype == np.float32 else 1e-15)
    n0 = 1000
    serial = np.empty(n0, dtype)
    K.dropout_forward(serial, x[:n0], n0, dropout_threshold(p), key)
    np.testing.assert_array_equal(serial, out[:n0])
    back = x.copy()  # in place, as the model calls it: the backward is the same mask and scale
    K.dropout_backward(back, back, n, dropout_threshold(p), key)
    np.testing.assert_array_equal(back, out)


def test_float32_dropout_kernels_stay_float32():
    from test_kernels import _float64_variables

    z = lambda n: np.zeros(n, np.float32)  # noqa: E731
    u = lambda n: np.full(n, 0.5, np.float32)  # noqa: E731
    B, T, C, NH = 1, 3, 4, 2
    thr, key = dropout_threshold(0.2), 77
    cases = {
        "dropout_forward": (K.dropout_forward, z(7), u(7), 7, thr, key),
        "attention_forward": (K.attention_forward, z(T * C), z(NH * T * T), u(T * 3 * C), B, T, C, NH, thr, key),
        "attention_backward": (K.attention_backward, z(T * 3 * C), u(T * C), u(T * 3 * C), u(NH * T * T), B, T, C, NH,
                               False, thr, key),
    }
    promoted = {name: v for name, (k, *args) in cases.items() if (v := _float64_variables(k, *args))}
    assert not promoted, f"float64 arithmetic inside float32 kernels: {promoted}"


def test_attention_with_dropout_matches_numpy_across_causal_blocks():
    # T = 70 spans three causal blocks of 32 rows: the dropped probabilities' offsets in every block
    B, T, C, NH, p = 2, 70, 12, 3, 0.3
    hs, key = C // NH, derive_key(11, 2, 3)
    rng = np.random.default_rng(4)
    inp, dout = rng.standard_normal(B * T * 3 * C), rng.standard_normal(B * T * C)
    out, att = np.empty(B * T * C), np.empty(B * NH * T * T)
    K.attention_forward(out, att, inp, B, T, C, NH, dropout_threshold(p), key)
    dinp = np.zeros(B * T * 3 * C)
    K.attention_backward(dinp, dout, inp, att, B, T, C, NH, True, dropout_threshold(p), key)
    mask = _mask(B * NH * T * T, p, key).reshape(B, NH, T, T) / (1 - p)
    qkv = inp.reshape(B, T, 3, NH, hs)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (B,NH,T,hs)
    S = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hs) + np.triu(np.full((T, T), -np.inf), 1)
    P = np.exp(S - S.max(-1, keepdims=True))
    P /= P.sum(-1, keepdims=True)
    np.testing.assert_allclose(att.reshape(B, NH, T, T), P, atol=1e-12)  # att keeps P before dropout
    dy = dout.reshape(B, T, NH, hs).transpose(0, 2, 1, 3)
    np.testing.assert_allclose(out.reshape(B, T, NH, hs).transpose(0, 2, 1, 3), (P * mask) @ v, atol=1e-12)
    dP = (dy @ v.transpose(0, 1, 3, 2)) * mask
    dS = P * (dP - (P * dP).sum(-1, keepdims=True))
    want = np.stack([dS @ k / np.sqrt(hs), dS.transpose(0, 1, 3, 2) @ q / np.sqrt(hs),
                     (P * mask).transpose(0, 1, 3, 2) @ dy], axis=2)  # (B,NH,3,T,hs)
    np.testing.assert_allclose(dinp.reshape(B, T, 3, NH, hs), want.transpose(0, 3, 2, 1, 4), atol=1e-12)


def _small_model(dtype=np.float64):
    cfg = ModelConfig(vocab_size=23, max_seq_len=8, num_layers=2, num_heads=2, embed_dim=16)
    m = Model(cfg, seed=3, dtype=dtype)
    m.params += np.random.default_rng(1).normal(0, 0.05, m.params.size).astype(dtype)  # biases, gains
    rng = np.random.default_rng(2)
    return m, rng.integers(0, 23, (3, 8)), rng.integers(0, 23, (3, 8))


def test_finite_differences_through_fixed_masks():
    m, x, y = _small_model()
    p, key = 0.3, 4242
    _, plain = m.forward(x, y)
    _, loss = m.forward(x, y, dropout=p, dropout_key=key)
    assert abs(loss - plain) > 1e-3  # the masks change the function
    m.zero_grad()
    m.backward()
    grads = {name: m.g[name].copy() for name in NAMES}
    rng = np.random.default_rng(5)
    h = 1e-6
    for name in NAMES:  # a few entries of every tensor: every site's mask lies on some gradient path
        view = m.p[name]
        for i in rng.choice(view.size, 4, replace=False):
            old = view[i]
            view[i] = old + h
            up = m.forward(x, y, dropout=p, dropout_key=key)[1]
            view[i] = old - h
            down = m.forward(x, y, dropout=p, dropout_key=key)[1]
            view[i] = old
            g = grads[name][i]
            assert abs((up - down) / (2 * h) - g) <= 1e-7 + 1e-5 * abs(g), (name, i, (up - down) / (2 * h), g)


def test_evaluation_never_drops():
    # a forward without dropout after one with it is the plain network, and so is its backward
    m, x, y = _small_model()
    _, plain = m.forward(x, y)
    m.zero_grad()
    m.backward()
    plain_grads = m.grads.copy()
    m.forward(x, y, dropout=0.5, dropout_key=1)
    _, again = m.forward(x, y)
    m.zero_grad()
    m.backward()
    assert again == plain
    np.testing.assert_array_equal(m.grads, plain_grads)


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def test_cllm_draws_the_fixtures_masks(ref):
    # the masks PyTorch was given are the ones Model.forward draws for this key: a changed generator
    # would also break the resume of older runs
    from cllm.model import DROP_ATTENTION, DROP_ATTPROJ, DROP_EMBEDDING, DROP_FCPROJ

    p, key = float(ref["p"]), int(ref["key"])
    sites = {"embedding": DROP_EMBEDDING, "attention": DROP_ATTENTION, "attproj": DROP_ATTPROJ, "fcproj": DROP_FCPROJ}
    for name, site in sites.items():
        for layer, want in enumerate(ref["mask_" + name]):
            got = _mask(want.size, p, derive_key(key, layer, site))
            np.testing.assert_array_equal(got, want.ravel(), err_msg=f"{name} layer {layer}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_matches_pytorch_given_the_same_masks(ref, dtype):
    m = make_model(ref, dtype)
    m.zero_grad()
    logits, loss = m.forward(ref["inputs"], ref["targets"], dropout=float(ref["p"]), dropout_key=int(ref["key"]))
    tol = 1e-5 if dtype == np.float32 else 1e-10
    assert np.max(np.abs(logits.astype(np.float64) - ref["logits"])) <= tol
    assert abs(loss - float(ref["loss"])) <= tol
    m.backward()
    for name in NAMES:
        want = ref["grad_" + name]
        got = m.g[name].reshape(want.shape).astype(np.float64)
        scale = np.max(np.abs(want))
        assert scale > 0
        err = np.max(np.abs(got - want))
        assert err <= (1e-4 if dtype == np.float32 else 1e-9) * scale, f"gradient of {name}: {err:g} vs max {scale:g}"


def test_resume_with_dropout_is_bit_identical(tmp_path, tmp_path_factory):
    data = prepared_dataset(tmp_path_factory)
    full, part, plain = tmp_path / "full", tmp_path / "part", tmp_path / "plain"
    train(tiny_config(data, full, max_steps=12, dropout=0.2, checkpoint_interval=6))
    train(tiny_config(data, plain, max_steps=12))
    assert train_losses(full) != train_losses(plain)  # dropout is on
    saved = json.loads((full / "step_000006" / "config.json").read_text())
    assert saved["train"]["dropout"] == 0.2  # so that --resume keeps it (build_config reads it back)
    train(tiny_config(data, part, max_steps=12, dropout=0.2, resume=str(full / "step_000006")))
    reference = train_losses(full)
    assert train_losses(part) == {s: reference[s] for s in range(7, 13)}
    a, b = ck.load_checkpoint(str(full / "latest")).params, ck.load_checkpoint(str(part / "latest")).params
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
