"""`cli.py serve` as deployed (a subprocess): clients that drop completions mid-way (streamed, and one
plain) leave one short line each in the server's log, no traceback, and their generations stop."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

from serve_helpers import tiny_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_DROPS = 4


def _health(url: str) -> dict:
    with urllib.request.urlopen(url + "health", timeout=10) as r:
        return json.load(r)


def _drop_midway(host: str, port: int, stream: bool, url: str) -> None:
    """A completion that would run for minutes: read a few streamed chunks (or wait until it
    generates), then reset the connection."""
    body = json.dumps({"prompt": "the cat", "max_tokens": 10_000_000, "stream": stream}).encode()
    sock = socket.create_connection((host, port), timeout=10)
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    if stream:
        received = b""
        while received.count(b"data: ") < 3:
            data = sock.recv(4096)
            assert data, received
            received += data
        assert b" 200 " in received.split(b"\r\n", 1)[0], received[:200]
    else:
        t0 = time.monotonic()
        while _health(url)["active"] == 0:
            assert time.monotonic() - t0 < 5
        time.sleep(0.1)
    # a reset, not a polite close: the server's next write fails at once, as it does for a browser tab
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


def _wait_idle(url: str, timeout: float) -> dict:
    t0 = time.monotonic()
    while True:
        health = _health(url)
        if health["active"] == 0 and health["queued"] == 0:
            return health
        assert time.monotonic() - t0 < timeout, health
        time.sleep(0.05)


def test_dropped_streams_log_one_line_each_and_stop_generating(tmp_path_factory):
    run = tiny_run(tmp_path_factory)["run"]
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "cli.py"), "serve", "--checkpoint", str(run),
                             "--port", "0", "--max-tokens-cap", "10000000"], cwd=ROOT, stderr=subprocess.PIPE,
                            text=True)
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True)
    try:
        first = proc.stderr.readline()
        m = re.search(r"on http://(127\.0\.0\.1):(\d+)/", first)
        assert m, first
        reader.start()
        host, port = m.group(1), int(m.group(2))
        url = f"http://{host}:{port}/"
        for i in range(N_DROPS):
            _drop_midway(host, port, stream=i > 0, url=url)  # the first waits for a whole (plain) response
            # the generation stops: no worker is busy soon after the drop
            health = _wait_idle(url, timeout=5)
        time.sleep(0.5)  # then nothing more is generated: the token count stays put
        later = _health(url)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        reader.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "".join(log)
    assert "Traceback" not in text and "Error" not in text, text
    lines = [line for line in text.splitlines() if "disconnected" in line]
    assert len(lines) == N_DROPS, text
    assert all(re.fullmatch(r"127\.0\.0\.1 disconnected: generation cmpl-\w+ cancelled after \d+ tokens", line)
               for line in lines), lines
    assert text.splitlines()[-1] == "stopped", text
    assert health["stats"]["cancelled"] == N_DROPS, health
    assert later["stats"]["completion_tokens"] == health["stats"]["completion_tokens"], (health, later)
