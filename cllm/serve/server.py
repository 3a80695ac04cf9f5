"""The HTTP server: an OpenAI-style completions API, health, model list and a small page.

    GET  /health            {"status": "ok", "model": ..., "active": n, "queued": m, "stats": {"requests",
                            "cancelled", "completion_tokens"} of the requests finished}   (no auth)
    GET  /v1/models         {"object": "list", "data": [{"id": ..., "object": "model", ...}]}
    GET  /v1/models/ID      that one model (404 for another id)
    POST /v1/completions    OpenAI's completions request/response; "stream": true sends
                            server-sent events `data: {chunk}` and a final `data: [DONE]`
    POST /v1/images/generations  an image model's samples as base64 PNGs (cllm/vision/serve.py); a text
                            model answers 400 "images_not_supported"
    GET  /                  the page (cllm/serve/static/index.html), GET /static/NAME its files

Generation runs in a thread pool (Engine.run), never on the event loop. At most
`max_concurrent` requests generate at once; up to `max_queue` more wait for a slot; beyond that a
request gets 429 with Retry-After. A client that disconnects (while queued or generating) sets its
cancel event, and the worker stops before its next token; the log gets one line
("... disconnected: generation ID cancelled after N tokens"). Every error is OpenAI's JSON shape
{"error": {"message", "type", "param", "code"}}. The request's "model" may be any string (tools send
their own default names): the server has one model and answers with its id.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import hmac
import json
import logging
import math
import mimetypes
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from cllm.serve.engine import CompletionRequest, Engine
from cllm.vision.serve import image_generations

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
LOG = logging.getLogger("cllm.serve")  # no handler: Python prints warnings as the bare message on stderr


@dataclasses.dataclass
class ServerSettings:
    max_concurrent: int = 2  # generations running at once (worker threads)
    max_queue: int = 32  # requests waiting for a worker; beyond: 429
    max_tokens_cap: int = 1024  # largest max_tokens a request may ask for
    max_prompt_chars: int = 32768
    max_body_bytes: int = 256 * 1024
    max_n: int = 8  # choices per request (n, and n x prompts)
    api_key: str | None = None
    retry_after_s: int = 1
    disconnect_poll_s: float = 0.05


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type, self.headers = status, message, param, code, type_, headers


def error_response(status: int, message: str, param=None, code=None, type_="invalid_request_error", headers=None):
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def host_warning(host: str) -> str | None:
    """The warning printed when the server listens beyond this machine."""
    if host in LOCAL_HOSTS:
        return None
    return (f"warning: listening on {host}: anyone who can reach this machine can use the model"
            " (and its CPU); pass --api-key (or set CLLM_API_KEY) and prefer --host 127.0.0.1 behind a proxy")


# ---------------------------------------------------------------------------------- validation
_OPENAI_NOOPS = {  # accepted for compatibility, only at values that change nothing
    "logprobs": (None, 0), "presence_penalty": (None, 0, 0.0), "frequency_penalty": (None, 0, 0.0),
    "logit_bias": (None, {}), "suffix": (None, ""), "best_of": None, "user": None,
}
_FIELDS = {"model", "prompt", "max_tokens", "temperature", "top_p", "stop", "seed", "n", "stream", "top_k",
           "repeat_penalty", "beam_width", "echo", "ignore_eos", "stream_options", *_OPENAI_NOOPS}


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def bad_value(param, message):
    raise APIError(400, message, param=param, code="invalid_value")


def check_fields(body, fields, docs: str) -> None:
    """APIError(400) unless the body is a JSON object whose keys all are in `fields` (described in `docs`)."""
    if not isinstance(body, dict):
        bad_value(None, "the request body must be a JSON object")
    for key in body:
        if key not in fields:
            bad_value(key, f"unknown field {key!r}; see {docs}")


def parse_completion_request(body: dict, settings: ServerSettings) -> CompletionRequest:
    """A CompletionRequest from a decoded JSON body; APIError(400) naming the first bad field."""
    bad = bad_value
    check_fields(body, _FIELDS, "GET /v1/models and the documentation of /v1/completions")
    for key, allowed in _OPENAI_NOOPS.items():
        if key in body and allowed is not None and body[key] not in allowed:
            bad(key, f"{key!r} is not supported by this server (only {allowed[0]!r} or {allowed[-1]!r})")
    if "user" in body and not isinstance(body["user"], str):
        bad("user", "'user' must be a string")
    if "model" in body and body["model"] is not None and not isinstance(body["model"], str):
        bad("model", "'model' must be a string")

    prompt = body.get("prompt", "")
    if isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = list(prompt)
    else:
        bad("prompt", "'prompt' must be a string or a non-empty list of strings")
    for p in prompts:
        if len(p) > settings.max_prompt_chars:
            raise APIError(400, f"'prompt' has {len(p)} characters; this server accepts at most "
                                f"{settings.max_prompt_chars}", param="prompt", code="prompt_too_long")

    def get(name, default, check, what):
        v = body.get(name, default)
        if v is None:
            v = default
        if not check(v):
            bad(name, f"{name!r} must be {what}, got {json.dumps(v)}")
        return v

    max_tokens = get("max_tokens", 16, lambda v: _is_int(v) and v >= 0, "a non-negative integer")
    if max_tokens > settings.max_tokens_cap:
        raise APIError(400, f"'max_tokens' is {max_tokens}; this server allows at most {settings.max_tokens_cap}",
                       param="max_tokens", code="max_tokens_too_large")
    temperature = float(get("temperature", 1.0, lambda v: _is_number(v) and 0 <= v <= 2, "a number in [0, 2]"))
    top_p = float(get("top_p", 1.0, lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"))
    top_k = get("top_k", 0, lambda v: _is_int(v) and v >= 0, "a non-negative integer (0 disables it)")
    repeat_penalty = float(get("repeat_penalty", 1.0, lambda v: _is_number(v) and v > 0, "a positive number"))
    seed = body.get("seed")
    if seed is not None and not (_is_int(seed) and 0 <= seed < 2 ** 63):
        bad("seed", f"'seed' must be a non-negative integer or null, got {json.dumps(seed)}")
    n = get("n", 1, lambda v: _is_int(v) and v >= 1, "a positive integer")
    beam_width = get("beam_width", 0, lambda v: _is_int(v) and v >= 0, "a non-negative integer (0: sampling)")
    stream = get("stream", False, lambda v: isinstance(v, bool), "true or false")
    echo = get("echo", False, lambda v: isinstance(v, bool), "true or false")
    ignore_eos = get("ignore_eos", False, lambda v: isinstance(v, bool), "true or false")
    best_of = body.get("best_of")
    if best_of is not None and best_of != n:
        bad("best_of", "'best_of' is not supported (only null or equal to 'n')")
    stop = body.get("stop")
    if stop is None:
        stops = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop):
        stops = list(stop)
    else:
        bad("stop", "'stop' must be a string, a list of at most 4 strings, or null")
    if any(not s for s in stops):
        bad("stop", "'stop' strings must not be empty")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict) or set(options) - {"include_usage"} or not isinstance(options.get("include_usage", False), bool):
            bad("stream_options", "'stream_options' must be null or {\"include_usage\": true|false}")
        if not stream:
            bad("stream_options", "'stream_options' is only allowed with 'stream': true")
        include_usage = options.get("include_usage", False)
    if beam_width and n > beam_width:
        bad("n", f"'n' ({n}) cannot exceed 'beam_width' ({beam_width})")
    if beam_width > settings.max_n:
        bad("beam_width", f"'beam_width' must be at most {settings.max_n}")
    if n * len(prompts) > settings.max_n:
        bad("n", f"'n' x prompts is {n * len(prompts)}; this server allows at most {settings.max_n} choices per request")
    return CompletionRequest(prompts=prompts, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                             top_k=top_k, repeat_penalty=repeat_penalty, stop=stops, seed=seed, n=n, stream=stream,
                             beam_width=beam_width, echo=echo, ignore_eos=ignore_eos, include_usage=include_usage)


# ---------------------------------------------------------------------------------- the app
class Scheduler:
    """Admission: max_concurrent running, max_queue waiting, the rest refused."""

    def __init__(self, settings: ServerSettings, init_worker=None):
        self.settings = settings
        self.active = 0
        self.queued = 0
        self._slots = asyncio.Semaphore(settings.max_concurrent)
        self.cancel_events: set[threading.Event] = set()  # of the requests admitted, for shutdown
        self.pool = ThreadPoolExecutor(max_workers=settings.max_concurrent, thread_name_prefix="cllm-gen",
                                       initializer=init_worker)

    def admit(self) -> None:
        s = self.settings
        if self.active + self.queued >= s.max_concurrent + s.max_queue:
            raise APIError(429, f"the server is busy ({self.active} generating, {self.queued} waiting); retry later",
                           code="rate_limit_exceeded", type_="rate_limit_error",
                           headers={"Retry-After": str(s.retry_after_s)})
        self.queued += 1

    async def acquire(self) -> None:
        try:
            await self._slots.acquire()
        finally:
            self.queued -= 1
        self.active += 1

    def release(self) -> None:
        self.active -= 1
        self._slots.release()


ENGINE = web.AppKey("engine", Engine)
SETTINGS = web.AppKey("settings", ServerSettings)
SCHEDULER = web.AppKey("scheduler", Scheduler)


@web.middleware
async def errors_middleware(request, handler):
    try:
        return await handler(request)
    except APIError as exc:
        return error_response(exc.status, exc.message, exc.param, exc.code, exc.type, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(exc.status)
        message = {404: f"no such path: {request.path}", 405: f"{request.method} is not allowed on {request.path}"}.get(
            exc.status, exc.reason)
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return error_response(exc.status, message, code=code, headers=headers or None)


@web.middleware
async def auth_middleware(request, handler):
    key = request.app[SETTINGS].api_key
    if key and request.path.startswith("/v1/"):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise APIError(401, "missing or wrong API key: send the header 'Authorization: Bearer KEY'",
                           code="invalid_api_key", type_="authentication_error",
                           headers={"WWW-Authenticate": "Bearer"})
    return await handler(request)


async def health(request):
    app = request.app
    sched: Scheduler = app[SCHEDULER]
    return web.json_response({"status": "ok", "model": app[ENGINE].model_id, "active": sched.active,
                              "queued": sched.queued, "auth_required": bool(app[SETTINGS].api_key),
                              "max_tokens_cap": app[SETTINGS].max_tokens_cap, "stats": app[ENGINE].stats_now()})


async def models(request):
    engine: Engine = request.app[ENGINE]
    return web.json_response({"object": "list", "data": [
        {"object": "model", "created": engine.created, "owned_by": "cllm", **engine.describe()}]})


async def model(request):
    engine: Engine = request.app[ENGINE]
    if request.match_info["model"] != engine.model_id:
        raise APIError(404, f"no model {request.match_info['model']!r}; this server has {engine.model_id!r}",
                       param="model", code="model_not_found")
    return web.json_response({"object": "model", "created": engine.created, "owned_by": "cllm", **engine.describe()})


async def read_json(request) -> dict:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].max_body_bytes
        raise APIError(413, f"the request body is larger than {limit} bytes", code="request_too_large") from None
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise APIError(400, f"the request body is not valid JSON ({exc})", code="invalid_json") from None


async def _watch_disconnect(request, cancel: threading.Event, poll: float) -> None:
    """Set `cancel` once the client's connection closes."""
    while not cancel.is_set():
        transport = request.transport
        if transport is None or transport.is_closing():
            cancel.set()
            return
        await asyncio.sleep(poll)


