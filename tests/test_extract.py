"""Main-text extraction on hand-written pages whose main text is known."""
from hypothesis import given, settings
from hypothesis import strategies as st

from cllm.scraper.boilerplate import strip_junk
from cllm.scraper.dom import parse_html
from cllm.scraper.extract import Extracted, decode_html, extract_html

P1 = ("Lighthouses were once kept by families who lived beside the lamp, trimming the wick every "
      "four hours through the night, in every kind of weather.")
P2 = ("The keepers wrote the weather, passing ships and the oil they burned into a logbook, and many "
      "of those logbooks survive in regional archives today.")
P3 = ("Automation arrived in the twentieth century, and by the nineteen-eighties almost every light "
      "on the coast ran without a resident keeper at all.")

ARTICLE = f"""<!DOCTYPE html>
<html><head><title>The Last Lighthouse Keepers | Coast Weekly</title>
<style>p {{ color: red }} .secret {{ }}</style>
<script>var tracking = "SCRIPT-TEXT";</script></head>
<body>
<div id="cookie-banner">We use cookies to improve your experience. Accept all cookies</div>
<header class="site-header"><a href="/">Coast Weekly</a> SITE-HEADER</header>
<nav><ul><li><a href="/news">News</a></li><li><a href="/sport">NAV-SPORT</a></li></ul></nav>
<div class="layout">
  <main>
    <article>
      <h1>The Last Lighthouse Keepers</h1>
      <div class="share-bar"><a href="#">Share on Facebook</a> <a href="#">SHARE-TWEET</a></div>
      <p>{P1}</p>
      <h2>Logbooks</h2>
      <p>{P2}</p>
      <div class="advertisement">ADVERT-TEXT buy now</div>
      <p>{P3}</p>
      <ul class="related-links"><li><a href="/a">RELATED-ONE</a></li><li><a href="/b">Related two</a></li></ul>
    </article>
  </main>
  <aside class="sidebar"><h3>Most read</h3><p>SIDEBAR-TEXT with a long enough sentence to score, yes indeed.</p></aside>
</div>
<section class="comments"><p>COMMENT-TEXT: great article, thanks for writing it, really.</p></section>
<footer>FOOTER-TEXT Copyright 2024 Coast Weekly</footer>
</body></html>"""


# a piece of each kind of boilerplate in ARTICLE: none may reach the main text
BOILERPLATE = ("SCRIPT-TEXT", "color: red", "cookies", "SITE-HEADER", "NAV-SPORT", "SHARE-TWEET", "ADVERT-TEXT",
               "RELATED-ONE", "SIDEBAR-TEXT", "COMMENT-TEXT", "FOOTER-TEXT")


def assert_article_text(text: str) -> None:
    lines = text.splitlines()
    # paragraphs and headings each on their own line, in document order
    assert P1 in lines and P2 in lines and P3 in lines and "Logbooks" in lines
    assert lines.index(P1) < lines.index("Logbooks") < lines.index(P2) < lines.index(P3)
    for junk in BOILERPLATE:
        assert junk not in text, junk


def test_article_main_text_without_boilerplate():
    got = extract_html(ARTICLE, url="https://coast.example/keepers")
    assert isinstance(got, Extracted)
    assert got.title == "The Last Lighthouse Keepers | Coast Weekly"
    assert_article_text(got.text)


def test_page_without_semantic_markup_uses_paragraph_scoring():
    page = f"""<html><body>
    <div id="top"><a href="/">Home</a> | <a href="/about">About</a> | <a href="/contact">Contact</a></div>
    <table><tr><td class="left"><a href="/1">Link one</a><br><a href="/2">Link two</a></td>
    <td class="main"><font size="4">Keepers</font><p>{P1}</p><p>{P2}</p><p>{P3}</p></td></tr></table>
    <div class="bottom">(c) 1999 all rights reserved</div></body></html>"""
    text = extract_html(page).text
    assert P1 in text and P2 in text and P3 in text
    assert "Link one" not in text and "all rights reserved" not in text


def test_text_in_divs_with_br_is_kept_line_by_line():
    page = f"<html><body><div class='txt'>{P1}<br>{P2}<br/><b>{P3}</b></div></body></html>"
    assert extract_html(page).text.splitlines() == [P1, P2, P3]


