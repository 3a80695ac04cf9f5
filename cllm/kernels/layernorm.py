"""Layer normalization over the channel dimension (eps 1e-5, biased variance), as GPT-2.

Legend: B batch, T time, C channels.
"""
import numpy as np
from numba import njit, prange

from ._common import JIT, PARALLEL_MIN_WORK, PJIT


@njit(**JIT)
def layernorm_row(out, inp, weight, bias, o, C):
    # One row: normalizes inp[o:o+C] into out[o:o+C]; returns (mean, rstd) in the array's dtype.
    # (slices indexed from 0 so that LLVM vectorizes the loops; o + c indexing defeats it)
    x = inp[o:o + C]
    y = out[o:o + C]
    zero = inp.dtype.type(0)
    Cf = inp.dtype.type(C)  # dividing by the int C would promote float32 to float64
    s = zero
    for c in range(C):
        s += x[c]
    m = s / Cf
    v = zero
    for c in range(C):
        d = x[c] - m
        v += d * d
    v = v / Cf
    r = inp.dtype.type(1) / np.sqrt(v + inp.dtype.type(1e-5))
    for c in range(C):
        y[c] = (x[c] - m) * r * weight[c] + bias[c]
    return m, r


@njit(**JIT)
def layernorm_rows(out, mean, rstd, inp, weight, bias, C, r0, r1):
    # rows r0..r1-1 of layernorm_forward, on the calling thread (cllm/kernels/block.py runs it per thread)
    for bt in range(r0, r1):
        mean[bt], rstd[bt] = layernorm_row(out, inp, weight, bias, bt * C, C)


@njit(**PJIT)
def layernorm_forward(out, mean, rstd, inp, weight, bias, B, T, C):
    # out, inp (B,T,C);  mean, rstd (B,T) saved for the backward;  weight, bias (C)
    if B * T * C < PARALLEL_MIN_WORK:
        layernorm_rows(out, mean, rstd, inp, weight, bias, C, 0, B * T)
        return
    for bt in prange(B * T):
        m, r = layernorm_row(out, inp, weight, bias, bt * C, C)
        mean[bt] = m
        rstd[bt] = r


@njit(**JIT)
def _layernorm_backward_row(dx, x, dy, weight, m, r, C, overwrite):
    # dx (C) += the row's input gradient (= with overwrite);  x, dy (C) the row's input and output gradient
    zero = x.dtype.type(0)
    Cf = x.dtype.type(C)
    dnorm_mean = zero
    dnorm_norm_mean = zero
    for c in range(C):
        norm = (x[c] - m) * r
        dnorm = weight[c] * dy[c]
        dnorm_mean += dnorm
        dnorm_norm_mean += dnorm * norm
    dnorm_mean = dnorm_mean / Cf
    dnorm_norm_mean = dnorm_norm_mean / Cf
    for c in range(C):
        norm = (x[c] - m) * r
        dnorm = weight[c] * dy[c]
        v = (dnorm - dnorm_mean - norm * dnorm_norm_mean) * r
        dx[c] = v if overwrite else dx[c] + v


@njit(**PJIT)
def layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, B, T, C, overwrite=False):
    # dinp (B,T,C) += ...;  dweight, dbias (C) += ...;  dout, inp (B,T,C);  mean, rstd (B,T)
    # overwrite: dinp = ... instead (what it held is ignored); dweight and dbias still accumulate
    # dinp: rows are independent, so they run in parallel (on one thread when small). Rows are
    # slices indexed from 0, which LLVM vectorizes.
    if B * T * C < PARALLEL_MIN_WORK:
        for bt in range(B * T):
            _layernorm_backward_row(dinp[bt * C:(bt + 1) * C], inp[bt * C:(bt + 1) * C], dout[bt * C:(bt + 1) * C],
                                    weight, mean[bt], rstd[bt], C, overwrite)
    else:
        for bt in prange(B * T):
            _layernorm_backward_row(dinp[bt * C:(bt + 1) * C], inp[bt * C:(bt + 1) * C], dout[bt * C:(bt + 1) * C],
                                    weight, mean[bt], rstd[bt], C, overwrite)
    # dweight, dbias: every row writes every channel, so this sum is serial over rows.
    dw = dweight[:C]
    db = dbias[:C]
    for bt in range(B * T):
        x = inp[bt * C:(bt + 1) * C]
        dy = dout[bt * C:(bt + 1) * C]
        m = mean[bt]
        r = rstd[bt]
        for c in range(C):
            db[c] += dy[c]
            dw[c] += (x[c] - m) * r * dy[c]
