"""`cli.py serve`: the completions API, streaming, limits, auth, static files, cancellation."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest
from serve_helpers import tiny_run

from cllm.serve import server

PROMPT = "the cat sat"


class ServerAsDeployed:
    """aiohttp's TestServer cancels a request's handler when its client disconnects; `cli.py serve`
    (server.start_site) keeps aiohttp's server default, where only the disconnect watcher notices."""

    def __new__(cls, app):
        from aiohttp.test_utils import TestServer
        from aiohttp.web import AppRunner

        class _Server(TestServer):
            async def _make_runner(self, **kwargs):
                kwargs.pop("handler_cancellation", None)
                return AppRunner(self.app, **kwargs)

        return _Server(app)


@pytest.fixture
def make_client(aiohttp_client, engine):
    from cllm.serve import ServerSettings, create_app

    async def make(as_deployed=False, **overrides):
        app = create_app(engine, ServerSettings(**overrides))
        return await aiohttp_client(ServerAsDeployed(app) if as_deployed else app)

    return make


async def complete(client, **body):
    r = await client.post("/v1/completions", json={"prompt": PROMPT, **body})
    return r.status, await r.json()


async def stream_events(client, **body) -> tuple[object, list[str]]:
    r = await client.post("/v1/completions", json={"prompt": PROMPT, "stream": True, **body})
    raw = (await r.read()).decode()
    return r, raw


def parse_sse(raw: str) -> list[str]:
    """The data of each event; asserts the framing: `data: ...` events separated by blank lines."""
    assert raw.endswith("\n\n")
    events = raw[:-2].split("\n\n")
    for event in events:
        assert event.startswith("data: ") and "\n" not in event, event
    return [e[len("data: ") :] for e in events]


def assert_error(status, body, expected_status, param=None, code=None):
    assert status == expected_status, body
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err


# ------------------------------------------------------------------------------------ endpoints
async def test_health_and_models(client, engine):
    r = await client.get("/health")
    assert r.status == 200
    health = await r.json()
    assert health["status"] == "ok" and health["model"] == engine.model_id
    assert health["active"] == 0 and health["queued"] == 0 and health["auth_required"] is False
    r = await client.get("/v1/models")
    models = await r.json()
    assert models["object"] == "list" and len(models["data"]) == 1
    m = models["data"][0]
    assert m["id"] == engine.model_id == "run/" + os.path.basename(engine.checkpoint_path)
    assert m["object"] == "model" and m["owned_by"] == "cllm" and isinstance(m["created"], int)
    assert m["context_length"] == 16 and m["parameters"] == engine.model.num_parameters()


async def test_completion_response_schema(client, engine):
    status, body = await complete(client, max_tokens=12, seed=1, n=2)
    assert status == 200, body
    assert set(body) == {"id", "object", "created", "model", "choices", "usage"}
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion"
    assert isinstance(body["created"], int) and body["model"] == engine.model_id
    assert [c["index"] for c in body["choices"]] == [0, 1]
    for c in body["choices"]:
        assert set(c) == {"text", "index", "logprobs", "finish_reason"}
        assert c["finish_reason"] == "length" and c["logprobs"] is None
        assert len(c["text"]) == 12  # char tokens, no EOS: one character per token
    prompt_tokens = len(engine.tokenizer.encode(PROMPT))
    assert body["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": 24,
        "total_tokens": prompt_tokens + 24,
    }


async def test_seed_reproducibility_and_n(client):
    _, a = await complete(client, max_tokens=30, seed=42, temperature=1.0)
    _, b = await complete(client, max_tokens=30, seed=42, temperature=1.0)
    _, c = await complete(client, max_tokens=30, seed=43, temperature=1.0)
    _, two = await complete(client, max_tokens=30, seed=42, temperature=1.0, n=2)
    assert a["choices"][0]["text"] == b["choices"][0]["text"]
    assert a["choices"][0]["text"] != c["choices"][0]["text"]
    # choice i of a request with seed s is the single choice of seed s + i
    assert [ch["text"] for ch in two["choices"]] == [a["choices"][0]["text"], c["choices"][0]["text"]]
    # and it is what `generate` would sample
    from cllm.generation import Generator, SamplingConfig

    eng = client.server.app[server.ENGINE]
    ids = list(
        Generator(eng.model, eng.tokenizer.eos_id).stream(
            eng.prompt_ids(PROMPT), SamplingConfig(max_new_tokens=30, temperature=1.0, seed=42)
        )
    )
    assert eng.tokenizer.decode(ids) == a["choices"][0]["text"]


