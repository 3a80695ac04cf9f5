"""Fully connected layer: out = inp @ weight^T + bias, through BLAS's gemm (cllm/kernels/blas.py).

Legend: B batch, T time, C input channels, OC output channels.
BLAS's sgemm (SciPy's, the one np.dot calls inside Numba code) is 1.5x faster than a hand-blocked
Numba loop on this class of CPU. BLAS must run single-threaded (cllm.runtime.configure_threads does
it): the kernels split the rows over Numba's threads.
"""
from numba import njit, prange

from ._common import JIT, PJIT, ROW_BLOCKS
from .blas import NO_TRANS, TRANS, gemm
from .gelu import gelu_span

# From this many weights on (1.2 MB in float32) a matrix-vector product (cllm/kernels/decode.py, float32
# or int8: cllm/kernels/quant.py) is split over the threads. Below it, waking the sleeping thread team
# (OMP_WAIT_POLICY=PASSIVE, cllm/__init__.py) costs more than the second core saves. Measured on the
# Intel Xeon 2-core machine, one product timed alone, parallel / serial time: 2.5 at 65k weights, 1.09
# at 262k, 0.61 at 332k, 0.54-0.59 from 553k to 1.77M (int8: 1.33, 0.67, 0.59-0.86). A SmolLM2-135M
# layer's four products (332k to 1.77M weights) all split from here: batch-1 decoding 25 -> 31 tokens/s.
PARALLEL_MATVEC_MIN = 300_000


@njit(**JIT)
def linear_rows(out, inp, weight, bias, C, OC, r0, r1):
    # rows r0..r1-1 of out (BT,OC) = inp (BT,C) @ weight (OC,C)^T + bias (OC), one single-threaded
    # BLAS call; bias may be None. The bias is written first and gemm adds the product to it.
    beta = 0  # an int: the float32 kernel keeps no float64 variable
    if bias is not None:
        O = out[r0 * OC: r1 * OC].reshape(r1 - r0, OC)
        for r in range(r1 - r0):
            O[r] = bias[:OC]
        beta = 1
    gemm(NO_TRANS, TRANS, r1 - r0, OC, C, 1, inp, r0 * C, C, weight, 0, C, beta, out, r0 * OC, OC)


@njit(**PJIT)
def matmul_forward(out, inp, weight, bias, B, T, C, OC):
    # out (B,T,OC) = inp (B,T,C) @ weight (OC,C)^T + bias (OC);  bias may be None
    # The rows are split into one block per thread, each a single-threaded BLAS call: Numba's
    # threads then do all the parallel work and never fight BLAS's own pool for the cores.
    BT = B * T
    nblk = min(ROW_BLOCKS, BT)
    for blk in prange(nblk):
        linear_rows(out, inp, weight, bias, C, OC, blk * BT // nblk, (blk + 1) * BT // nblk)


@njit(**PJIT)
def matmul_gelu_forward(out, gelu_out, inp, weight, bias, B, T, C, OC):
    # matmul_forward, then gelu_out (B,T,OC) = gelu(out) (the MLP's first layer): each thread applies
    # the GELU to its block of rows right after their product, in the same parallel region.
    # (Smaller pieces, to find them in L2, cost more than they save: each gemm call packs the whole
    # weight matrix again, 1 MB at the medium config, measured 50% slower with pieces of 128 rows.)
    BT = B * T
    nblk = min(ROW_BLOCKS, BT)
    for blk in prange(nblk):
        r0 = blk * BT // nblk
        r1 = (blk + 1) * BT // nblk
        linear_rows(out, inp, weight, bias, C, OC, r0, r1)
        gelu_span(gelu_out[r0 * OC:r1 * OC], out[r0 * OC:r1 * OC])


@njit(**JIT)
def bias_backward_block(dbias, dout, BT, OC, o0, o1):
    # dbias[o0:o1] += column sums of dout (BT,OC) over its columns o0:o1, reading rows contiguously
    acc = dbias[o0:o1]
    for r in range(BT):
        row = dout[r * OC + o0: r * OC + o1]
        for j in range(o1 - o0):
            acc[j] += row[j]


@njit(**PJIT)
def matmul_backward(dinp, dweight, dbias, dout, inp, weight, B, T, C, OC, overwrite=False):
    # dinp (B,T,C) += dout (B,T,OC) @ weight (OC,C)  (= with overwrite: what dinp held is ignored)
    # dweight (OC,C) += dout^T (OC,BT) @ inp (BT,C)
    # dbias (OC) += column sums of dout;  dinp and dbias may be None
    # gemm with beta = 1 adds straight into the gradients. Each thread takes a block of rows of
    # dinp and a block of rows (output channels) of dweight and dbias, so no two threads write the
    # same element; a dweight block reads its columns of dout in place (row stride OC).
    BT = B * T
    beta = 0 if overwrite else 1  # for dinp; dweight and dbias always accumulate
    for blk in prange(ROW_BLOCKS):
        r0 = blk * BT // ROW_BLOCKS
        r1 = (blk + 1) * BT // ROW_BLOCKS
        if dinp is not None:
            gemm(NO_TRANS, NO_TRANS, r1 - r0, C, OC, 1, dout, r0 * OC, OC, weight, 0, C, beta, dinp, r0 * C, C)
        o0 = blk * OC // ROW_BLOCKS
        o1 = (blk + 1) * OC // ROW_BLOCKS
        gemm(TRANS, NO_TRANS, o1 - o0, C, BT, 1, dout, o0, OC, inp, 0, C, 1, dweight, o0 * C, C)
        if dbias is not None:  # the same block of output channels (one parallel region in all)
            bias_backward_block(dbias, dout, BT, OC, o0, o1)
