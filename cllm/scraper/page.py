"""What the crawler takes from one fetched page: its title and main text, its links and its
robots <meta> directives. CPU-bound (lxml), so the crawler runs it in a worker thread."""
from __future__ import annotations

from typing import NamedTuple

from cllm.scraper.dom import parse_html
from cllm.scraper.extract import extract_pdf, extract_tree, visible_text
from cllm.scraper.urls import extract_links, page_meta_robots


class PageContent(NamedTuple):
    title: str
    text: str
    links: list[str]  # canonical, in document order
    nofollow: bool  # <meta name=robots content=nofollow>: do not queue the links
    noindex: bool  # <meta name=robots content=noindex>: do not keep the text


def read_page(body: bytes, charset: str | None, final_url: str, is_pdf: bool) -> PageContent:
    """The content of a page fetched from `final_url` (HTML, or PDF text with the [pdf] extra)."""
    if is_pdf:
        got = extract_pdf(body)
        return PageContent(got.title, got.text, [], False, False)
    doc, _ = parse_html(body, charset)
    if doc is None:
        return PageContent("", "", [], False, False)
    links, nofollow = extract_links(doc, final_url)  # before extraction prunes the tree
    noindex = bool({"noindex", "none"} & page_meta_robots(doc))
    title, text = extract_tree(doc)
    text = text or visible_text(body, charset)  # a page with visible text never yields nothing
    return PageContent(title, text, links, nofollow, noindex)
