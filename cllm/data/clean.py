"""Text cleaning, each step a flag (the original C loader's options) plus Project Gutenberg stripping.

Defaults keep the text as written except whitespace normalization, because a language model
should see the text as written: `clean_text(t)` only tidies whitespace (and strips Gutenberg
boilerplate when the markers are present).
"""

from __future__ import annotations

import re
import sys

import regex

# "*** START OF THE PROJECT GUTENBERG EBOOK X ***" (also "THIS", and without spaces after ***)
_GUT_START = regex.compile(r"^\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG[^\n]*$", regex.I | regex.M)
_GUT_END = regex.compile(
    r"^(?:\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG|End of (?:the )?Project Gutenberg)[^\n]*$", regex.I | regex.M
)
# whitespace (str.isspace) other than space and newline: turned into spaces
_OTHER_SPACE = [chr(i) for i in range(sys.maxunicode + 1) if chr(i).isspace() and chr(i) not in " \n"]
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


def clean_text(text: str, **options) -> str:
    """Clean one document; options are clean_owned's (lowercase, remove_punctuation, remove_numbers,
    normalize_whitespace, keep_newlines, strip_gutenberg_boilerplate), with its defaults.

    normalize_whitespace: runs of spaces/tabs (any str.isspace() but newline) become one space, spaces
    at line ends go, 3+ newlines become one blank line, the document is stripped at both ends but
    keeps a final newline if it had one. With keep_newlines=False every whitespace run, newlines
    included, becomes one space."""
    return clean_owned([text], **options)


def clean_owned(
    box: list,
    lowercase: bool = False,
    remove_punctuation: bool = False,
    remove_numbers: bool = False,
    normalize_whitespace: bool = True,
    keep_newlines: bool = True,
    strip_gutenberg_boilerplate: bool = True,
) -> str:
    """clean_text(box.pop(), ...): the text handed over in a one-element list, so that no caller
    keeps the original alive while its cleaned copies are made (one copy less at the peak: the
    corpus reader cleans a whole file's text at a time)."""
    text = normalize_newlines(box.pop())
    if strip_gutenberg_boilerplate:
        text = strip_gutenberg(text)
    if lowercase:
        text = text.lower()
    if remove_punctuation:
        text = _PUNCT.sub("", text)
    if remove_numbers:
        text = _NUMBERS.sub("", text)
    if normalize_whitespace:
        final_newline = text.endswith("\n") and keep_newlines
        if keep_newlines:
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
