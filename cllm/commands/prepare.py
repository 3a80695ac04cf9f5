"""`python cli.py prepare DATA --tokenizer {word,char,bpe,wordpiece,FILE} --vocab-size N --out DIR`

Clean, filter and tokenize a corpus (a file or a directory tree) into DIR/tokenizer.json, DIR/train.bin,
DIR/val.bin and DIR/meta.json. Running it again with the same inputs and flags reuses DIR. The corpus filters
(--filters, --languages, --near-dup-threshold, --boilerplate-min-pages: cllm/data/filters/) run on a crawl's
output folder by default and add DIR/filters.json and DIR/documents.jsonl, their report.
"""
import os
import warnings

from cllm import kinds
from cllm.data import PrepareOptions, prepare_dataset
from cllm.errors import DataError

OPTIONS = PrepareOptions  # the dataset flags: PrepareOptions' fields (cllm/data/prepare.py), their one home


def main(data: str | None = None, *, out: str | None = None, **options):
    """Prepare a token dataset. The flags but --out are PrepareOptions' (cllm/data/prepare.py).

    Args:
      data: a text file or a directory (recursive; .txt .md .html .pdf .jsonl, text without extension)
      out: output directory (none: data/.cache/<name of DATA>-<tokenizer>[-<vocab size>])
    """
    if data is None:
        raise DataError("prepare needs a corpus: `cli.py prepare DATA --tokenizer char --out DIR` (DATA: a text file "
                        "or a directory)")
    if out is None:
        opts = PrepareOptions(**options)  # the flags typed, the defaults for the others
        out = _default_out(data, opts.tokenizer, opts.vocab_size) + ("-chat" if opts.chat_tokens else "")
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # shown as one line each by cllm/commands/__init__.py
        ds = prepare_dataset(str(data), str(out), **options)
    print(kinds.for_data(ds, ds.tokenizer).summary(ds))  # a text corpus's, images' or chat's (cllm/kinds.py)
    return None


def _default_out(data, tokenizer: str, vocab_size: int | None) -> str:
    """data/.cache/<name of DATA>-<tokenizer>[-<vocab size>]: data/.cache/ is git-ignored, and hidden, so a corpus
    directory data/ never reads it back."""
    name = os.path.splitext(os.path.basename(os.path.normpath(str(data))))[0] or "corpus"
    tok_name = os.path.splitext(os.path.basename(os.path.normpath(tokenizer)))[0]  # a file: its name
    return os.path.join("data", ".cache", f"{name}-{tok_name}" + (f"-{vocab_size}" if vocab_size else ""))

