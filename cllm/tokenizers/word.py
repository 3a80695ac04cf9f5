"""Word tokenizer (the original C program's): words and punctuation marks are separate tokens.

Ids: PAD=0, UNK=1, BOS=2, EOS=3, MASK=4, then the training corpus's tokens ranked by frequency,
ties broken by the token string (so training is deterministic), capped at `vocab_size` ids in all.

Pre-split (`WORD_PATTERN`): a newline is a token (so decoded text keeps its lines); a word is a run
of letters/digits/underscore with inner apostrophes kept ("don't", "o'er"); every other visible
character is a token by itself. Words are case-sensitive: lowercasing is a cleaning option.

`decode` rejoins readable text: tokens are separated by one space, except none before closing
punctuation (`.,;:!?)]}%` ...), none after opening brackets, none around newlines; PAD/BOS/EOS/MASK
are left out and UNK is written `<unk>`. So decode(encode(s)) is s in that normal form, and
encode(decode(ids)) == ids for any ids without UNK.
"""
from __future__ import annotations

from collections import Counter

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

WORD_PATTERN = r"\n|\w+(?:['\u2019]\w+)*|[^\w\s]"
SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>", "<mask>"]
NO_SPACE_BEFORE = set(".,;:!?)]}%\u2026\u00bb")
NO_SPACE_AFTER = set("([{\u00ab")


class WordTokenizer(Tokenizer):
    kind = "word"
    pad_id, unk_id, bos_id, eos_id, mask_id = 0, 1, 2, 3, 4

    def __init__(self, words):
        """`words`: the vocabulary after the five specials, in id order (id = 5 + index)."""
        super().__init__()
        self._id_to_token = SPECIALS + list(words)
        self._token_to_id = {t: i for i, t in enumerate(self._id_to_token)}
        if len(self._token_to_id) != len(self._id_to_token):
            raise TokenizerFileError("a word tokenizer's vocabulary has a repeated token")
        self._split = regex.compile(WORD_PATTERN).findall

    @classmethod
    def train(cls, texts, vocab_size: int = 8192, min_frequency: int = 1, progress: bool = True):
        if vocab_size is None or vocab_size <= len(SPECIALS):
            raise VocabSizeError(f"vocab size {vocab_size} leaves no room for words: a word tokenizer needs more than "
                                 f"its {len(SPECIALS)} special tokens; use e.g. --vocab-size 8192")
        split = regex.compile(WORD_PATTERN).findall
        counts: Counter = Counter()
        docs = chars = 0
        with progress_bar(progress, desc="word tokenizer", unit="doc") as bar:
            for text in as_text_iter(texts):
                for piece in text_pieces(text):  # a list of every token of a big text is ~50 bytes a character
                    counts.update(split(piece))
                docs += 1
                chars += len(text)
                del text, piece  # a streamed document is not kept while the next one is read
                bar.update(1)
        total = sum(counts.values())
        if total == 0:
            raise TokenizerError("cannot train a word tokenizer on text without words; give it a non-empty corpus")
        # rank: most frequent first, ties by the string itself -> deterministic across runs
        kept = (w for w, n in counts.items() if n >= min_frequency and w not in SPECIALS)
        ranked = sorted(kept, key=lambda w: (-counts[w], w))
        words = ranked[: vocab_size - len(SPECIALS)]
        tok = cls(words)
        known = sum(counts[w] for w in words)
        tok.train_stats = {
            "documents": docs,
            "characters": chars,
            "tokens": total,
            "distinct_tokens": len(counts),
            "unknown_rate": 1.0 - known / total,
            "top_tokens": [[w, n] for w, n in counts.most_common(20)],
        }
        return tok

    def encode(self, text: str) -> list[int]:
        get = self._token_to_id.get
        ids = [get(t, 1) for t in self._split(text)]
        self._encoded_tokens += len(ids)
        self._encoded_unknown += ids.count(1)
        return ids

    def decode(self, ids) -> str:
        out: list[str] = []
        prev = "\n"  # nothing before the first token
        for i in self._check_ids(ids):
            if i in (0, 2, 3, 4):  # pad, bos, eos, mask: not text
                continue
            tok = self._id_to_token[i]
            if not (tok == "\n" or prev == "\n" or tok in NO_SPACE_BEFORE or prev in NO_SPACE_AFTER):
                out.append(" ")
            out.append(tok)
            prev = tok
        return "".join(out)

    def _to_dict(self) -> dict:
        return {"specials": SPECIALS, "pattern": WORD_PATTERN, "words": self._id_to_token[len(SPECIALS):]}

    @classmethod
    def _from_dict(cls, d: dict, path: str):
        if field(d, "specials", list, path) != SPECIALS:
            raise TokenizerFileError(f"{path}: unexpected special tokens for a word tokenizer; the file is from "
                                     "another program or corrupt")
        words = field(d, "words", list, path)
        if not all(isinstance(w, str) and w for w in words):
            raise TokenizerFileError(f"{path}: the word list holds a non-string or empty token; the file is "
                                     "corrupt, re-create it")
        return cls(words)
