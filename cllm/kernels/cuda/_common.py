"""Shared settings of the CUDA kernels (Numba's CUDA target, the `numba-cuda` package).

Legend as in cllm/kernels/_common.py: B batch, T time, C channels, NH heads, hs = C/NH, V vocab,
Vp padded vocab, OC output channels, N element count.

Every kernel works on the same flat float32 buffers, in the same layouts, as the CPU kernels in
cllm/kernels/; here they are device arrays (or views of them). Launchers take the CPU kernel's
arguments, outputs first, and enqueue on the default stream: nothing is copied to or from the
host. Forward launchers overwrite their outputs; backward launchers add (+=) unless `overwrite`.

Block sizes: with NUMBA_ENABLE_CUDASIM=1 (Numba's CUDA simulator, which runs every GPU thread as
a Python thread, and which CI uses) blocks are tiny, so that a test's kernels run in seconds;
kernels loop with the block's stride, so any block size gives the same results, and the tests'
odd sizes leave blocks partly filled either way.
"""
import sys
import threading

import numpy as np
from numba import cuda
from numba.cuda import config as _config

SIM = bool(_config.ENABLE_CUDASIM)

_SHARED_LOCK = threading.Lock()


def _simulated_shared_array(self, shape, dtype, alignment=None):
    # numba-cuda's simulator finds a block's shared array by the calling line with an unlocked
    # get-then-set, so two threads of a block could each create their own "shared" array: a tiled gemm
    # then read another thread's empty tile, a row reduction summed uninitialized floats (wrong results,
    # or a math domain error, about once in 50 launches). The same lookup under a lock, keyed on the
    # caller's file and line as the simulator keys it. Static shapes only (no kernel here uses dynamic
    # shared memory).
    assert shape != 0 and alignment is None
    frame = sys._getframe(1)
    key = (frame.f_code.co_filename, frame.f_lineno)
    with _SHARED_LOCK:
        array = self._allocations.get(key)
        if array is None:
            array = self._allocations[key] = np.empty(shape, dtype)
    return array


if SIM:  # every simulated run of these kernels (tests, bench/gpu.py --smoke, a user's) gets the fix
    from numba.cuda.simulator import kernelapi

    kernelapi.FakeCUDAShared.array = _simulated_shared_array

# threads per block of the elementwise kernels, and of the row kernels (one block per row:
# layernorm, softmax, decode attention); the row kernels' shared-memory reductions need a power of two
THREADS = 4 if SIM else 256
ROW_THREADS = 4 if SIM else 128
# the tiled matrix product (cllm/kernels/cuda/matmul.py): a block computes a (TILE_M, TILE_N) tile of C,
# each thread a (MICRO, MICRO) part of it; TILE_K columns of op(A) per shared-memory stage
MICRO = 4
TILE_M = 64 if not SIM else 8
TILE_N = 64 if not SIM else 8
TILE_K = 16 if not SIM else 4
# the most blocks a launch uses: every kernel loops with the grid's stride (over elements, rows or
# tiles), so fewer blocks only means more iterations each; the simulator pays per block
MAX_BLOCKS = 2 if SIM else 65535
# column sums over many rows (weight and bias gradients): a thread adds CHUNK_ROWS rows of one column
# into a partial, a second pass adds the partials in order (deterministic, no atomics; one thread per
# column over all B*T rows left most of the GPU idle)
CHUNK_ROWS = 4 if SIM else 128
# attention: query rows per block (the grid is (row blocks, B*NH))
ATT_ROWS = 4 if SIM else 64

F32 = np.float32


def blocks(n: int, threads: int = THREADS) -> int:
    """Blocks of `threads` threads that cover n items (at least 1, so that a launch is never empty)."""
    return min(MAX_BLOCKS, max(1, (n + threads - 1) // threads))


@cuda.jit(device=True, inline=True)
def block_reduce(buf, v, take_max):
    # the sum (or with take_max the maximum) of v over the block's ROW_THREADS threads (1-D block),
    # returned to every thread; buf: a shared array (ROW_THREADS,) of v's dtype. A tree in shared
    # memory (the simulator has no warp shuffles); every thread of the block must call it.
    tid = cuda.threadIdx.x
    buf[tid] = v
    cuda.syncthreads()
    s = ROW_THREADS // 2
    while s > 0:
        if tid < s:
            buf[tid] = max(buf[tid], buf[tid + s]) if take_max else buf[tid] + buf[tid + s]
        cuda.syncthreads()
        s //= 2
    total = buf[0]
    cuda.syncthreads()  # buf may be reused right after
    return total


@cuda.jit(device=True, inline=True)
def block_sum(buf, v):
    return block_reduce(buf, v, False)


@cuda.jit(device=True, inline=True)
def block_max(buf, v):
    return block_reduce(buf, v, True)


@cuda.jit
def _add_partials(out, partials, nchunks, C):
    # out (C) += the sum over k of partials (nchunks, C), in order of k
    for c in range(cuda.grid(1), C, cuda.gridsize(1)):
        acc = F32(0)
        for k in range(nchunks):
            acc += partials[k * C + c]
        out[c] += acc


def chunks(R: int) -> int:
    """How many CHUNK_ROWS-row chunks cover R rows."""
    return max(1, (R + CHUNK_ROWS - 1) // CHUNK_ROWS)


_WORK = {}  # (tag, size) -> device array: see work_array


def work_array(tag: str, n: int):
    """A float32 device work array of n elements, made once per (tag, n) and reused by every later
    launch (kernels on the one stream run in order). Allocating per call made Numba free device
    memory every few steps, and a cuMemFree waits for the whole device."""
    key = (tag, n)
    if key not in _WORK:
        _WORK[key] = cuda.device_array(n, F32)
    return _WORK[key]


def add_partials(out, partials, C):
    # out (C) += column sums of partials (chunks, C)
    _add_partials[blocks(C), THREADS](out, partials, partials.size // C, C)
