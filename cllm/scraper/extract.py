"""Main-text extraction from an HTML page with lxml.

    extract_html(html, url=None, http_charset=None) -> Extracted(title, text)

The text is the page's main content (an article body, a blog post, a documentation page) without
scripts, styles, navigation, headers, footers, cookie banners, share bars, comments and other
boilerplate; each paragraph, heading and list item on its own line; all entities decoded.

How it works (the ideas of readability and trafilatura, kept small), one module per step:
1. charset.py: decode: the BOM, else the HTTP charset, else the <meta> charset, else UTF-8, else a
   guess; dom.py parses that text with lxml;
2. boilerplate.py: drop what is never text (script, style, nav, footer, forms controls, hidden
   elements) and blocks whose class/id says boilerplate (cookie, share, related, comment);
3. readability.py: find the main block: a marked-up article body when the page has one
   (itemprop=articleBody, <article>, the usual CMS class names), else readability's scoring of
   paragraphs, whose score flows to their parent and grandparent;
4. boilerplate.py again, inside that block (link-heavy lists), then serialize.py: block by block,
   one line each, without captions and "Advertisement" lines; the article's lead paragraph (a block named
   lead, intro, teaser ... just above the body, often in the <header> that step 2 drops) goes first;
5. the fallbacks (as trafilatura falls back to readability and jusText), when that block is weak (little
   prose) or holds a small share of the page's visible text: on a copy of the page cleaned only of what
   a reader never sees and of distinctive boilerplate names, the marked-up body, readability's choice
   and the good paragraphs of a jusText-style classifier (paragraphs.py) compete with the main block by
   measured quality (prose characters less link-list characters); the whole visible text is the last
   resort, so that a page with visible text never yields nothing;
6. the text's edges: headings of dropped link lists, dates and bylines go, and so do short first and last
   lines that readability's choice in the cleaned page (step 3), a second opinion, does not hold.
"""
from __future__ import annotations

import copy
import functools
import io
import re
import unicodedata
from dataclasses import dataclass

from lxml import etree

from cllm.errors import MissingDependencyError
from cllm.scraper.boilerplate import clean_block, drop_never_text, strip_hidden, strip_junk
from cllm.scraper.charset import decode_html
from cllm.scraper.dom import link_density, parse_html, remove_keeping_tail, text_len
from cllm.scraper.paragraphs import HEADINGS, MAX_LINK_DENSITY, SHORT, classify, good_text, page_paragraphs, weighed_len
from cllm.scraper.readability import main_block, marked_up_body, readability_candidate
from cllm.scraper.serialize import blocks_to_text

__all__ = ["Extracted", "decode_html", "extract_html", "parse_html", "extract_tree", "visible_text"]


@dataclass(frozen=True)
class Extracted:
    """What one page yields: its title and its main text (lines = paragraphs/headings)."""

    title: str
    text: str
    encoding: str = ""


def _title(doc) -> str:
    for xp in ("//title", '//meta[@property="og:title"]/@content', "//h1"):
        found = doc.xpath(xp)
        if found:
            node = found[0]
            text = node if isinstance(node, str) else node.text_content()
            text = " ".join(text.split())
            if text:
                return text
    return ""


def _drop_headline(block, titles: str) -> None:
    """The headline repeats the title, which the caller gets as .title: keep the text body-only."""
    for h in list(block.iter("h1")):
        headline = " ".join(h.text_content().split())
        if headline and headline in titles:
            remove_keeping_tail(h)


# When the main block is trusted and when the fallbacks compete with it (see _choose): it is weak under
# MIN_GOOD characters of prose (an over-cleaned or wrong block: about three short paragraphs); it is
# trusted when not weak and holding TRUSTED_SHARE of the page's visible text. A fallback replaces it
# only with RATIO times its quality plus MARGIN characters; the jusText-style paragraphs, which take
# prose from anywhere on the page (comments, teasers), replace a block that is not weak only with
# JUSTEXT_RATIO times its quality (a story's chapter beside a long author's note; an article in pieces).
MIN_GOOD = 500
TRUSTED_SHARE = 0.6
RATIO = 1.5
MARGIN = 100
JUSTEXT_RATIO = 3


