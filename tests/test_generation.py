"""Generation (cllm.generation and the generate command): sampling options against hand-built
distributions and against each other, beam search scores against a full forward, the KV cache's
cost (one decode_step per token, never a full forward), stops, EOS, prompts."""
import numpy as np
import pytest
from train_helpers import (
    all_threads_after,  # noqa: F401  (autouse)
    trained_checkpoint,
)

import cllm.commands.generate as generate_cmd
from cllm.commands import run_command
from cllm.completion import cut_at_stop, encode_prompt, load_for_generation
from cllm.errors import ConfigError
from cllm.generation import (
    Generator,
    SamplingConfig,
    apply_repeat_penalty,
    filter_probs,
    next_token,
    next_tokens,
)
from cllm.model import Model


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    run = trained_checkpoint(tmp_path_factory)
    model, tok, _ = load_for_generation(str(run))
    return run, model, tok


def greedy(n, **kw):
    return SamplingConfig(max_new_tokens=n, temperature=0, **kw)


# ---------------------------------------------------------------- the filters, by hand
P = np.array([0.05, 0.40, 0.10, 0.30, 0.15])


@pytest.mark.parametrize("top_p, kept", [
    (0.30, [1]),  # 0.40 alone reaches 0.30
    (0.40, [1]),  # exactly reached by one token
    (0.41, [1, 3]),
    (0.70, [1, 3]),  # 0.40 + 0.30 reaches 0.70
    (0.75, [1, 3, 4]),
    (0.95, [1, 3, 4, 2]),
    (0.96, [1, 3, 4, 2, 0]),
    (1.00, [0, 1, 2, 3, 4]),
])
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, kept):
    out = filter_probs(P.copy(), 0, top_p)
    expected = np.zeros_like(P)
    expected[kept] = P[kept] / P[kept].sum()
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_top_k_keeps_the_k_most_likely():
    np.testing.assert_allclose(filter_probs(P.copy(), 2, 1.0), [0, 0.4 / 0.7, 0, 0.3 / 0.7, 0], atol=1e-12)
    np.testing.assert_allclose(filter_probs(P.copy(), 1, 1.0), [0, 1, 0, 0, 0])
    np.testing.assert_allclose(filter_probs(P.copy(), 0, 1.0), P)  # 0 disables


def test_sampling_never_picks_what_top_p_or_top_k_removed():
    logits = np.log(P)
    rng = np.random.default_rng(0)
    picks = {next_token(logits, SamplingConfig(temperature=1.0, top_p=0.7), rng, []) for _ in range(300)}
    assert picks == {1, 3}
    picks = {next_token(logits, SamplingConfig(temperature=1.0, top_k=3), rng, []) for _ in range(300)}
    assert picks == {1, 3, 4}
    picks = {next_token(logits, SamplingConfig(temperature=1.0), rng, []) for _ in range(300)}
    assert picks == {0, 1, 2, 3, 4}


def test_sampling_frequencies_follow_the_softmax():
    # 40,000 draws at temperature 1 from logits with known probabilities: every token's frequency
    # within 5 standard errors of its probability, zero-probability (-inf) tokens never drawn
    probs = np.array([0.5, 0.25, 0.0, 0.125, 0.0625, 0.0625])
    logits = np.log(np.where(probs > 0, probs, 1.0))
    logits[probs == 0] = -np.inf
    rng = np.random.default_rng(0)
    cfg = SamplingConfig(temperature=1.0)
    n = 40_000
    counts = np.bincount([next_token(logits, cfg, rng, []) for _ in range(n)], minlength=probs.size)
    assert counts[2] == 0
    err = np.sqrt(probs * (1 - probs) / n)
    assert np.all(np.abs(counts / n - probs) <= 5 * err + 1e-12), counts / n


