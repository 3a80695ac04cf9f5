"""`train --ema-decay D`: an exponential moving average of the weights, the model the run validates and saves.

Late in a run the weights wander around a minimum with the optimizer's noise; their average over the last
few hundred steps sits nearer its centre and generalizes better than any one step's weights (Polyak
averaging; the EMA of the weights that many diffusion and language-model trainers keep). The optimizer keeps
stepping the weights it computes gradients at (the "online" weights); the average follows them:

    average += (1 - d_t) (online - average),  d_t = min(D, (1 + t) / (10 + t))  after optimizer step t

The warm-up term (TensorFlow's ExponentialMovingAverage with num_updates) keeps the first steps' random
weights from lingering in the average of a short run; from t = 9 D / (1 - D) on, d_t = D, an average over
the last ~1 / (1 - D) steps.

Where each lives (cllm/checkpoint.py): a checkpoint's model.safetensors holds the average, so that
generate, evaluate and the exports read the model that was validated; optimizer.safetensors keeps the
online weights under ONLINE_WEIGHTS, so that --resume continues the optimizer from the weights it stepped,
bit for bit.
"""
from __future__ import annotations

import contextlib

import numpy as np

import cllm.kernels as K

ONLINE_WEIGHTS = "ema_online_params"  # optimizer.safetensors' name of the weights the optimizer steps


def ema_decay_at(decay: float, step: int) -> float:
    """The decay after optimizer step `step` (from 1): D, or less in the first steps."""
    return min(decay, (1.0 + step) / (10.0 + step))


class WeightAverage:
    """The moving average (P,) of a CPU model's flat parameters."""

    def __init__(self, decay: float, start: np.ndarray):
        self.decay = decay
        self.average = np.array(start, dtype=np.float32, copy=True)

    def update(self, model, step: int) -> None:
        """Fold in the weights after optimizer step `step`."""
        K.ema_update(self.average, model.params, ema_decay_at(self.decay, step))

    @contextlib.contextmanager
    def swapped_in(self, model):
        """The model computes with the average inside the block; yields the online weights (a copy), which
        it gets back on leaving, even on an error."""
        online = np.array(model.params_to_host(), copy=True)
        model.load_params(self.average)
        try:
            yield online
        finally:
            model.load_params(online)
