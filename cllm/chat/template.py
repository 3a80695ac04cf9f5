"""Chat templates: a conversation rendered to text and ids as transformers' `apply_chat_template` does.

A conversation is a list of messages `{"role": "system"|"user"|"assistant", "content": str}` (OpenAI's
and HuggingFace's shape). A chat template is Jinja source, as a HuggingFace tokenizer_config.json holds
it, and is untrusted code: it runs in Jinja's immutable sandbox. The environment is the one transformers
builds (its utils/chat_template_utils.py): trim_blocks and lstrip_blocks, the loop controls, the globals
raise_exception, strftime_now, dict and namespace, a tojson filter that is plain json.dumps (no HTML
escaping, non-ASCII kept), and the variables messages, add_generation_prompt, tools and documents (None)
and the tokenizer's special-token strings (bos_token, eos_token, ...). An undefined variable renders as
nothing, as there, so templates that test `x is defined` work; using one (`x.y`, `messages[0]` of an
empty conversation) is an error.

    text = render_text(CHATML_TEMPLATE, conv, add_generation_prompt=True)
    text = chat_text(tokenizer, conv)                     # with the tokenizer's template and special tokens
    ids = apply_chat_template(tokenizer, conv)            # the text's ids, special tokens as single ids
    ids, mask = assistant_mask(tokenizer, conv)           # mask: 1 on what the assistant says (for SFT)
    add_chat_tokens(tokenizer)                            # <|im_start|>, <|im_end|> and CHATML_TEMPLATE
                                                          # (bpe or char)
"""
from __future__ import annotations

import inspect
import json
from datetime import datetime
from functools import lru_cache

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from cllm.errors import TokenizerError

CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")
# the default for models trained here: `<|im_start|>{role}\n{content}<|im_end|>\n` per message
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class ChatTemplateError(TokenizerError):
    """A chat template that cannot render (syntax, its own raise_exception, a missing variable), a tokenizer
    without one, or messages that are not a conversation."""


class _Refused(jinja2.TemplateError):
    """What the template's raise_exception(message) raises: the template's own words about the input."""


def _raise_exception(message):
    raise _Refused(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Jinja's own tojson escapes <, >, & and ' for HTML; templates expect json.dumps as transformers defines it
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt):
    return datetime.now().strftime(fmt)


class _Dict:
    """The template's `dict`: calling it and `dict.fromkeys` only, so the type itself never reaches the template."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


class _Namespace(jinja2.utils.Namespace):
    """Jinja's namespace that refuses attribute names starting with "_" (a way towards CPython's internals)."""

    def __init__(*args, **kwargs):  # Jinja's signature trick: `namespace(self=1)` must stay a plain attribute
        self, attrs = args[0], dict(*args[1:], **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"a namespace attribute may not start with '_': {name!r}")


class _GenerationTag(Extension):
    """`{% generation %}...{% endgeneration %}`, with which some templates mark the assistant's text for
    transformers' own mask: the body, rendered as it is (assistant_mask below finds the turns itself)."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body).set_lineno(lineno)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                       extensions=[_GenerationTag, loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now, dict=_Dict(),
                       namespace=_Namespace)
    return env


_ENV = _environment()


@lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    try:
        return _ENV.from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        raise ChatTemplateError(f"the chat template has a syntax error at line {exc.lineno}: {exc.message}") from None


def check_messages(messages) -> list[dict]:
    """The conversation as the template sees it (keys whose value is None dropped, as transformers does);
    a ChatTemplateError unless it is a list of {"role": str, "content": str, ...}."""
    if not isinstance(messages, list):
        raise ChatTemplateError(f"messages must be a list of {{\"role\", \"content\"}} objects, "
                                f"not {type(messages).__name__}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ChatTemplateError(f"message {i} must be an object with \"role\" and \"content\", "
                                    f"not {type(m).__name__}")
        for key in ("role", "content"):
            if not isinstance(m.get(key), str):
                got = "missing" if key not in m else f"a {type(m[key]).__name__}"
                raise ChatTemplateError(f"message {i}: \"{key}\" must be a string ({got})")
        out.append({k: v for k, v in m.items() if v is not None})
    return out


