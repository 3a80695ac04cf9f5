"""Image likelihoods from a trained model: bits per dimension and classification by likelihood.

    logp = joint_log_probs(model, tok, ids)      # (n, L) log p(label y, pixels) in nats, every y
    result = evaluate_images(model, tok, "digits/test", classify=True)
    result = evaluate_checkpoint("runs/digits", classify="digits/test")   # `cli.py evaluate`'s

For a model with classes, p(pixels) = sum_y p(y) p(pixels | y) (labels summed out: the
`bits_per_dim` reported here); the most likely y is the predicted class. `bits_per_dim_joint` is
-log2 p(true label, pixels) per dimension, what training's validation reports (never below the other).
Dimensions are pixels x channels, the convention of image-likelihood papers.
"""
from __future__ import annotations

import math

import numpy as np

from cllm.completion import load_for_generation
from cllm.errors import ConfigError, DataError
from cllm.vision.images import load_images


def load_image_model(checkpoint: str, tokenizer: str | None = None, threads: int | None = None):
    """(model, image tokenizer, checkpoint path); a clear error for a text checkpoint."""
    model, tok, path = load_for_generation(checkpoint, tokenizer, threads)
    if tok.kind != "image":
        raise ConfigError(f"{path} is a text model ({tok.kind} tokenizer); image generation and --classify need a "
                          "model trained on a folder of images")
    return model, tok, path


def evaluate_checkpoint(checkpoint: str, data: str | None = None, classify: str | None = None, batch_size: int = 32,
                        threads: int | None = None, tokenizer: str | None = None, quantize: str | None = None,
                        text: str | None = None, **_text_options) -> dict:
    """`cli.py evaluate CHECKPOINT IMAGES/` (bits per dimension) or `--classify TEST_DIR` (also accuracy and
    the confusion matrix); the image kind's `evaluate` (cllm/vision/kind.py). The options of a text's
    evaluation (stride, progress, device) do not apply."""
    if quantize is not None:
        raise ConfigError("--quantize is for text models")
    if text is not None:
        raise ConfigError("--text is for text models; give a folder of images")
    if data is not None and classify is not None and data != classify:
        raise ConfigError("give the images once: either DATA or --classify TEST_DIR")
    path = classify or data
    model, tok, ckpt = load_image_model(checkpoint, tokenizer, threads)
    return {"checkpoint": ckpt, "data": path, "size": f"{tok.width}x{tok.height}x{tok.channels}",
            **evaluate_images(model, tok, path, classify=classify is not None, batch_size=batch_size)}


def joint_log_probs(model, tok, ids: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """(n, L) float64 log p(y, pixels) in nats for colour ids (n, H*W) and every class y (L = 1 and
    plain log p(pixels) for a model without classes)."""
    ids = np.asarray(ids, dtype=np.int32)
    n, N = ids.shape
    labels = list(range(len(tok.classes))) if tok.labelled else [None]
    L = len(labels)
    records = np.empty((n * L, tok.record_len + 1), np.int32)  # inputs and the target after <end>
    for j, y in enumerate(labels):
        records[j::L, :-1] = tok.records(ids, None if y is None else np.full(n, y))
    records[:, -1] = tok.bos_id
    last = tok.first_pixel - 1 + N  # target columns 0..last-1: the label (if any) and the pixels
    out = np.empty(n * L)
    B = min(batch_size, len(records))
    for i0 in range(0, len(records), B):
        rows = records[i0:i0 + B]
        real = len(rows)
        if real < B:
            rows = np.concatenate([rows, np.repeat(rows[:1], B - real, axis=0)])
        model.loss(rows[:, :-1], rows[:, 1:])
        losses = model.token_losses()  # (B, record_len)
        out[i0:i0 + real] = -losses[:real, :last].sum(axis=1, dtype=np.float64)
    return out.reshape(n, L)


def logsumexp(a: np.ndarray, axis: int = -1) -> np.ndarray:
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def confusion_matrix(true: np.ndarray, pred: np.ndarray, L: int) -> np.ndarray:
    """(L, L) int64: row = true class, column = predicted class."""
    m = np.zeros((L, L), np.int64)
    np.add.at(m, (true, pred), 1)
    return m


def evaluate_images(model, tok, path: str, classify: bool = False, batch_size: int = 32, warn=None) -> dict:
    """Bits per dimension of the images under `path` (read like the training set: same size, same
    resize policy) and, with classify, the accuracy and confusion matrix of likelihood classification."""
    size = tok.height if tok.height == tok.width else None
    images = load_images(path, size, tok.channels == 1, classes=tok.classes or None, warn=warn)
    if images.pixels.shape[1:3] != (tok.height, tok.width):
        raise DataError(f"the images under {path} are {images.pixels.shape[2]}x{images.pixels.shape[1]}; "
                        f"this model reads {tok.width}x{tok.height}")
    ids = tok.quantize(images.pixels)
    logp = joint_log_probs(model, tok, ids, batch_size)
    dims = tok.dims_per_image * len(ids)
    result = {"images": len(ids), "bits_per_dim": float(-logsumexp(logp, 1).sum() / math.log(2) / dims),
              "skipped": dict(images.skipped)}
    if tok.labelled and images.labels is not None:
        result["bits_per_dim_joint"] = float(-logp[np.arange(len(ids)), images.labels].sum() / math.log(2) / dims)
    if classify:
        if not tok.labelled:
            raise DataError("--classify needs a model trained on a folder per class; this one has no classes")
        if images.labels is None:
            raise DataError(f"--classify needs the test images in a folder per class under {path}")
        pred = logp.argmax(axis=1)
        result["accuracy"] = float((pred == images.labels).mean())
        result["classes"] = list(tok.classes)
        result["confusion_matrix"] = confusion_matrix(images.labels, pred, len(tok.classes)).tolist()
    return result


def format_confusion(classes: list[str], matrix) -> str:
    """The confusion matrix as a text table (rows: true class, columns: predicted)."""
    w = max(4, max(len(c) for c in classes) + 1, len(str(max(max(r) for r in matrix))) + 1)
    lines = ["true\\pred".ljust(w + 5) + "".join(c.rjust(w) for c in classes)]
    for c, row in zip(classes, matrix):
        lines.append(c.ljust(w + 5) + "".join(str(v).rjust(w) for v in row))
    return "\n".join(lines)
