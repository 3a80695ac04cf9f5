"""The whole model: float64 finite differences on every parameter tensor, accumulation, KV-cache
decoding against the full forward, the optimizer's guards and formula, re-allocation, init."""
import math

import numpy as np
import pytest

from cllm.config import ModelConfig
from cllm.errors import ConfigError, TrainingError
from cllm.kernels._common import PARALLEL_MIN_WORK
from cllm.kernels.decode import GEMM_MIN_ROWS, PARALLEL_MATVEC_MIN, matvec_forward
from cllm.model import MATRIX_PARAMS, Model
from cllm.optim import AdamW

TINY = ModelConfig(vocab_size=11, max_seq_len=6, num_layers=2, num_heads=2, embed_dim=6)  # Vp = 64


def batch(cfg, B, T, seed):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, cfg.vocab_size, (B, T)).astype(np.int32),
            rng.integers(0, cfg.vocab_size, (B, T)).astype(np.int32))


def roughen(model, seed, scale=0.3):
    """Random values everywhere (biases, LN gains too) so that every path carries gradient;
    the padded rows of wte stay zero."""
    rng = np.random.default_rng(seed)
    model.params += (rng.standard_normal(model.params.size) * scale).astype(model.dtype)
    V, C = model.config.vocab_size, model.config.embed_dim
    model.p["wte"][V * C:] = 0


@pytest.fixture(scope="module")
def model64():
    m = Model(TINY, seed=1, dtype=np.float64)
    roughen(m, 2)
    return m


def loss_and_grads(model, idx, tgt):
    model.zero_grad()
    _, loss = model.forward(idx, tgt)
    model.backward()
    return loss, model.grads.copy()


def test_finite_differences_every_tensor(model64):
    m = model64
    cfg = m.config
    T = cfg.max_seq_len  # the last learned position is used
    idx, tgt = batch(cfg, 2, T, 3)
    _, grads = loss_and_grads(m, idx, tgt)
    g_views = {name: grads[s.start:s.stop] for name, s in _slices(m).items()}
    rng = np.random.default_rng(4)
    h = 1e-5
    for name, view in m.p.items():
        g = g_views[name]
        n = view.size
        picks = rng.choice(n, min(n, 12), replace=False)
        if name == "wte":  # also rows of tokens in the batch, and a padded row (gradient 0)
            picks = np.concatenate([picks, idx[0, :3] * cfg.embed_dim + 1, [cfg.vocab_size * cfg.embed_dim + 2]])
        numeric = np.empty(picks.size)
        for j, i in enumerate(picks):
            old = view[i]
            view[i] = old + h
            _, lp = m.forward(idx, tgt)
            view[i] = old - h
            _, lm = m.forward(idx, tgt)
            view[i] = old
            numeric[j] = (lp - lm) / (2 * h)
        scale = max(np.max(np.abs(g)), 1e-12)
        np.testing.assert_allclose(g[picks], numeric, rtol=1e-6, atol=1e-6 * scale + 1e-10,
                                   err_msg=f"gradient of {name}")
        assert np.any(g != 0), f"{name} got no gradient at all"


def _slices(model):
    out, off = {}, 0
    for name, view in model.p.items():
        out[name] = slice(off, off + view.size)
        off += view.size
    return out


def test_backward_accumulates(model64):
    m = model64
    idx, tgt = batch(m.config, 2, 4, 5)
    _, g1 = loss_and_grads(m, idx, tgt)
    m.forward(idx, tgt)
    m.backward()  # a second step without zero_grad adds the same gradient again
    np.testing.assert_allclose(m.grads, 2 * g1, rtol=1e-12, atol=1e-15)
    assert np.any(g1 != 0)


def test_one_backward_per_forward(model64):
    # the backward turns the forward's probabilities into the logits' gradient in place (as PyTorch
    # frees its graph): a second backward must refuse rather than use those as probabilities
    m = model64
    idx, tgt = batch(m.config, 2, 4, 5)
    m.zero_grad()
    m.forward(idx, tgt)
    m.backward()
    grads = m.grads.copy()
    with pytest.raises(RuntimeError, match="one backward per forward"):
        m.backward()
    np.testing.assert_array_equal(m.grads, grads)


def test_loss_matches_numpy_softmax(model64):
    m = model64
    idx, tgt = batch(m.config, 3, 5, 6)
    logits, loss = m.forward(idx, tgt)
    assert logits.shape == (3, 5, m.config.vocab_size)
    x = logits - logits.max(-1, keepdims=True)
    logp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    ref = -np.mean(np.take_along_axis(logp, tgt[..., None], -1))
    assert loss == pytest.approx(ref, rel=1e-12)
    assert np.array_equal(m.forward(idx), logits)  # without targets: the same logits


