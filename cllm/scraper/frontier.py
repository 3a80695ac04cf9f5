"""The crawl frontier: the URLs still to visit, by depth (breadth-first), and every URL ever seen.

A link found on a page is queued once, when it is new, in scope, short enough, not a file type
that is never a page (an image, an archive ...) and its path has not reached the crawler-trap
limit (`max_per_path` URLs differing only in their query). On resume the frontier is rebuilt from
the output folder's logs (cllm/scraper/output.py): what is done stays done, the rest is requeued.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from urllib.parse import urlsplit

from cllm.scraper.settings import CrawlSettings
from cllm.scraper.urls import host_of, in_scope, path_key


@dataclass
class Entry:
    """A queued URL: canonical url, clicks from the start URL, and the page that linked to it."""

    url: str
    depth: int
    parent: str | None = None


# Links whose path ends in one of these are not even requested (as Scrapy's IGNORED_EXTENSIONS):
# they are not pages. "pdf" is let through with include_pdf. A URL without such an extension is
# still checked by its Content-Type.
NOT_PAGE_EXTENSIONS = frozenset((
    "7z", "apk", "avi", "bin", "bmp", "bz2", "css", "csv", "deb", "dmg", "doc", "docx", "eot", "exe",
    "flac", "gif", "gz", "ico", "iso", "jar", "jpeg", "jpg", "js", "json", "m4a", "m4v", "mkv", "mov",
    "mp3", "mp4", "mpeg", "mpg", "msi", "ogg", "otf", "pdf", "png", "ppt", "pptx", "ps", "rar", "rpm",
    "svg", "tar", "tgz", "tif", "tiff", "ttf", "wav", "webm", "webp", "woff", "woff2", "xls", "xlsx",
    "xml", "xz", "zip",
))


def _extension(url: str) -> str:
    """'jpg' for http://host/a/photo.JPG?x=1; '' when the last path segment has no dot."""
    last = urlsplit(url).path.rsplit("/", 1)[-1]
    return last.rsplit(".", 1)[-1].lower() if "." in last else ""


class Frontier:
    """URLs queued by depth, the set of URLs seen (queued, visited or reached by a redirect), and
    the per-path counter of the crawler-trap guard."""

    def __init__(self, settings: CrawlSettings, start_url: str):
        self.settings = settings
        self.start_url = start_url
        self.start_host = host_of(start_url)
        self.seen: set[str] = set()
        self.levels: dict[int, list[Entry]] = collections.defaultdict(list)
        self.per_path: collections.Counter = collections.Counter()
        self.domains = settings.domains
        self.skip_ext = NOT_PAGE_EXTENSIONS - {"pdf"} if settings.include_pdf else NOT_PAGE_EXTENSIONS

    def in_scope(self, url: str) -> bool:
        return in_scope(url, self.start_host, self.domains, self.settings.follow_external)

    def queued(self) -> int:
        return sum(len(v) for v in self.levels.values())

    def next_level(self) -> list[Entry]:
        """The queued URLs of the smallest depth, taken out of the queue ([] when none is left)."""
        depths = [d for d, entries in self.levels.items() if entries]
        return self.levels.pop(min(depths)) if depths else []

    def restore(self, output) -> None:
        """Rebuild from an output folder's logs (a CrawlOutput); a fresh crawl queues the start URL."""
        done_urls = {r["url"] for r in output.done if "url" in r} | {r["url"] for r in output.manifest if "url" in r}
        self.seen = set(done_urls)
        for r in output.done + output.manifest:
            if r.get("final_url"):
                self.seen.add(r["final_url"])
        for e in output.frontier:
            if e.url in self.seen and e.url in done_urls:
                self.per_path[path_key(e.url)] += 1
                continue
            if e.url in self.seen:
                continue  # a duplicate frontier line
            self.seen.add(e.url)
            self.per_path[path_key(e.url)] += 1
            self.levels[e.depth].append(e)
        if not output.frontier:  # a fresh crawl
            first = Entry(self.start_url, 0, None)
            self.seen.add(first.url)
            self.per_path[path_key(first.url)] += 1
            output.queued(first)
            self.levels[0].append(first)

    def add_links(self, parent: Entry, links: list[str], log) -> int:
        """Queue the links of `parent` that qualify, logging each with log(entry); returns how many."""
        s = self.settings
        if parent.depth >= s.max_depth:
            return 0
        added = 0
        for link in links:
            if link in self.seen or len(link) > s.max_url_length:
                continue
            if not self.in_scope(link):
                continue
            if _extension(link) in self.skip_ext:
                continue  # an image, archive, stylesheet ...: not worth a request
            key = path_key(link)
            if self.per_path[key] >= s.max_per_path:
                continue  # a calendar or search trap: enough variants of this path
            self.per_path[key] += 1
            self.seen.add(link)
            child = Entry(link, parent.depth + 1, parent.url)
            log(child)
            self.levels[child.depth].append(child)
            added += 1
        return added
