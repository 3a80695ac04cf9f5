"""WordPiece (BERT's tokenizer), id for id as HuggingFace `tokenizers` with its BERT normalizer and
pre-tokenizer, trained by a Numba kernel that merges by WordPiece's likelihood score.

Encoding, step by step (each step as HuggingFace's BertNormalizer / BertPreTokenizer / WordPiece):
  1. clean text: control and format characters (Cc Cf Co Cs), NUL and U+FFFD are removed
  2. CJK ideographs get a space on each side (so each is a word of its own)
  3. strip accents (default: when lowercasing): NFD, then nonspacing marks (Mn) removed
  4. lowercase, character by character (no final-sigma rule: "Σ" is always "σ")
  5. split on whitespace; every punctuation character (ASCII punctuation and Unicode P*) is a word
  6. each word: greedy longest match from the left, pieces after the first carry the "##" prefix;
     a word with a piece that matches nothing, or of more than `max_word_chars` characters, is [UNK]
Special tokens ([PAD] [UNK] [CLS] [SEP] [MASK]) are matched in text only when allowed
(`encode(text, allowed_special="all")`, as BPETokenizer); BOS is [CLS], EOS [SEP].

Unicode versions. HuggingFace's Rust crates classify characters by older (categories) or newer
(lowercase) Unicode tables than Python 3.11's unicodedata (14.0). The few hundred code points where
they disagree were found by passing every code point through `tokenizers` 0.23 one at a time; they
are listed below as HF_* so CLLM follows HuggingFace on all of them. tests/test_wordpiece.py checks
all 1.1M code points against `tokenizers` at once.

Training (train): the words of the corpus are counted once; every word starts as its characters
("c", "##c", ...); the pair with the highest count(ab) / (count(a) count(b)) merges until the
vocabulary has `vocab_size` tokens (kernels/wordpiece.py keeps all counts up to date per merge).
"""
from __future__ import annotations

import json
import os
import re
import unicodedata
from collections import Counter
from itertools import chain

import numpy as np

from cllm.errors import TokenizerError
from cllm.fileio import atomic_write_text
from cllm.tokenizers.base import Tokenizer, TokenizerFileError, VocabSizeError, as_text_iter, field, progress_bar

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PREFIX = "##"
CACHE_LIMIT = 1 << 20  # cached words before the cache starts again empty
CJK = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2A6DF), (0x2A700, 0x2B81F),
       (0x2B920, 0x2CEAF), (0x2F800, 0x2FA1F))
