"""`cli.py serve`: log-probabilities (completions' logprobs and echo, chat's logprobs), token-id prompts, the
tokenizer's endpoints, and the sampling fields that act (penalties, logit_bias, min_p)."""

from __future__ import annotations

import json
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from serve_helpers import random_checkpoint

from cllm.evaluate import evaluate_text
from cllm.generation import Generator, SamplingConfig
from cllm.multiple_choice import choice_loglikelihoods, encode_pair

PROMPT = "the cat sat"


async def post(client, path, **body):
    r = await client.post(path, json=body)
    return r.status, await r.json()


def sse(raw: str) -> list[dict]:
    events = [e[len("data: "):] for e in raw.strip().split("\n\n")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


# ------------------------------------------------------------------------------------ log-probabilities
async def test_echo_logprobs_equal_the_evaluators_losses(client, engine):
    """lm-evaluation-harness's request: token ids, echo, logprobs 1, max_tokens 1. The prompt's values are minus
    the per-token losses of Model.loss (what `cli.py evaluate` averages), and a choice's summed continuation equals
    `cli.py evaluate --task`'s log-likelihood."""
    tok, model = engine.tokenizer, engine.model
    ctx, cont = encode_pair(tok, "the cat", "sat.")
    ids = ctx + cont
    status, body = await post(client, "/v1/completions", prompt=[ids], echo=True, logprobs=1, max_tokens=1,
                              temperature=0, seed=1234)
    assert status == 200, body
    lp = body["choices"][0]["logprobs"]
    assert set(lp) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    assert len(lp["tokens"]) == len(ids) + 1  # the prompt's, then the one generated
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert "".join(lp["tokens"][:len(ids)]) == tok.decode(ids)
    assert lp["text_offset"][:3] == [0, 1, 2]
    model.loss(np.asarray([ids[:-1]], np.int32), np.asarray([ids[1:]], np.int32))
    losses = model.token_losses()[0]
    np.testing.assert_allclose(lp["token_logprobs"][1:len(ids)], -losses, rtol=1e-4, atol=1e-5)
    expected = choice_loglikelihoods(model, tok, "the cat", ["sat.", "ran."])[0]
    assert math.isclose(sum(lp["token_logprobs"][len(ctx):len(ids)]), expected, rel_tol=1e-4, abs_tol=1e-5)
    for value, top in zip(lp["token_logprobs"][1:], lp["top_logprobs"][1:]):
        assert len(top) == 1 and max(top.values()) >= value - 1e-9
    assert body["choices"][0]["text"].startswith(tok.decode(ids))


async def test_echo_logprobs_average_to_cli_evaluates_loss(client, engine):
    """`cli.py evaluate CKPT --text TEXT` on a text of one window: its loss is the mean of minus the echoed
    log-probabilities of the text's tokens after the first."""
    text = "the cat sat on a mat."[:16]
    result = evaluate_text(engine.checkpoint_path, text=text, progress=False)
    status, body = await post(client, "/v1/completions", prompt=engine.tokenizer.encode(text), echo=True, logprobs=0,
                              max_tokens=0)
    assert status == 200, body
    values = body["choices"][0]["logprobs"]["token_logprobs"]
    assert len(values) == len(text) and result["windows"] == 1
    assert math.isclose(result["loss"], -sum(values[1:]) / (len(values) - 1), rel_tol=1e-5)


def test_concurrent_echoes_score_as_alone(tmp_path_factory):
    """Echoes share the model's forward buffers (Model.forward): scored on two threads at once, as the server's
    workers do, they equal the values scored one at a time (a bigger model and long prompts, so that the forwards
    overlap)."""
    from cllm.serve import Engine
    from cllm.serve.engine import CompletionRequest

    engine = Engine.load(str(random_checkpoint(tmp_path_factory, embed_dim=64, num_layers=2, seq_len=256)))
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, engine.tokenizer.vocab_size, 250).tolist() for _ in range(4)]

    def score(prompt):
        entries = []
        engine.run(CompletionRequest(prompts=[prompt], echo=True, logprobs=1, max_tokens=0), threading.Event(),
                   lambda *e: entries.extend(e[2]) if e[0] == "logprobs" else None)
        return entries

    alone = [score(p) for p in prompts]
    with ThreadPoolExecutor(2) as pool:
        for _ in range(5):
            assert list(pool.map(score, prompts)) == alone


