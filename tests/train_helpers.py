"""Shared helpers for the training, checkpoint, generation, CLI and llm.c tests: a tiny corpus, tiny
configs that train in seconds, a prepared dataset and a trained checkpoint made once per session."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numba
import pytest

from cllm.data import prepare_dataset
from cllm.runtime import configure_threads
from cllm.training import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
CLI = str(ROOT / "cli.py")

# the flags every quick run uses: a model of a few thousand parameters, on one thread (threads only
# cost time at this size, and much of it on a busy machine)
TINY = {"embed_dim": 16, "num_layers": 1, "num_heads": 2, "seq_len": 16, "batch_size": 4, "threads": 1}
TINY_FLAGS = ["--embed-dim", "16", "--num-layers", "1", "--num-heads", "2", "--seq-len", "16", "--batch-size", "4",
              "--threads", "1"]

_WORDS = ("the a cat dog sat on mat and ran far away into woods while birds sang of 1984 True False "
          "red blue green sun moon star light night day big small old new").split()


def corpus_text(n_lines: int = 200, seed: int = 0) -> str:
    """About 8 KB of sentences over a small vocabulary; holds every character the CLI tests' prompts
    use ("1984", "a,b", "True")."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 9))]
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), "a,b")
        lines.append(" ".join(words) + rng.choice([".", "!", "?", ";", ":"]))
    return "\n".join(lines) + "\n"


def write_corpus(directory: Path, name: str = "corpus.txt", **kw) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(corpus_text(**kw), encoding="utf-8")
    return path


def tiny_config(data, checkpoint_dir, **overrides):
    """A TrainConfig of the tiny model with no progress bar, no samples, evaluation only at the end."""
    kw = dict(TINY, data=str(data), checkpoint_dir=str(checkpoint_dir), max_steps=12, eval_interval=1000,
              checkpoint_interval=1000, sample_interval=100000, warmup_steps=2, seed=7, progress=False)
    kw.update(overrides)
    return TrainConfig(**kw)


@pytest.fixture(autouse=True)
def all_threads_after():
    """Import into a test module: the quick runs set one thread; the tests after them get all back."""
    yield
    configure_threads(numba.config.NUMBA_NUM_THREADS)


_SESSION: dict[str, Path] = {}


def prepared_dataset(tmp_path_factory) -> Path:
    """A char-level prepared dataset directory of the tiny corpus (made once per session)."""
    if "dataset" not in _SESSION:
        base = tmp_path_factory.mktemp("dataset")
        corpus = write_corpus(base / "text")
        prepare_dataset(str(corpus), str(base / "prepared"), tokenizer="char", progress=False)
        _SESSION["dataset"] = base / "prepared"
    return _SESSION["dataset"]


def trained_checkpoint(tmp_path_factory) -> Path:
    """A run directory (with `latest`) of the tiny model trained for 300 steps on the tiny corpus
    (enough for a greedy continuation that is not one character repeated)."""
    if "run" not in _SESSION:
        data = prepared_dataset(tmp_path_factory)
        run = tmp_path_factory.mktemp("trained") / "run"
        train(tiny_config(data, run, max_steps=300, learning_rate=1e-2, warmup_steps=5))
        _SESSION["run"] = run
    return _SESSION["run"]


def run_cli(*args, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """`python cli.py ARGS` in a subprocess, text output captured."""
    return subprocess.run([sys.executable, CLI, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, **kw)


def assert_clean_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """A user error: non-zero exit, one `error: ...` line on stderr naming the problem, no traceback."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle.lower() in errors[0].lower(), (needle, errors[0])


def read_metrics(run_dir) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def train_losses(run_dir) -> dict[int, float]:
    """step -> train_loss of a run's metrics.jsonl (each step at most once)."""
    out = {}
    for rec in read_metrics(run_dir):
        if "train_loss" in rec:
            assert rec["step"] not in out, f"step {rec['step']} logged twice"
            out[rec["step"]] = rec["train_loss"]
    return out
