"""Local web sites for the crawler tests: aiohttp servers on 127.0.0.1 / 127.0.0.2 that log every
request (time, path, User-Agent), so that tests can check politeness from the server's side."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time

from aiohttp import web
from aiohttp.test_utils import TestServer

from cllm.scraper.crawler import Crawler
from cllm.scraper.settings import CrawlSettings


def para(words: str, n: int = 3) -> str:
    """A paragraph long enough to pass min_chars and the extractor's scoring."""
    return "<p>" + " ".join([f"{words}, a sentence about it that is long enough to count as prose."] * n) + "</p>"


def page(title: str, links=(), body: str | None = None, head: str = "") -> str:
    anchors = "".join(f'<li><a href="{href}">link {i}</a></li>' for i, href in enumerate(links))
    return (f"<!doctype html><html><head><title>{title}</title>{head}</head><body>"
            f"<nav><ul>{anchors}</ul></nav><article><h1>{title}</h1>{body or para(title)}</article></body></html>")


class Site:
    """routes: path (with query, or without to match any query) -> str | bytes | async handler."""

    def __init__(self, routes: dict | None = None):
        self.routes = dict(routes or {})
        self.log: list[tuple[float, str, str]] = []  # (monotonic time, path_qs, user agent)
        self.app = web.Application()
        self.app.router.add_route("GET", "/{tail:.*}", self._handle)
        self.server: TestServer | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.log.append((time.monotonic(), request.path_qs, request.headers.get("User-Agent", "")))
        route = self.routes.get(request.path_qs, self.routes.get(request.path))
        if route is None:
            return web.Response(status=404, text="not found")
        if callable(route):
            return await route(request)
        if isinstance(route, bytes):
            return web.Response(body=route, content_type="text/html")
        return web.Response(text=route, content_type="text/plain" if request.path == "/robots.txt" else "text/html")

    async def start(self, host: str = "127.0.0.1") -> "Site":
        self.server = TestServer(self.app, host=host)
        await self.server.start_server()
        self.base = str(self.server.make_url("/")).rstrip("/")  # still valid after close()
        return self

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    def url(self, path: str = "/") -> str:
        return self.base + path

    def paths(self) -> list[str]:
        return [p for _, p, _ in self.log]

    def times(self, exclude_robots: bool = False) -> list[float]:
        return [t for t, p, _ in self.log if not (exclude_robots and p == "/robots.txt")]


@contextlib.asynccontextmanager
async def serve(routes: dict, host: str = "127.0.0.1"):
    site = await Site(routes).start(host)
    try:
        yield site
    finally:
        await site.close()


def fast(**overrides) -> CrawlSettings:
    """Settings for tests: no delay, no progress bar, short timeouts and backoff."""
    base = dict(delay_ms=0, jitter_ms=0, progress=False, timeout=2.0, retry_backoff_s=0.01,
                min_chars=20, max_pages=100, max_depth=5)
    base.update(overrides)
    return CrawlSettings(**base)


async def crawl(start: str, out_dir, **overrides):
    return await Crawler(start, str(out_dir), fast(**overrides)).run()


def manifest(out_dir) -> list[dict]:
    path = os.path.join(str(out_dir), "manifest.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def page_texts(out_dir) -> dict[str, str]:
    """url -> saved text (via the manifest's file names)."""
    out = {}
    for rec in manifest(out_dir):
        if rec.get("file"):
            with open(os.path.join(str(out_dir), rec["file"]), encoding="utf-8") as f:
                out[rec["url"]] = f.read()
    return out


async def wait_for(predicate, timeout: float = 10.0, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)
