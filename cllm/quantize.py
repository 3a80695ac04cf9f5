"""int8 weight-only quantization for generation (`generate/serve/evaluate --quantize int8`).

The five weight matrices that a decode step reads, wte (the embedding and the tied LM head), qkvw,
attprojw, fcw and fcprojw (and llama's untied LM head lm_head), are stored as int8 with one float32 scale
per output row (cllm/kernels/quant.py says why rows and not llama.cpp's blocks of 32). Biases, LayerNorms
(RMSNorms) and wpe stay float32: they are under 2% of the weights and a decode step reads each of their
values once. Activations and the KV cache stay
float32; the decode kernels accumulate in float32.

    model = Int8Model(float_model)     # quantized at load time: a byte a weight, not 4
    cache = model.new_kv_cache(1)
    logits = model.decode_step(token, 0, cache)

Int8Model implements cllm/model_interface.py's LanguageModel for what needs no gradients: forward (the
logits of every position, by decode steps), token_losses, named_tensors / params_to_host (the values its
int8 weights stand for) and load_params (quantized on the way in); every training member raises
NotTrainableError.

`dequantize_in_place(model)` instead rounds a float Model's matrices to the values the int8 ones stand
for: `evaluate --quantize int8` scores the quantized model with the training forward (the same
numbers as the int8 kernels up to the order of float32 sums; tests/test_quantize.py checks it).
"""
from __future__ import annotations

import math

import numpy as np

import cllm.kernels as K
from cllm.errors import ConfigError
from cllm.model import TOKEN_LOSSES_NEED_TARGETS, HostDecoding, Model, _carve, _flat_values
from cllm.model_interface import NotTrainableError

SCHEMES = ("int8",)  # --quantize's values
QUANTIZED = ("wte", "qkvw", "attprojw", "fcw", "fcprojw")  # the matrices, in the decode kernels' scales order


def quantized_names(shapes: dict) -> tuple[str, ...]:
    """The matrices quantized for a model of these parameter shapes: QUANTIZED, and llama's untied LM head
    lm_head after them (scale index 5 in cllm/kernels/decode.llama_forward_rows)."""
    return QUANTIZED + (("lm_head",) if "lm_head" in shapes else ())


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
    """name -> (q int8 (rows, cols) flat, scales float32 (rows)) for quantized_names."""
    if model.dtype != np.float32:
        raise ConfigError("int8 quantization takes a float32 model")
    return _quantize_views(model.p, model.shapes)


def _quantize_views(views: dict[str, np.ndarray], shapes: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """quantize_weights over name -> flat float32 parameter views."""
    out = {}
    for name in quantized_names(shapes):
        rows, cols = _matrix(shapes[name])
        out[name] = K.quantize_int8_rows(views[name], rows, cols)
    return out


def dequantize_in_place(model: Model) -> None:
    """Replace the float model's QUANTIZED matrices by their int8 values times their scales."""
    for name, (q, scales) in quantize_weights(model).items():
        rows, cols = _matrix(model.shapes[name])
        K.dequantize_int8_rows(model.p[name], q, scales, rows, cols)


CANNOT_TRAIN = ("an int8-quantized model (--quantize int8) cannot train: it has no gradients; train the float32 "
                "model and quantize it for generation")


class Int8Model(HostDecoding):
    """A float32 Model's weights for generation, its matrices in int8 (see the module's docstring).

    It decodes as Model does (HostDecoding's decode_step and prefill, which pass the int8 matrices and their
    scales to cllm/kernels/decode.py) and holds no float copy of the matrices."""

    trainable = False

    def __init__(self, model: Model):
        super().__init__(model.config, model.dtype)
        self._load(model.p)
        self._losses = None  # (B,T) losses of the last forward with targets

    def _load(self, views: dict[str, np.ndarray]) -> None:
        """Quantize name -> flat float32 views into the decoding kernels' weights."""
        quantized = _quantize_views(views, self.shapes)
        # the decoding kernels' parameter order, an int8 array in place of each quantized matrix;
        # the float tensors are copies, so the float model can be freed
        self._weight_views = tuple(quantized[name][0] if name in quantized else views[name].copy()
                                   for name in self.shapes)
        self._scales = tuple(quantized[name][1] for name in quantized_names(self.shapes))

    def memory_bytes(self) -> int:
        """Bytes of weights held (int8 matrices, their scales and the float tensors)."""
        return sum(a.nbytes for a in self._weight_views) + sum(s.nbytes for s in self._scales)

    # ---------------------------------------------------------------- parameters: dequantized out, quantized in
    def params_to_host(self) -> np.ndarray:
        out = np.empty(self.num_parameters(), dtype=np.float32)
        views = _carve(out, self.shapes)
        scales = dict(zip(quantized_names(self.shapes), self._scales))
        for name, weights in zip(self.shapes, self._weight_views):
            if name in scales:
                K.dequantize_int8_rows(views[name], weights, scales[name], *_matrix(self.shapes[name]))
            else:
                views[name][:] = weights
        return out

    def named_tensors(self) -> dict[str, np.ndarray]:
        host = _carve(self.params_to_host(), self.shapes)
        return {name: host[name].reshape(shape) for name, shape in self.shapes.items()}

    def load_params(self, params) -> None:
        values = np.ascontiguousarray(_flat_values(params, self.num_parameters(), "params"), dtype=np.float32)
        self._load(_carve(values, self.shapes))

    # ---------------------------------------------------------------- the whole-sequence forward, by decode steps
    def forward(self, idx, targets=None, *, dropout: float = 0.0, dropout_key: int = 0):
        """LanguageModel.forward with the int8 decoding kernels: position t's logits are decode step t's
        (O(T^2) attention in all, as the training forward). No dropout: it is for training."""
        if dropout:
            raise NotTrainableError(CANNOT_TRAIN)
        idx, targets = self._check_batch(idx, targets)
        B, T = idx.shape
        cache = self.new_kv_cache(B)
        logits = np.stack([self.decode_step(idx[:, t], t, cache) for t in range(T)], axis=1)  # (B,T,V)
        if targets is None:
            self._losses = None
            return logits
        # cross-entropy in float64 on the host: log-sum-exp minus the target's logit
        z = logits.reshape(B * T, -1).astype(np.float64)
        top = z.max(axis=1)
        lse = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
        scored = targets >= 0  # -1: no loss there (cllm/model_interface.py's forward)
        losses = np.zeros(B * T)
        losses[scored] = lse[scored] - z[scored, targets[scored]]
        self._losses = losses.astype(self.dtype).reshape(B, T)
        count = int(np.count_nonzero(scored))
        return logits, float(np.sum(self._losses, dtype=np.float64) / count) if count else 0.0

    def loss(self, idx, targets, *, dropout: float = 0.0, dropout_key: int = 0) -> float:
        return self.forward(idx, targets, dropout=dropout, dropout_key=dropout_key)[1]

    def token_losses(self) -> np.ndarray:
        if self._losses is None:
            raise RuntimeError(TOKEN_LOSSES_NEED_TARGETS)
        return self._losses.copy()

    # ---------------------------------------------------------------- training: one clear error for each
    def backward(self, normalizer: float | None = None) -> None:
        raise NotTrainableError(CANNOT_TRAIN)

    def zero_grad(self) -> None:
        raise NotTrainableError(CANNOT_TRAIN)

    def grads_to_host(self) -> np.ndarray:
        raise NotTrainableError(CANNOT_TRAIN)

    def load_grads(self, grads) -> None:
        raise NotTrainableError(CANNOT_TRAIN)

    def moments_to_host(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotTrainableError(CANNOT_TRAIN)