async def test_streaming_framing_matches_the_plain_response(client):
    _, plain = await complete(client, max_tokens=20, seed=7, n=2)
    r, raw = await stream_events(client, max_tokens=20, seed=7, n=2, stream_options={"include_usage": True})
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    data = parse_sse(raw)
    assert data[-1] == "[DONE]" and "[DONE]" not in data[:-1]
    chunks = [json.loads(d) for d in data[:-1]]
    assert len({c["id"] for c in chunks}) == 1 and all(c["object"] == "text_completion" for c in chunks)
    usage = chunks.pop()
    assert usage["choices"] == [] and usage["usage"] == plain["usage"]
    texts, reasons = {0: "", 1: ""}, {}
    for c in chunks:
        (choice,) = c["choices"]
        assert set(choice) == {"text", "index", "logprobs", "finish_reason"}
        assert choice["index"] not in reasons, "no text after a choice's finish chunk"
        texts[choice["index"]] += choice["text"]
        if choice["finish_reason"] is not None:
            reasons[choice["index"]] = choice["finish_reason"]
    # (text that the worker produced while the loop was busy goes out as one chunk, so a tiny model
    # gives few chunks; that text arrives while it is generated is tested with a long generation
    # in _start_long_stream and in the browser)
    assert len(chunks) >= 4
    assert texts == {i: ch["text"] for i, ch in enumerate(plain["choices"])}
    assert reasons == {0: "length", 1: "length"}


async def test_stop_strings_cut_plain_and_streamed(client):
    _, greedy = await complete(client, max_tokens=40, temperature=0)
    text = greedy["choices"][0]["text"]
    stop = text[10:13]
    expected = text[: text.find(stop)]
    _, cut = await complete(client, max_tokens=40, temperature=0, stop=["never-appears", stop])
    assert cut["choices"][0]["text"] == expected and cut["choices"][0]["finish_reason"] == "stop"
    assert cut["usage"]["completion_tokens"] < 40
    r, raw = await stream_events(client, max_tokens=40, temperature=0, stop=stop)
    chunks = [json.loads(d) for d in parse_sse(raw)[:-1]]
    streamed = "".join(c["choices"][0]["text"] for c in chunks)
    assert streamed == expected and stop not in streamed
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    # echo puts the prompt in front
    _, echoed = await complete(client, max_tokens=40, temperature=0, stop=stop, echo=True)
    assert echoed["choices"][0]["text"] == PROMPT + expected


async def test_beam_search_extension(client):
    _, greedy = await complete(client, prompt="the", max_tokens=6, temperature=0)
    _, beam1 = await complete(client, prompt="the", max_tokens=6, beam_width=1)
    assert beam1["choices"][0]["text"] == greedy["choices"][0]["text"]
    _, beams = await complete(client, prompt="the", max_tokens=6, beam_width=3, n=3)
    texts = [c["text"] for c in beams["choices"]]
    assert len(texts) == 3 and len(set(texts)) == 3
    r, raw = await stream_events(client, prompt="the", max_tokens=6, beam_width=2, n=2)
    assert parse_sse(raw)[-1] == "[DONE]"


async def test_top_k_and_repeat_penalty_extensions(client):
    _, k1 = await complete(client, max_tokens=15, top_k=1, seed=3, temperature=1.5)
    _, greedy = await complete(client, max_tokens=15, temperature=0)
    assert k1["choices"][0]["text"] == greedy["choices"][0]["text"]  # top_k 1 is greedy
    _, pen = await complete(client, max_tokens=15, temperature=0, repeat_penalty=5.0)
    assert pen["choices"][0]["text"] != greedy["choices"][0]["text"]


# ------------------------------------------------------------------------------------ errors
async def test_malformed_json_and_bodies(client):
    for raw in (b"{bad", b"", b"\xff\xfe", b'{"prompt": NaN}', b'{"max_tokens": Infinity}'):
        r = await client.post("/v1/completions", data=raw, headers={"Content-Type": "application/json"})
        assert_error(r.status, await r.json(), 400, code="invalid_json")
    for body in ([1, 2], "text", 5, None):
        r = await client.post("/v1/completions", json=body)
        assert_error(r.status, await r.json(), 400)


