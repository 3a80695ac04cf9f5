"""Evaluate a checkpoint on any text: mean loss per token, perplexity and bits per byte.

    tokens, nbytes, docs = encode_corpus("notes/", tokenizer)     # the training loader's way
    result = evaluate_stream(model, tokens, nbytes, stride=64)    # {"loss", "perplexity", ...}
    result = evaluate_checkpoint("runs/x", "notes/", stride=64)   # `cli.py evaluate`: load, read, score

The text is read exactly as training reads it (cllm.data.open_corpus with the same cleaning and
de-duplication; each document encoded and, for word/BPE tokenizers, followed by EOS; documents
concatenated into one token stream), so the loss on a validation split here is the loss training
logged for it.

Windows: the model sees windows of T tokens (T = its context) that start every `stride` tokens;
each window scores only the targets no earlier window scored, so every token after the first is
scored exactly once, with between T - stride and T - 1 tokens of context (stride = T: disjoint
windows, exactly training's validation loss; a smaller stride: more context per token, more
work). When the stream does not end on a window boundary, one last window ending at the last token
scores the rest.

Bits per byte = (summed loss in nats / ln 2) / UTF-8 bytes of the scored text, i.e. the mean loss
per token in bits times tokens per byte: comparable across tokenizers, unlike perplexity.
"""
from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
from tqdm import tqdm

from cllm import kinds
from cllm.checkpoint import load_checkpoint
from cllm.completion import load_for_generation
from cllm.data.clean import CleaningOptions, clean_text
from cllm.data.corpus import open_corpus
from cllm.errors import ConfigError, DataError


def evaluate_checkpoint(checkpoint: str, data: str | None = None, **options) -> dict:
    """`cli.py evaluate`: the checkpoint's scores on `data` (or options["text"]), by the kind of the data
    (cllm/kinds.py): a text's loss, perplexity and bits per byte (evaluate_text, below); a folder of
    images' bits per dimension and, with classify=FOLDER, accuracy (cllm/vision/likelihood.py); conversations'
    assistant-token loss (cllm/chat/kind.py)."""
    source = options.get("classify") or data
    if source is None or source == "-":
        kind = kinds.get(kinds.DEFAULT)
    else:  # a prepared dataset is evaluated by the kind that prepared it (a chat dataset: its held-out split)
        kind = kinds.get(_prepared_kind(source) or kinds.for_input(source).name)
    return kind.evaluate(checkpoint, data, **options)


def _prepared_kind(path) -> str | None:
    """The kind a prepared dataset's meta.json names ("chat", "image"), if `path` is one and the kind is known."""
    try:
        with open(os.path.join(path, "meta.json"), encoding="utf-8") as f:
            name = json.load(f).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return name if name in kinds.names() else None


def evaluate_text(checkpoint, data=None, text=None, stride=None, batch_size=8, progress=True, threads=None,
                  tokenizer=None, device="cpu", quantize=None, classify=None) -> dict:
    """Loss, perplexity and bits per byte of the checkpoint on `data` (a text file, a directory of them,
    read and cleaned as its training data was, or - for standard input) or on the string `text`."""
    # costly at start-up: Numba and the kernels, which `prepare` (through cllm/data/textkind.py) would pay
    from cllm.quantize import check_scheme, dequantize_in_place  # noqa: PLC0415

    if classify is not None:
        raise ConfigError(f"--classify classifies images by likelihood; {classify} holds no images (give a folder "
                          "of images, a folder per class)")
    if (data is None) == (text is None):
        raise ConfigError("give the text to evaluate: a file or directory (python cli.py evaluate CHECKPOINT PATH), "
                          "`-` for standard input, or --text STRING")
    if stride is not None and (isinstance(stride, bool) or not isinstance(stride, int)):
        raise ConfigError(f"--stride must be a positive integer, got {stride!r}")
    check_scheme(quantize, device)
    model, tok, path = load_for_generation(checkpoint, tokenizer, threads, device)
    if quantize == "int8":  # the training forward over the int8 values (cllm/quantize.py)
        dequantize_in_place(model)
    cleaning = dataset_cleaning(load_checkpoint(path)) or {}
    if text is not None or data == "-":
        raw = text if text is not None else sys.stdin.read()
        doc = clean_text(str(raw), **cleaning)
        tokens, nbytes, ndocs = encode_documents([doc] if doc.strip() else [], tok)
        source = "--text" if text is not None else "<stdin>"
    else:
        data = str(data)
        if not os.path.exists(data):
            raise DataError(f"no such file or directory: {data!r}; give a text file or directory, "
                            "or the text itself with --text")
        tokens, nbytes, ndocs = encode_corpus(data, tok, cleaning, progress=progress)
        source = data
    result = evaluate_stream(model, tokens, nbytes, stride=stride, batch_size=batch_size, progress=progress)
    return {"checkpoint": path, "data": source, "documents": ndocs, **result}