# where HuggingFace's tables differ from Python's unicodedata 14.0 (see the module docstring)
HF_KEEP_FORMAT = ((0x890, 0x891), (0x8E2, 0x8E2), (0x110CD, 0x110CD), (0x13430, 0x13438))  # Cf kept by clean text
HF_NOT_MN = (  # Mn characters that strip_accents keeps
    (0x7FD, 0x7FD), (0x898, 0x89F), (0x8CA, 0x8E1), (0x9FE, 0x9FE), (0xAFA, 0xAFF), (0xB55, 0xB55), (0xC04, 0xC04),
    (0xC3C, 0xC3C), (0xD00, 0xD00), (0xD3B, 0xD3C), (0xD81, 0xD81), (0xEBA, 0xEBA), (0x180F, 0x180F), (0x1885, 0x1886),
    (0x1ABF, 0x1ACE), (0x1DF6, 0x1DFB), (0xA82C, 0xA82C), (0xA8C5, 0xA8C5), (0xA8FF, 0xA8FF), (0xA9BD, 0xA9BD),
    (0x10D24, 0x10D27), (0x10EAB, 0x10EAC), (0x10F46, 0x10F50), (0x10F82, 0x10F85), (0x11070, 0x11070),
    (0x11073, 0x11074), (0x110C2, 0x110C2), (0x111C9, 0x111C9), (0x111CF, 0x111CF), (0x1123E, 0x1123E),
    (0x1133B, 0x1133B), (0x11438, 0x1143F), (0x11442, 0x11444), (0x11446, 0x11446), (0x1145E, 0x1145E),
    (0x1182F, 0x11837), (0x11839, 0x1183A), (0x1193B, 0x1193C), (0x1193E, 0x1193E), (0x11943, 0x11943),
    (0x119D4, 0x119D7), (0x119DA, 0x119DB), (0x119E0, 0x119E0), (0x11A01, 0x11A0A), (0x11A33, 0x11A38),
    (0x11A3B, 0x11A3E), (0x11A47, 0x11A47), (0x11A51, 0x11A56), (0x11A59, 0x11A5B), (0x11A8A, 0x11A96),
    (0x11A98, 0x11A99), (0x11C30, 0x11C36), (0x11C38, 0x11C3D), (0x11C3F, 0x11C3F), (0x11C92, 0x11CA7),
    (0x11CAA, 0x11CB0), (0x11CB2, 0x11CB3), (0x11CB5, 0x11CB6), (0x11D31, 0x11D36), (0x11D3A, 0x11D3A),
    (0x11D3C, 0x11D3D), (0x11D3F, 0x11D45), (0x11D47, 0x11D47), (0x11D90, 0x11D91), (0x11D95, 0x11D95),
    (0x11D97, 0x11D97), (0x11EF3, 0x11EF4), (0x16F4F, 0x16F4F), (0x16FE4, 0x16FE4), (0x1CF00, 0x1CF2D),
    (0x1CF30, 0x1CF46), (0x1E000, 0x1E006), (0x1E008, 0x1E018), (0x1E01B, 0x1E021), (0x1E023, 0x1E024),
    (0x1E026, 0x1E02A), (0x1E130, 0x1E136), (0x1E2AE, 0x1E2AE), (0x1E2EC, 0x1E2EF), (0x1E944, 0x1E94A))
HF_MN = ((0x1734, 0x1734),)  # Mc in Unicode 14, a nonspacing mark to HuggingFace: stripped
# starters (combining class 0, no decomposition) to HuggingFace's NFD, not to Python's: NFD must not
# reorder marks across them (found by NFD of each mark next to marks of class 1, 230 and 240)
HF_NFD_STARTERS = (
    (0x7FD, 0x7FD), (0x898, 0x89F), (0x8CA, 0x8D3), (0x9FE, 0x9FE), (0xC3C, 0xC3C), (0xD3B, 0xD3C), (0xEBA, 0xEBA),
    (0x1715, 0x1715), (0x1ABF, 0x1ACE), (0x1DF6, 0x1DFA), (0xA82C, 0xA82C), (0x10D24, 0x10D27), (0x10EAB, 0x10EAC),
    (0x10F46, 0x10F50), (0x10F82, 0x10F85), (0x11070, 0x11070), (0x1133B, 0x1133B), (0x1145E, 0x1145E),
    (0x11839, 0x1183A), (0x11938, 0x11938), (0x1193D, 0x1193E), (0x11943, 0x11943), (0x119E0, 0x119E0),
    (0x11A34, 0x11A34), (0x11A47, 0x11A47), (0x11A99, 0x11A99), (0x11D42, 0x11D42), (0x11D44, 0x11D45),
    (0x11D97, 0x11D97), (0x16FF0, 0x16FF1), (0x1E130, 0x1E136), (0x1E2AE, 0x1E2AE), (0x1E2EC, 0x1E2EF))
