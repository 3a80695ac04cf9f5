"""Finding a page's main block: a marked-up article body when the page has one (itemprop=articleBody,
<article>, the usual CMS class names), else readability's scoring of paragraphs, whose score flows
to their parent and grandparent."""
from __future__ import annotations

import re

from lxml import etree

from cllm.scraper.boilerplate import class_weight
from cllm.scraper.dom import BLOCK_TAGS, INLINE_TAGS, class_id, link_density, text_len

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

# Names of marked-up blocks that are not the article body: comments and teasers of other stories.
_NOT_BODY = re.compile(r"comment|teaser", re.I)
_SCORED_TAGS = ("p", "pre", "blockquote", "li", "dd")
_TAG_BONUS = {"div": 5, "article": 8, "section": 3, "pre": 3, "td": 3, "blockquote": 3, "main": 5}

# Readability.js's constants: candidates within 75% of the best one are "strong"; 3 strong ones
# under one ancestor make that ancestor the article; siblings scoring 20% of it join it.
STRONG_RATIO = 0.75
MIN_STRONG = 3
SIBLING_RATIO = 0.2
# Sections of one article in wrappers of their own are found this many levels above the best block,
# and have under this link density.
COUSIN_LEVELS = 5
COUSIN_LINKS = 0.25


def _own_text(el) -> str:
    """Text directly inside `el` (not inside its element children): prose written into a <div>
    with <br>s instead of <p>s."""
    parts = [el.text or ""] + [child.tail or "" for child in el if child.tag not in BLOCK_TAGS or child.tag == "br"]
    parts += [child.text_content() for child in el if child.tag in INLINE_TAGS]
    return " ".join(" ".join(parts).split())


def score_paragraphs(body) -> dict:
    """{node: readability score}: every paragraph gives 1 + commas + length/100 (max 3) points to
    its parent and half of that to its grandparent; a node starts from its class and tag weight."""
    scores: dict = {}

    def credit(node, points):
        if node is None or not isinstance(node.tag, str):
            return
        if node not in scores:
            scores[node] = class_weight(node) + _TAG_BONUS.get(node.tag, 0)
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
    return scores


def _common_ancestor_of_strong(best, top: float, ranked: list, final: dict):
    """An article split into several blocks (sections between figures): when other strong
    candidates share an ancestor with the best one, that ancestor is the article. (best, top)."""
    strong = [n for n in ranked[1:6] if final[n] >= STRONG_RATIO * top and best not in n.iterancestors()
              and n not in set(best.iterancestors())]
    if len(strong) >= MIN_STRONG:
        for anc in best.iterancestors():
            if anc.tag in ("body", "html"):
                break
            if sum(1 for n in strong if anc in set(n.iterancestors())) >= MIN_STRONG:
                return anc, max(top, final.get(anc, 0.0))
    return best, top


def _with_siblings(best, top: float, final: dict) -> list:
    """Readability's sibling rule: siblings that score well enough belong to the article too."""
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
            n, density = text_len(sib), link_density(sib)
            short_sentence = 0 < n <= 80 and density == 0 and sib.text_content().strip().endswith(".")
            if (n > 80 and density < 0.25) or short_sentence:
                keep.append(sib)
    return keep


def _with_cousins(best, top: float, keep: list, final: dict) -> list:
    """An article cut into sections, each in a wrapper of its own (page builders, CSS-in-JS sites): the
    elements of the best one's tag and class under its ancestor COUSIN_LEVELS up that score as a
    sibling must (readability's rule) and have few links join it, in document order."""
    cls = best.get("class")
    if not cls:
        return keep
    anc = best
    for _ in range(COUSIN_LEVELS):
        parent = anc.getparent()
        if parent is None or parent.tag in ("body", "html"):
            break
        anc = parent
    kept = set(keep)
    cousins = [el for el in anc.iter(best.tag) if el.get("class") == cls and el not in kept
               and final.get(el, 0.0) >= max(10.0, SIBLING_RATIO * top) and link_density(el) < COUSIN_LINKS
               and not any(a in kept for a in el.iterancestors())]
    if not cousins:
        return keep
    cousins = [el for el in cousins if not any(c in kept for c in el.iterdescendants())]
    order = {el: i for i, el in enumerate(anc.iter())}
    return sorted(keep + cousins, key=order.__getitem__)


def readability_candidate(body) -> list:
    """The main block by readability's scoring: the best-scoring node, scores scaled by link
    density, widened to a common ancestor or joined by good siblings ([] when nothing scores)."""
    scores = score_paragraphs(body)
    if not scores:
        return []
    final = {n: v * (1 - link_density(n)) for n, v in scores.items()}
    ranked = sorted(final, key=final.get, reverse=True)
    best, top = _common_ancestor_of_strong(ranked[0], final[ranked[0]], ranked, final)
    return _with_cousins(best, top, _with_siblings(best, top, final), final)


def marked_up_body(doc) -> list:
    """All outermost matches of the first article-body selector that finds enough text (less those
    named as comments or teasers: an <article> per comment or per teaser card is not the article)."""
    for xp in _BODY_XPATHS:
        found = [el for el in doc.xpath(xp) if not _NOT_BODY.search(class_id(el))]
        found_set = set(found)
        found = [el for el in found if not any(anc in found_set for anc in el.iterancestors())]
        if not found:
            continue
        # Several matches: the largest is the article; the others belong to it only when they
        # look like parts of one story split into blocks (beside it, or of the same class).
        # Otherwise they are teaser cards of other stories.
        largest = max(found, key=text_len)
        found = [el for el in found if el is largest or el.getparent() is largest.getparent()
                 or (el.get("class") and el.get("class") == largest.get("class"))]
        if sum(text_len(el) for el in found) >= 200:
            return found
    return []


def main_block(doc, marked: list) -> tuple[list, list]:
    """(the blocks holding the main text, readability's choice): the main blocks are the marked-up body
    (protected from the cleaning), unless readability found far more text; else readability's choice;
    else the whole body."""
    body = doc.find("body")
    if body is None:
        body = doc
    readable = readability_candidate(body)
    readable_len = sum(text_len(el) for el in readable)
    if marked and sum(text_len(el) for el in marked) >= max(200, 0.3 * readable_len):
        return marked, readable
    return readable or [body], readable
