"""The crawl: polite, breadth-first, resumable.

    summary = asyncio.run(Crawler(start_url, out_dir, CrawlSettings(...)).run())

Order: breadth-first by depth. All URLs of depth d are visited before any of depth d+1; within a
depth, URLs are grouped by host and the hosts are crawled concurrently (at most `concurrency`
requests at once, `per_host` per host), each host paced by its own clock: `delay_ms` (or the
robots.txt Crawl-delay when larger) plus a random jitter between two requests to it.

Output in OUT_DIR:
    pages/<32 hex digits of SHA-256 of the canonical URL>.txt   the main text, nothing else
    manifest.jsonl                                              one JSON line per kept page
    .crawl/state.json, frontier.jsonl, done.jsonl                resume state (JSON, no pickle)

Page files and state.json are written atomically (temp file, fsync, rename). The three .jsonl
files are append-only logs written one whole line per write; after a kill, a torn last line is cut
off when the crawl is resumed, so every line a reader sees is complete.

Resume: every queued URL is appended to frontier.jsonl before it can be fetched, and every visited
URL to done.jsonl (after its page file and manifest line). Running the same command again reloads
both, skips what is done, and continues with the rest, in BFS order. Network errors, timeouts and
5xx/429 that outlast the retries are not marked done, so a later run tries them again.
"""
from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import os
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import urlsplit

from cllm.errors import CrawlError
from cllm.fileio import atomic_write_text
from cllm.scraper.fetch import HTML_TYPES, PDF_TYPES, Fetcher, FetchError, Response, parse_retry_after
from cllm.scraper.robots import Robots
from cllm.scraper.settings import CrawlSettings
from cllm.scraper.urls import canonicalize, host_of, in_scope, origin, path_key, url_hash

STATE_DIR = ".crawl"
FORMAT_VERSION = 1


@dataclass
class Entry:
    """A queued URL: canonical url, clicks from the start URL, and the page that linked to it."""

    url: str
    depth: int
    parent: str | None = None


@dataclass
class Summary:
    kept: int = 0  # pages written + exact duplicates recognised (what max_pages counts)
    written: int = 0
    duplicates: int = 0
    short: int = 0  # fetched HTML whose main text was under min_chars
    skipped: int = 0  # robots, scope, content type, redirect to a seen URL ...
    errors: int = 0  # HTTP errors, timeouts, too large, network
    retries: int = 0
    queued: int = 0  # still waiting in the frontier
    elapsed_s: float = 0.0
    out_dir: str = ""
    reasons: collections.Counter = field(default_factory=collections.Counter)

    def line(self) -> str:
        new = self.written + self.duplicates
        rate = new / self.elapsed_s if self.elapsed_s > 0 else 0.0
        top = ", ".join(f"{k} {v}" for k, v in self.reasons.most_common(4))
        before = f", {self.kept - new} from earlier runs" if self.kept > new else ""
        return (f"scrape: kept {self.kept} pages ({self.written} written, {self.duplicates} duplicates{before}) in "
                f"{self.elapsed_s:.1f} s ({rate:.2f} pages/s); {self.short} too short, {self.skipped} skipped, "
                f"{self.errors} errors, {self.retries} retries, {self.queued} still queued"
                + (f" [{top}]" if top else "") + f" -> {self.out_dir}")


class _Host:
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


def _repair_log(path: str) -> None:
    """Cut a torn last line (a kill in the middle of a write) so that appends start clean."""
    if not os.path.exists(path):
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def _read_log(path: str) -> list[dict]:
    records = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a torn line from a kill
    return records


