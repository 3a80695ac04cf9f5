"""Crawler building blocks without a network: URL canonical form, links, scope, output names,
robots.txt status rules, Retry-After, the capped decoder."""
import gzip
import re
import time
import zlib
from email.utils import formatdate

import lxml.html
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cllm.errors import CrawlError
from cllm.scraper.fetch import FetchError, _Decoder, parse_retry_after
from cllm.scraper.frontier import _extension
from cllm.scraper.robots import Robots
from cllm.scraper.settings import DEFAULT_USER_AGENT, CrawlSettings
from cllm.scraper.urls import canonicalize, extract_links, in_scope, url_hash

BASE = "http://example.com/dir/page.html"


@pytest.mark.parametrize("a, b", [
    ("HTTP://EXAMPLE.com/a", "http://example.com/a"),
    ("http://example.com:80/a", "http://example.com/a"),
    ("https://example.com:443/", "https://example.com"),
    ("http://example.com/a#section", "http://example.com/a"),
    ("http://example.com/x/../a", "http://example.com/./a"),
    ("http://example.com/a?b=2&a=1", "http://example.com/a?a=1&b=2"),
    ("http://example.com/%7Euser", "http://example.com/~user"),
    ("http://example.com/a b", "http://example.com/a%20b"),
    ("http://user:pw@example.com/a", "http://example.com/a"),
    ("/a", "a"),  # root-relative and relative, from /dir/page.html
])
def test_equivalent_urls_share_one_canonical_form(a, b):
    base = "http://example.com/" if a == "/a" else BASE
    assert canonicalize(a, base) == canonicalize(b, base)


@pytest.mark.parametrize("a, b", [
    ("http://example.com/a", "https://example.com/a"),
    ("http://example.com/a", "http://example.com:8080/a"),
    ("http://example.com/a?x=%2B", "http://example.com/a?x=+"),  # + is not %2B in a query
    ("http://example.com/a%2Fb", "http://example.com/a/b"),  # an escaped slash is not a slash
    ("http://example.com/A", "http://example.com/a"),  # paths are case-sensitive
])
def test_different_urls_stay_different(a, b):
    assert canonicalize(a) != canonicalize(b)


def test_canonical_form_details():
    assert canonicalize("HTTP://Example.COM:80/a/./b/../c?b=2&a=1#frag") == "http://example.com/a/c?a=1&b=2"
    assert canonicalize("../../../../etc/passwd", BASE) == "http://example.com/etc/passwd"
    assert canonicalize("http://bücher.de/straße") == "http://xn--bcher-kva.de/stra%C3%9Fe"
    assert canonicalize(" \n/x\t/y ", BASE) == "http://example.com/x/y"
    for bad in ("mailto:a@b.c", "javascript:void(0)", "ftp://example.com/", "data:text/html,hi", "", "  ",
                "http://example.com:99999/", "#top"):
        assert canonicalize(bad) is None, bad
    assert canonicalize("#top", BASE) == "http://example.com/dir/page.html"


@given(st.text(max_size=60))
def test_canonicalize_is_idempotent_and_never_raises(s):
    c = canonicalize(s, BASE)
    if c is not None:
        assert canonicalize(c) == c
        assert c.startswith(("http://", "https://")) and "#" not in c


def test_links_base_href_nofollow_quoting():
    html = """<html><head><base href="/sub/"></head><body>
      <a href="x">relative to base</a> <a href='/root'>single</a> <a href=bare?b=1&amp;a=2>bare</a>
      <a href="http://other.org/p#f">abs</a> <a href="nf" rel="nofollow">nofollow</a>
      <a href="mailto:a@b.c">mail</a> <a href="javascript:go()">js</a> <a href="x">again</a>
      <a>no href</a> <map><area href="/area"></map></body></html>"""
    links, nofollow = extract_links(lxml.html.document_fromstring(html), "http://example.com/dir/page")
    assert links == ["http://example.com/sub/x", "http://example.com/root", "http://example.com/sub/bare?a=2&b=1",
                     "http://other.org/p", "http://example.com/area"]
    assert not nofollow
    doc = lxml.html.document_fromstring('<meta name="robots" content="noindex, nofollow"><a href="/a">a</a>')
    assert extract_links(doc, BASE)[1] is True