async def completions(request):
    app = request.app
    settings: ServerSettings = app[SETTINGS]
    engine: Engine = app[ENGINE]
    sched: Scheduler = app[SCHEDULER]
    req = parse_completion_request(await read_json(request), settings)
    sched.admit()
    cancel = threading.Event()
    sched.cancel_events.add(cancel)
    watcher = asyncio.create_task(_watch_disconnect(request, cancel, settings.disconnect_poll_s))
    acquired = False
    try:
        await sched.acquire()
        acquired = True
        if cancel.is_set():
            return web.Response(status=499)
        loop = asyncio.get_running_loop()
        events = EventChannel(loop)
        emit = events.put

        def work():
            try:
                return engine.run(req, cancel, emit)
            finally:
                emit("end")

        future = loop.run_in_executor(sched.pool, work)
        # the slot is free when the worker is, even when this handler is cancelled first
        future.add_done_callback(lambda f: sched.release())
        acquired = False
        meta = {"id": "cmpl-" + secrets.token_hex(12), "object": "text_completion", "created": int(time.time()),
                "model": engine.model_id}
        if req.stream:
            return await _stream(request, req, events, future, cancel, meta)
        return await _collect(request, req, events, future, meta)
    finally:
        if acquired:
            sched.release()
        cancel.set()  # a handler that ends early (error, disconnect, cancellation) stops its worker
        sched.cancel_events.discard(cancel)
        watcher.cancel()


