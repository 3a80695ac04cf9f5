"""Continuous batching for the server: the sequences of concurrent requests decode together, one
Model.decode_batch per step, and a prompt that begins with a recently seen prompt's tokens skips their prefill.

    batcher = Batcher(model, eos_id=tok.eos_id)
    for token in batcher.stream(ids, SamplingConfig(...)):   # Generator.stream's contract, from any thread
        ...

One thread (started on first use) owns the model's decoding: each turn of its loop it
  1. admits the sequences that arrived (up to max_batch at once): prefills each prompt into a free slot of the
     shared KV cache, the prefix cache's KV copied in first when one of its prompts shares >= min_prefix tokens;
  2. samples every active sequence's next token from its logits, each with its own SamplingConfig, random
     generator, history and counts, as Generator._steps does (cllm/generation.py next_tokens: the same tokens, the
     common case in one pass over all the rows), and hands it to the sequence's consumer; a sequence that ended
     (EOS, max_new_tokens, its consumer gone) frees its slot;
  3. runs one decode_batch over the tokens just drawn, every sequence at its own position.
Decoding is bound by reading the weights, which one batched step does once for all sequences: B sequences cost
about one step, not B (docs/performance.md, Serving). With one sequence at a time, and for batches under
cllm/kernels/decode.py's GEMM_MIN_ROWS rows, a sequence's tokens are those Generator.stream gives for the same
seed; from that many rows on the linear layers are a gemm, whose sums round differently in the last bits.
A prefix-cache hit prefills only the rest of the prompt: its logits match a full prefill's to float32 rounding.

Thread safety: only the loop thread touches the model and the caches; consumers talk to it through their
sequence's queue and its `gone` flag.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import queue
import threading
from typing import Iterator

import numpy as np

from cllm.errors import ConfigError
from cllm.generation import SamplingConfig, next_tokens

_END = object()  # what a sequence's queue gets after its last token


@dataclasses.dataclass(eq=False)
class _Sequence:
    prompt: list[int]
    cfg: SamplingConfig
    logit_bias: dict[int, float] | None
    out: queue.SimpleQueue = dataclasses.field(default_factory=queue.SimpleQueue)
    gone: bool = False  # the consumer stopped reading (a stop string, a cancel): free the slot
    slot: int = -1
    pos: int = 0  # tokens in the cache, so the position of the next token fed
    produced: int = 0
    logits: np.ndarray | None = None  # (V,) for the next draw
    rng: np.random.Generator | None = None
    history: list[int] = dataclasses.field(default_factory=list)
    counts: dict[int, int] = dataclasses.field(default_factory=dict)
    unstored: list[int] | None = None  # a prompt whose KV the prefix cache gets once its first token is out


class PrefixCache:
    """The KV of a few recent prompts (least recently used out first, at most max_bytes in all): lookup(ids)
    finds the longest prefix that ids shares with one of them. An entry holds a copy of its prompt's positions
    only (positions(cache, n): the model's views of a one-sequence cache's first n positions, HostDecoding's
    kv_positions), not the whole context's cache: copying them in and out is what a hit costs besides the rest of
    its prefill. Positions 0..n-1 of a prompt's cache are what a prefill of any prompt beginning with the same n
    tokens writes there (a position's k and v depend on the tokens up to it only)."""

    def __init__(self, max_bytes: int, min_tokens: int, positions):
        self.max_bytes = max_bytes
        self.min_tokens = min_tokens
        self._positions = positions
        self._entries: collections.OrderedDict[tuple[int, ...], tuple[np.ndarray, list[np.ndarray]]] = \
            collections.OrderedDict()  # prompt -> (its ids as an array, copies of its positions' views)
        self._bytes = 0
        self.hits = self.misses = 0

    def lookup(self, ids: list[int], cache: np.ndarray) -> int:
        """n: the longest shared prefix of at most len(ids) - 1 tokens (one is left to prefill, for the logits)
        with n >= min_tokens, copied into the one-sequence `cache` (with the rest of that entry's positions, which
        a prefill of ids[n:] overwrites or decoding never reads before writing); 0 when there is none."""
        best, best_key = 0, None
        want = np.asarray(ids, dtype=np.int64)
        for key, (key_ids, _) in self._entries.items():
            m = min(key_ids.size, want.size - 1)
            if m < self.min_tokens or m <= best:
                continue
            differ = np.flatnonzero(key_ids[:m] != want[:m])
            n = int(differ[0]) if differ.size else m
            if n > best:
                best, best_key = n, key
        if best < self.min_tokens:
            self.misses += 1
            return 0
        self._entries.move_to_end(best_key)
        key_ids, copies = self._entries[best_key]
        for view, copy in zip(self._positions(cache, key_ids.size), copies):
            view[...] = copy
        self.hits += 1
        return best

    def store(self, ids: list[int], cache: np.ndarray) -> None:
        """Keep a copy of the positions 0..len(ids)-1 of `cache` (one sequence's, holding ids there)."""
        if len(ids) < self.min_tokens:
            return
        key = tuple(ids)
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        copies = [view.copy() for view in self._positions(cache, len(ids))]
        size = sum(c.nbytes for c in copies)
        if size > self.max_bytes:
            return
        while self._entries and self._bytes + size > self.max_bytes:
            self._bytes -= sum(c.nbytes for c in self._entries.popitem(last=False)[1][1])
        self._entries[key] = (np.asarray(ids, dtype=np.int64), copies)
        self._bytes += size


class Batcher:
    """The server's decoding loop (see the module's docstring). model: a host model with decode_batch (Model,
    Int8Model); max_batch: most sequences decoding at once (the rest wait); prefix_cache_bytes: the prefix
    cache's budget (0: none); min_prefix: the fewest shared tokens worth copying; init_thread: run first on the
    loop's thread (Numba's thread count is per thread); turns(): a context manager each step holds (the engine's
    lock where Numba's threading layer cannot run kernels on two threads at once, else None)."""

    def __init__(self, model, eos_id: int | None = None, max_batch: int = 64, prefix_cache_bytes: int = 256 << 20,
                 min_prefix: int = 16, init_thread=None, turns=None):
        self.model = model
        self.eos_id = eos_id
        self.max_len = model.config.max_seq_len
        self.max_batch = max_batch
        self.prefix = PrefixCache(prefix_cache_bytes, min_prefix, model.kv_positions) if prefix_cache_bytes else None
        self._init_thread = init_thread
        self._turns = turns or (lambda: None)
        self._per_sequence = model.config.kv_cache_size(1)
        self._cache = model.new_kv_cache(min(4, max_batch))
        self._free = list(range(self._cache.size // self._per_sequence))
        self._active: list[_Sequence] = []
        self._arrived: collections.deque[_Sequence] = collections.deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self.stats = {"steps": 0, "rows": 0, "prefill_tokens": 0, "prefix_tokens_reused": 0}

    # ---------------------------------------------------------------- the consumers' side
    def stream(self, prompt: list[int], cfg: SamplingConfig, logit_bias: dict[int, float] | None = None
               ) -> Iterator[int]:
        """Generator.stream's tokens, drawn on the loop's thread in batches with the other requests'; stopping
        the iteration early (break, close) frees the sequence's slot at the next step."""
        cfg.validate()
        if not prompt:
            raise ConfigError("the prompt is empty; give at least one token")
        seq = _Sequence(list(prompt), cfg, logit_bias)
        with self._wake:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="cllm-batcher", daemon=True)
                self._thread.start()
            self._arrived.append(seq)
            self._wake.notify()
        try:
            while True:
                item = seq.out.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            seq.gone = True

    # ---------------------------------------------------------------- the loop's thread
    def _loop(self) -> None:
        if self._init_thread is not None:
            self._init_thread()
        while True:
            with self._wake:
                while not self._arrived and not self._active:
                    self._wake.wait()
            try:
                with self._turns() or contextlib.nullcontext():
                    self._step()
            except Exception as exc:  # noqa: BLE001 (every sequence of the failed step gets the error)
                for seq in self._active:
                    seq.out.put(exc)
                    self._free.append(seq.slot)
                self._active = []

    def _slot(self, slot: int) -> np.ndarray:
        """The shared cache's sequence `slot`: a one-sequence cache (a view)."""
        n = self._per_sequence
        return self._cache[slot * n:(slot + 1) * n]

    def _grow(self) -> None:
        """Twice the slots (at most max_batch), the sequences' caches copied over."""
        have = self._cache.size // self._per_sequence
        bigger = self.model.new_kv_cache(min(2 * have, self.max_batch))
        bigger[:self._cache.size] = self._cache
        self._cache = bigger
        self._free += list(range(have, bigger.size // self._per_sequence))

    def _admit(self) -> None:
        while self._arrived and len(self._active) < self.max_batch:
            with self._wake:
                seq = self._arrived.popleft()
            if seq.gone:
                continue
            if not self._free:
                self._grow()
            seq.slot = self._free.pop()
            seq.rng = np.random.default_rng(seq.cfg.seed)
            seq.history = list(seq.prompt)
            self._active.append(seq)
            try:
                self._prefill(seq, seq.history, use_prefix=True)
            except Exception as exc:  # noqa: BLE001 (this request's error only)
                seq.out.put(exc)
                self._finish(seq, end=False)

    def _prefill(self, seq: _Sequence, tokens: list[int], use_prefix: bool) -> None:
        """Generator._prefill into the sequence's slot: its last max_len - 1 tokens, after the prefix cache's
        copy of a shared prefix when there is one."""
        tokens = tokens[-(self.max_len - 1):] if len(tokens) >= self.max_len else tokens
        cache = self._slot(seq.slot)
        start = 0
        if use_prefix and self.prefix is not None:
            start = self.prefix.lookup(tokens, cache)
            self.stats["prefix_tokens_reused"] += start
        seq.logits = self.model.prefill(np.asarray(tokens[start:], dtype=np.int32), start, cache)
        seq.pos = len(tokens)
        self.stats["prefill_tokens"] += len(tokens) - start
        if use_prefix and self.prefix is not None:
            # stored after the first token has gone out (decoding writes only positions >= len(tokens), so the
            # prompt's stay as they are): the copy does not delay the time to first token
            seq.unstored = tokens

    def _finish(self, seq: _Sequence, end: bool = True) -> None:
        if end:
            seq.out.put(_END)
        self._active.remove(seq)
        self._free.append(seq.slot)

    def _step(self) -> None:
        self._admit()
        drawing = []  # the sequences that draw a token this step
        for seq in list(self._active):
            if seq.gone or seq.produced >= seq.cfg.max_new_tokens:
                self._finish(seq)
            else:
                drawing.append(seq)
        drawn = next_tokens([seq.logits for seq in drawing], [seq.cfg for seq in drawing],
                            [seq.rng for seq in drawing], [seq.history for seq in drawing],
                            [seq.counts for seq in drawing], [seq.logit_bias for seq in drawing])
        feed = []  # the sequences whose drawn token is fed this step
        for seq, tok in zip(drawing, drawn):
            if not seq.cfg.ignore_eos and self.eos_id is not None and tok == self.eos_id:
                self._finish(seq)
                continue
            seq.history.append(tok)
            seq.counts[tok] = seq.counts.get(tok, 0) + 1
            seq.produced += 1
            seq.out.put(tok)
            if seq.unstored is not None:
                self.prefix.store(seq.unstored, self._slot(seq.slot))
                seq.unstored = None
            if seq.produced >= seq.cfg.max_new_tokens:
                self._finish(seq)
            elif seq.pos >= self.max_len:  # context full: the last half re-fed, as Generator._steps does
                self._prefill(seq, seq.history[-(self.max_len // 2):], use_prefix=False)
            else:
                feed.append(seq)
        if not feed:
            return
        tokens = np.array([seq.history[-1] for seq in feed], dtype=np.int32)
        positions = np.array([seq.pos for seq in feed], dtype=np.int64)
        slots = np.array([seq.slot for seq in feed], dtype=np.int64)
        logits = self.model.decode_batch(tokens, positions, self._cache, slots)
        for seq, row in zip(feed, logits):
            seq.logits = row
            seq.pos += 1
        self.stats["steps"] += 1
        self.stats["rows"] += len(feed)
