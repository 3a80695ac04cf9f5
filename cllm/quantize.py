"""int8 weight-only quantization for generation (`generate/serve/evaluate --quantize int8`).

The five weight matrices that a decode step reads, wte (the embedding and the tied LM head), qkvw,
attprojw, fcw and fcprojw, are stored as int8 with one float32 scale per output row (cllm/kernels/quant.py
says why rows and not llama.cpp's blocks of 32). Biases, LayerNorms and wpe stay float32: they are under 2%
of the weights and a decode step reads each of their values once. Activations and the KV cache stay
float32; the decode kernels accumulate in float32.

    model = Int8Model(float_model)     # quantized at load time: a byte a weight, not 4
    cache = model.new_kv_cache(1)
    logits = model.decode_step(token, 0, cache)

`dequantize_in_place(model)` instead rounds a float Model's matrices to the values the int8 ones stand
for: `evaluate --quantize int8` scores the quantized model with the training forward (the same
numbers as the int8 kernels up to the order of float32 sums; tests/test_quantize.py checks it).
"""
from __future__ import annotations

import math

import numpy as np

import cllm.kernels as K
from cllm.errors import ConfigError
from cllm.model import Model

SCHEMES = ("int8",)  # --quantize's values
QUANTIZED = ("wte", "qkvw", "attprojw", "fcw", "fcprojw")  # the matrices, in the decode kernels' scales order


def check_scheme(quantize: str | None, device: str = "cpu") -> None:
    """A clear error for an unknown --quantize value, or for one asked of another device than the CPU."""
    if quantize is None:
        return
    if quantize not in SCHEMES:
        raise ConfigError(f"--quantize takes {', '.join(SCHEMES)}, got {quantize!r}")
    if device != "cpu":
        raise ConfigError("--quantize runs on the CPU; drop --device or --quantize")


def _matrix(shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, columns) of a weight tensor: every dimension but the last are rows (layers stacked)."""
    return math.prod(shape[:-1]), shape[-1]


def quantize_weights(model: Model) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (q int8 (rows, cols) flat, scales float32 (rows)) for QUANTIZED."""
    if model.dtype != np.float32:
        raise ConfigError("int8 quantization takes a float32 model")
    out = {}
    for name in QUANTIZED:
        rows, cols = _matrix(model.shapes[name])
        out[name] = K.quantize_int8_rows(model.p[name], rows, cols)
    return out


def dequantize_in_place(model: Model) -> None:
    """Replace the float model's QUANTIZED matrices by their int8 values times their scales."""
    for name, (q, scales) in quantize_weights(model).items():
        rows, cols = _matrix(model.shapes[name])
        K.dequantize_int8_rows(model.p[name], q, scales, rows, cols)


class Int8Model:
    """A float32 Model's weights for generation, its matrices in int8 (see the module's docstring).

    It decodes as Model does (Model's decode_step and prefill, which pass the int8 matrices and their
    scales to cllm/kernels/decode.py) and holds no float copy of the matrices."""

    new_kv_cache = Model.new_kv_cache
    decode_step = Model.decode_step
    prefill = Model.prefill
    _decode_tokens = Model._decode_tokens
    _prefill_tokens = Model._prefill_tokens
    _token_array = Model._token_array

    def __init__(self, model: Model):
        self.config = model.config
        self.dtype = model.dtype
        self.shapes = model.shapes
        quantized = quantize_weights(model)
        # the decoding kernels' parameter order, an int8 array in place of each quantized matrix;
        # the float tensors are copies, so the float model can be freed
        self._weight_views = tuple(quantized[name][0] if name in quantized else model.p[name].copy()
                                   for name in self.shapes)
        self._scales = tuple(quantized[name][1] for name in QUANTIZED)
        self._num_parameters = model.num_parameters()

    def num_parameters(self) -> int:
        return self._num_parameters

    def weight_bytes(self) -> int:
        """Bytes of weights held (int8 matrices, their scales and the float tensors)."""
        return sum(a.nbytes for a in self._weight_views) + sum(s.nbytes for s in self._scales)
