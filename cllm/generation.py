"""Text generation with the KV cache: sampling (temperature, top-k, top-p, repetition penalty),
greedy decoding, and beam search with length normalization.

The prompt is fed in one Model.prefill call; every new token then costs one Model.decode_step:
O(position) attention plus the weight matrices, never a forward over the whole prefix. When the
context is full, the last half of it is re-fed into a fresh cache (gpt2's positions are learned and
absolute, so the cache cannot simply slide; llama's re-prefill restarts its RoPE positions at 0 the same
way, as each training window starts at 0).
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from cllm.config import option
from cllm.errors import ConfigError


@dataclasses.dataclass
class SamplingConfig:
    """How tokens are drawn; its fields are also `cli.py generate`'s sampling flags (cllm/commands/generate.py)."""

    max_new_tokens: int = option(200, "tokens to generate")
    temperature: float = option(0.8, "sampling temperature (0 is greedy)")
    top_k: int = option(0, "sample among the k most likely tokens (0: all)")
    top_p: float = option(1.0, "sample among the smallest set of tokens whose probability reaches p (1: all)")
    repeat_penalty: float = option(1.0, "divide the logits of recently seen tokens by this (1: off)")
    repeat_last_n: int = option(64, "how many recent tokens the repeat penalty looks at")
    presence_penalty: float = option(0.0, "subtract this from the logit of every token already generated "
                                          "(OpenAI's; -2..2, 0: off)")
    frequency_penalty: float = option(0.0, "subtract this times its count so far from a generated token's logit "
                                           "(OpenAI's; -2..2, 0: off)")
    min_p: float = option(0.0, "drop tokens less likely than min_p times the most likely one (llama.cpp's; 0: off)")
    seed: int | None = option(None, "random seed; the same seed gives the same text (none: a fresh one)")
    ignore_eos: bool = option(False, "go on after EOS: exactly --max-new-tokens tokens (for benchmarks)")

    def validate(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 0:
            raise ConfigError(f"--max-new-tokens must be a non-negative integer, got {self.max_new_tokens!r}")
        if not self.temperature >= 0:
            raise ConfigError(f"--temperature must be >= 0 (0 is greedy), got {self.temperature!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ConfigError(f"--top-k must be a non-negative integer (0 disables it), got {self.top_k!r}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"--top-p must lie in (0, 1], got {self.top_p!r}")
        if not self.repeat_penalty > 0:
            raise ConfigError(f"--repeat-penalty must be > 0 (1 disables it), got {self.repeat_penalty!r}")
        if not isinstance(self.repeat_last_n, int) or self.repeat_last_n < 0:
            raise ConfigError(f"--repeat-last-n must be a non-negative integer, got {self.repeat_last_n!r}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2 <= getattr(self, name) <= 2:
                raise ConfigError(f"--{name.replace('_', '-')} must lie in [-2, 2], got {getattr(self, name)!r}")
        if not 0 <= self.min_p <= 1:
            raise ConfigError(f"--min-p must lie in [0, 1], got {self.min_p!r}")


def apply_repeat_penalty(logits: np.ndarray, recent: list[int], penalty: float) -> np.ndarray:
    """llama.cpp's rule: a positive logit of a recent token is divided by the penalty, a negative one multiplied."""
    if penalty == 1.0 or not recent:
        return logits
    logits = logits.copy()
    ids = np.unique(np.asarray(recent, dtype=np.int64))
    vals = logits[ids]
    logits[ids] = np.where(vals > 0, vals / penalty, vals * penalty)
    return logits


def filter_probs(probs: np.ndarray, top_k: int, top_p: float) -> np.ndarray:
    """Zero all but the top_k most likely tokens, then all but the smallest set whose mass reaches
    top_p; renormalized. probs (V,) float64."""
    if top_k and top_k < probs.size:
        kth = np.partition(probs, -top_k)[-top_k]
        keep = probs >= kth
        # ties at the threshold: keep exactly top_k, the lowest ids first (deterministic)
        if keep.sum() > top_k:
            order = np.argsort(-probs, kind="stable")[:top_k]
            keep = np.zeros_like(keep)
            keep[order] = True
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum()
    if top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        n_keep = int(np.searchsorted(cumulative, top_p - 1e-12) + 1)  # first index where mass >= top_p
        mask = np.zeros(probs.size, dtype=bool)
        mask[order[:n_keep]] = True
        probs = np.where(mask, probs, 0.0)
        probs /= probs.sum()
    return probs


def apply_presence_frequency(logits: np.ndarray, counts: dict[int, int], presence: float,
                             frequency: float) -> np.ndarray:
    """OpenAI's penalties: logit[j] -= count[j] * frequency + (count[j] > 0) * presence, count[j] the times token j
    was generated so far (the prompt's tokens do not count, as in OpenAI's and vLLM's servers)."""
    if (presence == 0 and frequency == 0) or not counts:
        return logits
    logits = logits.copy()
    ids = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
    n = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
    logits[ids] -= n * frequency + presence
    return logits


def apply_logit_bias(logits: np.ndarray, bias: dict[int, float] | None) -> np.ndarray:
    """OpenAI's logit_bias: {token id: value added to its logit}; -100 bans a token, 100 all but forces it."""
    if not bias:
        return logits
    logits = logits.copy()
    for token, value in bias.items():
        logits[token] += value
    return logits


def next_token(logits: np.ndarray, cfg: SamplingConfig, rng: np.random.Generator, history: list[int],
               counts: dict[int, int] | None = None, logit_bias: dict[int, float] | None = None) -> int:
    """Pick the next token id from one row of logits (V,). counts: how often each token was generated so far (for
    the presence and frequency penalties). The order: logit bias, repeat penalty, presence and frequency
    penalties, temperature (0: the argmax here), top-k, top-p, min-p (the order of transformers' processors)."""
    logits = apply_logit_bias(np.asarray(logits, dtype=np.float64), logit_bias)
    if cfg.repeat_penalty != 1.0 and cfg.repeat_last_n:
        logits = apply_repeat_penalty(logits, history[-cfg.repeat_last_n:], cfg.repeat_penalty)
    if counts:
        logits = apply_presence_frequency(logits, counts, cfg.presence_penalty, cfg.frequency_penalty)
    if cfg.temperature == 0:
        return int(np.argmax(logits))
    z = logits / cfg.temperature
    z -= z.max()
    probs = np.exp(z)
    probs /= probs.sum()
    probs = filter_probs(probs, cfg.top_k, cfg.top_p)
    if cfg.min_p > 0:  # the most likely token always stays
        probs = np.where(probs >= cfg.min_p * probs.max(), probs, 0.0)
        probs /= probs.sum()
    # inverse CDF (twice as fast as rng.choice(p=...), which re-validates p every call): the first
    # token whose cumulative mass exceeds u; a zero-probability token never does (its cumulative
    # mass equals its predecessor's)
    cdf = np.cumsum(probs)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), probs.size - 1))


