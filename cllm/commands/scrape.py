"""`python cli.py scrape START_URL OUT_DIR [MAX_PAGES MAX_DEPTH DELAY_MS] [--flags]`

Crawl a site politely (robots.txt, per-host delay with jitter, retries that honour Retry-After)
breadth-first, and write the main text of each HTML page to OUT_DIR/pages/*.txt with a
manifest.jsonl beside it: a corpus that `python cli.py prepare OUT_DIR` reads as it is.
Interrupt it any time; the same command again resumes where it stopped.
The flags are CrawlSettings' fields (cllm/scraper/settings.py), each with its default and meaning there.
"""
from __future__ import annotations

import asyncio
import sys

from cllm.errors import MissingDependencyError
from cllm.scraper.crawler import Crawler
from cllm.scraper.settings import CrawlSettings

OPTIONS = CrawlSettings  # the flags (the name run_command looks for)


def main(start_url: str, out_dir: str, max_pages: int = CrawlSettings.max_pages,
         max_depth: int = CrawlSettings.max_depth, delay_ms: int = CrawlSettings.delay_ms, **flags):
    """Crawl START_URL breadth-first into OUT_DIR (pages/*.txt + manifest.jsonl).

    Args:
        start_url: where the crawl starts (http or https)
        out_dir: output folder; an existing crawl there is resumed
        max_pages: stop after this many pages are kept (pages kept by earlier runs count)
        max_depth: follow links up to this many clicks from the start URL
        delay_ms: pause between two requests to one host, ms (robots.txt Crawl-delay wins if larger)
    """
    settings = CrawlSettings(max_pages=max_pages, max_depth=max_depth, delay_ms=delay_ms, **flags)
    if settings.include_pdf:
        try:
            import pypdf  # noqa: F401, PLC0415  (optional: the [pdf] extra; only checked to be there)
        except ImportError:
            raise MissingDependencyError("--include-pdf needs pypdf: pip install -e '.[pdf]'") from None
    if settings.ignore_robots:
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
