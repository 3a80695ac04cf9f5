"""The Llama family's kernels (cllm/kernels/rmsnorm.py, rope.py, swiglu.py): finite differences in float64,
an independent NumPy implementation, PyTorch parity in float32 (a fixture made by
tests/reference/make_llama_reference.py; torch is not imported here), float32 kept in float32, and the
serial and threaded paths giving the same numbers. Helpers and conventions: tests/test_kernels.py.
"""
import os

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from test_kernels import SETTINGS, _float64_variables, assert_f32, assert_grad, check_backward, f32, fd_grad, rand

import cllm.kernels as K
from cllm.kernels._common import PARALLEL_MIN_WORK

F64 = np.float64
F32 = np.float32
FIXTURE = os.path.join(os.path.dirname(__file__), "reference", "llama_reference.npz")

rows = st.integers(1, 5)
chans = st.integers(1, 11)
seeds = st.integers(0, 2**31 - 1)


# ------------------------------------------------------------------ NumPy references
def np_rmsnorm(x, w, eps):
    rstd = 1 / np.sqrt((x * x).mean(-1, keepdims=True) + eps)
    return x * rstd * w, rstd[..., 0]


def np_rope(qkv, B, T, NH, NKV, hs, pos0, theta):
    # rotate-half, straight from the definition (float64 angles), on the q and k heads
    x = qkv.reshape(B, T, NH + 2 * NKV, hs).copy()
    half = hs // 2
    ang = np.arange(pos0, pos0 + T)[:, None] * theta ** (-np.arange(0, hs, 2) / hs)[None, :]  # (T, half)
    c, s = np.cos(ang)[None, :, None, :], np.sin(ang)[None, :, None, :]
    qk = x[:, :, :NH + NKV]
    x1, x2 = qk[..., :half].copy(), qk[..., half:].copy()
    qk[..., :half] = x1 * c - x2 * s
    qk[..., half:] = x2 * c + x1 * s
    return x.ravel()


def np_swiglu(inp, N, F):
    g, u = inp.reshape(N, 2, F)[:, 0], inp.reshape(N, 2, F)[:, 1]
    return (g / (1 + np.exp(-g)) * u).ravel()


