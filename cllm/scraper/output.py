"""A crawl's output folder: the page files, the manifest and the resume logs.

    OUT_DIR/pages/<32 hex digits of SHA-256 of the canonical URL>.txt   the main text, nothing else
    OUT_DIR/manifest.jsonl                                              one JSON line per kept page
    OUT_DIR/.crawl/state.json, frontier.jsonl, done.jsonl                resume state (JSON, no pickle)

Page files and state.json are written atomically (temp file, fsync, rename). The three .jsonl
files are append-only logs written one whole line per write; after a kill, a torn last line is cut
off when the crawl is resumed, so every line a reader sees is complete.

Resume: every queued URL is appended to frontier.jsonl before it can be fetched, and every visited
URL to done.jsonl (after its page file and manifest line). Running the same command again reloads
both (cllm/scraper/frontier.py skips what is done and requeues the rest).
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone

from cllm.errors import CrawlError
from cllm.fileio import atomic_write_text
from cllm.scraper.frontier import Entry
from cllm.scraper.urls import url_hash

STATE_DIR = ".crawl"
FORMAT_VERSION = 1


def utc_now() -> str:
    """The time stamp of state.json and of manifest lines: UTC, ISO 8601, whole seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _repair_log(path: str) -> None:
    """Cut a torn last line (a kill in the middle of a write) so that appends start clean."""
    if not os.path.exists(path):
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def _read_log(path: str) -> list[dict]:
    records = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a torn line from a kill
    return records


class CrawlOutput:
    """OUT_DIR's files, opened for one run: what earlier runs logged (`manifest`, `frontier`, `done`)
    and the appends of this one."""

    def __init__(self, out_dir: str, start_url: str):
        self.out_dir = out_dir
        self.pages_dir = os.path.join(out_dir, "pages")
        self.state_dir = os.path.join(out_dir, STATE_DIR)
        self._make_folders()
        self.manifest_path = os.path.join(out_dir, "manifest.jsonl")
        self.frontier_path = os.path.join(self.state_dir, "frontier.jsonl")
        self.done_path = os.path.join(self.state_dir, "done.jsonl")
        self._check_or_write_state(start_url)
        for path in (self.manifest_path, self.frontier_path, self.done_path):
            _repair_log(path)
        self.manifest = _read_log(self.manifest_path)
        self.frontier = [Entry(r["url"], int(r["depth"]), r.get("parent")) for r in _read_log(self.frontier_path)
                         if "url" in r and "depth" in r]
        self.done = _read_log(self.done_path)
        self._files = {p: open(p, "a", encoding="utf-8")
                       for p in (self.manifest_path, self.frontier_path, self.done_path)}

    def _make_folders(self) -> None:
        try:
            os.makedirs(self.pages_dir, exist_ok=True)
            os.makedirs(self.state_dir, exist_ok=True)
        except OSError as exc:
            raise CrawlError(f"cannot create output folder {self.out_dir!r}: {exc.strerror or exc}") from None
        if not os.access(self.out_dir, os.W_OK) or not os.access(self.pages_dir, os.W_OK):
            raise CrawlError(f"output folder {self.out_dir!r} is not writable; choose another OUT_DIR")

    def _check_or_write_state(self, start_url: str) -> None:
        """A resumed folder must hold a crawl of the same start URL; a new one records it."""
        state_path = os.path.join(self.state_dir, "state.json")
        if os.path.exists(state_path):
            try:
                with open(state_path, encoding="utf-8") as f:
                    previous = json.load(f)
            except (OSError, ValueError) as exc:
                raise CrawlError(f"{state_path} is unreadable ({exc}); delete {self.state_dir} to start over") from None
            if previous.get("start_url") != start_url:
                raise CrawlError(f"{self.out_dir!r} holds a crawl of {previous.get('start_url')}; "
                                 "use another OUT_DIR for a different start URL")
            return
        try:
            atomic_write_text(state_path, json.dumps({"format": FORMAT_VERSION, "start_url": start_url,
                                                      "created_at": utc_now()}) + "\n")
        except OSError as exc:
            raise CrawlError(f"cannot write to {self.out_dir!r}: {exc.strerror or exc}") from None

    def write_page(self, url: str, text: str) -> str:
        """Write a page's text atomically (blocking: run it in a thread); returns its manifest name."""
        name = url_hash(url) + ".txt"
        path = os.path.join(self.pages_dir, name)
        try:
            atomic_write_text(path, text + "\n")
        except OSError as exc:
            raise CrawlError(f"cannot write {path}: {exc.strerror or exc}") from None
        return "pages/" + name

    def _append(self, path: str, record: dict) -> None:
        f = self._files[path]
        f.write(json.dumps(record, ensure_ascii=False) + "\n")  # one line, one write
        f.flush()

    def queued(self, e: Entry) -> None:
        self._append(self.frontier_path, {"url": e.url, "depth": e.depth, "parent": e.parent})

    def visited(self, record: dict) -> None:
        self._append(self.done_path, record)

    def kept(self, record: dict) -> None:
        self._append(self.manifest_path, record)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
