"""Dataset kinds: what differs between a text corpus, a folder of images and conversations, in one registry.

A kind says how it recognises its inputs, prepares them into a token dataset, how its models train
(context, window alignment, validation, the samples printed) and are evaluated, and what the server
offers for them. The data, training, evaluation and serve layers ask the registry, never a kind's
package, so that vision (cllm/vision/kind.py) plugs in without those layers importing it:

    kind = for_input("data/digits/train")          # the image kind: a folder of images
    kind = for_tokenizer(tokenizer)                 # the kind of a trained model
    kind.validate(model, tokenizer, tokens, B, T)   # {"val_loss": ..., "val_bits_per_dim": ...}

Registration: a kind's module calls register() when it is imported. The built-in kinds are imported
by name (BUILTIN) on the first lookup, so no caller has to remember to import them, and a lookup
cannot see a partial registry. "text" is the default: the kind of any input no other kind
recognises, and of any tokenizer no other kind claims.

This module is cllm/kinds.py, not part of cllm/data/, because cllm/tokenizers/__init__.py reads a
tokenizer file back through it, and importing a module of cllm/data/ runs cllm/data/__init__.py,
which imports the tokenizers.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Callable

DEFAULT = "text"
# name -> the module that registers it
BUILTIN = {"text": "cllm.data.textkind", "image": "cllm.vision.kind", "chat": "cllm.chat.kind"}


@dataclasses.dataclass(frozen=True)
class DatasetKind:
    """One kind of dataset and its models; every field but `sample_pngs` and `sampler` is required."""

    name: str
    # tokenizer kind (Tokenizer.kind, tokenizer.json's "kind") -> the class that reads such a file back
    tokenizers: dict[str, type]
    # (path) -> whether a file or folder is this kind's input (the default kind's: always)
    recognises: Callable[[str], bool]
    # (path) -> whether a folder inside a text corpus is this kind's, and the corpus skips it whole
    claims_folder: Callable[[str], bool]
    # (data_path, out_dir, PrepareOptions) -> PreparedDataset (cllm/data/prepare.py)
    prepare: Callable[..., object]
    # (PreparedDataset) -> what `cli.py prepare` prints about it
    summary: Callable[[object], str]
    # (tokenizer, --seq-len or None) -> the context its model trains with (None: the run's default)
    seq_len: Callable[[object, int | None], int | None]
    # (tokenizer) -> training windows start at multiples of this many tokens
    align: Callable[[object], int]
    # (model, tokenizer, validation tokens, B, T) -> {"val_loss": mean nats per token, ...}
    validate: Callable[..., dict]
    # (model, tokenizer, prompt, n_tokens, seed) -> the sample printed during training, as text
    sample: Callable[..., str]
    # (checkpoint, data, **cllm/evaluate.py evaluate_checkpoint's options) -> `cli.py evaluate`'s result
    evaluate: Callable[..., dict]
    # (model, tokenizer, n, SamplingConfig, label, as_grid) -> (PNG files' bytes, the n images' class names);
    # None: the model makes no images (POST /v1/images/generations answers "images_not_supported")
    sample_pngs: Callable[..., tuple[list[bytes], list]] | None = None
    # (training split, B, T, seed, align) -> the sampler of training batches, with next_global, state and
    # set_state as cllm/training/data.py BatchSampler's; None: BatchSampler (random windows of the token stream)
    sampler: Callable[..., object] | None = None


_KINDS: dict[str, DatasetKind] = {}
_loaded = False


def register(kind: DatasetKind) -> DatasetKind:
    """Add `kind` (a second kind of the same name replaces the first); returns it."""
    _KINDS[kind.name] = kind
    return kind


def _all() -> dict[str, DatasetKind]:
    global _loaded
    if not _loaded:
        _loaded = True  # before the imports: a built-in kind's module may look kinds up while it loads
        try:
            for name, module in BUILTIN.items():
                importlib.import_module(module)
                if name not in _KINDS:
                    raise RuntimeError(f"{module} did not register the dataset kind {name!r}")
        except BaseException:
            _loaded = False  # the next lookup tries again rather than see some kinds only
            raise
    return _KINDS


def get(name: str) -> DatasetKind:
    kinds = _all()
    if name not in kinds:
        raise KeyError(f"no dataset kind {name!r}; CLLM knows {', '.join(kinds)}")
    return kinds[name]


def names() -> list[str]:
    return list(_all())


def for_input(path, tokenizer=None) -> DatasetKind:
    """The kind that prepares `path`: the kind other than the default whose tokenizer the string `tokenizer`
    names ("image"), else the first other than the default that recognises the path (a folder of images
    is an image dataset whatever the text tokenizer), else the kind of `tokenizer` when it is a trained
    Tokenizer (fine-tuning encodes with it), else the default."""
    kinds = _all()
    if isinstance(tokenizer, str):
        for kind in kinds.values():
            if kind.name != DEFAULT and tokenizer in kind.tokenizers:
                return kind
    path = os.fspath(path)
    for kind in kinds.values():
        if kind.name != DEFAULT and kind.recognises(path):
            return kind
    if tokenizer is not None and not isinstance(tokenizer, str):
        return for_tokenizer(tokenizer)
    return kinds[DEFAULT]


def for_tokenizer(tokenizer) -> DatasetKind:
    """The kind of a model whose tokenizer is `tokenizer` (a Tokenizer)."""
    kinds = _all()
    for kind in kinds.values():
        if kind.name != DEFAULT and tokenizer.kind in kind.tokenizers:
            return kind
    return kinds[DEFAULT]


def for_data(split, tokenizer) -> DatasetKind:
    """The kind that trains and validates `split` (a loaded training or validation split): the one it names
    in its `kind` attribute (a chat split, cllm/chat/data.py), else its tokenizer's."""
    name = getattr(split, "kind", None)
    return get(name) if isinstance(name, str) else for_tokenizer(tokenizer)


def claimed_folder(path: str) -> str | None:
    """The name of the kind other than the default that claims the folder `path` (a text corpus skips it
    whole: data/digits holds images), or None."""
    for kind in _all().values():
        if kind.name != DEFAULT and kind.claims_folder(path):
            return kind.name
    return None


def tokenizer_classes() -> dict[str, type]:
    """Tokenizer kind -> the class that reads its file, over every kind (cllm/tokenizers/__init__.py)."""
    out = {}
    for kind in _all().values():
        out.update(kind.tokenizers)
    return out
