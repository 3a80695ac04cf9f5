"""Structured output (cllm/serve/structured.py): JSON mode and JSON schemas by masking the logits with llguidance's
grammars. Untrained models (random weights, gpt2 and llama, a char and a bpe tokenizer) sampling at temperature 1
must still write JSON that parses and validates, within max_tokens, down to the fewest tokens the schema needs:
200 requests, most through the Python path (cllm/chat/generate.py generate_reply), some through the HTTP
endpoints; then the request errors."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest

from cllm.chat.generate import generate_reply
from cllm.chat.template import add_chat_tokens
from cllm.config import ModelConfig
from cllm.generation import SamplingConfig
from cllm.model import Model
from cllm.serve import Engine, ServerSettings, create_app
from cllm.serve.structured import StructuredOutputError, compile_json_grammar
from cllm.tokenizers import BPETokenizer
from cllm.tokenizers.char import CharTokenizer
from cllm.tokenizers.vocab_bpe import VocabBPETokenizer
from cllm.tokenizers.word import WordTokenizer

PERSON = {"type": "object", "properties": {
    "name": {"type": "string"}, "age": {"type": "integer"}, "admin": {"type": "boolean"},
    "role": {"enum": ["reader", "writer", "owner"]}, "tags": {"type": "array", "items": {"type": "string"}}},
    "required": ["name", "age", "admin", "role", "tags"]}
NESTED = {"type": "object", "properties": {
    "id": {"type": "integer", "minimum": 1, "maximum": 999},
    "owner": {"type": "object", "properties": {"first": {"type": "string"}, "last": {"type": "string"},
                                               "address": {"type": "object",
                                                           "properties": {"city": {"type": "string"},
                                                                          "zip": {"type": "integer"}},
                                                           "required": ["city", "zip"]}},
              "required": ["first", "last", "address"]},
    "scores": {"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 4}},
    "required": ["id", "owner", "scores"], "additionalProperties": False}
ITEMS = {"type": "object", "properties": {
    "items": {"type": "array", "minItems": 2, "items": {
        "type": "object", "properties": {"sku": {"type": "string", "maxLength": 8}, "qty": {"type": "integer"},
                                         "gift": {"type": "boolean"}}, "required": ["sku", "qty"]}},
    "note": {"type": ["string", "null"]}}, "required": ["items", "note"]}
FLAGS = {"type": "object", "properties": {"ok": {"type": "boolean"}, "level": {"enum": ["low", "mid", "high", 3]},
                                          "ratio": {"type": "number"}}, "required": ["ok", "level", "ratio"]}
SCHEMAS = [PERSON, NESTED, ITEMS, FLAGS, None]  # None: JSON mode, any object
ANY_OBJECT = {"type": "object"}


def char_tokenizer():
    """Printable ASCII and newline: tiny Shakespeare's characters have no '{' or '"', so cannot spell JSON."""
    return CharTokenizer([chr(c) for c in range(32, 127)] + ["\n"])


@pytest.fixture(scope="module")
def bpe_tokenizer():
    text = "\n".join(f"{{\"name\": \"item {i}\", \"count\": {i * 7}, \"ok\": true}} the cat sat on the mat"
                     for i in range(200))
    return add_chat_tokens(BPETokenizer.train(text, vocab_size=320, progress=False))


def tiny_model(tok, arch: str, seed: int = 0) -> Model:
    return Model(ModelConfig(vocab_size=tok.vocab_size, max_seq_len=48, num_layers=1, num_heads=2, embed_dim=16,
                             arch=arch), seed=seed)


@pytest.fixture(scope="module")
def engines(bpe_tokenizer):
    """Engines over untrained models: (gpt2, char), (llama, bpe), (llama, char), (gpt2, bpe)."""
    out = []
    for arch, tok in (("gpt2", char_tokenizer()), ("llama", bpe_tokenizer), ("llama", char_tokenizer()),
                      ("gpt2", bpe_tokenizer)):
        out.append(Engine(tiny_model(tok, arch, seed=len(out)), tok, f"untrained-{arch}-{tok.kind}"))
    return out


def check(text: str, schema) -> dict:
    value = json.loads(text)
    jsonschema.validate(value, schema or ANY_OBJECT)
    return value


def test_190_requests_at_temperature_1_all_validate(engines):
    """Each schema on each model, seeds 0..189, max_tokens from the schema's minimum (the closing walk decides
    every token) to 90 more; every reply parses, validates and finishes with "stop"."""
    forced = at_minimum = 0
    for i in range(190):
        engine = engines[i % len(engines)]
        schema = SCHEMAS[(i // len(engines)) % len(SCHEMAS)]
        grammar = compile_json_grammar(engine.tokenizer, schema)
        max_tokens = grammar.min_tokens + (i % 10) * 10
        constraint = grammar.constraint(max_tokens)
        cfg = SamplingConfig(max_new_tokens=max_tokens, temperature=1.0, seed=i)
        prompt = engine.prompt_ids("JSON:")
        reply = generate_reply(engine.generator, engine.tokenizer, prompt, cfg, constraint=constraint)
        check(reply.text, schema)
        assert reply.finish_reason == "stop" and reply.tokens <= max_tokens, (i, reply)
        forced += constraint.forced > 0
        at_minimum += max_tokens == grammar.min_tokens
    # the untrained models do run into the budget: the closing walk had to take over in many replies
    assert forced >= 30 and at_minimum == 19


def test_padded_vocabulary_and_word_tokenizer(engines):
    """A model whose logits row is longer than the vocabulary gets the extra ids masked; a word tokenizer (no
    fixed bytes per token) is refused with a clear message."""
    engine = engines[0]
    grammar = compile_json_grammar(engine.tokenizer, PERSON)
    c = grammar.constraint(200)
    row = c.mask(np.zeros(engine.tokenizer.vocab_size + 5))
    assert np.isneginf(row[engine.tokenizer.vocab_size:]).all() and np.isfinite(row).sum() == 1  # only '{'
    with pytest.raises(StructuredOutputError, match="word tokenizer"):
        compile_json_grammar(WordTokenizer(["a", "b"]), PERSON)
    with pytest.raises(StructuredOutputError, match="cannot write JSON"):
        compile_json_grammar(CharTokenizer(list("abc")), None)
    with pytest.raises(StructuredOutputError, match="needs at least"):
        grammar.constraint(grammar.min_tokens - 1)


@pytest.fixture
def make_client(aiohttp_client):
    async def make(engine, **settings):
        return await aiohttp_client(create_app(engine, ServerSettings(**settings)))

    return make


async def test_http_chat_and_completions_validate(engines, make_client):
    """10 requests through the endpoints: chat with json_object and json_schema (streamed too), completions with
    json_schema and response_format, n=2; every choice parses and validates."""
    chat = await make_client(engines[1])  # llama + bpe with ChatML
    done = 0
    for k, schema in enumerate([None, PERSON, NESTED, ITEMS]):
        fmt = ({"type": "json_object"} if schema is None else
               {"type": "json_schema", "json_schema": {"name": f"s{k}", "schema": schema, "strict": True}})
        resp = await chat.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "Give me JSON."}], "response_format": fmt, "seed": k,
            "temperature": 1.0, "max_tokens": 250, "n": 2})
        body = await resp.json()
        assert resp.status == 200, body
        for choice in body["choices"]:
            check(choice["message"]["content"], schema)
            assert choice["finish_reason"] == "stop"
            done += 1
    resp = await chat.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "JSON please"}], "stream": True, "seed": 7, "max_tokens": 200,
        "response_format": {"type": "json_schema", "json_schema": {"name": "flags", "schema": FLAGS}}})
    text = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content", "")
                   for line in (await resp.text()).splitlines()
                   if line.startswith("data: {") and json.loads(line[6:])["choices"])
    check(text, FLAGS)
    done += 1
    plain = await make_client(engines[0])  # gpt2 + char, no chat template: completions
    for k, key in enumerate(["json_schema", "response_format"]):
        value = PERSON if key == "json_schema" else {"type": "json_object"}
        resp = await plain.post("/v1/completions", json={"prompt": "data:", key: value, "seed": 11 + k,
                                                         "max_tokens": 150})
        body = await resp.json()
        assert resp.status == 200, body
        check(body["choices"][0]["text"], PERSON if key == "json_schema" else None)
        done += 1
    assert done == 11


