"""The crawler against local aiohttp servers (127.0.0.1, and 127.0.0.2 as a second host).

Politeness is checked from the server's side: its request log (time, path, User-Agent).
"""
import asyncio
import gzip
import os
import random
import re
import tracemalloc

import pytest
from aiohttp import web
from crawl_helpers import crawl, fast, manifest, page, page_texts, para, serve, wait_for

from cllm.errors import CrawlError
from cllm.scraper.crawler import Crawler


def tree_site(fanout=3, depth=3):
    """/ -> /d1/i -> /d2/i-j -> /d3/i-j-k ...: a site where every page's depth is in its path."""
    routes = {}

    def add(path, level, name):
        children = [] if level == depth else [f"/d{level + 1}/{name}{'-' if name else ''}{i}" for i in range(fanout)]
        routes[path] = page(f"Page {path}", children)
        for child, i in zip(children, range(fanout)):
            add(child, level + 1, f"{name}{'-' if name else ''}{i}")

    add("/", 0, "")
    return routes


def depth_of(path):
    m = re.match(r"/d(\d)/", path)
    return int(m.group(1)) if m else 0


# --- order, limits, dedup, scope -------------------------------------------------------------

async def test_bfs_order_depth_limit_and_honest_user_agent(tmp_path):
    async with serve(tree_site()) as site:
        summary = await crawl(site.url("/"), tmp_path, max_depth=2, concurrency=4)
    paths = [p for p in site.paths() if p != "/robots.txt"]
    assert site.paths()[0] == "/robots.txt"  # robots.txt before anything else
    assert len(paths) == 1 + 3 + 9 and not any(p.startswith("/d3/") for p in paths)
    depths = [depth_of(p) for p in paths]
    assert depths == sorted(depths), "all of depth d before any of depth d+1"
    assert summary.kept == 13 and summary.written == 13
    by_url = {r["url"]: r for r in manifest(tmp_path)}
    rec = by_url[site.url("/d2/1-2")]
    assert rec["depth"] == 2 and rec["parent"] == site.url("/d1/1")
    assert set(rec) >= {"url", "final_url", "status", "depth", "parent", "title", "fetched_at", "bytes",
                        "text_chars", "sha256", "file"}
    assert all(ua.startswith("CLLM-crawler/") and "+http" in ua for _, _, ua in site.log)


@pytest.mark.parametrize("seed", range(4))
async def test_bfs_on_random_link_graphs(tmp_path, seed):
    """Whatever the graph: each page fetched once, exactly the pages within max_depth clicks,
    in order of their shortest distance, with depth and parent recorded accordingly."""
    rng = random.Random(seed)
    n, max_depth = 40, 3
    edges = {i: rng.sample(range(n), rng.randint(0, 4)) for i in range(n)}
    forms = ["/n{}", "/n{}#x", "./n{}", "/y/../n{}"]  # equivalent spellings of one URL
    routes = {f"/n{i}": page(f"Node {i}", [rng.choice(forms).format(j) for j in edges[i]]) for i in range(n)}
    dist, frontier = {0: 0}, [0]
    while frontier:
        nxt = []
        for i in frontier:
            for j in edges[i]:
                if j not in dist:
                    dist[j] = dist[i] + 1
                    nxt.append(j)
        frontier = nxt
    async with serve(routes) as site:
        await crawl(site.url("/n0"), tmp_path, max_depth=max_depth, concurrency=3)
    fetched = [int(p[2:]) for p in site.paths() if p != "/robots.txt"]
    assert sorted(fetched) == sorted(i for i, d in dist.items() if d <= max_depth)
    assert [dist[i] for i in fetched] == sorted(dist[i] for i in fetched)
    for rec in manifest(tmp_path):
        i = int(rec["url"].rsplit("/n", 1)[1])
        assert rec["depth"] == dist[i]
        if i:
            parent = int(rec["parent"].rsplit("/n", 1)[1])
            assert dist[parent] == dist[i] - 1 and i in edges[parent]


