"""The README's Shakespeare run, trained twice from one start: by CLLM and by PyTorch.

Both get the same initial weights (CLLM's Model(seed)), the same batches (CLLM's BatchSampler), the
same learning-rate schedule and AdamW settings, and are scored on the whole validation split at
every evaluation step. If the two engines compute the same training, the validation losses agree to
float32 round-off grown over 2,000 steps; a systematic gap would show up here, where seed-to-seed
noise cannot hide it. torch is not a CLLM dependency: `.venv/bin/pip install torch==2.13.0`, then
  .venv/bin/python bench/shakespeare_parity.py [--steps 2000] [--seed 1337]
Prints one JSON line per evaluation.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch  # noqa: I001  (before CLLM: its OpenMP runtime first)
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

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
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt"))
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--eval-interval", type=int, default=250)
    args = ap.parse_args()
    torch.set_num_threads(2)
    configure_threads(2)
    tc = TrainConfig(
        data=args.data,
        tokenizer="char",
        max_steps=args.steps,
        seed=args.seed,
        progress=False,
        checkpoint_dir=os.path.join(ROOT, "checkpoints", "shakespeare-parity"),
    )
    tokenizer, train_tokens, val_tokens, _ = load_dataset(tc)
    B, T = tc.batch_size, 64
    cfg = ModelConfig(vocab_size=tokenizer.vocab_size, max_seq_len=T, num_layers=4, num_heads=4, embed_dim=128)
    model = Model(cfg, seed=args.seed)
    opt = AdamW(
        lr=tc.learning_rate, beta1=tc.beta1, beta2=tc.beta2, weight_decay=tc.weight_decay, grad_clip=tc.grad_clip
    )
    P, forward, _, _ = torch_model(torch, cfg)
    with torch.no_grad():  # the same starting weights as CLLM's
        for name, shape in model.shapes.items():
            P[name].copy_(torch.from_numpy(np.array(model.p[name]).reshape(shape)))
    topt = torch.optim.AdamW(
        [
            {"params": [P[n] for n in P if n in MATRIX_PARAMS], "weight_decay": tc.weight_decay},
            {"params": [P[n] for n in P if n not in MATRIX_PARAMS], "weight_decay": 0.0},
        ],
        lr=tc.learning_rate,
        betas=(tc.beta1, tc.beta2),
        eps=1e-8,
    )
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
        t = time.perf_counter()
        for g in topt.param_groups:
            g["lr"] = lr
        tl = torch_loss(forward, cfg, torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64)))
        topt.zero_grad(set_to_none=True)
        tl.backward()
        if tc.grad_clip > 0:  # 0: no clipping, as in CLLM's AdamW
            torch.nn.utils.clip_grad_norm_(list(P.values()), tc.grad_clip)
        topt.step()
        t_torch += time.perf_counter() - t
        if (step + 1) % args.eval_interval == 0 or step + 1 == args.steps:
            cv = evaluate_tokens(model, val_tokens, B, T)
            tv = torch_val(forward, cfg, val_tokens, B, T)
            wdiff = max(
                float(np.max(np.abs(np.array(model.p[n]).reshape(s) - P[n].detach().numpy())))
                for n, s in model.shapes.items()
            )
            print(
                json.dumps(
                    {
                        "step": step + 1,
                        "cllm_val": round(cv, 5),
                        "torch_val": round(tv, 5),
                        "diff": round(cv - tv, 5),
                        "train_loss_diff": round(loss - float(tl.detach()), 6),
                        "max_weight_diff": wdiff,
                        "cllm_s": round(t_cllm, 1),
                        "torch_s": round(t_torch, 1),
                    }
                ),
                flush=True,
            )
            if not math.isfinite(cv):
                break


if __name__ == "__main__":
    main()
