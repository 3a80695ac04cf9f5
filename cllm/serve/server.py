"""The HTTP server: OpenAI-style completions and chat completions APIs, health, model list and a small page.

    GET  /health            {"status": "ok", "model": ..., "chat": true|false (it has a chat template), "active": n,
                            "queued": m, "stats": {"requests", "cancelled", "completion_tokens"} of the requests
                            finished}   (no auth)
    GET  /v1/models         {"object": "list", "data": [{"id": ..., "object": "model", "chat": true|false, ...}]}
    GET  /v1/models/ID      that one model (404 for another id)
    POST /v1/completions    OpenAI's completions request/response; "stream": true sends
                            server-sent events `data: {chunk}` and a final `data: [DONE]`
    POST /v1/chat/completions  OpenAI's chat completions: the messages rendered by the tokenizer's chat
                            template, the reply ends at its end-of-turn token; a model without a template
                            answers 400 "chat_not_supported" (chat_completions, below)
    POST /v1/images/generations  an image model's samples as base64 PNGs (image_generations, below); a
                            text model answers 400 "images_not_supported"
    POST /tokenize          text -> token ids in llama.cpp's shape ({"content", "add_special", "with_pieces"}) or
                            vLLM's ({"prompt", "add_special_tokens"}) -> {"tokens", "count", "max_model_len"}
    POST /detokenize        {"tokens": [...]} -> {"content": text, "prompt": text} (llama.cpp's and vLLM's names)
    GET  /tokenizer_info    vLLM's: {"tokenizer_class", "eos_token", "bos_token", "model_max_length", ...}; with
                            /tokenize it is what lm-evaluation-harness's "remote tokenizer" looks for
    GET  /metrics           Prometheus' text format (cllm/serve/metrics.py; no auth, as /health)
    GET  /                  the page (cllm/serve/static/index.html), GET /static/NAME its files

Generation runs in a thread pool (Engine.run), never on the event loop. At most
`max_concurrent` requests generate at once; up to `max_queue` more wait for a slot; beyond that a
request gets 429 with Retry-After. A client that disconnects (while queued or generating) sets its
cancel event, and the worker stops before its next token; the log gets one line
("... disconnected: generation ID cancelled after N tokens"). Every error is OpenAI's JSON shape
{"error": {"message", "type", "param", "code"}}. The request's "model" may be any string (tools send
their own default names): the server has one model and answers with its id. The API key, when set, guards
/v1/ and the tokenizer's endpoints.

Request bodies are checked by cllm/serve/requests.py; cllm/serve/responses.py turns a generation's events
into the JSON or server-sent-events response.
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import hmac
import json
import logging
import mimetypes
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from cllm import kinds
from cllm.config import option
from cllm.errors import ConfigError, TokenizerError
from cllm.generation import SamplingConfig
from cllm.serve.engine import Engine
from cllm.serve.metrics import CONTENT_TYPE, Metrics
from cllm.serve.requests import (
    APIError,
    check_prompt_ids,
    compile_structured,
    parse_chat_request,
    parse_completion_request,
    parse_detokenize_request,
    parse_image_request,
    parse_tokenize_request,
)
from cllm.serve.responses import CHAT, TEXT, EventChannel, collect_response, stream_response

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
LOG = logging.getLogger("cllm.serve")  # no handler: Python prints warnings as the bare message on stderr


RETRY_AFTER_S = 1  # the Retry-After of a 429 (the queue is full)
DISCONNECT_POLL_S = 0.05  # how often a generating request checks that its client is still there


@dataclasses.dataclass
class ServerSettings:
    """The server's limits; its fields are also `cli.py serve`'s flags (cllm/commands/serve.py)."""

    # 16: the batcher decodes the sampled requests together (cllm/serve/batcher.py), so that many clients cost
    # about one step each token rather than 16 (docs/performance.md, Serving)
    max_concurrent: int = option(16, "generations at once (worker threads; sampled ones decode as one batch)")
    max_queue: int = option(32, "requests waiting for a generation slot (beyond: 429 with Retry-After)")
    max_tokens_cap: int = option(1024, "largest max_tokens a request may ask for")
    max_prompt_chars: int = option(32768, "longest prompt, in characters")
    max_body_bytes: int = option(256 * 1024, "largest request body, in bytes")
    max_n: int = option(8, "most choices per request (n, and n x prompts)")
    api_key: str | None = option(None, "require `Authorization: Bearer KEY` on /v1/ (none: the CLLM_API_KEY "
                                       "environment variable, else no key)")

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            value, minimum = getattr(self, f.name), 0 if f.name == "max_queue" else 1
            if f.name != "api_key" and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
                raise ConfigError(f"--{f.name.replace('_', '-')} must be an integer >= {minimum}, got {value!r}")
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key.strip()):
            raise ConfigError("--api-key must be a non-empty string")


def error_response(status: int, message: str, param=None, code=None, type_="invalid_request_error", headers=None):
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def host_warning(host: str) -> str | None:
    """The warning printed when the server listens beyond this machine."""
    if host in LOCAL_HOSTS:
        return None
    return (f"warning: listening on {host}: anyone who can reach this machine can use the model"
            " (and its CPU); pass --api-key (or set CLLM_API_KEY) and prefer --host 127.0.0.1 behind a proxy")


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
                           headers={"Retry-After": str(RETRY_AFTER_S)})
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
METRICS = web.AppKey("metrics", Metrics)
GUARDED = ("/v1/", "/tokenize", "/detokenize", "/tokenizer_info")  # the paths the API key guards


@web.middleware
async def metrics_middleware(request, handler):
    """Count every answer by route and status (outermost: it sees the error middleware's answers too)."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "other"
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:  # the server cancelled the handler (its client went away): nginx's 499
        status = 499
        raise
    finally:
        request.app[METRICS].requests.labels(route, str(status)).inc()


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
    if key and request.path.startswith(GUARDED):
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
    return web.json_response({"status": "ok", "model": app[ENGINE].model_id,
                              "chat": app[ENGINE].chat_template is not None, "active": sched.active,
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


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


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
    engine: Engine = request.app[ENGINE]
    req = parse_completion_request(await read_json(request), request.app[SETTINGS])
    check_prompt_ids(req, engine.tokenizer.vocab_size, engine.context)
    compile_structured(req, engine.tokenizer)
    return await _generate(request, req, "cmpl-", TEXT)


async def tokenize(request):
    """POST /tokenize: llama.cpp's {"content": text, "add_special": false, "with_pieces": false} or vLLM's
    {"prompt": text, "add_special_tokens": true} -> {"tokens": [ids], "count", "max_model_len"}; with_pieces makes
    each token {"id", "piece"}. add_special puts the tokenizer's BOS first, where it has one."""
    engine: Engine = request.app[ENGINE]
    text, add_special, with_pieces = parse_tokenize_request(await read_json(request), request.app[SETTINGS])
    tok = engine.tokenizer
    ids = [int(i) for i in tok.encode(text)] if text else []
    if add_special and tok.bos_id is not None and ids[:1] != [tok.bos_id]:
        ids.insert(0, tok.bos_id)
    tokens = [{"id": i, "piece": tok.decode([i])} for i in ids] if with_pieces else ids
    return web.json_response({"tokens": tokens, "count": len(ids), "max_model_len": engine.context})


async def detokenize(request):
    """POST /detokenize: {"tokens": [ids]} -> {"content": text, "prompt": text} (llama.cpp's name, vLLM's)."""
    engine: Engine = request.app[ENGINE]
    ids = parse_detokenize_request(await read_json(request), engine.tokenizer.vocab_size)
    text = engine.tokenizer.decode(ids)
    return web.json_response({"content": text, "prompt": text})


async def tokenizer_info(request):
    """GET /tokenizer_info, vLLM's: the special tokens' strings (null where the tokenizer has none), the context
    (model_max_length), the tokenizer's kind (tokenizer_class) and its chat template, if any."""
    engine: Engine = request.app[ENGINE]
    tok = engine.tokenizer
    specials = {name: None for name in ("bos_token", "eos_token", "pad_token", "unk_token")}
    specials.update(tok.special_token_strings())
    return web.json_response({"tokenizer_class": tok.kind, **specials, "model_max_length": engine.context,
                              "vocab_size": tok.vocab_size, "add_bos_token": bool(getattr(tok, "add_bos", False)),
                              "chat_template": engine.chat_template})


async def metrics(request):
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})


async def chat_completions(request):
    """POST /v1/chat/completions: OpenAI's chat request (messages, max_completion_tokens or max_tokens, and the
    sampling fields of /v1/completions: cllm/serve/requests.py parse_chat_request) -> {"id": "chatcmpl-...",
    "object": "chat.completion", "choices": [{"index", "message": {"role": "assistant", "content"},
    "finish_reason", "logprobs"}], "usage"}, or with "stream": true "chat.completion.chunk" events (logprobs: null
    unless the request asks, cllm/serve/responses.py ChatShape). The
    conversation is rendered by the tokenizer's chat template with the generation prompt (cropped to the context
    as a completion's prompt is); a reply ends at the template's end-of-turn token (never part of the content,
    finish_reason "stop"). Without max tokens, a reply may run to the server's max_tokens_cap (OpenAI's has no
    limit but the context; here generation goes on past a full context, as completions do)."""
    engine: Engine = request.app[ENGINE]
    if engine.chat_template is None:
        raise APIError(400, f"this model's {engine.tokenizer.kind} tokenizer has no chat template, so it cannot "
                            "chat; use POST /v1/completions, or serve a model fine-tuned on conversations "
                            "(docs/training.md)", code="chat_not_supported")
    messages, req = parse_chat_request(await read_json(request), request.app[SETTINGS])
    check_prompt_ids(req, engine.tokenizer.vocab_size, engine.context)
    try:
        req.prompt_ids = engine.chat_prompt_ids(messages)
    except TokenizerError as exc:  # the template's own refusal (raise_exception) or what it could not render
        raise APIError(400, str(exc), param="messages", code="chat_template_error") from None
    req.end_ids = engine.end_of_turn
    if req.max_tokens is None:  # a reply normally ends sooner, at the end-of-turn token
        req.max_tokens = request.app[SETTINGS].max_tokens_cap
    compile_structured(req, engine.tokenizer)
    return await _generate(request, req, "chatcmpl-", CHAT)


async def _generate(request, req, id_prefix: str, shape):
    """Run `req` on a worker thread under the admission limits; its response as JSON or server-sent events."""
    app = request.app
    engine: Engine = app[ENGINE]
    sched: Scheduler = app[SCHEDULER]
    stats: Metrics = app[METRICS]
    sched.admit()
    cancel = threading.Event()
    sched.cancel_events.add(cancel)
    watcher = asyncio.create_task(_watch_disconnect(request, cancel, DISCONNECT_POLL_S))
    loop = asyncio.get_running_loop()
    events = EventChannel(loop)
    # timed from here: the time to the first token includes the wait for a slot
    emit = stats.timed_emit(events.put, skip_first=req.echo)
    acquired = False
    try:
        await sched.acquire()
        acquired = True
        if cancel.is_set():
            return web.Response(status=499)

        def work():
            try:
                return engine.run(req, cancel, emit)
            finally:
                emit("end")

        future = loop.run_in_executor(sched.pool, work)
        # the slot is free when the worker is, even when this handler is cancelled first
        future.add_done_callback(lambda f: sched.release())
        acquired = False
        meta = {"id": id_prefix + secrets.token_hex(12), "object": shape.object, "created": int(time.time()),
                "model": engine.model_id}
        future.add_done_callback(lambda f: _finished(f, stats, meta["id"], req))
        if req.stream:
            return await stream_response(request, req, events, future, cancel, meta, shape)
        return await collect_response(request, req, events, future, meta, shape)
    finally:
        if acquired:
            sched.release()
        cancel.set()  # a handler that ends early (error, disconnect, cancellation) stops its worker
        sched.cancel_events.discard(cancel)
        watcher.cancel()


def _finished(future, stats: Metrics, generation_id: str, req) -> None:
    """Count a finished generation's tokens and write its log line (with the request's 'user')."""
    if future.cancelled() or future.exception() is not None:
        return
    result = future.result()
    stats.finished(result)
    LOG.info("generation %s: %d prompt tokens, %d generated%s%s", generation_id, result["prompt_tokens"],
             result["completion_tokens"], ", cancelled" if result["cancelled"] else "",
             f", user {req.user!r}" if req.user else "")


async def image_generations(request):
    """POST /v1/images/generations: PNGs as base64 in JSON, in the shape of OpenAI's image-generation API where
    it applies:

        {"n": 4, "class": "7", "temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 0, "grid": false,
         "response_format": "b64_json"}
        -> {"created": 1700000000, "model": "...", "data": [{"b64_json": "<PNG>", "class": "7"}, ...]}

    "class" (a class folder's name; omitted: the model draws one per image) is CLLM's extension; with
    "grid": true, "data" holds one PNG of all n images and their "classes". The model's dataset kind
    (cllm/kinds.py) makes the images; a kind without them (text) answers 400 "images_not_supported", and a
    model without classes refuses "class". Images are generated on the worker threads, under the same
    admission limits as completions; cllm/serve/requests.py checks the request."""
    engine, sched = request.app[ENGINE], request.app[SCHEDULER]
    tok = engine.tokenizer
    kind = kinds.for_tokenizer(tok)
    if kind.sample_pngs is None:
        raise APIError(400, f"this server's model generates {kind.name} ({tok.kind} tokenizer), not images; use "
                            "POST /v1/completions", code="images_not_supported")
    body = await read_json(request)
    n, label, temperature, top_k, top_p, seed, as_grid = parse_image_request(body, request.app[SETTINGS], tok)
    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    sched.admit()
    await sched.acquire()
    try:
        pngs, labels = await asyncio.get_running_loop().run_in_executor(
            sched.pool, engine.run_exclusive, kind.sample_pngs, engine.model, tok, n, sampling, label, as_grid)
    finally:
        sched.release()
    b64 = [base64.b64encode(png).decode("ascii") for png in pngs]
    if as_grid:
        data = [{"b64_json": b64[0], "classes": labels}]
    else:
        data = [{"b64_json": b, "class": c} for b, c in zip(b64, labels)]
    return web.json_response({"created": int(time.time()), "model": engine.model_id, "data": data})


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
    app = web.Application(middlewares=[metrics_middleware, errors_middleware, auth_middleware],
                          client_max_size=settings.max_body_bytes)
    app[ENGINE] = engine
    app[SETTINGS] = settings
    app[METRICS] = Metrics()

    async def startup(app):
        app[SCHEDULER] = Scheduler(settings, engine.init_worker)
        app[METRICS].watch_scheduler(app[SCHEDULER])

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
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/images/generations", image_generations)  # image models
    app.router.add_post("/tokenize", tokenize)
    app.router.add_post("/detokenize", detokenize)
    app.router.add_get("/tokenizer_info", tokenizer_info)
    app.router.add_get("/metrics", metrics)
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