async def test_logprobs_of_a_constrained_reply_score_its_tokens(engines, make_client):
    """Structured output with logprobs: the reply still validates and every generated token is scored, with
    the model's own (unmasked) log-probabilities, so the values are finite and at most 0."""
    plain = await make_client(engines[0])
    resp = await plain.post("/v1/completions", json={"prompt": "data:", "json_schema": PERSON, "seed": 3,
                                                     "max_tokens": 150, "logprobs": 2})
    body = await resp.json()
    assert resp.status == 200, body
    choice = body["choices"][0]
    check(choice["text"], PERSON)
    lp = choice["logprobs"]
    assert "".join(lp["tokens"]) == choice["text"]
    assert len(lp["token_logprobs"]) == body["usage"]["completion_tokens"]
    assert all(v <= 0 and v > -1e9 for v in lp["token_logprobs"])
    assert all(len(top) == 2 for top in lp["top_logprobs"])


@pytest.mark.parametrize("body, param, code", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}},
     "response_format", "invalid_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": [1, 2]}}},
     "response_format", "invalid_value"),
    ({"response_format": {"type": "xml"}}, "response_format", "invalid_value"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": PERSON, "extra": 1}}},
     "response_format", "invalid_value"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": PERSON}},
      "max_tokens": 10}, "max_tokens", "max_tokens_too_small"),
    ({"response_format": {"type": "json_object"}, "stop": ["}"]}, "stop", "invalid_value"),
])
async def test_chat_request_errors(engines, make_client, body, param, code):
    client = await make_client(engines[1])
    resp = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], **body})
    err = (await resp.json())["error"]
    assert resp.status == 400 and err["param"] == param and err["code"] == code, err


