"""Every kernel of the contract against finite differences and an independent NumPy implementation.

Gradient checks: the loss is sum(forward_output * W) with a random W, so the backward gets a random
dout = W; the analytic gradient (backward compiled for float64) must match central differences of
the forward to ~1e-6 relative. Every gradient buffer starts from random junk: the backward must ADD
its gradient (result - junk = gradient, and a second call adds the same amount again).
Float32: the same kernels compiled for float32 must match float64 to float32 rounding.
"""

import math
import os

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import cllm.kernels as K
from cllm.runtime import configure_threads

configure_threads()

F64 = np.float64
F32 = np.float32
H = 1e-5  # finite-difference step (float64)
FD_SAMPLES = 40  # elements of each input checked by finite differences per example
# a few examples per run keeps the suite fast; CLLM_KERNEL_EXAMPLES=500 for a thorough search
SETTINGS = settings(max_examples=int(os.environ.get("CLLM_KERNEL_EXAMPLES", "8")), deadline=None)


# ------------------------------------------------------------------ helpers
def rand(rng, n, scale=1.0, dtype=F64):
    return (rng.standard_normal(n) * scale).astype(dtype)


def fd_grad(loss_fn, x, rng, n_samples=FD_SAMPLES):
    """Central differences of loss_fn() w.r.t. a random sample of x's elements (x perturbed in place)."""
    n = x.size
    idx = np.arange(n) if n <= n_samples else rng.choice(n, n_samples, replace=False)
    g = np.empty(idx.size)
    for j, i in enumerate(idx):
        old = x[i]
        x[i] = old + H
        lp = loss_fn()
        x[i] = old - H
        lm = loss_fn()
        x[i] = old
        g[j] = (lp - lm) / (2 * H)
    return idx, g


def assert_grad(analytic, idx, numeric, name, rtol=1e-6):
    """Analytic gradient at idx against finite differences: ~1e-6 relative (to the element, with a
    floor at 1e-6 of the largest gradient of the tensor, for elements that are ~0)."""
    a = analytic[idx]
    scale = max(np.max(np.abs(numeric)), np.max(np.abs(analytic)), 1e-12)
    np.testing.assert_allclose(a, numeric, rtol=rtol, atol=rtol * scale + 1e-9, err_msg=f"gradient of {name}")


def check_backward(forward_loss, inputs, run_backward, rng):
    """inputs: name -> float64 array (perturbed in place for the FD check).
    run_backward(grads) accumulates into grads: name -> array (same keys as inputs).
    Checks accumulation (junk + g, then junk + 2g) and g against central differences."""
    junk = {k: rand(rng, v.size) for k, v in inputs.items()}
    grads = {k: v.copy() for k, v in junk.items()}
    run_backward(grads)
    once = {k: grads[k] - junk[k] for k in grads}
    run_backward(grads)
    for k in grads:
        np.testing.assert_allclose(
            grads[k] - junk[k], 2 * once[k], rtol=1e-12, atol=1e-12, err_msg=f"backward does not accumulate into d{k}"
        )
    for k, x in inputs.items():
        idx, num = fd_grad(forward_loss, x, rng)
        assert_grad(once[k], idx, num, k)
    forward_loss()  # leave the forward's outputs as they are at the unperturbed inputs
    return once


def assert_f32(x32, x64, name, rtol=2e-5, scale=None):
    """float32 result against the float64 one: within a few float32 ulps of the tensor's scale
    (or of `scale`, the size of the terms it sums, where those cancel to ~0)."""
    assert x32.dtype == F32, f"{name} is {x32.dtype}"
    scale = max(np.max(np.abs(x64)), scale or 0.0, 1e-30)
    np.testing.assert_allclose(x32.astype(F64), x64, rtol=rtol, atol=rtol * scale, err_msg=name)


def f32(d):
    return {k: v.astype(F32) for k, v in d.items()}


# ------------------------------------------------------------------ NumPy references
def np_layernorm(x, w, b):
    m = x.mean(-1, keepdims=True)
    var = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(var + 1e-5) * w + b, m[..., 0], 1 / np.sqrt(var[..., 0] + 1e-5)