@pytest.mark.parametrize("vocab", [7, 5000])
def test_next_tokens_of_a_batch_are_next_token_of_each_row(vocab):
    # the server's batched draw (next_tokens) against next_token row by row, with generators of the same seeds:
    # the plain rows (temperature only, the shared pass) and every option that sends a row down next_token,
    # 40 steps of draws, bit for bit the same tokens
    configs = [SamplingConfig(temperature=1.0), SamplingConfig(temperature=0.7), SamplingConfig(temperature=0),
               SamplingConfig(temperature=1.3, top_k=vocab), SamplingConfig(temperature=1.0, top_k=3),
               SamplingConfig(temperature=0.9, top_p=0.8), SamplingConfig(temperature=1.0, min_p=0.1),
               SamplingConfig(temperature=1.0, repeat_penalty=1.3), SamplingConfig(temperature=1.0,
                                                                                   presence_penalty=0.5),
               SamplingConfig(temperature=0.5)]
    biases = [None] * (len(configs) - 1) + [{1: 5.0}]
    B = len(configs)
    rng = np.random.default_rng(vocab)
    batched = [np.random.default_rng(10 + i) for i in range(B)]
    alone = [np.random.default_rng(10 + i) for i in range(B)]
    histories = [[] for _ in range(B)]
    counts = [{} for _ in range(B)]
    spread = set()
    for _ in range(40):
        logits = (rng.standard_normal((B, vocab)) * 2).astype(np.float32)
        rows = list(logits)
        want = [next_token(rows[i], configs[i], alone[i], histories[i], counts[i], biases[i]) for i in range(B)]
        got = next_tokens(rows, configs, batched, histories, counts, biases)
        assert got == want
        for i, tok in enumerate(got):
            histories[i].append(tok)
            counts[i][tok] = counts[i].get(tok, 0) + 1
        spread.add(got[0])
    assert len(spread) > 2  # the draws are draws, not a constant


def test_temperature_zero_is_argmax_and_repeat_penalty_rule():
    logits = np.array([3.0, 2.9, -1.0, 0.5])
    rng = np.random.default_rng(0)
    assert next_token(logits, SamplingConfig(temperature=0), rng, []) == 0
    # llama.cpp's rule: positive logits of recent tokens divided by the penalty, negative ones multiplied
    np.testing.assert_allclose(apply_repeat_penalty(logits, [0, 2], 2.0), [1.5, 2.9, -2.0, 0.5])
    assert next_token(logits, SamplingConfig(temperature=0, repeat_penalty=1.5), rng, [0]) == 1
    # only the last repeat_last_n tokens count
    cfg = SamplingConfig(temperature=0, repeat_penalty=1.5, repeat_last_n=1)
    assert next_token(logits, cfg, rng, [0, 3]) == 0
    assert next_token(logits, cfg, rng, [3, 0]) == 1


def test_repeat_penalty_in_generation_follows_the_rule(loaded):
    """Greedy decoding with a repetition penalty equals a hand-written loop: full forward, the
    penalty applied to the logits of the last n tokens by llama.cpp's rule, argmax."""
    _, model, tok = loaded
    prompt = tok.encode("the ")
    penalty, last_n, n = 1.8, 6, 10
    seq = list(prompt)
    for _ in range(n):
        logits = np.array(model.forward(np.array([seq]))[0, -1], dtype=np.float64)
        for t in set(seq[-last_n:]):
            logits[t] = logits[t] / penalty if logits[t] > 0 else logits[t] * penalty
        seq.append(int(np.argmax(logits)))
    cfg = greedy(n, repeat_penalty=penalty, repeat_last_n=last_n)
    got = list(Generator(model, eos_id=None).stream(prompt, cfg))
    assert got == seq[len(prompt):]
    assert got != list(Generator(model, eos_id=None).stream(prompt, greedy(n)))  # the penalty does change it


@pytest.mark.parametrize("field, value", [("temperature", -0.1), ("top_p", 0.0), ("top_p", 1.5), ("top_k", -1),
                                          ("repeat_penalty", 0.0), ("max_new_tokens", -1)])
def test_invalid_sampling_options(field, value):
    with pytest.raises(ConfigError, match=field.replace("_", "-")):
        SamplingConfig(**{field: value}).validate()


