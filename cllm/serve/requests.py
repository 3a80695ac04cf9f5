"""Request parsing and validation for the server: a JSON body in, a checked request out, or APIError(400)
naming the first bad field (OpenAI's error shape; cllm/serve/server.py turns it into the response).

    parse_completion_request(body, settings) -> CompletionRequest     POST /v1/completions
    parse_chat_request(body, settings) -> (messages, CompletionRequest)  POST /v1/chat/completions
    parse_image_request(body, settings, tok) -> (n, label, ...)        POST /v1/images/generations
    parse_structured(body, ...) -> JSON schema or None                  'response_format' / 'json_schema'
    compile_structured(req, tokenizer)                                  the schema's grammar, or APIError(400)
    parse_tokenize_request(body, settings) -> (text, add_special, with_pieces)   POST /tokenize
    parse_detokenize_request(body, vocab_size) -> ids                  POST /detokenize
    check_prompt_ids(req, vocab_size, context)                         the checks that need the model

Checks run in a fixed order (the body's keys, the OpenAI no-ops, the prompt or messages, sampling, stop
strings, stream options, the choice limits), so the field an error names does not depend on the body's key
order.
"""
from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

from cllm.serve.engine import CompletionRequest
from cllm.serve.structured import StructuredOutputError, compile_json_grammar

if TYPE_CHECKING:
    from cllm.serve.server import ServerSettings


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type, self.headers = type_, headers


_OPENAI_NOOPS = {  # accepted for compatibility, only at values that change nothing
    "suffix": (None, ""), "best_of": None, "user": None,
}
# the fields every endpoint's generation acts on (_parse_generation_options), beyond _parse_sampling's
_OPTION_FIELDS = {"presence_penalty", "frequency_penalty", "min_p", "logit_bias", "user"}
_FIELDS = {"model", "prompt", "max_tokens", "temperature", "top_p", "stop", "seed", "n", "stream", "top_k",
           "repeat_penalty", "beam_width", "echo", "ignore_eos", "stream_options", "logprobs", *_OPTION_FIELDS,
           *_OPENAI_NOOPS, "json_schema", "response_format"}
_CHAT_NOOPS = {  # chat's own, at the values that change nothing
    "user": None, "response_format": None, "tools": (None, []), "tool_choice": (None, "none"),
    "store": (None, False),
}
# chat has no echo, suffix or beams: a reply ends at the template's end-of-turn token, which beam search and
# ignore_eos do not know
_CHAT_FIELDS = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "seed",
                "n", "stream", "top_k", "repeat_penalty", "stream_options", "logprobs", "top_logprobs",
                *_OPTION_FIELDS, *_CHAT_NOOPS}
MAX_LOGPROBS = 20  # the most alternatives per token a request may ask for (OpenAI's chat limit; vLLM's default)
CHAT_ROLES = ("system", "user", "assistant")
_IMAGE_FIELDS = {"n", "class", "temperature", "top_k", "top_p", "seed", "grid", "response_format", "model", "size"}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_seed(v) -> bool:
    return v is None or (_is_int(v) and 0 <= v < 2 ** 63)


def bad_value(param, message):
    raise APIError(400, message, param=param, code="invalid_value")


def check_fields(body, fields, docs: str) -> None:
    """APIError(400) unless the body is a JSON object whose keys all are in `fields` (described in `docs`)."""
    if not isinstance(body, dict):
        bad_value(None, "the request body must be a JSON object")
    for key in body:
        if key not in fields:
            bad_value(key, f"unknown field {key!r}; see {docs}")


