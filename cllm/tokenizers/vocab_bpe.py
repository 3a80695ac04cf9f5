"""Byte-level BPE with someone else's vocabulary: the ids of an imported tokenizer.

CLLM's BPETokenizer numbers bytes 0..255 by value and merged tokens in merge order. GPT-2's
vocab.json, a HuggingFace tokenizer.json or a tiktoken rank file number them their own way, and may
hold tokens that no merge makes. VocabBPETokenizer keeps a BPETokenizer for the merging (the same
Numba encoder) and maps its ids to the file's ids: `_ext` (internal id -> file id). Tokens that no
merge makes get internal ids after the BPE ones, so that a whole-chunk lookup can still give them.

Options that imported tokenizers have and CLLM's own BPE does not:
  whole_words   a pre-split chunk that is itself a vocabulary token is that token, without merging
                (tiktoken always; HuggingFace's BPE with "ignore_merges": true, e.g. Llama 3)
  prefix_space  a space is put before text that does not start with one (HF ByteLevel add_prefix_space)
  nfc           the text is NFC-normalized first (an HF "NFC" normalizer)
Special tokens keep their file ids and are matched in text only when allowed, as in BPETokenizer.
"""
from __future__ import annotations

import json
import os
import unicodedata

import numpy as np
import regex

from cllm.errors import TokenizerError
from cllm.fileio import atomic_write_text
from cllm.tokenizers.base import TokenizerFileError, field
from cllm.tokenizers.bpe import CACHE_LIMIT, PATTERNS, BPETokenizer, bytes_to_unicode

# special-token names CLLM recognises as BOS / EOS / PAD when the file does not say (first one found)
EOS_NAMES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<|eos|>", "<eos>", "[SEP]")
BOS_NAMES = ("<|begin_of_text|>", "<s>", "<|bos|>", "<bos>", "[CLS]")
PAD_NAMES = ("<|pad|>", "<pad>", "[PAD]")