HF_NOT_SPACE = ((0x1C, 0x1F),)  # Python's isspace() says yes, Rust's is_whitespace() no
HF_PUNCT = ((0x166D, 0x166D), (0x111C9, 0x111C9))  # punctuation to HuggingFace, not P* in Unicode 14
HF_NOT_PUNCT = (  # P* in Unicode 14, not punctuation to HuggingFace
    (0x61D, 0x61D), (0x9FD, 0x9FD), (0xA76, 0xA76), (0xC77, 0xC77), (0xC84, 0xC84), (0x1B7D, 0x1B7E), (0x2E43, 0x2E4F),
    (0x2E52, 0x2E5D), (0x10EAD, 0x10EAD), (0x10F55, 0x10F59), (0x10F86, 0x10F89), (0x1144B, 0x1144F),
    (0x1145A, 0x1145B),
    (0x1145D, 0x1145D), (0x11660, 0x1166C), (0x116B9, 0x116B9), (0x1183B, 0x1183B), (0x11944, 0x11946),
    (0x119E2, 0x119E2), (0x11A3F, 0x11A46), (0x11A9A, 0x11A9C), (0x11A9E, 0x11AA2), (0x11C41, 0x11C45),
    (0x11C70, 0x11C71), (0x11EF7, 0x11EF8), (0x11FFF, 0x11FFF), (0x12FF1, 0x12FF2), (0x16E97, 0x16E9A),
    (0x16FE2, 0x16FE2), (0x1E95E, 0x1E95F))
# lowercase mappings newer than Unicode 14 (unassigned to Python 3.11): (first, last, offset) or a single target
HF_LOWER = ((0x1C89, 0x1C89, 1), (0xA7CB, 0xA7CB, 0x264 - 0xA7CB), (0xA7CC, 0xA7CC, 1), (0xA7CE, 0xA7CE, 1),
            (0xA7D2, 0xA7D2, 1), (0xA7D4, 0xA7D4, 1), (0xA7DA, 0xA7DA, 1), (0xA7DC, 0xA7DC, 0x19B - 0xA7DC),
            (0x10D50, 0x10D65, 0x20), (0x16EA0, 0x16EB8, 0x1B))

_TABLES = None


def _in(ranges, c: int) -> bool:
    return any(lo <= c <= hi for lo, hi in ranges)


def _char_class(codes) -> str:
    """A regular-expression character class of the sorted code points `codes`, as ranges."""
    parts, run = [], None
    for c in codes:
        if run and c == run[1] + 1:
            run[1] = c
        else:
            if run:
                parts.append(run)
            run = [c, c]
    if run:
        parts.append(run)
    esc = "\\U{:08x}".format
    return "[" + "".join(esc(a) if a == b else esc(a) + "-" + esc(b) for a, b in parts) + "]"


def _tables() -> dict:
    """The compiled character classes, made once per process from unicodedata plus the HF_* lists."""
    global _TABLES
    if _TABLES is None:
        def codes(ranges):
            return {c for lo, hi in ranges for c in range(lo, hi + 1)}

        keep, not_mn = codes(HF_KEEP_FORMAT), codes(HF_NOT_MN)
        not_punct, not_space = codes(HF_NOT_PUNCT), codes(HF_NOT_SPACE)
        control, marks, punct, space = [0, 0xFFFD], sorted(codes(HF_MN)), sorted(codes(HF_PUNCT)), []
        punct += [c for c in range(33, 127) if not chr(c).isalnum()]
        for c, cat in enumerate(map(unicodedata.category, map(chr, range(0x110000)))):
            if cat[0] == "C":
                if cat != "Cn" and c not in keep and c not in (9, 10, 13):
                    control.append(c)
            elif cat == "Mn":
                if c not in not_mn:
                    marks.append(c)
            elif cat[0] == "P" and c >= 127 and c not in not_punct:
                punct.append(c)
        space = [c for c in range(0x3001) if chr(c).isspace() and c not in not_space]  # none above U+3000
        control, marks, punct = sorted(set(control)), sorted(set(marks)), sorted(set(punct))
        p, s = _char_class(punct), _char_class(space)
        lower = {c: chr(c + off) for lo, hi, off in HF_LOWER for c in range(lo, hi + 1)}
        _TABLES = {
            "control": re.compile(_char_class(control)),
            "marks": re.compile(_char_class(marks)),
            "space": re.compile(_char_class(space)),
            "nfd_starters": re.compile("(" + _char_class(sorted(codes(HF_NFD_STARTERS))) + ")"),
            "cjk": re.compile("[" + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in CJK) + "]"),
            "words": re.compile(f"[^{s[1:-1]}{p[1:-1]}]+|{p}"),
            # the same for ASCII text, 2.5x faster than the full classes (no \s: it holds \x1c-\x1f)
            "ascii_words": re.compile(r"[^\t\n\x0b\x0c\r !-/:-@\[-`{-~]+|[!-/:-@\[-`{-~]"),
            "lower_fix": re.compile(_char_class(sorted(lower))),
            "lower_map": str.maketrans(lower),
        }
    return _TABLES


