"""POST /v1/chat/completions (cllm/serve/) and the chat loop it shares (cllm/chat/generate.py): replies equal greedy
generation on the rendered conversation up to the end-of-turn token, the OpenAI SDK streaming and not, usage,
n, stop strings, max_completion_tokens, finish reasons, the request errors, a model whose tokenizer is
imported from HuggingFace files with its template, and a llama."""

from __future__ import annotations

import json
import threading

import pytest
from openai import AsyncOpenAI, BadRequestError
from serve_helpers import ROOT, tiny_run

from cllm.chat.generate import end_of_turn_ids
from cllm.chat.template import CHATML_TEMPLATE, apply_chat_template
from cllm.config import ModelConfig
from cllm.generation import Generator, SamplingConfig
from cllm.interop.hf import tokenizer_files
from cllm.model import Model
from cllm.serve import Engine, ServerSettings, create_app
from cllm.serve.engine import CompletionRequest
from cllm.tokenizers import load_tokenizer
from cllm.tokenizers.imports import import_tokenizer

# questions of data/chat/conversations.jsonl (the model was trained on their answers) and one it never saw
ROWS = [json.loads(line) for line in (ROOT / "data" / "chat" / "conversations.jsonl").read_text().splitlines()]
QUESTIONS = [row["messages"][:-1] for row in ROWS[:4]] + [[{"role": "user", "content": "Hello, who are you?"}]]
HI = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is zero plus two?"}]


@pytest.fixture(scope="module")
def engine(chat_engine):
    # this file's engine is the chat model, in place of tests/conftest.py's plain-text one
    return chat_engine


@pytest.fixture
def make_client(aiohttp_client):
    async def make(engine, **settings):
        return await aiohttp_client(create_app(engine, ServerSettings(**settings)))

    return make


def greedy_reply(engine, messages, max_tokens=200):
    """(text, prompt tokens, reply tokens, finish reason) of greedy decoding on the rendered conversation until
    <|im_end|>, EOS or max_tokens: what the server must answer at temperature 0, worked out without it."""
    tok = engine.tokenizer
    ids = apply_chat_template(tok, messages, add_generation_prompt=True)
    im_end = tok.token_to_id("<|im_end|>")
    out = []
    for token in Generator(engine.model, eos_id=tok.eos_id).stream(ids, SamplingConfig(max_tokens, temperature=0)):
        if token == im_end:
            return tok.decode(out), len(ids), len(out), "stop"
        out.append(token)
    return tok.decode(out), len(ids), len(out), "stop" if len(out) < max_tokens else "length"


async def chat(client, **body):
    r = await client.post("/v1/chat/completions", json=body)
    return r.status, await r.json()


def sdk(client) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="unused", max_retries=0)