class _State:
    """OUT_DIR's files: pages, manifest and the resume logs."""

    def __init__(self, out_dir: str, start_url: str):
        self.out_dir = out_dir
        self.pages_dir = os.path.join(out_dir, "pages")
        self.state_dir = os.path.join(out_dir, STATE_DIR)
        try:
            os.makedirs(self.pages_dir, exist_ok=True)
            os.makedirs(self.state_dir, exist_ok=True)
        except OSError as exc:
            raise CrawlError(f"cannot create output folder {out_dir!r}: {exc.strerror or exc}") from None
        if not os.access(out_dir, os.W_OK) or not os.access(self.pages_dir, os.W_OK):
            raise CrawlError(f"output folder {out_dir!r} is not writable; choose another OUT_DIR")
        self.manifest_path = os.path.join(out_dir, "manifest.jsonl")
        self.frontier_path = os.path.join(self.state_dir, "frontier.jsonl")
        self.done_path = os.path.join(self.state_dir, "done.jsonl")
        state_path = os.path.join(self.state_dir, "state.json")
        if os.path.exists(state_path):
            try:
                with open(state_path, encoding="utf-8") as f:
                    previous = json.load(f)
            except (OSError, ValueError) as exc:
                raise CrawlError(f"{state_path} is unreadable ({exc}); delete {self.state_dir} to start over") from None
            if previous.get("start_url") != start_url:
                raise CrawlError(f"{out_dir!r} holds a crawl of {previous.get('start_url')}; "
                                 "use another OUT_DIR for a different start URL")
        else:
            try:
                atomic_write_text(state_path, json.dumps({"format": FORMAT_VERSION, "start_url": start_url,
                                                          "created_at": _now()}) + "\n")
            except OSError as exc:
                raise CrawlError(f"cannot write to {out_dir!r}: {exc.strerror or exc}") from None
        for path in (self.manifest_path, self.frontier_path, self.done_path):
            _repair_log(path)
        self.manifest = _read_log(self.manifest_path)
        self.frontier = [Entry(r["url"], int(r["depth"]), r.get("parent")) for r in _read_log(self.frontier_path)
                         if "url" in r and "depth" in r]
        self.done = _read_log(self.done_path)
        self._files = {p: open(p, "a", encoding="utf-8")
                       for p in (self.manifest_path, self.frontier_path, self.done_path)}

    def _append(self, path: str, record: dict) -> None:
        f = self._files[path]
        f.write(json.dumps(record, ensure_ascii=False) + "\n")  # one line, one write
        f.flush()

    def queued(self, e: Entry) -> None:
        self._append(self.frontier_path, {"url": e.url, "depth": e.depth, "parent": e.parent})

    def visited(self, record: dict) -> None:
        self._append(self.done_path, record)

    def kept(self, record: dict) -> None:
        self._append(self.manifest_path, record)

    def close(self) -> None:
        for f in self._files.values():
            f.close()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _extension(url: str) -> str:
    """'jpg' for http://host/a/photo.JPG?x=1; '' when the last path segment has no dot."""
    last = urlsplit(url).path.rsplit("/", 1)[-1]
    return last.rsplit(".", 1)[-1].lower() if "." in last else ""


def _process(body: bytes, charset: str | None, final_url: str, is_pdf: bool):
    """CPU work of one page, run in a worker thread: (title, text, links, nofollow, noindex)."""
    from cllm.scraper.extract import extract_pdf, extract_tree, parse_html
    from cllm.scraper.urls import extract_links, page_meta_robots

    if is_pdf:
        got = extract_pdf(body)
        return got.title, got.text, [], False, False
    doc, _ = parse_html(body, charset)
    if doc is None:
        return "", "", [], False, False
    links, nofollow = extract_links(doc, final_url)  # before extraction prunes the tree
    noindex = bool({"noindex", "none"} & page_meta_robots(doc))
    title, text = extract_tree(doc)
    return title, text, links, nofollow, noindex


