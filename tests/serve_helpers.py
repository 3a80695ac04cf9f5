"""Tiny trained checkpoints for the serving and evaluation tests, made once per test session: one on
plain text (char tokenizer), one on conversations (bpe with ChatML's tokens and template, for chat).

The corpus is chosen so that the validation split, cut to training's evaluation windows, is text
that cleaning leaves unchanged: evaluating that text must then reproduce the validation loss that
training logged, exactly.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from cllm.checkpoint import save_checkpoint
from cllm.config import ModelConfig
from cllm.data import prepare_dataset, read_token_file
from cllm.data.clean import clean_text
from cllm.model import Model
from cllm.tokenizers import load_tokenizer
from cllm.training import TrainConfig, train

T = 16  # the tiny model's context
ROOT = Path(__file__).resolve().parents[1]

_WORDS = ("the a cat dog sat on mat and ran far away into woods while birds sang of red blue green "
          "sun moon star light night day big small old new").split()
_SESSION: dict[str, dict] = {}


def corpus_text(n_lines: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 9))]
        lines.append(" ".join(words) + rng.choice([".", "!", "?", ";"]))
    return "\n".join(lines) + "\n"


def tiny_run(tmp_path_factory) -> dict:
    """{"run": run dir, "val_text": path of the validation text cut to whole windows,
    "val_loss": the validation loss training logged, "corpus": the corpus file, "dataset": prepared dir}."""
    if "run" in _SESSION:
        return _SESSION["run"]
    base = tmp_path_factory.mktemp("serve_run")
    for n_lines in range(150, 200):  # a corpus whose cut validation text is its own cleaning
        corpus = base / f"corpus{n_lines}.txt"
        corpus.write_text(corpus_text(n_lines), encoding="utf-8")
        ds = prepare_dataset(str(corpus), str(base / f"prepared{n_lines}"), tokenizer="char", progress=False)
        val = read_token_file(ds.val_path)
        n_windows = (len(val) - 1) // T
        cut = ds.tokenizer.decode([int(i) for i in val[:n_windows * T + 1]])
        if n_windows >= 4 and clean_text(cut) == cut:
            break
    else:
        raise AssertionError("no corpus length gives a clean validation cut")
    val_text = base / "val.txt"
    val_text.write_text(cut, encoding="utf-8")
    run = base / "run"
    train(TrainConfig(data=ds.out_dir, embed_dim=16, num_layers=1, num_heads=2, seq_len=T, batch_size=4,
                      max_steps=30, learning_rate=1e-2, warmup_steps=3, eval_interval=1000, checkpoint_interval=1000,
                      sample_interval=100000, checkpoint_dir=str(run), progress=False, seed=5))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    val_loss = [r["val_loss"] for r in records if "val_loss" in r][-1]
    _SESSION["run"] = {"run": run, "val_text": val_text, "val_loss": val_loss, "corpus": corpus,
                       "dataset": Path(ds.out_dir), "val_windows": n_windows}
    return _SESSION["run"]


def random_checkpoint(tmp_path_factory, embed_dim=128, num_layers=4, num_heads=4, seq_len=512, chat=False) -> Path:
    """A checkpoint of an untrained model, bigger than the tiny one so that generating takes visible
    time (the browser test watches text arrive), with the tiny run's char tokenizer, or with chat=True
    chat_run's bpe tokenizer and its chat template."""
    key = f"random{embed_dim}x{num_layers}x{seq_len}" + ("chat" if chat else "")
    if key not in _SESSION:
        source = chat_run(tmp_path_factory) / "latest" if chat else tiny_run(tmp_path_factory)["dataset"]
        tok = load_tokenizer(str(source / "tokenizer.json"))
        model = Model(ModelConfig(vocab_size=tok.vocab_size, max_seq_len=seq_len, num_layers=num_layers,
                                  num_heads=num_heads, embed_dim=embed_dim), seed=1)
        base = tmp_path_factory.mktemp(key)
        _SESSION[key] = {"path": Path(save_checkpoint(str(base), "step_000000", model, tokenizer=tok))}
    return _SESSION[key]["path"]


def chat_run(tmp_path_factory) -> Path:
    """A chat checkpoint: data/chat/conversations.jsonl with a bpe tokenizer (ChatML's <|im_start|>, <|im_end|> and
    template), 80 steps of a 1-layer model with a 128-token context (about 4 s once Numba's cache is warm). Its
    greedy replies to the conversations' questions end with <|im_end|> within about 20 tokens."""
    if "chat" not in _SESSION:
        base = tmp_path_factory.mktemp("chat_run")
        ds = prepare_dataset(str(ROOT / "data" / "chat" / "conversations.jsonl"), str(base / "prepared"),
                             tokenizer="bpe", vocab_size=460, val_fraction=0.1, progress=False)
        train(TrainConfig(data=ds.out_dir, embed_dim=32, num_layers=1, num_heads=2, seq_len=128, batch_size=8,
                          max_steps=80, learning_rate=1e-2, warmup_steps=5, eval_interval=1000,
                          checkpoint_interval=1000, sample_interval=100000, checkpoint_dir=str(base / "run"),
                          progress=False, seed=1))
        _SESSION["chat"] = base / "run"
    return _SESSION["chat"]