async def _result(future) -> dict:
    """The worker's result; a failure inside generation is a 500 in OpenAI's error shape."""
    try:
        return await future
    except Exception as exc:  # noqa: BLE001 (whatever broke, the client gets JSON, the log the traceback)
        LOG.exception("generation failed")
        raise APIError(500, f"generation failed: {exc.__class__.__name__}: {exc}", code="generation_failed",
                       type_="server_error") from None


def _usage(result: dict) -> dict:
    return {"prompt_tokens": result["prompt_tokens"], "completion_tokens": result["completion_tokens"],
            "total_tokens": result["prompt_tokens"] + result["completion_tokens"]}


class EventChannel:
    """Events from a worker thread to the request's coroutine. The worker appends to a deque and
    wakes the event loop only when it is not already due to wake (one wake-up per batch of tokens,
    not per token: what a busy loop has not picked up yet is picked up together)."""

    def __init__(self, loop):
        self.loop = loop
        self.items: collections.deque = collections.deque()
        self.lock = threading.Lock()
        self.scheduled = False
        self.ready = asyncio.Event()
        self.ended = False

    def put(self, *event) -> None:  # any thread
        with self.lock:
            self.items.append(event)
            if self.scheduled:
                return
            self.scheduled = True
        self.loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        with self.lock:
            self.scheduled = False
        self.ready.set()

    async def get_batch(self) -> list[tuple]:
        """Every event so far (at least one); `ended` turns true with the final "end" event."""
        while True:
            with self.lock:
                batch = list(self.items)
                self.items.clear()
            if batch:
                self.ended = self.ended or batch[-1][0] == "end"
                return batch
            self.ready.clear()
            await self.ready.wait()


