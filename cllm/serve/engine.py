"""The model behind the server: one loaded checkpoint, generations run on worker threads.

`Engine.run(request, cancel, emit)` runs one completion request (all its choices) on the calling
thread (the server calls it from a thread pool, off the event loop) and reports through `emit`:

    emit("delta", index, text)                     new text of choice `index` (stop strings held back)
    emit("done", index, finish_reason, n_tokens)   choice finished: "stop" (EOS, end of turn, stop string) or
                                                   "length"
    emit("logprobs", index, entries)               with req.logprobs set: [(token text, log-probability or None,
                                                   [(text, log-probability)] alternatives)] of the next tokens of
                                                   choice `index` (the echoed prompt's first, then each new
                                                   token's before its text; the first prompt token's is None)

A chat request is a completion request whose prompt is already ids (the conversation rendered by
Engine.chat_prompt_ids) and whose choices also end at the chat template's end-of-turn token (end_ids).

`cancel` (a threading.Event) is checked before every token: a client that went away stops its
generation within one decoding step.

Batching (cllm/serve/batcher.py): on the CPU the sampled choices of all requests decode together on one thread,
one Model.decode_batch per step, and a prompt sharing a prefix with a recent one skips that part of its prefill;
run() then only waits for its tokens. What the batcher does not do runs on the request's own thread as before
(unbatched_reason says which: beam search, a CUDA model, and the request fields in UNBATCHED_FIELDS, such as
log-probabilities or a constraint, until the batcher learns them). The server's --max-concurrent (its worker
threads, which now mostly wait for tokens) bounds how many requests decode together: 16 clients need 16.

Thread safety: Model.decode_step and prefill only read the parameters and write into the caller's
KV cache and fresh arrays, so several threads may decode at once. The kernels release the GIL while
they run (nogil=True, cllm/kernels/_common.py): generations on two workers use two cores, and the event
loop runs while a worker decodes. (Holding it, a worker that called one kernel per token kept the
loop from running for the whole generation: a streamed reply arrived in one piece at the end.)
Numba's fallback threading layer, workqueue (used where neither OpenMP's libgomp nor TBB is
installed), aborts the process when two threads launch parallel kernels at once; there the
requests take turns (see warm_up): the batcher's steps and the unbatched requests.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time

import numba

from cllm.chat.generate import chat_prompt_ids, end_of_turn_ids, generate_reply
from cllm.completion import cut_at_stop, encode_prompt, load_for_generation
from cllm.generation import Generator, SamplingConfig, prompt_logprobs
from cllm.model import HostDecoding
from cllm.runtime import configure_threads
from cllm.serve.batcher import Batcher

# request fields (getattr: another feature may add them) whose choices run unbatched when set (not None, not
# empty, not False): per-token log-probabilities and constrained decoding read each step's logits on the
# request's own thread (Generator.stream_scored, the constraint hook of cllm/generation.py)
# the request fields whose generation the batcher does not do yet: log-probabilities (Generator.stream_scored) and
# structured output (a grammar constraint per step); their choices run on the request's own thread
UNBATCHED_FIELDS = {"logprobs": "log-probabilities", "grammar": "structured output"}


@dataclasses.dataclass
class CompletionRequest:
    """A validated /v1/completions request (see server.parse_completion_request)."""
    prompts: list[str | list[int]]  # text, or token ids used as they are
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repeat_penalty: float = 1.0
    stop: list[str] = dataclasses.field(default_factory=list)
    seed: int | None = None
    n: int = 1
    stream: bool = False
    beam_width: int = 0
    echo: bool = False
    ignore_eos: bool = False
    include_usage: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    min_p: float = 0.0
    logit_bias: dict[int, float] | None = None
    logprobs: int | None = None  # the alternatives listed per token; None: no log-probabilities
    user: str | None = None  # the client's end-user id, written in the request's log line
    # chat (cllm/serve/server.py chat_completions): the prompt as ids, used instead of `prompts`, and the ids
    # that end a choice besides EOS
    prompt_ids: list[int] | None = None
    end_ids: frozenset[int] = frozenset()
    # structured output (cllm/serve/structured.py): the JSON schema the text must match, the request field that
    # gave it, and its grammar (set by cllm/serve/requests.py compile_structured)
    json_schema: dict | None = None
    json_schema_field: str = ""
    grammar: object | None = None


class Engine:
    def __init__(self, model, tokenizer, checkpoint_path: str, model_id: str | None = None, batching: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        self.checkpoint_path = checkpoint_path
        self.model_id = model_id or default_model_id(checkpoint_path)
        self.created = int(os.path.getmtime(checkpoint_path)) if os.path.exists(checkpoint_path) else int(time.time())
        self.context = model.config.max_seq_len
        self.generator = Generator(model, eos_id=tokenizer.eos_id)
        self._lock = threading.Lock()  # for stats
        self._warm_lock = threading.Lock()
        # Model.forward (an echo's log-probabilities) writes the model's own activation buffers, unlike decoding
        self._forward_lock = threading.Lock()
        self._turns = None  # set by warm_up: a lock that requests hold while generating, or a no-op
        self.threads: int | None = None  # Numba threads of each worker thread (None: Numba's default)
        # Numba threads of the batcher's thread, which decodes every batched request (None: self.threads). The
        # serve command gives it every core: the workers then mostly wait for its tokens.
        self.batch_threads: int | None = None
        self.stats = {"requests": 0, "cancelled": 0, "completion_tokens": 0}
        # a chat model's end-of-turn ids (cllm/chat/generate.py), None without a chat template
        self.end_of_turn = end_of_turn_ids(tokenizer) if self.chat_template is not None else None
        # the batched decoding of the sampled choices: host models only (the CUDA model's batched step exists,
        # cllm/device.py, but the batcher's slot views and prefix copies are host arrays)
        self.batcher = None
        if batching and isinstance(model, HostDecoding):
            self.batcher = Batcher(model, eos_id=tokenizer.eos_id, init_thread=self.init_batcher,
                                   turns=self._turn)

    @classmethod
    def load(cls, checkpoint: str, tokenizer_path=None, threads=None, model_id=None, device="cpu",
             quantize=None) -> "Engine":
        model, tok, path = load_for_generation(checkpoint, tokenizer_path, threads, device, quantize)
        engine = cls(model, tok, path, model_id)
        engine.threads = configure_threads(threads)
        return engine

    def init_worker(self) -> None:
        """Run once in each worker thread: Numba's thread count is per thread, so the count that
        configure_threads set in the main thread does not reach the workers by itself."""
        if self.threads:
            numba.set_num_threads(self.threads)

    def init_batcher(self) -> None:
        """init_worker for the batcher's thread (batch_threads)."""
        threads = self.batch_threads or self.threads
        if threads:
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))

    def warm_up(self) -> None:
        """Compile (or load from Numba's cache) the decoding kernels before the first request, and
        find out whether requests may generate at once (the first parallel kernel picks Numba's
        threading layer). run() calls it when nobody did."""
        with self._warm_lock:
            if self._turns is not None:
                return
            self._run(CompletionRequest(prompts=[""], max_tokens=2, temperature=0.0), threading.Event(),
                      lambda *a: None)
            try:  # set once a parallel kernel was loaded, which the model's first step does
                layer = numba.threading_layer()
            except ValueError:
                layer = None
            self._turns = contextlib.nullcontext() if layer in ("omp", "tbb") else threading.Lock()

    @property
    def chat_template(self) -> str | None:
        return getattr(self.tokenizer, "chat_template", None)

    def describe(self) -> dict:
        cfg = self.model.config
        return {"id": self.model_id, "checkpoint": self.checkpoint_path, "context_length": cfg.max_seq_len,
                "parameters": int(self.model.num_parameters()), "vocab_size": cfg.vocab_size,
                "tokenizer": self.tokenizer.kind, "embed_dim": cfg.embed_dim, "num_layers": cfg.num_layers,
                "num_heads": cfg.num_heads, "chat": self.chat_template is not None}

    def prompt_ids(self, prompt: str) -> list[int]:
        """(ids fed to the model, tokens of the prompt): an empty prompt starts from BOS or a newline;
        a prompt longer than the context keeps its last context - 1 tokens, as `generate` does."""
        return encode_prompt(self.tokenizer, prompt, self.context, lambda msg: None)

    def chat_prompt_ids(self, messages: list[dict]) -> list[int]:
        """The conversation's ids with the generation prompt, cropped to the context as prompt_ids crops a
        prompt; a ChatTemplateError for what the template refuses."""
        return chat_prompt_ids(self.tokenizer, messages, self.context)

    def stats_now(self) -> dict:
        """A copy of the counters (of requests finished: tokens are counted when a request ends)."""
        with self._lock:
            return dict(self.stats)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

    def run(self, req: CompletionRequest, cancel: threading.Event, emit) -> dict:
        """Run every choice of `req`; returns {"prompt_tokens", "completion_tokens", "cancelled"}."""
        if self._turns is None:
            self.warm_up()
        return self._run(req, cancel, emit)

    def _turn(self):
        """The turn a thread running kernels holds (none before warm_up has found out; see there)."""
        return self._turns if self._turns is not None else contextlib.nullcontext()

    def unbatched_reason(self, req: CompletionRequest) -> str | None:
        """Why `req`'s choices run on its own thread instead of the batcher (None: they are batched)."""
        if self.batcher is None:
            return "no batcher (a CUDA model, or batching off)"
        if req.beam_width:
            return "beam search"
        for name, why in UNBATCHED_FIELDS.items():
            if getattr(req, name) is not None:  # logprobs=0 still asks for the chosen tokens' values
                return why
        return None

    def run_exclusive(self, work, *args):
        """work(*args) under the rule run() follows for kernels on several threads at once (see warm_up): for
        generation other than completions, such as an image model's samples (cllm/serve/server.py)."""
        if self._turns is None:
            self.warm_up()
        with self._turns:
            return work(*args)

    def _run(self, req: CompletionRequest, cancel: threading.Event, emit) -> dict:
        self._count("requests")
        prompt_tokens = completion_tokens = 0
        index = 0
        prompts = [req.prompt_ids] if req.prompt_ids is not None else req.prompts
        for prompt in prompts:
            ids = self.prompt_ids(prompt) if isinstance(prompt, str) else prompt
            prompt_tokens += len(ids)
            prefix = (prompt if isinstance(prompt, str) else self.tokenizer.decode(prompt)) if req.echo else ""
            if req.beam_width:
                if cancel.is_set():
                    break
                with self._turn():
                    beams = self.generator.beam_search(ids, req.beam_width, req.max_tokens)
                for new_ids, _score in beams[:req.n]:
                    body, stopped = cut_at_stop(self.tokenizer.decode(new_ids), req.stop)
                    ended = stopped or len(new_ids) < req.max_tokens
                    emit("delta", index, prefix + body)
                    emit("done", index, "stop" if ended else "length", len(new_ids))
                    completion_tokens += len(new_ids)
                    index += 1
                continue
            for i in range(req.n):
                if cancel.is_set():
                    break
                cfg = SamplingConfig(max_new_tokens=req.max_tokens, temperature=req.temperature, top_k=req.top_k,
                                     top_p=req.top_p, repeat_penalty=req.repeat_penalty,
                                     presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty,
                                     min_p=req.min_p, seed=None if req.seed is None else req.seed + i,
                                     ignore_eos=req.ignore_eos)
                n_tokens, reason = self._sample(ids, cfg, req, prefix, index, cancel, emit)
                completion_tokens += n_tokens
                index += 1
        self._count("completion_tokens", completion_tokens)
        if cancel.is_set():
            self._count("cancelled")
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "cancelled": cancel.is_set()}

    def _named(self, token: int, logprob: float | None, top: list) -> tuple[str, float | None, list]:
        """A token's log-probability entry with token texts for ids (a token that is part of a UTF-8 character
        decodes to U+FFFD)."""
        decode = self.tokenizer.decode
        return decode([token]), logprob, [(decode([i]), lp) for i, lp in top]

    def _sample(self, ids, cfg, req, prefix, index, cancel, emit) -> tuple[int, str]:
        """One sampled choice, streamed through emit; (tokens generated, finish reason)."""
        if req.echo and req.logprobs is not None:  # the prompt's own, from one forward over it
            with self._forward_lock:
                scored = prompt_logprobs(self.model, ids, req.logprobs)
            emit("logprobs", index, [self._named(t, *(s or (None, []))) for t, s in zip(ids, scored)])
        if prefix:
            emit("delta", index, prefix)
        constraint = req.grammar.constraint(cfg.max_new_tokens) if req.grammar is not None else None
        batched = self.unbatched_reason(req) is None
        if batched:
            generator = _BatchedGenerator(self.batcher, req.logit_bias)
        elif req.logprobs is not None or req.logit_bias:
            generator = _ScoredGenerator(self.generator, req,
                                         lambda entry: emit("logprobs", index, [self._named(*entry)]))
        else:
            generator = self.generator
        # the batcher's thread takes its own turns; an unbatched choice holds them for its whole generation
        with contextlib.nullcontext() if batched else self._turn():
            reply = generate_reply(generator, self.tokenizer, ids, cfg, req.end_ids, req.stop,
                                   on_text=lambda piece: emit("delta", index, piece), cancelled=cancel.is_set,
                                   constraint=constraint)
        emit("done", index, reply.finish_reason, reply.tokens)
        return reply.tokens, reply.finish_reason