def bert_normalize(text: str, clean_text: bool = True, cjk: bool = True, strip_accents: bool = True,
                   lowercase: bool = True, spaces: bool = True) -> str:
    """HuggingFace's BertNormalizer (steps 1-4 of the module docstring). `spaces=False` leaves out
    clean text's turning every whitespace character into " " (the words are the same either way)."""
    t = _tables()
    ascii_text = text.isascii()
    if clean_text:
        text = t["control"].sub("", text)
        if spaces:
            text = t["space"].sub(" ", text)
    if not ascii_text:
        if cjk:
            text = t["cjk"].sub(r" \g<0> ", text)
        if strip_accents:
            if t["nfd_starters"].search(text):  # NFD between them, each kept as it is
                parts = t["nfd_starters"].split(text)
                text = "".join(x if k % 2 else unicodedata.normalize("NFD", x) for k, x in enumerate(parts))
            else:
                text = unicodedata.normalize("NFD", text)
            text = t["marks"].sub("", text)
    if lowercase:
        if ascii_text:
            return text.lower()
        text = text.replace("\u03a3", "\u03c3").lower()  # Python's lower() alone would give a final "ς"
        if t["lower_fix"].search(text):
            text = text.translate(t["lower_map"])
    return text


def bert_words(text: str) -> list[str]:
    """HuggingFace's BertPreTokenizer: whitespace-separated words, each punctuation character alone."""
    return _tables()["ascii_words" if text.isascii() else "words"].findall(text)


