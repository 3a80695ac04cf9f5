"""The optimizers over the model's flat buffers, with global gradient-norm clipping and a finiteness guard:
AdamW for every parameter, or Muon for the blocks' hidden matrices and AdamW for the rest."""
from __future__ import annotations

import dataclasses
import math

import numba
import numpy as np

import cllm.kernels as K
from cllm.errors import CheckpointError, TrainingError
from cllm.kernels.muon import ns_cost, work_size
from cllm.model import MATRIX_PARAMS, Model

# the transformer blocks' hidden weight matrices, one (r, c) matrix per layer, that Muon orthogonalizes;
# the embeddings, the LM head, biases and gains stay with AdamW (as in modded-nanogpt and nanochat)
HIDDEN_MATRICES = ("qkvw", "attprojw", "fcw", "fcprojw")
MUON_STATE = "muon_momentum"  # the checkpoint's name of Muon's flat momentum (cllm/checkpoint.py)


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

    name = "adamw"  # what a checkpoint records (cllm/checkpoint.py), so a resume takes the same optimizer

    def step(self, model: Model, lr: float | None = None, loss: float | None = None) -> float:
        """One update from model.grads; returns the gradient norm before clipping.

        Refuses (TrainingError, weights untouched) when the loss or the gradient norm is not finite:
        one NaN would otherwise spread through every weight silently."""
        lr = self.lr if lr is None else lr
        norm = self.check_and_clip(model, loss)
        self.t += 1
        self.adamw(model, model.shapes, lr)
        return norm

    def check_and_clip(self, model: Model, loss: float | None) -> float:
        """The guard and the clipping of a step: the gradient norm before clipping."""
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
        return norm

    def adamw(self, model: Model, names, lr: float) -> None:
        """AdamW's update of the parameters `names`, at step self.t."""
        for name in names:
            wd = self.weight_decay if name in MATRIX_PARAMS else 0.0
            self.kernels.adamw_update(model.p[name], model.g[name], model.m_views[name], model.v_views[name],
                                      lr, self.beta1, self.beta2, self.eps, wd, self.t)

    # the state besides the model's m and v that a checkpoint keeps: AdamW has none
    def state_tensors(self, model: Model) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, tensors: dict[str, np.ndarray], model: Model) -> None:
        pass

    # the kernels and the two whole-buffer operations; cllm/device.py's CudaAdamW runs them on a GPU
    kernels = K

    def grad_norm(self, model: Model) -> float:
        return math.sqrt(K.grad_norm_squared(model.grads))

    def scale_grads(self, model: Model, factor: float) -> None:
        K.scale_inplace(model.grads, factor)


@dataclasses.dataclass
class Muon(AdamW):
    """Muon (Keller Jordan's, as in modded-nanogpt and nanochat) for HIDDEN_MATRICES, AdamW (the fields
    inherited, lr its peak rate) for the other parameters. Per layer's matrix W (r, c) and its gradient G:
    a momentum B = mu*B + G, the Nesterov U = G + mu*B, U orthogonalized by 5 Newton-Schulz steps (in
    float32 through BLAS, cllm/kernels/muon.py), W -= lr_muon * sqrt(max(1, r/c)) * O, and the decoupled
    weight decay W *= 1 - lr_muon * weight_decay. The packed matrices (gpt2's and llama's q|k|v rows,
    llama's gate|up rows) are orthogonalized whole, as modded-nanogpt and nanochat do their fused qkv."""

    muon_lr: float = 0.02  # the hidden matrices' peak rate; the schedule scales it as it scales lr
    momentum: float = 0.95
    ns_steps: int = 5

    name = "muon"

    def __post_init__(self):
        self._momentum = None  # (M) flat: the hidden matrices' momenta, in the model's parameter order
        self._plan = None  # (table, starts, work) of cllm/kernels/muon.py's muon_update, built once per model

    def step(self, model: Model, lr: float | None = None, loss: float | None = None) -> float:
        """One update from model.grads; lr is the AdamW group's rate now, and the Muon group's is
        muon_lr scaled alike (muon_lr * lr / self.lr). Returns the gradient norm before clipping."""
        lr = self.lr if lr is None else lr
        norm = self.check_and_clip(model, loss)
        self.t += 1
        self.adamw(model, [n for n in model.shapes if n not in HIDDEN_MATRICES], lr)
        muon_lr = self.muon_lr * lr / self.lr
        table, starts, work = self.plan(model)
        K.muon_update(model.params, model.grads, self.buffer(model), table, starts, work, self.momentum,
                      muon_lr, 1.0 - muon_lr * self.weight_decay, self.ns_steps)
        return norm

    def buffer(self, model: Model) -> np.ndarray:
        """The flat momentum, zeros until the first step."""
        if self._momentum is None:
            size = sum(math.prod(model.shapes[n]) for n in HIDDEN_MATRICES if n in model.shapes)
            self._momentum = np.zeros(size, dtype=model.params.dtype)
        return self._momentum

    def plan(self, model: Model):
        """The kernel's table: one row per layer's matrix, shared out among the threads so that each
        gets about the same Newton-Schulz work (largest first, each to the least loaded thread)."""
        if self._plan is not None:
            return self._plan
        offsets, offset = {}, 0
        for name, shape in model.shapes.items():  # the parameters' offsets in model.params
            offsets[name] = offset
            offset += math.prod(shape)
        rows, m0 = [], 0
        for name in (n for n in model.shapes if n in HIDDEN_MATRICES):
            L, r, c = model.shapes[name]
            for layer in range(L):
                rows.append((offsets[name] + layer * r * c, m0, r, c))
                m0 += r * c
        threads = max(1, min(numba.get_num_threads(), len(rows)))
        load, groups = [0] * threads, [[] for _ in range(threads)]
        for row in sorted(rows, key=lambda row: -ns_cost(row[2], row[3], self.ns_steps)):
            k = load.index(min(load))
            groups[k].append(row)
            load[k] += ns_cost(row[2], row[3], self.ns_steps)
        # each thread's scratch fits its largest matrix
        table, starts, work_at = [], [0], 0
        for group in groups:
            size = max((work_size(r, c) for _, _, r, c in group), default=0)
            table += [(p0, mom0, r, c, work_at) for p0, mom0, r, c in group]
            starts.append(len(table))
            work_at += size
        self._plan = (np.array(table, dtype=np.int64).reshape(-1, 5), np.array(starts, dtype=np.int64),
                      np.zeros(work_at, dtype=model.params.dtype))
        return self._plan

    def state_tensors(self, model: Model) -> dict[str, np.ndarray]:
        return {MUON_STATE: self.buffer(model)}

    def load_state(self, tensors: dict[str, np.ndarray], model: Model) -> None:
        buffer = self.buffer(model)
        saved = tensors.get(MUON_STATE)
        if saved is None or saved.shape != buffer.shape:
            raise CheckpointError(f"the checkpoint's Muon momentum ({MUON_STATE}) does not match the model "
                                  f"({buffer.size} values)")
        buffer[:] = saved
