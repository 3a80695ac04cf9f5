"""cllm/kernels/block.py's fused kernels equal the kernels they stand for, run in sequence.

The separate kernels are checked against NumPy, PyTorch and finite differences elsewhere
(tests/test_kernels.py, tests/test_reference.py); here each fused kernel must give their numbers
to a few rounding units (not bit for bit: a vectorized loop's remainder starts where its block of
rows does, and vector and scalar code may contract a multiply-add differently). Every output starts
as NaN, so each element must be written. Row counts include 1 and odd ones (uneven thread blocks)."""
import numpy as np
import pytest
from test_kernels import _float64_variables, rand

import cllm.kernels as K
from cllm.kernels.dropout import derive_key, dropout_threshold

F32, F64 = np.float32, np.float64
SHAPES = [(1, 1, 4, 8), (2, 3, 5, 7), (3, 7, 8, 24), (4, 16, 16, 48)]  # B, T, C, OC


def nans(n, dtype):
    return np.full(n, np.nan, dtype)


def close(got, want, dtype):
    ulps = 8 * np.finfo(dtype).eps
    np.testing.assert_allclose(got, want, rtol=ulps, atol=ulps * np.abs(want).max(initial=1.0))


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("B,T,C,OC", SHAPES)
@pytest.mark.parametrize("has_bias", [True, False])
def test_layernorm_matmul_forward_equals_the_two_kernels(dtype, B, T, C, OC, has_bias):
    rng = np.random.default_rng(B * 100 + OC)
    N = B * T
    inp, lnw, lnb = rand(rng, N * C, dtype=dtype) * 3 + 1, rand(rng, C, dtype=dtype), rand(rng, C, dtype=dtype)
    weight, bias = rand(rng, OC * C, dtype=dtype), rand(rng, OC, dtype=dtype) if has_bias else None
    got = {"ln": nans(N * C, dtype), "mean": nans(N, dtype), "rstd": nans(N, dtype), "out": nans(N * OC, dtype)}
    K.layernorm_matmul_forward(got["ln"], got["mean"], got["rstd"], got["out"], inp, lnw, lnb, weight, bias,
                               B, T, C, OC)
    want = {k: np.empty_like(v) for k, v in got.items()}
    K.layernorm_forward(want["ln"], want["mean"], want["rstd"], inp, lnw, lnb, B, T, C)
    K.matmul_forward(want["out"], want["ln"], weight, bias, B, T, C, OC)
    for k in got:
        close(got[k], want[k], dtype)


def tail_inputs(rng, B, T, C, dtype):
    N, C4 = B * T * C, 4 * C
    x = {"atty": rand(rng, N, dtype=dtype), "residual": rand(rng, N, dtype=dtype)}
    for name, n in (("attprojw", C * C), ("attprojb", C), ("ln2w", C), ("ln2b", C), ("fcw", C4 * C),
                    ("fcb", C4), ("fcprojw", C * C4), ("fcprojb", C)):
        x[name] = rand(rng, n, dtype=dtype) * (0.3 if name.endswith("w") and name != "ln2w" else 1.0)
    return x


OUTPUTS = ("attproj", "residual2", "ln2", "ln2_mean", "ln2_rstd", "fch", "fch_gelu", "fcproj", "residual3")


def tail_sequence(o, x, B, T, C, drop, k1, k2):
    # the kernels block_tail_forward stands for, in the order cllm/model.py ran them before it
    N = B * T * C
    K.matmul_forward(o["attproj"], x["atty"], x["attprojw"], x["attprojb"], B, T, C, C)
    if drop:
        K.dropout_forward(o["attproj"], o["attproj"], N, drop, k1)
    K.residual_forward(o["residual2"], x["residual"], o["attproj"], N)
    K.layernorm_forward(o["ln2"], o["ln2_mean"], o["ln2_rstd"], o["residual2"], x["ln2w"], x["ln2b"], B, T, C)
    K.matmul_gelu_forward(o["fch"], o["fch_gelu"], o["ln2"], x["fcw"], x["fcb"], B, T, C, 4 * C)
    K.matmul_forward(o["fcproj"], o["fch_gelu"], x["fcprojw"], x["fcprojb"], B, T, 4 * C, C)
    if drop:
        K.dropout_forward(o["fcproj"], o["fcproj"], N, drop, k2)
    K.residual_forward(o["residual3"], o["residual2"], o["fcproj"], N)


def tail_outputs(B, T, C, dtype):
    sizes = {"ln2_mean": B * T, "ln2_rstd": B * T, "fch": B * T * 4 * C, "fch_gelu": B * T * 4 * C}
    return {k: nans(sizes.get(k, B * T * C), dtype) for k in OUTPUTS}


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("B,T,C,_", SHAPES)
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_block_tail_forward_equals_the_kernel_sequence(dtype, B, T, C, _, p):
    rng = np.random.default_rng(B * 10 + C)
    x = tail_inputs(rng, B, T, C, dtype)
    drop, k1, k2 = dropout_threshold(p), derive_key(5, 1, 2), derive_key(5, 1, 3)
    got = tail_outputs(B, T, C, dtype)
    K.block_tail_forward(*(got[k] for k in OUTPUTS), *x.values(), B, T, C, drop, k1, k2)
    want = tail_outputs(B, T, C, dtype)
    tail_sequence(want, x, B, T, C, drop, k1, k2)
    for k in OUTPUTS:
        close(got[k], want[k], dtype)
    if p:  # the masks are the sequence's: the same elements dropped
        np.testing.assert_array_equal(got["attproj"] == 0, want["attproj"] == 0)
        assert (got["fcproj"] == 0).any()


def test_block_kernels_keep_float32_arithmetic_in_float32():
    B, T, C = 1, 3, 4
    rng = np.random.default_rng(0)
    x = tail_inputs(rng, B, T, C, F32)
    o = tail_outputs(B, T, C, F32)
    ln = {"ln": nans(B * T * C, F32), "mean": nans(B * T, F32), "rstd": nans(B * T, F32), "out": nans(B * T * 8, F32)}
    cases = {
        "layernorm_matmul_forward": (K.layernorm_matmul_forward, *ln.values(), x["residual"], x["ln2w"], x["ln2b"],
                                     rand(rng, 8 * C, dtype=F32), rand(rng, 8, dtype=F32), B, T, C, 8),
        "block_tail_forward": (K.block_tail_forward, *(o[k] for k in OUTPUTS), *x.values(), B, T, C,
                               dropout_threshold(0.2), 7, 8),
    }
    promoted = {name: v for name, (k, *args) in cases.items() if (v := _float64_variables(k, *args))}
    assert not promoted, f"float64 arithmetic inside float32 kernels: {promoted}"