@pytest.mark.parametrize("nb, vocab", [(1, 37), (2, 37), (9, 37), (GEMM_MIN_ROWS + 1, 37), (2, 17000)])
def test_kv_cache_decode_equals_forward(nb, vocab):
    # 9 rows: blocked matrix-vector products; GEMM_MIN_ROWS + 1: the gemm path. vocab 17000 x 64 dims: an LM
    # head of 1.09M weights, which decode_step splits over the threads
    embed = 32 if vocab < 1000 else 64
    assert (vocab * embed >= PARALLEL_MATVEC_MIN) == (vocab > 1000)
    cfg = ModelConfig(vocab_size=vocab, max_seq_len=12, num_layers=2, num_heads=4, embed_dim=embed)
    m = Model(cfg, seed=7)  # float32, as generation runs
    roughen(m, 8, scale=0.1)
    rng = np.random.default_rng(9)
    seqs = rng.integers(0, cfg.vocab_size, (nb, cfg.max_seq_len)).astype(np.int32)
    full = np.array(m.forward(seqs), dtype=np.float64)  # (nb, T, V)
    assert np.max(np.abs(full)) > 0.1  # logits of a meaningful size
    cache = m.new_kv_cache(nb)
    for pos in range(cfg.max_seq_len):
        step = m.decode_step(seqs[:, pos], pos, cache)
        assert step.shape == (nb, cfg.vocab_size)
        err = np.max(np.abs(step - full[:, pos]))
        assert err <= 1e-5, f"position {pos}: decode differs from forward by {err:g}"


@pytest.mark.parametrize("C, OC", [(32, 37), (64, 1001), (40, 6)])
def test_matvec_rows_do_not_depend_on_the_batch(C, OC):
    # matvec_forward (cllm/kernels/decode.py): numpy's product to float32 rounding, and each row's sums exactly
    # the same alone, in a batch of 7 and in a batch big enough to split over the threads (64 x 1001 x 7 is above
    # PARALLEL_MATVEC_MIN), so a served sequence's tokens do not depend on the requests decoding beside it
    rng = np.random.default_rng(C + OC)
    w = rng.standard_normal(OC * C).astype(np.float32)
    bias = rng.standard_normal(OC).astype(np.float32)
    x = rng.standard_normal((7, C)).astype(np.float32)
    assert (OC * C * 7 >= PARALLEL_MATVEC_MIN) == (OC > 1000)
    for b in (bias, None):
        together = np.empty(7 * OC, np.float32)
        matvec_forward(together, x.ravel(), w, b, 7, C, OC)
        want = x.astype(np.float64) @ w.reshape(OC, C).T.astype(np.float64) + (0 if b is None else b)
        np.testing.assert_allclose(together.reshape(7, OC), want, rtol=1e-5, atol=1e-5 * C)
        for r in range(7):
            alone = np.empty(OC, np.float32)
            matvec_forward(alone, x[r].copy(), w, b, 1, C, OC)
            assert np.array_equal(alone, together[r * OC:(r + 1) * OC])