async def test_page_limit_is_exact_and_no_page_is_fetched_beyond_it(tmp_path):
    async with serve(tree_site()) as site:
        summary = await crawl(site.url("/"), tmp_path, max_pages=5, concurrency=8, per_host=4)
    assert summary.kept == 5 and len(manifest(tmp_path)) == 5
    assert len(os.listdir(tmp_path / "pages")) == 5
    assert len([p for p in site.paths() if p != "/robots.txt"]) == 5


async def test_one_request_at_a_time_per_host(tmp_path):
    active, peak = 0, 0

    async def slow(request):
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        return web.Response(text=page(request.path, [f"/p{i}" for i in range(8)]), content_type="text/html")

    async with serve({"/": slow, **{f"/p{i}": slow for i in range(8)}}) as site:
        await crawl(site.url("/"), tmp_path, concurrency=8)
    assert peak == 1 and len(site.log) == 10


@pytest.mark.parametrize("concurrency, expected_peak", [(1, 1), (4, 2)])
async def test_hosts_are_crawled_concurrently_within_the_global_limit(tmp_path, concurrency, expected_peak):
    active, peak = 0, 0

    async def slow(request):
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        active -= 1
        return web.Response(text=page(request.host + request.path), content_type="text/html")

    async with serve({f"/b{i}": slow for i in range(3)}, host="127.0.0.2") as other:
        routes = {"/": page("Home", [f"/a{i}" for i in range(3)] + [other.url(f"/b{i}") for i in range(3)]),
                  **{f"/a{i}": slow for i in range(3)}}
        async with serve(routes) as site:
            await crawl(site.url("/"), tmp_path, concurrency=concurrency, allow_domains="127.0.0.2")
    assert peak == expected_peak  # one per host, two hosts at once unless concurrency is 1
    assert len(manifest(tmp_path)) == 7


async def test_equivalent_urls_are_fetched_once(tmp_path):
    links = ["/a", "/a#top", "./a", "/x/../a", "a?", "/q?b=2&a=1", "/q?a=1&b=2#f", "/%7Eme", "/~me"]
    home = page("Home", links).replace('<a href="/a">', "<a href=/a>").replace('<a href="./a">', "<a href='./a'>")
    routes = {"/": home, "/a": page("A", ["/", "/a"]), "/q": page("Q"), "/~me": page("Me")}
    async with serve(routes) as site:
        home = home.replace("HOST", site.url("/"))
        await crawl(site.url("/"), tmp_path)
    assert sorted(site.paths()) == sorted(["/robots.txt", "/", "/a", "/q?a=1&b=2", "/~me"])
    assert len(manifest(tmp_path)) == 4


async def test_links_base_href_and_nofollow(tmp_path):
    base_page = ('<html><head><base href="/docs/"><title>Docs</title></head><body>'
                 f'{para("Docs")}<a href="intro">intro</a> <a href="/top">top</a> '
                 '<a href="secret" rel="nofollow">secret</a> <a href="mailto:x@y.z">mail</a></body></html>')
    nofollow_page = ('<html><head><meta name="robots" content="nofollow"></head><body>'
                     f'{para("Top")}<a href="/hidden">hidden</a></body></html>')
    routes = {"/": base_page, "/docs/intro": page("Intro"), "/top": nofollow_page, "/hidden": page("H"),
              "/docs/secret": page("S")}
    async with serve(routes) as site:
        await crawl(site.url("/"), tmp_path)
    assert sorted(site.paths()) == ["/", "/docs/intro", "/robots.txt", "/top"]


async def test_scope_second_host(tmp_path):
    async with serve({"/": page("Other host")}, host="127.0.0.2") as other:
        routes = {"/": page("Home", ["/local", other.url("/")]), "/local": page("Local")}
        async with serve(routes) as site:
            await crawl(site.url("/"), tmp_path / "stay")
            assert other.log == []  # default: stay on the start host
            await crawl(site.url("/"), tmp_path / "allow", allow_domains="127.0.0.2")
            assert other.paths() == ["/robots.txt", "/"]
            await crawl(site.url("/"), tmp_path / "ext", follow_external=True)
            assert other.paths().count("/") == 2
    assert len(manifest(tmp_path / "ext")) == 3


