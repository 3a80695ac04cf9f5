"""RMS normalization over the channel dimension (Llama's RMSNorm): y = x * rstd * w, no mean, no bias.

Legend: N rows (B*T), C channels.
rstd = 1/sqrt(mean(x^2) + eps) per row, computed in the array's dtype: float32 for float32, as
transformers' LlamaRMSNorm computes it for float32 activations (it upcasts only half precision).
"""
import numpy as np
from numba import njit, prange

from ._common import JIT, PARALLEL_MIN_WORK, PJIT, ROW_BLOCKS


@njit(**JIT)
def rmsnorm_row(y, x, weight, eps, C):
    # y (C) = x (C) * rstd * weight (C); returns rstd. Slices indexed from 0 (LLVM vectorizes them).
    dt = x.dtype.type
    s = dt(0)
    for c in range(C):
        s += x[c] * x[c]
    r = dt(1) / np.sqrt(s / dt(C) + dt(eps))  # dt(C): dividing by the int C would promote float32 to float64
    for c in range(C):
        y[c] = x[c] * r * weight[c]
    return r


@njit(**PJIT)
def rmsnorm_forward(out, rstd, inp, weight, N, C, eps):
    # out, inp (N,C);  rstd (N) saved for the backward;  weight (C);  eps: added to the mean square
    if N * C < PARALLEL_MIN_WORK:
        for n in range(N):
            rstd[n] = rmsnorm_row(out[n * C:(n + 1) * C], inp[n * C:(n + 1) * C], weight, eps, C)
        return
    for n in prange(N):
        rstd[n] = rmsnorm_row(out[n * C:(n + 1) * C], inp[n * C:(n + 1) * C], weight, eps, C)


@njit(**JIT)
def _rmsnorm_backward_row(dx, x, dy, weight, r, C, overwrite):
    # dx (C) += the row's input gradient (= with overwrite);  x, dy (C) the row's input and output gradient.
    # With n = x * r:  dx = r * (w * dy - n * mean(w * dy * n))
    dt = x.dtype.type
    s = dt(0)
    for c in range(C):
        s += weight[c] * dy[c] * x[c]
    k = s * r * r / dt(C)  # mean(w dy n) * r, so that n * (it) = x * k
    for c in range(C):
        v = (weight[c] * dy[c] - x[c] * k) * r
        dx[c] = v if overwrite else dx[c] + v


@njit(**JIT)
def _rmsnorm_dweight_block(dweight, dout, inp, rstd, N, C, c0, c1):
    # dweight[c0:c1] += sum over the rows of dout * inp * rstd, rows in order (the same additions for
    # any split of the channels: serial and threaded paths agree bit for bit)
    dw = dweight[c0:c1]
    for n in range(N):
        x = inp[n * C + c0:n * C + c1]
        dy = dout[n * C + c0:n * C + c1]
        r = rstd[n]
        for c in range(c1 - c0):
            dw[c] += x[c] * r * dy[c]


@njit(**PJIT)
def rmsnorm_backward(dinp, dweight, dout, inp, weight, rstd, N, C, overwrite=False):
    # dinp (N,C) += ... (= with overwrite: what it held is ignored);  dweight (C) += ...;  dout, inp (N,C);
    # weight (C);  rstd (N) from the forward.
    # dinp: rows are independent; dweight: each thread sums all rows over its own block of channels.
    if N * C < PARALLEL_MIN_WORK:
        for n in range(N):
            _rmsnorm_backward_row(dinp[n * C:(n + 1) * C], inp[n * C:(n + 1) * C], dout[n * C:(n + 1) * C],
                                  weight, rstd[n], C, overwrite)
        _rmsnorm_dweight_block(dweight, dout, inp, rstd, N, C, 0, C)
        return
    for n in prange(N):
        _rmsnorm_backward_row(dinp[n * C:(n + 1) * C], inp[n * C:(n + 1) * C], dout[n * C:(n + 1) * C],
                              weight, rstd[n], C, overwrite)
    nblk = min(ROW_BLOCKS, C)
    for blk in prange(nblk):
        _rmsnorm_dweight_block(dweight, dout, inp, rstd, N, C, blk * C // nblk, (blk + 1) * C // nblk)
