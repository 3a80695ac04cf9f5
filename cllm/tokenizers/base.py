"""What every tokenizer shares: the JSON file format, special-token attributes, statistics.

A tokenizer file is one JSON object:

    {"format": "cllm-tokenizer", "version": 1, "kind": "word"|"char"|"bpe", ...kind fields...,
     "chat_template": "..." (only when it has one), "train_stats": {...}}

It is read with `json.loads` only, so loading never executes anything (no pickle), and every
field is validated before use so that a truncated or foreign file gives one clear message.
"""
from __future__ import annotations

import json
import os

import numpy as np
import regex

from cllm.errors import TokenizerError
from cllm.fileio import atomic_write_text

FORMAT_NAME = "cllm-tokenizer"
FORMAT_VERSION = 1


class TokenizerFileError(TokenizerError):
    """A missing, truncated, corrupt or foreign tokenizer file."""


class VocabSizeError(TokenizerError):
    """A vocabulary size that cannot hold the specials (or, for BPE, the 256 bytes)."""


def progress_bar(progress: bool, **kw):
    """A tqdm bar on stderr; `progress=True` shows it on a terminal only (tqdm's disable=None)."""
    # costly: tqdm takes ~20 ms to import, and only training a tokenizer shows a bar; generate and serve load one
    from tqdm import tqdm  # noqa: PLC0415

    return tqdm(disable=None if progress else True, leave=False, **kw)


PIECE_CHARS = 1 << 16  # characters per piece when a long text is tokenized piece by piece
# Where every tokenizer kind's pre-split has a token boundary whatever surrounds it: before the space
# of letter-space-letter, and after a lone newline between a non-space and a letter. (Word: "\n" is a
# token and words hold no spaces. BPE's GPT-4/GPT-2 patterns: a chunk holding letters starts with at
# most one non-newline character before them and never runs from a letter into a space; a newline
# after a non-space is a chunk of its own or ends a punctuation chunk, also at the end of a piece,
# where GPT-2's `\s+(?!\S)` would differ after a longer whitespace run. None looks behind.)
_CUT = regex.compile(r"(?<=\p{L})(?= \p{L})|(?<=\S\n)(?=\p{L})")


def text_pieces(text: str, size: int = PIECE_CHARS):
    """Consecutive slices of `text` of about `size` characters (the last one, or one without a safe
    cut, longer), cut only where tokenization is unaffected: tokenizing each piece and concatenating
    the ids gives the ids of the whole text. Bounds the memory of tokenizing a big document."""
    n, pos = len(text), 0
    while n - pos > 2 * size:
        m = _CUT.search(text, pos + size)
        if m is None:
            break
        yield text[pos:m.start()]
        pos = m.start()
    yield text[pos:] if pos else text


def as_text_iter(texts):
    """`train` accepts one string or any iterable of strings (streamed once)."""
    if isinstance(texts, str):
        return [texts]
    return texts