def _plain(cfg: SamplingConfig, counts: dict[int, int] | None, logit_bias: dict[int, float] | None,
           vocab: int) -> bool:
    """True when next_token would only scale by the temperature and draw (or take the argmax): no bias, penalty or
    truncation acts."""
    return (not logit_bias and (cfg.repeat_penalty == 1.0 or not cfg.repeat_last_n)
            and (not counts or (cfg.presence_penalty == 0 and cfg.frequency_penalty == 0))
            and (not cfg.top_k or cfg.top_k >= vocab) and cfg.top_p >= 1.0 and cfg.min_p <= 0)


def next_tokens(rows: list[np.ndarray], cfgs: list[SamplingConfig], rngs: list[np.random.Generator],
                histories: list[list[int]], counts: list[dict[int, int]],
                logit_biases: list[dict[int, float] | None]) -> list[int]:
    """next_token for each of several sequences (row i of logits (V,) with cfgs[i], rngs[i], ...): the same token
    each would get alone. The rows that only need the temperature and a draw, the common case of a server's
    batch, share one pass over a (B,V) array: the same float64 operations along each row as next_token's, so the
    same values, in a fraction of B separate calls' time; the others go through next_token one by one."""
    tokens = [0] * len(rows)
    drawn = []  # indices of the plain rows with a temperature
    for i, row in enumerate(rows):
        if not _plain(cfgs[i], counts[i], logit_biases[i], row.size):
            tokens[i] = next_token(row, cfgs[i], rngs[i], histories[i], counts[i], logit_biases[i])
        elif cfgs[i].temperature == 0:
            tokens[i] = int(np.argmax(row))  # next_token's argmax of the same values in float64
        else:
            drawn.append(i)
    if drawn:
        z = np.asarray(np.stack([rows[i] for i in drawn]), dtype=np.float64)
        z /= np.array([cfgs[i].temperature for i in drawn], dtype=np.float64)[:, None]
        z -= z.max(axis=1, keepdims=True)
        probs = np.exp(z)
        probs /= probs.sum(axis=1, keepdims=True)
        cdf = np.cumsum(probs, axis=1)
        last = cdf.shape[1] - 1
        for j, i in enumerate(drawn):
            tokens[i] = int(min(np.searchsorted(cdf[j], rngs[i].random() * cdf[j, last], side="right"), last))
    return tokens


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """(..., V) logits -> float64 log-probabilities."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def top_logprobs(logp: np.ndarray, n: int) -> list[tuple[int, float]]:
    """The n most likely (id, log-probability) of one row (V,), the likeliest first, ties by the lower id."""
    if n <= 0:
        return []
    n = min(n, logp.size)
    ids = np.argpartition(-logp, n - 1)[:n]
    ids = ids[np.lexsort((ids, -logp[ids]))]
    return [(int(i), float(logp[i])) for i in ids]


def prompt_logprobs(model, ids: list[int], top_n: int = 0) -> list[tuple[float, list] | None]:
    """For each token of `ids`: None for the first (nothing predicts it), then (its log-probability given the
    tokens before it, the top_n alternatives) from one forward over the whole prompt, at most the model's context
    long (what `cli.py evaluate` scores with one window)."""
    if len(ids) > model.config.max_seq_len:
        raise ConfigError(f"the prompt has {len(ids)} tokens; its log-probabilities need at most the context, "
                          f"{model.config.max_seq_len}")
    out: list[tuple[float, list] | None] = [None]
    if len(ids) < 2:
        return out[:len(ids)]
    x = np.asarray(ids[:-1], dtype=np.int32)[None, :]
    logp = log_softmax(np.array(model.forward(x)[0]))  # (L-1, V)
    for j, tok in enumerate(ids[1:]):
        out.append((float(logp[j, tok]), top_logprobs(logp[j], top_n)))
    return out


class Generator:
    """Runs a model with a KV cache. prompt ids in, new token ids out (as an iterator)."""

    def __init__(self, model, eos_id: int | None = None):
        self.model = model
        self.eos_id = eos_id
        self.max_len = model.config.max_seq_len

    def _prefill(self, tokens: list[int]):
        """A fresh one-sequence cache holding `tokens` (the last max_len - 1 of them), fed in one
        Model.prefill call; returns (cache, logits (1,V), pos)."""
        tokens = tokens[-(self.max_len - 1):] if len(tokens) >= self.max_len else tokens
        cache = self.model.new_kv_cache(1)
        logits = self.model.prefill(np.asarray(tokens, dtype=np.int32), 0, cache)
        return cache, logits[None, :], len(tokens)

    def stream(self, prompt: list[int], cfg: SamplingConfig, logit_bias: dict[int, float] | None = None,
               constraint=None) -> Iterator[int]:
        """The new token ids, one at a time; EOS ends them (and is not yielded) unless cfg.ignore_eos.
        `constraint` (e.g. cllm/serve/structured.py's JsonConstraint): see _steps."""
        for tok, _ in self._steps(prompt, cfg, logit_bias, constraint):
            yield tok

    def stream_scored(self, prompt: list[int], cfg: SamplingConfig, top_n: int = 0,
                      logit_bias: dict[int, float] | None = None, constraint=None
                      ) -> Iterator[tuple[int, float, list]]:
        """stream()'s tokens as (id, its log-probability, [(id, log-probability)] of the top_n most likely): the
        model's own distribution (a log-softmax of its logits, before any penalty, bias or temperature), so a
        token's value is minus the loss `cli.py evaluate` gives it in the same context."""
        for tok, logits in self._steps(prompt, cfg, logit_bias, constraint):
            logp = log_softmax(logits)
            yield tok, float(logp[tok]), top_logprobs(logp, top_n)

    def _steps(self, prompt: list[int], cfg: SamplingConfig, logit_bias=None,
               constraint=None) -> Iterator[tuple[int, np.ndarray]]:
        """(token, the logits row (V,) it was drawn from) for each new token. A `constraint` (grammar-constrained
        decoding) sets the logits of the tokens it disallows to -inf before sampling (constraint.mask), may replace
        the sampled token (constraint.commit(token, tokens left), e.g. to close a JSON object in time), and ends the
        generation once constraint.done."""
        cfg.validate()
        if not prompt:
            raise ConfigError("the prompt is empty; give at least one token")
        rng = np.random.default_rng(cfg.seed)
        history = list(prompt)
        counts: dict[int, int] = {}
        cache, logits, pos = self._prefill(history)
        for step in range(cfg.max_new_tokens):
            row = logits[0]
            if constraint is None:
                tok = next_token(row, cfg, rng, history, counts, logit_bias)
            else:
                tok = next_token(constraint.mask(row), cfg, rng, history, counts, logit_bias)
                tok = constraint.commit(tok, cfg.max_new_tokens - step)
            if not cfg.ignore_eos and self.eos_id is not None and tok == self.eos_id:
                return
            history.append(tok)
            counts[tok] = counts.get(tok, 0) + 1
            yield tok, row
            if constraint is not None and constraint.done:
                return
            if pos >= self.max_len:  # context full: keep the last half and rebuild the cache
                cache, logits, pos = self._prefill(history[-(self.max_len // 2):])
            else:
                logits = self.model.decode_step(np.array([tok], dtype=np.int32), pos, cache)
                pos += 1

    def beam_search(self, prompt: list[int], beam_width: int, max_new_tokens: int,
                    length_penalty: float = 1.0) -> list[tuple[list[int], float]]:
        """Beams sorted best first as (new token ids, score), score = sum log p / len^length_penalty.

        Each step keeps the beam_width best extensions of the live beams; those ending in EOS finish
        and leave the search (the beam shrinks), so width 1 is greedy decoding, EOS included. It
        stops when no beam is live, when no live beam can still beat the worst finished one, or
        after max_new_tokens."""
        if not isinstance(beam_width, int) or beam_width < 1:
            raise ConfigError(f"--beam-width must be a positive integer, got {beam_width!r}")
        if not prompt:
            raise ConfigError("the prompt is empty; give at least one token")
        if len(prompt) + max_new_tokens > self.max_len:
            max_new_tokens = max(0, self.max_len - min(len(prompt), self.max_len - 1))
        cache, logits, pos = self._prefill(list(prompt))
        C = cache.size
        # start from one beam; caches of all beams live side by side in one (k, ...) array
        beams = [([], 0.0)]  # (tokens, sum log p)
        caches = cache.reshape(1, C)
        finished: list[tuple[list[int], float, bool]] = []  # (tokens without EOS, sum log p with it, True)

        def norm(tokens, logp, ended=False):  # an ended beam's EOS counts in its length, as in its log p
            return logp / max(1, len(tokens) + ended) ** length_penalty

        for step in range(max_new_tokens):
            new_beams, parents = self._extend_beams(beams, logits, beam_width, finished)
            if not new_beams:  # every beam ended
                beams = []
                break
            beams = new_beams
            caches = caches[parents].copy()  # reorder the KV caches to follow the surviving beams
            if len(finished) >= beam_width:
                worst = sorted(norm(*f) for f in finished)[-beam_width]
                if max(norm(t, s) for t, s in beams) < worst:
                    break
            if step == max_new_tokens - 1:
                break
            flat_cache = caches.reshape(-1)
            toks = np.array([b[0][-1] for b in beams], dtype=np.int32)
            logits = self.model.decode_step(toks, pos, flat_cache)
            caches = flat_cache.reshape(len(beams), C)
            pos += 1
        everything = finished + [(t, s, False) for t, s in beams]
        everything.sort(key=lambda b: -norm(*b))
        return [(t, norm(t, s, ended)) for t, s, ended in everything]

    def _extend_beams(self, beams: list[tuple[list[int], float]], logits: np.ndarray, beam_width: int,
                      finished: list) -> tuple[list[tuple[list[int], float]], list[int]]:
        """One beam-search step: the best extensions of `beams` (k of them, logits (k,V)) as (new beams, the
        index of each one's parent); extensions ending in EOS go to `finished` instead (each keeps a slot)."""
        logp = logits.astype(np.float64)
        logp = logp - logp.max(axis=1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(axis=1, keepdims=True))
        totals = np.array([b[1] for b in beams])[:, None] + logp  # (k, V)
        flat = totals.ravel()
        n_cand = min(flat.size, beam_width - len(finished))  # a finished beam keeps its slot
        cand = np.argpartition(-flat, n_cand - 1)[:n_cand]
        cand = cand[np.lexsort((cand, -flat[cand]))]  # best first, ties by index
        new_beams, parents = [], []
        V = logp.shape[1]
        for c in cand:
            parent, tok = divmod(int(c), V)
            tokens = beams[parent][0] + [tok]
            if self.eos_id is not None and tok == self.eos_id:
                finished.append((beams[parent][0], float(flat[c]), True))
                continue
            new_beams.append((tokens, float(flat[c])))
            parents.append(parent)
            if len(new_beams) == beam_width:
                break
        return new_beams, parents