class _BatchedGenerator:
    """The batcher as generate_reply's generator, with the request's logit_bias (no constraint: such requests are
    not batched, see UNBATCHED_FIELDS)."""

    def __init__(self, batcher, logit_bias):
        self.batcher, self.logit_bias = batcher, logit_bias

    def stream(self, ids, cfg, constraint=None):
        assert constraint is None, "structured output is not batched"
        return self.batcher.stream(ids, cfg, self.logit_bias)


class _ScoredGenerator:
    """A Generator for generate_reply whose stream() applies the request's logit_bias and, with req.logprobs set,
    hands each token's (id, log-probability, alternatives) to on_token before the token's text goes out (the
    end-of-turn token, never part of a reply, is not handed on)."""

    def __init__(self, generator: Generator, req: CompletionRequest, on_token):
        self.generator, self.req, self.on_token = generator, req, on_token

    def stream(self, ids, cfg, constraint=None):
        req = self.req
        if req.logprobs is None:
            yield from self.generator.stream(ids, cfg, req.logit_bias, constraint)
            return
        for token, logprob, top in self.generator.stream_scored(ids, cfg, req.logprobs, req.logit_bias, constraint):
            if token not in req.end_ids:
                self.on_token((token, logprob, top))
            yield token


def default_model_id(checkpoint_path: str) -> str:
    """RUN/step_000500 for a checkpoint directory .../RUN/step_000500."""
    path = os.path.normpath(checkpoint_path)
    parent = os.path.basename(os.path.dirname(path))
    return f"{parent}/{os.path.basename(path)}" if parent else os.path.basename(path)