def test_scope():
    assert in_scope("http://example.com/a", "example.com")
    assert in_scope("https://www.example.com/a", "example.com")
    assert not in_scope("http://evil-example.com/a", "example.com")
    assert not in_scope("http://sub.example.com/a", "example.com")
    assert in_scope("http://sub.example.com/a", "example.com", allow_domains=("example.com",))
    assert not in_scope("http://other.org/", "example.com", allow_domains=("example.com",))
    assert in_scope("http://other.org/", "example.com", follow_external=True)


@given(st.text(max_size=200))
def test_output_names_are_hex_whatever_the_url(s):
    assert re.fullmatch(r"[0-9a-f]{32}", url_hash(s))


def test_robots_status_rules_rfc9309():
    ua = DEFAULT_USER_AGENT
    assert Robots.from_status(404, b"").can_fetch("http://x/a", ua)
    assert Robots.from_status(403, b"").can_fetch("http://x/a", ua)
    assert not Robots.from_status(500, b"").can_fetch("http://x/a", ua)
    assert not Robots.from_status(503, b"").can_fetch("http://x/a", ua)
    assert not Robots.from_status(None, None, "connection refused").can_fetch("http://x/a", ua)
    rules = Robots.from_status(200, b"User-agent: *\nDisallow: /\n\nUser-agent: CLLM-crawler\n"
                                    b"Disallow: /private\nAllow: /private/ok\nDisallow: /*?sort=\nCrawl-delay: 1.5\n")
    assert rules.can_fetch("http://x/public", ua)
    assert not rules.can_fetch("http://x/private/secret", ua)
    assert rules.can_fetch("http://x/private/ok", ua)
    assert not rules.can_fetch("http://x/list?sort=asc", ua)
    assert not rules.can_fetch("http://x/public", "SomeOtherBot/1.0")
    assert rules.crawl_delay(ua) == 1.5


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    later = formatdate(time.time() + 30, usegmt=True)
    assert 28 <= parse_retry_after(later) <= 31
    assert parse_retry_after(formatdate(time.time() - 30, usegmt=True)) == 0.0


def test_decoder_caps_a_gzip_bomb_chunk_by_chunk():
    bomb = gzip.compress(b"\0" * 50_000_000, 9)  # 50 MB of zeros in about 50 KB
    assert len(bomb) < 100_000
    dec = _Decoder("gzip")
    out = dec.feed(bomb[:65536], 1_000_000)
    assert len(out) == 1_000_001  # stopped one byte past the cap, not at 50 MB
    raw = zlib.compress(b"hello" * 10)
    assert _Decoder("deflate").feed(raw, 1000) == b"hello" * 10
    rawdeflate = zlib.compressobj(wbits=-15)
    data = rawdeflate.compress(b"raw deflate") + rawdeflate.flush()
    assert _Decoder("deflate").feed(data, 1000) == b"raw deflate"
    with pytest.raises(FetchError):
        _Decoder("br")


def test_settings_are_validated():
    with pytest.raises(CrawlError):
        CrawlSettings(max_pages=0)
    with pytest.raises(CrawlError):
        CrawlSettings(per_host=0)
    assert CrawlSettings(allow_domains="a.org, .b.org").domains == ("a.org", "b.org")
    assert CrawlSettings().user_agent.startswith("CLLM-crawler/")


def test_extension_of_a_url():
    assert _extension("http://h/a/photo.JPG?x=1") == "jpg"
    assert _extension("http://h/a.b/page") == ""
    assert _extension("http://h/") == ""
    assert _extension("http://h/archive.tar.gz") == "gz"