def np_gelu(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def np_attention(qkv, B, T, C, NH):
    hs = C // NH
    x = qkv.reshape(B, T, 3, NH, hs)
    q, k, v = (x[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (B,NH,T,hs)
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hs)
    mask = np.tril(np.ones((T, T), dtype=bool))
    s = np.where(mask, s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    y = (p @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
    return y, np.where(mask, s, 0.0), p


def np_attention_dscores(qkv, p, dout, B, T, C, NH):
    """dS (B,NH,T,T), zero above the diagonal: the gradient of the scaled attention scores, for the
    probabilities p (B,NH,T,T) and the output gradient dout (B,T,C). The kernels keep it as scratch
    (cllm/kernels/attention.py); the tests check through it."""
    hs = C // NH
    v = qkv.reshape(B, T, 3, NH, hs)[:, :, 2].transpose(0, 2, 1, 3)
    dy = dout.reshape(B, T, NH, hs).transpose(0, 2, 1, 3)
    dprobs = np.tril(dy @ v.transpose(0, 1, 3, 2))  # the probabilities' gradient
    return p * (dprobs - (p * dprobs).sum(-1, keepdims=True))


def np_softmax_ce(logits, targets, V):
    x = logits[..., :V]
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    losses = -np.log(np.take_along_axis(p, targets[..., None], -1)[..., 0])
    return p, losses


# ------------------------------------------------------------------ shapes
dims = st.integers(1, 3)
seq = st.integers(1, 5)
chans = st.integers(1, 11)  # includes C not a multiple of 8
seeds = st.integers(0, 2**31 - 1)


# ------------------------------------------------------------------ encoder
@SETTINGS
@given(B=dims, T=seq, C=chans, extra_t=st.integers(0, 2), V=st.integers(1, 9), pad=st.integers(0, 3), seed=seeds)
@example(B=1, T=1, C=1, extra_t=0, V=1, pad=0, seed=0)
@example(B=2, T=4, C=7, extra_t=0, V=3, pad=2, seed=1)  # T == maxT, repeated tokens, V != Vp
def test_encoder(B, T, C, extra_t, V, pad, seed):
    rng = np.random.default_rng(seed)
    maxT, Vp = T + extra_t, V + pad
    inp = rng.integers(0, V, B * T).astype(np.int32)
    x = {"wte": rand(rng, Vp * C), "wpe": rand(rng, maxT * C)}
    W = rand(rng, B * T * C)
    out = np.empty(B * T * C)

    def loss():
        K.encoder_forward(out, inp, x["wte"], x["wpe"], B, T, C)
        return float(np.dot(out, W))

    loss()
    ref = x["wte"].reshape(Vp, C)[inp.reshape(B, T)] + x["wpe"].reshape(maxT, C)[None, :T]
    np.testing.assert_allclose(out.reshape(B, T, C), ref, rtol=0, atol=0)
    g = check_backward(loss, x, lambda gr: K.encoder_backward(gr["wte"], gr["wpe"], W, inp, B, T, C), rng)
    # rows of tokens never seen, positions beyond T: untouched
    unseen = np.setdiff1d(np.arange(Vp), inp)
    assert not g["wte"].reshape(Vp, C)[unseen].any()
    assert not g["wpe"].reshape(maxT, C)[T:].any()

    x32 = f32(x)
    out32 = np.empty(B * T * C, F32)
    K.encoder_forward(out32, inp, x32["wte"], x32["wpe"], B, T, C)
    assert_f32(out32, out, "encoder out")
    gw, gp = np.zeros(Vp * C, F32), np.zeros(maxT * C, F32)
    K.encoder_backward(gw, gp, W.astype(F32), inp, B, T, C)
    assert_f32(gw, g["wte"], "dwte")
    assert_f32(gp, g["wpe"], "dwpe")


# ------------------------------------------------------------------ layernorm
@SETTINGS
@given(B=dims, T=seq, C=chans, seed=seeds)
@example(B=1, T=1, C=1, seed=0)
@example(B=1, T=1, C=2, seed=3)
@example(B=2, T=3, C=9, seed=2)
def test_layernorm(B, T, C, seed):
    rng = np.random.default_rng(seed)
    N = B * T
    x = {"inp": rand(rng, N * C, 2.0) + rand(rng, 1)[0], "weight": 1 + rand(rng, C, 0.5), "bias": rand(rng, C)}
    W = rand(rng, N * C)
    out, mean, rstd = np.empty(N * C), np.empty(N), np.empty(N)

    def loss():
        K.layernorm_forward(out, mean, rstd, x["inp"], x["weight"], x["bias"], B, T, C)
        return float(np.dot(out, W))

    loss()
    ref, rm, rr = np_layernorm(x["inp"].reshape(N, C), x["weight"], x["bias"])
    np.testing.assert_allclose(out.reshape(N, C), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mean, rm, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rstd, rr, rtol=1e-12)
    mean_s, rstd_s = mean.copy(), rstd.copy()

    def bwd(gr):
        K.layernorm_backward(gr["inp"], gr["weight"], gr["bias"], W, x["inp"], x["weight"], mean_s, rstd_s, B, T, C)

    g = check_backward(loss, x, bwd, rng)

    x32 = f32(x)
    o32, m32, r32 = np.empty(N * C, F32), np.empty(N, F32), np.empty(N, F32)
    K.layernorm_forward(o32, m32, r32, x32["inp"], x32["weight"], x32["bias"], B, T, C)
    # float32 inputs are rounded: compare against float64 on the same rounded inputs
    ref32, rm32, rr32 = np_layernorm(
        x32["inp"].astype(F64).reshape(N, C), x32["weight"].astype(F64), x32["bias"].astype(F64)
    )
    assert_f32(o32, ref32.ravel(), "layernorm out", rtol=1e-4 if C > 1 else 2e-5)
    assert_f32(m32, rm32, "mean")
    if C > 1:
        assert_f32(r32, rr32, "rstd", rtol=1e-4)
        gi, gw, gb = np.zeros(N * C, F32), np.zeros(C, F32), np.zeros(C, F32)
        K.layernorm_backward(gi, gw, gb, W.astype(F32), x32["inp"], x32["weight"], m32, r32, B, T, C)
        assert_f32(gb, g["bias"], "dbias", rtol=1e-4)
        assert_f32(gw, g["weight"], "dweight", rtol=1e-3)
        # with C = 2 the true dinp is ~0 (cancellation): compare at the scale of its terms
        terms = np.max(np.abs(W)) * np.max(np.abs(x["weight"])) * np.max(rstd)
        assert_f32(gi, g["inp"], "dinp", rtol=1e-4, scale=terms)


# ------------------------------------------------------------------ matmul
@SETTINGS
@given(B=dims, T=seq, C=chans, OC=chans, has_bias=st.booleans(), want_dinp=st.booleans(), seed=seeds)
@example(B=1, T=1, C=1, OC=1, has_bias=True, want_dinp=True, seed=0)
@example(B=1, T=1, C=1, OC=1, has_bias=False, want_dinp=True, seed=0)
@example(B=3, T=5, C=9, OC=11, has_bias=True, want_dinp=True, seed=4)
@example(B=2, T=3, C=5, OC=7, has_bias=False, want_dinp=False, seed=5)
def test_matmul(B, T, C, OC, has_bias, want_dinp, seed):
    rng = np.random.default_rng(seed)
    N = B * T
    x = {"inp": rand(rng, N * C), "weight": rand(rng, OC * C)}
    if has_bias:
        x["bias"] = rand(rng, OC)
    W = rand(rng, N * OC)
    out = np.empty(N * OC)

    def loss():
        K.matmul_forward(out, x["inp"], x["weight"], x.get("bias"), B, T, C, OC)
        return float(np.dot(out, W))

    loss()
    ref = x["inp"].reshape(N, C) @ x["weight"].reshape(OC, C).T + (x["bias"] if has_bias else 0)
    np.testing.assert_allclose(out.reshape(N, OC), ref, rtol=1e-12, atol=1e-12)

    checked = dict(x)
    if not want_dinp:
        checked.pop("inp")

    def bwd(gr):
        K.matmul_backward(gr.get("inp"), gr["weight"], gr.get("bias"), W, x["inp"], x["weight"], B, T, C, OC)

    g = check_backward(loss, checked, bwd, rng)

    x32 = f32(x)
    o32 = np.empty(N * OC, F32)
    K.matmul_forward(o32, x32["inp"], x32["weight"], x32.get("bias"), B, T, C, OC)
    assert_f32(o32, out, "matmul out", rtol=1e-5 * max(C, 4))
    gr32 = {k: np.zeros(v.size, F32) for k, v in checked.items()}
    K.matmul_backward(
        gr32.get("inp"), gr32["weight"], gr32.get("bias"), W.astype(F32), x32["inp"], x32["weight"], B, T, C, OC
    )
    for k in gr32:
        assert_f32(gr32[k], g[k], f"d{k}", rtol=1e-5 * max(C, OC, N, 4))


@SETTINGS
@given(B=dims, T=seq, C=chans, OC=chans, has_bias=st.booleans(), seed=seeds)
@example(B=1, T=1, C=1, OC=1, has_bias=True, seed=0)
@example(B=3, T=5, C=9, OC=11, has_bias=False, seed=4)
def test_matmul_gelu_forward_equals_the_two_kernels(B, T, C, OC, has_bias, seed):
    # matmul_gelu_forward = matmul_forward then gelu_forward: the same operations per element, so the
    # same numbers up to a few rounding units (the separate kernels are checked against NumPy and
    # finite differences above). Not bit for bit: where a vectorized loop's remainder starts depends
    # on the block, and vector and scalar code may contract a multiply-add differently. Both outputs
    # start as NaN: every element must be written.
    rng = np.random.default_rng(seed)
    N = B * T
    for dtype in (F64, F32):
        ulps = 8 * np.finfo(dtype).eps
        inp, weight = rand(rng, N * C, dtype=dtype), rand(rng, OC * C, dtype=dtype)
        bias = rand(rng, OC, dtype=dtype) if has_bias else None
        pre, act = np.full(N * OC, np.nan, dtype), np.full(N * OC, np.nan, dtype)
        K.matmul_gelu_forward(pre, act, inp, weight, bias, B, T, C, OC)
        ref_pre, ref_act = np.empty(N * OC, dtype), np.empty(N * OC, dtype)
        K.matmul_forward(ref_pre, inp, weight, bias, B, T, C, OC)
        K.gelu_forward(ref_act, ref_pre, N * OC)
        for got, ref in ((pre, ref_pre), (act, ref_act)):
            np.testing.assert_allclose(got, ref, rtol=ulps, atol=ulps * np.abs(ref).max(initial=1.0))


def test_matmul_weight_longer_than_needed():
    # the LM head passes wte (Vp,C) and reads the first OC rows only
    rng = np.random.default_rng(0)
    B, T, C, OC = 2, 3, 5, 4
    inp, weight = rand(rng, B * T * C), rand(rng, (OC + 3) * C)
    out = np.empty(B * T * OC)
    K.matmul_forward(out, inp, weight, None, B, T, C, OC)
    np.testing.assert_allclose(out.reshape(-1, OC), inp.reshape(-1, C) @ weight[: OC * C].reshape(OC, C).T, rtol=1e-12)


@SETTINGS
@given(
    m=st.integers(1, 6),
    n=st.integers(1, 6),
    k=st.integers(1, 6),
    transa=st.booleans(),
    transb=st.booleans(),
    pad=st.integers(0, 3),
    off=st.integers(0, 5),
    beta=st.sampled_from([0, 1]),
    seed=seeds,
)
def test_gemm_matches_numpy(m, n, k, transa, transb, pad, off, beta, seed):
    # kernels.blas.gemm: row-major, operands addressed by offset and row stride inside larger
    # arrays (a block of columns of a wider matrix), beta = 1 accumulates, beta = 0 overwrites
    # even NaN; float32 and float64.
    from cllm.kernels.blas import NO_TRANS, TRANS, gemm

    rng = np.random.default_rng(seed)
    for dtype, tol in ((F64, 1e-13), (F32, 1e-5)):
        a_rows, a_cols = (k, m) if transa else (m, k)
        b_rows, b_cols = (n, k) if transb else (k, n)
        lda, ldb, ldc = a_cols + pad, b_cols + pad, n + pad
        a = rand(rng, off + a_rows * lda, dtype=dtype)
        b = rand(rng, off + b_rows * ldb, dtype=dtype)
        c = rand(rng, off + m * ldc, dtype=dtype)
        if beta == 0:
            c[off:] = np.nan
        before = c.copy()
        A = a[off:].reshape(a_rows, lda)[:, :a_cols].astype(F64)
        B_ = b[off:].reshape(b_rows, ldb)[:, :b_cols].astype(F64)
        expect = (A.T if transa else A) @ (B_.T if transb else B_)
        gemm(
            TRANS if transa else NO_TRANS,
            TRANS if transb else NO_TRANS,
            m,
            n,
            k,
            1,
            a,
            off,
            lda,
            b,
            off,
            ldb,
            beta,
            c,
            off,
            ldc,
        )
        got = c[off:].reshape(m, ldc)
        if beta == 1:
            expect = expect + before[off:].reshape(m, ldc)[:, :n]
        np.testing.assert_allclose(got[:, :n], expect, rtol=tol, atol=tol)
        # nothing outside C's block was touched
        np.testing.assert_array_equal(got[:, n:], before[off:].reshape(m, ldc)[:, n:])
        np.testing.assert_array_equal(c[:off], before[:off])


def test_matmul_forward_overwrites_nan_output():
    # the forward's output buffer may hold anything (NaN from an earlier failed step): it is
    # overwritten, never mixed in
    rng = np.random.default_rng(0)
    B, T, C, OC = 2, 3, 5, 4
    inp, weight, bias = rand(rng, B * T * C), rand(rng, OC * C), rand(rng, OC)
    for b in (None, bias):
        out = np.full(B * T * OC, np.nan)
        K.matmul_forward(out, inp, weight, b, B, T, C, OC)
        ref = inp.reshape(-1, C) @ weight.reshape(OC, C).T + (0 if b is None else b)
        np.testing.assert_allclose(out.reshape(-1, OC), ref, rtol=1e-12)


def test_exp_shifted():
    # the vectorized float32 exp: within 4 float32 ulps of the exact value over the whole range a
    # softmax uses (arguments <= 0 after the shift), NaN stays NaN; float64 is np.exp itself
    from numba import njit

    from cllm.kernels.fastexp import exp_shifted

    @njit
    def call(x, shift, kbuf):
        return exp_shifted(x, shift, kbuf)

    rng = np.random.default_rng(0)
    shift = F32(2.5)
    x = np.concatenate([rng.uniform(-84.5, 2.5, 20000), rng.uniform(1.5, 2.5, 5000), [2.5, -84.4]]).astype(F32)
    exact = np.exp((x - shift).astype(F64))  # of the float32 argument: its own rounding is not exp's error
    y = x.copy()
    total = call(y, shift, np.empty(x.size, F32))
    rel = np.abs(y.astype(F64) - exact) / exact
    assert rel.max() < 4 * 2.0**-23, rel.max()
    assert abs(total - exact.sum()) / exact.sum() < 1e-5
    # below exp(-87) the result is clamped there: tiny, positive, never a wrapped-around sign
    low = np.array([-87.5, -100.0, -1e30, -np.inf], F32)
    call(low, F32(0), np.empty(4, F32))
    assert np.all(low > 0) and np.all(low < 2e-38)
    z = np.array([0.0, np.nan, -3.0], F32)
    assert math.isnan(call(z, F32(0), np.empty(3, F32))) and math.isnan(z[1]) and z[0] == 1
    x64 = x.astype(F64)
    y64 = x64.copy()
    call(y64, 2.5, np.empty(x.size, F32))
    np.testing.assert_allclose(y64, np.exp(x64 - 2.5), rtol=1e-15)  # libm, not a polynomial


# ------------------------------------------------------------------ attention
@SETTINGS
@given(B=dims, T=seq, NH=st.integers(1, 3), hs=st.integers(1, 4), seed=seeds)
@example(B=1, T=1, NH=1, hs=1, seed=0)
@example(B=1, T=5, NH=1, hs=1, seed=1)  # head size 1
@example(B=2, T=4, NH=3, hs=3, seed=2)  # C = 9
@example(B=2, T=40, NH=2, hs=5, seed=99)  # two causal blocks of 32 rows, the second partial
@example(B=1, T=70, NH=2, hs=3, seed=3)  # three causal blocks, the last one partial
def test_attention(B, T, NH, hs, seed):
    rng = np.random.default_rng(seed)
    C = NH * hs
    x = {"inp": rand(rng, B * T * 3 * C)}
    W = rand(rng, B * T * C)
    out = np.empty(B * T * C)
    att = np.empty(B * NH * T * T)

    def loss():
        K.attention_forward(out, att, x["inp"], B, T, C, NH)
        return float(np.dot(out, W))

    loss()
    y, _, p = np_attention(x["inp"], B, T, C, NH)
    np.testing.assert_allclose(out.reshape(B, T, C), y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(att.reshape(B, NH, T, T), p, rtol=1e-12, atol=1e-14)
    att_s = att.copy()

    def bwd(gr):
        K.attention_backward(gr["inp"], W, x["inp"], att_s, B, T, C, NH)

    g = check_backward(loss, x, bwd, rng)
    # dinp against the chain rule through NumPy's probabilities and score gradients
    dscores = np_attention_dscores(x["inp"], p, W, B, T, C, NH)
    qkv = x["inp"].reshape(B, T, 3, NH, hs).transpose(2, 0, 3, 1, 4)  # (3,B,NH,T,hs)
    dy = W.reshape(B, T, NH, hs).transpose(0, 2, 1, 3)
    dq = dscores @ qkv[1] / math.sqrt(hs)
    dk = dscores.transpose(0, 1, 3, 2) @ qkv[0] / math.sqrt(hs)
    dv = p.transpose(0, 1, 3, 2) @ dy
    want = np.stack([dq, dk, dv]).transpose(1, 3, 0, 2, 4).reshape(-1)  # back to (B,T,3,NH,hs)
    np.testing.assert_allclose(g["inp"], want, rtol=1e-10, atol=1e-12)

    x32 = f32(x)
    o32, att32 = np.empty(B * T * C, F32), np.empty(B * NH * T * T, F32)
    K.attention_forward(o32, att32, x32["inp"], B, T, C, NH)
    assert_f32(o32, out, "attention out", rtol=1e-4)
    assert_f32(att32, att, "att", rtol=1e-4)
    gi = np.zeros(B * T * 3 * C, F32)
    K.attention_backward(gi, W.astype(F32), x32["inp"], att32, B, T, C, NH)
    assert_f32(gi, g["inp"], "attention dinp", rtol=2e-4)


# ------------------------------------------------------------------ gelu, residual
@SETTINGS
@given(N=st.integers(1, 40), seed=seeds)
@example(N=1, seed=0)
def test_gelu(N, seed):
    rng = np.random.default_rng(seed)
    x = {"inp": rand(rng, N, 2.5)}
    W = rand(rng, N)
    out = np.empty(N)

    def loss():
        K.gelu_forward(out, x["inp"], N)
        return float(np.dot(out, W))

    loss()
    np.testing.assert_allclose(out, np_gelu(x["inp"]), rtol=1e-13, atol=1e-15)
    g = check_backward(loss, x, lambda gr: K.gelu_backward(gr["inp"], x["inp"], W, N), rng)
    o32 = np.empty(N, F32)
    K.gelu_forward(o32, x["inp"].astype(F32), N)
    # 0.5 x (1 + tanh) cancels for negative x: float32 is accurate to the size of x, not of the result
    xs = float(np.max(np.abs(x["inp"])))
    assert_f32(o32, np_gelu(x["inp"].astype(F32).astype(F64)), "gelu out", rtol=2e-6, scale=xs)
    g32 = np.zeros(N, F32)
    K.gelu_backward(g32, x["inp"].astype(F32), W.astype(F32), N)
    assert_f32(g32, g["inp"], "gelu dinp", rtol=1e-5, scale=float(np.max(np.abs(W))) * max(1.0, xs))


def _gelu_float32_errors(x):
    """float32 gelu and gelu' at x against float64, as errors relative to max(|x|, 1)."""
    x = x.astype(F32)
    x64 = x.astype(F64)
    out = np.empty_like(x)
    K.gelu_forward(out, x, x.size)
    d = np.zeros_like(x)
    K.gelu_backward(d, x, np.ones_like(x), x.size)
    s = math.sqrt(2 / math.pi)
    th = np.tanh(s * (x64 + 0.044715 * x64**3))
    ref = 0.5 * (1 + th) + 0.5 * x64 * (1 - th**2) * s * (1 + 3 * 0.044715 * x64**2)
    scale = np.maximum(np.abs(x64), 1.0)
    return np.abs(out - np_gelu(x64)) / scale, np.abs(d - ref) / scale


def test_gelu_float32_dense():
    # float32 forward and backward over a dense range (a fast float32 tanh must hold everywhere)
    x = np.linspace(-12, 12, 24001)
    err, derr = _gelu_float32_errors(x)
    assert err.max() <= 1e-6, f"float32 gelu off by {err.max():g} at x = {x[err.argmax()]}"
    assert derr.max() <= 2e-5, f"float32 gelu' off by {derr.max():g} at x = {x[derr.argmax()]}"


def test_gelu_float32_saturates():
    # far from 0, gelu(x) -> max(x, 0) and gelu'(x) -> 1 or 0; tanh must reach exactly +-1 there,
    # or (1 - tanh^2) * x^3 makes the gradient of a large activation wrong
    x = np.array([-1e4, -300.0, -50.0, -20.0, 20.0, 50.0, 300.0, 1e4])
    err, derr = _gelu_float32_errors(x)
    assert err.max() <= 1e-6, f"float32 gelu off by {err.max():g} at x = {x[err.argmax()]}"
    assert derr.max() <= 1e-6, f"float32 gelu' off by {derr.max():g} (relative to |x|) at x = {x[derr.argmax()]}"


def test_gelu_in_place():
    # decode_step applies gelu with out aliasing inp
    x = np.linspace(-4, 4, 17)
    ref = np_gelu(x)
    K.gelu_forward(x, x, x.size)
    np.testing.assert_allclose(x, ref, rtol=1e-13, atol=1e-15)


@SETTINGS
@given(N=st.integers(1, 40), seed=seeds)
@example(N=1, seed=0)
def test_residual(N, seed):
    # (no backward kernel: the model passes the output's gradient to both inputs in place)
    rng = np.random.default_rng(seed)
    x = {"inp1": rand(rng, N), "inp2": rand(rng, N)}
    out = np.empty(N)
    K.residual_forward(out, x["inp1"], x["inp2"], N)
    np.testing.assert_array_equal(out, x["inp1"] + x["inp2"])
    o32 = np.empty(N, F32)
    K.residual_forward(o32, x["inp1"].astype(F32), x["inp2"].astype(F32), N)
    assert_f32(o32, out, "residual out", rtol=1e-6)


# ------------------------------------------------------------------ softmax + cross-entropy
@SETTINGS
@given(B=dims, T=seq, V=st.integers(1, 12), pad=st.integers(0, 5), seed=seeds)
@example(B=1, T=1, V=1, pad=0, seed=0)
@example(B=1, T=1, V=2, pad=0, seed=0)
@example(B=2, T=3, V=7, pad=5, seed=1)
def test_softmax_crossentropy(B, T, V, pad, seed):
    rng = np.random.default_rng(seed)
    Vp, N = V + pad, B * T
    logits = rand(rng, N * Vp, 3.0)
    # the padded columns hold garbage that must be ignored
    logits.reshape(N, Vp)[:, V:] = 50.0
    x = {"logits": logits}
    targets = rng.integers(0, V, N).astype(np.int32)
    dlosses = rand(rng, N)
    probs, losses = np.empty(N * Vp), np.empty(N)

    def loss():
        K.softmax_forward(probs, x["logits"], B, T, V, Vp)
        K.crossentropy_forward(losses, probs, targets, B, T, Vp)
        return float(np.dot(losses, dlosses))

    loss()
    rp, rl = np_softmax_ce(logits.reshape(N, Vp), targets, V)
    np.testing.assert_allclose(probs.reshape(N, Vp)[:, :V], rp, rtol=1e-12, atol=1e-15)
    assert not probs.reshape(N, Vp)[:, V:].any(), "padded probabilities must be 0"
    np.testing.assert_allclose(losses, rl, rtol=1e-12, atol=1e-13)
    probs_s = probs.copy()

    def bwd(gr):
        K.crossentropy_softmax_backward(gr["logits"], dlosses, probs_s, targets, B, T, V, Vp)

    g = check_backward(loss, x, bwd, rng)
    # padded columns: no gradient (junk left as it was)
    assert not g["logits"].reshape(N, Vp)[:, V:].any()

    l32 = logits.astype(F32)
    p32, ls32 = np.empty(N * Vp, F32), np.empty(N, F32)
    K.softmax_forward(p32, l32, B, T, V, Vp)
    K.crossentropy_forward(ls32, p32, targets, B, T, Vp)
    assert_f32(p32, probs, "probs", rtol=1e-5)
    np.testing.assert_allclose(ls32, losses, rtol=1e-5, atol=1e-5)
    d32 = np.zeros(N * Vp, F32)
    K.crossentropy_softmax_backward(d32, dlosses.astype(F32), p32, targets, B, T, V, Vp)
    assert_f32(d32, g["logits"], "dlogits", rtol=1e-5)

    # in place (the model's backward): the probabilities become what the overwrite form writes, the
    # padded columns 0 whatever they held. To 4 rounding units, not bit for bit: the two loops are
    # vectorized differently, and vector and scalar code may contract a multiply-add differently.
    for pr, dl in ((probs_s, dlosses), (p32, dlosses.astype(F32))):
        want = np.full_like(pr, np.nan)
        K.crossentropy_softmax_backward(want, dl, pr, targets, B, T, V, Vp, True)
        got = pr.copy()
        got.reshape(N, Vp)[:, V:] = np.nan
        K.crossentropy_softmax_backward_inplace(got, dl, targets, B, T, V, Vp)
        np.testing.assert_allclose(got, want, rtol=4 * np.finfo(pr.dtype).eps, atol=0)


# ------------------------------------------------------------------ AdamW
def adamw_textbook(p, g, m, v, lr, b1, b2, eps, wd, t):
    """PyTorch's AdamW (torch.optim.AdamW docs): decoupled decay, then the bias-corrected step."""
    p = p * (1 - lr * wd)
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    mhat = m / (1 - b1**t)
    vhat = v / (1 - b2**t)
    return p - lr * mhat / (np.sqrt(vhat) + eps), m, v


@SETTINGS
@given(
    N=st.integers(1, 50),
    wd=st.sampled_from([0.0, 0.1, 0.5]),
    lr=st.sampled_from([1e-3, 3e-2]),
    b2=st.sampled_from([0.95, 0.999]),
    seed=seeds,
)
def test_adamw(N, wd, lr, b2, seed):
    rng = np.random.default_rng(seed)
    b1, eps = 0.9, 1e-8
    p64 = rand(rng, N)
    m64, v64 = np.zeros(N), np.zeros(N)
    p, m, v = p64.copy(), m64.copy(), v64.copy()
    p32, m32, v32 = p64.astype(F32), m64.astype(F32), v64.astype(F32)
    for t in range(1, 5):
        g = rand(rng, N)
        g[0] = 0.0 if t == 1 else g[0]  # a zero gradient on the first step: mhat/(sqrt(vhat)+eps) = 0
        K.adamw_update(p, g, m, v, lr, b1, b2, eps, wd, t)
        K.adamw_update(p32, g.astype(F32), m32, v32, lr, b1, b2, eps, wd, t)
        p64, m64, v64 = adamw_textbook(p64, g, m64, v64, lr, b1, b2, eps, wd, t)
        np.testing.assert_allclose(p, p64, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(m, m64, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(v, v64, rtol=1e-12, atol=1e-15)
        assert p32.dtype == F32
        np.testing.assert_allclose(p32, p64, rtol=1e-5, atol=1e-6)


def test_grad_norm_and_scale():
    rng = np.random.default_rng(0)
    for dt in (F64, F32):
        x = rand(rng, 1001, dtype=dt)
        ref = float(np.sum(x.astype(F64) ** 2))
        assert K.grad_norm_squared(x) == pytest.approx(ref, rel=1e-12)
        y = x.copy()
        K.scale_inplace(y, 0.37)
        assert y.dtype == dt
        np.testing.assert_allclose(y, x.astype(F64) * 0.37, rtol=1e-6 if dt == F32 else 1e-15)
    assert not np.isfinite(K.grad_norm_squared(np.array([1.0, np.nan])))
    assert not np.isfinite(K.grad_norm_squared(np.array([1.0, np.inf], F32)))


def test_nonfinite_propagates():
    # NaN-safe fastmath: a NaN in the logits must give a NaN loss, never a silent finite one
    V = 5
    logits = np.zeros(V)
    logits[2] = np.nan
    probs, losses = np.empty(V), np.empty(1)
    K.softmax_forward(probs, logits, 1, 1, V, V)
    K.crossentropy_forward(losses, probs, np.zeros(1, np.int32), 1, 1, V)
    assert not np.isfinite(losses[0])


# ------------------------------------------------------------------ float32 stays float32
def _float64_variables(kernel, *args):
    """Compiles kernel's Python source afresh (serial, uncached) for these float32 arguments and
    returns the names of its float64 variables, leaving out constants cast at their use."""
    import numba
    from numba import types

    from cllm.kernels._common import FASTMATH

    d = numba.njit(fastmath=FASTMATH)(kernel.py_func)
    d(*args)
    (cres,) = d.overloads.values()
    bad = set()
    for name, t in cres.type_annotation.typemap.items():
        if t == types.float64 or (isinstance(t, types.Array) and t.dtype == types.float64):
            # constants (np.inf, module globals) are float64 until cast with dt(...) at their use
            if not (
                name.startswith("$const") or any(w in name for w in ("load_global", "load_attr", "unary_negative"))
            ):
                bad.add(name)
    return sorted(bad)


def test_serial_and_parallel_paths_agree():
    # Small kernels run on the calling thread below PARALLEL_MIN_WORK elements and split over the
    # threads above it. The same rows computed in one large call (parallel path) and in chunks
    # below the threshold (serial path) must give identical results.
    from cllm.kernels._common import PARALLEL_MIN_WORK

    rng = np.random.default_rng(0)
    C = 64
    rows = 2 * PARALLEL_MIN_WORK // C + 3  # the whole: above the threshold
    chunk = PARALLEL_MIN_WORK // C // 8  # each piece: below it
    N = rows * C
    a, b, d = rand(rng, N, dtype=F32), rand(rng, N, dtype=F32), rand(rng, N, dtype=F32)
    w, bias = rand(rng, C, dtype=F32), rand(rng, C, dtype=F32)

    def pieces(fn):  # fn(r0, r1) on row ranges below the threshold
        for r0 in range(0, rows, chunk):
            fn(r0, min(rows, r0 + chunk))

    def span(x, r0, r1, width=C):
        return x[r0 * width : r1 * width]

    big, small = np.empty(N, F32), np.empty(N, F32)
    K.residual_forward(big, a, b, N)
    pieces(lambda r0, r1: K.residual_forward(span(small, r0, r1), span(a, r0, r1), span(b, r0, r1), (r1 - r0) * C))
    np.testing.assert_array_equal(big, small)

    mean, rstd, mean_s, rstd_s = (np.empty(rows, F32) for _ in range(4))
    K.layernorm_forward(big, mean, rstd, a, w, bias, 1, rows, C)
    pieces(
        lambda r0, r1: K.layernorm_forward(
            span(small, r0, r1), mean_s[r0:r1], rstd_s[r0:r1], span(a, r0, r1), w, bias, 1, r1 - r0, C
        )
    )
    np.testing.assert_array_equal(big, small)
    np.testing.assert_array_equal(mean, mean_s)

    dx, dw, db = b.copy(), np.zeros(C, F32), np.zeros(C, F32)
    sx, sw, sb = b.copy(), np.zeros(C, F32), np.zeros(C, F32)
    K.layernorm_backward(dx, dw, db, d, a, w, mean, rstd, 1, rows, C)
    pieces(
        lambda r0, r1: K.layernorm_backward(
            span(sx, r0, r1), sw, sb, span(d, r0, r1), span(a, r0, r1), w, mean[r0:r1], rstd[r0:r1], 1, r1 - r0, C
        )
    )
    np.testing.assert_array_equal(dx, sx)
    np.testing.assert_array_equal(dw, sw)  # the same additions in the same order (rows, serially)
    np.testing.assert_array_equal(db, sb)

    # AdamW's threshold is 4 x PARALLEL_MIN_WORK (cllm/kernels/adamw.py): a whole above it, pieces below
    M = 4 * PARALLEL_MIN_WORK + 3 * C
    ga, gb, gd = (np.resize(x, M) for x in (a, b, d))
    p1, m1, v1 = ga.copy(), np.abs(gb) * 0.1, np.abs(gd) * 0.01
    p2, m2, v2 = p1.copy(), m1.copy(), v1.copy()
    K.adamw_update(p1, gd, m1, v1, 1e-3, 0.9, 0.95, 1e-8, 0.1, 3)
    for i0 in range(0, M, chunk * C):
        i1 = min(M, i0 + chunk * C)
        K.adamw_update(p2[i0:i1], gd[i0:i1], m2[i0:i1], v2[i0:i1], 1e-3, 0.9, 0.95, 1e-8, 0.1, 3)
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_array_equal(v1, v2)


@pytest.mark.parametrize("dtype", [F64, F32])
def test_backward_overwrite_ignores_what_the_output_held(dtype):
    # overwrite=True (the model's first write into each activation gradient) must give exactly what
    # accumulating into zeros gives, whatever the buffer held before (NaN here); the gradients that
    # keep accumulating (dweight, dbias) are unchanged by the flag
    rng = np.random.default_rng(0)
    B, T, C, NH, OC, V, Vp = 2, 5, 6, 2, 7, 9, 16
    N = B * T
    r = lambda n: rand(rng, n, dtype=dtype)  # noqa: E731
    inp, w, dout, dout_oc = r(N * C), r(OC * C), r(N * C), r(N * OC)
    qkv, att_in = r(N * 3 * C), np.zeros(B * NH * T * T, dtype)
    K.attention_forward(np.empty(N * C, dtype), att_in, qkv, B, T, C, NH)
    probs = np.abs(r(N * Vp))
    targets = rng.integers(0, V, N).astype(np.int32)
    mean, rstd = np.empty(N, dtype), np.empty(N, dtype)
    K.layernorm_forward(np.empty(N * C, dtype), mean, rstd, inp, w[:C], w[C : 2 * C], B, T, C)
    cases = {  # kernel call given (output buffer, extra accumulated buffers) -> None
        "matmul": (
            N * C,
            lambda o, acc, ow: K.matmul_backward(o, acc[0], acc[1], dout_oc, inp, w, B, T, C, OC, ow),
            [OC * C, OC],
        ),
        "layernorm": (
            N * C,
            lambda o, acc, ow: K.layernorm_backward(o, acc[0], acc[1], dout, inp, w[:C], mean, rstd, B, T, C, ow),
            [C, C],
        ),
        "gelu": (N * C, lambda o, acc, ow: K.gelu_backward(o, inp, dout, N * C, ow), []),
        "attention": (
            N * 3 * C,
            lambda o, acc, ow: K.attention_backward(o, dout, qkv, att_in, B, T, C, NH, ow),
            [],
        ),
        "crossentropy": (
            N * Vp,
            lambda o, acc, ow: K.crossentropy_softmax_backward(o, r(N), probs, targets, B, T, V, Vp, ow),
            [],
        ),
    }
    for name, (size, call, acc_sizes) in cases.items():
        state = rng.bit_generator.state
        ref, ref_acc = np.zeros(size, dtype), [np.full(n, 0.5, dtype) for n in acc_sizes]
        call(ref, ref_acc, False)
        rng.bit_generator.state = state  # the same random dlosses for crossentropy
        out, out_acc = np.full(size, np.nan, dtype), [np.full(n, 0.5, dtype) for n in acc_sizes]
        call(out, out_acc, True)
        np.testing.assert_array_equal(out, ref, err_msg=name)
        for a, b in zip(out_acc, ref_acc):
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_float32_arithmetic_stays_float32():
    from cllm.kernels.blas import NO_TRANS, TRANS, gemm
    from cllm.kernels.fastexp import exp_shifted
    from cllm.kernels.layernorm import layernorm_row
    from cllm.kernels.matmul import bias_backward_block

    B, T, C, NH, OC, V, Vp = 1, 3, 4, 2, 5, 6, 8
    z = lambda n: np.zeros(n, F32)  # noqa: E731
    u = lambda n: np.full(n, 0.5, F32)  # noqa: E731
    tok = np.zeros(B * T, np.int32)
    cases = {
        "encoder_forward": (K.encoder_forward, z(12), tok, u(Vp * C), u(T * C), B, T, C),
        "encoder_backward": (K.encoder_backward, z(Vp * C), z(T * C), u(12), tok, B, T, C),
        "layernorm_row": (layernorm_row, z(C), u(C) + np.arange(C, dtype=F32), u(C), u(C), 0, C),
        "layernorm_forward": (K.layernorm_forward, z(12), z(3), z(3), u(12), u(C), u(C), B, T, C),
        "layernorm_backward": (K.layernorm_backward, z(12), z(C), z(C), u(12), u(12), u(C), u(3), u(3), B, T, C),
        "matmul_forward": (K.matmul_forward, z(T * OC), u(T * C), u(OC * C), u(OC), B, T, C, OC),
        "matmul_backward": (K.matmul_backward, z(T * C), z(OC * C), z(OC), u(T * OC), u(T * C), u(OC * C), B, T, C, OC),
        "matmul_gelu_forward": (K.matmul_gelu_forward, z(T * OC), z(T * OC), u(T * C), u(OC * C), u(OC), B, T, C, OC),
        "bias_backward_block": (bias_backward_block, z(OC), u(T * OC), T, OC, 1, OC),
        "gemm": (gemm, NO_TRANS, TRANS, 2, 3, 4, 1, u(8), 0, 4, u(12), 0, 4, 1, z(6), 0, 3),
        "exp_shifted": (exp_shifted, u(7), F32(0.5), z(7)),
        "attention_forward": (K.attention_forward, z(T * C), z(NH * T * T), u(T * 3 * C), B, T, C, NH),
        "attention_backward": (
            K.attention_backward,
            z(T * 3 * C),
            u(T * C),
            u(T * 3 * C),
            u(NH * T * T),
            B,
            T,
            C,
            NH,
        ),
        "gelu_forward": (K.gelu_forward, z(7), u(7), 7),
        "gelu_backward": (K.gelu_backward, z(7), u(7), u(7), 7),
        "residual_forward": (K.residual_forward, z(7), u(7), u(7), 7),
        "softmax_forward": (K.softmax_forward, z(T * Vp), u(T * Vp), B, T, V, Vp),
        "crossentropy_forward": (K.crossentropy_forward, z(T), u(T * Vp), tok, B, T, Vp),
        "crossentropy_softmax_backward": (
            K.crossentropy_softmax_backward,
            z(T * Vp),
            u(T),
            u(T * Vp),
            tok,
            B,
            T,
            V,
            Vp,
        ),
        "crossentropy_softmax_backward_inplace": (K.crossentropy_softmax_backward_inplace, u(T * Vp), u(T), tok,
                                                  B, T, V, Vp),
    }
    promoted = {name: v for name, (k, *args) in cases.items() if (v := _float64_variables(k, *args))}
    assert not promoted, f"float64 arithmetic inside float32 kernels: {promoted}"


# ------------------------------------------------------------------ larger shapes (blocking, BLAS paths)
def test_matmul_larger_shapes():
    # (attention at larger shapes: test_attention's examples, T = 40 and T = 70)
    rng = np.random.default_rng(99)
    BT, Cm, OC = 67, 33, 70  # rows, channels, outputs that split unevenly over threads and blocks
    inp, weight, bias = rand(rng, BT * Cm), rand(rng, OC * Cm), rand(rng, OC)
    o = np.empty(BT * OC)
    K.matmul_forward(o, inp, weight, bias, 1, BT, Cm, OC)
    Xm, Wm = inp.reshape(BT, Cm), weight.reshape(OC, Cm)
    np.testing.assert_allclose(o.reshape(BT, OC), Xm @ Wm.T + bias, rtol=1e-12, atol=1e-12)
    dout = rand(rng, BT * OC)
    di, dw, db = np.ones(BT * Cm), np.ones(OC * Cm), np.ones(OC)
    K.matmul_backward(di, dw, db, dout, inp, weight, 1, BT, Cm, OC)
    D = dout.reshape(BT, OC)
    np.testing.assert_allclose(di.reshape(BT, Cm), 1 + D @ Wm, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw.reshape(OC, Cm), 1 + D.T @ Xm, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, 1 + D.sum(0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("above", [False, True])
def test_fill_inplace_on_both_sides_of_the_parallel_threshold(above):
    from cllm.kernels import fill_inplace
    from cllm.kernels._common import PARALLEL_MIN_WORK

    n = PARALLEL_MIN_WORK + 3 if above else 5
    x = np.full(n, np.nan, dtype=np.float32)
    fill_inplace(x, 0.25)
    assert np.all(x == np.float32(0.25))
