"""Removing what is never main text: script-like elements, hidden elements, page chrome, blocks
whose class/id names boilerplate (cookie banners, share bars, comments ...), and, inside the main
block, link-heavy containers (readability's "conditional cleaning")."""
from __future__ import annotations

import functools
import re

from lxml import etree

from cllm.scraper.dom import class_id, link_density, remove_keeping_tail, text_len
from cllm.scraper.paragraphs import classify, page_paragraphs, weighed_len

# Elements whose content is never prose (rt and rp: a ruby annotation's reading, the furigana over Japanese
# kanji, which would break each word in two).
DROP_TAGS = [
    "script", "style", "noscript", "template", "svg", "math", "canvas", "iframe", "object", "embed",
    "video", "audio", "source", "track", "map", "head", "button", "input", "select", "option",
    "textarea", "label", "nav", "aside", "footer", "menu", "dialog", "figure", "figcaption",
    "picture", "img", "rt", "rp",
]
# Elements that are navigation or page chrome by ARIA role.
_DROP_ROLES = {"navigation", "banner", "contentinfo", "complementary", "dialog", "alertdialog", "menu",
               "menubar", "search", "toolbar", "tablist", "alert", "status"}

# class/id words that mark boilerplate (Readability.js's lists, plus cookie/consent banners,
# newsletters and bylines). Long distinctive stems match anywhere ("commentList", "sharebar");
# short ambiguous words only as whole words of the class, split at -, _ and camelCase, so that
# "pageRow" is not "pager" and "loader" is not "ad".
_UNLIKELY_STEMS = re.compile(
    r"comment|cookie|consent|gdpr|news-?letter|breadcrumb|sidebar|social|share|sharing|related|footer|"
    r"masthead|disqus|outbrain|taboola|sponsor|promo|subscri|signup|popup|modal|recirc|trending|"
    r"skyscraper|shoutbox|combx|agegate|ai2html|yom-remote|advert|byline|caption|credit|pagination|"
    r"replies|remark|supplemental|legends|community|more-stories|most-popular|readmore|read-more|"
    r"screen-reader|visually-hidden|inline-ad|ad-slot|adslot|ad-container|adunit|ad-wrapper|"
    r"metadata|bildunter",
    re.I,
)
_UNLIKELY_WORDS = {
    "ad", "ads", "adv", "dfp", "header", "menu", "nav", "navbar", "pager", "extra", "tags", "tag", "topics",
    "keywords", "skip", "hidden", "dateline", "timestamp", "ticker", "toolbar", "tools", "overlay",
    "banner", "bio", "sr", "widget", "rss", "print", "meta", "signin", "login", "legend", "author", "rating",
    "ratings", "authors", "autor", "autoren", "teilen",
}
_MAYBE_CANDIDATE = re.compile(r"and|article|body|column|content|main|shadow|story|entry", re.I)
_POSITIVE = re.compile(r"article|body|content|entry|hentry|h-entry|main|page|post|text|blog|story|prose", re.I)
_NEGATIVE = re.compile(
    r"-ad-|hidden|^hid$| hid$| hid |^hid |banner|combx|comment|com-|contact|foot|footer|footnote|gdpr|"
    r"masthead|media|meta|outbrain|promo|related|scroll|share|shoutbox|sidebar|skyscraper|sponsor|"
    r"shopping|tags|tool|widget|cookie|consent|newsletter|subscri|byline|caption|credit|recirc",
    re.I,
)
# A block named "read more" that holds prose (paragraphs with few links) is the rest of the article that a
# button unfolds; without, or inside a link, a "Read more" link or teaser
_READ_MORE = re.compile(r"readmore|read-more", re.I)
# The names of comments (a subset of the stems above): on a thread they name the page's content.
_COMMENT = re.compile(r"comment|replies|remark|disqus", re.I)
# A page whose prose outside its comment-named blocks is under this many characters is a thread (about
# three short paragraphs: extract.py's MIN_GOOD), not an article with a comment section.
THREAD_REST = 500
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)
_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


# Pages repeat their class names many times, and sites share them (CMS themes): the verdicts are cached.
@functools.lru_cache(maxsize=16384)
def _unlikely(ci: str) -> bool:
    """Named like boilerplate by a stem or a whole word, and not like a content candidate."""
    if _MAYBE_CANDIDATE.search(ci):
        return False
    if _UNLIKELY_STEMS.search(ci):
        return True
    return any(w.lower() in _UNLIKELY_WORDS for w in _WORDS.findall(ci))


@functools.lru_cache(maxsize=16384)
def _unlikely_stem(ci: str) -> bool:
    """Named like boilerplate by a distinctive stem, and not like a content candidate."""
    return bool(_UNLIKELY_STEMS.search(ci)) and not _MAYBE_CANDIDATE.search(ci)


def class_weight(el, thread: bool = False) -> int:
    """Readability's class/id weight: +25 for a content-like name, -25 for a boilerplate-like one (a
    comment's name is not, on a thread: see strip_junk)."""
    ci = class_id(el)
    if thread:
        ci = _COMMENT.sub("", ci)
    weight = 0
    if _NEGATIVE.search(ci):
        weight -= 25
    if _POSITIVE.search(ci):
        weight += 25
    return weight


# Page-chrome elements that lose their tag, not their content, when they hold most of the page's
# text: an unclosed <nav> or <aside> that swallowed the article (the parser closes it at </body>).
_CHROME_TAGS = ("nav", "aside", "footer", "menu", "dialog", "label", "button", "figure")
# A <noscript> holding at least this much text is the page's content for readers without JavaScript
# (sites that render their articles with scripts), not a "please enable JavaScript" notice.
NOSCRIPT_CONTENT = 500