def encode_corpus(path: str, tokenizer, cleaning: dict | None = None, progress: bool = False):
    """(int32 token stream, UTF-8 bytes of the cleaned text, number of documents) for a file or a
    directory, through the same loader, cleaning and EOS rule as `prepare_dataset`."""
    corpus = open_corpus(path, progress=progress, **(cleaning or {}))
    return encode_documents(corpus, tokenizer)


def encode_documents(documents, tokenizer):
    """(int32 token stream, UTF-8 bytes, number of documents) for an iterable of cleaned documents."""
    eos = tokenizer.eos_id if tokenizer.kind in ("word", "bpe") else None
    parts, nbytes, ndocs = [], 0, 0
    for doc in documents:
        a = np.asarray(tokenizer.encode_array(doc), dtype=np.int32)
        if eos is not None:
            a = np.append(a, np.int32(eos))
        parts.append(a)
        nbytes += len(doc.encode("utf-8", "surrogatepass"))
        ndocs += 1
    tokens = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
    return tokens, nbytes, ndocs


def window_plan(n_tokens: int, T: int, stride: int) -> list[tuple[int, int]]:
    """[(start, first scored position in the window)] for a stream of n_tokens and windows of T
    inputs (T + 1 tokens with the targets). Every target index 1..n_tokens-1 is scored exactly once."""
    if n_tokens < 2:
        raise DataError(f"the text gives {n_tokens} token(s); evaluation needs at least 2 (one to predict from)")
    n_targets = n_tokens - 1
    if n_targets <= T:
        return [(0, 0)]
    plan, done = [], 0  # done: targets scored so far (target j of window s is stream index s + j + 1)
    start = 0
    while start + T <= n_targets:
        plan.append((start, done - start))
        done = start + T
        start += stride
    if done < n_targets:  # the tail: a window ending at the last token
        start = n_targets - T
        plan.append((start, done - start))
    return plan


def window_losses(model, tokens: np.ndarray, T: int, batch_size: int, plan=None, labels=None):
    """The one evaluation loop (validation in training, `cli.py evaluate`, image likelihoods): the model
    reads windows of T inputs and their T targets from `tokens`, batch_size windows per forward; yields
    per batch (losses (real windows, T), the batch's entries of `plan`). `plan`: [(window start, first
    scored position)], by default every non-overlapping window. The last batch is padded with its first
    window; the padding is never yielded. labels: None, or a stream as long as `tokens` whose entries are
    the targets instead (-1: not scored, loss 0 there; HuggingFace's labels, with -1 for -100)."""
    if plan is None:
        n_windows = (len(tokens) - 1) // T
        if n_windows == 0:
            raise DataError(f"the validation split has {len(tokens)} tokens, fewer than one window of "
                            f"{T} + 1; use more data, a larger --val-fraction or a smaller --seq-len")
        plan = [(i * T, 0) for i in range(n_windows)]
    B = min(batch_size, len(plan))
    for first in range(0, len(plan), B):
        batch = plan[first:first + B]
        real = len(batch)
        starts = [s for s, _ in batch] + [batch[0][0]] * (B - real)
        window = np.stack([np.asarray(tokens[s:s + T + 1], dtype=np.int32) for s in starts])
        targets = window[:, 1:] if labels is None else np.stack([labels[s + 1:s + T + 1] for s in starts])
        model.loss(window[:, :-1], targets)
        yield model.token_losses()[:real], batch


