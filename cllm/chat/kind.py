"""The chat dataset kind (cllm/kinds.py): JSONL conversations become a chat dataset (cllm/chat/data.py) whose
model trains on one conversation per window with loss on the assistant's tokens only (cllm/training/data.py
ChatSampler) and validates by the mean loss over the held-out conversations' assistant tokens.

A kind of its own rather than an option of the text kind: its input is recognised by content (*.jsonl rows with
"messages"), its prepared files differ (a mask and conversation starts beside each token file) and its windows,
sampler and validation all differ, which is what the registry's fields are for. It claims no tokenizer kind: a
chat model's tokenizer is a bpe (or imported) one, so a trained chat model samples, evaluates and serves as text.
It claims a folder of conversation JSONL, so that a text corpus (data/) skips data/chat whole."""
from __future__ import annotations

import os

import numpy as np

from cllm.chat.data import ChatSplit, conversation_window, is_chat_source, prepare_chat_dataset, summary
from cllm.data.textkind import sample_text
from cllm.errors import DataError
from cllm.kinds import DatasetKind, register
from cllm.training.data import ChatSampler


def validate(model, tokenizer, split: ChatSplit, B: int, T: int) -> dict:
    """{"val_loss": mean loss over the assistant tokens (targets >= 0) of every held-out conversation's window},
    B windows per forward (the last batch padded with its first window, not counted)."""
    total, count = 0.0, 0
    n = split.conversations
    for first in range(0, n, B):
        rows = list(range(first, min(first + B, n)))
        rows += [rows[0]] * (B - len(rows))
        xy = [conversation_window(split, c, T) for c in rows]
        x, y = np.stack([a for a, _ in xy]), np.stack([b for _, b in xy])
        model.loss(x, y)
        real = min(B, n - first)
        losses, keep = model.token_losses()[:real], y[:real] >= 0
        total += float(losses[keep].sum(dtype=np.float64))
        count += int(keep.sum())
    if count == 0:
        raise DataError(f"no held-out conversation has an assistant token within its first {T + 1} tokens; "
                        "use a larger --seq-len or --val-fraction")
    return {"val_loss": total / count}


def evaluate(checkpoint, data, **options) -> dict:
    raise DataError("`cli.py evaluate` does not read conversations yet; the assistant-token loss on held-out "
                    "conversations is `cli.py train`'s validation (val_loss)")


CHAT = register(DatasetKind(
    name="chat",
    tokenizers={},  # a chat model's tokenizer is a text one (see the module doc)
    recognises=is_chat_source,
    claims_folder=lambda path: os.path.isdir(path) and is_chat_source(path),  # a text corpus skips it (data/chat)
    prepare=prepare_chat_dataset,
    summary=summary,
    seq_len=lambda tokenizer, requested: requested,
    align=lambda tokenizer: 1,
    validate=validate,
    sample=sample_text,
    evaluate=evaluate,
    sampler=ChatSampler,
))
