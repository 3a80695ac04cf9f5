"""The crawl: polite, breadth-first, resumable.

    summary = asyncio.run(Crawler(start_url, out_dir, CrawlSettings(...)).run())

Order: breadth-first by depth. All URLs of depth d are visited before any of depth d+1; within a
depth, URLs are grouped by host and the hosts are crawled concurrently (at most `concurrency`
requests at once, `per_host` per host), each host paced by its own clock: `delay_ms` (or the
robots.txt Crawl-delay when larger) plus a random jitter between two requests to it.

This module is the loop and the fate of each URL; the parts it drives:
    frontier.py   the queue by depth, the URLs seen, the scope and crawler-trap rules
    polite.py     the fetch-and-retry policy: per-host pacing, robots.txt, backoff, Retry-After
    page.py       one fetched page -> title, main text, links, robots <meta>
    output.py     OUT_DIR: page files, manifest.jsonl and the resume logs
    progress.py   the Summary counters and the progress bar

Resume: network errors, timeouts and 5xx/429 that outlast the retries are not marked done, so a
later run tries them again; everything else visited is done for good.
"""
from __future__ import annotations

import asyncio
import collections
import hashlib
import os
import time

from cllm.errors import CrawlError
from cllm.scraper.fetch import HTML_TYPES, PDF_TYPES, Fetcher, FetchError, Response
from cllm.scraper.frontier import Entry, Frontier
from cllm.scraper.output import CrawlOutput, utc_now
from cllm.scraper.page import read_page
from cllm.scraper.polite import PoliteClient
from cllm.scraper.progress import ProgressBar, Summary
from cllm.scraper.settings import CrawlSettings
from cllm.scraper.urls import canonicalize, origin