async def test_generated_logprobs_are_the_models_distribution(client, engine):
    """Greedy: each generated token is its step's likeliest (the first of top_logprobs), and its value equals what
    an echo of the same text scores it (the model's own distribution, before temperature)."""
    status, body = await post(client, "/v1/completions", prompt="the", max_tokens=6, temperature=0, logprobs=3)
    assert status == 200, body
    choice = body["choices"][0]
    lp = choice["logprobs"]
    assert "".join(lp["tokens"]) == choice["text"] and len(lp["tokens"]) == 6
    assert lp["text_offset"] == list(range(6))
    for token, value, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]):
        assert len(top) == 3 and list(top)[0] == token and math.isclose(top[token], value)
        assert value <= 0
    ids = engine.tokenizer.encode("the" + choice["text"])
    status, echoed = await post(client, "/v1/completions", prompt=ids, echo=True, logprobs=0, max_tokens=0)
    assert status == 200, echoed
    np.testing.assert_allclose(echoed["choices"][0]["logprobs"]["token_logprobs"][-6:], lp["token_logprobs"],
                               rtol=1e-4, atol=1e-5)
    # sampling at a high temperature reports the model's values too, not the tempered ones
    status, hot = await post(client, "/v1/completions", prompt="the", max_tokens=4, temperature=1.8, seed=3,
                             logprobs=2)
    assert status == 200, hot
    ids = engine.tokenizer.encode("the" + hot["choices"][0]["text"])
    status, echoed = await post(client, "/v1/completions", prompt=ids, echo=True, logprobs=0, max_tokens=0)
    np.testing.assert_allclose(echoed["choices"][0]["logprobs"]["token_logprobs"][-4:],
                               hot["choices"][0]["logprobs"]["token_logprobs"], rtol=1e-4, atol=1e-5)


async def test_streamed_logprobs_equal_the_whole_response(client):
    body = dict(prompt=PROMPT, max_tokens=8, temperature=0, logprobs=2, echo=True)
    status, whole = await post(client, "/v1/completions", **body)
    assert status == 200, whole
    r = await client.post("/v1/completions", json={**body, "stream": True})
    chunks = sse((await r.read()).decode())
    merged = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for c in chunks:
        if c["choices"][0]["logprobs"] is not None:
            for key in merged:
                merged[key] += c["choices"][0]["logprobs"][key]
    assert merged == whole["choices"][0]["logprobs"]
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole["choices"][0]["text"]


async def test_chat_logprobs(aiohttp_client, chat_engine):
    from cllm.serve import create_app

    client = await aiohttp_client(create_app(chat_engine))
    body = dict(messages=[{"role": "user", "content": "Hi"}], max_tokens=5, temperature=0, logprobs=True,
                top_logprobs=2)
    status, answer = await post(client, "/v1/chat/completions", **body)
    assert status == 200, answer
    choice = answer["choices"][0]
    content = choice["logprobs"]["content"]
    assert "".join(item["token"] for item in content) == choice["message"]["content"]
    for item in content:
        assert set(item) == {"token", "logprob", "bytes", "top_logprobs"}
        assert item["bytes"] == list(item["token"].encode("utf-8")) and item["logprob"] <= 0
        assert len(item["top_logprobs"]) == 2 and item["top_logprobs"][0]["token"] == item["token"]
        assert set(item["top_logprobs"][0]) == {"token", "logprob", "bytes"}
    r = await client.post("/v1/chat/completions", json={**body, "stream": True})
    chunks = sse((await r.read()).decode())
    streamed = [item for c in chunks for item in ((c["choices"][0].get("logprobs") or {}).get("content") or [])]
    assert streamed == content
    status, plain = await post(client, "/v1/chat/completions", **{**body, "logprobs": False, "top_logprobs": None})
    assert status == 200 and plain["choices"][0]["logprobs"] is None
    status, err = await post(client, "/v1/chat/completions", **{**body, "logprobs": False})
    assert status == 400 and err["error"]["param"] == "top_logprobs"


