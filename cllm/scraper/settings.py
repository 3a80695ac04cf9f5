"""Every politeness and limit knob of the crawler, named and documented (as Scrapy's settings are).

The command line (`python cli.py scrape --help`) exposes most of them as flags of the same name;
the others keep their documented defaults and can be set from Python:

    from cllm.scraper.settings import CrawlSettings
    settings = CrawlSettings(max_pages=50, delay_ms=500)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cllm

DEFAULT_USER_AGENT = f"CLLM-crawler/{cllm.__version__} (+https://github.com/cllm-project/cllm)"


@dataclass
class CrawlSettings:
    # --- limits -------------------------------------------------------------------------------
    max_pages: int = 100
    """Stop after this many pages are kept (written, or recognised as exact duplicates), counting
    the pages kept by earlier runs into the same OUT_DIR: rerun with a larger value to extend."""

    max_depth: int = 2
    """Links are followed up to this many clicks from the start URL (the start URL is depth 0)."""

    max_bytes: int = 10_000_000
    """Largest page body accepted, counted after decompression while streaming (a gzip bomb
    stops here) and checked against Content-Length before any byte is read."""

    min_chars: int = 200
    """Pages whose main text is shorter are not written (their links are still followed)."""

    max_per_path: int = 1000
    """Crawler-trap guard: at most this many URLs that differ only in their query string
    (a calendar's ?month=, a search's ?page=) are queued for one scheme+host+path."""

    max_url_length: int = 2048
    """Longer URLs are ignored: they are almost always session ids or traps."""

    # --- politeness ---------------------------------------------------------------------------
    delay_ms: int = 1000
    """Pause between two requests to the same host. robots.txt's Crawl-delay wins when larger."""

    jitter_ms: int = 500
    """A random extra pause in [0, jitter_ms] added to every delay, so requests are not in lockstep."""

    concurrency: int = 8
    """Requests in flight at once over all hosts."""

    per_host: int = 1
    """Requests in flight at once to one host (scheme, host and port)."""

    obey_robots: bool = True
    """Fetch robots.txt once per host before anything else there and obey it (Protego; RFC 9309:
    a 4xx robots.txt allows everything, a 5xx or network error disallows everything)."""

    user_agent: str = DEFAULT_USER_AGENT
    """Sent with every request and matched against robots.txt groups: an honest name, the
    version and where to read about the crawler."""

    robots_max_bytes: int = 512_000
    """robots.txt is read up to this size (RFC 9309 asks for at least 500 KiB) and the rest ignored."""

    # --- scope --------------------------------------------------------------------------------
    follow_external: bool = False
    """Follow links to any host. Off: stay on the start URL's host (and its www. twin)."""

    allow_domains: tuple[str, ...] = field(default_factory=tuple)
    """Extra domains whose hosts (and their subdomains) are in scope besides the start host."""

    skip_extensions: tuple[str, ...] = (
        "7z", "apk", "avi", "bin", "bmp", "bz2", "css", "csv", "deb", "dmg", "doc", "docx", "eot", "exe",
        "flac", "gif", "gz", "ico", "iso", "jar", "jpeg", "jpg", "js", "json", "m4a", "m4v", "mkv", "mov",
        "mp3", "mp4", "mpeg", "mpg", "msi", "ogg", "otf", "pdf", "png", "ppt", "pptx", "ps", "rar", "rpm",
        "svg", "tar", "tgz", "tif", "tiff", "ttf", "wav", "webm", "webp", "woff", "woff2", "xls", "xlsx",
        "xml", "xz", "zip",
    )
    """Links whose path ends in one of these extensions are not even requested (as Scrapy's
    IGNORED_EXTENSIONS): they are not pages. "pdf" is let through with include_pdf. A URL without
    such an extension is still checked by its Content-Type."""

    include_pdf: bool = False
    """Also keep PDF documents (their text, via pypdf). Otherwise only HTML is kept; other
    content types are skipped as soon as the response headers arrive."""

    # --- network ------------------------------------------------------------------------------
    timeout_s: float = 30.0
    """Seconds to wait for a connection, and between two reads of a response; a whole response
    gets four times this."""

    retries: int = 3
    """Extra attempts after a 429, a 5xx, a timeout or a network error."""

    retry_backoff_s: float = 1.0
    """First retry waits this long, then twice as long each time (plus jitter): exponential backoff."""

    max_backoff_s: float = 60.0
    """Upper bound of one backoff pause."""

    max_retry_after_s: float = 120.0
    """A server's Retry-After (seconds or an HTTP date) is honoured up to this many seconds. The
    pause holds every request to that host, not only the URL that got the 429/503."""

    max_redirects: int = 5
    """Redirect hops followed per URL; each target is re-checked against scope, robots and the
    set of URLs already seen."""

    # --- output -------------------------------------------------------------------------------
    progress: bool = True
    """Show a tqdm progress bar (pages kept, queued, skipped, errors, rate) on stderr when it is a
    terminal (never in logs or pipes)."""

    def __post_init__(self) -> None:
        from cllm.errors import CrawlError

        if isinstance(self.allow_domains, str):
            self.allow_domains = tuple(d for d in self.allow_domains.split(",") if d.strip())
        self.allow_domains = tuple(d.strip().lower().lstrip(".") for d in self.allow_domains if d and d.strip())
        checks = [
            ("max_pages", self.max_pages >= 1), ("max_depth", self.max_depth >= 0),
            ("max_bytes", self.max_bytes >= 1024), ("min_chars", self.min_chars >= 0),
            ("delay_ms", self.delay_ms >= 0), ("jitter_ms", self.jitter_ms >= 0),
            ("concurrency", self.concurrency >= 1), ("per_host", self.per_host >= 1),
            ("timeout", self.timeout_s > 0), ("retries", self.retries >= 0),
            ("max_redirects", self.max_redirects >= 0), ("max_per_path", self.max_per_path >= 1),
        ]
        for name, ok in checks:
            if not ok:
                raise CrawlError(f"--{name.replace('_', '-').removesuffix('-s')} has an impossible value; "
                                 "see `python cli.py scrape --help`")
        if not self.user_agent.strip():
            raise CrawlError("--user-agent must not be empty")
