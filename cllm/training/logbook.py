"""What a run leaves for its reader: metrics.jsonl (one JSON object per step), the progress bar and
messages on stderr, and loss.png."""
from __future__ import annotations

import json
import os
import sys

from tqdm import tqdm

from cllm.fileio import atomic_open, atomic_write_text


def say(msg: str) -> None:
    """A line on stderr that does not break the progress bar."""
    tqdm.write(msg, file=sys.stderr)


class Logbook:
    """metrics.jsonl and the progress bar of one run; only rank 0 (`main`) writes or shows anything.
    On resume, the metrics logged after the checkpoint's step are dropped (they are logged again)."""

    def __init__(self, checkpoint_dir: str, main: bool, progress: bool, step: int, total_steps: int | None):
        self.path = os.path.join(checkpoint_dir, "metrics.jsonl")
        self.main = main
        self.file = None
        if main:
            truncate_metrics(self.path, step)
            self.file = open(self.path, "a")
        self.bar = tqdm(total=total_steps, initial=step, disable=not (progress and main), dynamic_ncols=True,
                        unit="step", file=sys.stderr)

    def write(self, record: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def show(self, record: dict) -> None:
        """Advance the bar by one step, with the step's figures."""
        val = record.get("val_loss")
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{record['train_loss']:.4f}", val=f"{val:.4f}" if val is not None else "-",
                             lr=f"{record['lr']:.2e}", tok_s=f"{record['tokens_per_sec']:.0f}", refresh=False)

    def block(self, text: str) -> None:
        """A block of text (a sample) printed above the bar."""
        self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()
        if self.file is not None:
            self.file.close()
            self.file = None

    def plot(self) -> None:
        if self.main:
            plot_losses(self.path, os.path.join(os.path.dirname(self.path), "loss.png"))


def truncate_metrics(path: str, step: int) -> None:
    """On resume, drop the metrics logged after the checkpoint's step (they will be logged again)."""
    if not os.path.exists(path):
        return
    keep = []
    with open(path) as f:
        for line in f:
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except ValueError:
                continue
    atomic_write_text(path, "".join(keep))


def plot_losses(metrics_path: str, png_path: str) -> bool:
    """A loss-curve PNG when matplotlib (the [plot] extra) is installed; returns whether it was written."""
    try:  # optional: the plot extra
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    steps, losses, vsteps, vlosses = [], [], [], []
    with open(metrics_path) as f:
        for line in f:
            rec = json.loads(line)
            if "train_loss" in rec:
                steps.append(rec["step"])
                losses.append(rec["train_loss"])
            if "val_loss" in rec:
                vsteps.append(rec["step"])
                vlosses.append(rec["val_loss"])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, label="train", linewidth=0.8)
    if vsteps:
        ax.plot(vsteps, vlosses, "o-", label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_open(png_path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return True