# ---------------------------------------------------------------- decoding with the model
def test_greedy_equals_beam_width_one_and_top_k_one(loaded):
    _, model, tok = loaded
    gen = Generator(model, eos_id=None)
    prompt = tok.encode("the ")
    n = model.config.max_seq_len - len(prompt)  # beam search stays within the context
    g = list(gen.stream(prompt, greedy(n)))
    assert len(g) == n and len(set(g)) > 1
    beams = gen.beam_search(prompt, beam_width=1, max_new_tokens=n)
    assert beams[0][0] == g
    assert list(gen.stream(prompt, SamplingConfig(max_new_tokens=n, temperature=0.9, top_k=1, seed=3))) == g
    # and greedy is the argmax of a full forward over the growing sequence
    seq = list(prompt)
    for _ in range(6):
        logits = np.asarray(model.forward(np.array([seq]))[0, -1])
        seq.append(int(np.argmax(logits)))
    assert seq[len(prompt):] == g[:6]


def test_seeded_sampling_is_reproducible(loaded):
    _, model, tok = loaded
    gen = Generator(model, eos_id=None)
    prompt = tok.encode("a ")
    cfg = lambda seed: SamplingConfig(max_new_tokens=40, temperature=1.0, seed=seed)  # noqa: E731
    a, b, c = (list(gen.stream(prompt, cfg(s))) for s in (11, 11, 12))
    assert a == b
    assert a != c


def _sequence_logprob(model, prompt, tokens):
    seq = np.array([list(prompt) + list(tokens[:-1])])
    logits = np.asarray(model.forward(seq)[0], dtype=np.float64)
    logp = logits - logits.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    start = len(prompt) - 1
    return float(sum(logp[start + i, t] for i, t in enumerate(tokens)))


def test_beam_search_scores_and_order(loaded):
    _, model, tok = loaded
    gen = Generator(model, eos_id=None)
    prompt = tok.encode("the ")
    beams = gen.beam_search(prompt, beam_width=4, max_new_tokens=6, length_penalty=1.0)
    assert len(beams) == 4
    scores = [s for _, s in beams]
    assert scores == sorted(scores, reverse=True)
    assert len({tuple(t) for t, _ in beams}) == 4
    for tokens, score in beams:  # score = sum of log p / length, recomputed with a full forward
        assert len(tokens) == 6
        assert score == pytest.approx(_sequence_logprob(model, prompt, tokens) / 6, abs=1e-4)


def test_eos_stops_generation(loaded):
    _, model, tok = loaded
    prompt = tok.encode("the ")
    g = list(Generator(model, eos_id=None).stream(prompt, greedy(20)))
    eos = g[5]
    cut = g[:g.index(eos)]  # everything before the first EOS
    assert list(Generator(model, eos_id=eos).stream(prompt, greedy(20))) == cut
    beams = Generator(model, eos_id=eos).beam_search(prompt, beam_width=1, max_new_tokens=20)
    assert beams[0][0] == cut
    assert eos not in [t for tokens, _ in beams for t in tokens]
    wide = Generator(model, eos_id=eos).beam_search(prompt, beam_width=3, max_new_tokens=10)
    assert len(wide) == 3  # finished and live beams together
    assert [s for _, s in wide] == sorted((s for _, s in wide), reverse=True)
    assert all(eos not in tokens for tokens, _ in wide)
    assert len({tuple(t) for t, _ in wide}) == 3
    for tokens, score in wide:  # a beam that ended scores its EOS too, counted in its length
        live = _sequence_logprob(model, prompt, tokens) / len(tokens) if tokens else None
        ended = _sequence_logprob(model, prompt, tokens + [eos]) / (len(tokens) + 1)
        assert score == pytest.approx(ended, abs=1e-4) or score == pytest.approx(live, abs=1e-4)
    assert any(len(t) < 10 for t, _ in wide)  # this prompt does meet EOS


