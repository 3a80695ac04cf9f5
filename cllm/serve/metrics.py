"""The server's Prometheus metrics (GET /metrics, in Prometheus' text format, through prometheus-client).

    cllm_requests_total{route, status}         HTTP requests answered, by route (the path pattern, "other" for a
                                               path no route has) and status code
    cllm_prompt_tokens_total                   prompt tokens of the generations (chat: the rendered conversation)
    cllm_generation_tokens_total               tokens generated
    cllm_time_to_first_token_seconds           from a generation request's admission to its choice's first text
                                               (queueing included; an echoed prompt is not its first text)
    cllm_time_per_output_token_seconds         each choice's mean time per token after its first
    cllm_requests_running, cllm_requests_waiting   generating now, waiting for a slot (the queue's depth)
    cllm_requests_cancelled_total              generations stopped because their client went away

Each app has its own registry (no process-wide state: tests run several apps in one process).
"""
from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST
# seconds; a tiny CPU model answers in milliseconds, a big one in seconds
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("cllm_requests", "HTTP requests answered, by route and status", ["route", "status"],
                                registry=r)
        self.prompt_tokens = Counter("cllm_prompt_tokens", "prompt tokens of the generations", registry=r)
        self.generation_tokens = Counter("cllm_generation_tokens", "tokens generated", registry=r)
        self.ttft = Histogram("cllm_time_to_first_token_seconds", "from admission to a choice's first text",
                              buckets=TTFT_BUCKETS, registry=r)
        self.per_token = Histogram("cllm_time_per_output_token_seconds", "a choice's mean time per token after its "
                                   "first", buckets=TOKEN_BUCKETS, registry=r)
        self.running = Gauge("cllm_requests_running", "requests generating now", registry=r)
        self.waiting = Gauge("cllm_requests_waiting", "requests waiting for a generation slot", registry=r)
        self.cancelled = Counter("cllm_requests_cancelled", "generations stopped because the client went away",
                                 registry=r)

    def watch_scheduler(self, scheduler) -> None:
        """The gauges read the scheduler's counts when scraped."""
        self.running.set_function(lambda: scheduler.active)
        self.waiting.set_function(lambda: scheduler.queued)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def timed_emit(self, emit, skip_first: bool):
        """emit (a worker's event sink, cllm/serve/engine.py) that also times each choice: its first "delta"
        (with skip_first, its second: the first is the echoed prompt) and its "done" with the token count."""
        start = time.perf_counter()
        seen: dict[int, int] = {}  # choice -> deltas so far
        first: dict[int, float] = {}  # choice -> time of its first generated text

        def timed(*event):
            kind = event[0]
            if kind == "delta":
                index = event[1]
                seen[index] = seen.get(index, 0) + 1
                if index not in first and seen[index] > skip_first:
                    first[index] = time.perf_counter()
                    self.ttft.observe(first[index] - start)
            elif kind == "done":
                index, n_tokens = event[1], event[3]
                if index in first and n_tokens > 1:
                    self.per_token.observe((time.perf_counter() - first[index]) / (n_tokens - 1))
            emit(*event)

        return timed

    def finished(self, result: dict) -> None:
        """Count a finished generation's tokens (Engine.run's result)."""
        self.prompt_tokens.inc(result["prompt_tokens"])
        self.generation_tokens.inc(result["completion_tokens"])
        if result["cancelled"]:
            self.cancelled.inc()
