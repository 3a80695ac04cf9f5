"""A completion's HTTP response, from the events its worker thread emits: one JSON body, or server-sent
events as the text arrives (cllm/serve/server.py's `completions` and `chat_completions` start the worker and
pick one).

The worker (Engine.run) emits ("delta", index, text), ("done", index, finish_reason, n_tokens), with
log-probabilities asked for ("logprobs", index, [(token text, log-probability, [(text, log-probability)])]) and,
last, ("end",) into an EventChannel; the coroutine here takes them in batches. A Shape says how a choice looks in
each API: TEXT for /v1/completions, CHAT for /v1/chat/completions (a message, and in a stream the deltas
{"role": "assistant"} first, then {"content": piece}s, then {} with the finish reason).
"""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading

from aiohttp import web

from cllm.serve.requests import APIError

LOG = logging.getLogger("cllm.serve")  # the server's logger (cllm/serve/server.py)


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


class Shape:
    """/v1/completions' choices: {"text", "index", "logprobs", "finish_reason"}, whole or as a chunk; logprobs in
    OpenAI's completions shape {"tokens", "token_logprobs", "top_logprobs": [{text: log-probability}],
    "text_offset"} (the first echoed token's log-probability and alternatives are null)."""

    object = chunk_object = "text_completion"

    def choice(self, index: int, text: str, reason, logprobs=None) -> dict:
        return {"text": text, "index": index, "logprobs": logprobs, "finish_reason": reason}

    def chunk_choice(self, index: int, text: str, reason, logprobs=None) -> dict:
        return self.choice(index, text, reason, logprobs)

    def logprobs(self, entries: list[tuple], offset: int) -> tuple[dict, int]:
        """(the logprobs object of `entries`, the text offset after them); text_offset counts characters from the
        start of the choice's text (the echoed prompt's included)."""
        offsets = []
        for token, _, _ in entries:
            offsets.append(offset)
            offset += len(token)
        return {"tokens": [e[0] for e in entries], "token_logprobs": [e[1] for e in entries],
                "top_logprobs": [None if e[1] is None else dict(e[2]) for e in entries],
                "text_offset": offsets}, offset

    def opening(self, n: int) -> list[dict]:
        """The chunk choices sent before any text."""
        return []


class ChatShape(Shape):
    """/v1/chat/completions' choices: {"index", "message": {"role": "assistant", "content"}, "logprobs",
    "finish_reason"}; a chunk's choice holds a "delta" instead of the message."""

    object, chunk_object = "chat.completion", "chat.completion.chunk"

    def choice(self, index, text, reason, logprobs=None):
        return {"index": index, "message": {"role": "assistant", "content": text}, "logprobs": logprobs,
                "finish_reason": reason}

    def chunk_choice(self, index, text, reason, logprobs=None):
        return {"index": index, "delta": {"content": text} if text else {}, "logprobs": logprobs,
                "finish_reason": reason}

    def logprobs(self, entries, offset):
        """OpenAI's chat shape: {"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob",
        "bytes"}]}]} (bytes: the token text's UTF-8)."""
        def item(token, logprob):
            return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}
        return {"content": [{**item(t, lp), "top_logprobs": [item(a, alp) for a, alp in top]}
                            for t, lp, top in entries]}, offset

    def opening(self, n):
        return [{"index": i, "delta": {"role": "assistant"}, "logprobs": None, "finish_reason": None}
                for i in range(n)]


TEXT, CHAT = Shape(), ChatShape()


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


async def collect_response(request, req, events, future, meta, shape: Shape = TEXT):
    texts: dict[int, list[str]] = {}
    reasons: dict[int, str] = {}
    scored: dict[int, list[tuple]] = {}
    while True:
        for event in await events.get_batch():
            if event[0] == "delta":
                texts.setdefault(event[1], []).append(event[2])
            elif event[0] == "logprobs":
                scored.setdefault(event[1], []).extend(event[2])
            elif event[0] == "done":
                reasons[event[1]] = event[2]
        if events.ended:
            break
    result = await _result(future)
    if result["cancelled"] and (request.transport is None or request.transport.is_closing()):
        _log_dropped(request, future, meta)
    choices = [shape.choice(i, "".join(texts.get(i, [])), reasons.get(i),
                            None if req.logprobs is None else shape.logprobs(scored.get(i, []), 0)[0])
               for i in sorted(set(texts) | set(reasons))]
    return web.json_response({**meta, "choices": choices, "usage": _usage(result)})


async def stream_response(request, req, events, future, cancel, meta, shape: Shape = TEXT):
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)

    async def send(obj) -> None:
        data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
        await response.write(f"data: {data}\n\n".encode())

    meta = {**meta, "object": shape.chunk_object}

    offsets: dict[int, int] = {}  # per choice, the text offset of its next token (for text_offset)

    def chunk(index, text, reason, entries=()):
        logprobs = None
        if req.logprobs is not None and entries:
            logprobs, offsets[index] = shape.logprobs(entries, offsets.get(index, 0))
        return {**meta, "choices": [shape.chunk_choice(index, text, reason, logprobs)]}

    try:
        for choice in shape.opening(req.n):
            await send({**meta, "choices": [choice]})
        ended = False
        while not ended:
            # everything the worker produced since the last write goes out together: consecutive
            # pieces of text (and token log-probabilities) of one choice become one chunk (fewer writes when
            # the loop is busy)
            batch = await events.get_batch()
            pending = None  # [index, text, log-probability entries] not yet sent
            for event in batch:
                kind = event[0]
                if kind in ("delta", "logprobs") and pending is not None and pending[0] == event[1]:
                    if kind == "delta":
                        pending[1] += event[2]
                    else:
                        pending[2].extend(event[2])
                    continue
                if pending is not None:
                    await send(chunk(pending[0], pending[1], None, pending[2]))
                    pending = None
                if kind == "delta":
                    pending = [event[1], event[2], []]
                elif kind == "logprobs":
                    pending = [event[1], "", list(event[2])]
                elif kind == "done":
                    await send(chunk(event[1], "", event[2]))
                elif kind == "end":
                    ended = True
            if pending is not None:
                await send(chunk(pending[0], pending[1], None, pending[2]))
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
