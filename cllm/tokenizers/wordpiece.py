"""WordPiece (BERT's tokenizer), id for id as HuggingFace `tokenizers` with its BERT normalizer and
pre-tokenizer, trained by a Numba kernel that merges the most frequent pair (HuggingFace's
WordPieceTrainer) or, with score="likelihood", by WordPiece's likelihood score.

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

Steps 1-5 are cllm/tokenizers/bert_normalizer.py, which follows HuggingFace's Unicode tables where they
differ from Python's.

Training (train): the words of the corpus are counted once; every word starts as its characters
("c", "##c", ...); the pair with the highest score merges until the vocabulary has `vocab_size`
tokens (cllm/kernels/wordpiece.py keeps all counts up to date per merge). The score is the pair's
count by default, as HuggingFace's WordPieceTrainer (which trains BPE and keeps WordPiece's "##"
pieces); score="likelihood" is count(ab) / (count(a) count(b)), the original WordPiece rule, which
spends its merges on rare words: on Shakespeare about twice the tokens per byte.
"""
from __future__ import annotations

import json
import os
import re
import warnings
from collections import Counter
from itertools import chain

import numpy as np

from cllm.errors import TokenizerError
from cllm.fileio import atomic_write_text
from cllm.tokenizers.base import Tokenizer, TokenizerFileError, VocabSizeError, as_text_iter, field, progress_bar
from cllm.tokenizers.bert_normalizer import bert_normalize, bert_words

SCORES = ("frequency", "likelihood")  # the first is train()'s default and `tokenizer train --score`'s

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PREFIX = "##"
CACHE_LIMIT = 1 << 20  # cached words before the cache starts again empty


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
              special_tokens=SPECIALS, max_word_chars: int = 100, score: str = SCORES[0], progress: bool = True):
        """Learn a vocabulary of `vocab_size` tokens (specials + every character seen, as "c" and
        "##c" where it occurs, + merges) from `texts` (a string or an iterable of strings, read once).
        `score`: "frequency" merges the most frequent pair (HuggingFace's WordPieceTrainer, which is
        BPE's rule), "likelihood" the pair with the highest count(ab) / (count(a) count(b))
        (WordPiece's rule: about twice the tokens per byte of "frequency" on English)."""
        if score not in SCORES:
            raise TokenizerError(f"wordpiece score must be {' or '.join(map(repr, SCORES))}, got {score!r}")
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
    tokens, sym, wstart, lens, wcount, alphabet = _alphabet(counts, specials)
    merge_a, merge_b, merge_new = _merge(tokens, sym, wstart, lens, wcount, max(vocab_size, len(tokens)), frequency,
                                         progress)
    _add_merged_tokens(tokens, merge_a, merge_b, merge_new)
    return tokens, len(merge_a), alphabet


def _alphabet(counts: Counter, specials: list[str]):
    """The words as symbols of the first tokens: (tokens (specials, then "c" for characters that start
    a word and "##c" for the others, in code point order), sym (N,) int32, wstart (W,) int64,
    lens (W,) int64, wcount (W,) int64, alphabet size)."""
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
    return tokens, sym, wstart, lens, wcount, len(uniq)


def _merge(tokens: list[str], sym, wstart, lens, wcount, V: int, frequency: bool, progress: bool):
    """Merge until V tokens or no pair is left, with the kernels of cllm/kernels/wordpiece.py (sym merged in
    place). Returns (merge_a, merge_b, merge_new) (M,) int32 in training order."""
    from cllm.kernels import wordpiece as K  # noqa: PLC0415 (costly: Numba, ~0.4 s, is only needed to train)

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
    wmark = np.zeros(len(wstart), np.int64)
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
    return merge_a[:n_merges], merge_b[:n_merges], merge_new[:n_merges]


def _add_merged_tokens(tokens: list[str], merge_a, merge_b, merge_new) -> None:
    """Append the merged tokens' strings to `tokens` in id order, checking the kernel's ids."""
    for a, b, c in zip(merge_a.tolist(), merge_b.tolist(), merge_new.tolist()):
        t = tokens[a] + tokens[b][len(PREFIX):]
        if c == len(tokens):
            tokens.append(t)
        elif tokens[c] != t:  # a 64-bit hash collision: never seen
            raise TokenizerError("internal error: WordPiece training produced inconsistent tokens (hash collision); "
                                 "please report it")