@pytest.mark.parametrize(
    "field,value",
    [
        ("prompt", 5),
        ("prompt", []),
        ("prompt", ["a", [1]]),  # strings and token ids mixed
        ("prompt", {"a": 1}),
        ("max_tokens", "10"),
        ("max_tokens", -1),
        ("max_tokens", 1.5),
        ("max_tokens", True),
        ("temperature", "hot"),
        ("temperature", -0.1),
        ("temperature", 2.5),
        ("temperature", False),
        ("top_p", 0),
        ("top_p", 1.5),
        ("top_k", -1),
        ("top_k", 0.5),
        ("repeat_penalty", 0),
        ("stop", 5),
        ("stop", ["a", 1]),
        ("stop", ["a", "b", "c", "d", "e"]),
        ("stop", ""),
        ("seed", "1"),
        ("seed", -1),
        ("seed", 1.0),
        ("n", 0),
        ("n", "2"),
        ("n", 9),
        ("stream", "yes"),
        ("beam_width", -1),
        ("echo", 1),
        ("model", 3),
        ("stream_options", {"include_usage": True}),
        ("logprobs", 21),
        ("presence_penalty", 2.5),
        ("best_of", 3),
        ("suffix", "x"),
        ("frobnicate", 1),
    ],
)
async def test_wrong_fields_are_400_naming_the_field(client, field, value):
    status, body = await complete(client, **{field: value})
    assert_error(status, body, 400, param=field)
    assert field in body["error"]["message"]


async def test_openai_defaults_are_accepted(client):
    status, body = await complete(
        client,
        model="gpt-3.5-turbo-instruct",
        max_tokens=3,
        logprobs=None,
        presence_penalty=0,
        frequency_penalty=0.0,
        logit_bias={},
        best_of=1,
        n=1,
        user="someone",
        suffix=None,
        stop=None,
        seed=None,
        temperature=None,
    )
    assert status == 200, body
    status, body = await complete(client, prompt=["a", "b"], max_tokens=3, n=2)
    assert status == 200 and [c["index"] for c in body["choices"]] == [0, 1, 2, 3]


async def test_limits(make_client):
    client = await make_client(max_tokens_cap=50, max_prompt_chars=100, max_body_bytes=2000, max_n=3)
    status, body = await complete(client, max_tokens=51)
    assert_error(status, body, 400, param="max_tokens", code="max_tokens_too_large")
    assert "50" in body["error"]["message"]
    assert (await complete(client, max_tokens=50))[0] == 200
    status, body = await complete(client, prompt="x" * 101)
    assert_error(status, body, 400, param="prompt", code="prompt_too_long")
    r = await client.post("/v1/completions", json={"prompt": "x" * 3000})
    assert_error(r.status, await r.json(), 413, code="request_too_large")
    status, body = await complete(client, prompt=["a", "b"], n=2)
    assert_error(status, body, 400, param="n")


async def test_unknown_paths_and_methods_are_json(client):
    r = await client.get("/v1/nothing")
    assert_error(r.status, await r.json(), 404)
    r = await client.get("/v1/completions")
    assert_error(r.status, await r.json(), 405)
    r = await client.delete("/health")
    assert_error(r.status, await r.json(), 405)


async def test_api_key(make_client):
    client = await make_client(api_key="s3cret-123")
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "s3cret-123"},
        {"Authorization": "Basic s3cret-123"},
    ):
        r = await client.post("/v1/completions", json={"prompt": "a", "max_tokens": 1}, headers=headers)
        assert_error(r.status, await r.json(), 401, code="invalid_api_key")
        assert r.headers["WWW-Authenticate"] == "Bearer"
        r = await client.get("/v1/models", headers=headers)
        assert r.status == 401
    ok = {"Authorization": "Bearer s3cret-123"}
    r = await client.post("/v1/completions", json={"prompt": "a", "max_tokens": 1}, headers=ok)
    assert r.status == 200
    assert (await client.get("/v1/models", headers=ok)).status == 200
    health = await (await client.get("/health")).json()  # health and the page stay open
    assert health["auth_required"] is True
    assert (await client.get("/")).status == 200


