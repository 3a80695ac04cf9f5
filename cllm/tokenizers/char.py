"""Character tokenizer, as nanoGPT's shakespeare_char: the ids are the sorted set of characters.

Tiny Shakespeare gives exactly 65 ids. There are no special tokens (bos/eos/pad/unk are None), so
`encode_with_special` is plain `encode`, and documents are simply concatenated.

An unseen character cannot be represented: `encode` DROPS it, warns once per tokenizer object
(naming the first such character), and counts it in `stats()["encoded_unknown"]`. Dropping keeps
a training run going on slightly dirty text; the count makes the loss visible.
"""
from __future__ import annotations

import warnings

import numpy as np

from cllm.errors import TokenizerError
from cllm.tokenizers.base import (
    Tokenizer,
    TokenizerFileError,
    VocabSizeError,
    as_text_iter,
    field,
    progress_bar,
    text_pieces,
)


def _code_points(text: str) -> np.ndarray:
    """(len(text),) code points: uint8 for ASCII text (a quarter of the memory), else uint32
    (lone surrogates kept as their code point)."""
    if text.isascii():
        return np.frombuffer(text.encode("ascii"), np.uint8)
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)


class CharTokenizer(Tokenizer):
    kind = "char"

    def __init__(self, chars):
        super().__init__()
        chars = list(chars)
        if len(set(chars)) != len(chars) or any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise TokenizerError("a char tokenizer's vocabulary must be distinct single characters")
        self._id_to_token = chars
        self._token_to_id = {c: i for i, c in enumerate(chars)}
        self._warned = False
        # lookup table code point -> id (-1: not in the vocabulary), (max code point + 1,) int32
        self._lut = np.full(max(max(map(ord, chars), default=0) + 1, 128), -1, np.int32)
        for i, c in enumerate(chars):
            self._lut[ord(c)] = i

    @classmethod
    def train(cls, texts, vocab_size: int | None = None, progress: bool = True):
        """The sorted set of characters of `texts`. With `vocab_size` smaller than that set, keep
        the `vocab_size` most frequent characters (ties: smaller code point first), still sorted."""
        counts = np.zeros(128, np.int64)  # (max code point seen + 1,) occurrences
        docs = chars_total = 0
        with progress_bar(progress, desc="char tokenizer", unit="doc") as bar:
            for text in as_text_iter(texts):
                for piece in text_pieces(text):  # bincount copies its input to int64: piece by piece
                    b = np.bincount(_code_points(piece))
                    if len(b) > len(counts):
                        counts = np.concatenate([counts, np.zeros(len(b) - len(counts), np.int64)])
                    counts[: len(b)] += b
                docs += 1
                chars_total += len(text)
                del text, piece  # a streamed document is not kept while the next one is read
                bar.update(1)
        seen = np.flatnonzero(counts)
        if not len(seen):
            raise TokenizerError("cannot train a char tokenizer on empty text; give it a corpus with some characters")
        by_count = seen[np.lexsort((seen, -counts[seen]))]  # most frequent first, ties: smaller code point
        if vocab_size is not None:
            if vocab_size < 1:
                raise VocabSizeError(f"vocab size {vocab_size} is too small for a char tokenizer; use at least 1 (or "
                                     "leave it out to keep every character)")
            kept = by_count[:vocab_size]
        else:
            kept = seen
        tok = cls([chr(c) for c in sorted(kept.tolist())])
        unknown = chars_total - int(counts[kept].sum())
        tok.train_stats = {
            "documents": docs,
            "characters": chars_total,
            "tokens": chars_total - unknown,
            "distinct_characters": len(seen),
            "unknown_rate": unknown / chars_total,
            "top_tokens": [[chr(c), int(counts[c])] for c in by_count[:20].tolist()],
        }
        return tok

    def encode_array(self, text: str) -> np.ndarray:
        cps = _code_points(text)
        lut = self._lut
        if cps.dtype == np.uint8:  # ASCII text: every code point < 128 <= len(lut)
            ids = lut[cps]
        else:
            ids = lut[np.minimum(cps, len(lut) - 1)]
            ids[cps >= len(lut)] = -1
        bad = ids < 0
        if bad.any():
            dropped = int(bad.sum())
            self._encoded_unknown += dropped
            if not self._warned:
                self._warned = True
                first = chr(cps[np.argmax(bad)])
                warnings.warn(
                    f"char tokenizer: dropping {dropped} character(s) not in its vocabulary (first: {first!r}); "
                    "train the tokenizer on text that contains them to keep them (warned once)",
                    stacklevel=3,
                )
            ids = ids[~bad]
        self._encoded_tokens += len(ids)
        return ids

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def decode(self, ids) -> str:
        table = self._id_to_token
        return "".join(table[i] for i in self._check_ids(ids))

    def _to_dict(self) -> dict:
        return {"chars": self._id_to_token}

    @classmethod
    def _from_dict(cls, d: dict, path: str):
        chars = field(d, "chars", list, path)
        try:
            return cls(chars)
        except TokenizerError as exc:
            raise TokenizerFileError(f"{path}: {exc}; the file is corrupt, re-create it") from None
