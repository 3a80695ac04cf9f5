"""The fetch-and-retry policy: every request of a crawl goes through `PoliteClient.request`.

- per host (scheme, host and port): at most `per_host` requests in flight, each start spaced from
  the previous one's end by `delay_ms` (or robots.txt's Crawl-delay when larger) plus a random
  jitter; at most `concurrency` in flight over all hosts;
- robots.txt is fetched once per host before any other request there (redirects followed, RFC 9309
  status rules in cllm/scraper/robots.py);
- 429, 5xx, timeouts and network errors are retried with exponential backoff and jitter; a
  Retry-After (capped at `max_retry_after_s`) holds the whole host, not only the URL that got it.

One HTTP exchange itself (size caps, timeouts, decoding) is cllm/scraper/fetch.py.
"""
from __future__ import annotations

import asyncio
import random

from cllm.scraper.fetch import Fetcher, FetchError, Response, parse_retry_after
from cllm.scraper.robots import Robots
from cllm.scraper.settings import CrawlSettings
from cllm.scraper.urls import canonicalize, origin


class HostPacer:
    """Per-host politeness: a concurrency limit, the robots.txt rules and a pacing clock."""

    def __init__(self, settings: CrawlSettings):
        self.settings = settings
        self.sem = asyncio.Semaphore(settings.per_host)
        self.robots: Robots | None = None
        self.robots_lock = asyncio.Lock()
        self.crawl_delay = 0.0  # seconds, from robots.txt
        self.next_start = 0.0  # loop time before which no request may start

    def gap(self) -> float:
        base = max(self.settings.delay_ms / 1000.0, self.crawl_delay)
        return base + random.uniform(0.0, self.settings.jitter_ms / 1000.0)

    async def wait_turn(self) -> None:
        loop = asyncio.get_running_loop()
        while True:  # a loop: a Retry-After from a parallel request may push next_start meanwhile
            now = loop.time()
            if now >= self.next_start:
                break
            await asyncio.sleep(self.next_start - now)
        self.next_start = now + self.gap()  # start-to-start spacing (matters with per_host > 1)

    def finished(self) -> None:
        # end-to-start spacing: a slow response does not eat the pause before the next request
        self.next_start = max(self.next_start, asyncio.get_running_loop().time() + self.gap())

    def hold(self, seconds: float) -> None:
        """Retry-After / backoff: no request to this host for `seconds`."""
        self.next_start = max(self.next_start, asyncio.get_running_loop().time() + seconds)


class PoliteClient:
    """A Fetcher with per-host pacing, robots.txt and retries; `retries` counts the retries made."""

    def __init__(self, settings: CrawlSettings, fetcher: Fetcher):
        self.settings = settings
        self.fetcher = fetcher
        self.retries = 0
        self._hosts: dict[str, HostPacer] = {}
        self._global = asyncio.Semaphore(settings.concurrency)

    def _host(self, url: str) -> HostPacer:
        key = origin(url)
        if key not in self._hosts:
            self._hosts[key] = HostPacer(self.settings)
        return self._hosts[key]

    async def _paced_get(self, host: HostPacer, url: str, accept, max_bytes, truncate):
        """One attempt in the host's turn: (response, None) or (None, the FetchError)."""
        resp, error = None, None
        async with host.sem:
            await host.wait_turn()
            async with self._global:
                try:
                    resp = await self.fetcher.get(url, accept, max_bytes=max_bytes, truncate=truncate)
                except FetchError as exc:
                    error = exc
            host.finished()
        return resp, error

    async def request(self, url: str, accept, max_bytes: int | None = None, truncate: bool = False) -> Response:
        """One GET with the host's pacing, retried with exponential backoff and jitter on 429,
        5xx, timeouts and network errors. Retry-After (capped) holds the whole host."""
        s = self.settings
        host = self._host(url)
        attempt = 0
        while True:
            resp, error = await self._paced_get(host, url, accept, max_bytes, truncate)
            if error is not None:
                retryable, retry_after = error.retryable, None
            else:
                retryable = resp.status == 429 or 500 <= resp.status <= 599
                retry_after = parse_retry_after(resp.headers.get("retry-after"))
            if not retryable or attempt >= s.retries:
                if error is not None:
                    raise error
                return resp
            backoff = min(s.max_backoff_s, s.retry_backoff_s * 2 ** attempt) * random.uniform(1.0, 1.5)
            wait = min(retry_after, s.max_retry_after_s) if retry_after is not None else backoff
            host.hold(wait)  # the whole host waits, not just this URL
            attempt += 1
            self.retries += 1

    async def _fetch_robots(self, url: str) -> Robots:
        target = origin(url) + "/robots.txt"
        for _hop in range(6):  # the first request and up to 5 redirects (RFC 9309)
            try:
                resp = await self.request(target, None, max_bytes=self.settings.robots_max_bytes, truncate=True)
            except FetchError as exc:
                return Robots.from_status(None, None, str(exc))
            nxt = canonicalize(resp.location, target) if resp.is_redirect else None
            if nxt is None:
                return Robots.from_status(resp.status, resp.body)
            target = nxt
        return Robots.from_status(resp.status, None)  # too many redirects

    async def robots(self, url: str) -> Robots:
        """The robots.txt rules of url's host, fetched once, before any other request there."""
        host = self._host(url)
        async with host.robots_lock:
            if host.robots is None:
                host.robots = await self._fetch_robots(url)
                host.crawl_delay = host.robots.crawl_delay(self.settings.user_agent)
                host.finished()  # now that Crawl-delay is known, it spaces the next request too
        return host.robots

    async def allowed(self, url: str) -> tuple[bool, str]:
        """(may we fetch url, the reason when not) by the host's robots.txt."""
        if self.settings.ignore_robots:
            return True, ""
        robots = await self.robots(url)
        if robots.can_fetch(url, self.settings.user_agent):
            return True, ""
        return False, "robots.txt" if not robots.disallow_all else robots.reason
