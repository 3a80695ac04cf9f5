"""The chat dataset kind (cllm/kinds.py): JSONL conversations become a chat dataset (cllm/chat/data.py) whose
model trains on one conversation per window with loss on the assistant's tokens only (cllm/training/data.py
ChatSampler) and validates by the mean loss over the held-out conversations' assistant tokens.

A kind of its own rather than an option of the text kind: its input is recognised by content (*.jsonl rows with
"messages"), its prepared files differ (a mask and conversation starts beside each token file) and its windows,
sampler and validation all differ, which is what the registry's fields are for. It claims no tokenizer kind: a
chat model's tokenizer is a bpe (or imported) one, so a trained chat model samples, evaluates and serves as text.
It claims a folder of conversation JSONL, so that a text corpus (data/) skips data/chat whole."""
from __future__ import annotations

import json
import math
import os

import numpy as np

from cllm.chat.data import (
    BadRows,
    ChatSplit,
    conversation_window,
    encode_conversations,
    is_chat_source,
    prepare_chat_dataset,
    read_chat_split,
    read_conversations,
    summary,
)
from cllm.completion import load_for_generation
from cllm.data.textkind import sample_text
from cllm.errors import ConfigError, DataError
from cllm.kinds import DatasetKind, register
from cllm.tokenizers import load_tokenizer
from cllm.training.data import ChatSampler


def assistant_loss(model, split: ChatSplit, B: int, T: int) -> tuple[float, int]:
    """(summed loss, count) over the assistant targets (targets >= 0) of every conversation's window (its first
    T + 1 tokens, cllm/chat/data.py conversation_window), B windows per forward (the last batch padded with its
    first window, not counted)."""
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
    return total, count


def validate(model, tokenizer, split: ChatSplit, B: int, T: int) -> dict:
    """{"val_loss": mean loss over the assistant tokens of every held-out conversation's window}."""
    total, count = assistant_loss(model, split, B, T)
    if count == 0:
        raise DataError(f"no held-out conversation has an assistant token within its first {T + 1} tokens; "
                        "use a larger --seq-len or --val-fraction")
    return {"val_loss": total / count}


def evaluate(checkpoint, data, text=None, stride=None, batch_size=8, progress=True, threads=None, tokenizer=None,
             device="cpu", quantize=None, classify=None) -> dict:
    """`cli.py evaluate CHECKPOINT CONVERSATIONS`: the mean loss over the assistant tokens (and its perplexity) of
    conversations, each scored as training validates it (validate above: one window of the model's context from
    the conversation's start). `data`: JSONL conversations (a file or a folder of them), rendered with the
    checkpoint's tokenizer, bad rows left out and reported as `prepare` reports them; or a prepared chat dataset,
    whose held-out conversations are the ones training's val_loss is over."""
    # costly at start-up: Numba and the kernels, which `prepare` (importing this kind) would pay
    from cllm.quantize import check_scheme, dequantize_in_place  # noqa: PLC0415

    if text is not None:
        raise ConfigError("--text evaluates text; conversations come from a JSONL file or a prepared chat dataset")
    if classify is not None:
        raise ConfigError("--classify is for a folder of images, not conversations")
    if stride is not None:
        raise ConfigError("--stride does not apply to conversations: each is one window from its start, as "
                          "training validates it")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {batch_size!r}")
    check_scheme(quantize, device)
    model, tok, path = load_for_generation(checkpoint, tokenizer, threads, device)
    if quantize == "int8":  # the training forward over the int8 values (cllm/quantize.py)
        dequantize_in_place(model)
    data = os.fspath(data)
    prepared = is_prepared(data)  # a prepared dataset: its held-out conversations
    split, bad = _prepared_split(data, tok) if prepared else _rendered_split(data, tok)
    n = split.conversations
    if n == 0:
        raise DataError(f"{data} holds no held-out conversations (prepared with --val-fraction 0); evaluate the "
                        "JSONL conversations instead")
    V = model.config.vocab_size
    if int(split.tokens.max()) >= V:
        raise DataError(f"the conversations encode to token ids outside the model's vocabulary of {V}; "
                        "the tokenizer does not belong to this checkpoint")
    T = model.config.max_seq_len
    total, count = assistant_loss(model, split, min(batch_size, n), T)
    if count == 0:
        raise DataError(f"no conversation of {data} has an assistant token within its first {T + 1} tokens "
                        "(the model's context)")
    # the assistant's targets: its tokens but any that starts a conversation (nothing predicts it)
    mask = np.asarray(split.mask, bool)
    assistant = int(mask.sum() - mask[np.asarray(split.starts[:-1])].sum())
    loss = total / count
    return {"checkpoint": path, "data": data, "held_out": prepared, "conversations": n,
            "assistant_tokens": assistant, "scored_tokens": count, "context": T, "loss": loss,
            "perplexity": math.exp(loss) if loss < 700 else math.inf, "bad_rows": bad.total,
            "bad_rows_report": bad.describe()}


def is_prepared(path: str) -> bool:
    """Whether `path` is a prepared chat dataset (its meta.json says "kind": "chat")."""
    try:
        with open(os.path.join(path, "meta.json"), encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("kind") == "chat"


def _prepared_split(path: str, tokenizer) -> tuple[ChatSplit, BadRows]:
    """The held-out split of a prepared chat dataset encoded with `tokenizer`, and the bad rows prepare left out."""
    if load_tokenizer(os.path.join(path, "tokenizer.json"))._to_dict() != tokenizer._to_dict():
        raise DataError(f"the prepared dataset {path} was encoded with another tokenizer than the checkpoint's; "
                        "evaluate its JSONL conversations instead")
    with open(os.path.join(path, "meta.json"), encoding="utf-8") as f:
        recorded = json.load(f).get("bad_rows") or {}
    bad = BadRows(dict(recorded.get("counts") or {}), list(recorded.get("first") or []))
    return read_chat_split(path, "val"), bad


def _rendered_split(path: str, tokenizer) -> tuple[ChatSplit, BadRows]:
    """The conversations of the JSONL at `path` rendered with `tokenizer`'s chat template, one after the other, as
    a ChatSplit in memory; rows that are not conversations, or that the template refuses, are the bad rows."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise DataError(f"the checkpoint's {tokenizer.kind} tokenizer has no chat template, so it cannot render "
                        "conversations; evaluate a model fine-tuned on conversations (docs/training.md)")
    conversations, bad = read_conversations(path)
    encoded, first_error = encode_conversations(tokenizer, conversations, bad)
    if not encoded:
        why = f"the chat template refused every one: {first_error}" if first_error else bad.describe()
        raise DataError(f"no conversation of {path} to evaluate: {why}. Each row must be "
                        '{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]} with an '
                        "assistant turn")
    ids = np.array([i for conv_ids, _ in encoded for i in conv_ids], np.int64)
    mask = np.array([m for _, conv_mask in encoded for m in conv_mask], np.uint8)
    starts = np.concatenate([[0], np.cumsum([len(conv_ids) for conv_ids, _ in encoded])]).astype(np.int64)
    split = ChatSplit(ids, mask, starts)
    return split, bad


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
