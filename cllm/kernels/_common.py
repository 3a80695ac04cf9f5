"""Shared settings for every kernel.

Legend used in every kernel module: B batch, T time (sequence), C channels (embed dim), NH heads,
hs = C/NH head size, V vocab, Vp padded vocab, L layers, OC output channels, N element count.

Every kernel takes 1-D contiguous arrays (views into the model's flat buffers) and integer sizes,
outputs first, then inputs, then sizes (llm.c's order). Forward kernels overwrite their outputs;
backward kernels ACCUMULATE (+=) into every gradient they write, except that the activation-gradient
output of a backward kernel with an `overwrite` flag is set instead when the flag is true (its first
writer in a step). docs/design.md states the whole contract.
"""
import glob
import hashlib
import os
import shutil
import sys
import time

import llvmlite
import numba

from cllm import __version__

# Numba's OpenMP threads wait passively (sleep) between parallel kernels unless the user chose
# otherwise. With libgomp's default spinning, one other busy process on the machine made every
# parallel kernel wait for a descheduled thread: training ran at 1.2k instead of 10.7k tokens/s
# with a single competing process on 2 cores. Read by libgomp when it loads, so it is set here, on
# import, before any parallel kernel runs (cllm/__init__.py does the same for the package's own
# Numba code).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Only fast-math flags that keep NaN/Inf semantics: 'nnan'/'ninf' (part of fastmath=True) would let
# LLVM assume no NaN exists, so isnan() checks and the model's non-finite loss guard would silently
# stop working.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# Common decorator keyword sets: every kernel is cached on disk so that a second process starts fast,
# and releases the GIL while it runs, so that other Python threads go on meanwhile (the server's
# event loop while a worker decodes, cllm/serve/engine.py). Numba keys its on-disk cache on each
# kernel's own source file only, not on these flags nor on the files it inlines from: the cache
# directory is therefore chosen below by a hash of everything that shapes the compiled code.
# error_model="numpy": a float division by zero gives inf or NaN, as in NumPy, instead of raising
# ZeroDivisionError. Python's model puts a zero check, a branch, before every division, and a loop
# with a branch is not vectorized: GELU's rational tanh ran 9x slower in a serial loop (4.4 against
# 0.4 ns per element). Numba's parallel loops always use NumPy's model.
JIT = dict(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy")
PJIT = dict(cache=True, fastmath=FASTMATH, parallel=True, nogil=True, error_model="numpy")

# Blocks of rows (or elements) of a parallel kernel: one per thread. A constant rather than
# numba.get_num_threads(), which would stop the kernel from being cached on disk; the block count
# changes only speed, never results.
ROW_BLOCKS = numba.config.NUMBA_NUM_THREADS

# Below this many elements of work, the small elementwise and row kernels run on the calling thread:
# with passive OpenMP threads every parallel region first wakes the team (about 35 us measured here),
# more than such a kernel takes on one core. Changes only speed, never results.
PARALLEL_MIN_WORK = 1 << 17


def numba_cache_dir() -> str:
    """cllm/kernels/__pycache__/numba-<key>: key = a hash of every Numba source file (this one with its
    flags included), the versions of CLLM, Numba, llvmlite and Python. Any change compiles anew;
    a checkout updated in place never runs a kernel compiled from older code or other flags."""
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    # all Numba code lives under cllm/kernels/ (the tokenizers' kernels and cllm/kernels/cuda too)
    sources = sorted(glob.glob(os.path.join(here, "**", "*.py"), recursive=True))
    digest = hashlib.sha256()
    for path in sources:
        digest.update(os.path.relpath(path, root).encode())
        with open(path, "rb") as f:
            digest.update(f.read())
    digest.update(f"{__version__} {numba.__version__} {llvmlite.__version__} {sys.version}".encode())
    return os.path.join(here, "__pycache__", "numba-" + digest.hexdigest()[:16])


def _use_numba_cache_dir() -> None:
    """Point Numba's cache at numba_cache_dir() (unless the user set NUMBA_CACHE_DIR) before any kernel
    is decorated, and delete the directories of older keys (each a full set of compiled kernels)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    path = numba_cache_dir()
    numba.config.CACHE_DIR = path
    parent = os.path.dirname(path)
    try:
        os.makedirs(path, exist_ok=True)
        for name in os.listdir(parent):
            old = os.path.join(parent, name)
            # unchanged for an hour: no process of the older code is still saving kernels there
            if name.startswith("numba-") and old != path and time.time() - os.path.getmtime(old) > 3600:
                shutil.rmtree(old, ignore_errors=True)
    except OSError:
        pass  # a read-only install: Numba falls back to its per-user cache


_use_numba_cache_dir()