class WordPieceTokenizer(Tokenizer):
    kind = "wordpiece"

    def __init__(self, vocab, unk_token: str = "[UNK]", prefix: str = PREFIX, max_word_chars: int = 100,
                 lowercase: bool = True, strip_accents: bool | None = None, clean_text: bool = True, cjk: bool = True,
                 special_tokens=SPECIALS):
        """`vocab`: the token strings in id order (continuation pieces start with `prefix`). A token
        listed twice keeps its last id for encoding (as BERT's vocab.txt is read)."""
        super().__init__()
        self._id_to_token = [str(t) for t in vocab]
        self._token_to_id = {t: i for i, t in enumerate(self._id_to_token)}
        if unk_token not in self._token_to_id:
            raise TokenizerFileError(f"the unknown token {unk_token!r} is not in the vocabulary")
        self.unk_token, self.prefix, self.max_word_chars = unk_token, prefix, int(max_word_chars)
        self.lowercase, self.clean_text, self.cjk = bool(lowercase), bool(clean_text), bool(cjk)
        self.strip_accents = strip_accents  # None: the same as lowercase (BERT's rule)
        self.special_tokens = {t: self._token_to_id[t] for t in special_tokens if t in self._token_to_id}
        get = self.special_tokens.get
        self.unk_id = self._token_to_id[unk_token]
        self.pad_id, self.bos_id, self.eos_id = get("[PAD]"), get("[CLS]"), get("[SEP]")
        order = sorted(self.special_tokens, key=len, reverse=True)
        self._special_re = re.compile("(" + "|".join(map(re.escape, order)) + ")") if order else None
        self._longest = max((len(t) for t in self._id_to_token), default=1)
        self._cache: dict[str, tuple] = {}

    # ---- encoding -----------------------------------------------------------------------------
    def normalize(self, text: str) -> str:
        strip = self.lowercase if self.strip_accents is None else self.strip_accents
        return bert_normalize(text, self.clean_text, self.cjk, strip, self.lowercase, spaces=False)

    def _word_ids(self, word: str) -> tuple:
        """Greedy longest-match-first pieces of one word; (unk,) when a piece matches nothing."""
        if len(word) > self.max_word_chars:
            return (self.unk_id,)
        vocab, out, start, n = self._token_to_id, [], 0, len(word)
        while start < n:
            end = min(n, start + self._longest)
            while end > start:
                i = vocab.get(word[start:end] if start == 0 else self.prefix + word[start:end])
                if i is not None:
                    break
                end -= 1
            else:
                return (self.unk_id,)
            out.append(i)
            start = end
        return tuple(out)

    def _encode_plain(self, text: str) -> list[int]:
        cache = self._cache
        words = bert_words(self.normalize(text))
        if len(cache) + len(words) > CACHE_LIMIT:
            cache.clear()
        parts = list(map(cache.get, words))  # word -> ids, None for a word not seen yet
        if None in parts:
            for i, ids in enumerate(parts):
                if ids is None:
                    parts[i] = cache[words[i]] = self._word_ids(words[i])
        return list(chain.from_iterable(parts))

    def encode(self, text: str, allowed_special=()) -> list[int]:
        """Ids of `text`; special-token strings in it are text unless allowed ("all" or a set)."""
        if not (allowed_special and self._special_re is not None):
            out = self._encode_plain(text)
        else:
            allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
            out = []
            for k, part in enumerate(self._special_re.split(text)):
                if k % 2 == 1 and part in allowed:
                    out.append(self.special_tokens[part])
                elif part:
                    out.extend(self._encode_plain(part))
        self._encoded_tokens += len(out)
        self._encoded_unknown += out.count(self.unk_id)
        return out

    def encode_array(self, text: str, allowed_special=()) -> np.ndarray:
        return np.asarray(self.encode(text, allowed_special), np.int32)

    def decode(self, ids) -> str:
        """Tokens joined by spaces, "##" pieces glued to the token before (lowercase, accents
        stripped: the text as the model sees it, not the original)."""
        out: list[str] = []
        p = self.prefix
        for i in self._check_ids(ids):
            t = self._id_to_token[i]
            if t.startswith(p) and out:
                out.append(t[len(p):])
            else:
                out.append((" " if out else "") + t)
        return "".join(out)

    # ---- training -----------------------------------------------------------------------------
    @classmethod
    def train(cls, texts, vocab_size: int = 4096, lowercase: bool = True, strip_accents: bool | None = None,
              special_tokens=SPECIALS, max_word_chars: int = 100, score: str = "likelihood", progress: bool = True):
        """Learn a vocabulary of `vocab_size` tokens (specials + every character seen, as "c" and
        "##c" where it occurs, + merges) from `texts` (a string or an iterable of strings, read once).
        `score`: "likelihood" merges the pair with the highest count(ab) / (count(a) count(b))
        (WordPiece's rule), "frequency" the most frequent pair (HuggingFace's WordPieceTrainer,
        which is BPE's rule: about half the tokens per byte of "likelihood" on English)."""
        if score not in ("likelihood", "frequency"):
            raise TokenizerError(f"wordpiece score must be 'likelihood' or 'frequency', got {score!r}")
        special_tokens = list(dict.fromkeys(special_tokens or ()))
        if "[UNK]" not in special_tokens:
            special_tokens.insert(0, "[UNK]")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size <= len(special_tokens):
            raise VocabSizeError(f"vocab size {vocab_size} is too small for WordPiece: it needs more than the "
                                 f"{len(special_tokens)} special tokens; use e.g. --vocab-size 4096")
        probe = cls(special_tokens, lowercase=lowercase, strip_accents=strip_accents, special_tokens=special_tokens)
        counts, docs, chars = _count_words(as_text_iter(texts), probe, progress)
        if not counts:
            raise TokenizerError("cannot train a WordPiece tokenizer on empty text; give it a non-empty corpus")
        tokens, merges, alphabet = _learn(counts, special_tokens, vocab_size, score == "frequency", progress)
        tok = cls(tokens, lowercase=lowercase, strip_accents=strip_accents, max_word_chars=max_word_chars,
                  special_tokens=special_tokens)
        n = sum(counts.values())
        tok.train_stats = {"documents": docs, "characters": chars, "words": n, "distinct_words": len(counts),
                           "alphabet": alphabet, "merges": merges, "score": score, "unknown_rate": 0.0}
        if tok.vocab_size < vocab_size:
            import warnings

            warnings.warn(f"wordpiece: the corpus ran out of pairs to merge; the vocabulary has {tok.vocab_size} ids, "
                          f"not {vocab_size}", stacklevel=2)
        return tok

    # ---- files --------------------------------------------------------------------------------
    def _to_dict(self) -> dict:
        return {"vocab": self._id_to_token, "unk_token": self.unk_token, "prefix": self.prefix,
                "max_word_chars": self.max_word_chars, "lowercase": self.lowercase, "strip_accents": self.strip_accents,
                "clean_text": self.clean_text, "cjk": self.cjk, "special_tokens": list(self.special_tokens)}

    @classmethod
    def _from_dict(cls, d: dict, path: str):
        vocab = field(d, "vocab", list, path)
        strip = d.get("strip_accents")
        if not all(isinstance(t, str) for t in vocab) or strip not in (None, True, False):
            raise TokenizerFileError(f"{path}: the WordPiece vocabulary must be a list of strings; the file is "
                                     "corrupt, re-create it")
        return cls(vocab, unk_token=field(d, "unk_token", str, path), prefix=field(d, "prefix", str, path),
                   max_word_chars=field(d, "max_word_chars", int, path), lowercase=field(d, "lowercase", bool, path),
                   strip_accents=strip, clean_text=field(d, "clean_text", bool, path), cjk=field(d, "cjk", bool, path),
                   special_tokens=field(d, "special_tokens", list, path))

    def export_hf(self, path: str) -> None:
        """Write a HuggingFace tokenizer.json (WordPiece model, BertNormalizer, BertPreTokenizer,
        specials as added tokens) that gives the same ids as `encode(text, allowed_special="all")`."""
        hf = {
            "version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                              "normalized": False, "special": True} for t, i in self.special_tokens.items()],
            "normalizer": {"type": "BertNormalizer", "clean_text": self.clean_text, "handle_chinese_chars": self.cjk,
                           "strip_accents": self.strip_accents, "lowercase": self.lowercase},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": None,
            "decoder": {"type": "WordPiece", "prefix": self.prefix, "cleanup": True},
            "model": {"type": "WordPiece", "unk_token": self.unk_token, "continuing_subword_prefix": self.prefix,
                      "max_input_chars_per_word": self.max_word_chars, "vocab": self._token_to_id},
        }
        atomic_write_text(os.fspath(path), json.dumps(hf, ensure_ascii=False, indent=1) + "\n")

    def export_vocab_txt(self, path: str) -> None:
        """BERT's vocab.txt: one token per line, line number = id."""
        if any("\n" in t or "\r" in t or t != t.rstrip() for t in self._id_to_token):
            raise TokenizerError("a token ends in whitespace or holds a line break; vocab.txt cannot hold it "
                                 "(use tokenizer.json)")
        atomic_write_text(os.fspath(path), "".join(t + "\n" for t in self._id_to_token))

    @classmethod
    def from_vocab_txt(cls, path: str, lowercase: bool | None = None):
        """BERT's vocab.txt. `lowercase` None: uncased unless a token holds an uppercase letter
        (bert-base-cased's vocabulary does, bert-base-uncased's does not)."""
        try:
            with open(path, encoding="utf-8") as f:
                lines = [ln.rstrip() for ln in f.read().split("\n")]
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenizerFileError(f"cannot read {path}: {exc}") from None
        if lines and lines[-1] == "":
            lines.pop()
        if lowercase is None:
            lowercase = not any(t != t.lower() for t in lines if not (t.startswith("[") and t.endswith("]")))
        return cls(lines, lowercase=lowercase)

    @classmethod
    def from_hf(cls, d: dict, path: str):
        """A HuggingFace tokenizer.json whose model is WordPiece (BertNormalizer or none,
        BertPreTokenizer); anything else is refused, naming it."""
        m = d["model"]
        vocab = m.get("vocab")
        if not isinstance(vocab, dict) or sorted(vocab.values()) != list(range(len(vocab))):
            raise TokenizerFileError(f"{path}: the WordPiece vocabulary must number its tokens 0..n-1")
        tokens = sorted(vocab, key=vocab.get)
        added = [a for a in d.get("added_tokens") or [] if isinstance(a, dict)]
        for a in sorted(added, key=lambda a: a.get("id", -1)):
            if a.get("content") not in vocab:
                if a.get("id") != len(tokens):
                    raise TokenizerFileError(f"{path}: the added token {a.get('content')!r} has an id outside the "
                                             "vocabulary")
                tokens.append(a["content"])
        pre = d.get("pre_tokenizer")
        if not (isinstance(pre, dict) and pre.get("type") == "BertPreTokenizer"):
            raise TokenizerFileError(f"{path}: the pre-tokenizer {json.dumps(pre)[:100]} cannot be reproduced; CLLM's "
                                     "WordPiece reads BertPreTokenizer")
        norm = d.get("normalizer")
        if norm is None:
            opts = dict(lowercase=False, strip_accents=False, clean_text=False, cjk=False)
        elif isinstance(norm, dict) and norm.get("type") == "BertNormalizer":
            opts = dict(lowercase=bool(norm.get("lowercase", True)), strip_accents=norm.get("strip_accents"),
                        clean_text=bool(norm.get("clean_text", True)), cjk=bool(norm.get("handle_chinese_chars", True)))
        else:
            raise TokenizerFileError(f"{path}: the normalizer {json.dumps(norm)[:100]} cannot be reproduced; CLLM's "
                                     "WordPiece reads BertNormalizer or none")
        specials = [a["content"] for a in added if isinstance(a.get("content"), str)]
        return cls(tokens, unk_token=m.get("unk_token", "[UNK]"), prefix=m.get("continuing_subword_prefix", PREFIX),
                   max_word_chars=int(m.get("max_input_chars_per_word", 100)), special_tokens=specials, **opts)