async def _collect(request, req, events, future, meta):
    texts: dict[int, list[str]] = {}
    reasons: dict[int, str] = {}
    while True:
        for event in await events.get_batch():
            if event[0] == "delta":
                texts.setdefault(event[1], []).append(event[2])
            elif event[0] == "done":
                reasons[event[1]] = event[2]
        if events.ended:
            break
    result = await _result(future)
    if result["cancelled"] and (request.transport is None or request.transport.is_closing()):
        _log_dropped(request, future, meta)
    choices = [{"text": "".join(texts.get(i, [])), "index": i, "logprobs": None, "finish_reason": reasons.get(i)}
               for i in sorted(set(texts) | set(reasons))]
    return web.json_response({**meta, "choices": choices, "usage": _usage(result)})


async def _stream(request, req, events, future, cancel, meta):
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)

    async def send(obj) -> None:
        data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
        await response.write(f"data: {data}\n\n".encode())

    def chunk(index, text, reason):
        return {**meta, "choices": [{"text": text, "index": index, "logprobs": None, "finish_reason": reason}]}

    try:
        ended = False
        while not ended:
            # everything the worker produced since the last write goes out together: consecutive
            # pieces of text of one choice become one chunk (fewer writes when the loop is busy)
            batch = await events.get_batch()
            pending = None  # [index, text] not yet sent
            for event in batch:
                if event[0] == "delta" and pending is not None and pending[0] == event[1]:
                    pending[1] += event[2]
                    continue
                if pending is not None:
                    await send(chunk(pending[0], pending[1], None))
                    pending = None
                if event[0] == "delta":
                    pending = [event[1], event[2]]
                elif event[0] == "done":
                    await send(chunk(event[1], "", event[2]))
                elif event[0] == "end":
                    ended = True
            if pending is not None:
                await send(chunk(pending[0], pending[1], None))
        try:
            result = await _result(future)
        except APIError as exc:  # the headers are sent: the error goes into the stream
            await send({"error": {"message": exc.message, "type": exc.type, "param": None, "code": exc.code}})
            await send("[DONE]")
            await response.write_eof()
            return response
        if req.include_usage:
            await send({**meta, "choices": [], "usage": _usage(result)})
        await send("[DONE]")
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError) as exc:
        # the client went away: a write failed (aiohttp's ClientConnectionResetError: no traceback, it is not
        # the server's error) or the server cancelled this handler (re-raised, as cancellation must be)
        cancel.set()
        _log_dropped(request, future, meta)
        if isinstance(exc, asyncio.CancelledError):
            raise
    return response


