"""Fully connected layer: out = inp @ weight^T + bias, through BLAS (np.dot on 2-D views).

Legend: B batch, T time, C input channels, OC output channels.
np.dot inside a kernel calls the same sgemm/dgemm as NumPy (via SciPy's BLAS), which is 1.5x
faster than a hand-blocked Numba loop on this class of CPU. BLAS must run single-threaded
(cllm.runtime.configure_threads does it): the kernels split the rows over Numba's threads.
"""
import numba
import numpy as np
from numba import njit, prange

from ._common import PJIT

# Row blocks per matmul: one per core. A constant rather than numba.get_num_threads(), which would
# stop the kernel from being cached on disk; the block count changes only speed, never results.
ROW_BLOCKS = numba.config.NUMBA_NUM_THREADS


@njit(**PJIT)
def matmul_forward(out, inp, weight, bias, B, T, C, OC):
    # out (B,T,OC) = inp (B,T,C) @ weight (OC,C)^T + bias (OC);  bias may be None
    # The rows are split into one block per thread, each a single-threaded BLAS call: Numba's
    # threads then do all the parallel work and never fight BLAS's own pool for the cores.
    BT = B * T
    W = weight[: OC * C].reshape(OC, C)
    nblk = min(ROW_BLOCKS, BT)
    for blk in prange(nblk):
        r0 = blk * BT // nblk
        r1 = (blk + 1) * BT // nblk
        O = out[r0 * OC: r1 * OC].reshape(r1 - r0, OC)
        np.dot(inp[r0 * C: r1 * C].reshape(r1 - r0, C), W.T, O)
        if bias is not None:
            for r in range(r1 - r0):
                for j in range(OC):
                    O[r, j] += bias[j]


@njit(**PJIT)
def bias_backward(dbias, dout, BT, OC):
    # dbias (OC) += sum over rows of dout (BT,OC); parallel over blocks of columns so that
    # no two threads write the same dbias element, while each reads rows contiguously.
    BLK = 64
    nblk = (OC + BLK - 1) // BLK
    for blk in prange(nblk):
        j0 = blk * BLK
        j1 = min(j0 + BLK, OC)
        for r in range(BT):
            o = r * OC
            for j in range(j0, j1):
                dbias[j] += dout[o + j]


@njit(**PJIT)
def matmul_backward(dinp, dweight, dbias, dout, inp, weight, B, T, C, OC):
    # dinp (B,T,C) += dout (B,T,OC) @ weight (OC,C)
    # dweight (OC,C) += dout^T (OC,BT) @ inp (BT,C)
    # dbias (OC) += column sums of dout;  dinp and dbias may be None
    # BLAS overwrites its output, so each product goes to a scratch array and is then added:
    # the contract says backward kernels accumulate. Each thread takes a block of rows: for dinp
    # those rows are its own; for dweight it computes a partial sum over its rows, and the
    # partial sums are added afterwards.
    BT = B * T
    W = weight[: OC * C].reshape(OC, C)
    nblk = min(ROW_BLOCKS, BT)
    partial = np.empty((nblk, OC * C), dtype=dweight.dtype)
    for blk in prange(nblk):
        r0 = blk * BT // nblk
        r1 = (blk + 1) * BT // nblk
        n = r1 - r0
        D = dout[r0 * OC: r1 * OC].reshape(n, OC)
        X = inp[r0 * C: r1 * C].reshape(n, C)
        np.dot(D.T, X, partial[blk].reshape(OC, C))
        if dinp is not None:
            scratch = np.empty((n, C), dtype=dinp.dtype)
            np.dot(D, W, scratch)
            flat = scratch.reshape(n * C)
            o = r0 * C
            for i in range(n * C):
                dinp[o + i] += flat[i]
    for i in prange(OC * C):
        s = dweight[i]
        for blk in range(nblk):
            s += partial[blk, i]
        dweight[i] = s
    if dbias is not None:
        bias_backward(dbias, dout, BT, OC)