def test_named_and_numeric_entities_are_decoded():
    page = ("<html><head><title>Caf&eacute; &amp; co</title></head><body><article><p>"
            "Caf&eacute; cr&egrave;me &amp; pain &mdash; 5&nbsp;&euro; &#8220;quoted&#8221; &#x2603; "
            "&hellip; &apos;single&apos; and a long enough sentence for the main text.</p></article></body></html>")
    got = extract_html(page)
    assert got.title == "Café & co"
    assert got.text == "Café crème & pain — 5 € “quoted” ☃ … 'single' and a long enough sentence for the main text."


def test_latin1_declared_in_meta():
    page = ('<html><head><meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1">'
            "<title>Cr\u00e8me br\u00fbl\u00e9e</title></head><body><p>Une cr\u00e8me br\u00fbl\u00e9e "
            "co\u00fbte 5 \u20ac au caf\u00e9, and this sentence is long enough.</p></body></html>")
    data = page.encode("cp1252")  # latin-1 labels mean windows-1252 (the euro sign is 0x80)
    got = extract_html(data)
    assert got.title == "Crème brûlée"
    assert "Une crème brûlée coûte 5 € au café" in got.text
    assert got.encoding == "cp1252"


def test_utf8_bom_wins_over_wrong_http_and_meta_charsets():
    page = ('<html><head><meta charset="iso-8859-1"><title>\u00c5ngstr\u00f6m</title></head>'
            "<body><p>\u00c5ngstr\u00f6m \u4e2d\u6587 \u2014 a sentence long enough to be main text.</p></body></html>")
    got = extract_html(b"\xef\xbb\xbf" + page.encode("utf-8"), http_charset="iso-8859-1")
    assert got.title == "Ångström"
    assert "Ångström 中文 —" in got.text


def test_http_charset_wins_over_meta():
    page = '<html><head><meta charset="utf-8"></head><body><p>na\u00efve caf\u00e9 text here</p></body></html>'
    text, enc = decode_html(page.encode("cp1252"), http_charset="windows-1252")
    assert "naïve café" in text and enc == "cp1252"


def test_undeclared_utf8_and_undeclared_cp1252():
    assert decode_html("caf\u00e9".encode("utf-8"))[0] == "café"
    text, _ = decode_html(("<p>" + "Das Stra\u00dfencaf\u00e9 \u00f6ffnet fr\u00fch. " * 20 + "</p>").encode("cp1252"))
    assert "Straßencafé" in text


def test_xml_declaration_and_empty_inputs():
    page = '<?xml version="1.0" encoding="utf-8"?><html><body><p>Plain xhtml paragraph.</p></body></html>'
    assert extract_html(page).text == "Plain xhtml paragraph."
    assert extract_html(b"") == Extracted("", "", "utf-8")
    assert extract_html("   ").text == ""


def test_stray_binary_bytes_do_not_cost_the_article():
    # NUL, a control byte and invalid UTF-8 before, inside and after a page: its main text is still the
    # article's sentences and none of its boilerplate, and no NUL reaches the text
    junk = b"\x00\x01binary\xff\xfe"
    page = ARTICLE.encode()
    for data in (junk + page, page.replace(b"<h2>", junk + b"<h2>"), page + junk):
        got = extract_html(data)
        assert_article_text(got.text)
        assert "\x00" not in got.text
    assert "\x00" not in extract_html(junk).text


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_never_raises_on_arbitrary_input(data):
    got = extract_html(data)
    assert isinstance(got.text, str) and isinstance(got.title, str)


def test_documentation_page_keeps_lists_and_code_indentation():
    page = """<html><head><title>Installing lighthouse-tools</title></head><body>
    <div class="sidebar"><ul><li><a href="/a">Intro</a></li><li><a href="/b">API</a></li></ul></div>
    <div class="content"><h1>Installing lighthouse-tools</h1>
    <p>Install the package with pip, then check that the command line tool runs, as shown below.</p>
    <ul><li>Python 3.11 or newer</li><li>A C compiler for the optional extensions</li></ul>
    <pre><code>def main():
    if ready():
        print("lit")
</code></pre>
    <h2>Configuration</h2>
    <p>Settings live in a TOML file in your home folder, and every key has a documented default.</p>
    </div></body></html>"""
    got = extract_html(page)
    assert got.text.splitlines() == [
        "Install the package with pip, then check that the command line tool runs, as shown below.",
        "Python 3.11 or newer",
        "A C compiler for the optional extensions",
        "def main():",
        "    if ready():",
        '        print("lit")',
        "Configuration",
        "Settings live in a TOML file in your home folder, and every key has a documented default.",
    ]


