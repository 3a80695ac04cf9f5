"""Byte-level BPE (as GPT-2/GPT-4, minbpe's RegexTokenizer), trained and applied by Numba kernels.

Ids: 0..255 are the raw bytes (id = byte value), then one id per merged token in training order,
then the special tokens. `vocab_size` counts all of them. Every string is bytes, and every byte has
an id, so decode(encode(s)) == s for every Unicode string.

Text is first pre-split by a regex (GPT-4's pattern by default, "gpt2" available) into chunks that
merges never cross (cllm/tokenizers/pre_split.py). Training counts the distinct chunks once,
streamed over documents, and hands them to cllm/kernels/bpe_train.py, which keeps the pair counts up to
date per merge (the steps: cllm/tokenizers/bpe_trainer.py). Encoding maps each chunk through a cache
(chunk string -> ids); the misses are encoded together by one kernel call.

Special tokens (default `<|endoftext|>`, which is both BOS and EOS as in GPT-2) are NOT recognised
inside text by `encode(text)`, so user text cannot forge them; pass `allowed_special="all"` (or a
set of strings) to match them, as tiktoken does. `export_hf` writes a HuggingFace tokenizer.json.
"""
from __future__ import annotations

import json
import os
import warnings

import numpy as np
import regex

from cllm.errors import TokenizerError
from cllm.fileio import atomic_write_text
from cllm.tokenizers.base import Tokenizer, TokenizerFileError, VocabSizeError, as_text_iter, field
from cllm.tokenizers.bpe_trainer import count_chunks_numba, count_chunks_regex, learn_merges, link_words, token_counts
from cllm.tokenizers.pre_split import PATTERNS, char_classes, resolve_pattern, split_mode

