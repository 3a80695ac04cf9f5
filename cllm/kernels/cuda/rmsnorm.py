"""RMS normalization over the channels (Llama's RMSNorm), as cllm/kernels/rmsnorm.py.

Legend: N rows (B*T), C channels. A block of ROW_THREADS threads normalizes a row at a time (the blocks
take the rows in turn): its threads stride over the channels and meet in a shared-memory sum. The weight
gradient: a thread per (chunk of rows, channel), then the chunks' partials added in order
(deterministic, no atomics), as cllm/kernels/cuda/layernorm.py.
"""
import math

from numba import cuda

from ._common import CHUNK_ROWS, F32, ROW_THREADS, THREADS, add_partials, block_sum, blocks, chunks, work_array


@cuda.jit
def _rmsnorm_forward(out, rstd, inp, weight, N, C, eps):
    buf = cuda.shared.array(ROW_THREADS, dtype=F32)
    tid = cuda.threadIdx.x
    for row in range(cuda.blockIdx.x, N, cuda.gridDim.x):
        o = row * C
        s = F32(0)
        for c in range(tid, C, ROW_THREADS):
            s += inp[o + c] * inp[o + c]
        r = F32(1) / math.sqrt(block_sum(buf, s) / F32(C) + eps)
        for c in range(tid, C, ROW_THREADS):
            out[o + c] = inp[o + c] * r * weight[c]
        if tid == 0:
            rstd[row] = r


def rmsnorm_forward(out, rstd, inp, weight, N, C, eps):
    # out, inp (N,C);  rstd (N) saved for the backward;  weight (C);  eps: added to the mean square
    _rmsnorm_forward[blocks(N, 1), ROW_THREADS](out, rstd, inp, weight, N, C, F32(eps))


@cuda.jit
def _rmsnorm_backward_rows(dinp, dout, inp, weight, rstd, N, C, overwrite):
    # dx = r * (w * dy - x * r^2 * mean(w * dy * x)) per row
    buf = cuda.shared.array(ROW_THREADS, dtype=F32)
    tid = cuda.threadIdx.x
    for row in range(cuda.blockIdx.x, N, cuda.gridDim.x):
        o = row * C
        r = rstd[row]
        s = F32(0)
        for c in range(tid, C, ROW_THREADS):
            s += weight[c] * dout[o + c] * inp[o + c]
        k = block_sum(buf, s) * r * r / F32(C)
        for c in range(tid, C, ROW_THREADS):
            v = (weight[c] * dout[o + c] - inp[o + c] * k) * r
            dinp[o + c] = v if overwrite else dinp[o + c] + v


@cuda.jit
def _rmsnorm_backward_weight(pw, dout, inp, rstd, N, C):
    # pw (chunks, C): a thread per (chunk, channel) adds its chunk's rows, in order
    nchunks = (N + CHUNK_ROWS - 1) // CHUNK_ROWS
    for e in range(cuda.grid(1), nchunks * C, cuda.gridsize(1)):
        k = e // C
        c = e % C
        dw = F32(0)
        for row in range(k * CHUNK_ROWS, min(N, (k + 1) * CHUNK_ROWS)):
            dw += inp[row * C + c] * rstd[row] * dout[row * C + c]
        pw[e] = dw


def rmsnorm_backward(dinp, dweight, dout, inp, weight, rstd, N, C, overwrite=False):
    # dinp (N,C) += ... (= with overwrite);  dweight (C) += ...;  dout, inp (N,C);  weight (C);  rstd (N)
    _rmsnorm_backward_rows[blocks(N, 1), ROW_THREADS](dinp, dout, inp, weight, rstd, N, C, overwrite)
    n = chunks(N) * C
    pw = work_array("rmsnorm dweight", n)
    _rmsnorm_backward_weight[blocks(n), THREADS](pw, dout, inp, rstd, N, C)
    add_partials(dweight, pw, C)
