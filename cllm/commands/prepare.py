"""`python cli.py prepare DATA --tokenizer {word,char,bpe,wordpiece,FILE} --vocab-size N --out DIR`

Clean and tokenize a corpus (a file or a directory tree) into DIR/tokenizer.json, DIR/train.bin,
DIR/val.bin and DIR/meta.json. Running it again with the same inputs and flags reuses DIR.
"""
import os
import warnings

from cllm import kinds
from cllm.data import prepare_dataset
from cllm.errors import DataError


def main(data: str | None = None, *, tokenizer: str = "char", vocab_size: int | None = None, out: str | None = None,
         val_fraction: float = 0.1,
         lowercase: bool = False, remove_punctuation: bool = False, remove_numbers: bool = False,
         normalize_whitespace: bool = True, keep_newlines: bool = True, strip_gutenberg: bool = True,
         dedupe: bool = True, encoding: str = "auto", bpe_pattern: str = "gpt4", llmc: bool = False,
         force: bool = False, progress: bool = True, image_size: int | None = None, grayscale: bool = False,
         palette: int = 16):
    """Prepare a token dataset.

    Args:
      data: a text file or a directory (recursive; .txt .md .html .pdf .jsonl, text without extension)
      tokenizer: word, char, bpe, wordpiece, or a tokenizer file to use as it is (see `cli.py tokenizer import`)
      vocab_size: ids in the vocabulary (none: the tokenizer kind's own, as `cli.py train --help` lists)
      out: output directory (none: data/.cache/<name of DATA>-<tokenizer>[-<vocab size>])
      val_fraction: share of the data held out for validation (0 <= f < 1)
      lowercase: cleaning: lowercase the text
      remove_punctuation: cleaning: drop punctuation
      remove_numbers: cleaning: drop numbers
      normalize_whitespace: cleaning: runs of spaces and tabs become one space
      keep_newlines: cleaning: keep line breaks (--no-keep-newlines: every whitespace run becomes one space)
      strip_gutenberg: cleaning: drop Project Gutenberg's header and licence
      dedupe: drop documents seen before (exact duplicates)
      encoding: auto (UTF-8, else a detected encoding) or utf-8 (invalid UTF-8 is an error)
      bpe_pattern: gpt4 or gpt2 pre-split (or a regex)
      llmc: also write llm.c token files train_llmc.bin / val_llmc.bin
      force: rebuild even when a cached result matches
      progress: show progress bars
      image_size: a folder of images: centre-crop and resize them to S x S pixels (none: their one size)
      grayscale: a folder of images: read them as grayscale (automatic when every image is)
      palette: a folder of images: k-means colours, or grey levels for grayscale images
    """
    if data is None:
        raise DataError("prepare needs a corpus: `cli.py prepare DATA --tokenizer char --out DIR` (DATA: a text file "
                        "or a directory)")
    if out is None:
        out = _default_out(data, tokenizer, vocab_size)
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # shown as one line each by cllm/commands/__init__.py
        ds = prepare_dataset(str(data), str(out), tokenizer=tokenizer, vocab_size=vocab_size, val_fraction=val_fraction,
                             lowercase=lowercase, remove_punctuation=remove_punctuation, remove_numbers=remove_numbers,
                             normalize_whitespace=normalize_whitespace, keep_newlines=keep_newlines,
                             strip_gutenberg=strip_gutenberg, dedupe=dedupe, encoding=encoding, bpe_pattern=bpe_pattern,
                             llmc=llmc, force=force, progress=progress,
                             image={"image_size": image_size, "grayscale": grayscale, "palette": palette})
    print(kinds.for_tokenizer(ds.tokenizer).summary(ds))  # a text corpus's, or a folder of images' (cllm/kinds.py)
    return None


def _default_out(data, tokenizer: str, vocab_size: int | None) -> str:
    """data/.cache/<name of DATA>-<tokenizer>[-<vocab size>]: data/.cache/ is git-ignored, and hidden, so a corpus
    directory data/ never reads it back."""
    name = os.path.splitext(os.path.basename(os.path.normpath(str(data))))[0] or "corpus"
    tok_name = os.path.splitext(os.path.basename(os.path.normpath(tokenizer)))[0]  # a file: its name
    return os.path.join("data", ".cache", f"{name}-{tok_name}" + (f"-{vocab_size}" if vocab_size else ""))