def render_text(template: str, messages, add_generation_prompt: bool = False, **special_tokens) -> str:
    """The text of the conversation under `template`; `special_tokens` are the template's bos_token,
    eos_token, ... (strings). Raises ChatTemplateError for anything the template or the messages get wrong."""
    if not isinstance(template, str):
        raise ChatTemplateError(f"a chat template must be a string, not {type(template).__name__}")
    compiled = _compile(template)
    variables = {**special_tokens, "messages": check_messages(messages), "tools": None, "documents": None,
                 "add_generation_prompt": bool(add_generation_prompt)}
    try:
        return compiled.render(**variables)
    except _Refused as exc:
        raise ChatTemplateError(f"the chat template refused the conversation: {exc}") from None
    except jinja2.UndefinedError as exc:
        raise ChatTemplateError(f"the chat template uses a value that is not there ({exc.message}); it needs a "
                                "variable or message field that CLLM does not pass (it passes messages, "
                                "add_generation_prompt, tools, documents and the tokenizer's special tokens: "
                                f"{', '.join(sorted(special_tokens)) or 'none'})") from None
    except jinja2.exceptions.SecurityError as exc:
        raise ChatTemplateError(f"the chat template tried something the sandbox forbids: {exc}") from None
    except jinja2.TemplateError as exc:
        raise ChatTemplateError(f"the chat template failed: {exc}") from None
    except (TypeError, ValueError, LookupError, AttributeError, ArithmeticError) as exc:
        # a template is a program from a file: its run-time errors are errors in the user's input
        raise ChatTemplateError(f"the chat template failed: {type(exc).__name__}: {exc}") from None


def check_template(tokenizer) -> None:
    """Raise ChatTemplateError when the tokenizer has no chat template."""
    _template_of(tokenizer)


def _template_of(tokenizer) -> str:
    template = getattr(tokenizer, "chat_template", None)
    if template is None:
        raise ChatTemplateError(f"this {tokenizer.kind} tokenizer has no chat template; a bpe tokenizer trained by "
                                "CLLM gets the default one from add_chat_tokens (cllm/chat/template.py)")
    return template


def _special_ids(tokenizer) -> dict[str, int]:
    # an imported byte-level BPE keeps its file's specials in `specials`; CLLM's own kinds in `special_tokens`
    return getattr(tokenizer, "specials", None) or getattr(tokenizer, "special_tokens", None) or {}


def _encode(tokenizer, text: str) -> list[int]:
    """The ids of rendered text with every special-token string as its single id, as HuggingFace encodes
    added tokens (and no BOS/EOS added around it: the template writes what it wants)."""
    if "allowed_special" not in inspect.signature(tokenizer.encode).parameters:
        raise ChatTemplateError(f"a {tokenizer.kind} tokenizer cannot encode special tokens as single ids, which "
                                "chat templates need; use a bpe tokenizer (cli.py tokenizer train DATA --kind bpe)")
    return tokenizer.encode(text, allowed_special="all")


def chat_text(tokenizer, messages, add_generation_prompt: bool = False) -> str:
    """The conversation rendered by the tokenizer's chat template, with the tokenizer's special tokens."""
    return render_text(_template_of(tokenizer), messages, add_generation_prompt, **tokenizer.special_token_strings())


def apply_chat_template(tokenizer, messages, add_generation_prompt: bool = False) -> list[int]:
    """The ids of the conversation rendered by the tokenizer's chat template: what transformers'
    `AutoTokenizer.apply_chat_template(messages, tokenize=True)` gives for the same tokenizer."""
    return _encode(tokenizer, chat_text(tokenizer, messages, add_generation_prompt))