# ------------------------------------------------------------------------------------ prompts as token ids
async def test_token_id_prompts(client, engine):
    ids = engine.tokenizer.encode(PROMPT)
    base = dict(max_tokens=5, temperature=0)
    _, text = await post(client, "/v1/completions", prompt=PROMPT, **base)
    status, one = await post(client, "/v1/completions", prompt=ids, **base)
    assert status == 200 and one["choices"][0]["text"] == text["choices"][0]["text"]
    status, two = await post(client, "/v1/completions", prompt=[ids, ids[:3]], echo=True, **base)
    assert status == 200 and len(two["choices"]) == 2
    assert two["choices"][0]["text"] == PROMPT + text["choices"][0]["text"]
    assert two["usage"]["prompt_tokens"] == len(ids) + 3
    vocab = engine.tokenizer.vocab_size
    for bad in ([vocab], [1, -1], [[1], "a"], [[]], [1.5]):
        status, err = await post(client, "/v1/completions", prompt=bad)
        assert status == 400 and err["error"]["param"] == "prompt", (bad, err)
    status, err = await post(client, "/v1/completions", prompt=ids * 3, echo=True, logprobs=1)  # 33 > context 16
    assert status == 400 and err["error"]["code"] == "prompt_too_long"


# ------------------------------------------------------------------------------------ tokenizer endpoints
async def test_tokenize_detokenize_and_tokenizer_info(client, engine):
    tok = engine.tokenizer
    status, body = await post(client, "/tokenize", content=PROMPT)
    assert status == 200 and body["tokens"] == tok.encode(PROMPT) and body["max_model_len"] == 16
    status, body = await post(client, "/tokenize", content="ab", with_pieces=True)
    assert body["tokens"] == [{"id": i, "piece": p} for i, p in zip(tok.encode("ab"), "ab")]
    status, body = await post(client, "/tokenize", prompt="test", add_special_tokens=False)  # lm-eval's probe
    assert status == 200 and body["tokens"] == tok.encode("test")
    status, body = await post(client, "/detokenize", tokens=tok.encode(PROMPT))
    assert status == 200 and body == {"content": PROMPT, "prompt": PROMPT}
    r = await client.get("/tokenizer_info")
    info = await r.json()
    assert "eos_token" in info and info["model_max_length"] == 16 and info["tokenizer_class"] == tok.kind
    for path, body, param in [("/tokenize", {"content": 3}, "content"), ("/tokenize", {}, "content"),
                              ("/tokenize", {"content": "a", "prompt": "a"}, "content"),
                              ("/tokenize", {"content": "a", "add_special": "no"}, "add_special"),
                              ("/detokenize", {"tokens": [tok.vocab_size]}, "tokens"),
                              ("/detokenize", {"tokens": "ab"}, "tokens")]:
        status, err = await post(client, path, **body)
        assert status == 400 and err["error"]["param"] == param, (body, err)


async def test_tokenizer_special_tokens(aiohttp_client, chat_engine):
    from cllm.serve import create_app

    client = await aiohttp_client(create_app(chat_engine, ))
    tok = chat_engine.tokenizer
    info = await (await client.get("/tokenizer_info")).json()
    assert info["eos_token"] == tok.id_to_token(tok.eos_id) and info["chat_template"] == chat_engine.chat_template
    status, body = await post(client, "/tokenize", content="Hi", add_special=True)
    expected = tok.encode("Hi") if tok.bos_id is None else [tok.bos_id, *tok.encode("Hi")]
    assert status == 200 and body["tokens"] == expected