async def test_exact_duplicate_texts_are_written_once(tmp_path):
    same = page("Same", body=para("Identical words"))
    routes = {"/": page("Home", ["/one", "/two"]), "/one": same, "/two": same}
    async with serve(routes) as site:
        summary = await crawl(site.url("/"), tmp_path)
    assert summary.written == 2 and summary.duplicates == 1
    recs = {r["url"].rsplit("/", 1)[1]: r for r in manifest(tmp_path)}
    assert recs["one"]["file"] and recs["two"]["file"] is None and recs["two"]["duplicate_of"] == recs["one"]["url"]
    assert len(os.listdir(tmp_path / "pages")) == 2


async def test_short_pages_are_not_written_but_their_links_are_followed(tmp_path):
    hub = '<html><body><a href="/article">Read</a></body></html>'
    async with serve({"/": hub, "/article": page("Article")}) as site:
        summary = await crawl(site.url("/"), tmp_path, min_chars=100)
    assert summary.short == 1 and [r["url"] for r in manifest(tmp_path)] == [site.url("/article")]


# --- robots.txt --------------------------------------------------------------------------------

ROBOTS = """User-agent: *
Disallow: /

User-agent: CLLM-crawler
Disallow: /private
Allow: /private/ok
Disallow: /*?sort=
"""


async def test_robots_rules_are_obeyed(tmp_path):
    links = ["/public", "/private/secret", "/private/ok", "/list?sort=asc", "/list"]
    routes = {"/robots.txt": ROBOTS, "/": page("Home", links), **{p.split("?")[0]: page(p) for p in links}}
    async with serve(routes) as site:
        summary = await crawl(site.url("/"), tmp_path)
    assert site.paths().count("/robots.txt") == 1 and site.paths()[0] == "/robots.txt"
    assert sorted(site.paths()[1:]) == ["/", "/list", "/private/ok", "/public"]
    assert summary.reasons["robots.txt"] == 2


async def test_robots_groups_match_a_custom_user_agent(tmp_path):
    robots = "User-agent: MyBot\nDisallow: /no-mybot\n\nUser-agent: *\nDisallow: /no-others\n"
    routes = {"/robots.txt": robots, "/": page("Home", ["/no-mybot", "/no-others"]),
              "/no-mybot": page("X"), "/no-others": page("Y")}
    async with serve(routes) as site:
        await crawl(site.url("/"), tmp_path, user_agent="MyBot/2.0 (+https://example.org/bot)")
    assert sorted(site.paths()) == ["/", "/no-others", "/robots.txt"]
    assert {ua for _, _, ua in site.log} == {"MyBot/2.0 (+https://example.org/bot)"}


async def test_robots_ignored_with_the_flag(tmp_path):
    routes = {"/robots.txt": "User-agent: *\nDisallow: /\n", "/": page("Home")}
    async with serve(routes) as site:
        await crawl(site.url("/"), tmp_path, ignore_robots=True)
    assert site.paths() == ["/"]


@pytest.mark.parametrize("status, allowed", [(404, True), (410, True), (500, False), (503, False)])
async def test_robots_status_codes_rfc9309(tmp_path, status, allowed):
    async def robots(request):
        return web.Response(status=status, text="error")

    async with serve({"/robots.txt": robots, "/": page("Home", ["/a"]), "/a": page("A")}) as site:
        if allowed:
            await crawl(site.url("/"), tmp_path, retries=1)
            assert site.paths() == ["/robots.txt", "/", "/a"]
        else:
            with pytest.raises(CrawlError, match="gave no page"):
                await crawl(site.url("/"), tmp_path, retries=1)
            assert set(site.paths()) == {"/robots.txt"}  # 1 + 1 retry, and nothing else


def intervals(times):
    return [b - a for a, b in zip(times, times[1:])]


async def test_crawl_delay_spaces_requests(tmp_path):
    routes = {"/robots.txt": "User-agent: *\nCrawl-delay: 0.25\n", "/": page("Home", ["/a", "/b", "/c"]),
              "/a": page("A"), "/b": page("B"), "/c": page("C")}
    async with serve(routes) as site:
        await crawl(site.url("/"), tmp_path, delay_ms=50)  # Crawl-delay is larger: it wins
    gaps = intervals(site.times())
    assert len(gaps) == 4 and min(gaps) >= 0.24, gaps


