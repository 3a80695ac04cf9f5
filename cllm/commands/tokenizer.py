"""`python cli.py tokenizer ACTION ...`: train, inspect and use tokenizers.

cli.py tokenizer train DATA --kind bpe --vocab-size 4096 --out tok.json
cli.py tokenizer train DATA --kind wordpiece --score likelihood  # WordPiece's original merge rule
cli.py tokenizer encode tok.json "some text"        # prints the ids
cli.py tokenizer decode tok.json 17,42,256          # prints the text
cli.py tokenizer stats tok.json                     # size, training statistics (JSON)
cli.py tokenizer export-hf tok.json tokenizer.json  # HuggingFace tokenizer.json (bpe, wordpiece)
cli.py tokenizer export-vocab tok.json vocab.txt    # BERT's vocab.txt (wordpiece)
cli.py tokenizer import PATH --out tok.json         # HF tokenizer.json, vocab.txt, GPT-2 vocab.json, *.tiktoken
cli.py tokenizer apply-chat-template tok.json conv.json [--add-generation-prompt] [--text]   # a conversation's ids
"""

import json
import sys

from cllm.chat import template as chat
from cllm.data import CorpusOptions, open_corpus
from cllm.errors import DataError, TokenizerError
from cllm.tokenizers import load_tokenizer, train_tokenizer
from cllm.tokenizers.imports import import_tokenizer
from cllm.tokenizers.wordpiece import SCORES

OPTIONS = CorpusOptions  # train's reading and cleaning flags (cllm/data/corpus.py), as `prepare` has them


def train(data: str, *, kind: str = "bpe", vocab_size: int | None = None, out: str = "tokenizer.json",
          score: str = SCORES[0], **reading):
    """Train a tokenizer on DATA (a text file or a directory, read and cleaned as `prepare` reads it: the
    flags but --kind, --vocab-size, --out and --score are CorpusOptions', cllm/data/corpus.py).

    Args:
      data: a text file or a directory
      kind: word, char, bpe or wordpiece
      vocab_size: ids in the vocabulary (none: the kind's own, as `cli.py train --help` lists)
      out: the tokenizer file to write
      score: wordpiece merges: frequency (the most frequent pair, as HuggingFace's WordPieceTrainer) or likelihood
        (count(ab) / (count(a) count(b)), the original WordPiece rule: about twice the tokens on English)
    """
    corpus = open_corpus(data, **reading)
    extra = {"score": score} if kind == "wordpiece" else {}
    tok = train_tokenizer(kind, corpus, vocab_size, progress=corpus.progress, **extra)
    tok.save(out)
    print(f"wrote {out}: {tok.kind} tokenizer, {tok.vocab_size:,} ids, trained on {corpus.stats.summary()}")


def encode(tokenizer: str, text: str):
    """Print the ids of TEXT, space-separated.

    Args:
      tokenizer: a tokenizer file (or a directory holding tokenizer.json)
      text: the text to encode, exactly as typed
    """
    print(" ".join(map(str, load_tokenizer(tokenizer).encode(text))))


def decode(tokenizer: str, *ids: str):
    """Print the text of IDS (comma- or space-separated, one or several arguments).

    Args:
      tokenizer: a tokenizer file (or a directory holding tokenizer.json)
      ids: the token ids
    """
    raw = " ".join(ids).replace(",", " ").split()
    try:
        values = [int(x) for x in raw]
    except ValueError:
        raise TokenizerError(f"ids must be integers, got {' '.join(ids)!r}") from None
    print(load_tokenizer(tokenizer).decode(values))


def stats(tokenizer: str):
    """Print a tokenizer's size and training statistics as JSON.

    Args:
      tokenizer: a tokenizer file (or a directory holding tokenizer.json)
    """
    print(json.dumps(load_tokenizer(tokenizer).stats(), ensure_ascii=False, indent=1))


def export_hf(tokenizer: str, out: str):
    """Write a BPE or WordPiece tokenizer as HuggingFace's tokenizer.json.

    Args:
      tokenizer: a CLLM tokenizer file (bpe or wordpiece)
      out: the tokenizer.json to write
    """
    tok = load_tokenizer(tokenizer)
    if tok.kind not in ("bpe", "bpe-vocab", "wordpiece"):
        raise TokenizerError(
            f"only bpe and wordpiece tokenizers export to HuggingFace's format; {tokenizer} is a {tok.kind} tokenizer"
        )
    tok.export_hf(out)
    print(f"wrote {out}")


def export_vocab(tokenizer: str, out: str):
    """Write a WordPiece tokenizer's vocabulary as BERT's vocab.txt (one token per line, line = id).

    Args:
      tokenizer: a CLLM tokenizer file (wordpiece)
      out: the vocab.txt to write
    """
    tok = load_tokenizer(tokenizer)
    if tok.kind != "wordpiece":
        raise TokenizerError(f"only wordpiece tokenizers have a vocab.txt; {tokenizer} is a {tok.kind} tokenizer")
    tok.export_vocab_txt(out)
    print(f"wrote {out}")


def import_(path: str, *, out: str = "tokenizer.json", pattern: str | None = None):
    """Read another library's tokenizer into a CLLM tokenizer file with the same ids.

    Args:
      path: HuggingFace tokenizer.json (byte-level BPE or WordPiece), BERT vocab.txt, GPT-2 vocab.json
        (merges.txt beside it), a *.tiktoken rank file, or a directory holding one
      out: the CLLM tokenizer file to write
      pattern: a tiktoken file's split pattern when its name does not tell: gpt2, cl100k, o200k or a regex
    """
    tok = import_tokenizer(path, pattern=pattern)
    tok.save(out)
    print(f"wrote {out}: {tok.kind} tokenizer, {tok.vocab_size:,} ids, from {path}")


def apply_chat_template(tokenizer: str, messages: str, *, add_generation_prompt: bool = False, text: bool = False):
    """Print the ids (space-separated) of a conversation rendered by the tokenizer's chat template, as
    transformers' apply_chat_template gives them, or with --text the rendered text.

    Args:
      tokenizer: a tokenizer file (or a directory holding tokenizer.json) that has a chat template
      messages: a JSON file (- for stdin) holding [{"role": "system"|"user"|"assistant", "content": "..."}, ...]
      add_generation_prompt: end with the opening of an assistant turn, for the model to continue
      text: print the rendered text instead of the ids
    """
    try:
        if messages == "-":
            raw = sys.stdin.read()
        else:
            with open(messages, encoding="utf-8") as f:
                raw = f.read()
    except FileNotFoundError:
        raise DataError(f"messages file {messages} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read messages file {messages}: {exc}") from None
    try:
        conversation = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise chat.ChatTemplateError(f"{messages} is not valid JSON ({exc}); it must hold a list of "
                                     "{\"role\": ..., \"content\": ...} objects") from None
    tok = load_tokenizer(tokenizer)
    if text:
        sys.stdout.write(chat.chat_text(tok, conversation, add_generation_prompt))
    else:
        print(" ".join(map(str, chat.apply_chat_template(tok, conversation, add_generation_prompt))))


ACTIONS = {
    "train": train,
    "encode": encode,
    "decode": decode,
    "stats": stats,
    "export-hf": export_hf,
    "export-vocab": export_vocab,
    "import": import_,
    "apply-chat-template": apply_chat_template,
}
