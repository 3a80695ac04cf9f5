"""Grouped-query attention (cllm/kernels/gqa.py): finite differences in float64, a NumPy reference, PyTorch
parity in float32 (tests/reference/gqa_reference.npz, made by tests/reference/make_gqa_reference.py),
dropout on the probabilities against a NumPy reference given the masks, and decoding from the KV cache
against the forward's rows (GPT-2's attention, cllm/kernels/attention.py, runs these kernels with NKV = NH:
tests/test_kernels.py and tests/test_dropout.py test it in that form).
"""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from test_kernels import SETTINGS, _float64_variables, assert_f32, check_backward, rand

import cllm.kernels as K
from cllm.kernels import gqa
from cllm.kernels._common import PARALLEL_MIN_WORK
from cllm.kernels.dropout import derive_key, dropout_mask, dropout_threshold
from cllm.runtime import configure_threads

configure_threads()

F64 = np.float64
F32 = np.float32
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "reference", "gqa_reference.npz")


def np_gqa(qkv, B, T, NH, NKV, hs):
    """NumPy reference, written as HF's repeat_kv: (out (B,T,NH*hs), probabilities (B,NH,T,T))."""
    rep = NH // NKV
    x = qkv.reshape(B, T, NH + 2 * NKV, hs).transpose(0, 2, 1, 3)  # (B, heads, T, hs)
    q = x[:, :NH]
    k = np.repeat(x[:, NH:NH + NKV], rep, axis=1)  # kv head g serves query heads g*rep .. g*rep + rep - 1
    v = np.repeat(x[:, NH + NKV:], rep, axis=1)
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hs)
    mask = np.tril(np.ones((T, T), dtype=bool))
    s = np.where(mask, s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return (p @ v).transpose(0, 2, 1, 3).reshape(B, T, NH * hs), p


def np_gqa_backward(dout, qkv, p, B, T, NH, NKV, hs):
    """NumPy reference of dqkv (B,T,W): each query head's dk and dv summed into its kv head."""
    rep = NH // NKV
    x = qkv.reshape(B, T, NH + 2 * NKV, hs).transpose(0, 2, 1, 3)
    q, k, v = x[:, :NH], np.repeat(x[:, NH:NH + NKV], rep, axis=1), np.repeat(x[:, NH + NKV:], rep, axis=1)
    dy = dout.reshape(B, T, NH, hs).transpose(0, 2, 1, 3)
    dp = dy @ v.transpose(0, 1, 3, 2)
    ds = p * (dp - (p * dp).sum(-1, keepdims=True)) / math.sqrt(hs)
    dq, dk, dv = ds @ k, ds.transpose(0, 1, 3, 2) @ q, p.transpose(0, 1, 3, 2) @ dy
    d = np.concatenate([dq, dk.reshape(B, NKV, rep, T, hs).sum(2), dv.reshape(B, NKV, rep, T, hs).sum(2)], axis=1)
    return d.transpose(0, 2, 1, 3).ravel()


def forward(qkv, B, T, NH, NKV, hs):
    out = np.empty(B * T * NH * hs, qkv.dtype)
    att = np.empty(B * NH * T * T, qkv.dtype)
    K.gqa_forward(out, att, qkv, B, T, NH, NKV, hs)
    return out, att


def test_a_sharp_head_stores_no_subnormal_probability_in_float32():
    # scores spread by hundreds (a head that has become sharp): the far keys' probabilities are stored as
    # exactly 0, never as subnormal floats that slow the backward's products; out, att and dqkv still match
    # the float64 reference
    B, T, NH, NKV, hs = 1, 40, 2, 1, 8
    rng = np.random.default_rng(5)
    qkv = (rng.standard_normal(B * T * (NH + 2 * NKV) * hs) * 12).astype(F32)
    out, att = forward(qkv, B, T, NH, NKV, hs)
    tiny = np.finfo(F32).tiny
    assert not np.any((att != 0) & (att < tiny))
    ref_out, ref_p = np_gqa(qkv.astype(F64), B, T, NH, NKV, hs)
    assert np.any((ref_p > 0) & (ref_p < tiny)), "the input must be sharp enough to reach subnormal probabilities"
    np.testing.assert_allclose(att, ref_p.ravel(), rtol=1e-4, atol=1e-6)  # scores of hundreds: float32 rounds them
    np.testing.assert_allclose(out, ref_out.ravel(), rtol=1e-4, atol=1e-4)
    dout = rand(rng, B * T * NH * hs).astype(F32)
    dqkv = np.zeros_like(qkv)
    K.gqa_backward(dqkv, dout, qkv, att, B, T, NH, NKV, hs, True)
    ref = np_gqa_backward(dout.astype(F64), qkv.astype(F64), ref_p, B, T, NH, NKV, hs)
    np.testing.assert_allclose(dqkv, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())


# ------------------------------------------------------------------ gradients (float64) and float32
@SETTINGS
@given(B=st.integers(1, 3), T=st.integers(1, 5), NKV=st.integers(1, 3), rep=st.integers(1, 3), hs=st.integers(1, 4),
       seed=st.integers(0, 2**31 - 1))
@example(B=1, T=1, NKV=1, rep=1, hs=1, seed=0)  # T = 1
@example(B=2, T=1, NKV=2, rep=3, hs=2, seed=1)
@example(B=3, T=5, NKV=3, rep=3, hs=3, seed=2)  # NH = 9 query heads over 3 kv heads, odd head size
@example(B=1, T=5, NKV=1, rep=3, hs=4, seed=3)  # one kv head for all (multi-query)
@example(B=2, T=37, NKV=2, rep=2, hs=3, seed=4)  # two causal blocks of 32 rows, the second partial
def test_gqa(B, T, NKV, rep, hs, seed):
    rng = np.random.default_rng(seed)
    NH = NKV * rep
    W = (NH + 2 * NKV) * hs
    x = {"qkv": rand(rng, B * T * W)}
    dout = rand(rng, B * T * NH * hs)
    out = np.empty(B * T * NH * hs)
    att = np.empty(B * NH * T * T)

    def loss():
        K.gqa_forward(out, att, x["qkv"], B, T, NH, NKV, hs)
        return float(np.dot(out, dout))

    loss()
    y, p = np_gqa(x["qkv"], B, T, NH, NKV, hs)
    np.testing.assert_allclose(out.reshape(B, T, NH * hs), y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(att.reshape(B, NH, T, T), p, rtol=1e-12, atol=1e-14)
    att_s = att.copy()

    def bwd(gr):
        K.gqa_backward(gr["qkv"], dout, x["qkv"], att_s, B, T, NH, NKV, hs)

    g = check_backward(loss, x, bwd, rng)  # accumulates (+=), and equals central differences
    np.testing.assert_allclose(g["qkv"], np_gqa_backward(dout, x["qkv"], p, B, T, NH, NKV, hs), rtol=1e-10,
                               atol=1e-12)

    q32 = x["qkv"].astype(F32)
    o32, a32 = forward(q32, B, T, NH, NKV, hs)
    assert_f32(o32, out, "gqa out", rtol=1e-4)
    assert_f32(a32, att, "gqa att", rtol=1e-4)
    d32 = np.full(q32.size, np.nan, F32)  # overwrite: what the buffer held is ignored
    K.gqa_backward(d32, dout.astype(F32), q32, a32, B, T, NH, NKV, hs, True)
    assert_f32(d32, g["qkv"], "gqa dqkv", rtol=2e-4)


@pytest.mark.parametrize("dtype", [F64, F32])
def test_backward_overwrite_equals_accumulating_into_zeros(dtype):
    # with overwrite the group's first query head sets dk and dv and the others add: the same numbers as
    # accumulating into zeros, whatever the buffer held (NaN here)
    rng = np.random.default_rng(1)
    B, T, NH, NKV, hs = 2, 6, 6, 2, 5
    qkv = rand(rng, B * T * (NH + 2 * NKV) * hs, dtype=dtype)
    dout = rand(rng, B * T * NH * hs, dtype=dtype)
    _, att = forward(qkv, B, T, NH, NKV, hs)
    ref, got = np.zeros(qkv.size, dtype), np.full(qkv.size, np.nan, dtype)
    K.gqa_backward(ref, dout, qkv, att, B, T, NH, NKV, hs)
    K.gqa_backward(got, dout, qkv, att, B, T, NH, NKV, hs, True)
    np.testing.assert_array_equal(got, ref)
    assert np.abs(ref).max() > 0


def test_parallel_path_equals_the_reference():
    # above PARALLEL_MIN_WORK the heads (forward) and the kv groups (backward) run on the threads; a kv
    # head's dk, dv must still collect every query head of its group exactly once
    rng = np.random.default_rng(2)
    B, T, NH, NKV, hs = 3, 45, 6, 2, 16
    assert B * NH * T * T * hs >= PARALLEL_MIN_WORK
    qkv = rand(rng, B * T * (NH + 2 * NKV) * hs)
    dout = rand(rng, B * T * NH * hs)
    out, att = forward(qkv, B, T, NH, NKV, hs)
    y, p = np_gqa(qkv, B, T, NH, NKV, hs)
    np.testing.assert_allclose(out.reshape(y.shape), y, rtol=1e-12, atol=1e-12)
    dqkv = np.ones(qkv.size)
    K.gqa_backward(dqkv, dout, qkv, att, B, T, NH, NKV, hs)
    np.testing.assert_allclose(dqkv, 1 + np_gqa_backward(dout, qkv, p, B, T, NH, NKV, hs), rtol=1e-10, atol=1e-11)


# ------------------------------------------------------------------ dropout on the probabilities
@pytest.mark.parametrize("B,T,NH,NKV,hs", [(2, 37, 6, 2, 3), (1, 5, 3, 1, 4)])
def test_dropout_matches_numpy_given_the_masks_and_finite_differences(B, T, NH, NKV, hs):
    # the masks are the stream's (dropout_mask at head (b, h)'s counters), the probabilities are kept
    # before dropout, out = (P * M) @ v, and the backward is the gradient of that function
    rng = np.random.default_rng(9)
    p, key = 0.3, derive_key(11, 2, 3)
    drop = dropout_threshold(p)
    W = (NH + 2 * NKV) * hs
    x = {"qkv": rand(rng, B * T * W)}
    dout = rand(rng, B * T * NH * hs)
    out, att = np.empty(B * T * NH * hs), np.empty(B * NH * T * T)

    def loss():
        K.gqa_forward(out, att, x["qkv"], B, T, NH, NKV, hs, drop, key)
        return float(np.dot(out, dout))

    loss()
    mask = np.empty(B * NH * T * T, np.uint8)
    dropout_mask(mask, mask.size, drop, key)
    M = mask.reshape(B, NH, T, T) / (1 - p)
    _, P = np_gqa(x["qkv"], B, T, NH, NKV, hs)
    np.testing.assert_allclose(att.reshape(B, NH, T, T), P, atol=1e-14)  # att: before dropout
    v = np.repeat(x["qkv"].reshape(B, T, NH + 2 * NKV, hs).transpose(0, 2, 1, 3)[:, NH + NKV:], NH // NKV, axis=1)
    want = ((P * M) @ v).transpose(0, 2, 1, 3).reshape(-1)
    np.testing.assert_allclose(out, want, atol=1e-12)
    plain, _ = forward(x["qkv"], B, T, NH, NKV, hs)
    assert np.abs(out - plain).max() > 1e-3  # the masks change the output
    att_s = att.copy()
    check_backward(loss, x, lambda gr: K.gqa_backward(gr["qkv"], dout, x["qkv"], att_s, B, T, NH, NKV, hs, False,
                                                      drop, key), rng)


# ------------------------------------------------------------------ PyTorch parity
def test_pytorch_parity():
    ref = np.load(FIXTURE, allow_pickle=False)
    cases = sorted({int(k.split("_")[0]) for k in ref.files})
    assert len(cases) == 6
    for i in cases:
        B, T, NH, NKV, hs = (int(v) for v in ref[f"{i}_sizes"])
        qkv, dout = ref[f"{i}_qkv"], ref[f"{i}_dout"]
        assert qkv.dtype == F32 and dout.dtype == F32
        for dtype, rtol in ((F32, 2e-5), (F64, 1e-11)):
            out, att = forward(qkv.astype(dtype), B, T, NH, NKV, hs)
            dqkv = np.zeros(qkv.size, dtype)
            K.gqa_backward(dqkv, dout.astype(dtype), qkv.astype(dtype), att, B, T, NH, NKV, hs)
            for name, got in (("out", out), ("att", att), ("dqkv", dqkv)):
                want = ref[f"{i}_{name}"]
                np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max(),
                                           err_msg=f"case {i} {name} {dtype.__name__}")


# ------------------------------------------------------------------ decoding with the KV cache
def decode_all(qkv, B, T, NH, NKV, hs, maxT, prefill_upto=0):
    """out (B,T,NH*hs): positions 0..prefill_upto-1 in one gqa_prefill, then one gqa_decode step each;
    also returns the caches (B,NKV,maxT,hs)."""
    W = (NH + 2 * NKV) * hs
    rows = qkv.reshape(B, T, W)
    kc, vc = np.full(B * NKV * maxT * hs, np.nan, qkv.dtype), np.full(B * NKV * maxT * hs, np.nan, qkv.dtype)
    out = np.empty((B, T, NH * hs), qkv.dtype)
    if prefill_upto:
        block = np.ascontiguousarray(rows[:, :prefill_upto]).ravel()
        got = np.empty(B * prefill_upto * NH * hs, qkv.dtype)
        K.gqa_prefill(got, block, kc, vc, B, prefill_upto, NH, NKV, hs, 0, maxT)
        out[:, :prefill_upto] = got.reshape(B, prefill_upto, NH * hs)
    for t in range(prefill_upto, T):
        got = np.empty(B * NH * hs, qkv.dtype)
        K.gqa_decode(got, np.ascontiguousarray(rows[:, t]).ravel(), kc, vc, B, NH, NKV, hs, t, maxT)
        out[:, t] = got.reshape(B, NH * hs)
    return out, kc, vc


@pytest.mark.parametrize("dtype,tol", [(F64, 1e-12), (F32, 2e-6)])
@pytest.mark.parametrize("B,T,NH,NKV,hs", [(2, 7, 6, 2, 5), (1, 5, 3, 3, 4), (2, 6, 4, 1, 3), (1, 1, 2, 1, 2),
                                           (1, 40, 4, 2, 8)])
@pytest.mark.parametrize("prefill_upto", [0, 3])
def test_decode_step_by_step_equals_the_forward(dtype, tol, B, T, NH, NKV, hs, prefill_upto):
    rng = np.random.default_rng(4)
    maxT = T + 3  # the cache is longer than what is decoded: the positions after pos are never read
    qkv = rand(rng, B * T * (NH + 2 * NKV) * hs, dtype=dtype)
    want, _ = forward(qkv, B, T, NH, NKV, hs)
    got, kc, vc = decode_all(qkv, B, T, NH, NKV, hs, maxT, min(prefill_upto, T))
    np.testing.assert_allclose(got.ravel(), want, rtol=tol, atol=tol * np.abs(want).max())
    # the cache holds the kv heads only, (B, NKV, maxT, hs), the unused positions untouched
    x = qkv.reshape(B, T, NH + 2 * NKV, hs)
    kc, vc = kc.reshape(B, NKV, maxT, hs), vc.reshape(B, NKV, maxT, hs)
    np.testing.assert_array_equal(kc[:, :, :T], x[:, :, NH:NH + NKV].transpose(0, 2, 1, 3))
    np.testing.assert_array_equal(vc[:, :, :T], x[:, :, NH + NKV:].transpose(0, 2, 1, 3))
    assert np.isnan(kc[:, :, T:]).all() and np.isnan(vc[:, :, T:]).all()


@pytest.mark.parametrize("dtype,tol", [(F64, 1e-12), (F32, 2e-6)])
def test_prefill_block_after_cached_positions(dtype, tol):
    # positions 0..4 decoded, then a block of 37 positions from pos0 = 5 in one call (its causal blocks of
    # 32 rows see the cached keys and the block's own), then one more step: all equal the forward's rows
    rng = np.random.default_rng(5)
    B, T, NH, NKV, hs, maxT = 2, 43, 6, 3, 7, 48
    W = (NH + 2 * NKV) * hs
    qkv = rand(rng, B * T * W, dtype=dtype)
    want = forward(qkv, B, T, NH, NKV, hs)[0].reshape(B, T, NH * hs)
    _, kc, vc = decode_all(np.ascontiguousarray(qkv.reshape(B, T, W)[:, :5]).ravel(), B, 5, NH, NKV, hs, maxT)
    block = np.ascontiguousarray(qkv.reshape(B, T, W)[:, 5:42]).ravel()
    got = np.empty(B * 37 * NH * hs, dtype)
    K.gqa_prefill(got, block, kc, vc, B, 37, NH, NKV, hs, 5, maxT)
    scale = np.abs(want).max()
    np.testing.assert_allclose(got.reshape(B, 37, NH * hs), want[:, 5:42], rtol=tol, atol=tol * scale)
    last = np.empty(B * NH * hs, dtype)
    K.gqa_decode(last, np.ascontiguousarray(qkv.reshape(B, T, W)[:, 42]).ravel(), kc, vc, B, NH, NKV, hs, 42, maxT)
    np.testing.assert_allclose(last.reshape(B, NH * hs), want[:, 42], rtol=tol, atol=tol * scale)


def test_decode_parallel_path_and_window_refill():
    # a long cache takes the parallel path (B*NH*(pos+1)*hs >= PARALLEL_MIN_WORK); after the window
    # slides, a re-prefill from position 0 over the kept tokens equals the forward over those tokens
    rng = np.random.default_rng(6)
    B, T, NH, NKV, hs, maxT = 2, 200, 8, 2, 48, 200
    assert B * NH * T * hs >= PARALLEL_MIN_WORK
    W = (NH + 2 * NKV) * hs
    qkv = rand(rng, B * T * W, dtype=F32)
    want = forward(qkv, B, T, NH, NKV, hs)[0].reshape(B, T, NH * hs)
    got, kc, vc = decode_all(qkv, B, T, NH, NKV, hs, maxT, prefill_upto=150)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6 * np.abs(want).max())
    kept = np.ascontiguousarray(qkv.reshape(B, T, W)[:, 100:]).ravel()  # the window slid by 100
    refill = np.empty(B * 100 * NH * hs, F32)
    K.gqa_prefill(refill, kept, kc, vc, B, 100, NH, NKV, hs, 0, maxT)
    np.testing.assert_allclose(refill, forward(kept, B, 100, NH, NKV, hs)[0], rtol=2e-6, atol=2e-6)


def test_float32_arithmetic_stays_float32():
    B, T, NH, NKV, hs, maxT = 1, 3, 4, 2, 2, 4
    W = (NH + 2 * NKV) * hs
    z = lambda n: np.zeros(n, F32)  # noqa: E731
    u = lambda n: np.full(n, 0.5, F32)  # noqa: E731
    cache = B * NKV * maxT * hs
    drop = dropout_threshold(0.3)
    cases = {
        "gqa_forward": (gqa.gqa_forward, z(T * NH * hs), z(NH * T * T), u(T * W), B, T, NH, NKV, hs),
        "gqa_backward": (gqa._backward_group, z(T * W), u(T * NH * hs), u(T * W), u(NH * T * T), 0, 1, T, NH, NKV,
                         hs, False, drop, 5),  # with dropout: its mask arithmetic must stay float32 too
        "gqa_decode": (gqa._decode_group, z(NH * hs), u(W), u(cache), u(cache), 0, 1, NH, NKV, hs, 2, maxT),
        "gqa_prefill": (gqa._prefill_head, z(T * NH * hs), u(T * W), u(cache), u(cache), 0, 3, T, NH, NKV, hs, 1,
                        maxT),
        "forward_head": (gqa._forward_head, z(T * NH * hs), z(NH * T * T), u(T * W), 0, 1, T, NH, NKV, hs, drop, 5),
    }
    promoted = {name: v for name, (k, *args) in cases.items() if (v := _float64_variables(k, *args))}
    assert not promoted, f"float64 arithmetic inside float32 kernels: {promoted}"


def test_bench_rejects_a_bad_count():
    # bench/gqa.py's --smoke run is tests/test_bench_smoke.py's; a bad count is one line on stderr, exit 2
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gqa.py"), "--repeats", "0"], capture_output=True,
                       text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
