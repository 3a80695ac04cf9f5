"""Matrix products: a tiled Numba kernel (the portable path) or cuBLAS (cllm/kernels/cuda/cublas.py, when
nvmath-python is installed and a real GPU runs), and the fully connected layer on top of them.

Legend: B batch, T time, C input channels, OC output channels; m, n, k the sizes of
C (m,n) = op(A) (m,k) @ op(B) (k,n).
`gemm` takes cllm/kernels/blas.gemm's arguments: row-major matrices inside flat arrays, each at an
offset with a row stride, so a head's channels or a block of rows are addressed in place, and
beta = 1 adds into the output (the backward's accumulation) without a scratch copy.
"""
from numba import cuda

from . import cublas
from ._common import (
    CHUNK_ROWS,
    F32,
    MICRO,
    ROW_THREADS,
    THREADS,
    TILE_K,
    TILE_M,
    TILE_N,
    add_partials,
    block_sum,
    blocks,
    chunks,
    work_array,
)
from .elementwise import gelu_forward

# threads of a block: (TILE_N / MICRO, TILE_M / MICRO); each thread owns MICRO x MICRO outputs,
# strided by the block's width, so that neighbouring threads write neighbouring columns
_TX = TILE_N // MICRO
_TY = TILE_M // MICRO


@cuda.jit
def _gemm_tiled(transa, transb, m, n, k, alpha, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc):
    As = cuda.shared.array((TILE_K, TILE_M), dtype=F32)  # op(A)'s tile, transposed: As[p, i]
    Bs = cuda.shared.array((TILE_K, TILE_N), dtype=F32)  # op(B)'s tile: Bs[p, j]
    acc = cuda.local.array((MICRO, MICRO), dtype=F32)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tid = ty * _TX + tx
    ntn = (n + TILE_N - 1) // TILE_N
    for tile in range(cuda.blockIdx.x, ntn * ((m + TILE_M - 1) // TILE_M), cuda.gridDim.x):
        i0 = (tile // ntn) * TILE_M
        j0 = (tile % ntn) * TILE_N
        _gemm_tile(transa, transb, m, n, k, alpha, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc, As, Bs, acc,
                   tx, ty, tid, i0, j0)


@cuda.jit(device=True, inline=True)
def _gemm_tile(transa, transb, m, n, k, alpha, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc, As, Bs, acc,
               tx, ty, tid, i0, j0):
    # the (TILE_M, TILE_N) tile of C at (i0, j0); every thread of the block calls it (barriers inside)
    for r in range(MICRO):
        for s in range(MICRO):
            acc[r, s] = F32(0)
    for p0 in range(0, k, TILE_K):
        for e in range(tid, TILE_M * TILE_K, _TX * _TY):  # the tiles, zero beyond the matrices' edges
            ii = e // TILE_K
            pp = e % TILE_K
            gi = i0 + ii
            gp = p0 + pp
            va = F32(0)
            if gi < m and gp < k:
                va = a[a_off + gp * lda + gi] if transa else a[a_off + gi * lda + gp]
            As[pp, ii] = va
        for e in range(tid, TILE_N * TILE_K, _TX * _TY):
            pp = e // TILE_N
            jj = e % TILE_N
            gj = j0 + jj
            gp = p0 + pp
            vb = F32(0)
            if gj < n and gp < k:
                vb = b[b_off + gj * ldb + gp] if transb else b[b_off + gp * ldb + gj]
            Bs[pp, jj] = vb
        cuda.syncthreads()
        for pp in range(TILE_K):
            for r in range(MICRO):
                av = As[pp, ty + r * _TY]
                for s in range(MICRO):
                    acc[r, s] += av * Bs[pp, tx + s * _TX]
        cuda.syncthreads()
    for r in range(MICRO):
        i = i0 + ty + r * _TY
        for s in range(MICRO):
            j = j0 + tx + s * _TX
            if i < m and j < n:
                o = c_off + i * ldc + j
                # beta = 0 overwrites (NaN in C included), as BLAS does
                c[o] = alpha * acc[r, s] if beta == 0 else alpha * acc[r, s] + beta * c[o]


def gemm(transa, transb, m, n, k, alpha, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc):
    # Row-major C (m,n) = alpha op(A) op(B) + beta C inside the flat device arrays a, b, c (float32);
    # op(X) is X^T when trans* is true. As cllm/kernels/blas.gemm, with booleans for the transposes.
    if m == 0 or n == 0:
        return
    if cublas.available():
        cublas.gemm(transa, transb, m, n, k, alpha, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc)
        return
    tiles = ((n + TILE_N - 1) // TILE_N) * ((m + TILE_M - 1) // TILE_M)
    _gemm_tiled[blocks(tiles, 1), (_TX, _TY)](bool(transa), bool(transb), m, n, k, F32(alpha), a, a_off, lda,
                                              b, b_off, ldb, F32(beta), c, c_off, ldc)


@cuda.jit
def _bias_rows(out, bias, R, OC):
    for i in range(cuda.grid(1), R * OC, cuda.gridsize(1)):
        out[i] = bias[i % OC]


@cuda.jit
def _bias_backward(partials, dout, R, OC):
    # partials (chunks, OC): a thread per (chunk of rows, output channel) adds its rows in order
    nchunks = (R + CHUNK_ROWS - 1) // CHUNK_ROWS
    for e in range(cuda.grid(1), nchunks * OC, cuda.gridsize(1)):
        k = e // OC
        o = e % OC
        s = F32(0)
        for r in range(k * CHUNK_ROWS, min(R, (k + 1) * CHUNK_ROWS)):
            s += dout[r * OC + o]
        partials[e] = s


@cuda.jit
def _matvec(out, x, weight, bias, R, C, OC, has_bias):
    # a block per output channel o (grid stride): its threads read weight row o once, coalesced, and
    # meet in a shared-memory sum for each of the R rows of x
    buf = cuda.shared.array(ROW_THREADS, dtype=F32)
    tid = cuda.threadIdx.x
    for o in range(cuda.blockIdx.x, OC, cuda.gridDim.x):
        for r in range(R):
            s = F32(0)
            for c in range(tid, C, ROW_THREADS):
                s += weight[o * C + c] * x[r * C + c]
            s = block_sum(buf, s)
            if tid == 0:
                out[r * OC + o] = s + bias[o] if has_bias else s


# Below this many rows a linear layer is matrix-vector products (decoding): a 64-row gemm tile would
# hold one real row and its few blocks would read the weights with a fraction of the GPU
GEMM_MIN_ROWS = 8


def linear(out, x, weight, bias, R, C, OC):
    # out (R,OC) = x (R,C) @ weight (OC,C)^T + bias (OC);  bias may be None. The decoding path's layer.
    if R < GEMM_MIN_ROWS:
        _matvec[blocks(OC, 1), ROW_THREADS](out, x, weight, weight if bias is None else bias, R, C, OC,
                                            bias is not None)
    else:
        matmul_forward(out, x, weight, bias, 1, R, C, OC)


def matmul_forward(out, inp, weight, bias, B, T, C, OC):
    # out (B,T,OC) = inp (B,T,C) @ weight (OC,C)^T + bias (OC);  bias may be None
    BT = B * T
    if bias is not None:
        _bias_rows[blocks(BT * OC), THREADS](out, bias, BT, OC)
    gemm(False, True, BT, OC, C, 1.0, inp, 0, C, weight, 0, C, 0.0 if bias is None else 1.0, out, 0, OC)


def matmul_backward(dinp, dweight, dbias, dout, inp, weight, B, T, C, OC, overwrite=False):
    # dinp (B,T,C) += dout (B,T,OC) @ weight (OC,C)  (= with overwrite);  dweight (OC,C) += dout^T @ inp;
    # dbias (OC) += column sums of dout;  dinp and dbias may be None
    BT = B * T
    if dinp is not None:
        gemm(False, False, BT, C, OC, 1.0, dout, 0, OC, weight, 0, C, 0.0 if overwrite else 1.0, dinp, 0, C)
    gemm(True, False, OC, C, BT, 1.0, dout, 0, OC, inp, 0, C, 1.0, dweight, 0, C)
    if dbias is not None:
        partials = work_array("dbias", chunks(BT) * OC)
        _bias_backward[blocks(partials.size), THREADS](partials, dout, BT, OC)
        add_partials(dbias, partials, OC)


def matmul_gelu_forward(out, gelu_out, inp, weight, bias, B, T, C, OC):
    # matmul_forward, then gelu_out (B,T,OC) = gelu(out): the CPU kernel's fusion (cllm/kernels/matmul.py)
    # saves a pass over host memory; here the two kernels run one after the other
    matmul_forward(out, inp, weight, bias, B, T, C, OC)
    gelu_forward(gelu_out, out, B * T * OC)

