"""Crawler throughput and memory on a local site: 2,000 pages over 4 loopback hosts, zero delay.

    python bench/crawl.py [--pages 2000] [--hosts 4] [--concurrency 8] [--per-host 1] [--smoke]

The site runs in a separate process (so that its CPU and memory are not counted): hosts
127.0.0.1 ... 127.0.0.<hosts>, page j at http://127.0.0.<1 + j % hosts>:PORT/p/j, about 9 KB of
HTML each (navigation, an article of 6 paragraphs, a footer), linking to pages 10j+1 ... 10j+10
(a tree of depth 4) and to 5 pseudo-random other pages on all hosts (work for the dedup). Every
host serves a robots.txt. The crawler runs with the default settings except zero delay/jitter.
Prints one JSON line: pages kept, seconds, pages/s, peak RSS of the crawling process. Its keys: bench,
smoke, site_pages, hosts, concurrency, per_host, kept, written, errors, seconds, pages_per_s, text_mb,
rss_before_mb, peak_rss_mb, cpus.
  --smoke: 30 pages over 2 hosts
"""
import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import resource
import socket
import sys
import tempfile
import time

from aiohttp import web

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import SMOKE_HELP  # noqa: E402
from cllm.scraper.crawler import Crawler  # noqa: E402
from cllm.scraper.settings import CrawlSettings  # noqa: E402

WORDS = ("river stone light harbour winter engine garden letter market window signal paper valley "
         "journey morning silver border forest number station island story mountain bridge").split()


def make_page(j: int, n_pages: int, hosts: list[str]) -> bytes:
    rng = random.Random(j)

    def url(k):
        return f"{hosts[k % len(hosts)]}/p/{k}"

    links = [url(k) for k in range(10 * j + 1, min(10 * j + 11, n_pages))]
    links += [url(rng.randrange(n_pages)) for _ in range(5)]
    paragraphs = "".join(
        "<p>" + " ".join(rng.choice(WORDS) + ("," if rng.random() < 0.1 else "") for _ in range(rng.randint(80, 140)))
        + ".</p>" for _ in range(6))
    nav = "".join(f'<li><a href="{url(k)}">Section {k}</a></li>' for k in range(1, 11))
    related = "".join(f'<li><a href="{u}">Related story {i}</a></li>' for i, u in enumerate(links))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Page {j}</title>"
            f"<style>body{{font-family:serif}}</style><script>var page={j};</script></head><body>"
            f"<header><nav><ul>{nav}</ul></nav></header><main><article><h1>Page {j}</h1>{paragraphs}</article>"
            f"<aside class='related'><ul>{related}</ul></aside></main>"
            f"<footer>Copyright Bench Site. <a href='{url(0)}'>Home</a></footer></body></html>").encode()


def serve(n_pages: int, n_hosts: int, ready) -> None:
    """The site, in its own process: report the host URLs through `ready`, then serve forever."""

    async def main():
        socks = []
        for h in range(n_hosts):
            s = socket.socket()
            s.bind((f"127.0.0.{h + 1}", 0))
            socks.append(s)
        hosts = [f"http://127.0.0.{h + 1}:{s.getsockname()[1]}" for h, s in enumerate(socks)]
        pages = {j: make_page(j, n_pages, hosts) for j in range(n_pages)}

        async def handle(request):
            if request.path == "/robots.txt":
                return web.Response(text="User-agent: *\nDisallow: /private\n")
            try:
                j = int(request.match_info["j"])
                return web.Response(body=pages[j], content_type="text/html", charset="utf-8")
            except (KeyError, ValueError):
                raise web.HTTPNotFound() from None

        app = web.Application()
        app.router.add_get("/p/{j}", handle)
        app.router.add_get("/robots.txt", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for s in socks:
            await web.SockSite(runner, s).start()
        ready.send(hosts)
        await asyncio.Event().wait()

    asyncio.run(main())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=2000)
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--per-host", type=int, default=1)
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    if args.smoke:
        args.pages, args.hosts = 30, 2

    parent, child = mp.Pipe()
    server = mp.Process(target=serve, args=(args.pages, args.hosts, child), daemon=True)
    server.start()
    hosts = parent.recv()
    try:
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        settings = CrawlSettings(max_pages=args.pages, max_depth=10, delay_ms=0, jitter_ms=0, progress=False,
                                 concurrency=args.concurrency, per_host=args.per_host,
                                 allow_domains=",".join(h.split("//")[1].split(":")[0] for h in hosts))
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            summary = asyncio.run(Crawler(hosts[0] + "/p/0", out, settings).run())
            seconds = time.perf_counter() - start
            pages = os.path.join(out, "pages")
            text_bytes = sum(os.path.getsize(os.path.join(pages, n)) for n in os.listdir(pages))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        server.terminate()
    print(json.dumps({
        "bench": "crawl", "smoke": args.smoke, "site_pages": args.pages, "hosts": args.hosts,
        "concurrency": args.concurrency, "per_host": args.per_host, "kept": summary.kept, "written": summary.written,
        "errors": summary.errors,
        "seconds": round(seconds, 2), "pages_per_s": round(summary.kept / seconds, 1),
        "text_mb": round(text_bytes / 1e6, 2), "rss_before_mb": round(rss_before, 1), "peak_rss_mb": round(peak, 1),
        "cpus": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
