"""Layer normalization over the channels (eps 1e-5, biased variance), as cllm/kernels/layernorm.py.

Legend: B batch, T time, C channels. A block of ROW_THREADS threads normalizes a row at a time (the
blocks take the rows in turn): its threads stride over the channels and meet in shared-memory sums.
The weight and bias gradients: a thread per (chunk of rows, channel), then the chunks' partials
added in order (deterministic, no atomics).
"""
import math

from numba import cuda

from ._common import CHUNK_ROWS, F32, ROW_THREADS, THREADS, add_partials, block_sum, blocks, chunks, work_array


@cuda.jit
def _layernorm_forward(out, mean, rstd, inp, weight, bias, BT, C):
    buf = cuda.shared.array(ROW_THREADS, dtype=F32)
    tid = cuda.threadIdx.x
    for row in range(cuda.blockIdx.x, BT, cuda.gridDim.x):
        _layernorm_row(out, mean, rstd, inp, weight, bias, buf, row, tid, C)


@cuda.jit(device=True, inline=True)
def _layernorm_row(out, mean, rstd, inp, weight, bias, buf, row, tid, C):
    o = row * C
    s = F32(0)
    for c in range(tid, C, ROW_THREADS):
        s += inp[o + c]
    m = block_sum(buf, s) / F32(C)
    s = F32(0)
    for c in range(tid, C, ROW_THREADS):
        d = inp[o + c] - m
        s += d * d
    r = F32(1) / math.sqrt(block_sum(buf, s) / F32(C) + F32(1e-5))
    for c in range(tid, C, ROW_THREADS):
        out[o + c] = (inp[o + c] - m) * r * weight[c] + bias[c]
    if tid == 0:
        mean[row] = m
        rstd[row] = r


def layernorm_forward(out, mean, rstd, inp, weight, bias, B, T, C):
    # out, inp (B,T,C);  mean, rstd (B,T) saved for the backward;  weight, bias (C)
    _layernorm_forward[blocks(B * T, 1), ROW_THREADS](out, mean, rstd, inp, weight, bias, B * T, C)


@cuda.jit
def _layernorm_backward_rows(dinp, dout, inp, weight, mean, rstd, BT, C, overwrite):
    buf = cuda.shared.array(ROW_THREADS, dtype=F32)
    tid = cuda.threadIdx.x
    for row in range(cuda.blockIdx.x, BT, cuda.gridDim.x):
        _layernorm_backward_row(dinp, dout, inp, weight, mean, rstd, buf, row, tid, C, overwrite)


@cuda.jit(device=True, inline=True)
def _layernorm_backward_row(dinp, dout, inp, weight, mean, rstd, buf, row, tid, C, overwrite):
    o = row * C
    m = mean[row]
    r = rstd[row]
    s1 = F32(0)
    s2 = F32(0)
    for c in range(tid, C, ROW_THREADS):
        dnorm = weight[c] * dout[o + c]
        s1 += dnorm
        s2 += dnorm * (inp[o + c] - m) * r
    dnorm_mean = block_sum(buf, s1) / F32(C)
    dnorm_norm_mean = block_sum(buf, s2) / F32(C)
    for c in range(tid, C, ROW_THREADS):
        norm = (inp[o + c] - m) * r
        v = (weight[c] * dout[o + c] - dnorm_mean - norm * dnorm_norm_mean) * r
        dinp[o + c] = v if overwrite else dinp[o + c] + v


@cuda.jit
def _layernorm_backward_params(pw, pb, dout, inp, mean, rstd, BT, C):
    # pw, pb (chunks, C): a thread per (chunk, channel) adds its chunk's rows, in order
    nchunks = (BT + CHUNK_ROWS - 1) // CHUNK_ROWS
    for e in range(cuda.grid(1), nchunks * C, cuda.gridsize(1)):
        k = e // C
        c = e % C
        dw = F32(0)
        db = F32(0)
        for row in range(k * CHUNK_ROWS, min(BT, (k + 1) * CHUNK_ROWS)):
            dy = dout[row * C + c]
            db += dy
            dw += (inp[row * C + c] - mean[row]) * rstd[row] * dy
        pw[e] = dw
        pb[e] = db


def layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, B, T, C, overwrite=False):
    # dinp (B,T,C) += ... (= with overwrite);  dweight, dbias (C) += ...;  dout, inp (B,T,C);  mean, rstd (B,T)
    _layernorm_backward_rows[blocks(B * T, 1), ROW_THREADS](dinp, dout, inp, weight, mean, rstd, B * T, C, overwrite)
    n = chunks(B * T) * C
    pw, pb = work_array("layernorm dweight", n), work_array("layernorm dbias", n)
    _layernorm_backward_params[blocks(n), THREADS](pw, pb, dout, inp, mean, rstd, B * T, C)
    add_partials(dweight, pw, C)
    add_partials(dbias, pb, C)
