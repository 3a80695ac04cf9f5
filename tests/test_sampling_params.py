"""The OpenAI and llama.cpp sampling parameters of cllm/generation.py (logit_bias, presence and frequency
penalties, min_p) against their published rules written out here, and the log-probabilities that the server's
logprobs and echo report (Generator.stream_scored, prompt_logprobs) against the training forward's per-token
losses, which are `cli.py evaluate`'s."""
import numpy as np
import pytest
from train_helpers import all_threads_after  # noqa: F401  (autouse)

from cllm.config import ModelConfig
from cllm.errors import ConfigError
from cllm.generation import Generator, SamplingConfig, next_token, prompt_logprobs, top_logprobs
from cllm.model import Model

V = 40


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def model(request):
    kw = {"num_kv_heads": 1} if request.param == "llama" else {}
    return Model(ModelConfig(vocab_size=V, max_seq_len=24, num_layers=2, num_heads=2, embed_dim=16,
                             arch=request.param, **kw), seed=3)


def greedy(n, **kw):
    return SamplingConfig(max_new_tokens=n, temperature=0, **kw)


def reference_greedy(model, prompt, n, bias=None, presence=0.0, frequency=0.0):
    """Greedy decoding by full forwards, the rules applied by hand."""
    seq, counts = list(prompt), {}
    for _ in range(n):
        logits = np.array(model.forward(np.array([seq], dtype=np.int32))[0, -1], dtype=np.float64)
        for t, b in (bias or {}).items():
            logits[t] += b
        for t, c in counts.items():
            logits[t] -= c * frequency + presence
        t = int(np.argmax(logits))
        counts[t] = counts.get(t, 0) + 1
        seq.append(t)
    return seq[len(prompt):]


# ---------------------------------------------------------------- the rules
def test_logit_bias_bans_and_forces_tokens(model):
    prompt = [1, 2, 3]
    plain = list(Generator(model).stream(prompt, greedy(8)))
    banned = {t: -100.0 for t in set(plain)}
    got = list(Generator(model).stream(prompt, greedy(8), logit_bias=banned))
    assert not set(got) & set(banned)
    assert got == reference_greedy(model, prompt, 8, bias=banned)
    assert list(Generator(model).stream(prompt, greedy(5), logit_bias={7: 100.0})) == [7] * 5
    # sampled at temperature 1 too: a banned token never comes
    cfg = SamplingConfig(max_new_tokens=30, temperature=1.0, seed=0)
    assert 5 not in Generator(model).stream(prompt, cfg, logit_bias={5: -100.0, 7: -100.0})


@pytest.mark.parametrize("presence, frequency", [(1.5, 0.0), (0.0, 0.7), (0.4, 0.9), (-1.0, 0.0)])
def test_presence_and_frequency_penalties_follow_openais_rule(model, presence, frequency):
    prompt = [4, 4, 9]
    n = 12
    got = list(Generator(model).stream(prompt, greedy(n, presence_penalty=presence, frequency_penalty=frequency)))
    assert got == reference_greedy(model, prompt, n, presence=presence, frequency=frequency)


def test_penalties_change_the_text_and_count_generated_tokens_only():
    logits = np.array([5.0, 4.9, 0.0, 0.0])
    rng = np.random.default_rng(0)
    cfg = greedy(1, presence_penalty=0.2)
    # the prompt (history) holds token 0 many times: no penalty; a generated 0 is penalized below token 1
    assert next_token(logits, cfg, rng, history=[0] * 10, counts={}) == 0
    assert next_token(logits, cfg, rng, history=[0], counts={0: 1}) == 1
    # frequency scales with the count: 0.05 per occurrence passes 4.9 after 3 occurrences, not 2
    cfg = greedy(1, frequency_penalty=0.05)
    assert next_token(logits, cfg, rng, [], counts={0: 2}) == 0
    assert next_token(logits, cfg, rng, [], counts={0: 3}) == 1


def test_min_p_keeps_tokens_at_least_min_p_times_the_likeliest():
    logits = np.log(np.array([0.5, 0.3, 0.12, 0.08]))
    rng = np.random.default_rng(0)
    draws = [next_token(logits, SamplingConfig(temperature=1.0, min_p=0.2), rng, []) for _ in range(2000)]
    assert set(draws) == {0, 1, 2}  # 0.12 >= 0.2 * 0.5, 0.08 is not
    counts = np.bincount(draws, minlength=4)[:3] / len(draws)
    np.testing.assert_allclose(counts, np.array([0.5, 0.3, 0.12]) / 0.92, atol=0.04)
    draws = [next_token(logits, SamplingConfig(temperature=1.0), rng, []) for _ in range(2000)]
    assert 3 in draws  # off by default


@pytest.mark.parametrize("field, value", [("presence_penalty", 2.5), ("frequency_penalty", -2.1), ("min_p", -0.1),
                                          ("min_p", 1.5)])
def test_invalid_values_are_refused(field, value):
    with pytest.raises(ConfigError, match=field.replace("_", "-")):
        SamplingConfig(**{field: value}).validate()


# ---------------------------------------------------------------- log-probabilities
def test_top_logprobs_order_and_ties():
    logp = np.log(np.array([0.1, 0.3, 0.3, 0.2, 0.1]))
    assert [i for i, _ in top_logprobs(logp, 3)] == [1, 2, 3]
    assert [i for i, _ in top_logprobs(logp, 5)] == [1, 2, 3, 0, 4]
    assert top_logprobs(logp, 0) == []
    assert len(top_logprobs(logp, 99)) == 5


def test_scored_tokens_are_minus_the_evaluation_losses(model):
    prompt = [3, 1, 4, 1, 5]
    cfg = SamplingConfig(max_new_tokens=10, temperature=1.0, seed=7)
    scored = list(Generator(model).stream_scored(prompt, cfg, top_n=3))
    assert [t for t, _, _ in scored] == list(Generator(model).stream(prompt, cfg))  # same draws
    seq = prompt + [t for t, _, _ in scored]
    x, y = np.array([seq[:-1]], dtype=np.int32), np.array([seq[1:]], dtype=np.int32)
    model.loss(x, y)
    losses = model.token_losses()[0, len(prompt) - 1:]
    np.testing.assert_allclose([lp for _, lp, _ in scored], -losses, atol=2e-5)
    for tok, lp, top in scored:
        assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1]
        assert lp <= top[0][1] + 1e-9
        assert (tok in [i for i, _ in top]) == (lp >= top[2][1] - 1e-9)


def test_prompt_logprobs_are_minus_the_evaluation_losses(model):
    ids = [2, 7, 1, 8, 2, 8, 1, 8]
    out = prompt_logprobs(model, ids, top_n=2)
    assert out[0] is None and len(out) == len(ids)
    model.loss(np.array([ids[:-1]], dtype=np.int32), np.array([ids[1:]], dtype=np.int32))
    np.testing.assert_allclose([lp for lp, _ in out[1:]], -model.token_losses()[0], atol=2e-5)
    assert all(len(top) == 2 for _, top in out[1:])
    assert prompt_logprobs(model, [5], 2) == [None]
    with pytest.raises(ConfigError, match="context"):
        prompt_logprobs(model, list(range(25)), 0)