async def test_delay_and_jitter_when_larger_than_crawl_delay(tmp_path):
    routes = {"/robots.txt": "User-agent: *\nCrawl-delay: 0.01\n", "/": page("Home", ["/a", "/b"]),
              "/a": page("A"), "/b": page("B")}
    async with serve(routes) as site:
        await crawl(site.url("/"), tmp_path, delay_ms=150, jitter_ms=100)
    gaps = intervals(site.times())
    assert len(gaps) == 3 and all(0.145 <= g <= 0.6 for g in gaps), gaps  # 0.15 + [0, 0.1] + scheduling


# --- redirects ---------------------------------------------------------------------------------

def redirect(to, status=302):
    async def handler(request):
        return web.Response(status=status, headers={"Location": to})
    return handler


async def test_redirects_followed_and_rechecked(tmp_path):
    async with serve({"/": page("Elsewhere")}, host="127.0.0.2") as other:
        links = ["/old", "/loop1", "/self", "/chain/0", "/offsite", "/to-private", "/to-seen"]
        routes = {"/robots.txt": "User-agent: *\nDisallow: /private\n", "/": page("Home", links + ["/seen"]),
                  "/old": redirect("/new", 301), "/new": page("New"),
                  "/loop1": redirect("/loop2"), "/loop2": redirect("/loop1"), "/self": redirect("/self"),
                  "/offsite": redirect(other.url("/")), "/to-private": redirect("/private/x"),
                  "/private/x": page("P"), "/to-seen": redirect("/seen"), "/seen": page("Seen")}
        for i in range(10):
            routes[f"/chain/{i}"] = redirect(f"/chain/{i + 1}")
        async with serve(routes) as site:
            summary = await crawl(site.url("/"), tmp_path, max_redirects=3)
    paths = site.paths()
    recs = {r["url"]: r for r in manifest(tmp_path)}
    assert recs[site.url("/old")]["final_url"] == site.url("/new") and "/new" in paths
    assert paths.count("/loop1") == 1 and paths.count("/loop2") == 1 and paths.count("/self") == 1
    assert [p for p in paths if p.startswith("/chain/")] == ["/chain/0", "/chain/1", "/chain/2", "/chain/3"]
    assert other.log == [] and "/private/x" not in paths
    assert paths.count("/seen") == 1
    assert summary.reasons["too many redirects (> 3)"] == 1


# --- retries -----------------------------------------------------------------------------------

async def test_429_retry_after_holds_the_whole_host(tmp_path):
    hits = {"n": 0}

    async def limited(request):
        hits["n"] += 1
        if hits["n"] == 1:
            return web.Response(status=429, headers={"Retry-After": "1"})
        return web.Response(text=page("Limited"), content_type="text/html")

    async def busy(request):  # keeps the second worker busy while the 429 arrives
        await asyncio.sleep(0.2)
        return web.Response(text=page("Busy"), content_type="text/html")

    routes = {"/": page("Home", ["/limited", "/b", "/c", "/d"]), "/limited": limited,
              "/b": busy, "/c": page("C"), "/d": page("D")}
    async with serve(routes) as site:
        summary = await crawl(site.url("/"), tmp_path, per_host=2)
    t429 = next(t for t, p, _ in site.log if p == "/limited")
    later = [t - t429 for t, _, _ in site.log if t > t429 + 0.05]
    assert len(later) == 3 and min(later) >= 0.95, later  # nobody hit the host during the pause
    assert site.paths().count("/limited") == 2 and summary.retries == 1
    assert len(manifest(tmp_path)) == 5


async def test_retry_after_is_capped(tmp_path):
    hits = {"n": 0}

    async def limited(request):
        hits["n"] += 1
        if hits["n"] == 1:
            return web.Response(status=503, headers={"Retry-After": "3600"})
        return web.Response(text=page("Back"), content_type="text/html")

    async with serve({"/": limited}) as site:
        await crawl(site.url("/"), tmp_path, max_retry_after_s=0.2)
    times = [t for t, p, _ in site.log if p == "/"]
    assert len(times) == 2 and 0.19 <= times[1] - times[0] < 1.0