def _count_words(texts, probe: WordPieceTokenizer, progress: bool):
    """Distinct normalized, pre-tokenized words of the corpus with their counts."""
    counts: Counter = Counter()
    docs = chars = 0
    with progress_bar(progress, desc="wordpiece: counting words", unit="doc") as bar:
        for text in texts:
            counts.update(bert_words(probe.normalize(text)))
            docs += 1
            chars += len(text)
            bar.update(1)
    return counts, docs, chars


HASH_BASE = np.uint64(1099511628211)


def _hash(s: str) -> np.uint64:
    h = np.uint64(0)
    with np.errstate(over="ignore"):
        for ch in s:
            h = h * HASH_BASE + np.uint64(ord(ch) + 1)
    return h


def _learn(counts: Counter, specials: list[str], vocab_size: int, frequency: bool, progress: bool):
    """(tokens in id order, merges made, alphabet size): the Numba merge loop over the words."""
    from kernels import wordpiece as K

    words = list(counts)
    wcount = np.fromiter(counts.values(), np.int64, len(words))
    lens = np.fromiter(map(len, words), np.int64, len(words))
    cps = np.frombuffer("".join(words).encode("utf-32-le", "surrogatepass"), np.uint32)
    wstart = np.zeros(len(words), np.int64)
    np.cumsum(lens[:-1], out=wstart[1:])
    first = np.zeros(len(cps), bool)
    first[wstart] = True
    # alphabet: "c" for characters that start a word, "##c" for the others, in code point order
    key = cps.astype(np.int64) * 2 + (~first)  # even: word start, odd: continuation
    uniq, inv = np.unique(key, return_inverse=True)
    tokens = list(specials) + [(chr(k // 2) if k % 2 == 0 else PREFIX + chr(k // 2)) for k in uniq.tolist()]
    known = {t: i for i, t in enumerate(tokens)}
    if len(known) < len(tokens):  # a special token that is also a character: keep one id for it
        raise TokenizerError("a special token is a single character of the corpus; choose other special tokens")
    base = len(specials)
    sym = (inv + base).astype(np.int32)
    V = max(vocab_size, len(tokens))
    N = len(sym)
    cap = 3 * N + 16
    tok_hash = np.zeros(V, np.uint64)
    tok_len = np.zeros(V, np.int64)
    for i, t in enumerate(tokens):
        tok_hash[i], tok_len[i] = _hash(t), len(t)
    table = K.new_token_table()
    K.fill_token_table(table, tok_hash, len(tokens))
    powtab = np.ones(int(lens.max()) + 4, np.uint64)
    with np.errstate(over="ignore"):
        for k in range(1, len(powtab)):
            powtab[k] = powtab[k - 1] * HASH_BASE
    state = np.zeros(6, np.int64)
    state[4] = len(tokens)
    pairs = K.new_pair_table()
    pa, pb = np.zeros(cap, np.int32), np.zeros(cap, np.int32)
    pcount, phead, pscore = np.zeros(cap, np.int64), np.zeros(cap, np.int32), np.zeros(cap, np.float64)
    occ_word, occ_next = np.zeros(cap, np.int32), np.zeros(cap, np.int32)
    shead = np.full(V, -1, np.int32)
    adj_pair, adj_next = np.zeros(2 * cap, np.int32), np.zeros(2 * cap, np.int32)
    hs, hp = np.zeros(2 * cap, np.float64), np.zeros(2 * cap, np.int32)
    scount = np.zeros(V, np.int64)
    scount[0] = -1 if frequency else 0  # id 0 is a special token: the kernel's mode flag
    wlen = lens.astype(np.int32)
    K.wp_train_init(sym, wstart, wlen, wcount, scount, pairs, pa, pb, pcount, phead, pscore, occ_word, occ_next,
                    shead, adj_pair, adj_next, hs, hp, state)
    n_new = V - len(tokens)
    merge_a, merge_b, merge_new = (np.zeros(max(n_new, 1) * 2 + 16, np.int32) for _ in range(3))
    wmark = np.zeros(len(words), np.int64)
    step = max(1, n_new // 100)
    with progress_bar(progress, desc="wordpiece: merging", unit="tok", total=n_new) as bar:
        while state[4] < V and state[3] > 0:
            if state[5] + step > len(merge_a):
                merge_a, merge_b, merge_new = (np.concatenate([x, np.zeros_like(x)])
                                               for x in (merge_a, merge_b, merge_new))
            before = int(state[4])
            K.wp_train_steps(sym, wstart, wlen, wcount, wmark, scount, pairs, pa, pb, pcount, phead, pscore, occ_word,
                             occ_next, shead, adj_pair, adj_next, hs, hp, state, tok_hash, tok_len, powtab,
                             _hash(PREFIX), table, V, step, merge_a, merge_b, merge_new)
            bar.update(int(state[4]) - before)
    n_merges = int(state[5])
    for a, b, c in zip(merge_a[:n_merges].tolist(), merge_b[:n_merges].tolist(), merge_new[:n_merges].tolist()):
        t = tokens[a] + tokens[b][len(PREFIX):]
        if c == len(tokens):
            tokens.append(t)
        elif tokens[c] != t:  # a 64-bit hash collision: never seen
            raise TokenizerError("internal error: WordPiece training produced inconsistent tokens (hash collision); "
                                 "please report it")
    return tokens, n_merges, len(uniq)
