"""Structured output: JSON that always parses and matches a JSON schema, by masking the logits at every step.

llguidance (a maintained grammar engine; bench/structured.py measures it against outlines-core and xgrammar and
docs/serving.md gives the numbers) turns a JSON schema into a grammar over bytes and, for the tokenizer's
vocabulary given as byte strings, says which tokens may come next. Whitespace is off (compact JSON with ',' and
':'), so an untrained model cannot spend its tokens on blanks.

A grammar alone cannot stop a string or a number from running past max_tokens. So every step also keeps a short
way to close the JSON from there (_Walk: a greedy walk that prefers '"' inside a string, then '}' and ']', then the
shortest values: "", 0, ...); a sampled token after which that walk no longer fits in the tokens left is replaced
by the walk's next token. The walk from the start is the fewest tokens a request needs
(JsonGrammar.min_tokens); with at least that many the output always parses, with fewer the server answers 400.

    grammar = compile_json_grammar(tokenizer, schema)          # None: any JSON object; cached per tokenizer+schema
    constraint = grammar.constraint(max_tokens)                 # one per generation
    logits = constraint.mask(logits)                            # disallowed tokens -> -inf
    token = constraint.commit(sampled, tokens_left)            # the token actually taken (maybe a forced one)
    constraint.done                                             # the JSON is complete: stop generating
"""
from __future__ import annotations

import json
import threading
from collections import OrderedDict

import llguidance
import numpy as np

from cllm.errors import ConfigError, TokenizerError

# the special-token marker of llguidance's token trie: a token whose bytes start with 0xFF is never text
_SPECIAL = b"\xff"
# compact JSON: no whitespace between tokens (flexible whitespace lets an untrained model emit blanks forever)
_JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}
# the walk that closes the JSON tries single bytes in this order; inside a string '"' comes first (it closes it),
# outside '}' and ']' (they close containers), then the shortest values: "" 0 [] {} true false null
_CLOSE_OUTSIDE = b'}]"0[{tfnrueals-123456789'
_CLOSE_INSIDE = b'"' + _CLOSE_OUTSIDE.replace(b'"', b"")
MAX_CLOSING = 400  # a walk longer than this means the schema is too deep or strict to close within any budget
_CACHE_SIZE = 64  # compiled grammars kept (per tokenizer and schema)


class StructuredOutputError(ConfigError):
    """A schema llguidance refuses, a tokenizer that cannot spell JSON, or too few tokens to close the JSON."""


class _Vocabulary:
    """The tokenizer's tokens as llguidance wants them (TokenizerWrapper's duck type): `tokens` (bytes per id),
    eos_token_id, bos_token_id, special_token_ids and a call that encodes a string."""

    def __init__(self, tokenizer):
        kind = getattr(tokenizer, "kind", "")
        if kind != "char" and not hasattr(tokenizer, "token_bytes"):
            # a word or WordPiece tokenizer's decode() puts spaces between tokens by context: no fixed bytes
            raise StructuredOutputError(f"structured output needs a char or byte-level BPE tokenizer; this model's "
                                        f"tokenizer is a {kind} tokenizer, whose tokens have no fixed bytes")
        n = tokenizer.vocab_size
        # an imported byte-level BPE keeps its file's specials in `specials`; CLLM's own bpe in `special_tokens`
        named = getattr(tokenizer, "specials", None) or getattr(tokenizer, "special_tokens", None) or {}
        specials = set(named.values()) if kind != "char" else set()
        tokens = []
        for i in range(n):
            bs = None if i in specials else _token_bytes(tokenizer, i)
            if bs is None:
                specials.add(i)
                bs = _SPECIAL + f"<special {i}>".encode()
            tokens.append(bs)
        self.eos_token_id = tokenizer.eos_id
        if self.eos_token_id is None:  # a char tokenizer has no EOS: llguidance needs one, a token past the vocab
            self.eos_token_id = n
            tokens.append(_SPECIAL + b"<eos>")
            specials.add(n)
        self.bos_token_id = tokenizer.bos_id
        self.tokens = tokens
        self.special_token_ids = sorted(specials)
        self.special_set = frozenset(specials)
        self.vocab_size = n  # the tokenizer's own ids
        self.is_tokenizer_wrapper = True
        self._tokenizer = tokenizer
        # single-byte text tokens, byte -> id (the lowest id when two tokens share a byte), for the closing walk
        self.single = {}
        for i in range(n):
            if i not in specials and len(tokens[i]) == 1:
                self.single.setdefault(tokens[i][0], i)
        missing = [chr(b) for b in b'{}"' if b not in self.single]
        if missing:
            raise StructuredOutputError(f"this model's tokenizer has no token for {' '.join(missing)}, so it "
                                        "cannot write JSON")

    def __call__(self, text) -> list[int]:  # llguidance tokenizes forced text with it
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return list(self._tokenizer.encode(text))


