"""Main-text extraction from an HTML page with lxml.

    extract_html(html, url=None, http_charset=None) -> Extracted(title, text)

The text is the page's main content (an article body, a blog post, a documentation page) without
scripts, styles, navigation, headers, footers, cookie banners, share bars, comments and other
boilerplate; each paragraph, heading and list item on its own line; all entities decoded.

How it works (the ideas of readability and trafilatura, kept small):
1. decode: the BOM, else the HTTP charset, else the <meta> charset, else UTF-8, else a guess;
2. parse with lxml and drop what is never text (script, style, nav, footer, forms controls,
   hidden elements) and blocks whose class/id says boilerplate (cookie, share, related, comment);
3. find the main block: a marked-up article body when the page has one (itemprop=articleBody,
   <article>, the usual CMS class names), else readability's scoring of paragraphs, whose score
   flows to their parent and grandparent;
4. clean inside that block (link-heavy lists, captions, "Advertisement" lines) and serialize block
   by block, one line each.
"""
from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

import lxml.html
from lxml import etree

__all__ = ["Extracted", "decode_html", "extract_html", "parse_html", "extract_tree"]


@dataclass(frozen=True)
class Extracted:
    """What one page yields: its title and its main text (lines = paragraphs/headings)."""

    title: str
    text: str
    encoding: str = ""


# ----------------------------------------------------------------------------------------------
# 1. decoding

