"""The web crawler and the HTML main-text extractor.

    extract.py    bytes of an HTML page -> Extracted(title, text): charset, boilerplate removal
    urls.py       URL canonicalization, scope, link extraction and safe output names
    settings.py   CrawlSettings: every politeness knob, named and documented (Scrapy-style)
    robots.py     robots.txt per host with Protego (RFC 9309 status rules)
    fetch.py      one polite HTTP GET: size caps while streaming, timeouts, retries, Retry-After
    crawler.py    the breadth-first crawl: frontier, per-host pacing, output and resume state

Only `extract` is imported eagerly-cheap (lxml); the crawler modules import aiohttp.
"""
from cllm.scraper.extract import Extracted, decode_html, extract_html

__all__ = ["Extracted", "decode_html", "extract_html"]
