"""The page of `cli.py serve` in a real headless Chromium (Debian's, driven by Playwright's Python
package): type a prompt, press Generate, watch the streamed text appear."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from serve_helpers import random_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


def _browser_or_skip():
    try:
        from playwright.sync_api import sync_playwright  # noqa: PLC0415 - optional: the test extra; without it the test skips
    except ImportError:
        pytest.skip("the playwright Python package is not installed (pip install -e '.[test]')")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    return sync_playwright


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # an untrained model big enough that generating 300 tokens takes most of a second (the tiny one,
    # and even a 128-dim one at 3-4k tokens/s, finish before the page has been polled twice)
    ckpt = random_checkpoint(tmp_path_factory, embed_dim=256, num_layers=8, num_heads=4)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "serve", str(ckpt), "--port", "0", "--max-concurrent", "1"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        url = None
        lines = []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"on (http://127\.0\.0\.1:\d+/)", line)
            if m:
                url = m.group(1)
                break
        assert url, "the server did not start:\n" + "".join(lines)
        yield url, os.path.basename(ckpt.parent) + "/" + ckpt.name
    finally:
        proc.terminate()  # SIGTERM: the process we started, by its handle
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_page_streams_generated_text(server):
    sync_playwright = _browser_or_skip()
    url, model_id = server
    from playwright.sync_api import expect  # noqa: PLC0415 - optional: the test extra; without it the test skips

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(url)
            # the loaded checkpoint is named in the header
            # (waits go through locators: the page's Content-Security-Policy forbids eval, which
            # page.wait_for_function would need)
            expect(page.locator("#model")).to_have_text(model_id, timeout=10_000)
            page.fill("#prompt", "the cat")
            page.fill("#max_tokens", "300")
            page.fill("#seed", "11")
            # watch the output while it is generated, from inside the page: a MutationObserver notes
            # the text's length and the status at every change of the output (polling from here
            # sees only what is there at each round trip to the browser, tens of milliseconds apart)
            page.evaluate("""() => {
                window.growth = [];
                const out = document.getElementById('out_text');
                new MutationObserver(() => window.growth.push(
                    [document.getElementById('status').textContent, out.textContent.length]
                )).observe(out, {childList: true, characterData: true, subtree: true});
            }""")
            page.click("#generate")
            expect(page.locator("#status")).to_have_text(re.compile(r"^done"), timeout=60_000)
            text = page.text_content("#out_text")
            assert page.text_content("#out_prompt") == "the cat"
            assert len(text) == 300, text  # char tokens: one character per token
            growth = page.evaluate("window.growth")
            partial = {n for status, n in growth if status.startswith("generating") and 0 < n < 300}
            assert len(partial) >= 2, growth  # the text grew while it was being generated
            # the same seed from the API gives the same text
            req = urllib.request.Request(
                url + "v1/completions",
                method="POST",
                headers={"Content-Type": "application/json"},
                data=json.dumps({"prompt": "the cat", "max_tokens": 300, "seed": 11, "temperature": 0.8}).encode(),
            )
            with urllib.request.urlopen(req, timeout=30) as r:
                assert json.load(r)["choices"][0]["text"] == text
            # an error from the server is shown, not swallowed
            page.fill("#max_tokens", "100000")
            page.click("#generate")
            expect(page.locator("#status")).to_have_text(re.compile(r"^error"), timeout=10_000)
            assert "max_tokens" in page.text_content("#status")
            assert not [e for e in errors if "400" not in e], errors
        finally:
            browser.close()