def assistant_mask(tokenizer, messages) -> tuple[list[int], list[int]]:
    """(ids, mask) of the conversation: ids as apply_chat_template gives them, mask[i] = 1 on the tokens of
    each assistant turn's content and the end-of-turn token that closes it (the last special token of the
    turn: <|im_end|>, <|eot_id|>), 0 elsewhere (headers, other roles, what follows the end-of-turn token)."""
    template = _template_of(tokenizer)
    tokens = tokenizer.special_token_strings()
    messages = check_messages(messages)
    full = render_text(template, messages, False, **tokens)
    ids = _encode(tokenizer, full)
    # An assistant turn k is the text between the rendering of messages[:k] with the generation prompt and the
    # rendering of messages[:k+1]. That needs a prefix-stable template: both renderings start the rendering of the
    # whole conversation (true of ChatML and Llama 3; not of templates that render the last message differently,
    # e.g. ones that drop the reasoning of earlier assistant turns).
    spans = []
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        head = render_text(template, messages[:k], True, **tokens)
        turn = render_text(template, messages[:k + 1], False, **tokens)
        if not (turn.startswith(head) and full.startswith(turn)):
            raise ChatTemplateError(f"cannot find assistant message {k} in the rendered conversation: the chat "
                                    "template does not render a conversation's beginning (with the generation "
                                    "prompt before an assistant message) as the beginning of the whole")
        spans.append((len(full[:len(head)].encode("utf-8")), len(full[:len(turn)].encode("utf-8"))))
    # byte offsets of each token in the text: a token is in a turn when its bytes overlap the turn's
    pieces = [tokenizer.token_bytes(i) for i in ids] if hasattr(tokenizer, "token_bytes") else None
    if pieces is None or b"".join(pieces) != full.encode("utf-8"):
        raise ChatTemplateError(f"a {tokenizer.kind} tokenizer's tokens do not spell the text byte for byte, so the "
                                "assistant's tokens cannot be found; use a byte-level bpe tokenizer")
    ends, pos = [], 0
    for p in pieces:
        pos += len(p)
        ends.append(pos)
    special = set(_special_ids(tokenizer).values())
    mask = [0] * len(ids)
    i = 0
    for start, end in spans:
        while i < len(ids) and ends[i] <= start:  # tokens wholly before the turn
            i += 1
        inside = []
        while i < len(ids) and ends[i] - len(pieces[i]) < end:
            inside.append(i)
            i += 1
        closing = [j for j in inside if ids[j] in special]
        last = closing[-1] if closing else (inside[-1] if inside else -1)
        for j in inside:
            if j <= last:
                mask[j] = 1
    return ids, mask


# what a char tokenizer gets before the chat tokens: conversations are typed text, whose digits and symbols a
# corpus such as data/tinyshakespeare.txt lacks (it has one digit), and a char tokenizer drops what it lacks
CHAT_CHARS = "\n" + "".join(chr(c) for c in range(32, 127))


def add_chat_tokens(tokenizer):
    """Give a bpe or char tokenizer trained by CLLM the special tokens <|im_start|> and <|im_end|> (new single ids
    after its others, never produced by encoding ordinary text) and CHATML_TEMPLATE; returns the tokenizer, changed
    in place. A char tokenizer first gets the characters of CHAT_CHARS it lacks (new ids after its own, so its
    ids keep their meaning). A tokenizer that already has both tokens as specials only gets the template."""
    if not all(t in _special_ids(tokenizer) for t in CHATML_TOKENS):
        if tokenizer.kind == "word":
            raise ChatTemplateError("a word tokenizer has no single-id special tokens for a chat template; use a "
                                    "char or bpe tokenizer (--tokenizer char or bpe)")
        if tokenizer.kind not in ("bpe", "char"):
            raise ChatTemplateError(f"an imported {tokenizer.kind} tokenizer keeps the special tokens of its file, "
                                    f"which has no {' and '.join(CHATML_TOKENS)}; use its own chat template")
        if tokenizer.kind == "char":
            tokenizer.add_chars(CHAT_CHARS)
        tokenizer.register_special_tokens(CHATML_TOKENS)
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer
