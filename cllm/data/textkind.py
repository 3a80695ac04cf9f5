"""The text dataset kind (cllm/kinds.py), the default: a corpus of text files, trained with any
context, validated by the mean loss over every window, sampled as text after the run's prompt."""
from __future__ import annotations

from cllm.completion import default_start_ids
from cllm.data.prepare import prepare_text_dataset, summary
from cllm.evaluate import evaluate_text, evaluate_tokens
from cllm.generation import Generator, SamplingConfig
from cllm.kinds import DatasetKind, register
from cllm.tokenizers import KINDS


def prepare(data_path, out_dir, options):
    """prepare_text_dataset with prepare_dataset's PrepareOptions (the image options do not apply to text)."""
    return prepare_text_dataset(data_path, out_dir, options)


def validate(model, tokenizer, tokens, B: int, T: int) -> dict:
    return {"val_loss": evaluate_tokens(model, tokens, B, T)}


def sample_text(model, tokenizer, prompt: str, n_tokens: int, seed: int, temperature: float = 0.8) -> str:
    """n_tokens sampled after `prompt` (top-k off), for the samples printed during training."""
    ids = tokenizer.encode(prompt) or default_start_ids(tokenizer)
    gen = Generator(model, eos_id=tokenizer.eos_id)
    out = list(gen.stream(ids, SamplingConfig(max_new_tokens=n_tokens, temperature=temperature, top_k=0, seed=seed)))
    return tokenizer.decode(out)


TEXT = register(DatasetKind(
    name="text",
    tokenizers=dict(KINDS),
    recognises=lambda path: True,  # the default: whatever no other kind recognises
    claims_folder=lambda path: False,
    prepare=prepare,
    summary=summary,
    seq_len=lambda tokenizer, requested: requested,  # any context; None: the run's default
    align=lambda tokenizer: 1,
    validate=validate,
    sample=sample_text,
    evaluate=evaluate_text,
))