class Tokenizer:
    """Base class. Subclasses set `kind`, fill `_id_to_token` and implement encode/decode."""

    kind = ""
    bos_id: int | None = None
    eos_id: int | None = None
    pad_id: int | None = None
    unk_id: int | None = None

    def __init__(self):
        self.train_stats: dict = {}
        # Jinja source that renders a conversation (cllm/chat/template.py), or None: kept from an imported
        # tokenizer_config.json, set by add_chat_tokens, saved in the tokenizer file
        self.chat_template: str | None = None
        # counted by encode(), reported by stats(): how much text it saw and how much was unknown
        self._encoded_tokens = 0
        self._encoded_unknown = 0

    # ---- the shared interface ---------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._id_to_token)

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids) -> str:
        raise NotImplementedError

    def encode_array(self, text: str):
        """encode() as an int32 NumPy array (BPE makes it without a Python list)."""
        return np.asarray(self.encode(text), np.int32)

    def encode_pieces(self, text: str):
        """encode_array(text) in consecutive int32 arrays, one per piece of `text_pieces(text)`:
        the same ids, with memory bounded by the piece size rather than the text's length."""
        for piece in text_pieces(text):
            yield self.encode_array(piece)

    def encode_with_special(self, text: str) -> list[int]:
        """BOS + encode(text) + EOS, leaving out whichever of the two this kind does not have."""
        ids = self.encode(text)
        if self.bos_id is not None:
            ids.insert(0, self.bos_id)
        if self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    def id_to_token(self, token_id: int) -> str:
        """The token's string (the original C program's get_token_string); a TokenizerError for a bad id."""
        if not isinstance(token_id, (int,)) and not hasattr(token_id, "__index__"):
            raise TokenizerError(f"token id must be an integer, got {token_id!r}")
        i = int(token_id)
        if not 0 <= i < self.vocab_size:
            raise TokenizerError(f"token id {i} is out of range: this {self.kind} tokenizer has ids "
                                 f"0..{self.vocab_size - 1}")
        return self._id_to_token[i]

    def token_to_id(self, token: str) -> int | None:
        """The id of a token string, or None when it is not in the vocabulary."""
        return self._token_to_id.get(token)

    def special_token_strings(self) -> dict[str, str]:
        """{"bos_token": "<|endoftext|>", ...}: the strings of this tokenizer's BOS, EOS, PAD and UNK ids, as
        export-hf writes them into tokenizer_config.json and a chat template sees them."""
        ids = {"bos_token": self.bos_id, "eos_token": self.eos_id, "pad_token": self.pad_id, "unk_token": self.unk_id}
        return {name: self.id_to_token(i) for name, i in ids.items() if i is not None}

    def stats(self) -> dict:
        """Size, what training saw (documents, characters, tokens, unknown rate, top tokens),
        and what encode() has seen since this object was made (tokens, unknown rate)."""
        enc = self._encoded_tokens
        return {
            "kind": self.kind,
            "vocab_size": self.vocab_size,
            "specials": {k: getattr(self, k) for k in ("bos_id", "eos_id", "pad_id", "unk_id")},
            "train": dict(self.train_stats),
            "train_coverage": 1.0 - self.train_stats.get("unknown_rate", 0.0),
            "encoded_tokens": enc,
            "encoded_unknown": self._encoded_unknown,
            "encoded_unknown_rate": (self._encoded_unknown / enc) if enc else 0.0,
        }

    def save(self, path: str) -> None:
        """Write the tokenizer as one JSON file, atomically."""
        d = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "kind": self.kind}
        d.update(self._to_dict())
        if self.chat_template is not None:
            d["chat_template"] = self.chat_template
        d["train_stats"] = self.train_stats
        atomic_write_text(os.fspath(path), json.dumps(d, ensure_ascii=False, indent=1) + "\n")

    def _check_ids(self, ids) -> list[int]:
        out = [int(i) for i in ids]
        n = self.vocab_size
        for i in out:
            if not 0 <= i < n:
                raise TokenizerError(f"cannot decode id {i}: this {self.kind} tokenizer has ids 0..{n - 1}")
        return out

    # ---- subclasses ---------------------------------------------------------------------------
    def _to_dict(self) -> dict:
        raise NotImplementedError

    @classmethod
    def _from_dict(cls, d: dict, path: str):
        raise NotImplementedError


def field(d: dict, name: str, typ, path: str):
    """d[name], checked to be of type `typ`, else a TokenizerFileError naming the file and field."""
    if name not in d:
        raise TokenizerFileError(f"{path}: tokenizer file has no {name!r} field; it is truncated or not a CLLM "
                                 "tokenizer (re-create it with `cli.py prepare` or `train_tokenizer`)")
    v = d[name]
    if not isinstance(v, typ) or isinstance(v, bool) and typ is not bool:
        raise TokenizerFileError(f"{path}: field {name!r} of the tokenizer file has the wrong type "
                                 f"({type(v).__name__}); the file is corrupt, re-create it")
    return v


def read_tokenizer_json(path) -> dict:
    path = os.fspath(path)
    if os.path.isdir(path):
        candidate = os.path.join(path, "tokenizer.json")
        if not os.path.isfile(candidate):
            raise TokenizerFileError(f"{path} is a directory without a tokenizer.json; pass the tokenizer file itself")
        path = candidate
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise TokenizerFileError(f"tokenizer file {path} does not exist; check the path or create one with "
                                 "`cli.py prepare`") from None
    except OSError as exc:
        raise TokenizerFileError(f"cannot read tokenizer file {path}: {exc.strerror}; check its permissions") from None
    try:
        d = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenizerFileError(f"{path} is not a valid tokenizer JSON file ({exc.__class__.__name__}: {exc}); it is "
                                 "truncated or corrupt, re-create it") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT_NAME:
        looks_hf = isinstance(d, dict) and "model" in d
        hint = " (it looks like a HuggingFace tokenizer.json, which CLLM exports but does not load)" if looks_hf else ""
        raise TokenizerFileError(f"{path} is not a CLLM tokenizer file (no \"format\": \"{FORMAT_NAME}\"){hint}")
    version = d.get("version")
    if version != FORMAT_VERSION:
        raise TokenizerFileError(f"{path} has tokenizer format version {version!r}, this CLLM reads version "
                                 f"{FORMAT_VERSION}; re-create the tokenizer with this version")
    d["_path"] = path
    return d
