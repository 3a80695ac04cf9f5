"""A jusText-style paragraph classifier: the fallback when the main block found by readability.py holds
little of a page's text (forums, shops, recipes, pages whose every container has an unlucky class name).

The page is cut into paragraphs (one per block element's run of text, as serialize.py cuts lines). Each
is classified on its own by length and link density, then by its context (jusText's revision): a
middling paragraph beside good ones is good, a short one between good ones is good, a heading that
introduces good text is good. No stop-word lists: the pages are in any language.

    page_paragraphs(root) -> [Paragraph]; classify(paragraphs) -> their classes; good_text(paragraphs)
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from cllm.scraper.dom import BLOCK_TAGS

_CJK = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
# jusText's thresholds in characters (its LENGTH_LOW and LENGTH_HIGH, MAX_LINK_DENSITY), and how far
# a heading may stand before the good text it introduces (its MAX_HEADING_DISTANCE)
SHORT = 70
LONG = 200
MAX_LINK_DENSITY = 0.2
MAX_HEADING_DISTANCE = 200
# jusText calls a middling paragraph good by its share of stop words; without word lists, one of SENTENCE
# characters or more that ends like a sentence is good on its own too
SENTENCE = 140
_STOPS = (".", "!", "?", "\u3002", "\uff01", "\uff1f", "\u2026")


@dataclass
class Paragraph:
    text: str
    link_chars: int
    heading: bool
    cls: str = ""  # "good", "near", "short" or "bad"

    @property
    def link_density(self) -> float:
        return self.link_chars / len(self.text) if self.text else 0.0


def page_paragraphs(root) -> list[Paragraph]:
    """The paragraphs of `root` in document order: text between block-element boundaries."""
    out: list[Paragraph] = []
    buf: list[str] = []
    state = {"links": 0, "heading": False}

    def flush():
        text = " ".join("".join(buf).split())
        if text:
            out.append(Paragraph(text, min(state["links"], len(text)), state["heading"]))
        buf.clear()
        state["links"], state["heading"] = 0, False

    def walk(el, in_link: bool, in_heading: bool):
        tag = el.tag if isinstance(el.tag, str) else ""
        if tag in BLOCK_TAGS:
            flush()
        in_link = in_link or tag == "a"
        in_heading = in_heading or tag in HEADINGS
        if tag and el.text:
            buf.append(el.text)
            state["links"] += len(" ".join(el.text.split())) if in_link else 0
            state["heading"] |= in_heading and bool(el.text.strip())
        if tag:
            for child in el:
                walk(child, in_link, in_heading)
        if tag in BLOCK_TAGS:
            flush()
        if el.tail:
            buf.append(el.tail)
            # the tail belongs to the parent: inside a link only when the parent is one
            state["links"] += len(" ".join(el.tail.split())) if in_link and tag != "a" else 0

    for el in root if isinstance(root, list) else [root]:
        tail, el.tail = el.tail, None
        walk(el, False, False)
        el.tail = tail
        flush()
    return out


def weighed_len(text: str) -> int:
    """Length in Latin-alphabet characters: a Chinese, Japanese or Korean character counts three (one
    of them says about as much as a short word), so that the thresholds hold for those scripts too."""
    return len(text) + 2 * len(_CJK.findall(text))


def _neighbours(paras: list[Paragraph]) -> tuple[list[str], list[str]]:
    """For each paragraph, the class of the nearest paragraph before and after it that is not short:
    "good", else "bad" (a near-good one, or the page's edge). Two passes: linear in the paragraphs."""
    before, after = [], []
    last = "bad"
    for p in paras:
        before.append(last)
        if p.cls != "short":
            last = "good" if p.cls == "good" else "bad"
    last = "bad"
    for p in reversed(paras):
        after.append(last)
        if p.cls != "short":
            last = "good" if p.cls == "good" else "bad"
    return before, after[::-1]


def classify(paras: list[Paragraph], context: bool = True) -> list[Paragraph]:
    """Set each paragraph's class: context-free first ("good", "near", "short" or "bad"), then, with
    `context`, revised by its neighbours (jusText) to "good" or "bad"."""
    for p in paras:
        n = weighed_len(p.text)
        if p.link_density > MAX_LINK_DENSITY or "\u00a9" in p.text:
            p.cls = "bad"
        elif n < SHORT:
            p.cls = "short"
        elif n < LONG and not (n >= SENTENCE and p.text.rstrip("\"'”’)»").endswith(_STOPS)):
            p.cls = "near"
        else:
            p.cls = "good"
    if not context:
        return paras
    # a short paragraph between good text (both nearest non-short neighbours good) is good, else bad;
    # a near-good paragraph next to good text is good
    before, after = _neighbours(paras)
    revised = []
    for p, b, a in zip(paras, before, after):
        if p.cls == "short":
            revised.append("good" if b == a == "good" else "bad")
        elif p.cls == "near":
            revised.append("good" if "good" in (b, a) else "bad")
        else:
            revised.append(p.cls)
    for p, cls in zip(paras, revised):
        p.cls = cls
    # a heading is good when good text follows within MAX_HEADING_DISTANCE characters
    for i, p in enumerate(paras):
        if p.heading and p.cls != "good" and p.link_density <= MAX_LINK_DENSITY:
            distance, j = 0, i + 1
            while j < len(paras) and distance <= MAX_HEADING_DISTANCE:
                if paras[j].cls == "good":
                    p.cls = "good"
                    break
                distance += len(paras[j].text)
                j += 1
    return paras


def good_text(paras: list[Paragraph]) -> str:
    """The good paragraphs, one a line."""
    return "\n".join(p.text for p in paras if p.cls == "good")
