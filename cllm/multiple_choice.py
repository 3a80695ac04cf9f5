"""Multiple-choice evaluation by likelihood (`cli.py evaluate CKPT --task FILE.jsonl`), as lm-evaluation-harness
scores HellaSwag, ARC, PIQA and the like.

A task file is JSONL, one question per line:

    {"context": "The cat sat on the", "choices": ["mat.", "sky.", "idea."], "gold": 0}

For each choice the model scores the continuation " " + choice after the context (the harness's target
delimiter; a context that already ends in whitespace keeps it and the delimiter is not added twice, the harness's
_encode_pair moving that whitespace into the continuation): the continuation's tokens are those of
encode(context + continuation) after encode(context)'s, and its log-likelihood is the sum of their
log-probabilities. Then
    acc       the gold choice has the highest log-likelihood
    acc_norm  the gold choice has the highest log-likelihood divided by the choice's length in characters
(the harness's acc_norm: len(choice) of the choice without the delimiter). Ties go to the lower index (argmax).
A context + continuation longer than the model's context keeps its last tokens, as the harness truncates (a
continuation longer than the context itself is scored on the tokens that fit).
The standard errors are the harness's too: sqrt(p (1 - p) / (n - 1)).

One forward per question: its choices are the rows of one (choices, T) batch, padded at the end, and targets of
-1 (no loss) on the context and the padding leave the summed loss of each row = minus its continuation's
log-likelihood.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
from tqdm import tqdm

from cllm.errors import DataError

TASK_FORMAT = ('a JSONL file whose lines are {"context": "...", "choices": ["...", ...], "gold": INDEX}')
PAD_MULTIPLE = 16  # batch widths are rounded up to this, so that few distinct shapes reallocate activations


def read_task(path: str) -> list[dict]:
    """The questions of a task file, each checked; one DataError names the first bad line."""
    if not os.path.isfile(path):
        raise DataError(f"no such task file: {path!r}; give {TASK_FORMAT}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{line_no}: not JSON ({exc.msg}); a task file is {TASK_FORMAT}") from None
            problem = _problem(row)
            if problem:
                raise DataError(f"{path}:{line_no}: {problem}; a task file is {TASK_FORMAT}")
            rows.append(row)
    if not rows:
        raise DataError(f"{path} holds no question; a task file is {TASK_FORMAT}")
    return rows


def _problem(row) -> str | None:
    if not isinstance(row, dict):
        return "a line is not a JSON object"
    if not isinstance(row.get("context"), str):
        return '"context" must be a string'
    choices = row.get("choices")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        return '"choices" must be a list of at least two non-empty strings'
    gold = row.get("gold")
    if isinstance(gold, bool) or not isinstance(gold, int) or not 0 <= gold < len(choices):
        return f'"gold" must be the index of the right choice, 0..{len(choices) - 1}'
    return None


def encode_pair(tokenizer, context: str, choice: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) of one choice, as the harness splits them (see the module doc)."""
    continuation = " " + choice
    stripped = context.rstrip()
    if stripped != context:  # trailing whitespace belongs to the continuation, once
        continuation = context[len(stripped):] + choice
        context = stripped
    whole = list(tokenizer.encode(context + continuation))
    ctx = list(tokenizer.encode(context)) if context else []
    return ctx, whole[len(ctx):]


def choice_loglikelihoods(model, tokenizer, context: str, choices: list[str]) -> list[float]:
    """The summed log-probability of each choice's continuation after the context (one forward)."""
    T_max = model.config.max_seq_len
    rows = []
    for choice in choices:
        ctx, cont = encode_pair(tokenizer, context, choice)
        if not cont:
            raise DataError(f"the choice {choice!r} encodes to no token after its context")
        if not ctx:  # nothing to predict the first token from: start from BOS or a newline
            from cllm.completion import default_start_ids  # noqa: PLC0415  (costly at start-up: Numba)
            ctx = default_start_ids(tokenizer)
        seq = (ctx + cont)[-(T_max + 1):]
        rows.append((seq, min(len(cont), len(seq) - 1)))
    T = min(T_max, -(-max(len(s) - 1 for s, _ in rows) // PAD_MULTIPLE) * PAD_MULTIPLE)
    x = np.zeros((len(rows), T), dtype=np.int32)
    y = np.full((len(rows), T), -1, dtype=np.int32)
    for i, (seq, n_cont) in enumerate(rows):
        L = len(seq) - 1
        x[i, :L] = seq[:-1]
        y[i, L - n_cont:L] = seq[-n_cont:]
    model.loss(x, y)
    losses = model.token_losses()
    return [-float(losses[i].sum(dtype=np.float64)) for i in range(len(rows))]


def evaluate_task(model, tokenizer, questions: list[dict], progress: bool = False) -> dict:
    """acc and acc_norm (with standard errors) of the model on the questions; per question its log-likelihoods."""
    correct = correct_norm = 0
    details = []
    for q in tqdm(questions, unit="question", desc="evaluating", disable=None if progress else True, leave=False):
        lls = np.array(choice_loglikelihoods(model, tokenizer, q["context"], q["choices"]))
        lengths = np.array([float(len(c)) for c in q["choices"]])
        pred, pred_norm = int(np.argmax(lls)), int(np.argmax(lls / lengths))
        correct += pred == q["gold"]
        correct_norm += pred_norm == q["gold"]
        details.append({"loglikelihoods": lls.tolist(), "prediction": pred, "prediction_norm": pred_norm})
    n = len(questions)
    acc, acc_norm = correct / n, correct_norm / n
    return {"questions": n, "acc": acc, "acc_stderr": _stderr(acc, n), "acc_norm": acc_norm,
            "acc_norm_stderr": _stderr(acc_norm, n), "details": details}


def _stderr(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else 0.0


def evaluate_task_file(checkpoint: str, task: str, *, threads=None, tokenizer=None, device="cpu", quantize=None,
                       progress=True) -> dict:
    """`cli.py evaluate CKPT --task FILE`: load, read, score."""
    from cllm.completion import load_for_generation  # noqa: PLC0415  (costly at start-up: Numba and the kernels)

    questions = read_task(task)
    model, tok, path = load_for_generation(checkpoint, tokenizer, threads, device, quantize)
    return {"checkpoint": path, "task": task, **evaluate_task(model, tok, questions, progress=progress)}