# ------------------------------------------------------------------ RMSNorm
@SETTINGS
@given(N=rows, C=chans, eps=st.sampled_from([1e-5, 1e-6]), seed=seeds)
@example(N=1, C=1, eps=1e-5, seed=0)
@example(N=3, C=9, eps=1e-6, seed=2)
def test_rmsnorm(N, C, eps, seed):
    rng = np.random.default_rng(seed)
    inp = rand(rng, N * C, 2.0) + rand(rng, 1)[0]
    # |x| >= 0.1: a row's mean square far above eps, where the curvature would defeat the finite differences
    inp += np.where(inp < 0, -0.1, 0.1)
    x = {"inp": inp, "weight": 1 + rand(rng, C, 0.5)}
    W = rand(rng, N * C)
    out, rstd = np.empty(N * C), np.empty(N)

    def loss():
        K.rmsnorm_forward(out, rstd, x["inp"], x["weight"], N, C, eps)
        return float(np.dot(out, W))

    loss()
    ref, rref = np_rmsnorm(x["inp"].reshape(N, C), x["weight"], eps)
    np.testing.assert_allclose(out.reshape(N, C), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rstd, rref, rtol=1e-12)
    rstd_s = rstd.copy()
    g = check_backward(loss, x, lambda gr: K.rmsnorm_backward(gr["inp"], gr["weight"], W, x["inp"], x["weight"],
                                                              rstd_s, N, C), rng)
    # overwrite: what dinp held (NaN here) is ignored; dweight still accumulates
    dx, dw = np.full(N * C, np.nan), np.ones(C)
    K.rmsnorm_backward(dx, dw, W, x["inp"], x["weight"], rstd_s, N, C, True)
    np.testing.assert_allclose(dx, g["inp"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, 1 + g["weight"], rtol=1e-12, atol=1e-12)

    x32 = f32(x)
    o32, r32 = np.empty(N * C, F32), np.empty(N, F32)
    K.rmsnorm_forward(o32, r32, x32["inp"], x32["weight"], N, C, eps)
    ref32, rref32 = np_rmsnorm(x32["inp"].reshape(N, C).astype(F64), x32["weight"].astype(F64), eps)
    assert_f32(o32, ref32.ravel(), "rmsnorm out")
    assert_f32(r32, rref32, "rmsnorm rstd")
    dx32, dw32 = np.zeros(N * C, F32), np.zeros(C, F32)
    K.rmsnorm_backward(dx32, dw32, W.astype(F32), x32["inp"], x32["weight"], r32, N, C)
    # the float64 gradients at the float32-rounded inputs
    dx64, dw64 = np.zeros(N * C), np.zeros(C)
    K.rmsnorm_backward(dx64, dw64, W.astype(F32).astype(F64), x32["inp"].astype(F64), x32["weight"].astype(F64),
                       rref32, N, C)
    assert_f32(dx32, dx64, "rmsnorm dinp", rtol=5e-5, scale=np.abs(W).max() * rref32.max() * 2)
    assert_f32(dw32, dw64, "rmsnorm dweight", rtol=5e-5)


# ------------------------------------------------------------------ RoPE
@SETTINGS
@given(B=st.integers(1, 2), T=st.integers(1, 5), NKV=st.integers(1, 3), group=st.integers(1, 3),
       half=st.integers(1, 4), pos0=st.integers(0, 3), seed=seeds)
@example(B=1, T=1, NKV=1, group=1, half=1, pos0=0, seed=0)
@example(B=2, T=5, NKV=1, group=3, half=3, pos0=3, seed=1)
def test_rope(B, T, NKV, group, half, pos0, seed):
    rng = np.random.default_rng(seed)
    NH, hs, theta = NKV * group, 2 * half, 10000.0
    maxT = pos0 + T + 1
    cos, sin = K.rope_table(maxT, hs, theta, F64)
    Wd = (NH + 2 * NKV) * hs
    qkv = rand(rng, B * T * Wd)
    W = rand(rng, B * T * Wd)
    out = np.empty_like(qkv)

    def loss():
        out[:] = qkv
        K.rope_forward(out, cos, sin, B, T, NH, NKV, hs, pos0)
        return float(np.dot(out, W))

    loss()
    np.testing.assert_allclose(out, np_rope(qkv, B, T, NH, NKV, hs, pos0, theta), rtol=1e-12, atol=1e-12)
    v0 = (NH + NKV) * hs
    assert np.array_equal(out.reshape(B, T, Wd)[..., v0:], qkv.reshape(B, T, Wd)[..., v0:])  # v untouched
    # the backward, in place on the gradient, against central differences of the forward
    grad = W.copy()
    K.rope_backward(grad, cos, sin, B, T, NH, NKV, hs, pos0)
    idx, num = fd_grad(loss, qkv, rng)
    assert_grad(grad, idx, num, "qkv")
    loss()  # out back at the unperturbed qkv
    # the backward undoes the forward (a rotation's inverse is its transpose)
    back = out.copy()
    K.rope_backward(back, cos, sin, B, T, NH, NKV, hs, pos0)
    np.testing.assert_allclose(back, qkv, rtol=1e-12, atol=1e-12)

    c32, s32 = K.rope_table(maxT, hs, theta, F32)
    o32 = qkv.astype(F32)
    K.rope_forward(o32, c32, s32, B, T, NH, NKV, hs, pos0)
    assert_f32(o32, np_rope(qkv.astype(F32).astype(F64), B, T, NH, NKV, hs, pos0, theta), "rope out")
    g32 = W.astype(F32)
    K.rope_backward(g32, c32, s32, B, T, NH, NKV, hs, pos0)
    assert_f32(g32, grad, "rope dqkv", scale=np.abs(W).max())


def interleaved_rope(z, pos, hs, theta):
    # llama.cpp's convention on one head z (hs) at position pos: pairs (2i, 2i+1) rotated by pos * theta^(-2i/hs)
    ang = pos * theta ** (-np.arange(0, hs, 2) / hs)
    c, s = np.cos(ang), np.sin(ang)
    y = z.copy()
    y[0::2] = z[0::2] * c - z[1::2] * s
    y[1::2] = z[0::2] * s + z[1::2] * c
    return y


def converter_permute(x, n_head):
    # llama.cpp's HF->GGUF converter (convert_hf_to_gguf.py, LlamaModel.permute) reorders the rows of
    # the q and k weights per head: reshape (n_head, 2, hs/2) -> swap the last two axes -> flatten.
    # Applied to a head's output channels it is the permutation that the weight rows undergo.
    return x.reshape(n_head, 2, x.shape[-1] // n_head // 2).swapaxes(1, 2).reshape(x.shape)


def test_rope_rotate_half_is_interleaved_after_the_converters_permutation():
    rng = np.random.default_rng(3)
    B, T, NH, NKV, hs, pos0, theta = 1, 4, 4, 2, 8, 5, 500000.0
    cos, sin = K.rope_table(pos0 + T, hs, theta, F64)
    qkv = rand(rng, B * T * (NH + 2 * NKV) * hs)
    out = qkv.copy()
    K.rope_forward(out, cos, sin, B, T, NH, NKV, hs, pos0)
    x, y = qkv.reshape(T, NH + 2 * NKV, hs), out.reshape(T, NH + 2 * NKV, hs)
    for t in range(T):
        for heads in (slice(0, NH), slice(NH, NH + NKV)):  # the q heads, then the k heads
            n = heads.stop - heads.start
            z = converter_permute(x[t, heads].ravel(), n).reshape(n, hs)
            want = np.stack([interleaved_rope(z[h], pos0 + t, hs, theta) for h in range(n)])
            np.testing.assert_allclose(converter_permute(y[t, heads].ravel(), n).reshape(n, hs), want,
                                       rtol=1e-12, atol=1e-12)
            # without the permutation the two conventions differ (the test can tell them apart)
            other = np.stack([interleaved_rope(x[t, heads][h], pos0 + t, hs, theta) for h in range(n)])
            assert not np.allclose(y[t, heads], other)


def test_rope_table_and_positions_beyond_it():
    cos, sin = K.rope_table(6, 4, 100.0, F64)
    assert cos.shape == sin.shape == (12,)
    ang = np.arange(6)[:, None] * np.array([1.0, 0.1])[None, :]  # 100^(-0/4), 100^(-2/4)
    np.testing.assert_allclose(cos, np.cos(ang).ravel(), rtol=0, atol=1e-15)
    np.testing.assert_allclose(sin, np.sin(ang).ravel(), rtol=0, atol=1e-15)
    c32, _ = K.rope_table(6, 4, 100.0, F32)
    assert c32.dtype == F32 and np.array_equal(c32, cos.astype(F32))  # float64 angles, then rounded once
    qkv = np.zeros(3 * 3 * 4)
    K.rope_forward(qkv, cos, sin, 1, 3, 1, 1, 4, 3)  # positions 3..5: the last rows of the table
    with pytest.raises(ValueError, match="beyond the cos/sin table"):
        K.rope_forward(qkv, cos, sin, 1, 3, 1, 1, 4, 4)
    with pytest.raises(ValueError, match="beyond the cos/sin table"):
        K.rope_backward(qkv, cos, sin, 1, 3, 1, 1, 4, 4)
    with pytest.raises(ValueError, match="even head size"):
        K.rope_table(6, 5, 100.0)


# ------------------------------------------------------------------ SwiGLU
@SETTINGS
@given(N=rows, F=st.integers(1, 9), scale=st.sampled_from([1.0, 4.0]), seed=seeds)
@example(N=1, F=1, scale=1.0, seed=0)
@example(N=3, F=7, scale=4.0, seed=2)
def test_swiglu(N, F, scale, seed):
    rng = np.random.default_rng(seed)
    x = {"inp": rand(rng, N * 2 * F, scale)}
    W = rand(rng, N * F)
    out = np.empty(N * F)

    def loss():
        K.swiglu_forward(out, x["inp"], N, F)
        return float(np.dot(out, W))

    loss()
    np.testing.assert_allclose(out, np_swiglu(x["inp"], N, F), rtol=1e-12, atol=1e-14)
    g = check_backward(loss, x, lambda gr: K.swiglu_backward(gr["inp"], W, x["inp"], N, F), rng)
    dx = np.full(N * 2 * F, np.nan)
    K.swiglu_backward(dx, W, x["inp"], N, F, True)
    np.testing.assert_allclose(dx, g["inp"], rtol=1e-12, atol=1e-12)

    i32 = x["inp"].astype(F32)
    o32 = np.empty(N * F, F32)
    K.swiglu_forward(o32, i32, N, F)
    assert_f32(o32, np_swiglu(i32.astype(F64), N, F), "swiglu out")
    d32 = np.zeros(N * 2 * F, F32)
    K.swiglu_backward(d32, W.astype(F32), i32, N, F)
    d64 = np.zeros(N * 2 * F)
    K.swiglu_backward(d64, W.astype(F32).astype(F64), i32.astype(F64), N, F)
    assert_f32(d32, d64, "swiglu dinp", scale=np.abs(W).max() * np.abs(i32).max())


def test_swiglu_saturates_without_overflow():
    # very negative gates: silu -> 0 (exp(-g) would overflow float32); very positive: silu(g) = g
    for dt in (F32, F64):
        g = np.array([-1000, -100, -30, 30, 100, 1000], dt)
        inp = np.concatenate([g, np.ones(6, dt)])
        out, din = np.empty(6, dt), np.zeros(12, dt)
        K.swiglu_forward(out, inp, 1, 6)
        K.swiglu_backward(din, np.ones(6, dt), inp, 1, 6)
        assert np.isfinite(out).all() and np.isfinite(din).all()
        np.testing.assert_allclose(out, np.where(g > 0, g, 0), rtol=1e-6, atol=1e-11)
        np.testing.assert_allclose(din[:6], (g > 0).astype(dt), rtol=1e-6, atol=1e-11)
    # NaN propagates (the model's non-finite loss guard relies on it)
    out = np.empty(1, F32)
    K.swiglu_forward(out, np.array([np.nan, 1], F32), 1, 1)
    assert np.isnan(out[0])


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


def test_rmsnorm_matches_pytorch(ref):
    x, w, dout = ref["rms_inp"], ref["rms_weight"], ref["rms_dout"]
    N, C = x.shape
    out, rstd = np.empty(N * C, F32), np.empty(N, F32)
    K.rmsnorm_forward(out, rstd, x.ravel(), w, N, C, float(ref["rms_eps"]))
    close(out, ref["rms_out"], "rmsnorm out")
    close(rstd, ref["rms_rstd"], "rmsnorm rstd")
    dx, dw = np.full(N * C, np.nan, F32), np.zeros(C, F32)
    K.rmsnorm_backward(dx, dw, dout.ravel(), x.ravel(), w, rstd, N, C, True)
    close(dx, ref["rms_dinp"], "rmsnorm dinp")
    close(dw, ref["rms_dweight"], "rmsnorm dweight")


def test_rope_matches_pytorch(ref):
    B, T, NH, NKV, hs, pos0, maxT = (int(v) for v in ref["rope_sizes"])
    cos, sin = K.rope_table(maxT, hs, float(ref["rope_theta"]), F32)
    # transformers' table (float32 angles) against ours (float64 angles, rounded): positions < 12
    close(cos, ref["rope_cos"], "cos table", rtol=2e-6)
    close(sin, ref["rope_sin"], "sin table", rtol=2e-6)
    qkv = ref["rope_qkv"].ravel().copy()
    K.rope_forward(qkv, cos, sin, B, T, NH, NKV, hs, pos0)
    close(qkv, ref["rope_out"], "rope out")
    d = ref["rope_dout"].ravel().copy()
    K.rope_backward(d, cos, sin, B, T, NH, NKV, hs, pos0)
    close(d, ref["rope_dqkv"], "rope dqkv")


def test_swiglu_matches_pytorch(ref):
    inp, dout = ref["swiglu_inp"], ref["swiglu_dout"]
    N, F = dout.shape
    out = np.empty(N * F, F32)
    K.swiglu_forward(out, inp.ravel(), N, F)
    close(out, ref["swiglu_out"], "swiglu out")
    din = np.zeros(N * 2 * F, F32)
    K.swiglu_backward(din, dout.ravel(), inp.ravel(), N, F)
    close(din, ref["swiglu_dinp"], "swiglu dinp")


# ------------------------------------------------------------------ float32 stays float32, threads agree
def test_float32_arithmetic_stays_float32():
    from cllm.kernels.rmsnorm import rmsnorm_row
    from cllm.kernels.rope import _rotate_rows
    from cllm.kernels.swiglu import swiglu_backward_rows, swiglu_rows

    N, C, B, T, NH, NKV, hs, F = 3, 4, 1, 3, 2, 1, 4, 5
    z = lambda n: np.zeros(n, F32)  # noqa: E731
    u = lambda n: np.full(n, 0.5, F32)  # noqa: E731
    Wd = (NH + 2 * NKV) * hs
    cos, sin = K.rope_table(T, hs, 10000.0, F32)
    eps = F32(1e-5)
    cases = {
        "rmsnorm_row": (rmsnorm_row, z(C), u(C), u(C), eps, C),
        "rmsnorm_forward": (K.rmsnorm_forward, z(N * C), z(N), u(N * C), u(C), N, C, eps),
        "rmsnorm_backward": (K.rmsnorm_backward, z(N * C), z(C), u(N * C), u(N * C), u(C), u(N), N, C),
        "_rotate_rows": (_rotate_rows, u(B * T * Wd), cos, sin, T, NH, NKV, hs, 0, 0, B * T, 1),
        "rope_forward": (K.rope_forward, u(B * T * Wd), cos, sin, B, T, NH, NKV, hs, 0),
        "rope_backward": (K.rope_backward, u(B * T * Wd), cos, sin, B, T, NH, NKV, hs, 0),
        "swiglu_rows": (swiglu_rows, z(N * F), u(N * 2 * F), F, 0, N),
        "swiglu_backward_rows": (swiglu_backward_rows, z(N * 2 * F), u(N * F), u(N * 2 * F), F, 0, N, False),
        "swiglu_forward": (K.swiglu_forward, z(N * F), u(N * 2 * F), N, F),
        "swiglu_backward": (K.swiglu_backward, z(N * 2 * F), u(N * F), u(N * 2 * F), N, F),
    }
    promoted = {name: v for name, (k, *args) in cases.items() if (v := _float64_variables(k, *args))}
    assert not promoted, f"float64 arithmetic inside float32 kernels: {promoted}"


def test_serial_and_parallel_paths_agree():
    # below PARALLEL_MIN_WORK elements the kernels run on the calling thread, above it over the threads:
    # the same rows in one large call and in pieces below the threshold must give identical numbers
    rng = np.random.default_rng(0)
    C = 64
    rows_ = 2 * PARALLEL_MIN_WORK // C + 3
    chunk = PARALLEL_MIN_WORK // C // 8

    def pieces(fn):
        for r0 in range(0, rows_, chunk):
            fn(r0, min(rows_, r0 + chunk))

    def span(x, r0, r1, width=C):
        return x[r0 * width:r1 * width]

    a, d = rand(rng, rows_ * C, dtype=F32), rand(rng, rows_ * C, dtype=F32)
    w = rand(rng, C, dtype=F32)
    big, small = np.empty(rows_ * C, F32), np.empty(rows_ * C, F32)
    rstd, rstd_s = np.empty(rows_, F32), np.empty(rows_, F32)
    K.rmsnorm_forward(big, rstd, a, w, rows_, C, 1e-5)
    pieces(lambda r0, r1: K.rmsnorm_forward(span(small, r0, r1), rstd_s[r0:r1], span(a, r0, r1), w, r1 - r0, C, 1e-5))
    np.testing.assert_array_equal(big, small)
    np.testing.assert_array_equal(rstd, rstd_s)
    dx, dw, sx, sw = d.copy(), np.zeros(C, F32), d.copy(), np.zeros(C, F32)
    K.rmsnorm_backward(dx, dw, d, a, w, rstd, rows_, C)
    pieces(lambda r0, r1: K.rmsnorm_backward(span(sx, r0, r1), sw, span(d, r0, r1), span(a, r0, r1), w,
                                             rstd[r0:r1], r1 - r0, C))
    np.testing.assert_array_equal(dx, sx)
    np.testing.assert_array_equal(dw, sw)  # per channel the same additions in the same order

    # RoPE: rows of width (NH + 2 NKV) hs = 64 = C, one position each (T = 1 per piece would change
    # positions, so pieces are whole batch rows: B rows of T = 1, at one position pos0)
    NH, NKV, hs, pos0 = 2, 1, 16, 7
    cos, sin = K.rope_table(8, hs, 10000.0, F32)
    for kernel in (K.rope_forward, K.rope_backward):
        big, small = a.copy(), a.copy()
        kernel(big, cos, sin, rows_, 1, NH, NKV, hs, pos0)
        pieces(lambda r0, r1: kernel(span(small, r0, r1), cos, sin, r1 - r0, 1, NH, NKV, hs, pos0))  # noqa: B023
        np.testing.assert_array_equal(big, small)
        assert not np.array_equal(big, a)

    # SwiGLU: rows of 2F = C inputs, F outputs
    F = C // 2
    big, small = np.empty(rows_ * F, F32), np.empty(rows_ * F, F32)
    K.swiglu_forward(big, a, rows_, F)
    pieces(lambda r0, r1: K.swiglu_forward(span(small, r0, r1, F), span(a, r0, r1), r1 - r0, F))
    np.testing.assert_array_equal(big, small)
    dy = d[:rows_ * F]
    dx, sx = d.copy(), d.copy()
    K.swiglu_backward(dx, dy, a, rows_, F)
    pieces(lambda r0, r1: K.swiglu_backward(span(sx, r0, r1), span(dy, r0, r1, F), span(a, r0, r1), r1 - r0, F))
    np.testing.assert_array_equal(dx, sx)