def test_hidden_and_dialog_boilerplate_is_dropped():
    body = " ".join(["The council approved the harbour budget after a long debate, with two abstentions."] * 3)
    page = f"""<html><body>
    <div role="dialog"><p>Subscribe to our newsletter for weekly updates and special offers today!</p></div>
    <div class="gdpr-notice"><p>This site uses cookies and similar technologies, as our policy explains.</p></div>
    <div style="display: none"><p>Hidden text that should never be part of the extracted article.</p></div>
    <main><p>{body}</p><p hidden>Also hidden, a paragraph that is long enough to be scored.</p></main>
    </body></html>"""
    assert extract_html(page).text == body


# Pages where the main block alone loses the text (cllm/scraper/extract.py's fallbacks). Each is built
# here after a kind of page the public benchmarks hold (bench/extraction.py), not copied from them.
SENTENCES = [
    "The ferry timetable changes in October, when the winter service starts and the late boats stop.",
    "Most regular passengers buy a season ticket, which pays for itself after about twelve crossings.",
    "The harbour office answers questions by phone on weekdays, and its staff also speak German.",
    "Bicycles travel free outside the summer months, but they must be booked with the ticket itself.",
    "When storms are forecast, the first morning crossing is often the only one that sails at all.",
    "A new terminal building with a waiting room and a small café is planned for the coming spring.",
]


def test_forum_thread_whose_posts_sit_in_widget_containers():
    posts = "".join(
        f'<div class="post-widget"><div class="user-info"><a href="/u/{i}">user{i}</a> Posts: {40 + i}</div>'
        f'<div class="post-widget-text"><p>{SENTENCES[i]} {SENTENCES[(i + 1) % 6]}</p></div></div>'
        for i in range(4))
    page = f"""<html><head><title>Ferry questions - Harbour forum</title></head><body>
    <div class="menu"><a href="/">Forum</a> <a href="/new">New posts</a> <a href="/faq">FAQ</a></div>
    <div class="thread-widget"><h1>Ferry questions</h1>{posts}</div>
    <div class="links"><a href="/a">Rules</a> <a href="/b">Contact</a> <a href="/c">Imprint</a></div>
    </body></html>"""
    text = extract_html(page).text
    for i in range(4):
        assert SENTENCES[i] in text
    assert "Rules" not in text and "New posts" not in text


def test_recipe_in_a_container_whose_class_says_label_hidden():
    # Drupal marks a field "field--label-hidden" when its label is hidden, not its content: the class-name
    # cleaning drops the whole recipe, the lighter cleaning of the fallbacks keeps it
    ingredients = "".join(f"<li>{item}</li>" for item in ("200 g flour", "100 g sugar", "2 eggs", "1 lemon"))
    page = f"""<html><head><title>Lemon cake</title></head><body>
    <nav><a href="/">Recipes</a> <a href="/cakes">Cakes</a></nav>
    <article class="node node--type-recipe">
      <h1>Lemon cake</h1>
      <div class="field field--name-ingredients field--label-hidden"><ul>{ingredients}</ul>
      <p>{SENTENCES[0]}</p></div>
      <div class="field field--name-steps field--label-hidden"><p>{SENTENCES[1]}</p><p>{SENTENCES[2]}</p></div>
      <div class="field field--name-tips field--label-hidden"><p>{SENTENCES[3]}</p><p>{SENTENCES[4]}</p></div>
    </article>
    <footer>Copyright Recipe Site</footer></body></html>"""
    text = extract_html(page).text
    assert all(s in text for s in SENTENCES[:5]) and "200 g flour" in text
    assert "Copyright" not in text and "Cakes" not in text


def test_product_page_whose_description_sits_in_ads_sections():
    page = f"""<html><head><title>Ferry season ticket</title></head><body>
    <div class="shop-menu"><a href="/">Shop</a> <a href="/cart">Cart</a></div>
    <article class="product">
      <h1>Season ticket</h1>
      <section class="product__section product__section--ads"><h2>Description</h2>
        <p>{SENTENCES[1]}</p><p>{SENTENCES[3]}</p></section>
      <section class="product__section product__section--ads"><h2>Details</h2>
        <p>{SENTENCES[2]}</p><p>{SENTENCES[5]}</p></section>
      <section class="product__section product__section--ads"><h2>Delivery</h2>
        <p>{SENTENCES[0]}</p><p>{SENTENCES[4]}</p></section>
    </article></body></html>"""
    text = extract_html(page).text
    assert all(s in text for s in SENTENCES) and "Details" in text
    assert "Cart" not in text