# ------------------------------------------------------------------------------------ static files
async def test_page_and_static_files_stay_in_their_folder(client, tmp_path, monkeypatch):
    r = await client.get("/")
    html = await r.text()
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")
    for needle in (
        'id="prompt"',
        'id="generate"',
        'id="output"',
        'id="model"',
        'id="temperature"',
        'id="max_tokens"',
        "/static/app.js",
    ):
        assert needle in html
    r = await client.get("/static/app.js")
    assert r.status == 200 and "javascript" in r.headers["Content-Type"]
    assert "/v1/completions" in await r.text()
    for path in (
        "/static/../server.py",
        "/static/%2e%2e/server.py",
        "/static/..%2fserver.py",
        "/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/static//etc/passwd",
        "/static/",
        "/static/nothing.js",
        "/static/.hidden",
        "/../../etc/passwd",
    ):
        r = await client.get(path)
        assert r.status == 404, path
        assert "def " not in await r.text()
    # a link inside the folder that points outside it is refused too
    (tmp_path / "static").mkdir()
    (tmp_path / "secret.txt").write_text("secret")
    (tmp_path / "static" / "ok.txt").write_text("fine")
    os.symlink(tmp_path / "secret.txt", tmp_path / "static" / "link.txt")
    monkeypatch.setattr(server, "STATIC_DIR", str(tmp_path / "static"))
    assert await (await client.get("/static/ok.txt")).text() == "fine"
    r = await client.get("/static/link.txt")
    assert r.status == 404 and "secret" not in await r.text()


def test_host_warning():
    from cllm.serve import host_warning

    assert host_warning("127.0.0.1") is None and host_warning("localhost") is None and host_warning("::1") is None
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.org"):
        assert "warning" in host_warning(host) and "--api-key" in host_warning(host)


# ------------------------------------------------------------------------------------ concurrency
async def _wait_for(predicate, timeout=10.0):
    t0 = time.monotonic()
    while not predicate():
        assert time.monotonic() - t0 < timeout, "timed out"
        await asyncio.sleep(0.02)


async def _start_long_stream(client):
    """A streaming request that would run for minutes, read up to its first chunk."""
    r = await client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 10_000_000, "stream": True})
    assert r.status == 200
    first = await r.content.readuntil(b"\n\n")
    assert first.startswith(b"data: ")
    return r


@pytest.mark.parametrize("as_deployed", [True, False])
async def test_client_disconnect_cancels_streaming_generation(make_client, engine, as_deployed):
    client = await make_client(as_deployed, max_tokens_cap=10_000_000)
    sched = client.server.app[server.SCHEDULER]
    before = dict(engine.stats)
    r = await _start_long_stream(client)
    assert sched.active == 1
    # the event loop stays free while the worker generates: health answers at once
    t0 = time.monotonic()
    for _ in range(5):
        assert (await client.get("/health")).status == 200
    assert (time.monotonic() - t0) / 5 < 0.5
    r.close()  # the client goes away
    await _wait_for(lambda: sched.active == 0, timeout=5)
    assert engine.stats["cancelled"] == before["cancelled"] + 1
    assert engine.stats["completion_tokens"] - before["completion_tokens"] < 2_000_000


@pytest.mark.parametrize("as_deployed", [True, False])
async def test_client_disconnect_cancels_plain_generation(make_client, engine, as_deployed):
    client = await make_client(as_deployed, max_tokens_cap=10_000_000)
    sched = client.server.app[server.SCHEDULER]
    before = engine.stats["cancelled"]
    request = asyncio.ensure_future(client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 10_000_000}))
    await _wait_for(lambda: sched.active == 1)
    await asyncio.sleep(0.2)
    request.cancel()  # the client gives up: its connection closes
    with pytest.raises(asyncio.CancelledError):
        await request
    await _wait_for(lambda: sched.active == 0, timeout=5)
    assert engine.stats["cancelled"] == before + 1


async def test_concurrency_limit_429_and_bounded_queue(make_client):
    client = await make_client(True, max_tokens_cap=10_000_000, max_concurrent=1, max_queue=1)
    sched = client.server.app[server.SCHEDULER]
    running = await _start_long_stream(client)
    queued = asyncio.ensure_future(client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 3}))
    await _wait_for(lambda: sched.queued == 1)
    health = await (await client.get("/health")).json()
    assert health["active"] == 1 and health["queued"] == 1
    status, body = await complete(client, max_tokens=3)
    assert_error(status, body, 429, code="rate_limit_exceeded")
    r = await client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 3})
    assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
    running.close()  # the queued request gets the slot and completes
    r = await asyncio.wait_for(queued, 10)
    assert r.status == 200 and len((await r.json())["choices"][0]["text"]) == 3
    await _wait_for(lambda: sched.active == 0 and sched.queued == 0)
    assert (await complete(client, max_tokens=2))[0] == 200


