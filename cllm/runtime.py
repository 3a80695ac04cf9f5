"""Thread setup shared by everything that runs kernels.

The kernels parallelize with Numba's threads and call BLAS (through np.dot) once per thread on a
block of rows. BLAS must therefore be single-threaded: OpenBLAS's own pool otherwise spins on the
same cores after every call and halves the speed of the next Numba parallel region (measured: a
training step of the baby GPT went from 0.65 s to 0.10 s on 2 cores).
"""
from __future__ import annotations

import os

import numba
import scipy.linalg  # noqa: F401  (loads SciPy's BLAS, the one Numba's np.dot calls)
from threadpoolctl import threadpool_limits

_configured = None


def configure_threads(num_threads: int | None = None) -> int:
    """Use num_threads Numba threads and single-threaded BLAS; returns the count. None keeps the count
    set by an earlier call (so that a Model created after `--threads N` keeps N), or all cores."""
    global _configured
    n = num_threads or _configured or numba.config.NUMBA_NUM_THREADS
    n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    if _configured != n:
        threadpool_limits(limits=1, user_api="blas")
        numba.set_num_threads(n)
        _configured = n
    return n


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