def test_the_end_of_turn_token_comes_from_the_template(engine):
    tok = load_tokenizer(str(engine.checkpoint_path) + "/tokenizer.json")
    assert end_of_turn_ids(tok) == {tok.token_to_id("<|im_end|>"), tok.eos_id} == engine.end_of_turn
    # Llama 3's layout: its <|eot_id|> after each message; a template whose turn ends in EOS: EOS alone
    tok.register_special_tokens(("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"))
    tok.chat_template = ("{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                         "{{ m['content'] }}<|eot_id|>{% endfor %}")
    assert end_of_turn_ids(tok) == {tok.token_to_id("<|eot_id|>"), tok.eos_id}
    tok.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{{ eos_token }}{% endfor %}"
    assert end_of_turn_ids(tok) == {tok.eos_id}
    tok.chat_template = "{{ raise_exception('no') }}"
    assert end_of_turn_ids(tok) == {tok.eos_id}
    # a template that wants a system message first is asked again with one
    tok.chat_template = ("{% if messages[0]['role'] != 'system' %}{{ raise_exception('system first') }}{% endif %}"
                         + CHATML_TEMPLATE)
    assert end_of_turn_ids(tok) == {tok.token_to_id("<|im_end|>"), tok.eos_id}


async def test_replies_are_greedy_generation_up_to_the_end_of_turn(engine, make_client):
    client = client_default = await make_client(engine)
    reasons = []
    for messages in QUESTIONS:
        text, prompt_tokens, tokens, reason = greedy_reply(engine, messages, max_tokens=40)
        status, body = await chat(client, messages=messages, temperature=0, max_tokens=40)
        assert status == 200, body
        assert set(body) == {"id", "object", "created", "model", "choices", "usage"}
        assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
        assert body["model"] == engine.model_id
        assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": reason, "logprobs": None}]
        assert body["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": tokens,
                                 "total_tokens": prompt_tokens + tokens}
        assert "<|im" not in text
        reasons.append(reason)
    assert reasons.count("stop") >= 3, reasons  # the end-of-turn token ended most replies
    # without max tokens a reply runs to its end of turn (or the server's cap)
    client = await make_client(engine, max_tokens_cap=6)
    for cap in (1024, 6):
        text, _, tokens, reason = greedy_reply(engine, HI, max_tokens=cap)
        status, body = await chat(client if cap == 6 else client_default, messages=HI, temperature=0)
        assert body["choices"][0]["message"]["content"] == text and body["usage"]["completion_tokens"] == tokens
        assert body["choices"][0]["finish_reason"] == reason == ("length" if cap == 6 else "stop")


async def test_the_openai_sdk_streams_and_not(engine, make_client):
    client = await make_client(engine)
    oai = sdk(client)
    text, prompt_tokens, tokens, reason = greedy_reply(engine, HI, max_tokens=30)
    assert reason == "stop" and tokens > 3, (text, tokens)
    r = await oai.chat.completions.create(model="gpt-4o", messages=HI, temperature=0, max_completion_tokens=30)
    assert r.choices[0].message.content == text and r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason == "stop" and r.object == "chat.completion"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (prompt_tokens, tokens)
    stream = await oai.chat.completions.create(model="x", messages=HI, temperature=0, max_tokens=30, stream=True,
                                               stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant" and not chunks[0].choices[0].delta.content
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == text
    assert [c.choices[0].finish_reason for c in chunks[:-1]][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == tokens
    # the token limit: finish_reason "length", as many tokens as asked
    short = await oai.chat.completions.create(model="x", messages=HI, temperature=0, max_completion_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3
    assert text.startswith(short.choices[0].message.content)
    # a stop string ends the reply before it (finish_reason "stop"), streamed or not
    cut = text.split()[1]
    stopped = await oai.chat.completions.create(model="x", messages=HI, temperature=0, max_tokens=30, stop=[cut])
    assert stopped.choices[0].message.content == text[:text.index(cut)]
    assert stopped.choices[0].finish_reason == "stop"
    stream = await oai.chat.completions.create(model="x", messages=HI, temperature=0, max_tokens=30, stop=cut,
                                               stream=True)
    assert "".join([c.choices[0].delta.content or "" async for c in stream]) == text[:text.index(cut)]
    # n choices with a seed: the same seed, the same choices
    two = await oai.chat.completions.create(model="x", messages=HI, n=2, seed=3, temperature=1.5, max_tokens=12)
    again = await oai.chat.completions.create(model="x", messages=HI, n=2, seed=3, temperature=1.5, max_tokens=12)
    assert [c.index for c in two.choices] == [0, 1]
    assert [c.message.content for c in two.choices] == [c.message.content for c in again.choices]
    assert two.choices[0].message.content != two.choices[1].message.content
    assert two.usage.prompt_tokens == prompt_tokens  # the conversation once, however many choices
    await oai.close()


async def test_a_stream_of_two_choices(engine, make_client):
    client = await make_client(engine)
    r = await client.post("/v1/chat/completions", json={"messages": HI, "n": 2, "seed": 1, "max_tokens": 8,
                                                         "stream": True})
    assert r.status == 200 and r.headers["Content-Type"] == "text/event-stream"
    events = (await r.text()).split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(e[len("data: "):]) for e in events[:-2]]
    assert [c["choices"][0]["delta"] for c in chunks[:2]] == [{"role": "assistant"}] * 2
    assert [c["choices"][0]["index"] for c in chunks[:2]] == [0, 1]
    texts, reasons = {0: "", 1: ""}, {}
    for c in chunks[2:]:
        (choice,) = c["choices"]
        texts[choice["index"]] += choice["delta"].get("content", "")
        if choice["finish_reason"]:
            reasons[choice["index"]] = choice["finish_reason"]
    status, whole = await chat(client, messages=HI, n=2, seed=1, max_tokens=8)
    assert texts == {c["index"]: c["message"]["content"] for c in whole["choices"]}
    assert reasons == {c["index"]: c["finish_reason"] for c in whole["choices"]}


def assert_error(status, body, param=None, code="invalid_value", words=""):
    assert status == 400, body
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code and body["error"]["param"] == param, body
    assert words in body["error"]["message"], body


async def test_bad_requests_get_json_errors(engine, make_client):
    client = await make_client(engine, max_prompt_chars=100)
    user = {"role": "user", "content": "hi"}
    cases = [
        ({"messages": []}, "messages", "non-empty list"),
        ({}, "messages", "non-empty list"),
        ({"messages": "hi"}, "messages", "non-empty list"),
        ({"messages": [user, "hi"]}, "messages[1]", "object"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role", "'system', 'user', 'assistant'"),
        ({"messages": [{"content": "x"}]}, "messages[0].role", "got null"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "string"),
        ({"messages": [{"role": "user", "content": None}]}, "messages[0].content", "string"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
         "messages[0].content[0]", "text only"),
        ({"messages": [{"role": "assistant", "content": "", "tool_calls": []}]}, "messages[0].tool_calls", "tools"),
        ({"messages": [user], "max_tokens": 5, "max_completion_tokens": 5}, "max_tokens", "not both"),
        ({"messages": [user], "max_completion_tokens": -1}, "max_completion_tokens", "non-negative"),
        ({"messages": [user], "temperature": "hot"}, "temperature", "[0, 2]"),
        ({"messages": [user], "n": 0}, "n", "positive"),
        ({"messages": [user], "stop": [1]}, "stop", "strings"),
        ({"messages": [user], "stream_options": {"include_usage": True}}, "stream_options", "stream"),
        ({"messages": [user], "echo": True}, "echo", "unknown field"),
        ({"messages": [user], "beam_width": 2}, "beam_width", "unknown field"),
        ({"messages": [user], "logprobs": 1}, "logprobs", "true or false"),
    ]
    for body, param, words in cases:
        status, answer = await chat(client, **body)
        assert_error(status, answer, param, words=words)
    status, answer = await chat(client, messages=[user], max_completion_tokens=10**6)
    assert_error(status, answer, "max_completion_tokens", "max_tokens_too_large")
    status, answer = await chat(client, messages=[user] * 60)
    assert_error(status, answer, "messages", "prompt_too_long", "120 characters")
    r = await client.post("/v1/chat/completions", data=b"{not json")
    assert_error(r.status, await r.json(), code="invalid_json")
    # OpenAI's defaults change nothing and are accepted; text parts are joined by newlines
    status, answer = await chat(client, messages=[user], max_tokens=2, logprobs=False, presence_penalty=0,
                                response_format={"type": "text"}, user="me", store=False)
    assert status == 200, answer
    parts = [{"role": "user", "content": [{"type": "text", "text": "What is"}, {"type": "text", "text": "zero?"}]}]
    status, answer = await chat(client, messages=parts, max_tokens=6, temperature=0)
    plain = [{"role": "user", "content": "What is\nzero?"}]
    assert answer["choices"][0]["message"]["content"] == greedy_reply(engine, plain, 6)[0]


async def test_a_model_without_a_template_cannot_chat(tmp_path_factory, make_client):
    plain = Engine.load(str(tiny_run(tmp_path_factory)["run"]))
    client = await make_client(plain)
    status, body = await chat(client, messages=[{"role": "user", "content": "hi"}])
    assert_error(status, body, None, "chat_not_supported", "no chat template")
    assert (await (await client.get("/v1/models")).json())["data"][0]["chat"] is False
    assert (await (await client.get("/health")).json())["chat"] is False
    with pytest.raises(BadRequestError, match="no chat template"):
        await sdk(client).chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])


async def test_a_template_that_refuses_gets_a_400(engine, make_client):
    tok = load_tokenizer(str(engine.checkpoint_path) + "/tokenizer.json")
    tok.chat_template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system messages, "
                         "please') }}{% endif %}" + CHATML_TEMPLATE)
    strict = Engine(engine.model, tok, engine.checkpoint_path)
    client = await make_client(strict)
    assert (await (await client.get("/v1/models")).json())["data"][0]["chat"] is True
    status, body = await chat(client, messages=HI)
    assert_error(status, body, "messages", "chat_template_error", "no system messages, please")
    status, body = await chat(client, messages=HI[1:], max_tokens=2)
    assert status == 200, body


async def test_an_imported_tokenizer_with_its_template(engine, make_client, tmp_path):
    # the model's tokenizer as HuggingFace files (a tokenizer.json and a tokenizer_config.json with the template),
    # whose eos is <|im_end|> as in instruction-tuned models: imported, it gives the same ids and so the same replies
    files = tokenizer_files(engine.tokenizer, 128)
    files["tokenizer_config.json"]["eos_token"] = "<|im_end|>"
    for name, content in files.items():
        (tmp_path / name).write_text(json.dumps(content), encoding="utf-8")
    imported = Engine(engine.model, import_tokenizer(str(tmp_path / "tokenizer.json")), engine.checkpoint_path)
    assert imported.tokenizer.kind == "bpe-vocab" and imported.chat_template == CHATML_TEMPLATE
    assert imported.end_of_turn == {imported.tokenizer.token_to_id("<|im_end|>")} == {imported.tokenizer.eos_id}
    client = await make_client(imported)
    for messages in QUESTIONS[:3]:
        text, prompt_tokens, tokens, reason = greedy_reply(engine, messages, max_tokens=40)
        status, body = await chat(client, messages=messages, temperature=0, max_tokens=40)
        assert body["choices"][0]["message"]["content"] == text and body["choices"][0]["finish_reason"] == reason
        assert body["usage"]["completion_tokens"] == tokens


async def test_a_llama_model_chats_the_same_way(engine, make_client):
    # the server is the same for both architectures: an untrained llama over the chat tokenizer
    llama = Model(ModelConfig(arch="llama", vocab_size=engine.tokenizer.vocab_size, max_seq_len=128, num_layers=1,
                              num_heads=2, embed_dim=32), seed=2)
    served = Engine(llama, engine.tokenizer, engine.checkpoint_path)
    client = await make_client(served)
    status, body = await chat(client, messages=HI, temperature=0, max_tokens=12)
    text, prompt_tokens, tokens, reason = greedy_reply(served, HI, max_tokens=12)
    assert body["choices"][0]["message"]["content"] == text and body["choices"][0]["finish_reason"] == reason
    assert body["usage"]["prompt_tokens"] == prompt_tokens and body["usage"]["completion_tokens"] == tokens


def test_a_long_conversation_keeps_its_last_tokens(engine):
    # longer than the 128-token context: cropped to its last 127 tokens, as a completion's prompt is
    messages = [{"role": "user", "content": "What is zero plus two? " * 40}]
    ids = engine.chat_prompt_ids(messages)
    assert ids == apply_chat_template(engine.tokenizer, messages, add_generation_prompt=True)[-127:]
    events = []
    req = CompletionRequest(prompts=[], prompt_ids=ids, max_tokens=5, temperature=0, end_ids=engine.end_of_turn)
    result = engine.run(req, threading.Event(), lambda *e: events.append(e))
    assert result["prompt_tokens"] == 127 and events[-1][0] == "done"