def test_a_tiny_best_block_gives_way_to_the_page_text():
    # the chapter is many paragraphs without commas; beside it an author's note with commas scores best
    # by readability's count, but holds a small share of the page
    no_commas = [s.replace(",", "") for s in SENTENCES]
    chapter = "".join(f"<p>{s} {t}</p>" for s, t in zip(no_commas * 2, no_commas[3:] * 2))
    note = ("Thanks for reading, everyone, and for all the comments, corrections and kind words, which "
            "keep me writing, week after week, even when the chapters run late.")
    page = f"""<html><head><title>Chapter 12</title></head><body>
    <div class="portlet author-note"><div class="portlet-body">{note}</div></div>
    <div class="chapter-inner">{chapter}</div></body></html>"""
    text = extract_html(page).text
    assert all(s in text for s in no_commas)


def test_visible_text_never_yields_nothing():
    # the whole text inside an unclosed <nav> (the parser closes it at </body>), only in <noscript>
    # (a page rendered by scripts), or only in a <footer>: never an empty result
    unclosed_nav = (f"<html><body><nav><a href='/'>Home</a><div><p>{SENTENCES[0]}</p><p>{SENTENCES[1]}</p></div>"
                    "</body></html>")
    noscript = ("<html><body><div id='app'></div><noscript>" + "".join(f"<p>{s}</p>" for s in SENTENCES)
                + "</noscript></body></html>")
    footer_only = "<html><body><footer>Harbour office, Quay Street 4, open weekdays</footer></body></html>"
    assert SENTENCES[0] in extract_html(unclosed_nav).text
    assert all(s in extract_html(noscript).text for s in SENTENCES)
    assert extract_html(footer_only).text == "Harbour office, Quay Street 4, open weekdays"


MENU = "".join(f'<li><a href="/section/{i}">Section number {i} of the site</a></li>' for i in range(30))


def _after_class_cleaning(page: str) -> str:
    """The page's text after the class-name cleaning (the fallbacks of cllm/scraper/extract.py can hide
    what it drops on a small page, as they cannot on many real ones)."""
    doc, _ = parse_html(page)
    strip_junk(doc, set())
    return " ".join(doc.text_content().split())


def test_article_fields_named_label_hidden_are_not_dropped_as_hidden():
    # "field--label-hidden" names a field whose label is hidden: with a long menu on the page no field holds
    # half of its text, and each one was dropped as hidden
    fields = "".join(f'<div class="clearfix field field--name-field-text field--label-hidden"><p>{SENTENCES[i]} '
                     f'{SENTENCES[i + 1]}</p></div>' for i in range(4))
    page = f"""<html><head><title>Ferries</title></head><body><ul class="main-nav">{MENU}</ul>
    <article class="node node--type-article"><h1>Ferries</h1><p>A short lead.</p>{fields}</article>
    </body></html>"""
    assert all(s in _after_class_cleaning(page) for s in SENTENCES[:5])
    text = extract_html(page).text
    assert all(s in text for s in SENTENCES[:5]), text
    assert "Section number" not in text
    # a hidden element stays dropped
    assert SENTENCES[0] not in _after_class_cleaning(page.replace("field--label-hidden", "hidden"))


def test_article_in_a_container_named_for_a_one_sidebar_layout():
    # "one-sidebar" names the layout of the container of the article and its sidebar, not a sidebar
    paragraphs = "".join(f"<p>{SENTENCES[i]} {SENTENCES[(i + 2) % 6]}</p>" for i in range(5))
    page = f"""<html><head><title>Ferries</title></head><body><div class="site-menu"><ul>{MENU * 3}</ul></div>
    <div class="panel-display layout-one-sidebar clearfix"><div class="pane">{paragraphs}</div></div>
    </body></html>"""
    assert all(s in _after_class_cleaning(page) for s in SENTENCES[:5])
    text = extract_html(page).text
    assert all(s in text for s in SENTENCES[:5]), text
    assert "Section number" not in text
    assert SENTENCES[0] not in _after_class_cleaning(page.replace("layout-one-sidebar", "left-sidebar"))


def _forum(post_class: str, wrapper: str, lead: str = "") -> str:
    posts = "".join(f'<div class="{post_class}"><p>{SENTENCES[i]} {SENTENCES[(i + 3) % 6]}</p></div>'
                    for i in range(6))
    return f"""<html><head><title>Ferry questions</title></head><body><ul class="main-nav">{MENU}</ul>
    <div class="{wrapper}"><h1>Ferry questions</h1>{lead}{posts}</div></body></html>"""


