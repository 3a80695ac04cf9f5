"""What training measures besides the training loss, and the samples it prints: each as the dataset's kind
does it (cllm/kinds.py): a text's validation loss is cllm/evaluate.py's loop over non-overlapping windows of
the run's T, an image model's adds bits per dimension (cllm/vision/kind.py)."""
from __future__ import annotations

import numpy as np

from cllm import kinds
from cllm.evaluate import evaluate_tokens

__all__ = ["evaluate_tokens", "sample_text", "validation"]


def validation(model, tokenizer, tokens: np.ndarray, B: int, T: int) -> dict:
    """{"val_loss": ...} over the validation split (a chat split's: over its assistant tokens); an image model's
    also has "val_bits_per_dim"."""
    return kinds.for_data(tokens, tokenizer).validate(model, tokenizer, tokens, B, T)


def sample_text(model, tokenizer, prompt: str, n_tokens: int, seed: int) -> str:
    """The sample printed during training, as text: n_tokens after `prompt` for a text model, one whole
    image drawn in characters for an image model."""
    return kinds.for_tokenizer(tokenizer).sample(model, tokenizer, prompt, n_tokens, seed)
