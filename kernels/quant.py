"""int8 weights for generation: llama.cpp's Q8_0 scheme, blocks of 32 weights along each row with one
float32 scale per block (absmax / 127), and the matrix-vector product that reads them.

Why blocks and not one scale per output row: a row of a GPT's weight matrix meets every input
channel, and LayerNorm-fed inputs have a few channels whose weights run several times larger than
the rest; one scale per row would give those few the whole int8 range and round every other weight
of the row on a coarse grid. A block of 32 bounds the error by the largest weight of its own 32.
The cost is one float32 per 32 bytes (1.125 bytes a weight against float32's 4); llama.cpp stores
the scale as float16 (1.0625), which Numba's CPU target does not compute with.

Layout: a weight (OC, C) row-major, as the float model holds it, becomes q int8 (OC, C), the same
order, and scales float32 (OC, nblk), nblk = ceil(C / 32); a row's last block may be short.
"""
import numpy as np
from numba import njit, prange

from ._common import JIT, PJIT
from .matmul import ROW_BLOCKS

QBLOCK = 32  # weights per scale, as llama.cpp's Q8_0

# The float product's threshold (kernels/decode.py) counted in weights: the same work per thread.
PARALLEL_MATVEC_Q8_MIN = 1 << 20


@njit(**JIT)
def num_blocks(C):
    return (C + QBLOCK - 1) // QBLOCK


@njit(**JIT)
def quantize_q8(w, OC, C):
    # w (OC,C) float -> (q int8 (OC,C), scales float32 (OC,nblk)): each block's weights rounded to
    # the nearest multiple of its scale, absmax/127, so that the block's largest weight is +-127.
    nblk = num_blocks(C)
    q = np.empty(OC * C, dtype=np.int8)
    scales = np.empty(OC * nblk, dtype=np.float32)
    for o in range(OC):
        for k in range(nblk):
            c0 = o * C + k * QBLOCK
            c1 = o * C + min((k + 1) * QBLOCK, C)
            amax = 0.0
            for i in range(c0, c1):
                amax = max(amax, abs(np.float64(w[i])))
            d = np.float32(amax / 127.0)
            scales[o * nblk + k] = d
            inv = 1.0 / np.float64(d) if d > 0 else 0.0
            for i in range(c0, c1):
                q[i] = np.int8(min(127.0, max(-127.0, np.rint(np.float64(w[i]) * inv))))
    return q, scales


@njit(**JIT)
def dequantize_q8(out, q, scales, OC, C):
    # out (OC,C) float = q * its block's scale
    nblk = num_blocks(C)
    dt = out.dtype.type
    for o in range(OC):
        for i in range(C):
            out[o * C + i] = dt(q[o * C + i]) * dt(scales[o * nblk + i // QBLOCK])


@njit(**JIT)
def _matvec_q8_block(out, x, q, scales, bias, nb, C, OC, o0, o1):
    # out[b, o0:o1] = dequantized weight rows o0:o1 @ x[b] + bias[o0:o1], for each of the nb rows:
    # each block's int8 products summed in float32, then scaled once. One weight row at a time
    # against every sequence, as the float product, so the int8 weights are read once per step.
    nblk = num_blocks(C)
    zero = np.float32(0)
    for o in range(o0, o1):
        w = q[o * C:(o + 1) * C]
        s_row = scales[o * nblk:(o + 1) * nblk]
        for b in range(nb):
            xb = x[b * C:(b + 1) * C]
            s = zero
            for k in range(nblk):
                c0 = k * QBLOCK
                c1 = min(c0 + QBLOCK, C)
                wk = w[c0:c1]  # slices indexed from 0: with indices LLVM cannot prove non-negative
                xk = xb[c0:c1]  # (numba wraps negative ones), the loop became byte-by-byte gathers, 60x slower
                acc = zero
                for i in range(c1 - c0):
                    acc += np.float32(wk[i]) * xk[i]
                s += acc * s_row[k]
            if bias is not None:
                s += bias[o]
            out[b * OC + o] = s


@njit(**PJIT)
def _matvec_q8_parallel(out, x, q, scales, bias, nb, C, OC):
    for blk in prange(ROW_BLOCKS):
        _matvec_q8_block(out, x, q, scales, bias, nb, C, OC, blk * OC // ROW_BLOCKS, (blk + 1) * OC // ROW_BLOCKS)


@njit(**JIT)
def matvec_q8_forward(out, x, q, scales, bias, nb, C, OC):
    # out (nb,OC) float32 = x (nb,C) float32 @ W^T + bias (OC), W (OC,C) given as q int8 (OC,C) and
    # scales (OC,nblk); bias may be None. Split over output channels above the size where a
    # thread launch pays, as kernels/decode.py's matvec_forward.
    if OC * C >= PARALLEL_MATVEC_Q8_MIN and ROW_BLOCKS > 1:
        _matvec_q8_parallel(out, x, q, scales, bias, nb, C, OC)
    else:
        _matvec_q8_block(out, x, q, scales, bias, nb, C, OC, 0, OC)
