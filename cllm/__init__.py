"""CLLM: a small, complete language-model system whose numerical core is Numba kernels."""

__version__ = "0.1.0"