def drop_never_text(doc) -> None:
    """Remove the elements whose content is never prose (DROP_TAGS), text after them kept."""
    body = doc.find("body")
    for el in doc.iter("noscript"):
        if text_len(el) >= NOSCRIPT_CONTENT:
            el.tag = "div"
    if body is not None:
        swallowing = 0.5 * text_len(body)
        for el in list(body.iter(*_CHROME_TAGS)):
            if swallowing and text_len(el) > swallowing:
                el.tag = "div"
    etree.strip_elements(doc, *DROP_TAGS, with_tail=False)


def _hidden_or_chrome(el) -> bool:
    return (el.get("hidden") is not None or el.get("aria-hidden") == "true"
            or (el.get("role") or "").lower() in _DROP_ROLES
            or bool(_HIDDEN_STYLE.search(el.get("style") or "")))


def strip_hidden(doc) -> None:
    """The light cleaning that the fallbacks (cllm/scraper/extract.py) start from: remove hidden
    elements, page chrome by ARIA role and blocks named by a distinctive boilerplate stem (comments,
    cookies, share bars ...), but not those named only by a short word ("widget", "tag", "hidden",
    "ads"), which also name the containers of whole articles on some sites."""
    for el in list(doc.iter(etree.Element)):
        if el.getparent() is None or el.tag in ("html", "body"):
            continue
        ci = class_id(el)
        if _hidden_or_chrome(el) or (ci.strip() and el.tag != "a" and _unlikely_stem(ci)):
            remove_keeping_tail(el)


def _prose(elements) -> int:
    """Characters of prose in `elements`: their paragraphs of SHORT characters or more with few links."""
    paras = classify(page_paragraphs(list(elements)), context=False) if elements else []
    return sum(weighed_len(p.text) for p in paras if p.cls in ("good", "near"))


def strip_junk(doc, protected: set, marked: list = ()) -> bool:
    """Remove hidden elements, page chrome, <header>s and boilerplate-named blocks.

    A block named like boilerplate is kept when it is an ancestor of a marked-up article body
    (`protected`; `marked` are those bodies) or holds most of the page's text and is not beside a
    marked-up body with prose: sites wrap whole pages in classes such as "advertisement-off-canvas-pusher".
    Blocks named as comments are kept when the page is a thread (a forum, a live ticker): they hold its
    prose, what remains without them holds little (under THREAD_REST characters), and no one of them holds
    most of their text (an article's comment section has one container, a thread's posts stand side by
    side). Returns whether the page is a thread.
    """
    body = doc.find("body")
    root = body if body is not None else doc
    half_page = text_len(root) / 2
    # with a marked-up article body that holds prose, a large boilerplate-named block beside it (not inside
    # it) is not a wrapper of the page: the size exemption below does not hold for it
    article_prose = []  # measured once, when first needed (a large boilerplate-named block is rare)

    def has_article() -> bool:
        if not article_prose:
            article_prose.append(_prose(marked) if marked else 0)
        return article_prose[0] >= THREAD_REST

    drop, comments = [], []
    widest = 0  # the text of the largest comment-named block, also one kept for its size
    # outermost first, in document order, with whether inside the marked-up body; a dropped block's inside is not
    # visited
    stack = [(el, False) for el in reversed(root)]
    while stack:
        el, inside = stack.pop()
        if not isinstance(el.tag, str):
            continue
        ci = class_id(el)
        inside = inside or el in marked
        if el in protected:
            pass
        elif _hidden_or_chrome(el) or el.tag == "header":
            drop.append(el)
            continue
        elif _READ_MORE.search(ci) and not any(a.tag == "a" for a in el.iterancestors()) and _prose([el]):
            pass  # the collapsed rest of the article behind a "read more" button, not a "read more" link
        elif ci.strip() and el.tag != "a" and _unlikely(ci):
            n, comment = text_len(el), bool(_COMMENT.search(ci))
            if comment:
                widest = max(widest, n)
            if n < half_page or not inside and has_article():
                (comments if comment else drop).append(el)
                continue
        stack.extend((child, inside) for child in reversed(el))
    thread = False
    if comments:
        in_comments = _prose(comments)
        rest = _prose([root]) - in_comments - _prose(drop)
        thread = rest < THREAD_REST <= in_comments and widest < 0.5 * sum(map(text_len, comments))
    for el in drop if thread else drop + comments:
        remove_keeping_tail(el)
    return thread


def clean_block(block, by_class: bool = True, thread: bool = False) -> None:
    """Drop link-heavy or boilerplate-scored containers inside the main block (readability's
    'conditional cleaning'); without `by_class`, by their links only (the fallbacks' lighter cleaning);
    on a `thread` (see strip_junk), a comment's name does not count against it."""
    for el in list(block.iter("div", "section", "ul", "ol", "table", "dl", "p", "span")):
        if el is block or el.getparent() is None:
            continue
        n = text_len(el)
        if n == 0:
            continue
        density = link_density(el)
        weight = class_weight(el, thread) if by_class else 0
        if el.tag in ("ul", "ol") and density > 0.5:
            remove_keeping_tail(el)
        elif el.tag != "p" and el.tag != "span" and (weight < 0 and n < 500 or density > 0.5 and n < 1000):
            remove_keeping_tail(el)
        elif el.tag == "p" and density > 0.8 and n < 150:
            remove_keeping_tail(el)