async def test_concurrent_requests_all_complete_and_match_serial(make_client):
    client = await make_client(max_concurrent=3, max_queue=20)
    bodies = [dict(max_tokens=25, seed=s, temperature=1.0) for s in range(8)]
    serial = [(await complete(client, **b))[1]["choices"][0]["text"] for b in bodies[:3]]
    results = await asyncio.gather(*(complete(client, **b) for b in bodies))
    assert all(status == 200 for status, _ in results)
    assert [body["choices"][0]["text"] for _, body in results[:3]] == serial


async def test_streamed_text_arrives_while_it_is_generated(aiohttp_client, tmp_path_factory):
    # an untrained 256-dim, 8-layer model: 300 tokens take a few hundred milliseconds. (With kernels
    # that held the GIL, the event loop did not run until the worker was done, and all the text came
    # in one chunk at the end.)
    from serve_helpers import random_checkpoint

    from cllm.serve import Engine, ServerSettings, create_app

    engine = Engine.load(str(random_checkpoint(tmp_path_factory, embed_dim=256, num_layers=8, num_heads=4)))
    engine.warm_up()
    client = await aiohttp_client(create_app(engine, ServerSettings()))
    t0 = time.monotonic()
    r = await client.post("/v1/completions", json={"prompt": "the", "max_tokens": 300, "seed": 3, "stream": True})
    arrivals = []  # (seconds since the request, characters received so far), one per chunk with text
    received = 0
    async for line in r.content:
        if line.startswith(b"data: {"):
            text = json.loads(line[len(b"data: ") :])["choices"][0]["text"]
            if text:
                received += len(text)
                arrivals.append((time.monotonic() - t0, received))
    assert received == 300
    end = arrivals[-1][0]
    early = [n for t, n in arrivals if t < end / 2]
    assert len(early) >= 2, arrivals  # pieces of the text arrived during the first half of the generation


def test_incremental_text_equals_full_decoding():
    import random

    from cllm.completion import IncrementalText
    from cllm.tokenizers import train_tokenizer

    text = "héllo wörld — ünïcödé 日本語 text, the cat sat on the mat. " * 20
    for kind, size in (("bpe", 300), ("word", 40), ("char", None)):
        tok = train_tokenizer(kind, [text], size, progress=False)
        rng = random.Random(0)
        ids = [rng.randrange(tok.vocab_size) for _ in range(400)]
        inc = IncrementalText(tok)
        dropped = 0
        for i, t in enumerate(ids):
            dropped += inc.add(t, keep_chars=0)
            full = tok.decode(ids[: i + 1])
            assert full[dropped:] == inc.tail, (kind, i)
        assert kind == "word" or dropped > 0, kind