def _quality(root) -> tuple[int, int]:
    """Measured quality of a candidate (an element or a list of them): (prose, junk) characters: its
    paragraphs of 70 characters or more with few links (paragraphs.py's context-free classes), and its
    link lists and copyright lines. Short lines count as neither."""
    prose = junk = 0
    for p in classify(page_paragraphs(root), context=False):
        if p.cls in ("good", "near"):
            prose += weighed_len(p.text)
        elif p.cls == "bad":
            junk += weighed_len(p.text)
    return prose, junk


def _choose(main_text: str, main_blocks: list, light) -> str:
    """The main block's text, unless it is weak (little prose) or holds little of the page's visible
    text and a fallback measures better: the marked-up article body or readability's choice after a
    lighter cleaning (the class-name cleaning can strip a whole page whose containers have unlucky
    names), or the jusText-style good paragraphs (forums, shops, recipes). The whole visible text is the
    last resort: a page with visible text never yields nothing."""
    body = light.find("body")
    body = light if body is None else body
    visible = text_len(body)
    if not visible:
        return main_text
    prose, junk = _quality(main_blocks) if main_text else (0, 0)
    weak = prose < MIN_GOOD
    if not weak and len(main_text) >= TRUSTED_SHARE * visible:
        return main_text
    main_q = prose - junk
    whole = blocks_to_text(body)  # the last resort, taken before the candidates' cleaning changes the tree
    marked = marked_up_body(light)
    if marked:
        for block in marked:
            clean_block(block, by_class=False)
        others = [(blocks_to_text(marked), _net(marked))]
    else:
        others = []
    # readability's choice competes beside the marked-up body too: the marked-up block may hold only the first
    # part of an article whose other sections run on outside it
    blocks = readability_candidate(body)
    for block in blocks:
        clean_block(block, by_class=False)
    others.append((blocks_to_text(blocks), _net(blocks)))
    paras = classify(page_paragraphs(body))
    good = [p for p in paras if p.cls == "good"]
    # its quality counts its good paragraphs that are prose on their own (the short ones got in by context)
    q_good = sum(n for n in map(weighed_len, (p.text for p in good)) if n >= SHORT)
    if weak or q_good >= JUSTEXT_RATIO * main_q:
        others.append((good_text(good), q_good))
    # the best fallback replaces the main block only with clearly more good text
    text, q = max(others, key=lambda c: c[1])  # the first of equals
    if not main_text or q >= RATIO * main_q + MARGIN:
        return text or whole
    return main_text or whole


def _net(root) -> int:
    prose, junk = _quality(root)
    return prose - junk


# A heading of at most SHORT_HEADING characters that heads some text on the page but ends a text of MIN_GOOD
# characters or more heads nothing there: what it introduced ("Mehr zum Thema", "You might also like") was
# dropped as boilerplate.
SHORT_HEADING = 60
# How much text after a heading tells what it heads (jusText's MAX_HEADING_DISTANCE), and the share of it in
# links that makes it a link list
HEADED = 200
LINK_LIST = 0.5


def _text_after(h) -> tuple[int, int]:
    """(characters, of them in links) of the text after heading `h`: its tail, then the elements that follow
    it, climbing out of at most two parents that end, up to the next heading or HEADED characters. A walk
    over the few elements after each heading: the whole page's paragraphs cost a fifth of the extraction."""
    chars, links = len((h.tail or "").strip()), 0
    el = h
    while chars < HEADED:
        nxt, climbs = el.getnext(), 0
        while nxt is None and climbs < 2 and el.getparent() is not None:
            el, climbs = el.getparent(), climbs + 1
            nxt = el.getnext()
        if nxt is None:
            break
        el = nxt
        if not isinstance(el.tag, str):
            continue
        if el.tag in HEADINGS:
            break
        chars += text_len(el) + len((el.tail or "").strip())
        links += text_len(el) if el.tag == "a" else sum(text_len(a) for a in el.iter("a"))
    return chars, links


def _heads_links(h) -> bool:
    """Whether the text after heading `h` (see _text_after) is mostly in links."""
    chars, links = _text_after(h)
    return chars > 0 and links >= LINK_LIST * chars


def _short_headings(doc) -> set:
    """The texts of the page's headings of at most SHORT_HEADING characters that head some text (a heading
    with nothing after it on the page ends the article, and is the article's)."""
    out = set()
    for h in doc.iter(*HEADINGS):
        text = " ".join(h.text_content().split())
        if text and len(text) <= SHORT_HEADING and text not in out and _heads_text(h):
            out.add(text)
    return out


