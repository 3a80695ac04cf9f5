"""Character tokenizer, as nanoGPT's shakespeare_char: the ids are the sorted set of characters.

Tiny Shakespeare gives exactly 65 ids. bos/eos/pad/unk are None, so `encode_with_special` is plain
`encode`, and documents are simply concatenated.

Special tokens (a chat model's <|im_start|>, <|im_end|>: cllm/chat/template.py add_chat_tokens) are
strings of several characters with one id each, after the characters' ids. As in BPE, `encode(text)`
reads them as ordinary characters, so user text cannot forge them; `allowed_special="all"` (or a set
of strings) matches them. The file keeps them in "special_tokens", written only when there are some,
so a file without them is the same as before specials existed.

An unseen character cannot be represented: `encode` DROPS it, warns once per tokenizer object
(naming the first such character), and counts it in `stats()["encoded_unknown"]`. Dropping keeps
a training run going on slightly dirty text; the count makes the loss visible.
"""
from __future__ import annotations

import warnings

import numpy as np
import regex

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

    def __init__(self, chars, special_tokens=()):
        super().__init__()
        self._id_to_token = []
        self._token_to_id = {}
        self.special_tokens: dict[str, int] = {}
        self._special_split = None
        self._warned = False
        self._lut = np.full(128, -1, np.int32)
        chars = list(chars)
        if len(set(chars)) != len(chars):
            raise TokenizerError("a char tokenizer's vocabulary must be distinct single characters")
        self.add_chars(chars)
        self.register_special_tokens(special_tokens)

    @property
    def num_chars(self) -> int:
        """The ids 0..num_chars-1 are characters; the special tokens follow."""
        return len(self._id_to_token) - len(self.special_tokens)

    def add_chars(self, chars) -> None:
        """Append the characters of `chars` that are not in the vocabulary yet (new ids after the others, so
        existing ids keep their meaning); only before any special token, whose ids follow the characters."""
        if self.special_tokens:
            raise TokenizerError("a char tokenizer with special tokens cannot take new characters: the special "
                                 "tokens' ids follow the characters'")
        chars = list(chars)
        if any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise TokenizerError("a char tokenizer's vocabulary must be distinct single characters")
        new = [c for c in dict.fromkeys(chars) if c not in self._token_to_id]
        for c in new:
            self._token_to_id[c] = len(self._id_to_token)
            self._id_to_token.append(c)
        # lookup table code point -> id (-1: not in the vocabulary), (max code point + 1,) int32
        top = max(map(ord, self._id_to_token), default=0) + 1
        if top > len(self._lut):
            self._lut = np.concatenate([self._lut, np.full(top - len(self._lut), -1, np.int32)])
        for c in new:
            self._lut[ord(c)] = self._token_to_id[c]

    def register_special_tokens(self, tokens) -> None:
        """Add special tokens (strings of two characters or more) after the current ids; known ones keep their id."""
        for t in tokens:
            if not isinstance(t, str) or len(t) < 2:
                raise TokenizerError(f"a char tokenizer's special token must be a string of two characters or "
                                     f"more (one character is an ordinary token), got {t!r}")
            if t not in self.special_tokens:
                self.special_tokens[t] = len(self._id_to_token)
                self._token_to_id[t] = len(self._id_to_token)
                self._id_to_token.append(t)
        longest_first = sorted(self.special_tokens, key=len, reverse=True)
        self._special_split = (regex.compile("(" + "|".join(map(regex.escape, longest_first)) + ")")
                               if longest_first else None)

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

    def encode_array(self, text: str, allowed_special=()) -> np.ndarray:
        """encode() as an int32 NumPy array."""
        if not allowed_special or self._special_split is None:
            return self._encode_chars(text)
        allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
        parts = []
        for k, part in enumerate(self._special_split.split(text)):  # odd parts: the special-token strings
            if k % 2 == 1 and part in allowed:
                parts.append(np.array([self.special_tokens[part]], np.int32))
                self._encoded_tokens += 1
            elif part:
                parts.append(self._encode_chars(part))
        return np.concatenate(parts) if parts else np.zeros(0, np.int32)

    def _encode_chars(self, text: str) -> np.ndarray:
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

    def encode(self, text: str, allowed_special=()) -> list[int]:
        """Ids of `text`. Special-token strings in the text are ordinary characters unless allowed:
        `allowed_special="all"` or a collection of special-token strings."""
        return self.encode_array(text, allowed_special).tolist()

    def decode(self, ids) -> str:
        table = self._id_to_token
        return "".join(table[i] for i in self._check_ids(ids))

    def token_bytes(self, token_id: int) -> bytes:
        """The UTF-8 bytes of a token (a character, or a special token's string)."""
        return self.id_to_token(token_id).encode("utf-8")

    def _to_dict(self) -> dict:
        d = {"chars": self._id_to_token[:self.num_chars]}
        if self.special_tokens:  # left out when there are none: such a file reads as before specials existed
            d["special_tokens"] = dict(self.special_tokens)
        return d

    @classmethod
    def _from_dict(cls, d: dict, path: str):
        chars = field(d, "chars", list, path)
        specials = d.get("special_tokens", {})
        if not isinstance(specials, dict) or any(isinstance(i, bool) or not isinstance(i, int)
                                                 for i in specials.values()):
            raise TokenizerFileError(f"{path}: field 'special_tokens' of the tokenizer file must map strings to "
                                     "ids; the file is corrupt, re-create it")
        try:
            tok = cls(chars, sorted(specials, key=specials.get))
        except TokenizerError as exc:
            raise TokenizerFileError(f"{path}: {exc}; the file is corrupt, re-create it") from None
        if tok.special_tokens != specials:
            raise TokenizerFileError(f"{path}: the special token ids do not follow the characters' ids; the file is "
                                     "corrupt, re-create it")
        return tok
