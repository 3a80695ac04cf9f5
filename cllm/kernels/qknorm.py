"""QK-norm (--qk-norm): each head's query and key RMS-normalized over its hs channels, no learned gain,
before the attention scores (modded-nanogpt; OLMo 2 and Gemma 3 do it with a gain).

Legend: N rows (B*T), NH query heads, NKV key/value heads, hs head size, QKV = (NH + 2 NKV) hs.
qkv (N,QKV) as the model packs it: the q heads, then the k heads, then the v heads (left alone).
Normalized in place: n = x * r, r = 1/sqrt(mean(x^2) + eps); rstd (N, NH+NKV) keeps each head's r.
The backward needs only n and r, dx = r (dn - n mean(dn n)), so the model keeps the normalized values
(in qkv, which the attention's backward reads anyway) and r (NH+NKV floats per row): no copy of the
unnormalized q and k, and nothing recomputed.
"""
import numpy as np
from numba import njit, prange

from ._common import JIT, PARALLEL_MIN_WORK, PJIT


@njit(**JIT)
def qknorm_row(qkv, rstd, NH, NKV, hs, eps):
    # one row: qkv (QKV) normalized in place per q and k head;  rstd (NH+NKV) each head's r
    dt = qkv.dtype.type
    for h in range(NH + NKV):
        x = qkv[h * hs:(h + 1) * hs]
        s = dt(0)
        for i in range(hs):
            s += x[i] * x[i]
        r = dt(1) / np.sqrt(s / dt(hs) + dt(eps))
        for i in range(hs):
            x[i] *= r
        rstd[h] = r


@njit(**JIT)
def _qknorm_backward_row(dqkv, qkv, rstd, NH, NKV, hs):
    dt = qkv.dtype.type
    for h in range(NH + NKV):
        n = qkv[h * hs:(h + 1) * hs]
        d = dqkv[h * hs:(h + 1) * hs]
        s = dt(0)
        for i in range(hs):
            s += d[i] * n[i]
        m = s / dt(hs)
        r = rstd[h]
        for i in range(hs):
            d[i] = r * (d[i] - n[i] * m)


@njit(**PJIT)
def qknorm_forward(qkv, rstd, N, NH, NKV, hs, eps):
    # qkv (N,QKV): the q and k heads normalized in place;  rstd (N, NH+NKV) saved for the backward
    QKV, H = (NH + 2 * NKV) * hs, NH + NKV
    if N * QKV < PARALLEL_MIN_WORK:
        for n in range(N):
            qknorm_row(qkv[n * QKV:(n + 1) * QKV], rstd[n * H:(n + 1) * H], NH, NKV, hs, eps)
        return
    for n in prange(N):
        qknorm_row(qkv[n * QKV:(n + 1) * QKV], rstd[n * H:(n + 1) * H], NH, NKV, hs, eps)


@njit(**PJIT)
def qknorm_backward(dqkv, qkv, rstd, N, NH, NKV, hs):
    # dqkv (N,QKV): the q and k heads' gradients, with respect to the normalized values, turned in place into
    # those with respect to the unnormalized ones (the v heads' are left as they are);  qkv (N,QKV) the
    # forward's output (normalized q and k);  rstd (N, NH+NKV) the forward's
    QKV, H = (NH + 2 * NKV) * hs, NH + NKV
    if N * QKV < PARALLEL_MIN_WORK:
        for n in range(N):
            _qknorm_backward_row(dqkv[n * QKV:(n + 1) * QKV], qkv[n * QKV:(n + 1) * QKV], rstd[n * H:(n + 1) * H],
                                 NH, NKV, hs)
        return
    for n in prange(N):
        _qknorm_backward_row(dqkv[n * QKV:(n + 1) * QKV], qkv[n * QKV:(n + 1) * QKV], rstd[n * H:(n + 1) * H],
                             NH, NKV, hs)
