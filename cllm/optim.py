"""AdamW over the model's flat buffers, with global gradient-norm clipping and a finiteness guard."""
from __future__ import annotations

import dataclasses
import math

import cllm.kernels as K
from cllm.errors import TrainingError
from cllm.model import MATRIX_PARAMS, Model


@dataclasses.dataclass
class AdamW:
    # The class's own defaults are GPT-2 / llm.c's; `cli.py train` passes its measured ones
    # (TrainConfig in cllm/training/config.py: weight decay 0, beta2 0.999, clip 5).
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1  # applied to matrices only (embeddings and weights), not to biases or gains
    grad_clip: float = 1.0  # global L2 norm; 0 disables clipping
    t: int = 0  # steps taken; the next step is t + 1

    def step(self, model: Model, lr: float | None = None, loss: float | None = None) -> float:
        """One update from model.grads; returns the gradient norm before clipping.

        Refuses (TrainingError, weights untouched) when the loss or the gradient norm is not finite:
        one NaN would otherwise spread through every weight silently."""
        lr = self.lr if lr is None else lr
        step = self.t + 1
        if loss is not None and not math.isfinite(loss):
            raise TrainingError(f"the loss is {loss} at step {step}; lower the learning rate "
                                "(--learning-rate) or raise --warmup-steps")
        norm = self.grad_norm(model)
        if not math.isfinite(norm):
            raise TrainingError(f"the gradient norm is {norm} at step {step}; lower the learning rate "
                                "(--learning-rate) or set --grad-clip")
        if self.grad_clip and norm > self.grad_clip:
            self.scale_grads(model, self.grad_clip / (norm + 1e-6))
        self.t = step
        for name in model.shapes:
            wd = self.weight_decay if name in MATRIX_PARAMS else 0.0
            self.kernels.adamw_update(model.p[name], model.g[name], model.m_views[name], model.v_views[name],
                                      lr, self.beta1, self.beta2, self.eps, wd, step)
        return norm

    # the kernels and the two whole-buffer operations; cllm/device.py's CudaAdamW runs them on a GPU
    kernels = K

    def grad_norm(self, model: Model) -> float:
        return math.sqrt(K.grad_norm_squared(model.grads))

    def scale_grads(self, model: Model, factor: float) -> None:
        K.scale_inplace(model.grads, factor)