def evaluate_tokens(model, tokens: np.ndarray, B: int, T: int, labels=None) -> float:
    """Mean next-token loss over every non-overlapping window of T+1 tokens of `tokens`, B windows per
    forward (deterministic; a tail shorter than a window is not scored): training's validation loss.
    labels (as window_losses's): the mean is over the targets that are not -1, as in training."""
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int32)
        if labels.shape != np.shape(tokens):
            raise DataError(f"labels hold {labels.size} entries for {np.size(tokens)} tokens; give one per token")
    total, count = 0.0, 0
    for losses, batch in window_losses(model, tokens, T, B, labels=labels):
        total += float(losses.sum(dtype=np.float64))  # 0 at the unscored positions
        if labels is None:
            count += losses.size
        else:
            count += sum(int(np.count_nonzero(labels[s + 1:s + T + 1] >= 0)) for s, _ in batch)
    if count == 0:
        raise DataError("no target to score: every label of the evaluated windows is -1")
    return total / count


def evaluate_stream(model, tokens: np.ndarray, nbytes: int, stride: int | None = None, batch_size: int = 8,
                    progress: bool = False) -> dict:
    """Loss, perplexity and bits per byte of `model` on a token stream (see the module doc)."""
    T_model = model.config.max_seq_len
    stride = T_model if stride is None else stride
    if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= T_model:
        raise ConfigError(f"--stride must be an integer in [1, {T_model}] (the model's context), got {stride!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {batch_size!r}")
    tokens = np.ascontiguousarray(tokens, dtype=np.int32)
    V = model.config.vocab_size
    if tokens.size and (tokens.min() < 0 or tokens.max() >= V):
        raise DataError(f"the text encodes to token ids outside the model's vocabulary of {V}; "
                        "the tokenizer does not belong to this checkpoint")
    plan = window_plan(tokens.size, T_model, stride)
    T = min(T_model, tokens.size - 1)
    total, count = 0.0, 0
    with tqdm(total=len(plan), unit="window", desc="evaluating", disable=None if progress else True,
              leave=False) as bar:
        for losses, batch in window_losses(model, tokens, T, batch_size, plan):
            for row, (_, skip) in enumerate(batch):
                scored = losses[row, max(skip, 0):]
                total += float(scored.sum(dtype=np.float64))
                count += scored.size
            bar.update(len(batch))
    assert count == tokens.size - 1, (count, tokens.size)
    loss = total / count
    # bytes of the scored text: the first token has no prediction, so its share of the bytes goes too
    scored_bytes = nbytes * count / tokens.size if nbytes else 0.0
    return {
        "loss": loss,
        "perplexity": math.exp(loss) if loss < 700 else math.inf,
        "bits_per_byte": total / math.log(2) / scored_bytes if scored_bytes else None,
        "tokens": int(tokens.size),
        "scored_tokens": count,
        "bytes": int(nbytes),
        "windows": len(plan),
        "context": T_model,
        "stride": stride,
    }


def dataset_cleaning(ckpt) -> dict | None:
    """The cleaning options of the dataset a checkpoint was trained on (from its meta.json), if known."""
    dataset_dir = (ckpt.state or {}).get("dataset_dir")
    if not dataset_dir:
        return None
    try:
        with open(os.path.join(dataset_dir, "meta.json"), encoding="utf-8") as f:
            cleaning = json.load(f)["options"]["cleaning"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    known = CleaningOptions.__dataclass_fields__
    return {k: bool(v) for k, v in cleaning.items() if k in known} if isinstance(cleaning, dict) else None
