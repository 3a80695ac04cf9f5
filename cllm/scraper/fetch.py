"""One HTTP GET, done carefully: no automatic redirects, a size cap on decompressed bytes while
streaming, connect/read timeouts, and the parsing of Retry-After.

Retries, per-host pacing and redirect policy live in the crawler, which knows about hosts,
robots.txt and the set of URLs already seen; this module only talks HTTP.
"""
from __future__ import annotations

import asyncio
import email.utils
import time
import zlib
from dataclasses import dataclass, field

import aiohttp

HTML_TYPES = ("text/html", "application/xhtml+xml")
PDF_TYPES = ("application/pdf",)


class FetchError(Exception):
    """A request that produced no usable response. `kind` names the cause for the log and the
    retry policy: timeout, network, too_large, bad_encoding."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind

    @property
    def retryable(self) -> bool:
        return self.kind in ("timeout", "network")


@dataclass
class Response:
    url: str
    status: int
    headers: dict = field(default_factory=dict)  # lower-case names
    content_type: str = ""  # mime type only, lower-case
    charset: str | None = None
    body: bytes | None = None  # None when not read (redirect, error status, unwanted type)
    location: str | None = None  # raw Location header of a redirect
    skipped: str | None = None  # why the body was not read although the status was 200

    @property
    def is_redirect(self) -> bool:
        return self.status in (301, 302, 303, 307, 308) and bool(self.location)


class _Decoder:
    """Content-Encoding decoding with a hard limit on the output, chunk by chunk.

    zlib's max_length bounds what one call may produce, so a small compressed chunk that would
    expand to gigabytes never does: we stop as soon as the decoded size passes the cap.
    """

    def __init__(self, encoding: str):
        self.encoding = encoding
        if encoding in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._z = zlib.decompressobj(zlib.MAX_WBITS)  # zlib-wrapped; raw deflate is tried below
            self._first = True
        elif encoding in ("", "identity"):
            self._z = None
        else:
            raise FetchError("bad_encoding", f"unsupported Content-Encoding {encoding!r}")

    def feed(self, data: bytes, limit: int) -> bytes:
        """Decode `data`, producing at most `limit` bytes (one more signals 'over the cap')."""
        if self._z is None:
            return data[: limit + 1]
        try:
            out = self._z.decompress(data, limit + 1)
        except zlib.error as exc:
            if self.encoding == "deflate" and getattr(self, "_first", False):
                self._z = zlib.decompressobj(-zlib.MAX_WBITS)  # servers that send raw deflate
                self._first = False
                return self.feed(data, limit)
            raise FetchError("bad_encoding", f"corrupt {self.encoding} body: {exc}") from None
        self._first = False
        return out


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None if absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _sniff_html(head: bytes) -> bool:
    head = head[:1024].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<meta", b"<title", b"\xef\xbb\xbf<"))


class Fetcher:
    """An aiohttp session configured for polite crawling. Use as an async context manager."""

    def __init__(self, user_agent: str, timeout_s: float, max_bytes: int, concurrency: int):
        self.user_agent = user_agent
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.concurrency = concurrency
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "Fetcher":
        timeout = aiohttp.ClientTimeout(total=4 * self.timeout_s, sock_connect=self.timeout_s,
                                        sock_read=self.timeout_s)
        self.session = aiohttp.ClientSession(
            timeout=timeout,
            # we decode Content-Encoding ourselves, with a cap on the decoded size
            auto_decompress=False,
            connector=aiohttp.TCPConnector(limit=self.concurrency * 2, ttl_dns_cache=300),
            headers={"User-Agent": self.user_agent, "Accept-Encoding": "gzip, deflate",
                     "Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.5"},
            trust_env=False,  # never route a crawl through a proxy picked up from the environment
        )
        return self

    async def __aexit__(self, *exc) -> None:
        if self.session is not None:
            await self.session.close()

    async def get(self, url: str, accept: tuple[str, ...] | None, max_bytes: int | None = None,
                  truncate: bool = False) -> Response:
        """GET `url` once. The body is read only for a 200 whose type is in `accept` (None: any
        type). Over `max_bytes` (decoded): FetchError('too_large'), or with `truncate` the first
        max_bytes are kept (robots.txt)."""
        cap = self.max_bytes if max_bytes is None else max_bytes
        assert self.session is not None, "use `async with Fetcher(...)`"
        try:
            async with self.session.get(url, allow_redirects=False) as resp:
                headers = {k.lower(): v for k, v in resp.headers.items()}
                out = Response(url=url, status=resp.status, headers=headers,
                               content_type=resp.content_type.lower() if "content-type" in headers else "",
                               charset=resp.charset, location=headers.get("location"))
                if resp.status != 200:
                    return out  # redirects, errors, 429: the headers are all we need
                if accept is not None and out.content_type and out.content_type not in accept:
                    out.skipped = f"content-type {out.content_type}"
                    resp.close()  # drop the connection rather than download an unwanted body
                    return out
                length = resp.content_length
                if length is not None and length > cap and not truncate:
                    resp.close()
                    raise FetchError("too_large", f"Content-Length {length} > {cap} bytes")
                decoder = _Decoder(headers.get("content-encoding", "").strip().lower())
                chunks, total = [], 0
                async for chunk in resp.content.iter_chunked(65536):
                    data = decoder.feed(chunk, cap - total)
                    total += len(data)
                    if total > cap:
                        if truncate:
                            chunks.append(data[: len(data) - (total - cap)])
                            break
                        resp.close()
                        raise FetchError("too_large", f"more than {cap} bytes after decoding")
                    chunks.append(data)
                out.body = b"".join(chunks)
                if accept is not None and not out.content_type and not _sniff_html(out.body):
                    out.skipped, out.body = "no content-type and not HTML", None
                return out
        except asyncio.TimeoutError:
            raise FetchError("timeout", f"no answer within {self.timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            raise FetchError("network", str(exc) or type(exc).__name__) from None