async def test_5xx_then_success_with_exponential_backoff(tmp_path):
    hits = {"n": 0}

    async def flaky(request):
        hits["n"] += 1
        if hits["n"] <= 2:
            return web.Response(status=502 + hits["n"], text="busy")
        return web.Response(text=page("Flaky"), content_type="text/html")

    async def down(request):
        return web.Response(status=500)

    async with serve({"/": page("Home", ["/flaky", "/down"]), "/flaky": flaky, "/down": down}) as site:
        summary = await crawl(site.url("/"), tmp_path, retries=2, retry_backoff_s=0.1)
    flaky_times = [t for t, p, _ in site.log if p == "/flaky"]
    assert len(flaky_times) == 3
    g1, g2 = intervals(flaky_times)
    assert 0.1 <= g1 < 0.5 and 0.2 <= g2 < 0.8  # 0.1 * (1..1.5), then 0.2 * (1..1.5), + scheduling
    assert site.paths().count("/down") == 3 and summary.errors == 1
    assert [r["url"] for r in manifest(tmp_path)] == [site.url("/"), site.url("/flaky")]


async def test_timeout_on_a_slow_page(tmp_path):
    async def slow(request):
        await asyncio.sleep(3)
        return web.Response(text=page("Slow"), content_type="text/html")

    async with serve({"/": page("Home", ["/slow", "/ok"]), "/slow": slow, "/ok": page("OK")}) as site:
        loop = asyncio.get_running_loop()
        start = loop.time()
        summary = await crawl(site.url("/"), tmp_path, timeout=0.2, retries=1)
        assert loop.time() - start < 2.0
    assert site.paths().count("/slow") == 2 and summary.reasons["timeout"] == 1
    assert {r["url"] for r in manifest(tmp_path)} == {site.url("/"), site.url("/ok")}


# --- size caps and content types ---------------------------------------------------------------