def test_forum_posts_named_comments_are_the_thread():
    # a thread's posts side by side, each named as a comment, with no other prose on the page: they are its text
    text = extract_html(_forum("PostCommentText", "thread")).text
    assert all(s in text for s in SENTENCES), text
    assert "Section number" not in text


def test_comment_section_of_an_article_is_still_dropped():
    # the same posts in one comment-named container after an article are its comment section
    article = "".join(f"<p>{s} {s}</p>" for s in SENTENCES[:3])
    page = _forum("PostCommentText", "comments-area")
    page = page.replace("<h1>Ferry questions</h1>", "").replace(
        '<div class="comments-area">', f'<article class="post">{article}</article><div class="comments-area">')
    text = extract_html(page).text
    assert SENTENCES[0] in text and SENTENCES[3] + " " + SENTENCES[0] not in text, text


def test_trailing_heading_of_a_dropped_link_list_is_dropped():
    # the cleaning drops the related-links list; the heading that introduced it must not end the text
    # (a box of links long enough that the cleaning keeps it, and drops its list)
    related = "".join(f'<li><a href="/r/{i}">Another story about harbours number {i}</a></li>' for i in range(30))
    paragraphs = "".join(f"<p>{SENTENCES[i]} {SENTENCES[(i + 1) % 6]}</p>" for i in range(4))
    page = f"""<html><head><title>Ferries</title></head><body><article><h1>Ferries</h1>{paragraphs}
    <h2>The timetable</h2><p>{SENTENCES[5]}</p>
    <div class="more"><h3>Read these next</h3><ul>{related}</ul></div></article></body></html>"""
    lines = extract_html(page).text.splitlines()
    assert lines[-1] == SENTENCES[5] and "The timetable" in lines, lines
    # a heading that ends the article without a link list is the article's, and stays
    assert extract_html(page.replace(f"<ul>{related}</ul>", "")).text.splitlines()[-1] == "Read these next"
    # the heading and a short list straight in the article (its box is the article, mostly prose): the text
    # that follows the heading is links
    short = "".join(f'<li><a href="/r/{i}">Another story about harbours number {i}</a></li>' for i in range(4))
    page = page.replace(f'<div class="more"><h3>Read these next</h3><ul>{related}</ul></div>',
                        f"<h3>Read these next</h3><ul>{short}</ul>")
    lines = extract_html(page).text.splitlines()
    assert lines[-1] == SENTENCES[5], lines


def test_article_sections_in_wrappers_of_their_own_join_up():
    # a page builder puts each section of the article in wrappers of its own (5 levels deep), between image
    # blocks: the best-scoring section is not the whole article, its cousins of the same class are the rest of it
    def section(i: int, sentences: list) -> str:
        paras = "".join(f"<p>{s} {s.lower()}</p>" for s in sentences)
        return (f'<div class="outer"><section><div class="builder-row" id="row-{i}"><div class="builder-col">'
                f'<div class="text-element">{paras}</div></div></div></section></div>'
                '<div class="image-element"><p>Photo: harbour archive</p></div>')
    page = f"""<html><head><title>Ferries</title></head><body><ul class="main-nav">{MENU}</ul>
    <div class="content">{section(0, SENTENCES[:4])}{section(1, SENTENCES[4:5])}{section(2, SENTENCES[5:])}</div>
    <div class="teasers"><div class="text-element"><a href="/x">Another story</a></div></div></body></html>"""
    text = extract_html(page).text
    assert all(s in text for s in SENTENCES), text
    assert text.index(SENTENCES[3]) < text.index(SENTENCES[4]) < text.index(SENTENCES[5])
    assert "Section number" not in text and "Another story" not in text


def test_articles_named_as_comments_or_teasers_are_not_the_article_body():
    # the post is in plain <div>s; <article> marks each comment and each teaser card
    post = "".join(f"<p>{s}</p>" for s in SENTENCES[:3])
    comments = "".join(f'<article class="comment-body"><p>COMMENT {i}: {SENTENCES[3 + i % 3]} {SENTENCES[i % 3]}</p>'
                       "</article>" for i in range(8))
    teasers = "".join(f'<article class="post-teaser"><p>TEASER {i}: {SENTENCES[5]}</p></article>' for i in range(3))
    page = f"""<html><head><title>Ferries</title></head><body><div class="main"><h1>Ferries</h1>
    <div class="post">{post}</div><div class="comments-area">{comments}</div></div>{teasers}</body></html>"""
    text = extract_html(page).text
    assert all(s in text for s in SENTENCES[:3]), text
    assert "COMMENT" not in text and "TEASER" not in text