def _heads_text(h) -> bool:
    """Whether some text follows heading `h` before the next heading (the walk of _text_after, stopping at
    the first text: most headings head some, and measuring whole sections cost 4% of the extraction)."""
    if (h.tail or "").strip():
        return True
    el = h
    while True:
        nxt, climbs = el.getnext(), 0
        while nxt is None and climbs < 2 and el.getparent() is not None:
            el, climbs = el.getparent(), climbs + 1
            nxt = el.getnext()
        if nxt is None:
            return False
        el = nxt
        if not isinstance(el.tag, str):
            continue
        if el.tag in HEADINGS:
            return False
        if any(t.strip() for t in el.itertext()) or (el.tail or "").strip():
            return True


def _short_links(doc) -> set:
    """The texts of the page's links of at most SHORT_HEADING characters: a line that is only a link's text
    ends an article as navigation ("Zurück zur Übersicht", "Next post")."""
    out = set()
    for a in doc.iter("a"):
        text = " ".join(a.text_content().split())
        if 0 < len(text) <= SHORT_HEADING:
            out.add(text)
    return out


def _link_list_headings(doc) -> tuple[set, set]:
    """The texts of the headings that head link lists: (those whose box, the parent or the grandparent of
    a heading alone in its parent, is mostly link text; those followed by text mostly in links)."""
    boxed, followed, density = set(), set(), {}
    for h in doc.iter(*HEADINGS):
        box = h.getparent()
        if box is not None and len(box) == 1 and box.getparent() is not None:
            box = box.getparent()
        if box is not None:
            if box not in density:
                density[box] = link_density(box)
            if density[box] >= LINK_LIST:
                boxed.add(" ".join(h.text_content().split()))
            elif _heads_links(h):
                followed.add(" ".join(h.text_content().split()))
    return boxed, followed


# A line at the text's edge that is only a date, a byline or a reading time ("7. Oktober 2020", "By Jane
# Doe", "VON Sina Giebel", "4 Min Read", "Aktualisiert: 03.04.2020"): page metadata, not the article.
META_LINE = 60
_MONTH = r"[^\W\d_]{3,}\.?"
_DATE = (rf"(?:\d{{1,2}}[./-] ?\d{{1,2}}[./-] ?\d{{2,4}}|\d{{4}}-\d{{2}}-\d{{2}}"
         rf"|\d{{1,2}}\.? {_MONTH},? \d{{4}}|{_MONTH} \d{{1,2}},? \d{{4}})")
_META = re.compile(
    rf"^(?:(?:[^\W\d_]+:? )?{_DATE}(?:,? \d{{1,2}}[:.]\d{{2}}(?: ?Uhr| ?[AaPp]\.?[Mm]\.?)?)?"
    r"|(?:by|von|par|por|door|av|autor|author|written by):? [^\W\d_][\w.'’-]*(?: [^\W\d_][\w.'’-]*){0,3}"
    r"|\d{1,3} min(?:ute)?s?\.? read)$",
    re.I,
)


def _drop_meta_edges(text: str) -> str:
    """The text less the date, byline and reading-time lines at its start and its end (see _META)."""
    lines = text.split("\n")

    def meta(line: str) -> bool:
        return len(line) <= META_LINE and bool(_META.match(line))

    while len(lines) > 1 and meta(lines[0]):
        lines.pop(0)
    while len(lines) > 1 and meta(lines[-1]):
        lines.pop()
    return "\n".join(lines)


def _drop_dangling(text: str, boxed: set, followed: set = frozenset(), ends: set = frozenset()) -> str:
    """The text less the headings of link lists ("Weitere Artikel", "You might also like") left behind when
    the cleaning dropped the list they introduced: those whose box is mostly links (`boxed`) and the short
    ones (SHORT_HEADING) `followed` by text mostly in links wherever they stand before a line that is not
    prose (the titles of teasers may follow them; a long heading is more often the article's), the others
    `followed` at the end. Less, in a text that is not short, its last lines while they are
    `ends`: short headings that headed some text on the page, short links' texts. The first line stays.
    (Lines of a few words ending with a colon, "Mehr zum Thema:", measured no better: on the Scrapinghub
    set such lines introduce photos and tweets that the expected text keeps.)"""
    lines = text.split("\n")
    heads_links = boxed | {h for h in followed if len(h) <= SHORT_HEADING}
    lines = lines[:1] + [line for line, nxt in zip(lines[1:], lines[2:] + [""])
                         if line not in heads_links or len(nxt) >= SHORT]
    long = len(text) >= MIN_GOOD
    while len(lines) > 1 and (lines[-1] in followed or long and lines[-1] in ends):
        lines.pop()
    return "\n".join(lines)