# ---------------------------------------------------------------------------------- completions
def parse_completion_request(body: dict, settings: ServerSettings) -> CompletionRequest:
    """A CompletionRequest from a decoded JSON body; APIError(400) naming the first bad field."""
    check_fields(body, _FIELDS, "GET /v1/models and the documentation of /v1/completions")
    _check_openai_fields(body, _OPENAI_NOOPS)
    prompts = _parse_prompts(body, settings)
    sampling = _parse_sampling(body, settings, _parse_max_tokens(body, settings, "max_tokens", 16))
    n, beam_width, stream = sampling["n"], sampling["beam_width"], sampling["stream"]
    best_of = body.get("best_of")
    if best_of is not None and best_of != n:
        bad_value("best_of", "'best_of' is not supported (only null or equal to 'n')")
    stops = _parse_stops(body)
    include_usage = _parse_stream_options(body, stream)
    _check_choice_limits(n, beam_width, len(prompts), settings)
    options = _parse_generation_options(body)
    logprobs = _get(body, "logprobs", None, lambda v: v is None or (_is_int(v) and 0 <= v <= MAX_LOGPROBS),
                    f"null or an integer from 0 to {MAX_LOGPROBS} (the alternatives listed per token)")
    if beam_width:
        _check_beam_options(body)
    json_schema, field = parse_structured(body, ("json_schema", "response_format"), beam_width, stops)
    return CompletionRequest(prompts=prompts, stop=stops, include_usage=include_usage, logprobs=logprobs,
                             json_schema=json_schema, json_schema_field=field, **options, **sampling)


def parse_chat_request(body: dict, settings: ServerSettings) -> tuple[list[dict], CompletionRequest]:
    """(messages, the generation's CompletionRequest without its prompt) from a decoded JSON body; APIError(400)
    naming the first bad field. Its max_tokens is None when the body gives neither 'max_completion_tokens' nor
    'max_tokens' (cllm/serve/server.py chat_completions then allows its max_tokens_cap)."""
    check_fields(body, _CHAT_FIELDS, "the documentation of /v1/chat/completions (docs/serving.md)")
    _check_openai_fields(body, _CHAT_NOOPS)
    messages = _parse_messages(body, settings)
    if body.get("max_tokens") is not None and body.get("max_completion_tokens") is not None:
        bad_value("max_tokens", "give 'max_completion_tokens' or its older name 'max_tokens', not both")
    name = "max_tokens" if body.get("max_tokens") is not None else "max_completion_tokens"
    sampling = _parse_sampling(body, settings, _parse_max_tokens(body, settings, name, None))
    stops = _parse_stops(body)
    include_usage = _parse_stream_options(body, sampling["stream"])
    _check_choice_limits(sampling["n"], 0, 1, settings)
    options = _parse_generation_options(body)
    json_schema, _ = parse_structured(body, ("response_format",), 0, stops)
    return messages, CompletionRequest(prompts=[], stop=stops, include_usage=include_usage,
                                       logprobs=_parse_chat_logprobs(body), json_schema=json_schema,
                                       **options, **sampling)


def _parse_messages(body: dict, settings: ServerSettings) -> list[dict]:
    """'messages' as [{"role", "content": str, "name"?}]: roles system, user, assistant; a content that is a
    list of text parts ({"type": "text", "text": ...}) becomes their texts joined by newlines."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        bad_value("messages", "'messages' must be a non-empty list of {\"role\", \"content\"} objects")
    out, chars = [], 0
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            bad_value(where, f"{where} must be an object with 'role' and 'content', got {json.dumps(m)[:80]}")
        for key in m:
            if key not in ("role", "content", "name"):
                bad_value(f"{where}.{key}", f"{where} has {key!r}; this server reads 'role', 'content' and 'name' "
                                            "(no tools or audio)")
        role = m.get("role")
        if role not in CHAT_ROLES:
            bad_value(f"{where}.role", f"{where}.role must be one of {', '.join(map(repr, CHAT_ROLES))}, "
                                       f"got {json.dumps(role)}")
        message = {"role": role, "content": _message_text(m.get("content"), f"{where}.content")}
        if m.get("name") is not None:
            if not isinstance(m["name"], str):
                bad_value(f"{where}.name", f"{where}.name must be a string")
            message["name"] = m["name"]
        chars += len(message["content"])
        out.append(message)
    if chars > settings.max_prompt_chars:
        raise APIError(400, f"'messages' hold {chars} characters; this server accepts at most "
                            f"{settings.max_prompt_chars}", param="messages", code="prompt_too_long")
    return out


def _message_text(content, where: str) -> str:
    """A message's content: a string, or a non-empty list of text parts joined by newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        texts = []
        for k, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
                    and set(part) == {"type", "text"}):
                bad_value(f"{where}[{k}]", f"{where}[{k}] must be a text part {{\"type\": \"text\", \"text\": "
                                           "...}; this server reads text only")
            texts.append(part["text"])
        return "\n".join(texts)
    bad_value(where, f"{where} must be a string or a non-empty list of text parts, got {json.dumps(content)[:80]}")