def _token_bytes(tokenizer, i: int) -> bytes | None:
    """A text token's bytes, or None for an id the tokenizer does not use (an imported vocabulary's gap)."""
    if tokenizer.kind == "char":
        return tokenizer.id_to_token(i).encode("utf-8")
    try:
        return tokenizer.token_bytes(i)
    except TokenizerError:  # cllm/tokenizers/vocab_bpe.py: "token id ... is not used by this tokenizer"
        return None


_lock = threading.Lock()
_vocabularies: dict[int, tuple[object, _Vocabulary, llguidance.LLTokenizer]] = {}
_grammars: OrderedDict = OrderedDict()


def _ll_tokenizer(tokenizer) -> tuple[_Vocabulary, llguidance.LLTokenizer]:
    with _lock:
        hit = _vocabularies.get(id(tokenizer))
        if hit is not None and hit[0] is tokenizer:
            return hit[1], hit[2]
    vocab = _Vocabulary(tokenizer)
    ll = llguidance.LLTokenizer(llguidance.TokenizerWrapper(vocab), n_vocab=len(vocab.tokens),
                                slices=llguidance.LLTokenizer.json_slices())
    with _lock:
        _vocabularies[id(tokenizer)] = (tokenizer, vocab, ll)
    return vocab, ll


def compile_json_grammar(tokenizer, schema: dict | None) -> JsonGrammar:
    """The grammar of `schema` (a JSON schema as a dict; None: any JSON object) for `tokenizer`, cached; raises
    StructuredOutputError for a schema llguidance refuses or one whose JSON cannot be closed."""
    if schema is None:
        schema = {"type": "object"}
    if not isinstance(schema, dict):
        raise StructuredOutputError(f"a JSON schema must be an object, got {json.dumps(schema)[:80]}")
    key = (id(tokenizer), json.dumps(schema, sort_keys=True))
    with _lock:
        hit = _grammars.get(key)
        if hit is not None and hit.tokenizer is tokenizer:
            _grammars.move_to_end(key)
            return hit
    grammar = JsonGrammar(tokenizer, schema)
    with _lock:
        _grammars[key] = grammar
        while len(_grammars) > _CACHE_SIZE:
            _grammars.popitem(last=False)
    return grammar


