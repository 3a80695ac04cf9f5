"""Parsing a page with lxml, and the tree vocabulary and measures that the cleaning
(boilerplate.py), the scoring (readability.py) and the serialization (serialize.py) share."""
from __future__ import annotations

import re

import lxml.html
from lxml import etree

from cllm.scraper.charset import decode_html

_PARSER = lxml.html.HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True, default_doctype=False)
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*>", re.I)
# Class words that name something else than the element: Drupal's "field--label-hidden" names a text
# field whose label is not shown (the field is the article's text); "one-sidebar", "two-sidebars",
# "has-sidebar" name a page layout, on the container of the article and its sidebar.
_NOT_THE_ELEMENT = re.compile(r"\S*label-*hidden\S*|\S*(?:one|two|no|with|has)[-_]sidebars?\S*", re.I)

# Elements that start a new line of text.
BLOCK_TAGS = {
    "p", "div", "section", "article", "main", "h1", "h2", "h3", "h4", "h5", "h6", "li", "ul", "ol", "dl",
    "dt", "dd", "blockquote", "pre", "table", "tr", "td", "th", "tbody", "thead", "tfoot", "caption",
    "address", "center", "form", "fieldset", "details", "summary", "hr", "br", "body", "html", "header",
    "figure", "figcaption", "hgroup",
}
INLINE_TAGS = {"a", "b", "i", "em", "strong", "span", "font", "u", "small", "big", "sub", "sup", "code",
               "abbr", "cite", "q", "mark", "time", "s", "strike", "del", "ins", "kbd", "var", "tt"}


def parse_html(html: bytes | str, http_charset: str | None = None):
    """(lxml document or None, codec). The document is parsed from our own decoding, re-encoded
    as UTF-8, so that lxml never second-guesses the charset from a (possibly wrong) meta tag."""
    text, enc = decode_html(html, http_charset)
    text = _XML_DECL.sub("", text, count=1)
    if not text.strip():
        return None, enc
    try:
        doc = lxml.html.document_fromstring(text.encode("utf-8", "surrogatepass"), parser=_PARSER)
    except (etree.ParserError, ValueError):
        return None, enc
    return doc, enc


def text_len(el) -> int:
    """Characters of an element's text, whitespace runs counted as one space."""
    return len(" ".join(el.text_content().split()))


def link_density(el) -> float:
    """The share of an element's text that is inside links."""
    total = text_len(el)
    if not total:
        return 0.0
    links = sum(text_len(a) for a in el.iter("a"))
    return links / total


def class_id(el) -> str:
    """class and id together: the words that name what an element is (less those naming something else)."""
    ci = (el.get("class") or "") + " " + (el.get("id") or "")
    low = ci.lower()
    return _NOT_THE_ELEMENT.sub("", ci) if "hidden" in low or "sidebar" in low else ci


def remove_keeping_tail(el) -> None:
    """Remove an element but keep its tail text (the text after it belongs to its parent)."""
    parent = el.getparent()
    if parent is None:
        return
    tail = el.tail
    if tail:
        prev = el.getprevious()
        if prev is not None:
            prev.tail = (prev.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
    parent.remove(el)
