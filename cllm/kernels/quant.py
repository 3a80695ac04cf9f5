"""int8 weights for generation: one float32 scale per output row (absmax / 127), and the
matrix-vector product that reads them.

Why one scale per row and not llama.cpp's Q8_0 (a scale per block of 32 weights): a block's
products must be summed to one number before its scale multiplies them, and in a Numba loop that is
a horizontal sum of the vector registers every 32 weights. Measured on this machine, single thread,
a (768, 256) matrix: Q8_0 blocks 23 us, float32 14 us, int8 with one scale per row 8 us. With a
scale per row the sum of a row runs in vector lanes to the end, as the float32 product's does,
and the weights are a quarter of the bytes. The cost is precision: each row's grid is set by its
largest weight (the error of a weight is at most absmax/254); tests/test_quantize.py and the
README measure what that does to the loss.

Layout: a weight (OC, C) row-major, as the float model holds it, becomes q int8 (OC, C), the same
order, and scales float32 (OC).
"""
import numpy as np
from numba import njit, prange

from ._common import JIT, PJIT
from .matmul import PARALLEL_MATVEC_MIN, ROW_BLOCKS


@njit(**JIT)
def quantize_int8_rows(w, OC, C):
    # w (OC,C) float -> (q int8 (OC,C), scales float32 (OC)): each row's weights rounded to the
    # nearest multiple of its scale, absmax/127, so that the row's largest weight is +-127.
    q = np.empty(OC * C, dtype=np.int8)
    scales = np.empty(OC, dtype=np.float32)
    for o in range(OC):
        row = w[o * C:(o + 1) * C]
        amax = 0.0
        for i in range(C):
            amax = max(amax, abs(np.float64(row[i])))
        d = np.float32(amax / 127.0)
        scales[o] = d
        inv = 1.0 / np.float64(d) if d > 0 else 0.0
        for i in range(C):
            q[o * C + i] = np.int8(min(127.0, max(-127.0, np.rint(np.float64(row[i]) * inv))))
    return q, scales


@njit(**JIT)
def dequantize_int8_rows(out, q, scales, OC, C):
    # out (OC,C) float = q * its row's scale
    dt = out.dtype.type
    for o in range(OC):
        d = dt(scales[o])
        for i in range(C):
            out[o * C + i] = dt(q[o * C + i]) * d


@njit(**JIT)
def _matvec_int8_block(out, x, q, scales, bias, nb, C, OC, o0, o1):
    # out[b, o0:o1] = dequantized weight rows o0:o1 @ x[b] + bias[o0:o1], for each of the nb rows:
    # a row's int8 products summed in float32, then scaled once. One weight row at a time against
    # every sequence, as the float product, so the int8 weights are read once per step.
    zero = np.float32(0)
    for o in range(o0, o1):
        w = q[o * C:(o + 1) * C]
        for b in range(nb):
            xb = x[b * C:(b + 1) * C]
            s = zero
            for c in range(C):  # indices from 0: LLVM vectorizes (vpmovsxbd, vcvtdq2ps, vfmadd)
                s += np.float32(w[c]) * xb[c]
            s *= scales[o]
            if bias is not None:
                s += bias[o]
            out[b * OC + o] = s


@njit(**PJIT)
def _matvec_int8_parallel(out, x, q, scales, bias, nb, C, OC):
    for blk in prange(ROW_BLOCKS):
        _matvec_int8_block(out, x, q, scales, bias, nb, C, OC, blk * OC // ROW_BLOCKS, (blk + 1) * OC // ROW_BLOCKS)


@njit(**JIT)
def matvec_int8_forward(out, x, q, scales, bias, nb, C, OC):
    # out (nb,OC) float32 = x (nb,C) float32 @ W^T + bias (OC), W (OC,C) given as q int8 (OC,C) and
    # scales (OC); bias may be None. Split over output channels above the size where a thread
    # launch pays, as cllm/kernels/decode.py's matvec_forward.
    if OC * C >= PARALLEL_MATVEC_MIN and ROW_BLOCKS > 1:
        _matvec_int8_parallel(out, x, q, scales, bias, nb, C, OC)
    else:
        _matvec_int8_block(out, x, q, scales, bias, nb, C, OC, 0, OC)