# A line of at most EDGE_LINE characters at the text's edge that readability's choice in the cleaned page (a
# second, independent method, which main_block computes anyway) does not hold is page furniture the main block
# kept: a byline, a label, a caption, a "share" or "back" link. Checked only when that choice holds MIN_GOOD
# characters or more (an empty or stray one has no opinion). Fitted on the odd-numbered pages of trafilatura's
# set: 60 to 100 measured alike there.
EDGE_LINE = 80


def _drop_unshared_edges(text: str, reference: str) -> str:
    """The text less its first and last lines while they are short and not in `reference` (see EDGE_LINE)."""
    if len(reference) < MIN_GOOD:
        return text
    ref_lines, ref_flat = set(reference.split("\n")), " ".join(reference.split())

    def unshared(line: str) -> bool:
        return len(line) <= EDGE_LINE and line not in ref_lines and " ".join(line.split()) not in ref_flat

    lines = text.split("\n")
    while len(lines) > 1 and unshared(lines[-1]):
        lines.pop()
    while len(lines) > 1 and unshared(lines[0]):
        lines.pop(0)
    return "\n".join(lines)


# Class words naming an article's lead (its standfirst, teaser or summary above the body): the lead often sits
# outside the article body (in the article's <header>, or in a wrapper beside the body) and is lost with them.
_LEAD_WORDS = {"lead", "intro", "teaser", "summary", "excerpt", "standfirst", "abstract", "subtitle", "subheadline",
               "description", "vorspann", "chapo", "dek", "einleitung"}
_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
# A lead is prose of at most LEAD_MAX characters with few links; it joins the main block when it stands before
# it and under one of its LEAD_LEVELS nearest ancestors.
LEAD_MAX = 1500
LEAD_LEVELS = 4


def _is_prose(el) -> bool:
    """Whether `el` holds a paragraph that is prose on its own (paragraphs.py's good class, out of context):
    a lead paragraph, not a one-line subtitle (a dek), which the article-body benchmarks leave out."""
    return any(p.cls == "good" for p in classify(page_paragraphs(el), context=False))


@functools.lru_cache(maxsize=16384)
def _lead_named(ci: str) -> bool:
    """Whether a class/id names an article's lead by one of its words (split at -, _ and camelCase). Cached:
    pages repeat their class names, and sites share them."""
    low = ci.lower()
    if not any(w in low for w in _LEAD_WORDS):  # most names: a quicker test than splitting into words
        return False
    return any(w.lower() in _LEAD_WORDS for w in _WORDS.findall(ci))


# every class and id value of a page, as plain strings: no element objects (half the pages name no lead, and a
# Python loop over their elements cost 5% of the extraction)
_CLASS_AND_ID = etree.XPath("//@class | //@id", smart_strings=False)


def _lead_candidates(doc) -> list:
    """The elements named as an article's lead that hold prose, outermost only."""
    named = {v for v in set(_CLASS_AND_ID(doc)) if _lead_named(v)}
    if not named:
        return []
    out, inside = [], set()
    for el in doc.iter(etree.Element):
        if el in inside or (el.get("class") not in named and el.get("id") not in named):
            continue
        n = text_len(el)
        if n > LEAD_MAX or sum(text_len(a) for a in el.iter("a")) > MAX_LINK_DENSITY * n or not _is_prose(el):
            continue
        out.append(el)
        inside.update(el.iterdescendants())  # a small subtree: LEAD_MAX characters at most
    return out