class Crawler:
    def __init__(self, start_url: str, out_dir: str, settings: CrawlSettings | None = None):
        self.settings = settings or CrawlSettings()
        canon = canonicalize(str(start_url))
        if canon is None:
            raise CrawlError(f"not an http(s) URL: {start_url!r} (example: https://example.com/)")
        self.start_url = canon
        self.out_dir = os.path.abspath(os.path.expanduser(str(out_dir)))
        if os.path.exists(self.out_dir) and not os.path.isdir(self.out_dir):
            raise CrawlError(f"OUT_DIR {out_dir!r} is a file; give a folder")
        self.summary = Summary(out_dir=self.out_dir)
        self.frontier = Frontier(self.settings, canon)
        self._start_failure: str | None = None

    # --- the crawl ----------------------------------------------------------------------------

    async def run(self) -> Summary:
        s = self.settings
        started = time.monotonic()
        self.output = CrawlOutput(self.out_dir, self.start_url)
        self.progress = ProgressBar(self.summary, s.max_pages, s.progress)
        self._cond = asyncio.Condition()
        self._inflight = 0
        self._stop = False
        self._writes: dict[str, asyncio.Future] = {}  # text sha256 -> its page write in flight
        self._fatal: CrawlError | None = None
        self.client: PoliteClient | None = None
        try:
            self._resume()
            async with Fetcher(s.user_agent, s.timeout, s.max_bytes, s.concurrency) as fetcher:
                self.client = PoliteClient(s, fetcher)
                await self._crawl_levels()
        finally:
            self._close(started)
        if self._fatal is not None:
            raise self._fatal
        if self._start_failure and self.summary.kept == 0:
            raise CrawlError(f"the start URL {self.start_url} gave no page: {self._start_failure} "
                             "(check the URL and that the site is up)")
        return self.summary

    def _resume(self) -> None:
        """Load what earlier runs into OUT_DIR did: the frontier, the pages kept, their texts."""
        out = self.output
        self.frontier.restore(out)
        self._texts = {r["sha256"]: r["url"] for r in out.manifest if r.get("file") and "sha256" in r}
        self.summary.kept = len(out.manifest)
        self.summary.queued = self.frontier.queued()
        self.progress.update(min(self.summary.kept, self.settings.max_pages))
        self._stop = self.summary.kept >= self.settings.max_pages

    async def _crawl_levels(self) -> None:
        """Depth by depth; within a depth, hosts in parallel, each host's URLs in BFS order."""
        while not self._stop:
            level = self.frontier.next_level()
            if not level:
                break
            by_host: dict[str, collections.deque] = collections.defaultdict(collections.deque)
            for e in level:
                by_host[origin(e.url)].append(e)
            per_host = self.settings.per_host
            await asyncio.gather(*[self._host_worker(q) for q in by_host.values()
                                   for _ in range(min(per_host, len(q)))])
        if self._writes:
            await asyncio.wait(list(self._writes.values()))

    def _close(self, started: float) -> None:
        for task in list(self._writes.values()):  # interrupted: unlogged pages are refetched later
            task.cancel()
        if self.client is not None:
            self.summary.retries = self.client.retries
        self.summary.elapsed_s = time.monotonic() - started
        self.progress.close()
        self.output.close()

    async def _host_worker(self, queue: collections.deque) -> None:
        while queue and not self._stop:
            e = queue.popleft()
            try:
                await self._visit(e)
            except (CrawlError, asyncio.CancelledError):
                raise
            except Exception as exc:  # noqa: BLE001 - one odd page must not end the crawl
                self._record(e, "error", f"internal: {type(exc).__name__}: {exc}")

    # --- one URL ------------------------------------------------------------------------------

    async def _reserve(self) -> bool:
        """Wait for a page slot: never more fetches in flight than pages still allowed."""
        async with self._cond:
            while self.summary.kept + self._inflight >= self.settings.max_pages:
                if self._inflight == 0 or self.summary.kept >= self.settings.max_pages:
                    self._stop = self.summary.kept >= self.settings.max_pages
                    return False
                await self._cond.wait()
            self._inflight += 1
            return True

    async def _release(self) -> None:
        async with self._cond:
            self._inflight -= 1
            self._cond.notify_all()

    async def _visit(self, e: Entry) -> None:
        self.summary.queued -= 1
        ok, why = await self.client.allowed(e.url)
        if not ok:
            return self._record(e, "skipped", why)
        if not await self._reserve():
            self.summary.queued += 1  # not visited: stays in the frontier for a later run
            return
        try:
            await self._fetch_and_keep(e)
        finally:
            await self._release()

    async def _fetch_following_redirects(self, e: Entry) -> tuple[Response | None, str]:
        """(final response, its URL); (None, "") when a redirect ended the visit (recorded)."""
        s = self.settings
        accept = HTML_TYPES + (PDF_TYPES if s.include_pdf else ())
        url, seen = e.url, self.frontier.seen
        for hop in range(s.max_redirects + 1):
            resp = await self.client.request(url, accept)
            if not resp.is_redirect:
                return resp, url
            target = canonicalize(resp.location, url)
            if target is None:
                self._record(e, "skipped", "redirect to a non-http URL")
                return None, ""
            if hop == s.max_redirects:
                self._record(e, "error", f"too many redirects (> {s.max_redirects})")
                return None, ""
            if target in seen:
                # a loop, or a page that is (or will be) fetched under its own URL
                self._record(e, "skipped", "redirect to a seen URL", final_url=target)
                return None, ""
            if not self.frontier.in_scope(target):
                self._record(e, "skipped", "redirect out of scope", final_url=target)
                return None, ""
            seen.add(target)
            ok, why = await self.client.allowed(target)
            if not ok:
                self._record(e, "skipped", why + " (after redirect)", final_url=target)
                return None, ""
            url = target

    async def _fetch_and_keep(self, e: Entry) -> None:
        try:
            resp, url = await self._fetch_following_redirects(e)
        except FetchError as exc:
            # timeouts and network errors may be transient: not final, a later run retries
            return self._record(e, "error", exc.kind, final=not exc.retryable)
        if resp is None:
            return
        if resp.status != 200:
            transient = resp.status == 429 or resp.status >= 500
            return self._record(e, "error", f"http {resp.status}", final=not transient, status=resp.status)
        if resp.body is None:
            return self._record(e, "skipped", resp.skipped or "no body", status=200, final_url=url)
        page = await asyncio.get_running_loop().run_in_executor(
            None, read_page, resp.body, resp.charset, url, resp.content_type in PDF_TYPES)
        if not page.nofollow:
            self.summary.queued += self.frontier.add_links(e, page.links, self.output.queued)
        if page.noindex or len(page.text) < self.settings.min_chars:
            self.summary.short += 1
            return self._record(e, "short", "noindex" if page.noindex else "", final_url=url,
                                text_chars=len(page.text))
        await self._keep(e, url, resp, page.title, page.text)

    # --- keeping a page -----------------------------------------------------------------------

    async def _keep(self, e: Entry, final_url: str, resp: Response, title: str, text: str) -> None:
        if self.summary.kept >= self.settings.max_pages:  # a late finisher past the limit
            return
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        record = {"url": e.url, "final_url": final_url, "status": resp.status, "depth": e.depth,
                  "parent": e.parent, "title": title, "fetched_at": utc_now(), "bytes": len(resp.body),
                  "text_chars": len(text), "sha256": digest}
        self.summary.kept += 1  # counted now, so that the page limit holds while the file is written
        if digest in self._texts:
            record.update(file=None, duplicate_of=self._texts[digest])
            self.summary.duplicates += 1
            original = self._writes.get(digest)
            if original is not None:  # log a duplicate only after its original is on disk
                await asyncio.wait([original])
            self._logged(e, record)
            return
        self._texts[digest] = e.url
        # The write (fsync included) runs in a thread while the host's worker goes on with its
        # next URL; the manifest and done lines follow the file, so a kill never logs a page that
        # is not on disk.
        task = asyncio.ensure_future(self._write(e, record, text))
        self._writes[digest] = task
        task.add_done_callback(lambda t, d=digest: self._writes.pop(d, None))

    async def _write(self, e: Entry, record: dict, text: str) -> None:
        try:
            record["file"] = await asyncio.get_running_loop().run_in_executor(
                None, self.output.write_page, e.url, text)
        except CrawlError as exc:
            self._fatal = exc
            self._stop = True
            return
        self.summary.written += 1
        self._logged(e, record)

    def _logged(self, e: Entry, record: dict) -> None:
        self.output.kept(record)
        self._record(e, "kept", final_url=record["final_url"])
        self.progress.update(1)

    def _record(self, e: Entry, outcome: str, reason: str = "", final: bool = True, **extra) -> None:
        """Count an outcome; `final` ones go to done.jsonl and are not retried on resume."""
        s = self.summary
        if outcome == "skipped":
            s.skipped += 1
        elif outcome == "error":
            s.errors += 1
        if reason:
            s.reasons[reason.split(":")[0]] += 1
        if e.depth == 0 and e.url == self.start_url and outcome in ("skipped", "error"):
            self._start_failure = reason
        if final:
            self.output.visited({"url": e.url, "outcome": outcome, "reason": reason, **extra})
        self.progress.update(0)
