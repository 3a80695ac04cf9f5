"""What training measures besides the training loss: the validation loss (cllm/evaluate.py's loop
over non-overlapping windows of the run's T) and the samples it prints."""
from __future__ import annotations

import numpy as np


def evaluate_tokens(model, tokens: np.ndarray, B: int, T: int) -> float:
    """Mean next-token loss over every non-overlapping window of T+1 tokens of `tokens`, B windows per
    forward (deterministic; a tail shorter than a window is not scored)."""
    from cllm.evaluate import window_losses

    total, count = 0.0, 0
    for losses, _ in window_losses(model, tokens, T, B):
        total += float(losses.sum(dtype=np.float64))
        count += losses.size
    return total / count


def validation(model, tokenizer, tokens: np.ndarray, B: int, T: int) -> dict:
    """{"val_loss": ...} over the validation split; an image model's also has "val_bits_per_dim"."""
    if tokenizer.kind == "image":
        from cllm.vision import evaluate_records

        r = evaluate_records(model, tokens, tokenizer, B)
        return {"val_loss": r["loss"], "val_bits_per_dim": r["bits_per_dim"]}
    return {"val_loss": evaluate_tokens(model, tokens, B, T)}


def sample_text(model, tokenizer, prompt: str, n_tokens: int, seed: int, temperature: float = 0.8) -> str:
    """n_tokens sampled after `prompt` (top-k off), for the samples printed during training."""
    from cllm.completion import default_start_ids
    from cllm.generation import Generator, SamplingConfig

    ids = tokenizer.encode(prompt) or default_start_ids(tokenizer)
    gen = Generator(model, eos_id=tokenizer.eos_id)
    out = list(gen.stream(ids, SamplingConfig(max_new_tokens=n_tokens, temperature=temperature, top_k=0, seed=seed)))
    return tokenizer.decode(out)
