"""Every politeness and limit knob of the crawler, named and documented (as Scrapy's settings are).

Each field is also a flag of `python cli.py scrape` with the same name (dashes for underscores),
this default and this help line (cllm/commands/scrape.py names this class as its OPTIONS; the
parser is cllm/commands/__init__.py). From Python:

    from cllm.scraper.settings import CrawlSettings
    settings = CrawlSettings(max_pages=50, delay_ms=500)
"""
from __future__ import annotations

from dataclasses import dataclass

import cllm
from cllm.config import option
from cllm.errors import CrawlError

DEFAULT_USER_AGENT = f"CLLM-crawler/{cllm.__version__} (+https://github.com/cllm-project/cllm)"


@dataclass
class CrawlSettings:
    # --- limits -------------------------------------------------------------------------------
    max_pages: int = option(100, "stop after this many pages are kept (pages kept by earlier runs into OUT_DIR count)")
    # Kept = written, or recognised as an exact duplicate of a page written: rerun with a larger
    # value to extend a crawl.
    max_depth: int = option(2, "follow links up to this many clicks from the start URL (which is depth 0)")
    max_bytes: int = option(10_000_000, "largest page accepted, in bytes after decompression")
    # Counted while streaming (a gzip bomb stops here) and checked against Content-Length before
    # any byte is read.
    min_chars: int = option(200, "pages with less main text than this many characters are not written "
                                 "(their links are still followed)")
    max_per_path: int = option(1000, "crawler-trap guard: URLs queued per scheme+host+path that differ only in "
                                     "their query string")
    # A calendar's ?month=, a search's ?page=: endless variants of one path.
    max_url_length: int = option(2048, "longer URLs (characters) are ignored: session ids or traps")

    # --- politeness ---------------------------------------------------------------------------
    delay_ms: int = option(1000, "pause between two requests to one host, ms (robots.txt Crawl-delay wins "
                                 "if larger)")
    jitter_ms: int = option(500, "random extra pause in [0, jitter_ms] ms added to each delay")
    # so that the requests of several hosts or crawlers are not in lockstep
    concurrency: int = option(8, "requests in flight over all hosts")
    per_host: int = option(1, "requests in flight to one host (scheme, host and port)")
    ignore_robots: bool = option(False, "do not fetch or obey robots.txt (a warning is printed)")
    # Obeyed (the default): robots.txt is fetched once per host before anything else there and
    # parsed with Protego; RFC 9309: a 4xx robots.txt allows everything, a 5xx or network error
    # disallows everything.
    user_agent: str = option(DEFAULT_USER_AGENT, "User-Agent of every request, also matched against robots.txt groups")
    # An honest name, the version and where to read about the crawler. (The help line's length
    # makes --help wrap before the default, not at the hyphen inside it.)
    robots_max_bytes: int = option(512_000, "robots.txt is read up to this many bytes and the rest ignored")
    # RFC 9309 asks crawlers to read at least 500 KiB.

    # --- scope --------------------------------------------------------------------------------
    follow_external: bool = option(False, "follow links to any host (off: stay on the start URL's host and its "
                                          "www. twin)")
    allow_domains: str = option("", "comma-separated extra domains in scope, with their subdomains")
    # parsed once, by the `domains` property below
    include_pdf: bool = option(False, "also keep PDF documents' text (needs pypdf: pip install -e '.[pdf]')")
    # Otherwise only HTML is kept; other content types are skipped as soon as the response headers
    # arrive, and links to files that are never pages are not even requested (frontier.py's
    # NOT_PAGE_EXTENSIONS).

    # --- network ------------------------------------------------------------------------------
    timeout: float = option(30.0, "seconds for connecting and between two reads (a whole response gets 4x)")
    retries: int = option(3, "extra attempts after a 429, a 5xx, a timeout or a network error")
    retry_backoff_s: float = option(1.0, "seconds before the first retry, doubled each time (plus jitter)")
    max_backoff_s: float = option(60.0, "longest pause between two retries, seconds")
    max_retry_after_s: float = option(120.0, "a server's Retry-After is honoured up to this many seconds")
    # Retry-After may be seconds or an HTTP date; the pause holds every request to that host, not
    # only the URL that got the 429/503.
    max_redirects: int = option(5, "redirect hops followed per URL")
    # each target is re-checked against scope, robots.txt and the URLs already seen

    # --- output -------------------------------------------------------------------------------
    progress: bool = option(True, "show a progress bar on stderr when it is a terminal")
    # pages kept, queued, skipped, errors and rate; never in logs or pipes

    @property
    def domains(self) -> tuple[str, ...]:
        """allow_domains as a tuple: lower-case, without a leading dot ("A.org, .b.org" -> a.org, b.org)."""
        return tuple(d.strip().lower().lstrip(".") for d in self.allow_domains.split(",") if d.strip())

    def __post_init__(self) -> None:
        checks = [
            ("max_pages", self.max_pages >= 1), ("max_depth", self.max_depth >= 0),
            ("max_bytes", self.max_bytes >= 1024), ("min_chars", self.min_chars >= 0),
            ("delay_ms", self.delay_ms >= 0), ("jitter_ms", self.jitter_ms >= 0),
            ("concurrency", self.concurrency >= 1), ("per_host", self.per_host >= 1),
            ("timeout", self.timeout > 0), ("retries", self.retries >= 0),
            ("max_redirects", self.max_redirects >= 0), ("max_per_path", self.max_per_path >= 1),
            ("max_url_length", self.max_url_length >= 1), ("robots_max_bytes", self.robots_max_bytes >= 1),
            ("retry_backoff_s", self.retry_backoff_s >= 0), ("max_backoff_s", self.max_backoff_s >= 0),
            ("max_retry_after_s", self.max_retry_after_s >= 0),
        ]
        for name, ok in checks:
            if not ok:
                raise CrawlError(f"--{name.replace('_', '-')} has an impossible value ({getattr(self, name)!r}); "
                                 "see `python cli.py scrape --help`")
        if not self.user_agent.strip():
            raise CrawlError("--user-agent must not be empty")