def _leads(candidates: list, order: dict, blocks: list, text: str) -> list[str]:
    """The texts of the lead candidates that stand before the first block (not around it, not in it), under
    one of its LEAD_LEVELS nearest ancestors, and are not already in the text."""
    if not blocks or blocks[0] not in order:
        return []
    first = blocks[0]
    above = list(first.iterancestors())
    near = set(above[:LEAD_LEVELS])
    out = []
    for el, ancestors in candidates:
        if order[el] >= order[first] or el in above or first in ancestors or not near.intersection(ancestors):
            continue
        lead = blocks_to_text(el)
        if lead and " ".join(lead.split()) not in " ".join(text.split()):
            out.append(lead)
    return out


def extract_tree(doc) -> tuple[str, str]:
    """(title, text) of a parsed document. Mutates the tree (removes boilerplate)."""
    title = _title(doc)
    boxed, followed = _link_list_headings(doc)
    ends = _short_headings(doc) | _short_links(doc)
    titles = " ".join([title] + [" ".join(t.split()) for t in doc.xpath('//meta[@property="og:title"]/@content')])
    drop_never_text(doc)
    light = copy.deepcopy(doc)  # for the fallbacks: only what a reader never sees is removed from it
    strip_hidden(light)
    for h in light.iter("h1"):  # the headline is the title (see _drop_headline)
        if " ".join(h.text_content().split()) in titles:
            h.drop_tree()
    marked = marked_up_body(doc)
    protected = set(marked)
    for el in marked:
        protected.update(el.iterancestors())
    leads = _lead_candidates(doc)
    order = {el: i for i, el in enumerate(doc.iter())} if leads else {}
    leads = [(el, set(el.iterancestors())) for el in leads]  # before the cleaning detaches them
    thread = strip_junk(doc, protected, marked)
    blocks, readable = main_block(doc, marked)
    for block in blocks:
        clean_block(block, thread=thread)
        _drop_headline(block, titles)
    text = blocks_to_text(blocks)
    if leads and text:
        text = "\n".join(_leads(leads, order, blocks, text) + [text])
    # readability's choice in the cleaned page: the second opinion on the text's edges (the main block itself
    # when the page marks up no article body, and then no opinion)
    reference = blocks_to_text(readable) if readable != blocks else ""
    text = _drop_meta_edges(_drop_dangling(_choose(text, blocks, light), boxed, followed, ends))
    return title, _drop_unshared_edges(text, reference)


def extract_html(html: bytes | str, url: str | None = None, http_charset: str | None = None) -> Extracted:
    """The title and main text of an HTML page.

    `html` may be bytes (decoded with the BOM, `http_charset`, the meta charset or a guess) or
    text. `url` is accepted for API symmetry with the crawler and for future site-specific rules;
    it is not fetched.
    """
    doc, enc = parse_html(html, http_charset)
    if doc is None:
        return Extracted("", "", enc)
    title, text = extract_tree(doc)
    if not text:
        text = visible_text(html, http_charset)
    # Unicode's composed form (NFC): one spelling per character however the page encoded it (Bengali's
    # য় as one code point or two), as trafilatura normalizes and tokenizers expect
    return Extracted(unicodedata.normalize("NFC", title), unicodedata.normalize("NFC", text), enc)


def visible_text(html: bytes | str, http_charset: str | None) -> str:
    """The last resort: every line of the page's body that a reader sees (all of it but scripts, styles
    and the head), for a page whose text is all in what the cleaning drops (say, only a <nav>)."""
    doc, _ = parse_html(html, http_charset)
    if doc is None:
        return ""
    etree.strip_elements(doc, "script", "style", "template", "head", with_tail=False)
    body = doc.find("body")
    return blocks_to_text(body if body is not None else doc)


def extract_pdf(data: bytes) -> Extracted:
    """The text of a PDF (pypdf, the [pdf] extra), one line per text line; title from metadata."""
    try:
        from pypdf import PdfReader  # noqa: PLC0415 - optional: the pdf extra
    except ImportError:
        raise MissingDependencyError("PDF support needs pypdf: pip install -e '.[pdf]'") from None

    try:
        reader = PdfReader(io.BytesIO(data))
        title = str((reader.metadata or {}).get("/Title") or "")
        pages = [page.extract_text() or "" for page in reader.pages]
    except Exception:  # noqa: BLE001 - a corrupt PDF yields no text, not a crash
        return Extracted("", "", "pdf")
    lines = [" ".join(line.split()) for page in pages for line in page.splitlines()]
    return Extracted(" ".join(title.split()), "\n".join(line for line in lines if line), "pdf")