class JsonGrammar:
    """One schema compiled for one tokenizer; makes a JsonConstraint per generation."""

    def __init__(self, tokenizer, schema: dict):
        self.tokenizer = tokenizer
        self.vocab, self.ll_tokenizer = _ll_tokenizer(tokenizer)
        try:
            self.grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=_JSON_OPTIONS)
        except (ValueError, TypeError) as e:
            raise StructuredOutputError(f"bad JSON schema: {e}") from None
        error = llguidance.LLMatcher.validate_grammar(self.grammar, self.ll_tokenizer)
        if error and not error.startswith("WARNING"):
            raise StructuredOutputError(f"bad JSON schema: {error.strip()}")
        start = self._matcher()
        if start.is_error():
            raise StructuredOutputError(f"bad JSON schema: {start.get_error()}")
        self.min_tokens = _Walk(self.vocab, start, _Lexer()).closing
        if self.min_tokens is None:
            raise StructuredOutputError(f"this schema's JSON cannot be closed within {MAX_CLOSING} tokens with this "
                                        "model's tokenizer (too deep, or values the tokenizer cannot spell)")

    def _matcher(self) -> llguidance.LLMatcher:
        return llguidance.LLMatcher(self.ll_tokenizer, self.grammar, log_level=0)

    def constraint(self, max_tokens: int) -> JsonConstraint:
        """A fresh matcher for one generation of at most max_tokens tokens; StructuredOutputError when they are
        too few to close the JSON."""
        if max_tokens < self.min_tokens:
            raise StructuredOutputError(f"max_tokens is {max_tokens}; JSON for this schema needs at least "
                                        f"{self.min_tokens} tokens with this model's tokenizer")
        return JsonConstraint(self.vocab, self._matcher())


class _Lexer:
    """Where the JSON text stands, from its bytes: inside a string (a key's or a value's), after a backslash, and
    the last byte outside strings (a digit: inside a number). Enough to tell when a token only lengthens the
    current string value or number, which leaves the shortest way to close the JSON unchanged."""

    __slots__ = ("in_string", "escaped", "key", "last", "stack")

    def __init__(self):
        self.in_string = self.escaped = self.key = False
        self.last = 0  # the last byte outside strings
        self.stack = []  # the open containers' first bytes, 0x7B '{' or 0x5B '['

    def copy(self) -> _Lexer:
        other = _Lexer()
        other.in_string, other.escaped, other.key, other.last = self.in_string, self.escaped, self.key, self.last
        other.stack = list(self.stack)
        return other

    def feed(self, bs: bytes) -> None:
        for b in bs:
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif b == 0x5C:  # backslash
                    self.escaped = True
                elif b == 0x22:  # '"' closes the string
                    self.in_string = False
                    self.last = b
                continue
            if b == 0x22:  # a string opens: a key right after '{' or ',' inside an object
                self.in_string = True
                self.key = bool(self.stack) and self.stack[-1] == 0x7B and self.last in (0x7B, 0x2C)
            elif b in (0x7B, 0x5B):  # '{' '['
                self.stack.append(b)
            elif b in (0x7D, 0x5D) and self.stack:  # '}' ']'
                self.stack.pop()
            self.last = b

    def extends_value(self, bs: bytes, closer: bytes) -> bool:
        """Whether `bs` only lengthens the current string value (no quote or backslash, not after one) or number
        (digits after a digit) that `closer` (the closing walk's next token) ends: then what the JSON needs after
        the value stays the same (an enum's or a pattern's next character would not end it, so does not count)."""
        if self.in_string:
            return (closer[:1] == b'"' and not self.key and not self.escaped and b'"' not in bs
                    and b"\\" not in bs)
        return (0x30 <= self.last <= 0x39 and bs.isdigit() and closer[:1] in (b",", b"}", b"]"))


class _Walk:
    """The greedy closing walk from a matcher's state (and its _Lexer): `path`, the tokens that close the JSON from
    there (None: not within MAX_CLOSING tokens)."""

    def __init__(self, vocab: _Vocabulary, matcher, lexer: _Lexer):
        m = matcher.deep_copy()
        lex = lexer.copy()
        path: list[int] = []
        self.path = None
        while not m.is_stopped():
            if len(path) >= MAX_CLOSING:
                return
            forced = m.compute_ff_tokens()  # a stretch the grammar forces (a key's name, ':'), in one call
            if forced and m.consume_tokens(forced):
                tokens = forced
            else:
                tok = _close_step(vocab, m, lex.in_string and not lex.escaped)
                if tok is None:
                    return
                tokens = [tok]
            for tok in tokens:
                lex.feed(vocab.tokens[tok])
            path.extend(tokens)
        self.path = path

    @property
    def closing(self) -> int | None:
        return None if self.path is None else len(self.path)