DEFAULT_SPECIALS = ("<|endoftext|>",)
CACHE_LIMIT = 1 << 20  # chunk-cache entries before it is cleared (bounds memory on huge corpora)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (HuggingFace's ByteLevel)."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class BPETokenizer(Tokenizer):
    kind = "bpe"

    def __init__(self, merges, pattern: str = "gpt4", special_tokens=DEFAULT_SPECIALS):
        """`merges`: list of (left id, right id) in training order. The id of a merge's result
        is the id of its bytes if those already have one, else the next free id."""
        super().__init__()
        self.pattern = resolve_pattern(pattern)
        self._split = regex.compile(self.pattern).findall
        vocab: list[bytes] = [bytes([i]) for i in range(256)]
        index: dict[bytes, int] = {v: i for i, v in enumerate(vocab)}
        self.merges: list[tuple[int, int]] = []
        merge_new = []
        for a, b in merges:
            a, b = int(a), int(b)
            if not (0 <= a < len(vocab) and 0 <= b < len(vocab)):
                raise TokenizerFileError(f"merge ({a}, {b}) refers to an id that does not exist yet")
            tok = vocab[a] + vocab[b]
            new = index.get(tok)
            if new is None:
                new = len(vocab)
                vocab.append(tok)
                index[tok] = new
            self.merges.append((a, b))
            merge_new.append(new)
        self._merge_new = merge_new
        self.vocab_bytes = vocab  # id -> bytes for the non-special ids
        self.special_tokens: dict[str, int] = {}
        self._id_to_token = [v.decode("utf-8", errors="replace") for v in vocab]
        self._token_to_id = {}
        for i, v in enumerate(vocab):
            self._token_to_id.setdefault(self._id_to_token[i], i)
        self._ranks = None  # the kernel's merge table, built on first encode
        self._cache: dict[str, tuple] = {}  # chunk -> ids, for a custom pattern (regex path)
        # the built-in patterns are pre-split in Numba, with the chunk cache kept there too
        self._gpt4 = split_mode(self.pattern)
        self._kcache = None
        self.register_special_tokens(special_tokens)

    # ---- special tokens -----------------------------------------------------------------------
    def register_special_tokens(self, tokens) -> None:
        """Add special tokens (strings) after the current ids; known ones keep their id."""
        for t in tokens:
            if not isinstance(t, str) or not t:
                raise TokenizerError(f"a special token must be a non-empty string, got {t!r}")
            if t in self.special_tokens:
                continue
            i = len(self._id_to_token)
            self.special_tokens[t] = i
            self._id_to_token.append(t)
            self._token_to_id[t] = i
        sp = self.special_tokens
        self.eos_id = sp.get("<|endoftext|>", sp.get("<|eos|>"))
        self.bos_id = sp.get("<|bos|>", self.eos_id)
        self.pad_id = sp.get("<|pad|>")
        self.unk_id = None  # byte-level: nothing is unknown
        longest_first = sorted(sp, key=len, reverse=True)
        self._special_split = regex.compile("(" + "|".join(map(regex.escape, longest_first)) + ")") if sp else None

    # ---- training -----------------------------------------------------------------------------
    @classmethod
    def train(cls, texts, vocab_size: int = 4096, pattern: str = "gpt4", special_tokens=DEFAULT_SPECIALS,
              progress: bool = True):
        """Learn `vocab_size - 256 - len(special_tokens)` merges from `texts` (a string or an
        iterable of strings, read once). Ties between equally frequent pairs go to the smaller
        (left id, right id), so training is deterministic. Stops early (with fewer ids) when every
        chunk has become a single token. The steps are in cllm/tokenizers/bpe_trainer.py."""
        special_tokens = list(dict.fromkeys(special_tokens or ()))
        if vocab_size is None or vocab_size < 256 + len(special_tokens):
            raise VocabSizeError(f"vocab size {vocab_size} is too small for byte-level BPE: it needs 256 byte ids + "
                                 f"{len(special_tokens)} special token(s) = {256 + len(special_tokens)} at least; "
                                 "use e.g. --vocab-size 4096")
        pat = resolve_pattern(pattern)
        gpt4 = split_mode(pat)
        count = count_chunks_regex if gpt4 is None else count_chunks_numba
        docs, chars, n_distinct, n_chunks, sym, lens, wcount_a, single = count(as_text_iter(texts), pat, gpt4, progress)
        if n_chunks == 0:
            raise TokenizerError("cannot train a BPE tokenizer on empty text; give it a non-empty corpus")
        wstart, wid, nxt, prv = link_words(lens)
        V = vocab_size - len(special_tokens)
        merge_a, merge_b, merge_new = learn_merges(sym, nxt, prv, wid, wstart, wcount_a, V, progress)
        n_merges = len(merge_a)
        tok = cls(list(zip(merge_a.tolist(), merge_b.tolist())), pattern=pattern, special_tokens=special_tokens)
        if tok._merge_new != merge_new.tolist():  # a 64-bit hash collision: never seen
            raise TokenizerError("internal error: BPE training produced inconsistent token ids (hash collision); "
                                 "please report it")
        tc = token_counts(sym, wid, wcount_a, single, V)
        top = np.argsort(-tc, kind="stable")[:20]
        tok.train_stats = {
            "documents": docs,
            "characters": chars,
            "distinct_chunks": n_distinct,
            "chunks": n_chunks,
            "tokens": int(tc.sum()),
            "merges": n_merges,
            "unknown_rate": 0.0,
            "top_tokens": [[tok._id_to_token[i], int(tc[i])] for i in top if tc[i] > 0],
        }
        if tok.vocab_size < vocab_size:
            warnings.warn(f"bpe: the corpus ran out of pairs to merge; the vocabulary has {tok.vocab_size} ids, "
                          f"not {vocab_size}", stacklevel=2)
        return tok

    # ---- encoding / decoding ------------------------------------------------------------------
    def _merge_table(self):
        from cllm.kernels import bpe_encode as K  # noqa: PLC0415 - costly: Numba and the kernels (~0.45 s); char and word tokenizers never need them

        if self._ranks is None:
            m = np.asarray(self.merges, np.int32).reshape(-1, 2)
            self._ranks = K.bpe_build_ranks(np.ascontiguousarray(m[:, 0]), np.ascontiguousarray(m[:, 1]),
                                            np.asarray(self._merge_new, np.int32))
        return self._ranks

    def _encode_chunks(self, chunks: list[str]) -> list[tuple]:
        """Encode distinct chunk strings with one kernel call (the regex path)."""
        from cllm.kernels import bpe_encode as K  # noqa: PLC0415 - costly: as in _merge_table

        bs = [c.encode("utf-8") for c in chunks]
        offsets = np.zeros(len(bs) + 1, np.int64)
        np.cumsum([len(b) for b in bs], out=offsets[1:])
        data = np.frombuffer(b"".join(bs), np.uint8).astype(np.int32)
        out = np.empty(len(data), np.int32)
        out_offsets = np.empty(len(bs) + 1, np.int64)
        K.bpe_encode_chunks(data, offsets, self._merge_table(), out, out_offsets)
        ids = out.tolist()
        o = out_offsets.tolist()
        return [tuple(ids[o[i]: o[i + 1]]) for i in range(len(bs))]

    def _encode_regex(self, text: str) -> np.ndarray:
        chunks = self._split(text)
        cache = self._cache
        missing = [c for c in set(chunks) if c not in cache]
        if missing:
            if len(cache) + len(missing) > CACHE_LIMIT:
                cache.clear()
            cache.update(zip(missing, self._encode_chunks(missing)))
        out: list[int] = []
        for c in chunks:
            out.extend(cache[c])
        return np.asarray(out, np.int32)

    def _reserve_cache(self, n: int) -> None:
        """Make room in the Numba chunk cache for the chunks of n more code points; past
        CACHE_LIMIT entries (or 64 MiB of pool) it starts again empty, bounding memory."""
        from cllm.kernels import bpe_split as K  # noqa: PLC0415 - costly: as in _merge_table

        kc = self._kcache
        if kc is None or kc["state"][0] >= CACHE_LIMIT or kc["state"][1] >= (1 << 24):
            kc = self._kcache = {"dict": K.new_chunk_cache(), "state": np.zeros(3, np.int64),
                                 "cps": np.empty(1 << 16, np.uint32),
                                 "ids": np.empty(1 << 16, np.int32), "ent": np.empty((1 << 12, 4), np.int64)}
        st = kc["state"]
        wants = (("cps", st[1], min(n, 1 << 24)), ("ids", st[2], min(n, 1 << 24)),
                 ("ent", st[0], min(n // 4 + 64, CACHE_LIMIT)))
        for name, used, want in wants:
            a = kc[name]
            if len(a) - used < want:
                size = max(2 * len(a), used + want)
                b = np.empty((size,) + a.shape[1:], a.dtype)
                b[:used] = a[:used]
                kc[name] = b

    def _encode_fast(self, text: str) -> np.ndarray:
        from cllm.kernels import bpe_encode as K  # noqa: PLC0415 - costly: as in _merge_table

        try:
            cps = np.frombuffer(text.encode("utf-32-le"), np.uint32)  # (n,) code points
        except UnicodeEncodeError as exc:
            raise TokenizerError(f"cannot encode text with a lone surrogate (U+{ord(exc.object[exc.start]):04X} at "
                                 f"{exc.start}); it is not valid Unicode, clean the text first") from None
        n = len(cps)
        cls, ranks = char_classes(), self._merge_table()
        parts = []
        pos = 0
        size = min(4 * n + 16, 1 << 20)  # ids per kernel call; the loop below continues
        while pos < n:
            self._reserve_cache(n - pos)
            kc = self._kcache
            buf = np.empty(size, np.int32)
            new_pos, m = K.bpe_encode_text(cps, pos, cls, self._gpt4, ranks, kc["dict"], kc["state"], kc["cps"],
                                           kc["ids"], kc["ent"], buf)
            if new_pos == pos:  # one chunk longer than the buffer: grow it
                size *= 4
                continue
            parts.append(buf[:m])
            pos = new_pos
        return parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.zeros(0, np.int32)

    def encode_array(self, text: str, allowed_special=()) -> np.ndarray:
        """encode() as an int32 NumPy array (no Python list: faster for datasets)."""
        enc = self._encode_regex if self._gpt4 is None else self._encode_fast
        if allowed_special and self._special_split is not None:
            allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
            parts = []
            for k, part in enumerate(self._special_split.split(text)):
                if k % 2 == 1 and part in allowed:
                    parts.append(np.array([self.special_tokens[part]], np.int32))
                elif part:
                    parts.append(enc(part))
            ids = np.concatenate(parts) if parts else np.zeros(0, np.int32)
        else:
            ids = enc(text)
        self._encoded_tokens += len(ids)
        return ids

    def encode_pieces(self, text: str):
        """encode_array(text) piece by piece (see Tokenizer.encode_pieces); a custom pre-split
        pattern may join text across any cut, so its text is encoded whole."""
        if self._gpt4 is None:
            yield self.encode_array(text)
        else:
            yield from super().encode_pieces(text)

    def encode(self, text: str, allowed_special=()) -> list[int]:
        """Ids of `text`. Special-token strings in the text are ordinary text unless allowed:
        `allowed_special="all"` or a collection of special-token strings."""
        return self.encode_array(text, allowed_special).tolist()

    def decode(self, ids) -> str:
        vb = self.vocab_bytes
        nb = len(vb)
        parts = []
        for i in self._check_ids(ids):
            parts.append(vb[i] if i < nb else self._id_to_token[i].encode("utf-8"))
        return b"".join(parts).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes of a token (id_to_token shows them as text, with U+FFFD for partial UTF-8)."""
        if token_id < len(self.vocab_bytes):
            return self.vocab_bytes[token_id]
        return self.id_to_token(token_id).encode("utf-8")

    # ---- files --------------------------------------------------------------------------------
    def _to_dict(self) -> dict:
        name = next((k for k, v in PATTERNS.items() if v == self.pattern), None)
        return {
            "pattern": self.pattern,
            "pattern_name": name,
            "merges": [list(m) for m in self.merges],
            "special_tokens": self.special_tokens,
        }

    @classmethod
    def _from_dict(cls, d: dict, path: str):
        pattern = field(d, "pattern", str, path)
        merges = field(d, "merges", list, path)
        specials = field(d, "special_tokens", dict, path)
        def is_id(x) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

        if not all(isinstance(m, list) and len(m) == 2 and all(map(is_id, m)) for m in merges):
            raise TokenizerFileError(f"{path}: the merges must be pairs of integer ids; the file is corrupt, "
                                     "re-create it")
        try:
            tok = cls(merges, pattern=pattern, special_tokens=sorted(specials, key=specials.get))
        except TokenizerFileError as exc:
            raise TokenizerFileError(f"{path}: {exc}; the file is corrupt, re-create it") from None
        if tok.special_tokens != specials:
            raise TokenizerFileError(f"{path}: the special token ids do not follow the merged tokens; the file is "
                                     "corrupt, re-create it")
        return tok

    def export_hf(self, path: str) -> None:
        """Write a HuggingFace `tokenizer.json` (BPE model, the same regex pre-split, byte-level
        mapping, merges in rank order, special tokens as added tokens) that the `tokenizers`
        library loads and that gives the same ids as `encode(text, allowed_special="all")`."""
        b2u = bytes_to_unicode()

        def show(i: int) -> str:
            return "".join(b2u[x] for x in self.vocab_bytes[i])

        vocab = {show(i): i for i in range(len(self.vocab_bytes))}
        vocab.update(self.special_tokens)
        seen = set()
        merges = []
        for a, b in self.merges:  # a pair merged twice: only its first rank matters (as in encode)
            if (a, b) not in seen:
                seen.add((a, b))
                merges.append(f"{show(a)} {show(b)}")
        hf = {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [
                {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
                 "special": True}
                for t, i in self.special_tokens.items()
            ],
            "normalizer": None,
            "pre_tokenizer": {
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": self.pattern}, "behavior": "Isolated", "invert": False},
                    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
                ],
            },
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            "model": {
                "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                "vocab": vocab, "merges": merges,
            },
        }
        atomic_write_text(os.fspath(path), json.dumps(hf, ensure_ascii=False, indent=1) + "\n")