class VocabBPETokenizer(BPETokenizer):
    kind = "bpe-vocab"

    def __init__(self, vocab: dict[bytes, int], merges, pattern: str = "gpt2", specials: dict[str, int] | None = None,
                 whole_words: bool = False, prefix_space: bool = False, nfc: bool = False, roles: dict | None = None,
                 add_bos: bool = False):
        """`vocab`: token bytes -> id; `merges`: (left bytes, right bytes) in rank order; `specials`:
        special-token string -> id; `roles`: {"bos"|"eos"|"pad": special string} (else guessed); `add_bos`:
        a prompt starts with BOS (Llama 3's tokenizer.json adds it in its post-processor)."""
        missing = [b for b in range(256) if bytes([b]) not in vocab]
        if missing:
            raise TokenizerFileError(f"the vocabulary has no token for byte {missing[0]:#04x} ({len(missing)} bytes "
                                     "missing); CLLM reads byte-level BPE vocabularies that cover all 256 bytes")
        internal = _internal_merges(vocab, merges)
        super().__init__(internal, pattern=pattern, special_tokens=())
        self.file_vocab = dict(vocab)
        self.file_merges = [(bytes(a), bytes(b)) for a, b in merges]
        self.whole_words, self.prefix_space, self.nfc = bool(whole_words), bool(prefix_space), bool(nfc)
        made = set(self.vocab_bytes)
        extra = [bs for bs in vocab if bs not in made]  # tokens no merge makes (reachable by whole_words)
        self._internal_bytes = self.vocab_bytes + extra
        self._ext = np.fromiter((vocab[bs] for bs in self._internal_bytes), np.int32, len(self._internal_bytes))
        self.specials = dict(specials or {})
        size = max([*vocab.values(), *self.specials.values()]) + 1
        table: list = [None] * size  # file id -> bytes (None: an id the file does not use)
        for bs, i in vocab.items():
            table[i] = bs
        for t, i in self.specials.items():
            table[i] = t.encode("utf-8")
        self._table = table
        self._id_to_token = [b.decode("utf-8", "replace") if b is not None else "" for b in table]
        self._token_to_id = {}
        for i, t in enumerate(self._id_to_token):
            self._token_to_id.setdefault(t, i)
        self._token_to_id.update(self.specials)
        self._set_roles(roles or {})
        self.add_bos = bool(add_bos) and self.bos_id is not None
        self._whole_index = None  # chunk text -> internal id, built on first use

    @classmethod
    def train(cls, *args, **kw):
        raise TokenizerError("a bpe-vocab tokenizer is imported (cli.py tokenizer import), not trained; "
                             "train --kind bpe")

    def _set_roles(self, roles: dict) -> None:
        sp = self.specials

        def pick(role, names):
            name = roles.get(role)
            if name is not None and name not in sp:
                raise TokenizerFileError(f"the {role} token {name!r} is not one of the special tokens")
            return sp[name] if name is not None else next((sp[n] for n in names if n in sp), None)

        self.roles = {k: v for k, v in roles.items() if v is not None}
        self.eos_id = pick("eos", EOS_NAMES)
        self.bos_id = pick("bos", BOS_NAMES)
        if self.bos_id is None:
            self.bos_id = self.eos_id
        self.pad_id = pick("pad", PAD_NAMES)
        self.unk_id = None
        order = sorted(sp, key=len, reverse=True)
        self._special_re = regex.compile("(" + "|".join(regex.escape(t) for t in order) + ")") if sp else None

    def special_token_strings(self) -> dict[str, str]:
        """The bos/eos/pad tokens its tokenizer_config.json named, exactly (a role the file left out stays out,
        as transformers leaves it out of a chat template, though CLLM may guess an id for it); without such a
        file, those of the ids."""
        if self.roles:
            return {f"{role}_token": name for role, name in self.roles.items() if role in ("bos", "eos", "pad")}
        return super().special_token_strings()

    def register_special_tokens(self, tokens) -> None:
        if tokens:
            raise TokenizerError("an imported tokenizer keeps the special tokens of its file; add them there")
        self.special_tokens = {}
        self._special_split = None

    # ---- encoding -----------------------------------------------------------------------------
    def _whole(self) -> dict:
        """chunk text -> internal id, for every vocabulary token that is valid UTF-8."""
        if self._whole_index is None:
            idx = {}
            for i, bs in enumerate(self._internal_bytes):
                try:
                    idx.setdefault(bs.decode("utf-8"), i)
                except UnicodeDecodeError:
                    pass
            self._whole_index = idx
        return self._whole_index

    def _encode_chunks(self, chunks: list[str]) -> list[tuple]:
        if not self.whole_words:
            return super()._encode_chunks(chunks)
        whole = self._whole()
        rest = [c for c in chunks if c not in whole]
        done = dict(zip(rest, super()._encode_chunks(rest))) if rest else {}
        return [(whole[c],) if c in whole else done[c] for c in chunks]

    def _reserve_cache(self, n: int) -> None:
        kc = self._kcache
        if self.whole_words and (kc is None or kc["state"][0] >= CACHE_LIMIT or kc["state"][1] >= (1 << 24)):
            self._kcache = self._seeded_cache()
        super()._reserve_cache(n)

    def _seeded_cache(self) -> dict:
        from cllm.kernels import bpe_encode, bpe_split  # noqa: PLC0415 - costly: Numba (cllm/tokenizers/bpe.py)

        whole = self._whole()
        text = "".join(whole)
        cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)
        offsets = np.zeros(len(whole) + 1, np.int64)
        np.cumsum([len(t) for t in whole], out=offsets[1:])
        ids = np.fromiter(whole.values(), np.int32, len(whole))
        pool_cps, pool_ids, ent = _empty_pools(len(ids), len(cps))
        kc = {"dict": bpe_split.new_chunk_cache(), "state": np.zeros(3, np.int64), "cps": pool_cps, "ids": pool_ids,
              "ent": ent}
        bpe_encode.seed_chunk_cache(kc["dict"], kc["state"], pool_cps, pool_ids, ent, cps, offsets, ids)
        return kc

    def _encode_text(self, text: str) -> np.ndarray:
        if self.prefix_space and not text.startswith(" "):
            text = " " + text
        return self._ext[super().encode_array(text)] if text else np.zeros(0, np.int32)

    def encode_array(self, text: str, allowed_special=()) -> np.ndarray:
        """File ids of `text` (special-token strings in it are text unless allowed, see BPETokenizer)."""
        if self.nfc:
            text = unicodedata.normalize("NFC", text)
        if not (allowed_special and self._special_re is not None):
            return self._encode_text(text)
        allowed = set(self.specials) if allowed_special == "all" else set(allowed_special)
        parts = []
        for k, part in enumerate(self._special_re.split(text)):
            if k % 2 == 1 and part in allowed:
                parts.append(np.array([self.specials[part]], np.int32))
                self._encoded_tokens += 1
            elif part:
                parts.append(self._encode_text(part))
        return np.concatenate(parts) if parts else np.zeros(0, np.int32)

    def encode_pieces(self, text: str):
        if self.prefix_space:  # a piece boundary would get a space of its own
            yield self.encode_array(text)
        else:
            yield from super().encode_pieces(text)

    def decode(self, ids) -> str:
        return b"".join(self.token_bytes(i) for i in self._check_ids(ids)).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        bs = self._table[int(token_id)] if 0 <= int(token_id) < len(self._table) else None
        if bs is None:
            raise TokenizerError(f"token id {token_id} is not used by this tokenizer (ids 0..{len(self._table) - 1})")
        return bs

    # ---- files --------------------------------------------------------------------------------
    def export_hf(self, path: str) -> None:
        """Write a HuggingFace tokenizer.json with this tokenizer's own ids, merges and options, that
        `tokenizers` loads and that gives the same ids as `encode(text, allowed_special="all")`."""
        b2u = bytes_to_unicode()

        def show(bs: bytes) -> str:
            return "".join(b2u[x] for x in bs)

        byte_level = {"type": "ByteLevel", "add_prefix_space": self.prefix_space, "trim_offsets": True,
                      "use_regex": False}
        if self.pattern == PATTERNS["gpt2"]:
            pre = {**byte_level, "use_regex": True}
        elif self.prefix_space:  # HF's ByteLevel would put a space before every split piece
            raise TokenizerError("a tokenizer with add_prefix_space and a pre-split other than GPT-2's has no "
                                 "tokenizer.json form")
        else:
            pre = {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": self.pattern}, "behavior": "Isolated", "invert": False},
                byte_level]}
        vocab = {show(bs): i for bs, i in self.file_vocab.items()}
        for t, i in self.specials.items():
            vocab.setdefault(t, i)
        hf = {
            "version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                              "normalized": False, "special": True} for t, i in self.specials.items()],
            "normalizer": {"type": "NFC"} if self.nfc else None,
            "pre_tokenizer": pre,
            "post_processor": self._hf_post_processor(),
            "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": self.whole_words, "vocab": vocab,
                      "merges": [f"{show(a)} {show(b)}" for a, b in self.file_merges]},
        }
        atomic_write_text(os.fspath(path), json.dumps(hf, ensure_ascii=False, indent=1) + "\n")

    def _hf_post_processor(self) -> dict | None:
        """tokenizer.json's post-processor: BOS before a sequence when add_bos (transformers' tokenizer(text)
        then gives encode_prompt's ids), else none."""
        if not self.add_bos:
            return None
        bos = self._id_to_token[self.bos_id]
        return {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos: {"id": bos, "ids": [self.bos_id], "tokens": [bos]}}}

    def _to_dict(self) -> dict:
        b2u = bytes_to_unicode()

        def show(bs: bytes) -> str:
            return "".join(b2u[x] for x in bs)

        return {
            "pattern": self.pattern,
            "vocab": {show(bs): i for bs, i in self.file_vocab.items()},
            "merges": [[show(a), show(b)] for a, b in self.file_merges],
            "special_tokens": self.specials,
            "roles": self.roles,
            "whole_words": self.whole_words, "prefix_space": self.prefix_space, "nfc": self.nfc,
            "add_bos": self.add_bos,
        }

    @classmethod
    def _from_dict(cls, d: dict, path: str):
        u2b = {u: b for b, u in bytes_to_unicode().items()}

        def raw(s):
            if not isinstance(s, str) or any(ch not in u2b for ch in s):
                raise TokenizerFileError(f"{path}: a token is not in byte-level form; the file is corrupt, "
                                         "re-create it")
            return bytes(u2b[ch] for ch in s)

        vocab = {raw(t): i for t, i in field(d, "vocab", dict, path).items()}
        merges = field(d, "merges", list, path)
        if not all(isinstance(m, list) and len(m) == 2 for m in merges):
            raise TokenizerFileError(f"{path}: the merges must be pairs of tokens; the file is corrupt, re-create it")
        specials = field(d, "special_tokens", dict, path)
        if not all(isinstance(i, int) for i in [*vocab.values(), *specials.values()]):
            raise TokenizerFileError(f"{path}: token ids must be integers; the file is corrupt, re-create it")
        roles = d.get("roles") if isinstance(d.get("roles"), dict) else {}
        try:
            return cls(vocab, [(raw(a), raw(b)) for a, b in merges], pattern=field(d, "pattern", str, path),
                       specials=specials, whole_words=bool(d.get("whole_words")),
                       prefix_space=bool(d.get("prefix_space")), nfc=bool(d.get("nfc")), roles=roles,
                       add_bos=bool(d.get("add_bos")))
        except TokenizerFileError as exc:
            raise TokenizerFileError(f"{path}: {exc}") from None