def _log_dropped(request, future, meta) -> None:
    """One line once the worker of a dropped request has stopped (within one decoding step)."""
    peer = request.remote or "a client"

    def report(f) -> None:
        done = not f.cancelled() and f.exception() is None
        tokens = f"{f.result()['completion_tokens']} tokens" if done else "its tokens"
        LOG.warning("%s disconnected: generation %s cancelled after %s", peer, meta["id"], tokens)

    future.add_done_callback(report)


async def index(request):
    return _static_file("index.html")


async def static(request):
    return _static_file(request.match_info["name"])


def _static_file(name: str):
    """A file of the static folder, never anything outside it (no '..', no links out, no folders)."""
    root = os.path.realpath(STATIC_DIR)
    path = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, path]) != root or not os.path.isfile(path) or os.path.basename(path).startswith("."):
        raise APIError(404, "no such file", code="not_found")
    ctype = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return web.FileResponse(path, headers={"Content-Type": ctype, "X-Content-Type-Options": "nosniff",
                                           "Content-Security-Policy": "default-src 'self'; style-src 'self'",
                                           "Cache-Control": "no-cache"})


def create_app(engine: Engine, settings: ServerSettings | None = None) -> web.Application:
    settings = settings or ServerSettings()
    app = web.Application(middlewares=[errors_middleware, auth_middleware], client_max_size=settings.max_body_bytes)
    app[ENGINE] = engine
    app[SETTINGS] = settings

    async def startup(app):
        app[SCHEDULER] = Scheduler(settings, engine.init_worker)

    async def cleanup(app):
        sched = app[SCHEDULER]
        for event in list(sched.cancel_events):  # shutting down: stop every generation
            event.set()
        sched.pool.shutdown(wait=True, cancel_futures=True)

    app.on_startup.append(startup)
    app.on_cleanup.append(cleanup)
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/v1/models/{model:.+}", model)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/images/generations", image_generations)  # image models (cllm/vision/serve.py)
    app.router.add_get("/", index)
    app.router.add_get("/static/{name:.+}", static)
    return app


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Listen on host:port (0: a free port); returns the runner (cleanup() stops it) and the port.
    The handler of a request whose client disconnects is not cancelled (aiohttp's default for
    servers): the disconnect watcher stops its generation."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, bound