class _Counter:
    """Records decode steps as (sequences, position) and prefills as ("prefill", tokens, first position)."""

    def __init__(self, monkeypatch):
        self.calls = []
        original = Model.decode_step
        original_prefill = Model.prefill

        def decode_step(model, tokens, pos, cache):
            self.calls.append((int(np.size(tokens)), pos))
            return original(model, tokens, pos, cache)

        def prefill(model, tokens, pos0, cache):
            self.calls.append(("prefill", int(np.size(tokens)), pos0))
            return original_prefill(model, tokens, pos0, cache)

        def no_forward(*a, **k):
            raise AssertionError("generation ran a full forward instead of the KV cache")

        monkeypatch.setattr(Model, "decode_step", decode_step)
        monkeypatch.setattr(Model, "prefill", prefill)
        monkeypatch.setattr(Model, "forward", no_forward)


def test_kv_cache_one_decode_step_per_token_and_no_forward(loaded, monkeypatch):
    _, model, tok = loaded
    prompt = tok.encode("the dog ")
    counter = _Counter(monkeypatch)
    out = list(Generator(model).stream(prompt, SamplingConfig(max_new_tokens=6, temperature=0.8, seed=1)))
    assert len(out) == 6
    # the prompt is fed once, in one prefill; then each new token once, at its own position, one
    # sequence at a time: the work per token is one position's matrices plus attention over the
    # cache, never the whole prefix again
    assert counter.calls[0] == ("prefill", len(prompt), 0)
    steps = counter.calls[1:]
    assert len(steps) in (len(out) - 1, len(out))
    assert steps == [(1, len(prompt) + i) for i in range(len(steps))]

    counter.calls.clear()
    beams = Generator(model, eos_id=None).beam_search(prompt, beam_width=3, max_new_tokens=5)
    assert len(beams) == 3
    assert counter.calls[0] == ("prefill", len(prompt), 0)  # the prompt, once
    steps = counter.calls[1:]
    assert len(steps) <= 4 and [p for _, p in steps] == list(range(len(prompt), len(prompt) + len(steps)))
    assert all(nb == 3 for nb, _ in steps)


def test_generation_past_the_context_keeps_going_without_forward(loaded, monkeypatch):
    _, model, tok = loaded
    max_len = model.config.max_seq_len
    counter = _Counter(monkeypatch)
    out = list(Generator(model, eos_id=None).stream(tok.encode("the cat"), greedy(3 * max_len)))
    assert len(out) == 3 * max_len
    steps = [c for c in counter.calls if c[0] != "prefill"]
    refills = [c for c in counter.calls if c[0] == "prefill"]
    assert all(0 <= p < max_len and nb == 1 for nb, p in steps)
    assert len(refills) >= 3 and all(p0 == 0 and 0 < n < max_len for _, n, p0 in refills)


def test_cut_at_stop():
    assert cut_at_stop("hello world, bye", ["o w", ","]) == ("hell", True)
    assert cut_at_stop("hello", ["xyz"]) == ("hello", False)


def test_empty_prompt_starts_from_newline_or_bos(loaded):
    _, _, tok = loaded
    assert tok.bos_id is None  # a char tokenizer
    warnings = []
    assert encode_prompt(tok, "", 16, warnings.append) == tok.encode("\n")
    from cllm.tokenizers import train_tokenizer

    words = train_tokenizer("word", "the cat sat on the mat\n" * 5, 20, progress=False)
    assert words.bos_id is not None
    assert encode_prompt(words, "", 16, warnings.append) == [words.bos_id]
    assert warnings == []


def test_long_prompt_is_cropped_to_its_last_tokens_with_a_warning(loaded):
    _, model, tok = loaded
    max_len = model.config.max_seq_len
    text = "the cat sat on the mat and ran far away " * 3
    full = tok.encode(text)
    assert len(full) > max_len
    warnings = []
    ids = encode_prompt(tok, text, max_len, warnings.append)
    assert 0 < len(ids) < max_len and ids == full[-len(ids):]
    assert len(warnings) == 1 and "warning" in warnings[0] and "context" in warnings[0]


# ---------------------------------------------------------------- the command, in process
def _generate(capsys, *args):
    rc = run_command(generate_cmd, "generate", [str(a) for a in args])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out, err