def test_serve_cli_flag_errors(tmp_path):
    import subprocess
    import sys

    from serve_helpers import _SESSION  # noqa: F401  (the checkpoint is not needed: flags fail first)

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for args, needle in (
        (["--port", "-1"], "--port"),
        (["--max-concurrent", "0"], "--max-concurrent"),
        (["--batch-threads", "0"], "--batch-threads"),
        (["--bogus"], "unknown flag --bogus"),
        ([str(tmp_path / "none")], "no checkpoint"),
    ):
        p = subprocess.run(
            [sys.executable, os.path.join(root, "cli.py"), "serve", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=root,
        )
        assert p.returncode == 2 and "Traceback" not in p.stderr
        errors = [line for line in p.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and needle in errors[0], p.stderr


async def test_model_by_id_and_a_failing_generation_is_json(client, engine, monkeypatch):
    r = await client.get("/v1/models/" + engine.model_id)
    assert r.status == 200 and (await r.json())["id"] == engine.model_id
    r = await client.get("/v1/models/gpt-4")
    assert_error(r.status, await r.json(), 404, param="model", code="model_not_found")

    def broken(*args, **kwargs):
        raise RuntimeError("the kernel fell over")

    monkeypatch.setattr(engine.generator, "stream", broken)
    if engine.batcher is not None:  # the sampled choices' path (cllm/serve/batcher.py)
        monkeypatch.setattr(engine.batcher, "stream", broken)
    status, body = await complete(client, max_tokens=3)
    assert_error(status, body, 500, code="generation_failed")
    assert "fell over" in body["error"]["message"]
    r, raw = await stream_events(client, max_tokens=3)
    data = parse_sse(raw)
    assert data[-1] == "[DONE]" and json.loads(data[-2])["error"]["code"] == "generation_failed"
    assert (await (await client.get("/health")).json())["active"] == 0


def test_cli_serve_answers_and_stops_cleanly_on_sigterm(tmp_path_factory):
    import re
    import signal
    import subprocess
    import sys
    import urllib.request

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = tiny_run(tmp_path_factory)["run"]
    proc = subprocess.Popen(
        [
            sys.executable,
            os.path.join(root, "cli.py"),
            "serve",
            "--checkpoint",
            str(run),
            "--port",
            "0",
            "--api-key",
            "1234",
        ],
        cwd=root,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()
        m = re.search(r"on (http://127\.0\.0\.1:\d+/)", line)
        assert m, line
        assert "warning" not in line
        with urllib.request.urlopen(m.group(1) + "health", timeout=10) as r:
            assert json.load(r)["auth_required"] is True
        req = urllib.request.Request(
            m.group(1) + "v1/completions", data=b'{"max_tokens": 2}', headers={"Authorization": "Bearer 1234"}
        )  # a key of digits stays text
        with urllib.request.urlopen(req, timeout=10) as r:
            assert len(json.load(r)["choices"][0]["text"]) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert "stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_the_official_openai_client_works(make_client, engine):
    from openai import AsyncOpenAI, AuthenticationError, BadRequestError

    client = await make_client(api_key="k-1")
    base = str(client.make_url("/v1"))
    oai = AsyncOpenAI(base_url=base, api_key="k-1", max_retries=0)
    assert [m.id async for m in oai.models.list()] == [engine.model_id]
    r = await oai.completions.create(model="gpt-3.5-turbo-instruct", prompt=PROMPT, max_tokens=10, seed=4, n=2)
    assert len(r.choices) == 2 and r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 20
    stream = await oai.completions.create(model="x", prompt=PROMPT, max_tokens=10, seed=4, stream=True)
    assert "".join([chunk.choices[0].text async for chunk in stream]) == r.choices[0].text
    greedy = await oai.completions.create(model="x", prompt="the", max_tokens=5, temperature=0)
    beam = await oai.completions.create(model="x", prompt="the", max_tokens=5, extra_body={"beam_width": 1})
    assert beam.choices[0].text == greedy.choices[0].text
    with pytest.raises(BadRequestError, match="max_tokens"):
        await oai.completions.create(model="x", prompt=PROMPT, max_tokens=10**6)
    with pytest.raises(AuthenticationError):
        await AsyncOpenAI(base_url=base, api_key="wrong", max_retries=0).models.list()
    await oai.close()


_CONCURRENT_RUNS = """
import sys, threading
from cllm.serve import Engine
from cllm.serve.engine import CompletionRequest
engine = Engine.load(sys.argv[1])
errors = []
def work(seed):
    try:
        for i in range(6):  # prompts of 40 characters: prefill's parallel matrix products
            engine.run(CompletionRequest(prompts=["the cat sat on the mat and ran far away "], max_tokens=20,
                                         seed=seed + i), threading.Event(), lambda *a: None)
    except Exception as exc:
        errors.append(exc)
threads = [threading.Thread(target=work, args=(s,)) for s in (0, 100)]
for t in threads:
    t.start()
for t in threads:
    t.join()
import numba
print("layer", numba.threading_layer(), "requests", engine.stats["requests"], "errors", errors)
"""


def test_requests_take_turns_under_numbas_workqueue_layer(tmp_path_factory):
    # workqueue (Numba's layer where neither libgomp nor TBB is installed) aborts the process when
    # two threads launch parallel kernels at once; the engine then runs one request at a time
    import subprocess
    import sys

    from serve_helpers import random_checkpoint

    ckpt = random_checkpoint(tmp_path_factory, embed_dim=256, num_layers=8, num_heads=4)
    env = {**os.environ, "NUMBA_THREADING_LAYER": "workqueue"}
    result = subprocess.run(
        [sys.executable, "-c", _CONCURRENT_RUNS, str(ckpt)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # (12 requests and the warm-up, under the layer the test asked for)
    assert "layer workqueue requests 13 errors []" in result.stdout, result.stdout