_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
# <meta charset=x> and <meta http-equiv=Content-Type content="text/html; charset=x">
_META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([-\w.:]+)""", re.I)


def _codec(label: str | None) -> str | None:
    """A Python codec name for a charset label, or None when unknown.

    As browsers do (WHATWG Encoding), latin-1 and ASCII labels mean windows-1252: pages that
    say iso-8859-1 routinely contain cp1252 quotes and dashes in 0x80-0x9F.
    """
    if not label:
        return None
    try:
        name = codecs.lookup(label.strip().strip("\"'").lower()).name
    except LookupError:
        return None
    if name in ("latin-1", "iso8859-1", "ascii"):
        return "cp1252"
    if name.startswith("utf-16") or name == "utf-32":
        return "utf-8"  # a meta/header claiming UTF-16 on bytes we already read as ASCII-compatible
    return name


def decode_html(data: bytes | str, http_charset: str | None = None) -> tuple[str, str]:
    """Decode page bytes to text; returns (text, codec used).

    Precedence follows the HTML standard: a byte-order mark wins, then the HTTP header's charset,
    then a <meta> charset in the first 4 KB, then strict UTF-8, then charset-normalizer's guess.
    """
    if isinstance(data, str):
        return data.lstrip("\ufeff"), "str"
    for bom, enc in _BOMS:
        if data.startswith(bom):
            return data[len(bom):].decode(enc, "replace"), enc
    meta = _META_CHARSET.search(data[:4096])
    for label in (http_charset, meta.group(1).decode("ascii", "ignore") if meta else None):
        enc = _codec(label)
        if enc:
            try:
                return data.decode(enc), enc
            except UnicodeDecodeError:
                continue  # a wrong declaration: fall through to the next source of truth
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(data[:200_000]).best()
        if best is not None:
            return data.decode(best.encoding, "replace"), best.encoding
    except Exception:  # noqa: BLE001 - detection is a best effort; cp1252 below never fails
        pass
    return data.decode("cp1252", "replace"), "cp1252"


# ----------------------------------------------------------------------------------------------
# 2. parsing and removing what is never main text

_PARSER = lxml.html.HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True, default_doctype=False)
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*>", re.I)


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


# Elements whose content is never prose.
_DROP_TAGS = [
    "script", "style", "noscript", "template", "svg", "math", "canvas", "iframe", "object", "embed",
    "video", "audio", "source", "track", "map", "head", "button", "input", "select", "option",
    "textarea", "label", "nav", "aside", "footer", "menu", "dialog", "figure", "figcaption",
    "picture", "img",
]
# Elements that are navigation or page chrome by ARIA role.
_DROP_ROLES = {"navigation", "banner", "contentinfo", "complementary", "dialog", "alertdialog", "menu",
               "menubar", "search", "toolbar", "tablist", "alert", "status"}

# class/id words that mark boilerplate (Readability.js's lists, plus cookie/consent banners,
# newsletters and bylines). Long distinctive stems match anywhere ("commentList", "sharebar");
# short ambiguous words only as whole words of the class, split at -, _ and camelCase, so that
# "pageRow" is not "pager" and "loader" is not "ad".
_UNLIKELY_STEMS = re.compile(
    r"comment|cookie|consent|gdpr|newsletter|breadcrumb|sidebar|social|share|sharing|related|footer|"
    r"masthead|disqus|outbrain|taboola|sponsor|promo|subscri|signup|popup|modal|recirc|trending|"
    r"skyscraper|shoutbox|combx|agegate|ai2html|yom-remote|advert|byline|caption|credit|pagination|"
    r"replies|remark|supplemental|legends|community|more-stories|most-popular|readmore|read-more|"
    r"screen-reader|visually-hidden|inline-ad|ad-slot|adslot|ad-container|adunit|ad-wrapper",
    re.I,
)
_UNLIKELY_WORDS = {
    "ad", "ads", "adv", "dfp", "header", "menu", "nav", "navbar", "pager", "extra", "tags", "tag", "topics",
    "keywords", "skip", "hidden", "dateline", "timestamp", "ticker", "toolbar", "tools", "overlay",
    "banner", "bio", "sr", "widget", "rss", "print", "meta", "signin", "login",
}
_MAYBE_CANDIDATE = re.compile(r"and|article|body|column|content|main|shadow|story|entry", re.I)
_POSITIVE = re.compile(r"article|body|content|entry|hentry|h-entry|main|page|post|text|blog|story|prose", re.I)
_NEGATIVE = re.compile(
    r"-ad-|hidden|^hid$| hid$| hid |^hid |banner|combx|comment|com-|contact|foot|footer|footnote|gdpr|"
    r"masthead|media|meta|outbrain|promo|related|scroll|share|shoutbox|sidebar|skyscraper|sponsor|"
    r"shopping|tags|tool|widget|cookie|consent|newsletter|subscri|byline|caption|credit|recirc",
    re.I,
)
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)
_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


def _unlikely(ci: str) -> bool:
    if _UNLIKELY_STEMS.search(ci):
        return True
    return any(w.lower() in _UNLIKELY_WORDS for w in _WORDS.findall(ci))


def _class_id(el) -> str:
    return (el.get("class") or "") + " " + (el.get("id") or "")


def _remove(el) -> None:
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


def _strip_junk(doc, protected: set) -> None:
    """Remove never-text tags, hidden elements, page chrome and boilerplate-named blocks.

    A block named like boilerplate is kept when it is an ancestor of a marked-up article body
    (`protected`) or holds most of the page's text: sites wrap whole pages in classes such as
    "advertisement-off-canvas-pusher".
    """
    body = doc.find("body")
    half_page = _text_len(body if body is not None else doc) / 2
    for el in list(doc.iter(etree.Element)):
        if el.getparent() is None or el.tag in ("html", "body") or el in protected:
            continue
        if (el.get("hidden") is not None or el.get("aria-hidden") == "true"
                or (el.get("role") or "").lower() in _DROP_ROLES
                or _HIDDEN_STYLE.search(el.get("style") or "")):
            _remove(el)
            continue
        if el.tag == "header":
            _remove(el)
            continue
        ci = _class_id(el)
        if (ci.strip() and el.tag != "a" and _unlikely(ci) and not _MAYBE_CANDIDATE.search(ci)
                and _text_len(el) < half_page):
            _remove(el)


# ----------------------------------------------------------------------------------------------
# 3. finding the main block

# Marked-up article bodies, most specific first. All matches of the first selector that has
# enough text are taken, in document order (some sites split one story into several blocks).
_BODY_XPATHS = [
    '//*[@itemprop="articleBody"]',
    '//*[@name="articleBody"]',
    '//*[contains(concat(" ", normalize-space(@class), " "), " article-body ") or '
    'contains(@class, "article__body") or contains(@class, "articleBody") or contains(@class, "article-content") '
    'or contains(@class, "story-body") or contains(@class, "story-content") or contains(@class, "entry-content") '
    'or contains(@class, "post-content") or contains(@class, "post-body") or contains(@class, "c-entry-content") '
    'or contains(@class, "article-text") or contains(@class, "body-text") or contains(@class, "story-text")'
    'or contains(@class, "ArticleBody") or contains(@class, "article__content") or contains(@class, "StoryBody")]',
    "//article",
    '//*[@role="main"]',
    "//main",
]

_BLOCK_TAGS = {
    "p", "div", "section", "article", "main", "h1", "h2", "h3", "h4", "h5", "h6", "li", "ul", "ol", "dl",
    "dt", "dd", "blockquote", "pre", "table", "tr", "td", "th", "tbody", "thead", "tfoot", "caption",
    "address", "center", "form", "fieldset", "details", "summary", "hr", "br", "body", "html", "header",
    "figure", "figcaption", "hgroup",
}
_SCORED_TAGS = ("p", "pre", "blockquote", "li", "dd")
_INLINE_TAGS = {"a", "b", "i", "em", "strong", "span", "font", "u", "small", "big", "sub", "sup", "code",
                "abbr", "cite", "q", "mark", "time", "s", "strike", "del", "ins", "kbd", "var", "tt"}
_TAG_BONUS = {"div": 5, "article": 8, "section": 3, "pre": 3, "td": 3, "blockquote": 3, "main": 5}


def _text_len(el) -> int:
    return len(" ".join(el.text_content().split()))


def _link_density(el) -> float:
    total = _text_len(el)
    if not total:
        return 0.0
    links = sum(_text_len(a) for a in el.iter("a"))
    return links / total


def _class_weight(el) -> int:
    ci = _class_id(el)
    weight = 0
    if _NEGATIVE.search(ci):
        weight -= 25
    if _POSITIVE.search(ci):
        weight += 25
    return weight


def _own_text(el) -> str:
    """Text directly inside `el` (not inside its element children): prose written into a <div>
    with <br>s instead of <p>s."""
    parts = [el.text or ""] + [child.tail or "" for child in el if child.tag not in _BLOCK_TAGS or child.tag == "br"]
    parts += [child.text_content() for child in el if child.tag in _INLINE_TAGS]
    return " ".join(" ".join(parts).split())


# Readability.js's constants: candidates within 75% of the best one are "strong"; 3 strong ones
# under one ancestor make that ancestor the article; siblings scoring 20% of it join it.
STRONG_RATIO = 0.75
MIN_STRONG = 3
SIBLING_RATIO = 0.2


def _readability_candidate(body):
    """Readability's scoring: every paragraph gives 1 + commas + length/100 (max 3) points to its
    parent and half of that to its grandparent; the best-scoring node, scaled by its link density,
    is the main block."""
    scores: dict = {}

    def credit(node, points):
        if node is None or not isinstance(node.tag, str):
            return
        if node not in scores:
            scores[node] = _class_weight(node) + _TAG_BONUS.get(node.tag, 0)
        scores[node] += points

    for el in body.iter(etree.Element):
        if el.tag in _SCORED_TAGS:
            text = " ".join(el.text_content().split())
            owner = el.getparent()
        elif el.tag in ("div", "section", "article", "td", "font", "span", "center"):
            text = _own_text(el)  # a text-holding container scores like a paragraph inside itself
            owner = el
        else:
            continue
        if len(text) < 25 or owner is None:
            continue
        points = 1 + text.count(",") + text.count("\u3001") + min(len(text) // 100, 3)
        credit(owner, points)
        credit(owner.getparent(), points / 2)
    if not scores:
        return []
    final = {n: v * (1 - _link_density(n)) for n, v in scores.items()}
    ranked = sorted(final, key=final.get, reverse=True)
    best = ranked[0]
    top = final[best]
    # An article split into several blocks (sections between figures): when other strong
    # candidates share an ancestor with the best one, that ancestor is the article.
    strong = [n for n in ranked[1:6] if final[n] >= STRONG_RATIO * top and best not in n.iterancestors()
              and n not in set(best.iterancestors())]
    if len(strong) >= MIN_STRONG:
        for anc in best.iterancestors():
            if anc.tag in ("body", "html"):
                break
            if sum(1 for n in strong if anc in set(n.iterancestors())) >= MIN_STRONG:
                best = anc
                top = max(top, final.get(anc, 0.0))
                break
    # Readability's sibling rule: siblings that score well enough belong to the article too.
    parent = best.getparent()
    if parent is None:
        return [best]
    threshold = max(10.0, SIBLING_RATIO * top)
    keep = []
    for sib in parent:
        if not isinstance(sib.tag, str):
            continue
        if sib is best or final.get(sib, 0.0) >= threshold:
            keep.append(sib)
        elif sib.tag == "p":
            n, density = _text_len(sib), _link_density(sib)
            if (n > 80 and density < 0.25) or (0 < n <= 80 and density == 0 and sib.text_content().strip().endswith(".")):
                keep.append(sib)
    return keep


def _marked_up_body(doc):
    """All outermost matches of the first article-body selector that finds enough text."""
    for xp in _BODY_XPATHS:
        found = doc.xpath(xp)
        found_set = set(found)
        found = [el for el in found if not any(anc in found_set for anc in el.iterancestors())]
        if not found:
            continue
        # Several matches: the largest is the article; the others belong to it only when they
        # look like parts of one story split into blocks (beside it, or of the same class).
        # Otherwise they are teaser cards of other stories.
        largest = max(found, key=_text_len)
        found = [el for el in found if el is largest or el.getparent() is largest.getparent()
                 or (el.get("class") and el.get("class") == largest.get("class"))]
        if sum(_text_len(el) for el in found) >= 200:
            return found
    return []


def _main_block(doc, marked: list):
    body = doc.find("body")
    if body is None:
        body = doc
    readable = _readability_candidate(body)
    readable_len = sum(_text_len(el) for el in readable)
    # the marked-up body (protected from the cleaning), unless readability found far more text
    if marked and sum(_text_len(el) for el in marked) >= max(200, 0.3 * readable_len):
        return marked
    return readable or [body]


# ----------------------------------------------------------------------------------------------
# 4. cleaning the main block and turning it into lines

_AD_LINE = re.compile(r"^(advertisement|advertising|sponsored|story continues below( advertisement)?|"
                      r"continue reading( below)?|read more|related:?|see also:?|share( this)?( article)?|"
                      r"click here.*|scroll to continue.*)$", re.I)


def _clean_block(block) -> None:
    """Drop link-heavy or boilerplate-scored containers inside the main block (readability's
    'conditional cleaning')."""
    for el in list(block.iter("div", "section", "ul", "ol", "table", "dl", "p", "span")):
        if el is block or el.getparent() is None:
            continue
        n = _text_len(el)
        if n == 0:
            continue
        density = _link_density(el)
        weight = _class_weight(el)
        if el.tag in ("ul", "ol") and density > 0.5:
            _remove(el)
        elif el.tag != "p" and el.tag != "span" and (weight < 0 and n < 500 or density > 0.5 and n < 1000):
            _remove(el)
        elif el.tag == "p" and density > 0.8 and n < 150:
            _remove(el)


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
        is_block = tag in _BLOCK_TAGS
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


_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")


def _tidy(lines: list[tuple[str, bool]]) -> str:
    keep = []
    for line, verbatim in lines:
        line = _INVISIBLE.sub("", line).replace("\xa0", " ")
        line = line.rstrip() if verbatim else line.strip()
        if not line.strip() or (not verbatim and _AD_LINE.match(line)):
            continue
        keep.append(line)
    return "\n".join(keep)


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


def extract_tree(doc) -> tuple[str, str]:
    """(title, text) of a parsed document. Mutates the tree (removes boilerplate)."""
    title = _title(doc)
    titles = " ".join([title] + [" ".join(t.split()) for t in doc.xpath('//meta[@property="og:title"]/@content')])
    etree.strip_elements(doc, *_DROP_TAGS, with_tail=False)
    marked = _marked_up_body(doc)
    protected = set(marked)
    for el in marked:
        protected.update(el.iterancestors())
    _strip_junk(doc, protected)
    blocks = _main_block(doc, marked)
    for block in blocks:
        _clean_block(block)
        # the headline repeats the title, which the caller gets as .title: keep the text body-only
        for h in list(block.iter("h1")):
            headline = " ".join(h.text_content().split())
            if headline and headline in titles:
                _remove(h)
    return title, _tidy(_lines(blocks))


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
    return Extracted(title, text, enc)


def extract_pdf(data: bytes) -> Extracted:
    """The text of a PDF (pypdf, the [pdf] extra), one line per text line; title from metadata."""
    try:
        from pypdf import PdfReader
    except ImportError:
        from cllm.errors import MissingDependencyError

        raise MissingDependencyError("PDF support needs pypdf: pip install -e '.[pdf]'") from None
    import io

    try:
        reader = PdfReader(io.BytesIO(data))
        title = str((reader.metadata or {}).get("/Title") or "")
        pages = [page.extract_text() or "" for page in reader.pages]
    except Exception:  # noqa: BLE001 - a corrupt PDF yields no text, not a crash
        return Extracted("", "", "pdf")
    lines = [" ".join(line.split()) for page in pages for line in page.splitlines()]
    return Extracted(" ".join(title.split()), "\n".join(line for line in lines if line), "pdf")