def _check_openai_fields(body: dict, noops: dict) -> None:
    """OpenAI's fields this server accepts only at values that change nothing, and 'user' and 'model'."""
    for key, allowed in noops.items():
        if key in body and allowed is not None and body[key] not in allowed:
            bad_value(key, f"{key!r} is not supported by this server (only {allowed[0]!r} or {allowed[-1]!r})")
    if "user" in body and not isinstance(body["user"], str):
        bad_value("user", "'user' must be a string")
    if "model" in body and body["model"] is not None and not isinstance(body["model"], str):
        bad_value("model", "'model' must be a string")


def _is_ids(v) -> bool:
    return isinstance(v, list) and bool(v) and all(_is_int(i) for i in v)


def _parse_prompts(body: dict, settings: ServerSettings) -> list[str | list[int]]:
    """'prompt' as a list of prompts, each a string or a list of token ids (OpenAI's four forms: a string, a list
    of strings, a list of ids, a list of lists of ids), each within the server's length limit (check_prompt_ids
    checks the ids against the model)."""
    prompt = body.get("prompt", "")
    if isinstance(prompt, str) or _is_ids(prompt):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and (all(isinstance(p, str) for p in prompt)
                                                  or all(_is_ids(p) for p in prompt)):
        prompts = list(prompt)
    else:
        bad_value("prompt", "'prompt' must be a string, a non-empty list of strings, a non-empty list of token ids, "
                            "or a list of such lists")
    for p in prompts:
        if len(p) > settings.max_prompt_chars:
            raise APIError(400, f"'prompt' has {len(p)} characters; this server accepts at most "
                                f"{settings.max_prompt_chars}", param="prompt", code="prompt_too_long")
    return prompts


def _get(body: dict, name: str, default, check, what: str):
    """body[name] (null or absent: `default`), or APIError(400) saying it must be `what`."""
    v = body.get(name, default)
    if v is None:
        v = default
    if not check(v):
        bad_value(name, f"{name!r} must be {what}, got {json.dumps(v)}")
    return v


def _parse_max_tokens(body: dict, settings: ServerSettings, name: str, default: int | None) -> int | None:
    """body[name] (null or absent: `default`), a non-negative integer within the server's cap."""
    max_tokens = body.get(name)
    if max_tokens is None:
        return default
    if not (_is_int(max_tokens) and max_tokens >= 0):
        bad_value(name, f"{name!r} must be a non-negative integer, got {json.dumps(max_tokens)}")
    if max_tokens > settings.max_tokens_cap:
        raise APIError(400, f"{name!r} is {max_tokens}; this server allows at most {settings.max_tokens_cap}",
                       param=name, code="max_tokens_too_large")
    return max_tokens


