"""Tokenizers: word, char and byte-level BPE, one small class each, one JSON file each.

    tok = train_tokenizer("bpe", texts, vocab_size=4096)
    ids = tok.encode("Hello"); tok.decode(ids); tok.save("tok.json"); load_tokenizer("tok.json")
"""
from cllm import kinds as dataset_kinds
from cllm.errors import TokenizerError
from cllm.tokenizers.base import Tokenizer, TokenizerFileError, VocabSizeError, read_tokenizer_json
from cllm.tokenizers.bpe import BPETokenizer
from cllm.tokenizers.char import CharTokenizer
from cllm.tokenizers.vocab_bpe import VocabBPETokenizer
from cllm.tokenizers.word import WordTokenizer
from cllm.tokenizers.wordpiece import WordPieceTokenizer

# "bpe-vocab" is only read from files (an imported byte-level BPE keeping its file's ids), never trained
KINDS = {"word": WordTokenizer, "char": CharTokenizer, "bpe": BPETokenizer, "bpe-vocab": VocabBPETokenizer,
         "wordpiece": WordPieceTokenizer}

__all__ = ["BPETokenizer", "CharTokenizer", "KINDS", "Tokenizer", "TokenizerFileError", "VocabSizeError",
           "WordTokenizer", "load_tokenizer", "train_tokenizer"]


def _kind_class(kind: str):
    if kind not in KINDS:
        raise TokenizerError(f"unknown tokenizer kind {kind!r}; choose one of: {', '.join(KINDS)}")
    return KINDS[kind]


def train_tokenizer(kind: str, texts, vocab_size: int | None = None, **kw) -> Tokenizer:
    """Train a tokenizer of `kind` ("word", "char" or "bpe") on a string or an iterable of strings.
    `vocab_size` None means the kind's default (word 8192, bpe 4096, char: every character)."""
    cls = _kind_class(kind)
    if vocab_size is None and kind != "char":
        return cls.train(texts, **kw)
    return cls.train(texts, vocab_size, **kw)


def load_tokenizer(path) -> Tokenizer:
    """Read any kind back from its JSON file (or a directory holding tokenizer.json); a kind of another
    dataset kind than text (an image tokenizer) through the registry of dataset kinds (cllm/kinds.py)."""
    d = read_tokenizer_json(path)
    file = d.pop("_path")
    kind = d.get("kind")
    kinds = KINDS if kind in KINDS else {**KINDS, **dataset_kinds.tokenizer_classes()}
    if kind not in kinds:
        raise TokenizerFileError(f"{file}: unknown tokenizer kind {kind!r}; this CLLM knows {', '.join(kinds)}")
    tok = kinds[kind]._from_dict(d, file)
    template = d.get("chat_template")  # files from before chat templates have none
    if template is not None and not isinstance(template, str):
        raise TokenizerFileError(f"{file}: field 'chat_template' of the tokenizer file has the wrong type "
                                 f"({type(template).__name__}); the file is corrupt, re-create it")
    tok.chat_template = template
    stats = d.get("train_stats")
    tok.train_stats = stats if isinstance(stats, dict) else {}
    return tok
