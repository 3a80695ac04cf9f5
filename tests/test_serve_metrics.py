"""`cli.py serve`'s GET /metrics: Prometheus' text format, parsed back with prometheus-client's parser; the counters
equal the requests made and the tokens their responses report."""

from __future__ import annotations

import asyncio
import json

from prometheus_client.parser import text_string_to_metric_families


async def scrape(client) -> dict:
    """{(sample name, sorted labels): value} of one GET /metrics."""
    r = await client.get("/metrics")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(await r.text()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def requests_counted(samples, route, status) -> float:
    return samples.get(("cllm_requests_total", (("route", route), ("status", str(status)))), 0.0)


async def test_metrics_count_requests_tokens_and_latency(client):
    before = await scrape(client)
    assert before[("cllm_requests_waiting", ())] == 0 and before[("cllm_requests_running", ())] == 0
    assert before[("cllm_generation_tokens_total", ())] == 0
    usages = []
    for body in ({"prompt": "the cat", "max_tokens": 5, "n": 2}, {"prompt": "a", "max_tokens": 3, "echo": True}):
        r = await client.post("/v1/completions", json=body)
        assert r.status == 200
        usages.append((await r.json())["usage"])
    r = await client.post("/v1/completions", json={"prompt": "the", "max_tokens": 4, "stream": True,
                                                   "stream_options": {"include_usage": True}})
    assert r.status == 200
    usages.append(json.loads((await r.text()).strip().split("\n\n")[-2][len("data: "):])["usage"])
    assert (await client.post("/v1/completions", json={"prompt": 5})).status == 400
    assert (await client.get("/no/such/path")).status == 404
    assert (await client.post("/tokenize", json={"content": "ab"})).status == 200
    samples = await scrape(client)
    assert requests_counted(samples, "/v1/completions", 200) == 3
    assert requests_counted(samples, "/v1/completions", 400) == 1
    assert requests_counted(samples, "other", 404) == 1
    assert requests_counted(samples, "/tokenize", 200) == 1
    assert requests_counted(samples, "/metrics", 200) == 1  # the first scrape; this one is counted once answered
    assert samples[("cllm_prompt_tokens_total", ())] == sum(u["prompt_tokens"] for u in usages)
    assert samples[("cllm_generation_tokens_total", ())] == sum(u["completion_tokens"] for u in usages) == 17
    # one first token per choice (4 choices; the echoed prompt is not a first token), and a per-token time for each
    assert samples[("cllm_time_to_first_token_seconds_count", ())] == 4
    assert samples[("cllm_time_per_output_token_seconds_count", ())] == 4
    assert samples[("cllm_time_to_first_token_seconds_sum", ())] > 0
    assert samples[("cllm_requests_cancelled_total", ())] == 0


async def test_metrics_count_a_dropped_stream(client):
    """A client that goes away mid-stream: its generation stops and is counted as cancelled."""
    r = await client.post("/v1/completions", json={"prompt": "the", "max_tokens": 1000, "stream": True,
                                                   "ignore_eos": True})
    await r.content.readuntil(b"\n\n")
    r.close()
    for _ in range(200):
        samples = await scrape(client)
        if samples[("cllm_requests_cancelled_total", ())] == 1:
            break
        await asyncio.sleep(0.05)
    assert samples[("cllm_requests_cancelled_total", ())] == 1
    assert 0 < samples[("cllm_generation_tokens_total", ())] < 1000
