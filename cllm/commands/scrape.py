"""`python cli.py scrape START_URL OUT_DIR [MAX_PAGES MAX_DEPTH DELAY_MS] [--flags]`

Crawl a site politely (robots.txt, per-host delay with jitter, retries that honour Retry-After)
breadth-first, and write the main text of each HTML page to OUT_DIR/pages/*.txt with a
manifest.jsonl beside it: a corpus that `python cli.py prepare OUT_DIR` reads as it is.
Interrupt it any time; the same command again resumes where it stopped.
The flags' meanings and defaults are documented on cllm.scraper.settings.CrawlSettings.
"""
from __future__ import annotations

import sys


def _as_domains(value) -> tuple[str, ...]:
    if value in (None, "", False):
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    return tuple(str(value).split(","))


def main(start_url: str, out_dir: str, max_pages: int = 100, max_depth: int = 2, delay_ms: int = 1000,
         jitter_ms: int = 500, concurrency: int = 8, per_host: int = 1, allow_domains: str = "",
         follow_external: bool = False, user_agent: str | None = None, timeout: float = 30.0,
         max_bytes: int = 10_000_000, retries: int = 3, min_chars: int = 200, include_pdf: bool = False,
         ignore_robots: bool = False, progress: bool = True):
    """Crawl START_URL breadth-first into OUT_DIR (pages/*.txt + manifest.jsonl).

    Args:
        start_url: where the crawl starts (http or https).
        out_dir: output folder; an existing crawl there is resumed.
        max_pages: stop after this many pages are kept.
        max_depth: follow links up to this many clicks from the start URL.
        delay_ms: pause between two requests to one host (robots.txt Crawl-delay wins if larger).
        jitter_ms: random extra pause in [0, jitter_ms] added to each delay.
        concurrency: requests in flight over all hosts.
        per_host: requests in flight to one host.
        allow_domains: comma-separated extra domains in scope (with their subdomains).
        follow_external: follow links to any host (default: stay on the start host).
        user_agent: User-Agent for requests and robots.txt (default: an honest CLLM-crawler one).
        timeout: seconds for connecting and between reads (a whole response gets 4x).
        max_bytes: largest page accepted, after decompression (default 10 MB).
        retries: extra attempts on 429, 5xx, timeouts and network errors (exponential backoff).
        min_chars: pages with less main text than this are not written.
        include_pdf: also keep PDF documents' text (needs pypdf: pip install -e '.[pdf]').
        ignore_robots: do not fetch or obey robots.txt (a warning is printed).
        progress: show the progress bar.
    """
    import asyncio

    from cllm.errors import CrawlError, MissingDependencyError
    from cllm.scraper.crawler import Crawler
    from cllm.scraper.settings import DEFAULT_USER_AGENT, CrawlSettings

    def number(name, value, kind):
        try:
            if isinstance(value, bool):
                raise ValueError
            return kind(value)
        except (TypeError, ValueError):
            raise CrawlError(f"--{name.replace('_', '-')} must be a number, got {value!r}") from None

    if include_pdf:
        try:
            import pypdf  # noqa: F401
        except ImportError:
            raise MissingDependencyError("--include-pdf needs pypdf: pip install -e '.[pdf]'") from None
    settings = CrawlSettings(
        max_pages=number("max_pages", max_pages, int), max_depth=number("max_depth", max_depth, int),
        delay_ms=number("delay_ms", delay_ms, int), jitter_ms=number("jitter_ms", jitter_ms, int),
        concurrency=number("concurrency", concurrency, int), per_host=number("per_host", per_host, int),
        allow_domains=_as_domains(allow_domains), follow_external=bool(follow_external),
        user_agent=str(user_agent) if user_agent else DEFAULT_USER_AGENT,
        timeout_s=number("timeout", timeout, float), max_bytes=number("max_bytes", max_bytes, int),
        retries=number("retries", retries, int), min_chars=number("min_chars", min_chars, int),
        include_pdf=bool(include_pdf), obey_robots=not ignore_robots, progress=bool(progress),
    )
    if ignore_robots:
        sys.stderr.write("warning: --ignore-robots: robots.txt is neither fetched nor obeyed; "
                         "crawl only sites whose owners agree to it\n")
    crawler = Crawler(str(start_url), str(out_dir), settings)
    try:
        summary = asyncio.run(crawler.run())
    except KeyboardInterrupt:
        sys.stderr.write(f"\nscrape interrupted; run the same command again to resume into {out_dir}\n")
        raise
    print(summary.line())
    return None
