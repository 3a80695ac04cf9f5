"""What `train --ema-decay` bought a run: the validation loss of a checkpoint's averaged weights (its model) and
of the weights the optimizer stepped (kept beside them in optimizer.safetensors), scored the way training
scores its validation split (non-overlapping windows of the run's context), and per position in the window.

    .venv/bin/python bench/ema_gain.py RUN_DIR/latest [--data PREPARED_DATASET]
    .venv/bin/python bench/ema_gain.py --smoke     # trains a tiny model with --ema-decay first

JSON keys: bench, smoke, checkpoint, seq_len, buckets ([start, end) positions), and per side ("average",
"online"; a run without --ema-decay has "model" only) its loss and per-bucket losses.
The per-position means show where a longer context pays: the first positions of every window see little
context, so their loss is high whatever the model.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import SMOKE_HELP  # noqa: E402
from cllm import checkpoint as ck  # noqa: E402
from cllm.data import read_token_file  # noqa: E402
from cllm.evaluate import window_losses  # noqa: E402
from cllm.training import TrainConfig, train  # noqa: E402
from cllm.training.average import ONLINE_WEIGHTS  # noqa: E402

BUCKETS = (0, 1, 4, 16, 64)  # window positions where the per-position report's buckets start


def scores(model, tokens: np.ndarray, T: int) -> tuple[float, list[float]]:
    """(mean loss, mean loss of each position bucket) over every non-overlapping window of T."""
    # token_losses is a view of the model's buffer, which the next batch overwrites: copied
    per_window = np.concatenate([np.array(losses) for losses, _ in window_losses(model, tokens, T, 16)])
    per_position = per_window.mean(axis=0)
    edges = [b for b in BUCKETS if b < T] + [T]
    return float(per_window.mean()), [float(per_position[a:b].mean()) for a, b in zip(edges, edges[1:])]


def smoke_checkpoint(work: str) -> str:
    """A tiny model trained for 30 steps with --ema-decay on the bundled corpus's first 20,000 characters."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "data", "tinyshakespeare.txt"), encoding="utf-8") as f:
        text = f.read(20000)
    corpus = os.path.join(work, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write(text)
    train(TrainConfig(data=corpus, tokenizer="char", embed_dim=16, num_layers=1, num_heads=2, seq_len=16,
                      batch_size=4, max_steps=30, ema_decay=0.9, checkpoint_dir=os.path.join(work, "run"),
                      progress=False, sample_interval=100000, threads=1))
    return os.path.join(work, "run", "latest")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", nargs="?")
    ap.add_argument("--data", help="the prepared dataset (default: the one the run trained on)")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args(argv)
    if not args.smoke and not args.checkpoint:
        ap.error("give a checkpoint (or --smoke)")
    with tempfile.TemporaryDirectory() as work:
        path = smoke_checkpoint(work) if args.smoke else args.checkpoint
        ckpt = ck.load_checkpoint(path, with_optimizer=True)
        data = args.data or ckpt.state.get("dataset_dir")
        tokens = np.asarray(read_token_file(os.path.join(data, "val.bin")), dtype=np.int32)
        T = ckpt.model_config.max_seq_len
        model = ck.model_from_checkpoint(ckpt)
        edges = [b for b in BUCKETS if b < T] + [T]
        out = {"bench": "ema_gain", "smoke": args.smoke, "checkpoint": None if args.smoke else ckpt.path, "seq_len": T,
               "buckets": list(zip(edges, edges[1:]))}
        sides = {"model": None}
        if ONLINE_WEIGHTS in ckpt.optimizer_state:
            sides = {"average": None, "online": ckpt.optimizer_state[ONLINE_WEIGHTS]}
        for side, weights in sides.items():
            if weights is not None:
                model.load_params(weights)
            mean, buckets = scores(model, tokens, T)
            out[side] = {"loss": round(mean, 5), "per_bucket": [round(b, 4) for b in buckets]}
            print(f"{side:>8}: {mean:.4f}   per position bucket: " + "  ".join(f"{b:.3f}" for b in buckets),
                  file=sys.stderr)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
