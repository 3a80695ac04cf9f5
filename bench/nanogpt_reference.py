"""What nanoGPT's CPU Shakespeare recipe reaches, measured the way CLLM measures it.

nanoGPT's README reports "val loss 1.88" for its laptop-CPU character model (4 layers, 4 heads,
128 dims, block 64, batch 12, 2000 iterations, lr 1e-3 cosine to 1e-4 after 100 warmup steps,
AdamW betas (0.9, 0.99), weight decay 0.1, clip 1.0, no dropout, no biases). That figure is an
estimate from 20 random batches of 12 x 64 characters. CLLM's train command scores the whole
validation split. This script trains the same recipe in PyTorch (written here from the recipe,
not nanoGPT's code) and prints, for each seed, both figures: the 20-batch estimate nanoGPT prints
and the loss over the whole validation split, so the two can be compared fairly.

torch is not a CLLM dependency: `.venv/bin/pip install torch==2.13.0` (a local CPU wheel), then
  .venv/bin/python bench/nanogpt_reference.py [--seeds 1337,1,2] [--bias] [--beta2 0.99] [--weight-decay 0.1]
      [--grad-clip 1.0] [--steps 2000] [--data FILE] [--smoke]
Prints one JSON line per seed, keys: bench, smoke, seed, bias, beta2, weight_decay, grad_clip, steps,
val_loss_20_batches, val_loss_whole_split, train_s. Without torch, one line: torch null, not_run.torch.
  --smoke: 5 steps of one seed, the validation split's first 20,000 characters
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import SMOKE_HELP, missing  # noqa: E402

SHARED_DATA = os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt")
DATA = SHARED_DATA if os.path.exists(SHARED_DATA) else os.path.join(ROOT, "data", "tinyshakespeare.txt")
L, NH, C, T, B = 4, 4, 128, 64, 12
STEPS, WARMUP, LR, MIN_LR = 2000, 100, 1e-3, 1e-4


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1337")
    ap.add_argument("--bias", action="store_true", help="biases in LayerNorm and Linear (CLLM's GPT-2 layout)")
    ap.add_argument("--beta2", type=float, default=0.99, help="AdamW's beta2 (nanoGPT's recipe: 0.99)")
    ap.add_argument("--weight-decay", type=float, default=0.1, help="on matrices (nanoGPT's recipe: 0.1)")
    ap.add_argument("--grad-clip", type=float, default=1.0, help="global norm; 0: none (nanoGPT's recipe: 1.0)")
    ap.add_argument("--steps", type=int, default=STEPS, help="training steps (nanoGPT's recipe: 2000)")
    ap.add_argument("--data", default=DATA, help="the corpus (default: tiny Shakespeare)")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    if args.smoke:
        args.seeds, args.steps = "1337", 5
    return args


if __name__ == "__main__" and missing("torch", "interop"):
    # the whole script is the PyTorch side: without torch it says so in its JSON line
    print(json.dumps({"bench": "nanogpt_reference", "smoke": parse_args().smoke, "torch": None,
                      "not_run": {"torch": missing("torch", "interop")}}))
    sys.exit(0)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def lr_at(it, steps):
    # nanoGPT's schedule: linear warmup, then cosine to MIN_LR at `steps`
    if it < WARMUP:
        return LR * (it + 1) / (WARMUP + 1)
    ratio = (it - WARMUP) / (steps - WARMUP)
    return MIN_LR + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (LR - MIN_LR)


class Block(torch.nn.Module):
    def __init__(self, bias):
        super().__init__()
        self.ln1 = torch.nn.LayerNorm(C, bias=bias)
        self.qkv = torch.nn.Linear(C, 3 * C, bias=bias)
        self.proj = torch.nn.Linear(C, C, bias=bias)
        self.ln2 = torch.nn.LayerNorm(C, bias=bias)
        self.fc = torch.nn.Linear(C, 4 * C, bias=bias)
        self.fcproj = torch.nn.Linear(4 * C, C, bias=bias)

    def forward(self, x):
        Bq, Tq, _ = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(Bq, Tq, NH, C // NH).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(Bq, Tq, C))
        return x + self.fcproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(torch.nn.Module):
    def __init__(self, vocab, bias):
        super().__init__()
        self.wte = torch.nn.Embedding(vocab, C)
        self.wpe = torch.nn.Embedding(T, C)
        self.blocks = torch.nn.ModuleList(Block(bias) for _ in range(L))
        self.lnf = torch.nn.LayerNorm(C, bias=bias)
        for name, p in self.named_parameters():
            if p.dim() == 2:  # GPT-2 init; residual projections scaled by 1/sqrt(2L)
                std = 0.02 / math.sqrt(2 * L) if name.endswith(("proj.weight", "fcproj.weight")) else 0.02
                torch.nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                torch.nn.init.zeros_(p)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for blk in self.blocks:
            x = blk(x)
        logits = self.lnf(x) @ self.wte.weight.T  # tied head
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def main():
    args = parse_args()
    torch.set_num_threads(2)
    with open(args.data, encoding="utf-8") as f:
        text = f.read()
    chars = sorted(set(text))
    lut = np.zeros(0x110000, dtype=np.int64)
    lut[[ord(c) for c in chars]] = np.arange(len(chars))
    ids = lut[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)]
    n = int(0.9 * len(ids))  # nanoGPT's split: first 90% train, last 10% val
    train, val = torch.from_numpy(ids[:n]), torch.from_numpy(ids[n:n + 20_000] if args.smoke else ids[n:])
    for seed in (int(s) for s in args.seeds.split(",")):
        torch.manual_seed(seed)
        model = GPT(len(chars), args.bias)
        decay = [p for p in model.parameters() if p.dim() >= 2]
        other = [p for p in model.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                 {"params": other, "weight_decay": 0.0}], lr=LR, betas=(0.9, args.beta2))

        def batch(data):
            ix = torch.randint(len(data) - T, (B,))
            return torch.stack([data[i:i + T] for i in ix]), torch.stack([data[i + 1:i + 1 + T] for i in ix])

        t0 = time.perf_counter()
        for it in range(args.steps):
            for g in opt.param_groups:
                g["lr"] = lr_at(it, args.steps)
            x, y = batch(train)
            loss = model(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            opt.step()
        wall = time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            est = float(np.mean([float(model(*batch(val))) for _ in range(20)]))
            # the whole split in non-overlapping windows of T, every target scored once
            nw = (len(val) - 1) // T
            xs = val[:nw * T].view(nw, T)
            ys = val[1:nw * T + 1].view(nw, T)
            full = sum(float(model(xs[i:i + 64], ys[i:i + 64])) * len(xs[i:i + 64]) for i in range(0, nw, 64)) / nw
        print(json.dumps({"bench": "nanogpt_reference", "smoke": args.smoke, "seed": seed, "bias": args.bias,
                          "beta2": args.beta2, "weight_decay": args.weight_decay, "grad_clip": args.grad_clip,
                          "steps": args.steps, "val_loss_20_batches": round(est, 4),
                          "val_loss_whole_split": round(full, 4), "train_s": round(wall, 1)}), flush=True)


if __name__ == "__main__":
    main()