def _parse_sampling(body: dict, settings: ServerSettings, max_tokens: int | None) -> dict:
    """The CompletionRequest fields of generation: max_tokens (checked by the caller), the sampling settings,
    n, beam_width and the stream/echo/ignore_eos switches, each checked (the keywords of CompletionRequest)."""
    temperature = float(_get(body, "temperature", 1.0, lambda v: _is_number(v) and 0 <= v <= 2,
                             "a number in [0, 2]"))
    top_p = float(_get(body, "top_p", 1.0, lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"))
    top_k = _get(body, "top_k", 0, lambda v: _is_int(v) and v >= 0, "a non-negative integer (0 disables it)")
    repeat_penalty = float(_get(body, "repeat_penalty", 1.0, lambda v: _is_number(v) and v > 0,
                                "a positive number"))
    seed = body.get("seed")
    if not _is_seed(seed):
        bad_value("seed", f"'seed' must be a non-negative integer or null, got {json.dumps(seed)}")
    n = _get(body, "n", 1, lambda v: _is_int(v) and v >= 1, "a positive integer")
    beam_width = _get(body, "beam_width", 0, lambda v: _is_int(v) and v >= 0,
                      "a non-negative integer (0: sampling)")
    stream = _get(body, "stream", False, lambda v: isinstance(v, bool), "true or false")
    echo = _get(body, "echo", False, lambda v: isinstance(v, bool), "true or false")
    ignore_eos = _get(body, "ignore_eos", False, lambda v: isinstance(v, bool), "true or false")
    return dict(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                repeat_penalty=repeat_penalty, seed=seed, n=n, stream=stream, beam_width=beam_width, echo=echo,
                ignore_eos=ignore_eos)


def _parse_generation_options(body: dict) -> dict:
    """The CompletionRequest fields both endpoints act on beyond _parse_sampling's: OpenAI's presence and frequency
    penalties, llama.cpp's min_p, OpenAI's logit_bias ({"token id": bias}; check_prompt_ids checks the ids against
    the vocabulary) and user (a string, written in the request's log line)."""
    penalty = {name: float(_get(body, name, 0.0, lambda v: _is_number(v) and -2 <= v <= 2, "a number in [-2, 2]"))
               for name in ("presence_penalty", "frequency_penalty")}
    min_p = float(_get(body, "min_p", 0.0, lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"))
    bias = _get(body, "logit_bias", {}, lambda v: isinstance(v, dict), 'an object {"token id": bias from -100 to 100}')
    logit_bias = {}
    for key, value in bias.items():
        if not (isinstance(key, str) and key.isascii() and key.isdigit()):
            bad_value("logit_bias", f"'logit_bias' keys must be token ids (non-negative integers as strings), "
                                    f"got {json.dumps(key)}")
        if not (_is_number(value) and -100 <= value <= 100):
            bad_value("logit_bias", f"'logit_bias' values must be numbers from -100 to 100, got {json.dumps(value)} "
                                    f"for {key}")
        logit_bias[int(key)] = float(value)
    return dict(**penalty, min_p=min_p, logit_bias=logit_bias or None, user=body.get("user"))


def _parse_chat_logprobs(body: dict) -> int | None:
    """Chat's 'logprobs' (true: the reply's tokens with their log-probabilities) and 'top_logprobs' (the
    alternatives listed per token, 0..MAX_LOGPROBS, only with 'logprobs': true) -> the alternatives, or None."""
    wanted = _get(body, "logprobs", False, lambda v: isinstance(v, bool), "true or false")
    top = _get(body, "top_logprobs", None, lambda v: v is None or (_is_int(v) and 0 <= v <= MAX_LOGPROBS),
               f"null or an integer from 0 to {MAX_LOGPROBS}")
    if top is not None and not wanted:
        bad_value("top_logprobs", "'top_logprobs' needs 'logprobs': true")
    return (top or 0) if wanted else None


def _check_beam_options(body: dict) -> None:
    """Beam search ranks beams by the model's own log-probabilities: the sampling fields do nothing there, so a
    request with beam_width refuses them at other values than their defaults."""
    defaults = {"temperature": (1.0,), "top_p": (1.0,), "top_k": (0,), "repeat_penalty": (1.0,), "min_p": (0.0,),
                "presence_penalty": (0.0,), "frequency_penalty": (0.0,), "logit_bias": ({},), "seed": (),
                "logprobs": (), "ignore_eos": (False,)}
    for name, allowed in defaults.items():
        if body.get(name) is not None and body[name] not in allowed:
            bad_value(name, f"{name!r} does not apply to beam search ('beam_width'); leave it out")


def check_prompt_ids(req: CompletionRequest, vocab_size: int, context: int) -> None:
    """The model-dependent checks of a parsed request: token-id prompts and logit_bias ids within the vocabulary;
    an echo with log-probabilities (one forward over the prompt) at most the context long."""
    for p in req.prompts:
        if isinstance(p, list):
            bad = [i for i in p if not 0 <= i < vocab_size]
            if bad:
                bad_value("prompt", f"'prompt' holds the token id {bad[0]}; this model's ids are 0..{vocab_size - 1}")
            if req.echo and req.logprobs is not None and len(p) > context:
                raise APIError(400, f"'prompt' has {len(p)} tokens; 'echo' with 'logprobs' scores at most the "
                                    f"model's context, {context}", param="prompt", code="prompt_too_long")
    for i in req.logit_bias or {}:
        if i >= vocab_size:
            bad_value("logit_bias", f"'logit_bias' names the token id {i}; this model's ids are 0..{vocab_size - 1}")


def _parse_stops(body: dict) -> list[str]:
    """'stop' as a list of at most 4 non-empty strings (null: none)."""
    stop = body.get("stop")
    if stop is None:
        stops = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop):
        stops = list(stop)
    else:
        bad_value("stop", "'stop' must be a string, a list of at most 4 strings, or null")
    if any(not s for s in stops):
        bad_value("stop", "'stop' strings must not be empty")
    return stops


def _parse_stream_options(body: dict, stream: bool) -> bool:
    """'stream_options' -> include_usage (only with 'stream': true)."""
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if (not isinstance(options, dict) or set(options) - {"include_usage"}
                or not isinstance(options.get("include_usage", False), bool)):
            bad_value("stream_options", "'stream_options' must be null or {\"include_usage\": true|false}")
        if not stream:
            bad_value("stream_options", "'stream_options' is only allowed with 'stream': true")
        include_usage = options.get("include_usage", False)
    return include_usage


def _check_choice_limits(n: int, beam_width: int, n_prompts: int, settings: ServerSettings) -> None:
    """The server's limit on choices per request (n x prompts, and beams) and n within the beams."""
    if beam_width and n > beam_width:
        bad_value("n", f"'n' ({n}) cannot exceed 'beam_width' ({beam_width})")
    if beam_width > settings.max_n:
        bad_value("beam_width", f"'beam_width' must be at most {settings.max_n}")
    if n * n_prompts > settings.max_n:
        bad_value("n", f"'n' x prompts is {n * n_prompts}; this server allows at most {settings.max_n} choices "
                       "per request")


# ---------------------------------------------------------------------------------- structured output
def parse_structured(body: dict, fields: tuple[str, ...], beam_width: int, stops: list[str]
                     ) -> tuple[dict | None, str]:
    """(the JSON schema the output must match, or None for free text; the field that gave it) from the body's
    `fields` among 'response_format' (OpenAI's {"type": "text" | "json_object" | "json_schema", "json_schema":
    {"name", "schema", "strict", "description"}}; json_object: any JSON object) and 'json_schema' (completions:
    the schema itself). cllm/serve/structured.py makes the grammar (compile_structured)."""
    given = [f for f in fields if body.get(f) is not None]
    if len(given) > 1:
        bad_value(given[1], "give 'json_schema' or 'response_format', not both")
    if not given:
        return None, ""
    field = given[0]
    value = body[field]
    if field == "json_schema":
        schema = value
    else:
        kind = value.get("type") if isinstance(value, dict) else None
        if kind == "text" and set(value) == {"type"}:
            return None, ""
        if kind == "json_object" and set(value) == {"type"}:
            schema = {"type": "object"}
        elif kind == "json_schema" and set(value) <= {"type", "json_schema"}:
            spec = value.get("json_schema")
            if not isinstance(spec, dict) or set(spec) - {"name", "schema", "strict", "description"}:
                bad_value(field, "'response_format.json_schema' must be an object with 'name', 'schema' and "
                                 "optionally 'strict' and 'description'")
            if not isinstance(spec.get("name", ""), str) or not isinstance(spec.get("strict") or False, bool):
                bad_value(field, "'response_format.json_schema': 'name' must be a string and 'strict' true or false")
            schema = spec.get("schema", {"type": "object"})
        else:
            bad_value(field, "'response_format' must be {\"type\": \"text\"}, {\"type\": \"json_object\"} or "
                             "{\"type\": \"json_schema\", \"json_schema\": {\"name\": ..., \"schema\": {...}}}")
    if not isinstance(schema, dict):
        bad_value(field, f"the JSON schema must be an object, got {json.dumps(schema)[:80]}")
    if beam_width:
        bad_value("beam_width", "structured output samples; leave out 'beam_width'")
    if stops:  # a stop string would cut the JSON short
        bad_value("stop", "'stop' cannot be used with structured output (it would cut the JSON short)")
    return schema, field


def compile_structured(req: CompletionRequest, tokenizer) -> None:
    """Set req.grammar for req.json_schema (nothing without one): APIError(400) for a schema the engine refuses, a
    tokenizer that cannot spell JSON, or a max_tokens below the fewest tokens that close the JSON."""
    if req.json_schema is None:
        return
    field = req.json_schema_field or "response_format"
    try:
        grammar = compile_json_grammar(tokenizer, req.json_schema)
    except StructuredOutputError as exc:
        raise APIError(400, str(exc), param=field, code="invalid_schema") from None
    if req.max_tokens < grammar.min_tokens:
        raise APIError(400, f"'max_tokens' is {req.max_tokens}; JSON for this schema needs at least "
                            f"{grammar.min_tokens} tokens with this model's tokenizer", param="max_tokens",
                       code="max_tokens_too_small")
    req.grammar = grammar


# ---------------------------------------------------------------------------------- tokenizer
def parse_tokenize_request(body, settings: ServerSettings) -> tuple[str, bool, bool]:
    """(text, add_special, with_pieces) of POST /tokenize: llama.cpp's {"content", "add_special" (default false),
    "with_pieces"} or vLLM's {"prompt", "add_special_tokens" (default true)}."""
    check_fields(body, {"content", "add_special", "with_pieces", "prompt", "add_special_tokens", "model"},
                 "the documentation of /tokenize (docs/serving.md)")
    if ("content" in body) == ("prompt" in body):
        bad_value("content", "give the text as 'content' (llama.cpp's name) or 'prompt' (vLLM's), one of them")
    name = "content" if "content" in body else "prompt"
    text = body[name]
    if not isinstance(text, str):
        bad_value(name, f"{name!r} must be a string")
    if len(text) > settings.max_prompt_chars:
        raise APIError(400, f"{name!r} has {len(text)} characters; this server accepts at most "
                            f"{settings.max_prompt_chars}", param=name, code="prompt_too_long")
    special = "add_special" if name == "content" else "add_special_tokens"
    add_special = _get(body, special, name == "prompt", lambda v: isinstance(v, bool), "true or false")
    if ("add_special" if special == "add_special_tokens" else "add_special_tokens") in body:
        bad_value(special, f"with {name!r}, the switch is {special!r}")
    with_pieces = _get(body, "with_pieces", False, lambda v: isinstance(v, bool), "true or false")
    return text, add_special, with_pieces


def parse_detokenize_request(body, vocab_size: int) -> list[int]:
    """The ids of POST /detokenize's {"tokens": [ids]}, each within the vocabulary."""
    check_fields(body, {"tokens", "model"}, "the documentation of /detokenize (docs/serving.md)")
    ids = body.get("tokens")
    if not (isinstance(ids, list) and all(_is_int(i) for i in ids)):
        bad_value("tokens", "'tokens' must be a list of token ids")
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        bad_value("tokens", f"'tokens' holds the id {bad[0]}; this model's ids are 0..{vocab_size - 1}")
    return ids


# ---------------------------------------------------------------------------------- images
def parse_image_request(body, settings: ServerSettings, tok):
    """(n, label, temperature, top_k, top_p, seed, grid) of an image request for the ImageTokenizer `tok`
    (cllm/serve/server.py's image_generations documents the fields); APIError(400) naming the first bad field."""
    check_fields(body, _IMAGE_FIELDS, "the documentation of /v1/images/generations (cllm/serve/server.py)")
    if body.get("response_format", "b64_json") not in ("b64_json", None):
        bad_value("response_format", "only 'b64_json' is supported (the PNG itself, base64-encoded)")
    size = f"{tok.width}x{tok.height}"
    if body.get("size") not in (None, size):
        bad_value("size", f"this model makes {size} images only")
    n = body.get("n", 1)
    if not _is_int(n) or not 1 <= n <= settings.max_n:
        bad_value("n", f"'n' must be an integer from 1 to {settings.max_n}")
    temperature = body.get("temperature", 1.0)
    if not _is_number(temperature) or not 0 <= temperature <= 2:
        bad_value("temperature", "'temperature' must be a number in [0, 2]")
    top_k, top_p, seed = body.get("top_k", 0), body.get("top_p", 1.0), body.get("seed")
    if not _is_int(top_k) or top_k < 0:
        bad_value("top_k", "'top_k' must be a non-negative integer")
    if not _is_number(top_p) or not 0 < top_p <= 1:
        bad_value("top_p", "'top_p' must be a number in (0, 1]")
    if not _is_seed(seed):
        bad_value("seed", "'seed' must be a non-negative integer or null")
    label = body.get("class")
    if label is not None:
        if not tok.labelled:
            bad_value("class", "this model was trained without classes; leave out 'class'")
        if str(label) not in tok.classes:
            bad_value("class", f"unknown class {label!r}; this model knows {', '.join(tok.classes[:30])}")
        label = str(label)
    if not isinstance(body.get("grid", False), bool):
        bad_value("grid", "'grid' must be true or false")
    return n, label, float(temperature), top_k, float(top_p), seed, body.get("grid", False)