async def test_completion_request_errors(engines, make_client):
    client = await make_client(engines[0])
    for body, param in [({"json_schema": "object"}, "json_schema"),
                        ({"json_schema": PERSON, "response_format": {"type": "json_object"}}, "response_format"),
                        ({"json_schema": PERSON, "beam_width": 2}, "beam_width"),
                        ({"json_schema": {"type": "object", "properties": {"a": {"type": "strin"}}}}, "json_schema")]:
        resp = await client.post("/v1/completions", json={"prompt": "x", "max_tokens": 100, **body})
        err = (await resp.json())["error"]
        assert resp.status == 400 and err["param"] == param, (body, err)


def test_imported_byte_level_vocabulary_with_a_gap_and_a_special():
    """An imported byte-level BPE (cllm/tokenizers/vocab_bpe.py): multi-byte tokens, an id the file does not use
    and EOS as a special; random logits at temperature 1 still give valid JSON at the minimum budget and above."""
    vocab = {bytes([b]): b for b in range(256)}
    vocab.update({b'{"': 256, b'":': 257, b'","': 258, b'"}': 260, b"true": 261})  # 259: unused
    tok = VocabBPETokenizer(vocab, [], specials={"<|endoftext|>": 262})
    grammar = compile_json_grammar(tok, PERSON)
    assert grammar.vocab.tokens[259][:1] == b"\xff" and 262 in grammar.vocab.special_set
    rng = np.random.default_rng(0)
    for k in range(10):
        budget = grammar.min_tokens + 15 * (k % 3)
        c = grammar.constraint(budget)
        ids = []
        for step in range(budget):
            logits = c.mask(rng.normal(size=tok.vocab_size) * 4)
            assert np.isneginf(logits[[259, 262]]).all()
            p = np.exp(logits - logits.max())
            ids.append(c.commit(int(rng.choice(p.size, p=p / p.sum())), budget - step))
            if c.done:
                break
        check(tok.decode(ids), PERSON)
