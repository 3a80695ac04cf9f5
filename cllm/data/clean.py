"""Text cleaning, each step a flag (the original C loader's options) plus Project Gutenberg stripping.

Defaults keep the text as written except whitespace normalization, because a language model
should see the text as written: `clean_text(t)` only tidies whitespace (and strips Gutenberg
boilerplate when the markers are present).
"""

from __future__ import annotations

import dataclasses
import re

import regex

from cllm.config import option
from cllm.errors import DataError

# "*** START OF THE PROJECT GUTENBERG EBOOK X ***" (also "THIS", and without spaces after ***)
_GUT_START = regex.compile(r"^\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG[^\n]*$", regex.I | regex.M)
_GUT_END = regex.compile(
    r"^(?:\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG|End of (?:the )?Project Gutenberg)[^\n]*$", regex.I | regex.M
)
# whitespace (str.isspace) other than space and newline: turned into spaces. Every str.isspace() character
# lies below U+3001 (tests/test_data.py checks all of Unicode): scanning only those takes ~1 ms at import,
# all 1.1M code points ~0.15 s, which every command that imports cllm.data would pay
_LAST_SPACE = 0x3000  # IDEOGRAPHIC SPACE
_OTHER_SPACE = [chr(i) for i in range(_LAST_SPACE + 1) if chr(i).isspace() and chr(i) not in " \n"]
_TRAILING = re.compile(r" +\n")
_PUNCT = regex.compile(r"\p{P}+")
_NUMBERS = regex.compile(r"\p{N}+")


def strip_gutenberg(text: str) -> str:
    """The book between Project Gutenberg's START and END markers; text without them unchanged."""
    if "gutenberg" not in text.lower():  # cheap test first: most texts have no markers
        return text
    start = _GUT_START.search(text)
    if start:
        text = text[start.end() :]
    end = _GUT_END.search(text)
    if end:
        text = text[: end.start()]
    return text


def normalize_newlines(text: str) -> str:
    """CRLF and lone CR become LF (always done when reading files)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


@dataclasses.dataclass
class CleaningOptions:
    """How a document is cleaned: the cleaning flags of `prepare` and `tokenizer train`, their one home.
    The defaults keep the text as written but for its whitespace (see the module doc)."""

    lowercase: bool = option(False, "cleaning: lowercase the text")
    remove_punctuation: bool = option(False, "cleaning: drop punctuation")
    remove_numbers: bool = option(False, "cleaning: drop numbers")
    normalize_whitespace: bool = option(True, "cleaning: runs of spaces and tabs become one space")
    keep_newlines: bool = option(
        True, "cleaning: keep line breaks (--no-keep-newlines: every whitespace run becomes one space)")
    strip_gutenberg: bool = option(True, "cleaning: drop Project Gutenberg's header and licence")

    def cleaning(self) -> dict:
        """The six cleaning flags as {name: bool} (meta.json's "cleaning", part of a dataset's cache key)."""
        return {f.name: bool(getattr(self, f.name)) for f in dataclasses.fields(CleaningOptions)}


def options_of(cls, given: dict, what: str = "option"):
    """cls(**given) (an options dataclass), but a name it does not declare is a DataError naming the known ones."""
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise DataError(f"unknown {what}(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return cls(**given)


def clean_text(text: str, **options) -> str:
    """Clean one document; options are CleaningOptions' fields (lowercase, remove_punctuation, remove_numbers,
    normalize_whitespace, keep_newlines, strip_gutenberg), with its defaults.

    normalize_whitespace: runs of spaces/tabs (any str.isspace() but newline) become one space, spaces
    at line ends go, 3+ newlines become one blank line, the document is stripped at both ends but
    keeps a final newline if it had one. With keep_newlines=False every whitespace run, newlines
    included, becomes one space."""
    return clean_owned([text], options_of(CleaningOptions, options, "cleaning option"))


def clean_owned(box: list, options: CleaningOptions) -> str:
    """clean_text(box.pop(), ...): the text handed over in a one-element list, so that no caller
    keeps the original alive while its cleaned copies are made (one copy less at the peak: the
    corpus reader cleans a whole file's text at a time). `options`: a CleaningOptions (or a subclass)."""
    text = normalize_newlines(box.pop())
    if options.strip_gutenberg:
        text = strip_gutenberg(text)
    if options.lowercase:
        text = text.lower()
    if options.remove_punctuation:
        text = _PUNCT.sub("", text)
    if options.remove_numbers:
        text = _NUMBERS.sub("", text)
    if options.normalize_whitespace:
        final_newline = text.endswith("\n") and options.keep_newlines
        if options.keep_newlines:
            # each substitution only when needed: `in` tests are ~100x faster than a regex scan
            present = [c for c in _OTHER_SPACE if c in text]
            if present:
                text = text.translate({ord(c): " " for c in present})
            while "  " in text:  # str.replace halves each run per pass: faster than a regex scan
                text = text.replace("  ", " ")
            if " \n" in text:
                text = _TRAILING.sub("\n", text)
            while "\n\n\n" in text:
                text = text.replace("\n\n\n", "\n\n")
            text = text.strip(" \n")
            if final_newline and text:
                text += "\n"
        else:
            text = " ".join(text.split())
    return text
