"""robots.txt, one parse per host, with Protego (wildcards, Allow/Disallow precedence and
Crawl-delay, which urllib.robotparser gets wrong or lacks).

RFC 9309 status rules, which decide what an unreadable robots.txt means:
- 2xx: parse it and obey it;
- 4xx (not found, forbidden ...): there are no rules, everything is allowed;
- 5xx or a network error: the site is unreachable, nothing is allowed.
Redirects are followed (up to 5 hops, RFC 9309 2.3.1.2) by the crawler's request function.
"""
from __future__ import annotations

from dataclasses import dataclass

from protego import Protego


@dataclass
class Robots:
    """What one host's robots.txt says for our user agent."""

    rules: Protego | None  # None with allow_all / disallow_all
    allow_all: bool = False
    disallow_all: bool = False
    reason: str = ""  # how we got here, for messages ("404", "network error: ...")

    def can_fetch(self, url: str, user_agent: str) -> bool:
        if self.allow_all:
            return True
        if self.disallow_all or self.rules is None:
            return False
        return self.rules.can_fetch(url, user_agent)

    def crawl_delay(self, user_agent: str) -> float:
        if self.rules is None:
            return 0.0
        delay = self.rules.crawl_delay(user_agent)
        return float(delay) if delay else 0.0

    @classmethod
    def from_status(cls, status: int | None, body: bytes | None, error: str = "") -> "Robots":
        """Build from the final response of a robots.txt fetch (status None: a network error)."""
        if status is None:
            return cls(None, disallow_all=True, reason=f"robots.txt unreachable ({error})")
        if 200 <= status < 300:
            text = (body or b"").decode("utf-8", "replace")
            return cls(Protego.parse(text), reason=f"robots.txt {status}")
        if 400 <= status < 500 and status != 429:
            return cls(None, allow_all=True, reason=f"robots.txt {status}: no rules")
        if 300 <= status < 400:  # more than 5 redirects: RFC 9309 says "unavailable", i.e. no rules
            return cls(None, allow_all=True, reason=f"robots.txt {status}: too many redirects")
        # 5xx, or 429 after our retries: the site is unreachable, nothing is allowed
        return cls(None, disallow_all=True, reason=f"robots.txt {status}: site unavailable")
