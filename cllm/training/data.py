"""What a run trains on: the prepared dataset (DATA itself, or prepared and cached under
CHECKPOINT_DIR/dataset) and the sampler that draws its batches."""

from __future__ import annotations

import json
import os

import numpy as np

from cllm.chat.data import ChatSplit, conversation_window, read_chat_split
from cllm.checkpoint import load_checkpoint
from cllm.data import prepare_dataset, read_token_file
from cllm.errors import CheckpointError, ConfigError, DataError
from cllm.tokenizers import load_tokenizer
from cllm.training.config import TrainConfig
from cllm.training.logbook import say as _say


class BatchSampler:
    """Random windows of T+1 tokens from a memory-mapped split, drawn from a seeded generator whose
    state is saved in checkpoints (the data position)."""

    def __init__(self, tokens: np.ndarray, B: int, T: int, seed: int, align: int = 1):
        if len(tokens) < T + 2:
            raise DataError(
                f"the training split has {len(tokens)} tokens, fewer than one window of "
                f"--seq-len {T} + 1; use more data or a smaller --seq-len"
            )
        self.tokens, self.B, self.T = tokens, B, T
        self.align = align  # windows start at multiples of align (an image model: one image per window)
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        return self.next_global(1)[0]

    def next_global(self, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """n micro-batches (x, y), each (B,T), from one draw of n*B window starts. Every process
        draws the same global batch and takes its own micro-batches of it, so that 2 processes
        with batch B see exactly what 1 process with --grad-accum 2 sees."""
        if self.align == 1:
            starts = self.rng.integers(0, len(self.tokens) - self.T - 1, size=n * self.B)
        else:
            starts = self.rng.integers(0, (len(self.tokens) - 1) // self.align, size=n * self.B) * self.align
        window = np.stack([np.asarray(self.tokens[s : s + self.T + 1], dtype=np.int32) for s in starts])
        return [
            (window[i * self.B : (i + 1) * self.B, :-1], window[i * self.B : (i + 1) * self.B, 1:]) for i in range(n)
        ]

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


class ChatSampler:
    """Batches of whole conversations (a chat dataset, cllm/chat/data.py): each window is one conversation
    from its start, cut at T+1 tokens or padded (conversation_window: targets -1 on padding and on what the
    assistant does not say). Conversations are drawn uniformly from a seeded generator whose state is saved in
    checkpoints, as BatchSampler's. Those with no assistant token within their first T+1 tokens are never
    drawn (their window would have no loss at all)."""

    def __init__(self, split: ChatSplit, B: int, T: int, seed: int, align: int = 1):
        # align: BatchSampler's signature (the registry's sampler field); a window always starts a conversation
        self.split, self.B, self.T = split, B, T
        eligible = []
        for c in range(split.conversations):
            a, b = int(split.starts[c]), int(split.starts[c + 1])
            if np.any(split.mask[a + 1:min(a + T + 1, b)]):  # a target of the window is the assistant's
                eligible.append(c)
        self.eligible = np.array(eligible, np.int64)
        if self.eligible.size == 0:
            raise DataError(f"no training conversation has an assistant token within its first {T + 1} tokens; "
                            "use a larger --seq-len")
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        return self.next_global(1)[0]

    def next_global(self, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """n micro-batches (x, y), each (B,T) int32, from one draw of n*B conversations (as BatchSampler's)."""
        picks = self.eligible[self.rng.integers(0, self.eligible.size, size=n * self.B)]
        xy = [conversation_window(self.split, int(c), self.T) for c in picks]
        x, y = np.stack([a for a, _ in xy]), np.stack([b for _, b in xy])
        return [(x[i * self.B:(i + 1) * self.B], y[i * self.B:(i + 1) * self.B]) for i in range(n)]

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def _splits(out_dir: str, meta: dict | None = None):
    """(train, val) of the prepared dataset in out_dir: token memmaps, or ChatSplits for a chat dataset."""
    if meta is None:
        try:
            with open(os.path.join(out_dir, "meta.json"), encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError):
            meta = None  # as before chat datasets: a text dataset's token files are read without its meta.json
    if isinstance(meta, dict) and meta.get("kind") == "chat":
        return read_chat_split(out_dir, "train"), read_chat_split(out_dir, "val")
    return read_token_file(os.path.join(out_dir, "train.bin")), read_token_file(os.path.join(out_dir, "val.bin"))


def load_dataset(cfg: TrainConfig):
    """The prepared dataset for cfg.data: DATA itself when it is one, else prepared (and cached)
    under CHECKPOINT_DIR/dataset. Returns (tokenizer, train split, val split, dataset dir); a split is a token
    memmap, or a ChatSplit (cllm/chat/data.py) for a chat dataset."""
    data = cfg.data
    if not os.path.exists(data):
        raise DataError(f"no such file or directory: {data!r}")
    if os.path.isdir(data) and all(
        os.path.exists(os.path.join(data, f)) for f in ("meta.json", "train.bin", "val.bin", "tokenizer.json")
    ):
        _say(f"[1/5] Using the prepared dataset {data}")
        tokenizer = load_tokenizer(os.path.join(data, "tokenizer.json"))
        init_tok = _init_tokenizer(cfg)
        if init_tok is not None and init_tok._to_dict() != tokenizer._to_dict():
            raise ConfigError(
                f"the prepared dataset {data} was encoded with another tokenizer than --init-from's "
                "checkpoint; give the raw text instead"
            )
        _say(f"[2/5] Tokenizer: {tokenizer.kind}, {tokenizer.vocab_size} tokens")
        return (tokenizer, *_splits(data), data)
    _say(f"[1/5] Loading and cleaning {data}")
    out_dir = os.path.join(cfg.checkpoint_dir, "dataset")
    options = {**cfg.prepare_options(), "tokenizer": _init_tokenizer(cfg) or cfg.tokenizer}
    prepared = prepare_dataset(data, out_dir, **options)
    tokenizer = prepared.tokenizer
    _say(f"[2/5] Tokenizer: {tokenizer.kind}, {tokenizer.vocab_size} tokens")
    return (tokenizer, *_splits(out_dir, prepared.meta), out_dir)


def _init_tokenizer(cfg: TrainConfig):
    """The tokenizer of --init-from's checkpoint (None without the flag)."""
    if not cfg.init_from:
        return None
    ckpt = load_checkpoint(cfg.init_from)
    if ckpt.tokenizer_path is None:
        raise CheckpointError(f"--init-from {cfg.init_from}: the checkpoint has no tokenizer to encode the data with")
    return load_tokenizer(ckpt.tokenizer_path)
