"""The README's Shakespeare run, trained twice from one start: by CLLM and by PyTorch.

Both get the same initial weights (CLLM's Model(seed)), the same batches (CLLM's BatchSampler), the
same learning-rate schedule and AdamW settings, and are scored on the whole validation split at
every evaluation step. If the two engines compute the same training, the validation losses agree to
float32 round-off grown over 2,000 steps; a systematic gap would show up here, where seed-to-seed
noise cannot hide it. torch is not a CLLM dependency: `.venv/bin/pip install torch==2.13.0`, then
  .venv/bin/python bench/shakespeare_parity.py [--steps 2000] [--seed 1337] [--smoke]
Prints one JSON line per evaluation, keys: bench, smoke, step, cllm_val, torch_val, diff, train_loss_diff,
max_weight_diff, cllm_s, torch_s. Without torch CLLM trains alone: the torch keys are null and not_run.torch
says why.
  --smoke: 4 steps, evaluated after 2 and 4 on the validation split's first 4,000 tokens, the dataset
  prepared in a temporary directory
"""

import argparse
import json
import math
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import SMOKE_HELP, missing  # noqa: E402

NO_TORCH = missing("torch", "interop")
if not NO_TORCH:
    import torch  # noqa: E402  (optional; before CLLM: its OpenMP runtime first)
    import torch.nn.functional as F  # noqa: E402

from cllm.config import ModelConfig  # noqa: E402
from cllm.model import MATRIX_PARAMS, Model  # noqa: E402
from cllm.optim import AdamW  # noqa: E402
from cllm.runtime import configure_threads  # noqa: E402
from cllm.training import BatchSampler, TrainConfig, evaluate_tokens, load_dataset, lr_at  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from step import torch_model  # noqa: E402  (the same PyTorch GPT the speed benchmark runs)


def torch_loss(forward, cfg, x, y):
    """Mean cross-entropy of bench/step.py's PyTorch GPT (docs/design.md's model) on a batch."""
    return F.cross_entropy(forward(x).reshape(-1, cfg.vocab_size), y.reshape(-1))


def torch_val(forward, cfg, tokens, B, T):
    """evaluate_tokens's windows (every non-overlapping window of T+1 tokens), in PyTorch."""
    n = (len(tokens) - 1) // T
    total = 0.0
    with torch.no_grad():
        for first in range(0, n, B):
            idx = range(first, min(first + B, n))
            w = torch.from_numpy(np.stack([np.asarray(tokens[i * T : i * T + T + 1], dtype=np.int64) for i in idx]))
            total += float(torch_loss(forward, cfg, w[:, :-1], w[:, 1:])) * len(idx)
    return total / n


def main():
    shared = os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=shared if os.path.exists(shared) else os.path.join(ROOT, "data",
                                                                                          "tinyshakespeare.txt"))
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--eval-interval", type=int, default=250)
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    if args.smoke:
        args.steps, args.eval_interval = 4, 2
        with tempfile.TemporaryDirectory(prefix="cllm-bench-parity-") as tmp:
            return run(args, tmp)
    return run(args, os.path.join(ROOT, "checkpoints", "shakespeare-parity"))


def run(args, checkpoint_dir: str) -> None:
    """Trains both engines side by side; checkpoint_dir holds the prepared dataset."""
    if not NO_TORCH:
        torch.set_num_threads(2)
    configure_threads(2)
    tc = TrainConfig(
        data=args.data,
        tokenizer="char",
        max_steps=args.steps,
        seed=args.seed,
        progress=False,
        checkpoint_dir=checkpoint_dir,
    )
    tokenizer, train_tokens, val_tokens, _ = load_dataset(tc)
    if args.smoke:
        val_tokens = val_tokens[:4000]
    B, T = tc.batch_size, 64
    cfg = ModelConfig(vocab_size=tokenizer.vocab_size, max_seq_len=T, num_layers=4, num_heads=4, embed_dim=128)
    model = Model(cfg, seed=args.seed)
    opt = AdamW(
        lr=tc.learning_rate, beta1=tc.beta1, beta2=tc.beta2, weight_decay=tc.weight_decay, grad_clip=tc.grad_clip
    )
    twin = TorchTwin(cfg, model, tc) if not NO_TORCH else None
    sampler = BatchSampler(train_tokens, B, T, args.seed)
    t_cllm = t_torch = 0.0
    for step in range(args.steps):
        x, y = sampler.next()
        lr = lr_at(step, tc, args.steps)
        t = time.perf_counter()
        model.zero_grad()
        _, loss = model.forward(x, y)
        model.backward()
        opt.step(model, lr, loss)
        t_cllm += time.perf_counter() - t
        if twin is not None:
            t = time.perf_counter()
            torch_train_loss = twin.step(x, y, lr)
            t_torch += time.perf_counter() - t
        if (step + 1) % args.eval_interval == 0 or step + 1 == args.steps:
            cv = evaluate_tokens(model, val_tokens, B, T)
            row = {"bench": "shakespeare_parity", "smoke": args.smoke, "step": step + 1, "cllm_val": round(cv, 5),
                   "cllm_s": round(t_cllm, 1)}
            if twin is not None:
                tv = twin.val(val_tokens, B, T)
                row.update({"torch_val": round(tv, 5), "diff": round(cv - tv, 5),
                            "train_loss_diff": round(loss - torch_train_loss, 6),
                            "max_weight_diff": twin.max_weight_diff(model), "torch_s": round(t_torch, 1)})
            else:
                row.update(dict.fromkeys(("torch_val", "diff", "train_loss_diff", "max_weight_diff", "torch_s")))
                row["not_run"] = {"torch": NO_TORCH}
            print(json.dumps(row), flush=True)
            if not math.isfinite(cv):
                break


class TorchTwin:
    """bench/step.py's PyTorch GPT, started from CLLM's model's weights, with torch's AdamW set as CLLM's."""

    def __init__(self, cfg, model, tc):
        self.cfg, self.clip = cfg, tc.grad_clip
        self.P, self.forward, _, _ = torch_model(torch, cfg)
        with torch.no_grad():  # the same starting weights as CLLM's
            for name, shape in model.shapes.items():
                self.P[name].copy_(torch.from_numpy(np.array(model.p[name]).reshape(shape)))
        P = self.P
        self.opt = torch.optim.AdamW(
            [
                {"params": [P[n] for n in P if n in MATRIX_PARAMS], "weight_decay": tc.weight_decay},
                {"params": [P[n] for n in P if n not in MATRIX_PARAMS], "weight_decay": 0.0},
            ],
            lr=tc.learning_rate,
            betas=(tc.beta1, tc.beta2),
            eps=1e-8,
        )

    def step(self, x, y, lr) -> float:
        """One training step on the batch (x, y) of shape (B, T); returns its loss."""
        for g in self.opt.param_groups:
            g["lr"] = lr
        loss = torch_loss(self.forward, self.cfg, torch.from_numpy(x.astype(np.int64)),
                          torch.from_numpy(y.astype(np.int64)))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip > 0:  # 0: no clipping, as in CLLM's AdamW
            torch.nn.utils.clip_grad_norm_(list(self.P.values()), self.clip)
        self.opt.step()
        return float(loss.detach())

    def val(self, tokens, B, T) -> float:
        return torch_val(self.forward, self.cfg, tokens, B, T)

    def max_weight_diff(self, model) -> float:
        return max(float(np.max(np.abs(np.array(model.p[n]).reshape(s) - self.P[n].detach().numpy())))
                   for n, s in model.shapes.items())


if __name__ == "__main__":
    main()