def test_stop_strings_end_the_text_streamed_or_not(loaded, capsys, monkeypatch):
    run, model, tok = loaded
    base = ["the ", "--checkpoint", run, "--temperature", "0", "--max-new-tokens", "40"]
    out, _ = _generate(capsys, *base)
    assert out.startswith("the ") and out.endswith("\n")
    body = out[len("the "):-1]
    g = tok.decode(list(Generator(model).stream(tok.encode("the "), greedy(40))))
    assert body == g  # the command prints the prompt and the greedy continuation
    stop = body[10:12]
    expected = "the " + body[:body.index(stop)] + "\n"
    for stream in ("--no-stream", "--stream"):
        out, _ = _generate(capsys, *base, "--stop", stop, stream)
        assert out == expected, stream
    # several stops: the earliest wins
    stops = [body[20:23], stop]
    out, _ = _generate(capsys, *base, "--stop", stops[0], "--stop", stops[1])
    assert out == "the " + body[:min(body.index(s) for s in stops)] + "\n"


def test_num_samples_and_seed(loaded, capsys):
    run, _, _ = loaded
    base = ["a ", "--checkpoint", run, "--temperature", "1.0", "--max-new-tokens", "30", "--num-samples", "3"]
    out1, _ = _generate(capsys, *base, "--seed", "5")
    out2, _ = _generate(capsys, *base, "--seed", "5")
    assert out1 == out2
    samples = [s for s in out1.split("---------------\n")]
    assert len(samples) == 3 and all(s.startswith("a ") for s in samples)
    assert len(set(samples)) > 1
    out3, _ = _generate(capsys, *base, "--seed", "6")
    assert out3 != out1


def test_beam_command_prints_the_best_beams_with_scores(loaded, capsys):
    run, model, tok = loaded
    out, _ = _generate(capsys, "the ", "--checkpoint", run, "--beam-width", "3", "--num-samples", "2",
                       "--max-new-tokens", "5")
    lines = out.splitlines()
    assert lines[0].startswith("--- beam 1, score ") and lines[2].startswith("--- beam 2, score ")
    s1, s2 = float(lines[0].split()[-1]), float(lines[2].split()[-1])
    assert s1 >= s2
    beams = Generator(model, eos_id=tok.eos_id).beam_search(tok.encode("the "), 3, 5)
    assert lines[1] == "the " + tok.decode(beams[0][0])


def test_the_command_uses_the_kv_cache(loaded, capsys, monkeypatch):
    run, _, _ = loaded
    _Counter(monkeypatch)
    out, _ = _generate(capsys, "the ", "--checkpoint", run, "--max-new-tokens", "10", "--seed", "1")
    assert out.startswith("the ")


def test_empty_prompt_and_interactive_mode(loaded, capsys, monkeypatch):
    import io

    run, model, tok = loaded
    out, _ = _generate(capsys, "", "--checkpoint", run, "--temperature", "0", "--max-new-tokens", "8")
    start = tok.encode("\n")
    assert out == tok.decode(list(Generator(model).stream(start, greedy(8)))) + "\n"
    monkeypatch.setattr("sys.stdin", io.StringIO("the \na,b\n"))
    out, _ = _generate(capsys, "--interactive", "--checkpoint", run, "--temperature", "0", "--max-new-tokens", "5")
    expected = "".join(p + tok.decode(list(Generator(model).stream(tok.encode(p), greedy(5)))) + "\n"
                       for p in ("the ", "a,b"))
    assert out == expected


def test_unknown_words_warn_under_the_word_tokenizer():
    from cllm.tokenizers import train_tokenizer

    words = train_tokenizer("word", "the cat sat on the mat\n" * 5, 20, progress=False)
    warnings = []
    ids = encode_prompt(words, "the zebra sat", 16, warnings.append)
    assert words.unk_id in ids
    assert len(warnings) == 1 and "warning" in warnings[0]


def test_generate_threads_flag_holds(loaded):
    import numba

    run, _, _ = loaded
    load_for_generation(str(run), threads=1)
    assert numba.get_num_threads() == 1
