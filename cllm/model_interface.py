"""The model interface: what every model object offers, on every device (docs/design.md, "The model interface").

Three classes implement `LanguageModel`:
  Model      (cllm/model.py)     float32/float64 buffers on the host, the @njit kernels; trains and decodes
  CudaModel  (cllm/device.py)    float32 buffers on a GPU, the CUDA kernels; trains and decodes
  Int8Model  (cllm/quantize.py)  int8 weight matrices on the host; decodes and scores only (trainable = False)

Model and CudaModel share each architecture's graph (cllm/model.py's GPTGraph, over a kernel set); Model and Int8Model
share the CPU decoding (cllm/model.py's HostDecoding). Every name below means the same on each:

- Results come back to the host as NumPy arrays: logits (B,T,V) (the padded vocabulary columns cut off),
  decoding logits, per-token losses, gradient norms.
- Values read out (`params_to_host`, `grads_to_host`, `moments_to_host`, `named_tensors`,
  `token_losses`) are host arrays that never write back into the model: on the CPU read-only views of
  the live buffers (no copy; they follow later updates, so copy to keep), elsewhere copies of their
  own. Values go in only through `load_params` / `load_grads`.
- `p`, `g`, `m_views`, `v_views` and `a` are the buffers where the model computes (NumPy arrays on the
  CPU, Numba device arrays on a GPU), name -> flat view, for the optimizer's kernels (cllm/optim.py)
  and for tests; writing through `p` changes the model on each device. Int8Model has none of them.
- A model that cannot train raises NotTrainableError from every training member, never a silent no-op.
"""
from __future__ import annotations

import abc

import numpy as np

from cllm.config import ModelConfig
from cllm.errors import ConfigError


class NotTrainableError(ConfigError):
    """A training member (backward, gradients, moments) asked of a model that cannot train."""