def test_attention_split_over_the_threads_gives_the_same_logits():
    # gpt2's decoding attention (cllm/kernels/decode.py _forward_rows) splits its (row, head) pairs over the threads
    # from PARALLEL_MIN_WORK on: a 150-token prefill equals the forward, and a batched step of 20 sequences at
    # position 120 (split) gives each row bit for bit what its own decode_step gives (not split)
    cfg = ModelConfig(vocab_size=37, max_seq_len=160, num_layers=2, num_heads=4, embed_dim=64)
    m = Model(cfg, seed=3)
    roughen(m, 4, scale=0.1)
    rng = np.random.default_rng(5)
    seq = rng.integers(0, cfg.vocab_size, (1, cfg.max_seq_len)).astype(np.int32)
    full = np.array(m.forward(seq)[0], dtype=np.float64)
    n = 150
    assert (n * (n - 1) // 2 + n) * cfg.embed_dim >= PARALLEL_MIN_WORK
    np.testing.assert_allclose(m.prefill(seq[0, :n], 0, m.new_kv_cache(1)), full[n - 1], rtol=1e-5, atol=1e-5)
    B, pos = 20, 120
    assert B * (pos + 1) * cfg.embed_dim >= PARALLEL_MIN_WORK > (pos + 1) * cfg.embed_dim
    prompts = rng.integers(0, cfg.vocab_size, (B, pos)).astype(np.int32)
    shared, per = m.new_kv_cache(B), cfg.kv_cache_size(1)
    alone = [m.new_kv_cache(1) for _ in range(B)]
    for b in range(B):
        m.prefill(prompts[b], 0, shared[b * per:(b + 1) * per])
        m.prefill(prompts[b], 0, alone[b])
    tokens = rng.integers(0, cfg.vocab_size, B).astype(np.int32)
    batched = m.decode_batch(tokens, np.full(B, pos), shared, np.arange(B))
    for b in range(B):
        assert np.array_equal(batched[b], m.decode_step(tokens[b:b + 1], pos, alone[b])[0])


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_prefill_equals_forward_and_decode_continues(dtype, tol):
    # a prompt fed in one prefill gives the forward's logits at its last position; decode steps then
    # continue from the cache it wrote; a second prefill can continue a cache too (pos0 > 0). A prompt
    # of more than GEMM_MIN_ROWS tokens, so that the linear layers run as matrix products.
    n = GEMM_MIN_ROWS + 4
    cfg = ModelConfig(vocab_size=37, max_seq_len=n + 8, num_layers=2, num_heads=4, embed_dim=32)
    m = Model(cfg, seed=5, dtype=dtype)
    roughen(m, 6, scale=0.1)
    seq = np.random.default_rng(2).integers(0, cfg.vocab_size, (1, cfg.max_seq_len)).astype(np.int32)
    full = np.array(m.forward(seq)[0], dtype=np.float64)  # (T, V)
    cache = m.new_kv_cache(1)
    np.testing.assert_allclose(m.prefill(seq[0, :n], 0, cache), full[n - 1], rtol=tol, atol=tol)
    for pos in range(n, n + 4):
        np.testing.assert_allclose(m.decode_step(seq[0, pos], pos, cache)[0], full[pos], rtol=tol, atol=tol)
    np.testing.assert_allclose(m.prefill(seq[0, n + 4:], n + 4, cache), full[-1], rtol=tol, atol=tol)
    # one token at a time through prefill is decode_step
    cache2 = m.new_kv_cache(1)
    for pos in range(3):
        np.testing.assert_allclose(m.prefill(seq[0, pos], pos, cache2), full[pos], rtol=tol, atol=tol)
    with pytest.raises(ConfigError):
        m.prefill(seq[0, :5], n + 4, cache)  # past the context
    with pytest.raises(ConfigError):
        m.prefill(np.zeros(0, np.int32), 0, cache)
    with pytest.raises(ConfigError):
        m.prefill([1, 2], 0, m.new_kv_cache(2))  # one sequence only
    with pytest.raises(ConfigError):
        m.prefill([1, 37], 0, cache)  # token id out of range


def test_backward_ignores_stale_activation_gradients():
    # the backward overwrites each activation gradient at its first write instead of zeroing the
    # buffer first: NaN left in every activation-gradient element must not reach any gradient
    cfg = ModelConfig(vocab_size=37, max_seq_len=8, num_layers=2, num_heads=2, embed_dim=16)
    m = Model(cfg, seed=3)
    roughen(m, 5, scale=0.1)
    rng = np.random.default_rng(1)
    x = rng.integers(0, cfg.vocab_size, (3, 8)).astype(np.int32)
    y = rng.integers(0, cfg.vocab_size, (3, 8)).astype(np.int32)
    m.zero_grad()
    m.forward(x, y)
    m.backward()
    clean = m.grads.copy()
    m.grad_acts[:] = np.nan
    m.zero_grad()
    m.forward(x, y)
    m.backward()
    assert np.all(np.isfinite(m.grads))
    np.testing.assert_array_equal(m.grads, clean)


def test_kv_cache_decode_float64_and_errors():
    cfg = ModelConfig(vocab_size=13, max_seq_len=5, num_layers=1, num_heads=1, embed_dim=3)
    m = Model(cfg, seed=3, dtype=np.float64)
    roughen(m, 4)
    seq = np.array([[1, 12, 0, 5, 5]], np.int32)
    full = m.forward(seq)[0].copy()
    cache = m.new_kv_cache(1)
    for pos in range(5):
        np.testing.assert_allclose(m.decode_step(seq[0, pos], pos, cache)[0], full[pos], rtol=1e-12, atol=1e-12)
    with pytest.raises(ConfigError):
        m.decode_step(1, 5, cache)  # beyond the context
    with pytest.raises(ConfigError):
        m.decode_step([1, 2], 0, cache)  # cache built for one sequence
    with pytest.raises(ConfigError):
        m.decode_step(13, 0, cache)  # token id out of range


def test_optimizer_matches_textbook_adamw():
    m = Model(TINY, seed=11, dtype=np.float64)
    roughen(m, 12, scale=0.05)
    opt = AdamW(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, grad_clip=0.05)
    ref_p = {k: v.copy() for k, v in m.p.items()}
    ref_m = {k: np.zeros_like(v) for k, v in m.p.items()}
    ref_v = {k: np.zeros_like(v) for k, v in m.p.items()}
    for t in range(1, 4):
        idx, tgt = batch(TINY, 2, 5, 20 + t)
        m.zero_grad()
        _, loss = m.forward(idx, tgt)
        m.backward()
        g = m.grads.copy()
        norm = np.sqrt(np.sum(g ** 2))
        if norm > opt.grad_clip:
            g *= opt.grad_clip / (norm + 1e-6)
        assert opt.step(m, loss=loss) == pytest.approx(norm, rel=1e-12)
        for name, sl in _slices(m).items():
            wd = 0.1 if name in MATRIX_PARAMS else 0.0
            gi = g[sl]
            ref_m[name] = 0.9 * ref_m[name] + 0.1 * gi
            ref_v[name] = 0.95 * ref_v[name] + 0.05 * gi * gi
            mhat = ref_m[name] / (1 - 0.9 ** t)
            vhat = ref_v[name] / (1 - 0.95 ** t)
            ref_p[name] = ref_p[name] * (1 - 1e-2 * wd) - 1e-2 * mhat / (np.sqrt(vhat) + 1e-8)
            np.testing.assert_allclose(m.p[name], ref_p[name], rtol=1e-10, atol=1e-13, err_msg=f"{name} step {t}")
    assert opt.t == 3


@pytest.mark.parametrize("where", ["loss", "grad_nan", "grad_inf", "param_nan"])
def test_nonfinite_raises_and_leaves_weights(where):
    m = Model(TINY, seed=5)
    opt = AdamW()
    idx, tgt = batch(TINY, 2, 4, 1)
    m.zero_grad()
    _, loss = m.forward(idx, tgt)
    m.backward()
    opt.step(m, loss=loss)  # one good step so that m and v are non-trivial
    m.zero_grad()
    if where == "param_nan":
        m.p["fcw"][3] = np.nan
    _, loss = m.forward(idx, tgt)
    m.backward()
    if where == "loss":
        loss = float("inf")
    elif where == "grad_nan":
        m.g["qkvb"][0] = np.nan
    elif where == "grad_inf":
        m.g["wte"][0] = np.inf
    if where == "param_nan":
        assert not math.isfinite(loss)
    before = (m.params.copy(), m.m.copy(), m.v.copy())
    with pytest.raises(TrainingError, match="step 2"):
        opt.step(m, loss=loss)
    for buf, old in zip((m.params, m.m, m.v), before):
        np.testing.assert_array_equal(buf, old)
    assert opt.t == 1


def test_activations_reallocated_when_shape_changes():
    shapes = [(2, 4), (3, 6), (1, 1), (2, 4), (1, 6)]
    m = Model(TINY, seed=21, dtype=np.float64)
    for k, (B, T) in enumerate(shapes):
        idx, tgt = batch(TINY, B, T, 30 + k)
        loss, grads = loss_and_grads(m, idx, tgt)
        fresh = Model(TINY, seed=21, dtype=np.float64)
        floss, fgrads = loss_and_grads(fresh, idx, tgt)
        assert (m.B, m.T) == (B, T)
        assert loss == floss
        np.testing.assert_array_equal(grads, fgrads)
        np.testing.assert_array_equal(m.forward(idx), fresh.forward(idx))


def test_init_reproducible_and_gpt2_statistics():
    cfg = ModelConfig(vocab_size=100, max_seq_len=64, num_layers=3, num_heads=4, embed_dim=64)
    a, b, c = Model(cfg, seed=42), Model(cfg, seed=42), Model(cfg, seed=43)
    np.testing.assert_array_equal(a.params, b.params)
    assert not np.array_equal(a.params, c.params)
    assert a.params.dtype == np.float32
    for buf in (a.grads, a.m, a.v):
        assert buf.size == a.params.size and buf.dtype == np.float32 and not buf.any()
    V, C, L = cfg.vocab_size, cfg.embed_dim, cfg.num_layers
    wte = a.tensor("wte")
    assert wte.shape == (cfg.padded_vocab_size, C) and cfg.padded_vocab_size == 128
    assert not wte[V:].any(), "padded rows of wte must be zero"
    for name in (n for n in MATRIX_PARAMS if n in a.shapes):  # lm_head is llama's (untied) only
        x = a.tensor(name)
        if name == "wte":
            x = x[:V]
        std = 0.02 / math.sqrt(2 * L) if name in ("attprojw", "fcprojw") else 0.02
        assert abs(float(x.std()) / std - 1) < 0.05, f"{name} std {x.std():.5f}, expected {std:.5f}"
        assert abs(float(x.mean())) < 0.1 * std
    for name in ("ln1w", "ln2w", "lnfw"):
        assert np.all(a.tensor(name) == 1)
    for name in ("ln1b", "ln2b", "lnfb", "qkvb", "attprojb", "fcb", "fcprojb"):
        assert not a.tensor(name).any()
    # layout: GPT-2's order, contiguous, sizes from the config
    expected = ["wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb", "ln2w", "ln2b",
                "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb"]
    assert list(a.p) == expected
    n = V * 0 + cfg.padded_vocab_size * C + 64 * C + L * (2 * C + 3 * C * C + 3 * C + C * C + C + 2 * C
                                                         + 4 * C * C + 4 * C + 4 * C * C + C) + 2 * C
    assert a.num_parameters() == n
    assert np.shares_memory(a.tensor("fcw"), a.params)


def test_float32_model_matches_float64():
    m64 = Model(TINY, seed=3, dtype=np.float64)
    roughen(m64, 4, scale=0.1)
    m32 = Model(TINY, seed=None, dtype=np.float32)
    m32.params[:] = m64.params
    idx, tgt = batch(TINY, 2, 6, 7)
    l64, g64 = loss_and_grads(m64, idx, tgt)
    l32, g32 = loss_and_grads(m32, idx, tgt)
    assert g32.dtype == np.float32
    assert l32 == pytest.approx(l64, abs=1e-5)
    np.testing.assert_allclose(g32, g64, atol=1e-4 * np.max(np.abs(g64)))


def test_kv_cache_decode_long_context_three_sequences():
    # a context past 64 positions, 3 sequences, a vocabulary that splits unevenly over threads
    cfg = ModelConfig(vocab_size=301, max_seq_len=80, num_layers=2, num_heads=3, embed_dim=24)
    m = Model(cfg, seed=17)
    roughen(m, 18, scale=0.1)
    seqs = np.random.default_rng(19).integers(0, cfg.vocab_size, (3, cfg.max_seq_len)).astype(np.int32)
    full = np.array(m.forward(seqs), dtype=np.float64)
    cache = m.new_kv_cache(3)
    worst = 0.0
    for pos in range(cfg.max_seq_len):
        worst = max(worst, float(np.max(np.abs(m.decode_step(seqs[:, pos], pos, cache) - full[:, pos]))))
    assert worst <= 1e-5, f"decode differs from forward by {worst:g}"


def test_generation_holds_no_gradients_or_optimizer_moments():
    """Gradients, AdamW moments and activation gradients exist from their first use on: a model that
    only generates allocates parameters and activations, about a quarter of what training holds."""
    import tracemalloc

    from cllm.generation import Generator, SamplingConfig

    cfg = ModelConfig(vocab_size=300, max_seq_len=32, num_layers=2, num_heads=2, embed_dim=128)
    P = cfg.num_parameters()
    tracemalloc.start()
    try:
        model = Model(cfg, seed=1)
        model.forward(np.zeros((2, 32), dtype=np.int32))  # evaluation: activations, no gradients
        list(Generator(model).stream([1, 2, 3], SamplingConfig(max_new_tokens=8, temperature=0)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not model.has_training_buffers() and model.grad_acts is None
    forward_bytes = (P + cfg.num_activations(2, 32)) * 4
    assert peak < forward_bytes * 1.3 + (1 << 20), (peak, forward_bytes)  # no P-sized buffer beyond params
    model.forward(np.zeros((2, 32), dtype=np.int32), np.ones((2, 32), dtype=np.int32))
    model.zero_grad()
    model.backward()
    assert model.has_training_buffers() and model.grads.size == P and np.abs(model.grads).sum() > 0
    grads = model.grads
    model.grads *= np.float32(0.5)  # the training loop's in-place scaling keeps the same buffer
    assert model.grads is grads and model.g["wte"].base is not None