def test_date_and_byline_lines_at_the_edges_are_dropped():
    paragraphs = "".join(f"<p>{s} {s.lower()}</p>" for s in SENTENCES[:4])
    page = f"""<html><head><title>Ferries</title></head><body><article><h1>Ferries</h1>
    <p>By Jane Doe</p><p>7 October 2020</p><p>4 min read</p>{paragraphs}<p>March 3, 2021</p>
    <p>{SENTENCES[4]}</p><p>Aktualisiert: 03.04.2021, 10:30 Uhr</p></article></body></html>"""
    lines = extract_html(page).text.splitlines()
    assert lines[0].startswith(SENTENCES[0]) and lines[-1] == SENTENCES[4], lines
    assert "March 3, 2021" in lines  # a date inside the text is the text's


def test_large_community_section_beside_the_marked_up_article_is_dropped():
    # the readers' posts hold most of the page's text, in a block named like boilerplate ("community") that
    # is kept when it wraps the page; beside an <article> with prose it is the comment section
    article = "".join(f"<p>{s}</p>" for s in SENTENCES[:6])
    posts = "".join(f'<li class="member"><p>READER {i}: {SENTENCES[i % 6]} {SENTENCES[(i + 1) % 6]} '
                    f'{SENTENCES[(i + 2) % 6]}</p></li>' for i in range(10))
    page = f"""<html><head><title>Ferries</title></head><body><div class="news"><article>{article}</article></div>
    <div class="full community page"><ul class="directory">{posts}</ul></div></body></html>"""
    text = extract_html(page).text
    assert all(s in text for s in SENTENCES), text
    assert "READER" not in text


def test_image_legend_inside_the_article_is_dropped():
    # the legend of an image box is its caption, which the text leaves out as it leaves <figcaption> out
    paragraphs = "".join(f"<p>{s} {s.lower()}</p>" for s in SENTENCES[:4])
    legend = ('<div class="image-box"><div class="legend"><div class="content">LEGEND: the harbour in winter, '
              "with the old ferry at the pier and the lighthouse behind it, seen from the hill.</div></div></div>")
    page = f"""<html><head><title>Ferries</title></head><body><article><h1>Ferries</h1>{legend}{paragraphs}
    </article></body></html>"""
    text = extract_html(page).text
    assert all(s in text for s in SENTENCES[:4]) and "LEGEND" not in text, text


def test_rest_of_the_article_behind_a_read_more_button_is_kept():
    # the story's second half sits in a block named "read-more" that a button unfolds; a "read more" teaser
    # link to another story stays out
    first = "".join(f"<p>{s}</p>" for s in SENTENCES[:2])
    rest = "".join(f"<p>{s}</p>" for s in SENTENCES[2:])
    teaser = ('<a class="read-more-big" href="/other"><span class="read-more-big__title">TEASER: another story '
              "about the harbour, the ferries and the people who work on the boats all year</span></a>")
    page = f"""<html><head><title>Ferries</title></head><body><ul class="main-nav">{MENU}</ul>
    <div class="story-body">{first}{teaser}<div class="read-more">{rest}</div></div></body></html>"""
    text = extract_html(page).text
    assert all(s in text for s in SENTENCES), text
    assert "TEASER" not in text


def test_author_box_after_the_article_is_dropped():
    paragraphs = "".join(f"<p>{s} {s.lower()}</p>" for s in SENTENCES[:4])
    author = ('<div class="post-author"><p>AUTHOR: Jane Doe writes about harbours, ferries and the people who '
              "keep them running, and has done so for twenty years.</p></div>")
    page = f"""<html><head><title>Ferries</title></head><body><article><h1>Ferries</h1>{paragraphs}{author}
    </article></body></html>"""
    text = extract_html(page).text
    assert all(s in text for s in SENTENCES[:4]) and "AUTHOR" not in text, text


def test_rating_prompt_after_the_article_is_dropped():
    paragraphs = "".join(f"<p>{s} {s.lower()}</p>" for s in SENTENCES[:4])
    rating = '<span class="post-ratings"><strong>RATING: Was this article useful?</strong> 4.2 of 5 (31 votes)</span>'
    page = f"""<html><head><title>Ferries</title></head><body><article><h1>Ferries</h1>{paragraphs}
    <p>{SENTENCES[4]}</p>{rating}</article></body></html>"""
    text = extract_html(page).text
    assert all(s in text for s in SENTENCES[:5]) and "RATING" not in text, text