def _internal_merges(vocab: dict[bytes, int], merges) -> list[tuple[int, int]]:
    """The merges as BPETokenizer's (left id, right id) pairs, numbering tokens as it does (bytes by
    value, then each new merged token in order). A merge whose part no earlier merge makes can never
    apply unless a later merge makes that part: it is dropped, or the file refused in that case."""
    index = {bytes([i]): i for i in range(256)}
    out, dropped = [], []
    for k, (a, b) in enumerate(merges):
        for part in (a, b, a + b):
            if part not in vocab:
                shown = part.decode("utf-8", "replace")
                raise TokenizerFileError(f"merge {k + 1} ({a!r} {b!r}) uses {shown!r}, which is not in the vocabulary")
        ia, ib = index.get(a), index.get(b)
        if ia is None or ib is None:
            dropped.append((k, a if ia is None else b))
            continue
        index.setdefault(a + b, len(index))
        out.append((ia, ib))
    for k, part in dropped:
        if part in index:
            raise TokenizerFileError(f"merge {k + 1} uses {part!r}, which only a later merge makes; "
                                     "CLLM reads BPE merges in the order they were learned")
    return out


def _empty_pools(n_tokens: int, n_cps: int):
    """The chunk cache's pools (code points, ids, entries) sized for the whole-vocabulary seeds of
    cllm/kernels/bpe_encode.py seed_chunk_cache plus room to grow."""
    return (np.empty(n_cps + (1 << 16), np.uint32), np.empty(n_tokens + (1 << 16), np.int32),
            np.empty((n_tokens + (1 << 12), 4), np.int64))