async def test_api_key_guards_the_tokenizer(aiohttp_client, engine):
    from cllm.serve import ServerSettings, create_app

    client = await aiohttp_client(create_app(engine, ServerSettings(api_key="k")))
    r = await client.post("/tokenize", json={"content": "a"})
    assert r.status == 401
    r = await client.post("/tokenize", json={"content": "a"}, headers={"Authorization": "Bearer k"})
    assert r.status == 200


# ------------------------------------------------------------------------------------ every parameter acts
def _direct(engine, prompt, **cfg) -> str:
    """What Generator makes from `prompt` with these settings (the reference the server must equal)."""
    bias = cfg.pop("logit_bias", None)
    ids = engine.prompt_ids(prompt)
    out = Generator(engine.model, eos_id=engine.tokenizer.eos_id).stream(
        ids, SamplingConfig(max_new_tokens=10, **cfg), bias)
    return engine.tokenizer.decode(list(out))


@pytest.mark.parametrize("fields", [
    {"presence_penalty": 2.0}, {"frequency_penalty": 1.5}, {"presence_penalty": -1.0, "frequency_penalty": 0.5},
])
async def test_penalties_act(client, engine, fields):
    status, body = await post(client, "/v1/completions", prompt=PROMPT, max_tokens=10, temperature=0, **fields)
    assert status == 200, body
    assert body["choices"][0]["text"] == _direct(engine, PROMPT, temperature=0.0, **fields)
    assert body["choices"][0]["text"] != _direct(engine, PROMPT, temperature=0.0)  # the penalty changed something


async def test_logit_bias_and_min_p_act(client, engine):
    forced = engine.tokenizer.encode("w")[0]
    status, body = await post(client, "/v1/completions", prompt=PROMPT, max_tokens=10, temperature=0.7, seed=2,
                              logit_bias={str(forced): 100})
    assert status == 200 and body["choices"][0]["text"] == "w" * 10, body
    greedy = _direct(engine, PROMPT, temperature=0.0)
    banned = engine.tokenizer.encode(greedy[0])[0]
    status, body = await post(client, "/v1/completions", prompt=PROMPT, max_tokens=10, temperature=0,
                              logit_bias={str(banned): -100})
    assert body["choices"][0]["text"][0] != greedy[0]
    assert body["choices"][0]["text"] == _direct(engine, PROMPT, temperature=0.0, logit_bias={banned: -100.0})
    # min_p 1 keeps only the likeliest token: any temperature and seed give the greedy text
    status, body = await post(client, "/v1/completions", prompt=PROMPT, max_tokens=10, temperature=2, seed=9, min_p=1)
    assert status == 200 and body["choices"][0]["text"] == greedy


@pytest.mark.parametrize("field,value", [
    ("presence_penalty", 2.5), ("frequency_penalty", "1"), ("min_p", 1.5), ("logit_bias", {"a": 1}),
    ("logit_bias", {"1": 101}), ("logit_bias", {"100000": 1}), ("logit_bias", [1]), ("logprobs", 21),
    ("logprobs", True), ("user", 3),
])
async def test_bad_new_fields_are_400(client, field, value):
    status, err = await post(client, "/v1/completions", prompt=PROMPT, **{field: value})
    assert status == 400 and err["error"]["param"] == field, err


@pytest.mark.parametrize("field,value", [("temperature", 0.5), ("logprobs", 1), ("presence_penalty", 1.0),
                                         ("seed", 1), ("min_p", 0.1), ("ignore_eos", True)])
async def test_beam_search_refuses_sampling_fields(client, field, value):
    status, err = await post(client, "/v1/completions", prompt=PROMPT, beam_width=2, **{field: value})
    assert status == 400 and err["error"]["param"] == field, err
