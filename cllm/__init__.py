"""CLLM: a small, complete language-model system whose numerical core is Numba kernels."""

import os

__version__ = "0.1.0"

# Numba's OpenMP threads sleep between parallel kernels unless the user chose otherwise: spinning
# threads made every kernel wait on a busy machine (see cllm/kernels/_common.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
