"""Character tokenizer, as nanoGPT's shakespeare_char: the ids are the sorted set of characters.

Tiny Shakespeare gives exactly 65 ids. There are no special tokens (bos/eos/pad/unk are None), so
`encode_with_special` is plain `encode`, and documents are simply concatenated.

An unseen character cannot be represented: `encode` DROPS it, warns once per tokenizer object
(naming the first such character), and counts it in `stats()["encoded_unknown"]`. Dropping keeps
a training run going on slightly dirty text; the count makes the loss visible.
"""
from __future__ import annotations

import warnings
from collections import Counter

from cllm.errors import TokenizerError
from cllm.tokenizers.base import Tokenizer, TokenizerFileError, VocabSizeError, as_text_iter, field, progress_bar


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

    @classmethod
    def train(cls, texts, vocab_size: int | None = None, progress: bool = True):
        """The sorted set of characters of `texts`. With `vocab_size` smaller than that set, keep
        the `vocab_size` most frequent characters (ties: smaller code point first), still sorted."""
        counts: Counter = Counter()
        docs = chars_total = 0
        with progress_bar(progress, desc="char tokenizer", unit="doc") as bar:
            for text in as_text_iter(texts):
                counts.update(text)
                docs += 1
                chars_total += len(text)
                bar.update(1)
        if not counts:
            raise TokenizerError("cannot train a char tokenizer on empty text; give it a corpus with some characters")
        if vocab_size is not None:
            if vocab_size < 1:
                raise VocabSizeError(f"vocab size {vocab_size} is too small for a char tokenizer; use at least 1 (or leave it out to keep every character)")
            kept = sorted(counts, key=lambda c: (-counts[c], c))[:vocab_size]
        else:
            kept = list(counts)
        tok = cls(sorted(kept))
        unknown = sum(n for c, n in counts.items() if c not in tok._token_to_id)
        tok.train_stats = {
            "documents": docs,
            "characters": chars_total,
            "tokens": chars_total - unknown,
            "distinct_characters": len(counts),
            "unknown_rate": unknown / chars_total,
            "top_tokens": [[c, n] for c, n in counts.most_common(20)],
        }
        return tok

    def encode(self, text: str) -> list[int]:
        table = self._token_to_id
        try:
            ids = [table[c] for c in text]  # fast path: every character known
        except KeyError:
            ids = [table[c] for c in text if c in table]
            dropped = len(text) - len(ids)
            self._encoded_unknown += dropped
            if not self._warned:
                self._warned = True
                first = next(c for c in text if c not in table)
                warnings.warn(
                    f"char tokenizer: dropping {dropped} character(s) not in its vocabulary (first: {first!r}); "
                    "train the tokenizer on text that contains them to keep them (warned once)",
                    stacklevel=2,
                )
        self._encoded_tokens += len(ids)
        return ids

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
