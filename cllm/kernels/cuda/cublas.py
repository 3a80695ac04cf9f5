"""cuBLAS's sgemm through nvmath-python (NVIDIA's maintained Python bindings), when it is installed.

Why nvmath-python rather than CuPy: its `nvmath.bindings.cublas` is the C API one to one (a handle,
sgemm over raw device pointers with leading dimensions and beta), which is exactly what
cllm/kernels/cuda/matmul.gemm needs to address a head's channels or a block of rows in place and to
accumulate with beta = 1; it stands on the same cuda-bindings / cuda-pathfinder stack as numba-cuda,
so it adds no second CUDA runtime and no array library (CuPy would bring both, and its own memory
pool beside Numba's). It is optional: without it, or in the CUDA simulator, or with
CLLM_CUBLAS=0, the tiled Numba kernel runs instead.

Not exercised here: this machine has no GPU, so this path has run in no test (see the issue-19 note).
"""
import os
import threading

import numpy as np

from ._common import SIM

_OP_N, _OP_T = 0, 1  # cublasOperation_t
_state = {"checked": False, "module": None}
_local = threading.local()  # one cuBLAS handle per thread (cuBLAS's advice for threaded callers)


def available() -> bool:
    """Whether gemm goes to cuBLAS: a real GPU (not the simulator), nvmath-python importable, and
    CLLM_CUBLAS not set to 0."""
    if not _state["checked"]:
        _state["checked"] = True
        if not SIM and os.environ.get("CLLM_CUBLAS", "1") != "0":
            try:
                from nvmath.bindings import cublas as module  # noqa: PLC0415 (optional: nvmath-python)
            except ImportError:
                module = None
            _state["module"] = module
    return _state["module"] is not None


def _handle():
    handle = getattr(_local, "handle", None)
    if handle is None:
        cublas = _state["module"]
        handle = cublas.create()
        cublas.set_stream(handle, 0)  # the legacy default stream, where Numba launches its kernels
        _local.handle = handle
    return handle


def _ptr(array, offset):
    return array.__cuda_array_interface__["data"][0] + 4 * offset


def gemm(transa, transb, m, n, k, alpha, a, a_off, lda, b, b_off, ldb, beta, c, c_off, ldc):
    # Row-major C (m,n) = alpha op(A) op(B) + beta C, as cllm/kernels/cuda/matmul.gemm. cuBLAS is
    # column-major: a row-major matrix is its transpose there, so it computes C^T = op(B)^T op(A)^T.
    scalars = np.array([alpha, beta], dtype=np.float32)  # host pointer mode: read during the call
    p = scalars.ctypes.data
    _state["module"].sgemm(_handle(), _OP_T if transb else _OP_N, _OP_T if transa else _OP_N, n, m, k, p,
                           _ptr(b, b_off), ldb, _ptr(a, a_off), lda, p + 4, _ptr(c, c_off), ldc)