def _close_step(vocab: _Vocabulary, m, in_string: bool) -> int | None:
    """Consume the first single-byte token of the closing order the matcher allows (else the allowed text token
    of fewest bytes); its id, or None when nothing is allowed."""
    allowed = _mask(m, len(vocab.tokens))
    for b in _CLOSE_INSIDE if in_string else _CLOSE_OUTSIDE:
        tok = vocab.single.get(b)
        if tok is not None and allowed[tok]:
            m.consume_token(tok)
            return tok
    ids = [int(t) for t in np.flatnonzero(allowed[:vocab.vocab_size]) if t not in vocab.special_set]
    if not ids:
        return None
    tok = min(ids, key=lambda t: (len(vocab.tokens[t]), t))
    m.consume_token(tok)
    return tok


def _mask(matcher, n_tokens: int) -> np.ndarray:
    """The allowed tokens, (n_tokens,) bool."""
    bits = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8)
    return np.unpackbits(bits, bitorder="little")[:n_tokens].astype(bool)


class JsonConstraint:
    """One generation's grammar state. The invariant: the closing walk from the current state fits in the tokens
    left, so the JSON is always complete by max_tokens."""

    def __init__(self, vocab: _Vocabulary, matcher):
        self.vocab = vocab
        self.matcher = matcher
        self.lexer = _Lexer()
        self.walk = _Walk(vocab, matcher, self.lexer)
        self.forced = 0  # tokens the closing walk chose instead of the sampled one

    @property
    def done(self) -> bool:
        return self.matcher.is_stopped()

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """`logits` (V,) with every token the grammar does not allow next at -inf (a new array; V may exceed the
        tokenizer's vocabulary, for a padded model: those ids are disallowed too)."""
        allowed = _mask(self.matcher, len(self.vocab.tokens))[:self.vocab.vocab_size]
        out = np.full(logits.shape, -np.inf, dtype=np.float64)
        n = min(allowed.size, logits.size)
        out[:n] = np.where(allowed[:n], logits[:n], -np.inf)
        return out

    def commit(self, token: int, tokens_left: int) -> int:
        """Take `token` (sampled from mask()'s logits) when the JSON can still be closed in tokens_left - 1 tokens
        after it, else the closing walk's next token; returns the token taken."""
        token = int(token)
        path = self.walk.path
        if path and token == path[0]:  # on the walk: the rest of it closes the JSON
            return self._take(token, path[1:])
        bs = self.vocab.tokens[token]
        if path and len(path) <= tokens_left - 1 and self.lexer.extends_value(bs, self.vocab.tokens[path[0]]):
            # a longer string or number closes the same way, if its end is still allowed after the token
            if self.matcher.consume_token(token):
                if self.matcher.validate_tokens(path[:1]) == 1:
                    self.lexer.feed(bs)
                    return token
                self.matcher.rollback(1)
        elif self.matcher.consume_token(token):
            lexer = self.lexer.copy()
            lexer.feed(bs)
            walk = _Walk(self.vocab, self.matcher, lexer)
            if walk.path is not None and len(walk.path) <= tokens_left - 1:
                self.lexer, self.walk = lexer, walk
                return token
            self.matcher.rollback(1)
        self.forced += 1
        return self._take(path[0], path[1:])

    def _take(self, token: int, rest: list[int]) -> int:
        """Consume the walk's first token; `rest` closes the JSON from there."""
        if self.matcher.validate_tokens([token]) != 1:
            # a kept walk that no longer applies (a range or pattern the shortcut in commit did not foresee): walk
            # again from here; it is no longer than the tokens left unless the grammar is stranger still
            self.walk = _Walk(self.vocab, self.matcher, self.lexer)
            if not self.walk.path:
                raise RuntimeError(f"structured output: no way to close the JSON ({self.matcher.get_error()})")
            token, rest = self.walk.path[0], self.walk.path[1:]
        self.matcher.consume_token(token)
        self.lexer.feed(self.vocab.tokens[token])
        self.walk.path = rest
        return token