class LanguageModel(abc.ABC):
    """A GPT-2 model of `config` computing in `dtype` (see the module's docstring for the conventions).

    Attributes: config (ModelConfig), dtype (numpy dtype of parameters, activations and logits),
    shapes (name -> parameter shape, ModelConfig.param_shapes's order), trainable (bool)."""

    trainable = True

    # the training-side buffers, name -> flat view where the model computes (see the module's docstring)
    p: dict  # parameters
    g: dict  # their gradients
    m_views: dict  # AdamW first moments
    v_views: dict  # AdamW second moments
    a: dict  # activations of the last forward (ModelConfig.activation_shapes)

    def __init__(self, config: ModelConfig, dtype=np.float32):
        self.config = config
        self.dtype = np.dtype(dtype)
        self.shapes = config.param_shapes()

    # ---------------------------------------------------------------- sizes
    def num_parameters(self) -> int:
        """P, the number of parameters (the padded vocabulary rows of wte included)."""
        return self.config.num_parameters()

    @abc.abstractmethod
    def memory_bytes(self) -> int:
        """Bytes of the buffers the model holds now, on its device: weights, and those of gradients,
        moments and activations once allocated."""

    # ---------------------------------------------------------------- the whole-sequence forward
    @abc.abstractmethod
    def forward(self, idx, targets=None, *, dropout: float = 0.0, dropout_key: int = 0):
        """idx (B,T) token ids -> host logits (B,T,V) of `dtype`; with targets (B,T) -> (logits, mean
        cross-entropy loss as a float), and the per-token losses in token_losses(). A target of -1 means no loss
        at that position (PyTorch's ignore_index): the mean is over the other positions (0 if there is none).
        The logits are valid
        until the next forward (on the CPU a view of the activations): copy them to keep them.
        dropout p > 0 (training only) draws its masks from dropout_key (cllm/kernels/dropout.py);
        an implementation without dropout raises ConfigError for p > 0."""

    @abc.abstractmethod
    def loss(self, idx, targets, *, dropout: float = 0.0, dropout_key: int = 0) -> float:
        """forward(idx, targets) without bringing the logits to the host (what training and evaluation
        need: on a GPU the logits would be the largest copy of the step): the mean loss."""

    @abc.abstractmethod
    def token_losses(self) -> np.ndarray:
        """The (B,T) per-token cross-entropy losses of the last forward, on the host, 0 where the target was -1
        (RuntimeError when that forward had no targets)."""

    # ---------------------------------------------------------------- training
    @abc.abstractmethod
    def backward(self, normalizer: float | None = None) -> None:
        """Accumulate d(mean loss)/d(params) of the last forward with targets into the gradients (call
        zero_grad first for a fresh step). One backward per forward: a second raises RuntimeError.
        normalizer: differentiate (sum of the losses at targets other than -1) / normalizer instead, e.g. the
        step's mean count of such targets per micro-batch, so that micro-batches of different counts add up to
        the mean over all their tokens (cllm/training/trainer.py); 0 gives zero gradients."""

    @abc.abstractmethod
    def zero_grad(self) -> None:
        """Set every gradient to 0."""

    # ---------------------------------------------------------------- parameters and gradients
    @abc.abstractmethod
    def named_tensors(self) -> dict[str, np.ndarray]:
        """name -> the parameter as a host array of its real shape, read-only (what checkpoints write)."""

    @abc.abstractmethod
    def params_to_host(self) -> np.ndarray:
        """The (P,) parameters in ModelConfig.param_shapes's order as a host array, read-only on the CPU
        (Int8Model: the values its int8 weights stand for)."""

    @abc.abstractmethod
    def load_params(self, params) -> None:
        """Replace every parameter by `params` (P,) host values; the model computes with them from now on
        (Int8Model quantizes them)."""

    @abc.abstractmethod
    def grads_to_host(self) -> np.ndarray:
        """The (P,) gradients as a host array (read-only on the CPU)."""

    @abc.abstractmethod
    def load_grads(self, grads) -> None:
        """Replace the gradients by `grads` (P,) host values (e.g. averaged over processes)."""

    @abc.abstractmethod
    def moments_to_host(self) -> tuple[np.ndarray, np.ndarray]:
        """AdamW's moments (m, v), (P,) each, as host arrays (read-only on the CPU)."""

    # ---------------------------------------------------------------- incremental decoding
    @abc.abstractmethod
    def new_kv_cache(self, num_sequences: int = 1):
        """A zeroed KV cache for num_sequences sequences, on the model's device (a flat NumPy array on
        the CPU: per sequence and layer, gpt2: each head's keys (hs, maxT), then its values (maxT, hs); llama: the
        NKV kv heads' keys (NKV, maxT, hs), then their values; ModelConfig.kv_cache_size floats per sequence)."""

    @abc.abstractmethod
    def decode_step(self, tokens, pos: int, kv_cache) -> np.ndarray:
        """Feed tokens (nb,) at position pos (every earlier position already in kv_cache, a cache for nb
        sequences) and return the next-token logits (nb, V) on the host: forward's row pos."""

    @abc.abstractmethod
    def prefill(self, tokens, pos0: int, kv_cache) -> np.ndarray:
        """Feed one sequence's tokens (n,) at positions pos0..pos0+n-1 (the earlier ones already in
        kv_cache, a cache for one sequence) and return the logits (V,) after the last, on the host."""

    def decode_batch(self, tokens, positions, kv_cache, slots=None) -> np.ndarray:
        """One decoding step of B sequences at their own positions: tokens (B,) and positions (B,), row b the
        token at position positions[b] of the cache's sequence slots[b] (slots (B,) distinct, default 0..B-1;
        kv_cache a cache of S >= B sequences from new_kv_cache(S), each sequence's earlier positions already
        in it); the next-token logits (B, V) on the host, what B separate decode_step calls give. The weight
        matrices are read once for all B rows (decoding is bound by reading them), so serving concurrent
        requests together costs little more than one. This default runs them one at a time; Model, Int8Model
        and CudaModel batch them."""
        tokens, positions, slots = self._batch_inputs(tokens, positions, kv_cache, slots)
        n = self.config.kv_cache_size(1)
        rows = []
        for tok, pos, slot in zip(tokens, positions, slots):
            rows.append(self.decode_step(tok[None], int(pos), kv_cache[slot * n:(slot + 1) * n])[0])
        return np.stack(rows)

    # ---------------------------------------------------------------- the input checks of every implementation
    # They read config only, so bad input gives the same ConfigError on every device.
    def _check_ids(self, ids, what: str, lowest: int = 0) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.ndim == 1:
            ids = ids[None, :]
        if ids.ndim != 2 or ids.shape[1] == 0 or not np.issubdtype(ids.dtype, np.integer):
            raise ConfigError(f"{what} must be a (B,T) array of integer token ids, got shape {ids.shape}")
        V = self.config.vocab_size
        if ids.size and (ids.min() < lowest or ids.max() >= V):
            ignore = " or -1 (no loss there)" if lowest < 0 else ""
            raise ConfigError(f"{what} holds token ids outside [0, {V}){ignore}")
        return np.ascontiguousarray(ids, dtype=np.int32)

    def _check_batch(self, idx, targets) -> tuple[np.ndarray, np.ndarray | None]:
        """forward's checked inputs: idx (B,T) int32 and targets (B*T,) int32 or None. A target of -1 means no
        loss at that position (PyTorch's ignore_index; cllm/kernels/softmax.py)."""
        idx = self._check_ids(idx, "idx")
        B, T = idx.shape
        if T > self.config.max_seq_len:
            raise ConfigError(f"sequence length {T} exceeds max_seq_len {self.config.max_seq_len}")
        if targets is None:
            return idx, None
        targets = self._check_ids(targets, "targets", lowest=-1).reshape(-1)
        if targets.size != B * T:
            raise ConfigError(f"targets must have the shape of idx ({B}, {T})")
        return idx, targets

    def _decode_tokens(self, tokens, pos: int, kv_cache) -> np.ndarray:
        """decode_step's checked inputs: the token array."""
        cfg = self.config
        tokens = self._token_array(tokens)
        if not 0 <= pos < cfg.max_seq_len:
            raise ConfigError(f"position {pos} is outside the model's context of {cfg.max_seq_len}")
        if kv_cache.size != cfg.kv_cache_size(tokens.size):
            raise ConfigError("kv_cache does not match the number of sequences; use new_kv_cache(nb)")
        return tokens

    def _batch_inputs(self, tokens, positions, kv_cache, slots) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """decode_batch's checked inputs: tokens (B,) int32, positions and slots (B,) int64."""
        cfg = self.config
        tokens = self._token_array(tokens)
        B = tokens.size
        positions = np.ascontiguousarray(np.atleast_1d(positions), dtype=np.int64)
        slots = np.arange(B, dtype=np.int64) if slots is None else np.ascontiguousarray(np.atleast_1d(slots),
                                                                                       dtype=np.int64)
        if positions.shape != (B,) or slots.shape != (B,):
            raise ConfigError(f"decode_batch takes one position and one slot per token ({B} tokens)")
        if positions.min() < 0 or positions.max() >= cfg.max_seq_len:
            raise ConfigError(f"a position lies outside the model's context of {cfg.max_seq_len}")
        per_sequence = cfg.kv_cache_size(1)
        if kv_cache.size % per_sequence:
            raise ConfigError("kv_cache is not a cache of whole sequences; use new_kv_cache(num_sequences)")
        num_slots = kv_cache.size // per_sequence
        if slots.min() < 0 or slots.max() >= num_slots or np.count_nonzero(np.bincount(slots)) != B:
            raise ConfigError(f"slots must be {B} distinct sequences of the cache's {num_slots}")
        return tokens, positions, slots

    def _prefill_tokens(self, tokens, pos0: int, kv_cache) -> np.ndarray:
        """prefill's checked inputs: the token array."""
        cfg = self.config
        tokens = self._token_array(tokens)
        if pos0 < 0 or pos0 + tokens.size > cfg.max_seq_len:
            raise ConfigError(f"positions {pos0}..{pos0 + tokens.size - 1} are outside the model's context of "
                              f"{cfg.max_seq_len}")
        if kv_cache.size != cfg.kv_cache_size(1):
            raise ConfigError("prefill takes a cache for one sequence; use new_kv_cache(1)")
        return tokens

    def _token_array(self, tokens) -> np.ndarray:
        """tokens (an id or ids) as a contiguous int32 array (n,), n >= 1, every id in the vocabulary."""
        tokens = np.ascontiguousarray(np.atleast_1d(tokens), dtype=np.int32)
        if tokens.size == 0:
            raise ConfigError("no tokens to feed")
        if tokens.min() < 0 or tokens.max() >= self.config.vocab_size:
            raise ConfigError(f"token ids must lie in [0, {self.config.vocab_size})")
        return tokens


def read_only(array: np.ndarray) -> np.ndarray:
    """A read-only view of `array`: what the CPU hands out of its live buffers (writes go through load_*)."""
    view = array.view()
    view.flags.writeable = False
    return view