async def test_gzip_bomb_and_oversized_pages_are_refused(tmp_path):
    bomb = gzip.compress(b" " * 30_000_000, 9)  # 30 MB of spaces, about 30 KB on the wire

    async def gzip_bomb(request):
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "text/html"})

    async def big_declared(request):
        return web.Response(body=b"<p>" + b"x" * 2_000_000, content_type="text/html")  # has Content-Length

    async def big_streamed(request):  # no Content-Length: the cap is found while streaming
        resp = web.StreamResponse(headers={"Content-Type": "text/html"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        try:
            for _ in range(40):
                await resp.write(b"<p>" + b"y" * 65536)
        except (ConnectionResetError, RuntimeError):
            pass
        return resp

    gz_ok = gzip.compress(page("Gzipped fine").encode())

    async def gzip_ok(request):
        return web.Response(body=gz_ok, headers={"Content-Encoding": "gzip", "Content-Type": "text/html"})

    links = ["/bomb", "/big", "/stream", "/gz"]
    routes = {"/": page("Home", links), "/bomb": gzip_bomb, "/big": big_declared, "/stream": big_streamed,
              "/gz": gzip_ok}
    async with serve(routes) as site:
        tracemalloc.start()
        try:
            summary = await crawl(site.url("/"), tmp_path, max_bytes=1_000_000)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 15_000_000, peak  # the 30 MB bomb was never inflated
    assert summary.reasons["too_large"] == 3
    assert {r["url"] for r in manifest(tmp_path)} == {site.url("/"), site.url("/gz")}
    assert "Gzipped fine" in page_texts(tmp_path)[site.url("/gz")]


def mini_pdf(text: str) -> bytes:
    """A one-page PDF showing `text`, with a correct xref table (pypdf insists on one)."""
    stream = f"BT /F1 24 Tf 72 700 Td ({text}) Tj ET".encode()
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (i, obj)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


MINI_PDF = mini_pdf("Portable documents hold prose too.")


async def test_only_html_is_kept_and_pdf_on_request(tmp_path):
    def typed(body, ctype):
        async def handler(request):
            return web.Response(body=body, headers={"Content-Type": ctype})
        return handler

    # extension-less URLs: only the Content-Type tells what they are
    links = ["/data", "/img", "/doc", "/plain.txt", "/x.xhtml", "/photo.JPG", "/style.css?v=2", "/paper.pdf"]
    routes = {"/": page("Home", links), "/data": typed(b'{"a": 1}', "application/json"),
              "/img": typed(b"\x89PNG....", "image/png"), "/doc": typed(MINI_PDF, "application/pdf"),
              "/plain.txt": typed(b"just text " * 50, "text/plain"),
              "/x.xhtml": typed(page("Xhtml page").encode(), "application/xhtml+xml; charset=utf-8"),
              "/paper.pdf": typed(MINI_PDF, "application/pdf")}
    async with serve(routes) as site:
        summary = await crawl(site.url("/"), tmp_path / "html")
        assert {r["url"] for r in manifest(tmp_path / "html")} == {site.url("/"), site.url("/x.xhtml")}
        assert summary.skipped == 4 and summary.reasons["content-type application/pdf"] == 1
        # known non-page extensions are not even requested
        assert not {"/photo.JPG", "/style.css?v=2", "/paper.pdf"} & set(site.paths())
        await crawl(site.url("/"), tmp_path / "pdf", include_pdf=True)
        assert site.paths().count("/paper.pdf") == 1
    texts = page_texts(tmp_path / "pdf")
    assert "Portable documents hold prose too." in texts[site.url("/doc")]
    assert "Portable documents hold prose too." not in texts.get(site.url("/paper.pdf"), "")  # a duplicate


async def test_encodings_latin1_meta_bom_and_http_header(tmp_path):
    latin = ('<html><head><meta charset="iso-8859-1"><title>Caf\u00e9</title></head><body>'
             "<p>Cr\u00e8me br\u00fbl\u00e9e au caf\u00e9 du coin, na\u00efve et d\u00e9licieuse.</p></body></html>")
    bom = ("<html><head><title>BOM</title></head><body><p>\u65e5\u672c\u8a9e\u306e\u6587\u7ae0\u3068"
           "\u00c5ngstr\u00f6m, long enough.</p></body></html>")
    header = "<html><body><p>Stra\u00dfe und Gr\u00fc\u00dfe aus K\u00f6ln am Rhein, lange genug.</p></body></html>"

    def raw(body, ctype):
        async def handler(request):
            return web.Response(body=body, headers={"Content-Type": ctype})
        return handler

    routes = {"/": page("Home", ["/latin", "/bom", "/header"]),
              "/latin": raw(latin.encode("latin-1"), "text/html"),
              "/bom": raw(b"\xef\xbb\xbf" + bom.encode("utf-8"), "text/html"),
              "/header": raw(header.encode("cp1252"), "text/html; charset=windows-1252")}
    async with serve(routes) as site:
        await crawl(site.url("/"), tmp_path)
    texts = page_texts(tmp_path)
    recs = {r["url"]: r for r in manifest(tmp_path)}
    assert "Crème brûlée au café du coin, naïve et délicieuse." in texts[site.url("/latin")]
    assert recs[site.url("/latin")]["title"] == "Café"
    assert "日本語の文章とÅngström" in texts[site.url("/bom")]
    assert "Straße und Grüße aus Köln" in texts[site.url("/header")]


# --- traps and path safety ---------------------------------------------------------------------

async def test_infinite_calendar_trap_terminates(tmp_path):
    async def calendar(request):
        month = int(request.query.get("month", "0"))
        return web.Response(text=page(f"Month {month}", [f"/cal?month={month + 1}", f"/cal/{month + 1}"]),
                            content_type="text/html")

    async def path_calendar(request):
        month = int(request.match_info["tail"].split("/")[-1])
        return web.Response(text=page(f"Path month {month}", [f"/cal/{month + 1}"]), content_type="text/html")

    site_routes = {"/": page("Home", ["/cal?month=0"]), "/cal": calendar}
    async with serve(site_routes) as site:
        for m in range(200):
            site.routes[f"/cal/{m}"] = path_calendar
        summary = await asyncio.wait_for(
            crawl(site.url("/"), tmp_path, max_depth=10_000, max_pages=10_000, max_per_path=25), timeout=20)
    queries = [p for p in site.paths() if p.startswith("/cal?")]
    assert len(queries) == 25  # the ?month= variants stop at max_per_path
    assert summary.queued == 0
    paths = [p for p in site.paths() if p.startswith("/cal/")]
    async with serve(site_routes) as site2:
        for m in range(200):
            site2.routes[f"/cal/{m}"] = path_calendar
        await crawl(site2.url("/cal/0"), tmp_path / "depth", max_depth=15)
    assert len([p for p in site2.paths() if p.startswith("/cal/")]) == 16  # depth 0..15
    assert paths  # the path-style calendar was reached in the first crawl too


async def test_output_paths_stay_inside_out_dir(tmp_path):
    nasty = ["../../../../escape.txt", "/..%2F..%2Fescape", "/%2e%2e/%2e%2e/etc/passwd", "/a%00b", "/\u00e9t\u00e9",
             "/" + "x" * 1500, "/con", "/a\\..\\..\\b", "/.hidden", "/q?file=../../x"]
    async def any_page(request):
        return web.Response(text=page("Page " + request.path_qs[:40]), content_type="text/html")

    routes = {"/": page("Home", nasty)}
    async with serve(routes) as site:
        site.app  # noqa: B018
        site.routes.update({k: any_page for k in ["/escape.txt", "/..%2F..%2Fescape", "/etc/passwd", "/a%00b",
                                                  "/\u00e9t\u00e9", "/" + "x" * 1500, "/con", "/a\\..\\..\\b",
                                                  "/.hidden", "/q"]})
        out = tmp_path / "out"
        before = set(os.listdir(tmp_path))
        summary = await crawl(site.url("/"), out)
    assert set(os.listdir(tmp_path)) == before | {"out"}
    assert sorted(os.listdir(out)) == [".crawl", "manifest.jsonl", "pages"]
    names = os.listdir(out / "pages")
    assert summary.written >= 8 and len(names) == summary.written
    assert all(re.fullmatch(r"[0-9a-f]{32}\.txt", n) for n in names)


# --- resume ------------------------------------------------------------------------------------

async def test_resume_after_cancel_does_not_refetch_saved_pages(tmp_path):
    async def slowish(request):
        await asyncio.sleep(0.03)
        return web.Response(text=page("Page " + request.path, [f"/p{i}" for i in range(12)]), content_type="text/html")

    routes = {"/": slowish, **{f"/p{i}": slowish for i in range(12)}}
    async with serve(routes) as site:
        task = asyncio.ensure_future(crawl(site.url("/"), tmp_path))
        await wait_for(lambda: len(manifest(tmp_path)) >= 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        first = {r["url"] for r in manifest(tmp_path)}
        n_first = len(site.log)
        summary = await crawl(site.url("/"), tmp_path)
    second_paths = [p for _, p, _ in site.log[n_first:]]
    assert not any(site.url(p) in first for p in second_paths), "a saved page was fetched again"
    urls = [r["url"] for r in manifest(tmp_path)]
    assert len(urls) == len(set(urls)) == 13 and summary.kept == 13


async def test_resume_repairs_a_torn_log_line_and_rejects_another_start_url(tmp_path):
    routes = {"/": page("Home", ["/a", "/b"]), "/a": page("A"), "/b": page("B")}
    async with serve(routes) as site:
        await crawl(site.url("/"), tmp_path, max_pages=2)
        with open(tmp_path / "manifest.jsonl", "a") as f:
            f.write('{"url": "http://torn')  # what a kill in the middle of a write could leave
        await crawl(site.url("/"), tmp_path, max_pages=3)
        with pytest.raises(CrawlError, match="holds a crawl of"):
            Crawler(site.url("/a"), str(tmp_path), fast())  # checked when run() opens the state
            await crawl(site.url("/a"), tmp_path)
    assert [p for p in site.paths() if p != "/robots.txt"] == ["/", "/a", "/b"]
    assert len(manifest(tmp_path)) == 3


async def test_unreachable_start_site_is_a_crawl_error(tmp_path):
    with pytest.raises(CrawlError, match="gave no page"):
        await crawl("http://127.0.0.1:9/", tmp_path, retries=0, timeout=1)
    with pytest.raises(CrawlError, match="not an http"):
        Crawler("ftp://example.com/", str(tmp_path))
