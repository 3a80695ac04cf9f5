"""The page of `cli.py serve` in a real headless Chromium (Debian's, driven by Playwright's Python
package): type a prompt, press Generate, watch the streamed text appear; in chat mode (a model with a
chat template), send messages, watch the reply stream in, reset the conversation."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
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


def _serve(ckpt):
    """Run `cli.py serve CKPT` on a free port; yields (its URL, the model id)."""
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


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # an untrained model big enough that generating 300 tokens takes most of a second (the tiny one,
    # and even a 128-dim one at 3-4k tokens/s, finish before the page has been polled twice)
    yield from _serve(random_checkpoint(tmp_path_factory, embed_dim=256, num_layers=8, num_heads=4))


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory):
    # the same untrained model with a bpe tokenizer and ChatML's template: it chats (in random tokens, rarely
    # <|im_end|>), slowly enough to watch a reply grow
    yield from _serve(random_checkpoint(tmp_path_factory, embed_dim=256, num_layers=8, num_heads=4, chat=True))


@contextmanager
def _page(url, model_id):
    """A headless Chromium page on the server at url, once its header names model_id; yields (page, errors):
    errors collects the page's uncaught exceptions and console errors. Skips without playwright or chromium."""
    sync_playwright = _browser_or_skip()
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
            yield page, errors
        finally:
            browser.close()


def _api(url, path, body):
    req = urllib.request.Request(
        url + path, method="POST", headers={"Content-Type": "application/json"}, data=json.dumps(body).encode()
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def test_page_streams_generated_text(server):
    url, model_id = server
    with _page(url, model_id) as (page, errors):
        from playwright.sync_api import expect  # noqa: PLC0415 - optional: the test extra; _page skipped without it

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
        body = {"prompt": "the cat", "max_tokens": 300, "seed": 11, "temperature": 0.8}
        assert _api(url, "v1/completions", body)["choices"][0]["text"] == text
        # a model without a chat template offers no chat mode
        assert page.locator("#modes").is_hidden()
        # an error from the server is shown, not swallowed
        page.fill("#max_tokens", "100000")
        page.click("#generate")
        expect(page.locator("#status")).to_have_text(re.compile(r"^error"), timeout=10_000)
        assert "max_tokens" in page.text_content("#status")
        assert not [e for e in errors if "400" not in e], errors


def test_chat_mode_streams_replies_and_resets(chat_server):
    url, model_id = chat_server

    def reply_of(messages, max_tokens):
        body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0, "seed": 5}
        return _api(url, "v1/chat/completions", body)["choices"][0]["message"]["content"]

    with _page(url, model_id) as (page, errors):
        from playwright.sync_api import expect  # noqa: PLC0415 - optional: the test extra; _page skipped without it

        expect(page.locator("#modes")).to_be_visible()  # the model has a chat template
        page.check("#mode_chat")
        expect(page.locator("#chat_panel")).to_be_visible()
        expect(page.locator("#output_section")).to_be_hidden()
        expect(page.locator("#generate")).to_have_text("Send")
        page.fill("#system", "Be brief.")
        page.fill("#max_tokens", "300")
        page.fill("#temperature", "0")
        page.fill("#seed", "5")
        page.evaluate("""() => {
            window.growth = [];
            const list = document.getElementById('messages');
            new MutationObserver(() => {
                const last = list.querySelector('.msg.assistant:last-child');
                const status = document.getElementById('status').textContent;
                window.growth.push([status, last ? last.textContent.length : 0]);
            }).observe(list, {childList: true, characterData: true, subtree: true});
        }""")
        page.fill("#chat_input", "What is zero plus two?")
        page.press("#chat_input", "Enter")  # Enter sends
        expect(page.locator("#status")).to_have_text(re.compile(r"^done"), timeout=60_000)
        messages = page.locator("#messages .msg")
        expect(messages).to_have_count(2)
        assert messages.nth(0).text_content() == "What is zero plus two?"
        first = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is zero plus two?"}]
        reply = messages.nth(1).text_content()
        assert reply and reply == reply_of(first, 300)
        growth = page.evaluate("window.growth")
        partial = {n for status, n in growth if status.startswith("generating") and 0 < n < len(reply)}
        assert len(partial) >= 2, growth  # the reply grew while it was generated
        assert page.input_value("#chat_input") == ""
        # the next message goes with the conversation so far
        page.fill("#max_tokens", "20")
        page.fill("#chat_input", "And before it?")
        page.click("#generate")
        expect(page.locator("#status")).to_have_text(re.compile(r"^done"), timeout=60_000)
        expect(messages).to_have_count(4)
        second = first + [{"role": "assistant", "content": reply}, {"role": "user", "content": "And before it?"}]
        assert messages.nth(3).text_content() == reply_of(second, 20)
        # reset: the list empties, and the next message starts a new conversation
        page.click("#reset")
        expect(messages).to_have_count(0)
        page.fill("#chat_input", "And before it?")
        page.click("#generate")
        expect(page.locator("#status")).to_have_text(re.compile(r"^done"), timeout=60_000)
        expect(messages).to_have_count(2)
        fresh = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "And before it?"}]
        assert messages.nth(1).text_content() == reply_of(fresh, 20)
        # an error is shown and the message goes back into the box
        page.fill("#max_tokens", "100000")
        page.fill("#chat_input", "hello")
        page.click("#generate")
        expect(page.locator("#status")).to_have_text(re.compile(r"^error.*max_tokens"), timeout=10_000)
        expect(messages).to_have_count(2)
        assert page.input_value("#chat_input") == "hello"
        assert not [e for e in errors if "400" not in e], errors