def test_declared_utf8_with_one_cut_character_stays_utf8():
    # a teaser cut in the middle of a two-byte character: the page is still the UTF-8 it declares, not a
    # legacy charset guessed from the bytes (which garbles every accented letter of the article)
    page = ('<html><head><meta charset="utf-8"></head><body><p>' + "Zażółć gęślą jaźń, powiedział. " * 40
            + "</p><p>Teaser: ").encode("utf-8") + "ó".encode("utf-8")[:1] + b"...</p></body></html>"
    text, enc = decode_html(page)
    assert enc == "utf-8" and "Zażółć gęślą jaźń" in text


def test_ruby_readings_are_dropped():
    sentence = ("<ruby>法律<rt>ほうりつ</rt></ruby>では"
                "<ruby>虐待<rp>(</rp><rt>ぎゃくたい</rt><rp>)</rp></ruby>をした親に。")
    got = extract_html(f"<html><body><article><p>{sentence * 30}</p></article></body></html>")
    assert got.text.startswith("法律では虐待をした親に。") and "ほうりつ" not in got.text


def test_text_is_in_unicode_composed_form():
    # Bengali's letter U+09DF is canonically the pair U+09AF U+09BC; a page may spell it either way
    word = "\u0995\u09c1\u09b7\u09cd\u099f\u09bf\u09df\u09be"
    got = extract_html(f"<html><body><article><p>{(word + ' ') * 60}</p></article></body></html>")
    assert "\u09df" not in got.text and "\u09af\u09bc" in got.text


def test_lead_paragraph_above_the_body_is_kept_and_a_one_line_dek_is_not():
    lead = ("The harbour commission voted on Tuesday to restore the old lighthouse, after a decade in which the "
            "tower stood dark and the keepers' cottage was let to summer visitors.")
    page = f"""<html><head><title>Lighthouse to shine again</title></head><body>
    <article class="story"><header><h1>Lighthouse to shine again</h1>
      <h2 class="story-dek">A decade of darkness ends</h2>
      <p class="story-lead">{lead}</p></header>
      <div class="story-body">{f"<p>{P1}</p><p>{P2}</p><p>{P3}</p>" * 2}</div>
    </article>
    <div class="teaser"><p>Another story entirely, teased here with a sentence that runs on long enough to look
    like prose to anyone who measures only its length, which is the point.</p></div></body></html>"""
    text = extract_html(page).text
    assert text.startswith(lead) and text.endswith(P3)
    assert "A decade of darkness" not in text and "Another story" not in text


def test_article_running_on_outside_its_marked_up_body_is_kept_whole():
    # the marked-up body holds the first four paragraphs, the other six follow in a wrapper of their own
    paras = [f"Section {i} of the report on the harbour describes the works of that year, the ships that came "
             f"in and the weather that kept them, in some detail." for i in range(10)]
    page = ("<html><body><div class='page'><div itemprop='articleBody'>"
            + "".join(f"<p>{p}</p>" for p in paras[:4]) + "</div><div class='more'>"
            + "".join(f"<p>{p}</p>" for p in paras[4:]) + "</div></div></body></html>")
    text = extract_html(page).text
    assert text == "\n".join(paras)


def test_short_heading_left_at_the_end_is_dropped():
    # the heading introduced a newsletter box, dropped by its class name; nothing follows it in the text
    page = f"""<html><body><article>{f"<p>{P1}</p><p>{P2}</p><p>{P3}</p>" * 2}
      <h3>Stay in touch</h3><div class="newsletter-box"><p>Every Friday we send our readers a letter about
      the coast, its lights and its people; it is free and you may leave it whenever you like.</p></div>
    </article></body></html>"""
    text = extract_html(page).text
    assert text.endswith(P3) and "Stay in touch" not in text


