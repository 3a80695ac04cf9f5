"""What a crawl reports: the Summary counters (its last line) and the progress bar showing them."""
from __future__ import annotations

import collections
from dataclasses import dataclass, field

from tqdm import tqdm


@dataclass
class Summary:
    kept: int = 0  # pages written + exact duplicates recognised (what max_pages counts)
    written: int = 0
    duplicates: int = 0
    short: int = 0  # fetched HTML whose main text was under min_chars
    skipped: int = 0  # robots, scope, content type, redirect to a seen URL ...
    errors: int = 0  # HTTP errors, timeouts, too large, network
    retries: int = 0
    queued: int = 0  # still waiting in the frontier
    elapsed_s: float = 0.0
    out_dir: str = ""
    reasons: collections.Counter = field(default_factory=collections.Counter)

    def line(self) -> str:
        new = self.written + self.duplicates
        rate = new / self.elapsed_s if self.elapsed_s > 0 else 0.0
        top = ", ".join(f"{k} {v}" for k, v in self.reasons.most_common(4))
        before = f", {self.kept - new} from earlier runs" if self.kept > new else ""
        return (f"scrape: kept {self.kept} pages ({self.written} written, {self.duplicates} duplicates{before}) in "
                f"{self.elapsed_s:.1f} s ({rate:.2f} pages/s); {self.short} too short, {self.skipped} skipped, "
                f"{self.errors} errors, {self.retries} retries, {self.queued} still queued"
                + (f" [{top}]" if top else "") + f" -> {self.out_dir}")


class ProgressBar:
    """A tqdm bar of pages kept, with the queued, skipped and error counts beside it; shown on
    stderr only when it is a terminal (tqdm's disable=None) and `show` is on."""

    def __init__(self, summary: Summary, max_pages: int, show: bool):
        self.summary = summary
        self.bar = tqdm(total=max_pages, unit="page", desc="scrape", disable=None if show else True,
                        dynamic_ncols=True, leave=True)

    def update(self, kept: int = 0) -> None:
        s = self.summary
        self.bar.update(kept)
        self.bar.set_postfix(queued=s.queued, skipped=s.skipped + s.short, errors=s.errors, refresh=False)

    def close(self) -> None:
        self.bar.close()
