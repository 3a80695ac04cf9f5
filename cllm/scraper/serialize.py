"""The main block -> text: one line per paragraph, heading or list item, <pre> kept verbatim,
invisible characters and "Advertisement"-style lines dropped."""
from __future__ import annotations

import re

from cllm.scraper.dom import BLOCK_TAGS

_AD_LINE = re.compile(r"^(advertisement|advertising|sponsored|story continues below( advertisement)?|"
                      r"continue reading( below)?|read more|related:?|see also:?|share( this)?( article)?|"
                      r"click here.*|scroll to continue.*)$", re.I)
_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")


def _lines(block) -> list[tuple[str, bool]]:
    """Serialize: every block-level element starts a new line; <br> breaks a line; a <pre> keeps
    its own lines and indentation (code). Returns (line, verbatim) pairs."""
    out: list[tuple[str, bool]] = []
    buf: list[str] = []

    def flush():
        line = " ".join("".join(buf).split())
        if line:
            out.append((line, False))
        buf.clear()

    def walk(el):
        tag = el.tag if isinstance(el.tag, str) else ""
        is_block = tag in BLOCK_TAGS
        if is_block:
            flush()
        if tag == "br":
            flush()
        elif tag == "pre":
            out.extend((line.rstrip(), True) for line in el.text_content().splitlines())
        elif tag:
            if el.text:
                buf.append(el.text)
            for child in el:
                walk(child)
        if is_block:
            flush()
        if el.tail:
            buf.append(el.tail)

    for el in (block if isinstance(block, list) else [block]):
        walk_tail = el.tail
        el.tail = None  # text after the main block is not part of it
        walk(el)
        el.tail = walk_tail
        flush()
    return out


def _tidy(lines: list[tuple[str, bool]]) -> str:
    keep = []
    for line, verbatim in lines:
        line = _INVISIBLE.sub("", line).replace("\xa0", " ")
        line = line.rstrip() if verbatim else line.strip()
        if not line.strip() or (not verbatim and _AD_LINE.match(line)):
            continue
        keep.append(line)
    return "\n".join(keep)


def blocks_to_text(blocks) -> str:
    """The text of the main block (an element or a list of them), one line per block element."""
    return _tidy(_lines(blocks))
