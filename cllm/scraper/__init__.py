"""The web crawler and the HTML main-text extractor.

    extract.py    bytes of an HTML page -> Extracted(title, text): charset, boilerplate removal
    urls.py       URL canonicalization, scope, link extraction and safe output names
    settings.py   CrawlSettings: every politeness knob, named and documented (Scrapy-style)
    robots.py     robots.txt per host with Protego (RFC 9309 status rules)
    fetch.py      one HTTP GET: size caps while streaming, timeouts, Retry-After parsing
    polite.py     the fetch-and-retry policy: per-host pacing, robots.txt per host, backoff
    frontier.py   the breadth-first queue, the URLs seen, scope and crawler-trap rules
    page.py       one fetched page -> title, main text, links, robots <meta>
    output.py     OUT_DIR: page files, manifest.jsonl and the resume logs
    progress.py   the Summary counters and the progress bar
    crawler.py    the crawl loop: depth by depth, hosts in parallel, the fate of each URL

Only `extract` is imported eagerly-cheap (lxml); the crawler modules import aiohttp.
"""
from cllm.scraper.extract import Extracted, decode_html, extract_html

__all__ = ["Extracted", "decode_html", "extract_html"]
