"""Reading tokenizers made elsewhere into CLLM tokenizers that give the same ids.

    tok = import_tokenizer("gpt2/tokenizer.json")     # HuggingFace: byte-level BPE or WordPiece
    tok = import_tokenizer("bert/vocab.txt")          # BERT's WordPiece vocabulary
    tok = import_tokenizer("gpt2/vocab.json")         # GPT-2's vocab.json + merges.txt beside it
    tok = import_tokenizer("cl100k_base.tiktoken")    # tiktoken ranks (pattern from the name or `pattern=`)
    tok = import_tokenizer("tok.json")                # a CLLM tokenizer file is read as it is

A directory is searched for tokenizer.json, then vocab.json + merges.txt, then vocab.txt, then one
*.tiktoken file. What CLLM cannot reproduce exactly (another normalizer, a Unigram model, byte
fallback, ...) is refused with one TokenizerFileError line naming it; nothing is approximated.
"""
from __future__ import annotations

import base64
import binascii
import json
import os

from cllm.tokenizers import load_tokenizer
from cllm.tokenizers.base import FORMAT_NAME, Tokenizer, TokenizerFileError
from cllm.tokenizers.bpe import PATTERNS, bytes_to_unicode
from cllm.tokenizers.vocab_bpe import VocabBPETokenizer
from cllm.tokenizers.wordpiece import WordPieceTokenizer

# tiktoken's split patterns by encoding name (cl100k's is CLLM's "gpt4"); o200k's from tiktoken_ext/openai_public.py
O200K = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
TIKTOKEN_PATTERNS = {"gpt2": PATTERNS["gpt2"], "r50k": PATTERNS["gpt2"], "p50k": PATTERNS["gpt2"],
                     "cl100k": PATTERNS["gpt4"], "gpt4": PATTERNS["gpt4"], "o200k": O200K}