class Crawler:
    def __init__(self, start_url: str, out_dir: str, settings: CrawlSettings | None = None):
        self.settings = settings or CrawlSettings()
        canon = canonicalize(str(start_url))
        if canon is None:
            raise CrawlError(f"not an http(s) URL: {start_url!r} (example: https://example.com/)")
        self.start_url = canon
        self.start_host = host_of(canon)
        self.out_dir = os.path.abspath(os.path.expanduser(str(out_dir)))
        if os.path.exists(self.out_dir) and not os.path.isdir(self.out_dir):
            raise CrawlError(f"OUT_DIR {out_dir!r} is a file; give a folder")
        self.summary = Summary(out_dir=self.out_dir)
        self._skip_ext = {x.lower().lstrip(".") for x in self.settings.skip_extensions}
        if self.settings.include_pdf:
            self._skip_ext.discard("pdf")
        self._hosts: dict[str, _Host] = {}
        self._start_failure: str | None = None

    # --- hosts, pacing, retries ---------------------------------------------------------------

    def _host(self, url: str) -> _Host:
        key = origin(url)
        if key not in self._hosts:
            self._hosts[key] = _Host(self.settings)
        return self._hosts[key]

    async def _request(self, url: str, accept, max_bytes: int | None = None, truncate: bool = False) -> Response:
        """One GET with the host's pacing, retried with exponential backoff and jitter on 429,
        5xx, timeouts and network errors. Retry-After (capped) holds the whole host."""
        s = self.settings
        host = self._host(url)
        attempt = 0
        while True:
            resp, error = None, None
            async with host.sem:
                await host.wait_turn()
                async with self._global:
                    try:
                        resp = await self.fetcher.get(url, accept, max_bytes=max_bytes, truncate=truncate)
                    except FetchError as exc:
                        error = exc
                host.finished()
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
            self.summary.retries += 1

    async def _robots(self, url: str) -> Robots:
        """The robots.txt rules of url's host, fetched once, before any other request there."""
        host = self._host(url)
        async with host.robots_lock:
            if host.robots is None:
                target = origin(url) + "/robots.txt"
                for _hop in range(6):  # the first request and up to 5 redirects (RFC 9309)
                    try:
                        resp = await self._request(target, None, max_bytes=self.settings.robots_max_bytes, truncate=True)
                    except FetchError as exc:
                        robots = Robots.from_status(None, None, str(exc))
                        break
                    nxt = canonicalize(resp.location, target) if resp.is_redirect else None
                    if nxt is None:
                        robots = Robots.from_status(resp.status, resp.body)
                        break
                    target = nxt
                else:
                    robots = Robots.from_status(resp.status, None)  # too many redirects
                host.robots = robots
                host.crawl_delay = host.robots.crawl_delay(self.settings.user_agent)
                host.finished()  # now that Crawl-delay is known, it spaces the next request too
        return host.robots

    async def _allowed(self, url: str) -> tuple[bool, str]:
        if not self.settings.obey_robots:
            return True, ""
        robots = await self._robots(url)
        if robots.can_fetch(url, self.settings.user_agent):
            return True, ""
        return False, "robots.txt" if not robots.disallow_all else robots.reason

    # --- bookkeeping --------------------------------------------------------------------------

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
            self.state.visited({"url": e.url, "outcome": outcome, "reason": reason, **extra})
        self._bar_update(0)

    def _bar_update(self, n: int) -> None:
        s = self.summary
        self.bar.update(n)
        self.bar.set_postfix(queued=s.queued, skipped=s.skipped + s.short, errors=s.errors, refresh=False)

    def _enqueue(self, e: Entry, links: list[str]) -> None:
        s = self.settings
        if e.depth >= s.max_depth:
            return
        for link in links:
            if link in self._seen or len(link) > s.max_url_length:
                continue
            if not in_scope(link, self.start_host, s.allow_domains, s.follow_external):
                continue
            if self._skip_ext and _extension(link) in self._skip_ext:
                continue  # an image, archive, stylesheet ...: not worth a request
            key = path_key(link)
            if self._per_path[key] >= s.max_per_path:
                continue  # a calendar or search trap: enough variants of this path
            self._per_path[key] += 1
            self._seen.add(link)
            child = Entry(link, e.depth + 1, e.url)
            self.state.queued(child)
            self._levels[child.depth].append(child)
            self.summary.queued += 1

    # --- one page -----------------------------------------------------------------------------

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
        ok, why = await self._allowed(e.url)
        if not ok:
            return self._record(e, "skipped", why)
        if not await self._reserve():
            self.summary.queued += 1  # not visited: stays in the frontier for a later run
            return
        try:
            await self._fetch_and_keep(e)
        finally:
            await self._release()

    async def _fetch_and_keep(self, e: Entry) -> None:
        s = self.settings
        accept = HTML_TYPES + (PDF_TYPES if s.include_pdf else ())
        url = e.url
        try:
            for hop in range(s.max_redirects + 1):
                resp = await self._request(url, accept)
                if not resp.is_redirect:
                    break
                target = canonicalize(resp.location, url)
                if target is None:
                    return self._record(e, "skipped", "redirect to a non-http URL")
                if hop == s.max_redirects:
                    return self._record(e, "error", f"too many redirects (> {s.max_redirects})")
                if target in self._seen:
                    # a loop, or a page that is (or will be) fetched under its own URL
                    return self._record(e, "skipped", "redirect to a seen URL", final_url=target)
                if not in_scope(target, self.start_host, s.allow_domains, s.follow_external):
                    return self._record(e, "skipped", "redirect out of scope", final_url=target)
                self._seen.add(target)
                ok, why = await self._allowed(target)
                if not ok:
                    return self._record(e, "skipped", why + " (after redirect)", final_url=target)
                url = target
        except FetchError as exc:
            # timeouts and network errors may be transient: not final, a later run retries
            return self._record(e, "error", exc.kind, final=not exc.retryable)
        if resp.status != 200:
            transient = resp.status == 429 or resp.status >= 500
            return self._record(e, "error", f"http {resp.status}", final=not transient, status=resp.status)
        if resp.body is None:
            return self._record(e, "skipped", resp.skipped or "no body", status=200, final_url=url)
        is_pdf = resp.content_type in PDF_TYPES
        loop = asyncio.get_running_loop()
        title, text, links, nofollow, noindex = await loop.run_in_executor(
            None, _process, resp.body, resp.charset, url, is_pdf)
        if not nofollow:
            self._enqueue(e, links)
        if noindex or len(text) < s.min_chars:
            self.summary.short += 1
            return self._record(e, "short", "noindex" if noindex else "", final_url=url, text_chars=len(text))
        await self._keep(e, url, resp, title, text)

    async def _keep(self, e: Entry, final_url: str, resp: Response, title: str, text: str) -> None:
        if self.summary.kept >= self.settings.max_pages:  # a late finisher past the limit
            return
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        record = {"url": e.url, "final_url": final_url, "status": resp.status, "depth": e.depth,
                  "parent": e.parent, "title": title, "fetched_at": _now(), "bytes": len(resp.body),
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
        name = url_hash(e.url) + ".txt"
        path = os.path.join(self.state.pages_dir, name)
        try:
            await asyncio.get_running_loop().run_in_executor(None, atomic_write_text, path, text + "\n")
        except OSError as exc:
            self._fatal = CrawlError(f"cannot write {path}: {exc.strerror or exc}")
            self._stop = True
            return
        record["file"] = "pages/" + name
        self.summary.written += 1
        self._logged(e, record)

    def _logged(self, e: Entry, record: dict) -> None:
        self.state.kept(record)
        self._record(e, "kept", final_url=record["final_url"])
        self._bar_update(1)

    # --- the crawl ----------------------------------------------------------------------------

    def _load(self) -> None:
        st = self.state
        done_urls = {r["url"] for r in st.done if "url" in r} | {r["url"] for r in st.manifest if "url" in r}
        self._seen = set(done_urls)
        for r in st.done + st.manifest:
            if r.get("final_url"):
                self._seen.add(r["final_url"])
        self._texts = {r["sha256"]: r["url"] for r in st.manifest if r.get("file") and "sha256" in r}
        self.summary.kept = len(st.manifest)
        self._levels: dict[int, list[Entry]] = collections.defaultdict(list)
        self._per_path: collections.Counter = collections.Counter()
        for e in st.frontier:
            if e.url in self._seen and e.url in done_urls:
                self._per_path[path_key(e.url)] += 1
                continue
            if e.url in self._seen:
                continue  # a duplicate frontier line
            self._seen.add(e.url)
            self._per_path[path_key(e.url)] += 1
            self._levels[e.depth].append(e)
        if not st.frontier:  # a fresh crawl
            first = Entry(self.start_url, 0, None)
            self._seen.add(first.url)
            self._per_path[path_key(first.url)] += 1
            st.queued(first)
            self._levels[0].append(first)
        self.summary.queued = sum(len(v) for v in self._levels.values())

    async def _host_worker(self, queue: collections.deque) -> None:
        while queue and not self._stop:
            e = queue.popleft()
            try:
                await self._visit(e)
            except (CrawlError, asyncio.CancelledError):
                raise
            except Exception as exc:  # noqa: BLE001 - one odd page must not end the crawl
                self._record(e, "error", f"internal: {type(exc).__name__}: {exc}")

    async def run(self) -> Summary:
        s = self.settings
        started = time.monotonic()
        self.state = _State(self.out_dir, self.start_url)
        from tqdm import tqdm

        self.bar = tqdm(total=s.max_pages, unit="page", desc="scrape", disable=None if s.progress else True,
                        dynamic_ncols=True, leave=True)
        self._global = asyncio.Semaphore(s.concurrency)
        self._cond = asyncio.Condition()
        self._inflight = 0
        self._stop = False
        self._writes: dict[str, asyncio.Future] = {}  # text sha256 -> its page write in flight
        self._fatal: CrawlError | None = None
        try:
            self._load()
            self.bar.update(min(self.summary.kept, s.max_pages))
            self._stop = self.summary.kept >= s.max_pages
            async with Fetcher(s.user_agent, s.timeout_s, s.max_bytes, s.concurrency) as self.fetcher:
                depth = min(self._levels, default=0)
                while not self._stop and any(self._levels.values()):
                    level = self._levels.pop(depth, [])
                    by_host: dict[str, collections.deque] = collections.defaultdict(collections.deque)
                    for e in level:  # group by host, keeping BFS order within each host
                        by_host[origin(e.url)].append(e)
                    workers = [self._host_worker(q) for q in by_host.values() for _ in range(min(s.per_host, len(q)))]
                    await asyncio.gather(*workers)
                    depth += 1
                if self._writes:
                    await asyncio.wait(list(self._writes.values()))
        finally:
            for task in list(self._writes.values()):  # interrupted: unlogged pages are refetched later
                task.cancel()
            self.summary.elapsed_s = time.monotonic() - started
            self.bar.close()
            self.state.close()
        if self._fatal is not None:
            raise self._fatal
        if self._start_failure and self.summary.kept == 0:
            raise CrawlError(f"the start URL {self.start_url} gave no page: {self._start_failure} "
                             "(check the URL and that the site is up)")
        return self.summary
