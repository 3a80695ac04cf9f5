"""BLAS's gemm called from kernels, with the accumulate (beta = 1) that np.dot lacks.

Legend: m, n, k the sizes of C (m,n) = op(A) (m,k) @ op(B) (k,n).
np.dot always overwrites its output, so a backward kernel that must add (+=) into a gradient had to
write each product to a scratch array and add it, and split dweight into per-thread partial sums.
Calling gemm with beta = 1 adds in place. The function is numba_xxgemm, the entry point that
Numba's own np.dot uses (it forwards to SciPy's BLAS), so it is found by name when a cached kernel
loads, and BLAS stays single-threaded as cllm.runtime.configure_threads set it.
"""
import numpy as np
from numba import njit, types
from numba.core.types import ExternalFunction

from ._common import JIT

# int numba_xxgemm(char kind, char transa, char transb, Py_ssize_t m, n, k, void *alpha, void *a,
#                  Py_ssize_t lda, void *b, Py_ssize_t ldb, void *beta, void *c, Py_ssize_t ldc)
# (column-major, Fortran BLAS conventions; pointers passed as integers of the same width)
_xxgemm = ExternalFunction("numba_xxgemm", types.intc(
    types.int8, types.int8, types.int8, types.intp, types.intp, types.intp, types.uintp, types.uintp,
    types.intp, types.uintp, types.intp, types.uintp, types.uintp, types.intp))

NO_TRANS = np.int8(ord("N"))
TRANS = np.int8(ord("T"))


@njit(**JIT)
def gemm(transa, transb, m, n, k, alpha, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc):
    # Row-major C (m,n) = alpha op(A) op(B) + beta C, where op(X) is X (NO_TRANS) or X^T (TRANS).
    # A, B, C are 1-D arrays of one dtype, float32 or float64; each matrix starts at its offset
    # (in elements) and lda, ldb, ldc are row strides (elements), so a block of rows or of columns
    # of a larger matrix is addressed in place. beta = 0 overwrites C (NaNs in it included).
    if m == 0 or n == 0:
        return
    kind = np.int8(ord("s")) if c.itemsize == 4 else np.int8(ord("d"))
    scalars = np.empty(2, dtype=c.dtype)
    scalars[0] = alpha
    scalars[1] = beta
    sz = c.itemsize
    p = scalars.ctypes.data
    # a row-major matrix is its transpose in column-major order: C^T = op(B)^T op(A)^T
    _xxgemm(kind, transb, transa, n, m, k, p, b.ctypes.data + b_off * sz, ldb,
            a.ctypes.data + a_off * sz, lda, p + sz, c.ctypes.data + c_off * sz, ldc)