# ranks in each public file: a file of another size is not that encoding, and tiktoken's specials do not apply
TIKTOKEN_SIZES = {"gpt2": 50256, "r50k": 50256, "p50k": 50280, "cl100k": 100256, "o200k": 199998}
# the special tokens tiktoken adds to its public encodings (the rank files do not hold them)
TIKTOKEN_SPECIALS = {
    "gpt2": {"<|endoftext|>": 50256}, "r50k": {"<|endoftext|>": 50256},
    "p50k": {"<|endoftext|>": 50256},
    "cl100k": {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259, "<|fim_suffix|>": 100260,
               "<|endofprompt|>": 100276},
    "o200k": {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
}


def import_tokenizer(path: str, pattern: str | None = None) -> Tokenizer:
    """A CLLM tokenizer giving the same ids as the tokenizer file (or directory) at `path`.
    `pattern` names the split pattern of a tiktoken file (gpt2, cl100k, o200k or a regex) when
    its file name does not tell. Raises TokenizerFileError for anything it cannot reproduce."""
    path = _resolve(os.fspath(path))
    name = os.path.basename(path)
    if name.endswith(".tiktoken") or pattern is not None and not name.endswith(".json"):
        return read_tiktoken(path, pattern)
    if name.endswith(".txt"):
        return read_bert_vocab(path)
    d = _read_json(path)
    if isinstance(d, dict) and d.get("format") == FORMAT_NAME:
        return load_tokenizer(path)
    if isinstance(d, dict) and isinstance(d.get("model"), dict):
        return read_hf_json(d, path)
    if isinstance(d, dict) and d and all(isinstance(v, int) for v in d.values()):
        return read_gpt2_files(d, path)
    raise TokenizerFileError(f"{path} is neither a CLLM tokenizer, a HuggingFace tokenizer.json nor GPT-2's vocab.json")


def _resolve(path: str) -> str:
    if not os.path.isdir(path):
        if not os.path.isfile(path):
            raise TokenizerFileError(f"tokenizer file {path} does not exist; check the path")
        return path
    for name in ("tokenizer.json", "vocab.json", "vocab.txt"):
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    tik = sorted(f for f in os.listdir(path) if f.endswith(".tiktoken"))
    if len(tik) == 1:
        return os.path.join(path, tik[0])
    raise TokenizerFileError(f"{path} holds no tokenizer.json, vocab.json, vocab.txt or single *.tiktoken file")


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise TokenizerFileError(f"cannot read tokenizer file {path}: {exc.strerror}") from None


def _read_json(path: str):
    try:
        return json.loads(_read_bytes(path).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenizerFileError(f"{path} is not valid JSON ({exc.__class__.__name__}: {exc}); "
                                 "it is truncated or corrupt") from None


def _read_config(path: str) -> dict:
    """The tokenizer_config.json beside the file ({} when there is none)."""
    cfg_path = os.path.join(os.path.dirname(path), "tokenizer_config.json")
    cfg = _read_json(cfg_path) if os.path.isfile(cfg_path) else {}
    return cfg if isinstance(cfg, dict) else {}


def _roles_from_config(path: str) -> dict:
    """bos/eos/pad token strings from a tokenizer_config.json beside the file, if there is one."""
    cfg = _read_config(path)
    roles = {}
    for role in ("bos", "eos", "pad"):
        v = cfg.get(f"{role}_token")
        v = v.get("content") if isinstance(v, dict) else v
        if isinstance(v, str):
            roles[role] = v
    return roles


def chat_template_from_config(path: str) -> str | None:
    """The chat template beside a HuggingFace tokenizer file, as transformers finds it: chat_template.jinja
    (what newer transformers saves), else tokenizer_config.json's "chat_template", a string or a list of
    {"name", "template"} of which the one named "default" is the one used without a name."""
    jinja_path = os.path.join(os.path.dirname(path), "chat_template.jinja")
    if os.path.isfile(jinja_path):
        try:
            return _read_bytes(jinja_path).decode("utf-8")
        except UnicodeDecodeError:
            raise TokenizerFileError(f"{jinja_path} is not UTF-8 text") from None
    template = _read_config(path).get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if template is not None and not isinstance(template, str):
        raise TokenizerFileError(f"{path}: the chat_template beside it is neither a string nor a list of named "
                                 "templates")
    return template


# ---- HuggingFace tokenizer.json ---------------------------------------------------------------

def read_hf_json(d: dict, path: str) -> Tokenizer:
    model = d["model"]
    kind = model.get("type")
    if kind in ("BPE", "WordPiece"):
        tok = _hf_bpe(d, path) if kind == "BPE" else WordPieceTokenizer.from_hf(d, path)
        tok.chat_template = chat_template_from_config(path)
        return tok
    raise TokenizerFileError(f"{path}: a HuggingFace {kind or 'unknown'} model cannot be read; "
                             "CLLM reads byte-level BPE and WordPiece models")


def _refuse(path: str, what: str) -> None:
    raise TokenizerFileError(f"{path}: {what} cannot be reproduced by CLLM's byte-level BPE")


def _hf_pre_tokenizer(pre, path: str) -> tuple[str, bool]:
    """(split pattern, add_prefix_space) of a byte-level pre-tokenizer: ByteLevel with its GPT-2
    regex, or Sequence[Split(Regex, Isolated), ByteLevel(use_regex=false)]."""
    if not isinstance(pre, dict):
        _refuse(path, "a BPE model without a ByteLevel pre-tokenizer (not byte-level)")
    if pre.get("type") == "ByteLevel":
        if not pre.get("use_regex", True):
            _refuse(path, "a ByteLevel pre-tokenizer that does not split (use_regex false, no Split before it)")
        return PATTERNS["gpt2"], bool(pre.get("add_prefix_space"))
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else None
    if not isinstance(steps, list) or len(steps) != 2 or [s.get("type") for s in steps] != ["Split", "ByteLevel"]:
        _refuse(path, f"the pre-tokenizer {json.dumps(pre)[:120]}")
    split, byte_level = steps
    pat = split.get("pattern", {})
    if "Regex" not in pat or split.get("behavior") != "Isolated" or split.get("invert"):
        _refuse(path, f"the Split pre-tokenizer {json.dumps(split)[:120]}")
    if byte_level.get("use_regex", True):
        _refuse(path, "a Split followed by a ByteLevel that splits again (use_regex true)")
    return pat["Regex"], bool(byte_level.get("add_prefix_space"))


def _hf_normalizer(norm, path: str) -> bool:
    """True for NFC, False for none; anything else is refused."""
    if norm is None:
        return False
    if isinstance(norm, dict) and norm.get("type") == "NFC":
        return True
    if isinstance(norm, dict) and norm.get("type") == "Sequence" and not norm.get("normalizers"):
        return False
    _refuse(path, f"the normalizer {json.dumps(norm)[:120]}")


def _hf_bpe(d: dict, path: str) -> Tokenizer:
    model = d["model"]
    for key, ok in (("dropout", (None, 0, 0.0)), ("continuing_subword_prefix", (None, "")),
                    ("end_of_word_suffix", (None, "")), ("byte_fallback", (None, False))):
        if model.get(key) not in ok:
            _refuse(path, f"a BPE model with {key} = {model.get(key)!r}")
    pattern, prefix_space = _hf_pre_tokenizer(d.get("pre_tokenizer"), path)
    nfc = _hf_normalizer(d.get("normalizer"), path)
    u2b = {u: b for b, u in bytes_to_unicode().items()}

    def raw(tok: str) -> bytes:  # byte-level text -> bytes; another string stands for its UTF-8 bytes
        return bytes(u2b[c] for c in tok) if all(c in u2b for c in tok) else tok.encode("utf-8")

    vocab_s = model.get("vocab")
    if not isinstance(vocab_s, dict) or not all(isinstance(i, int) for i in vocab_s.values()):
        raise TokenizerFileError(f"{path}: the BPE model has no vocabulary of token -> id")
    vocab = {}
    for t, i in vocab_s.items():
        vocab.setdefault(raw(t), i)
    merges = []
    for m in model.get("merges") or []:
        parts = m.split(" ") if isinstance(m, str) else m
        if not (isinstance(parts, list) and len(parts) == 2 and all(isinstance(p, str) for p in parts)):
            raise TokenizerFileError(f"{path}: the merge {m!r} is not two tokens")
        merges.append((raw(parts[0]), raw(parts[1])))
    specials = {}
    for a in d.get("added_tokens") or []:
        if isinstance(a, dict) and isinstance(a.get("content"), str) and isinstance(a.get("id"), int):
            specials[a["content"]] = a["id"]
    return VocabBPETokenizer(vocab, merges, pattern=pattern, specials=specials,
                             whole_words=bool(model.get("ignore_merges")), prefix_space=prefix_space, nfc=nfc,
                             roles=_roles_from_config(path), add_bos=_adds_bos(d, path))


def _adds_bos(d: dict, path: str) -> bool:
    """Whether the tokenizer puts a special token before every sequence, as Llama 3's does: tokenizer.json's
    post-processor (a TemplateProcessing, alone or in a Sequence) whose single-sequence template starts with a
    special token, or tokenizer_config.json's add_bos_token."""
    post = d.get("post_processor")
    steps = post.get("processors", []) if isinstance(post, dict) and post.get("type") == "Sequence" else [post]
    for step in steps:
        if isinstance(step, dict) and step.get("type") == "TemplateProcessing":
            single = step.get("single") or []
            if single and isinstance(single[0], dict) and "SpecialToken" in single[0]:
                return True
    return _read_config(path).get("add_bos_token") is True


# ---- GPT-2 vocab.json + merges.txt ----------------------------------------------------------

def read_gpt2_files(vocab_s: dict, path: str) -> Tokenizer:
    """GPT-2's vocab.json (byte-level token -> id) with the merges.txt beside it, as HuggingFace's
    GPT2Tokenizer reads them (GPT-2 split pattern, <|endoftext|> special when in the vocabulary)."""
    merges_path = os.path.join(os.path.dirname(path), "merges.txt")
    if not os.path.isfile(merges_path):
        raise TokenizerFileError(f"{path} looks like GPT-2's vocab.json but there is no merges.txt beside it")
    lines = _read_bytes(merges_path).decode("utf-8", "replace").splitlines()
    merges = [ln.split(" ") for ln in lines if ln and not ln.startswith("#version")]
    if any(len(m) != 2 for m in merges):
        raise TokenizerFileError(f"{merges_path}: every line must be two tokens separated by one space")
    added = {t: i for t, i in vocab_s.items() if t == "<|endoftext|>"}
    d = {"model": {"type": "BPE", "vocab": vocab_s, "merges": merges},
         "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
         "added_tokens": [{"id": i, "content": t} for t, i in added.items()]}
    return _hf_bpe(d, path)


# ---- tiktoken rank files --------------------------------------------------------------------

def _tiktoken_name(path: str) -> str | None:
    base = os.path.basename(path).lower()
    return next((n for n in ("o200k", "cl100k", "p50k", "r50k", "gpt2") if base.startswith(n)), None)


def read_tiktoken(path: str, pattern: str | None = None) -> Tokenizer:
    """A tiktoken rank file ("base64-token rank" per line) with tiktoken's rule: a chunk that is a
    token is that token, else the pair whose joined bytes have the lowest rank merges first. The
    merges are recovered from the ranks (each token splits into the two parts that BPE with the
    lower ranks leaves). Specials: tiktoken's for a known encoding name, else <|endoftext|> after."""
    name = _tiktoken_name(path)
    key = pattern if pattern is not None else name
    if key is None:
        raise TokenizerFileError(f"cannot tell the split pattern of {path} from its name; pass the pattern "
                                 "(--pattern gpt2, cl100k, o200k or a regex)")
    pat = TIKTOKEN_PATTERNS.get(key, key)
    ranks = {}
    for n, line in enumerate(_read_bytes(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            tok, rank = line.split()
            ranks[base64.b64decode(tok, validate=True)] = int(rank)
        except (ValueError, binascii.Error):
            raise TokenizerFileError(f"{path}:{n}: not a tiktoken line (base64 token, space, rank)") from None
    merges = recover_merges(ranks)
    specials = TIKTOKEN_SPECIALS.get(name, {})
    if len(ranks) != TIKTOKEN_SIZES.get(name):
        specials = {"<|endoftext|>": max(ranks.values()) + 1}
    return VocabBPETokenizer(ranks, merges, pattern=pat, specials=specials, whole_words=True)


def recover_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """(left, right) per multi-byte token in rank order: the two parts that tiktoken's BPE, allowed
    only ranks below the token's, leaves of its bytes."""
    out = []
    for tok, r in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(tok) < 2:
            continue
        parts = [tok[i:i + 1] for i in range(len(tok))]
        while len(parts) > 2:
            best, at = None, -1
            for i in range(len(parts) - 1):
                q = ranks.get(parts[i] + parts[i + 1])
                if q is not None and q < r and (best is None or q < best):
                    best, at = q, i
            if best is None:
                break
            parts[at:at + 2] = [parts[at] + parts[at + 1]]
        if len(parts) != 2:
            raise TokenizerFileError(f"token {tok!r} (rank {r}) is not made of two lower-ranked tokens; "
                                     "this is not a BPE rank file")
        out.append((parts[0], parts[1]))
    return out


# ---- BERT vocab.txt -------------------------------------------------------------------------

def read_bert_vocab(path: str) -> Tokenizer:
    return WordPieceTokenizer.from_vocab_txt(path)