def test_author_newsletter_and_share_boxes_named_in_other_forms_are_dropped():
    paragraphs = "".join(f"<p>{s} {s.lower()}</p>" for s in SENTENCES[:4])
    boxes = ('<div class="artDetailAutor"><p>AUTOR: Jana Muster schreibt seit zwanzig Jahren über Häfen, Fähren '
             "und die Menschen, die sie am Laufen halten.</p></div>"
             '<section class="news-letter-section"><p>NEWSLETTER: every Friday a letter about the coast, its '
             "lights and its people, free of charge and easy to leave again.</p></section>"
             '<div class="artikel-teilen"><p>TEILEN: Möchten Sie den Artikel mit Ihren Freunden und Bekannten '
             "teilen? Dann nutzen Sie einfach die Knöpfe hier unten.</p></div>")
    page = f"<html><body><article>{paragraphs}{boxes}</article></body></html>"
    text = extract_html(page).text
    assert all(s in text for s in SENTENCES[:4]), text
    assert "AUTOR" not in text and "NEWSLETTER" not in text and "TEILEN" not in text, text


def test_post_metadata_and_german_caption_boxes_are_dropped():
    paragraphs = [f"<p>{s} {s.lower()}</p>" for s in SENTENCES[:4]]
    page = ("<html><body><article>" + "".join(paragraphs[:2])
            + '<div class="bildunterschrift">BILD: Die Fähre am Anleger im Morgenlicht, fotografiert vom Deich aus, '
            "im Hintergrund der alte Leuchtturm.</div>" + "".join(paragraphs[2:])
            + '<p class="postmetadata">META: This entry was posted on Wednesday, 8 January 2020 at 10:15 and is '
            "filed under Ferries. You can follow any responses to this entry.</p></article></body></html>")
    text = extract_html(page).text
    assert all(s in text for s in SENTENCES[:4]), text
    assert "BILD" not in text and "META" not in text, text


def test_back_link_at_the_end_is_dropped():
    paragraphs = "".join(f"<p>{s} {s.lower()}</p>" for s in SENTENCES[:4])
    page = f'<html><body><article>{paragraphs}<a href="/news">Back to the news overview</a></article></body></html>'
    text = extract_html(page).text
    assert text.endswith(SENTENCES[3].lower()) and "Back to" not in text, text


def test_heading_of_a_dropped_link_list_inside_the_text_is_dropped():
    # the box of links is long enough that the cleaning keeps it and drops its list; a short line (a
    # teaser's title) and more text follow the heading it leaves behind
    related = "".join(f'<li><a href="/r/{i}">Another story about harbours number {i}</a></li>' for i in range(30))
    paragraphs = "".join(f"<p>{s} {s.lower()}</p>" for s in SENTENCES[:4])
    page = f"""<html><body><article>{paragraphs}<div class="box"><h3>More on this</h3><ul>{related}</ul></div>
    <p>Winter timetable</p><p>{SENTENCES[5]}</p></article></body></html>"""
    lines = extract_html(page).text.splitlines()
    assert "More on this" not in lines and lines[-2:] == ["Winter timetable", SENTENCES[5]], lines


def test_short_heading_followed_by_a_dropped_link_list_inside_the_text_is_dropped():
    # a short list of links straight in the article (its box, the article, is mostly prose): the cleaning
    # drops the list and leaves its heading before a teaser's title; a long heading is the article's
    short = "".join(f'<li><a href="/r/{i}">Another story about harbours number {i}</a></li>' for i in range(4))
    paragraphs = "".join(f"<p>{s} {s.lower()}</p>" for s in SENTENCES[:4])
    page = f"""<html><body><article>{paragraphs}<h3>More on this</h3><ul>{short}</ul>
    <p>Winter timetable</p><p>{SENTENCES[5]}</p></article></body></html>"""
    lines = extract_html(page).text.splitlines()
    assert "More on this" not in lines and lines[-2:] == ["Winter timetable", SENTENCES[5]], lines
    long_heading = "What the harbour master told us about the ferries that did not sail this winter"
    lines = extract_html(page.replace("More on this", long_heading)).text.splitlines()
    assert long_heading in lines, lines


def test_short_edge_lines_that_readability_leaves_out_are_dropped():
    # the marked-up body (the main block) holds a label above the story and a line of furniture under it;
    # readability's choice on the page (the story's own block) holds neither, and it does hold the short
    # last paragraph, which stays
    paragraphs = "".join(f"<p>{s} {s.lower()}</p>" for s in SENTENCES[:4])
    page = f"""<html><body><article><div class="kicker">Harbour Notes</div>
    <div class="story">{paragraphs}<p>That was all.</p></div>
    <div class="info">Published in Harbour Notes and Ferries</div></article></body></html>"""
    lines = extract_html(page).text.splitlines()
    assert lines[0] == f"{SENTENCES[0]} {SENTENCES[0].lower()}" and lines[-1] == "That was all.", lines
