"""Shared settings for every kernel.

Legend used in every kernel module: B batch, T time (sequence), C channels (embed dim), NH heads,
hs = C/NH head size, V vocab, Vp padded vocab, L layers, OC output channels, N element count.

Every kernel takes 1-D contiguous arrays (views into the model's flat buffers) and integer sizes,
outputs first, then inputs, then sizes (llm.c's order). Forward kernels overwrite their outputs;
backward kernels ACCUMULATE (+=) into every gradient they write.
"""
import os

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
# event loop while a worker decodes, cllm/serve/engine.py). Numba's on-disk cache is keyed on the
# kernel's own source file, not on these flags: after changing them, delete kernels/__pycache__.
JIT = dict(cache=True, fastmath=FASTMATH, nogil=True)
PJIT = dict(cache=True, fastmath=FASTMATH, parallel=True, nogil=True)

# Below this many elements of work, the small elementwise and row kernels run on the calling thread:
# with passive OpenMP threads every parallel region first wakes the team (about 35 us measured here),
# more than such a kernel takes on one core. Changes only speed, never results.
PARALLEL_MIN_WORK = 1 << 17
