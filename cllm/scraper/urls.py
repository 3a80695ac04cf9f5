"""URLs: canonical form for dedup, scope, links found in a page, and safe output names.

Two URLs that name the same resource must compare equal after `canonicalize`, so that each page
is queued and fetched once: scheme and host lower-cased, IDN hosts in punycode, default port
removed, user:password dropped, `.` and `..` segments resolved, percent-escapes normalised,
query arguments sorted, fragment dropped.
"""
from __future__ import annotations

import hashlib
import re
import string
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Characters left as they are in a path (RFC 3986 pchar plus "/"); everything else is %-escaped.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"
# The WHATWG URL parser strips ASCII tab and newlines anywhere in an href.
_TAB_NEWLINE = re.compile(r"[\t\n\r]")


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4: /a/./b/../c -> /a/c (never above the root)."""
    out: list[str] = []
    segments = path.split("/")
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == ".":
            if last:
                out.append("")
        elif seg == "..":
            if len(out) > 1:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(seg)
    result = "/".join(out)
    return result if result.startswith("/") else "/" + result


_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")


def _norm_escapes(part: str, safe: str) -> str:
    """RFC 3986 6.2.2 normalisation: %7e -> ~ (unreserved characters decoded), other escapes
    upper-cased but kept (a decoded %2F or %26 would change the URL's meaning), and spaces,
    non-ASCII (as UTF-8) and other unsafe characters escaped."""
    def fix(m: re.Match) -> str:
        ch = chr(int(m.group(1), 16))
        return ch if ch in _UNRESERVED else "%" + m.group(1).upper()

    part = _ESCAPE.sub(fix, _STRAY_PERCENT.sub("%25", part))
    return quote(part, safe=safe + "%")


def canonicalize(url: str, base: str | None = None) -> str | None:
    """The canonical absolute form of `url` (resolved against `base`), or None when it is not an
    http(s) URL we can fetch."""
    url = _TAB_NEWLINE.sub("", url or "").strip()
    if not url:
        return None
    try:
        if base:
            url = urljoin(base, url)
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            return None
        host = (parts.hostname or "").rstrip(".")
        if not host:
            return None
        try:
            host = host.encode("idna").decode("ascii").lower() if not host.isascii() else host.lower()
        except UnicodeError:
            return None
        port = parts.port  # raises ValueError on a bad port
    except ValueError:
        return None
    if ":" in host:  # an IPv6 literal needs its brackets back
        host = f"[{host}]"
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    path = _remove_dot_segments(_norm_escapes(parts.path or "/", _PATH_SAFE))
    query = ""
    if parts.query:
        # sorted as they are written: "a" and "a=" or "+" and "%20" may mean different things
        query = "&".join(sorted(_norm_escapes(arg, _QUERY_SAFE) for arg in parts.query.split("&") if arg))
    return urlunsplit((scheme, netloc, path, query, ""))


def origin(url: str) -> str:
    """scheme://host[:port]: the unit of robots.txt and of per-host politeness."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def path_key(url: str) -> str:
    """scheme+host+path without the query: the crawler-trap guard counts URLs per path."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _bare(host: str) -> str:
    return host[4:] if host.startswith("www.") else host


def in_scope(url: str, start_host: str, allow_domains: tuple[str, ...] = (), follow_external: bool = False) -> bool:
    """Whether the crawl may go to `url`: any host with follow_external; else the start host
    (www. or not), and hosts equal to or under one of allow_domains."""
    if follow_external:
        return True
    host = host_of(url)
    if _bare(host) == _bare(start_host):
        return True
    return any(host == d or host.endswith("." + d) for d in allow_domains)


def url_hash(url: str) -> str:
    """Output file stem of a page: 32 hex digits of SHA-256 of its canonical URL. Nothing of the
    URL itself reaches the file system, so no URL can write outside OUT_DIR/pages."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]


def extract_links(doc, page_url: str) -> tuple[list[str], bool]:
    """Canonical http(s) links of a parsed page, in document order without repeats, and whether
    the page asks robots not to follow its links (<meta name=robots content=nofollow>).

    Relative and root-relative links resolve against <base href> when the page has one (itself
    resolved against the page URL), else against the page URL. rel=nofollow links are left out.
    """
    base = page_url
    for b in doc.iter("base"):
        href = b.get("href")
        if href and href.strip():
            base = urljoin(page_url, _TAB_NEWLINE.sub("", href).strip())
            break
    nofollow_page = bool({"nofollow", "none"} & page_meta_robots(doc))
    links: list[str] = []
    seen: set[str] = set()
    for el in doc.iter("a", "area"):
        href = el.get("href")
        if not href or "nofollow" in (el.get("rel") or "").lower().split():
            continue
        canon = canonicalize(href, base)
        if canon and canon not in seen:
            seen.add(canon)
            links.append(canon)
    return links, nofollow_page


def page_meta_robots(doc) -> set[str]:
    """The directives of <meta name=robots> (noindex, nofollow, none ...), lower-cased."""
    found: set[str] = set()
    for meta in doc.iter("meta"):
        if (meta.get("name") or "").lower() == "robots":
            found.update(d.strip() for d in (meta.get("content") or "").lower().split(","))
    return found
