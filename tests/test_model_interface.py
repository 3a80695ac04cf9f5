"""The model interface (cllm/model_interface.py) on each implementation: Model (cpu), Int8Model (int8) and
CudaModel (cuda, in Numba's CUDA simulator).

Each test takes an implementation and the float32 Model of the same weights (for int8: weights rounded
to its grid, so the two differ by the order of float32 sums only). Without NUMBA_ENABLE_CUDASIM=1 the cuda
cases run in a child process with the simulator on (tests/cuda_sim_helpers.py), as tests/test_cuda_sim.py's do.
"""
import numpy as np
import pytest
from cuda_sim_helpers import SIMULATED, patch_simulator, run_in_simulator

from cllm.config import ModelConfig
from cllm.errors import ConfigError
from cllm.model import Model
from cllm.model_interface import LanguageModel, NotTrainableError
from cllm.quantize import Int8Model, dequantize_in_place

if SIMULATED:
    patch_simulator()
    from cllm.device import CudaModel, DeviceCache

KINDS = ["cpu", "int8", "cuda"] if SIMULATED else ["cpu", "int8"]
# every test runs for each architecture (the autouse fixture `arch` sets CONFIG): llama's with fewer kv heads
# than query heads, an untied LM head and q, k, v biases, so that each of its parameters matters
CONFIGS = {
    "gpt2": ModelConfig(vocab_size=11, max_seq_len=6, num_layers=2, num_heads=2, embed_dim=8, padded_vocab_size=13),
    "llama": ModelConfig(arch="llama", vocab_size=11, max_seq_len=6, num_layers=2, num_heads=4, num_kv_heads=2,
                         embed_dim=16, ffn_dim=24, padded_vocab_size=13, tie_embeddings=False, attention_bias=True),
}
CONFIG = CONFIGS["gpt2"]
B, T = 2, 5
RNG = np.random.default_rng(11)
IDX = RNG.integers(0, CONFIG.vocab_size, (B, T)).astype(np.int32)
TARGETS = RNG.integers(0, CONFIG.vocab_size, (B, T)).astype(np.int32)
TOL = {"cpu": 0.0, "int8": 1e-4, "cuda": 1e-5}  # logits and losses against the reference Model


@pytest.fixture(autouse=True, params=list(CONFIGS))
def arch(request, monkeypatch):
    monkeypatch.setitem(globals(), "CONFIG", CONFIGS[request.param])
    return request.param


def reference(seed: int = 3, rounded: bool = False) -> Model:
    """A float32 Model whose biases and gains are not 0 and 1 (so every parameter matters)."""
    model = Model(CONFIG, seed=seed)
    model.params += np.random.default_rng(seed).normal(0, 0.05, model.params.size).astype(np.float32)
    for name in ("wte", "lm_head"):  # the padded vocabulary rows stay 0
        if name in model.p:
            model.p[name][CONFIG.vocab_size * CONFIG.embed_dim:] = 0
    if rounded:
        dequantize_in_place(model)
    return model


def make(kind: str, seed: int = 3) -> tuple[LanguageModel, Model]:
    """(the implementation, a float32 Model of the same weights)."""
    ref = reference(seed, rounded=kind == "int8")
    if kind == "cpu":
        return reference(seed), ref
    if kind == "int8":
        return Int8Model(ref), ref
    return CudaModel(reference(seed)), ref


def host(cache) -> np.ndarray:
    return cache.array.copy_to_host() if SIMULATED and isinstance(cache, DeviceCache) else np.asarray(cache)


def close(got, want, kind: str, what: str) -> None:
    tol = TOL[kind]
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(np.abs(want).max(), 1.0), err_msg=what)


if not SIMULATED:
    def test_cuda_model_in_the_simulator(arch):
        run_in_simulator(__file__, "-k", f"cuda and {arch}")


@pytest.mark.parametrize("kind", KINDS)
def test_sizes_dtype_and_config(kind):
    model, ref = make(kind)
    assert isinstance(model, LanguageModel)
    assert model.config is CONFIG and model.dtype == np.float32 and model.shapes == CONFIG.param_shapes()
    assert model.num_parameters() == CONFIG.num_parameters() == ref.params.size
    assert model.trainable == (kind != "int8")
    held = model.memory_bytes()
    assert isinstance(held, int) and held > 0
    if kind == "int8":  # a byte a matrix weight, not 4
        assert held < ref.params.nbytes
    else:
        assert held >= ref.params.nbytes
        model.loss(IDX, TARGETS)
        model.backward()
        assert model.memory_bytes() >= 4 * ref.params.nbytes  # params, grads, m, v, and activations


@pytest.mark.parametrize("kind", KINDS)
def test_forward_returns_host_logits_equal_to_the_reference(kind):
    model, ref = make(kind)
    want = ref.forward(IDX).copy()
    logits = model.forward(IDX)
    assert type(logits) is np.ndarray and logits.shape == (B, T, CONFIG.vocab_size) and logits.dtype == np.float32
    close(logits, want, kind, "logits")
    with pytest.raises(RuntimeError, match="targets"):
        model.token_losses()  # the last forward had none
    logits, loss = model.forward(IDX, TARGETS)
    assert type(logits) is np.ndarray and logits.shape == (B, T, CONFIG.vocab_size)  # with targets too
    assert isinstance(loss, float)
    close(logits, want, kind, "logits with targets")
    _, want_loss = ref.forward(IDX, TARGETS)
    close(loss, want_loss, kind, "loss")
    losses = model.token_losses()
    assert type(losses) is np.ndarray and losses.shape == (B, T)
    close(losses, ref.token_losses(), kind, "token losses")
    assert float(np.mean(losses, dtype=np.float64)) == pytest.approx(loss, rel=1e-6)
    assert model.loss(IDX, TARGETS) == pytest.approx(loss, rel=1e-6)  # the same forward, no logits out
    with pytest.raises(ConfigError, match="token ids outside"):
        model.forward(np.array([[1, CONFIG.vocab_size]]))
    with pytest.raises(ConfigError, match="shape of idx"):
        model.forward(IDX, TARGETS[:, :2])


@pytest.mark.parametrize("kind", KINDS)
def test_decode_step_after_prefill_equals_the_forwards_last_row(kind):
    model, _ = make(kind)
    seq = np.array([3, 1, 4, 1, 5, 9], dtype=np.int32)
    cache = model.new_kv_cache(1)
    first = model.prefill(seq[:3], 0, cache)
    assert type(first) is np.ndarray and first.shape == (CONFIG.vocab_size,)
    np.testing.assert_allclose(first, model.forward(seq[None, :3])[0, -1], rtol=1e-5, atol=1e-5)
    for t in range(3, 6):
        step = model.decode_step(seq[t:t + 1], t, cache)
        assert type(step) is np.ndarray and step.shape == (1, CONFIG.vocab_size)
        np.testing.assert_allclose(step[0], model.forward(seq[None, :t + 1])[0, -1], rtol=1e-5, atol=1e-5)
    # two sequences side by side, from position 0
    cache2 = model.new_kv_cache(2)
    full = model.forward(IDX).copy()
    for t in range(T):
        np.testing.assert_allclose(model.decode_step(IDX[:, t], t, cache2), full[:, t], rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="new_kv_cache"):
        model.decode_step(IDX[:, 0], 0, cache)  # two tokens, a cache for one


@pytest.mark.parametrize("kind", KINDS)
def test_new_kv_cache_shapes(kind):
    model, _ = make(kind)
    # the keys and values of the kv heads only (llama: NKV of NH)
    per_sequence = CONFIG.num_layers * CONFIG.max_seq_len * 2 * CONFIG.num_kv_heads * CONFIG.head_size
    for n in (1, 3):
        cache = model.new_kv_cache(n)
        assert cache.size == n * per_sequence
        values = host(cache)
        assert values.dtype == np.float32 and values.size == n * per_sequence and not values.any()
    assert isinstance(cache, DeviceCache if kind == "cuda" else np.ndarray)


@pytest.mark.parametrize("kind", KINDS)
def test_params_written_through_the_interface_change_the_output(kind):
    model, _ = make(kind)
    before = model.forward(IDX).copy()
    params = model.params_to_host()
    assert type(params) is np.ndarray and params.shape == (CONFIG.num_parameters(),)
    named = model.named_tensors()
    assert list(named) == list(CONFIG.param_shapes())
    assert all(named[k].shape == s for k, s in CONFIG.param_shapes().items())
    np.testing.assert_array_equal(np.concatenate([t.ravel() for t in named.values()]), params)
    # what is handed out never writes back: read-only on the CPU, a copy elsewhere
    for out in (params, named["wte"]):
        try:
            out[...] = 0
        except ValueError:
            assert kind == "cpu"
    np.testing.assert_array_equal(model.forward(IDX), before)
    # load_params does, on every implementation, and gives the reference Model's output for the new weights
    other = reference(seed=8, rounded=kind == "int8")
    model.load_params(other.params)
    after = model.forward(IDX)
    assert np.abs(after - before).max() > 0.01
    close(after, other.forward(IDX), kind, "logits after load_params")
    np.testing.assert_allclose(model.params_to_host(), other.params, rtol=0, atol=1e-6 if kind == "int8" else 0)
    with pytest.raises(ConfigError, match="params holds 3 values"):
        model.load_params(np.zeros(3, np.float32))


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "int8"])
def test_backward_gives_the_reference_grads(kind):
    model, ref = make(kind)
    for m in (model, ref):
        m.zero_grad()
        m.loss(IDX, TARGETS)
        m.backward()
    grads = model.grads_to_host().copy()  # on the CPU a view of the live buffer
    assert type(grads) is np.ndarray and grads.shape == (CONFIG.num_parameters(),) and np.abs(grads).max() > 0
    np.testing.assert_allclose(grads, ref.grads, rtol=0, atol=TOL[kind] * np.abs(ref.grads).max())
    with pytest.raises(RuntimeError, match="one backward per forward"):
        model.backward()
    m, v = model.moments_to_host()
    assert m.shape == v.shape == (CONFIG.num_parameters(),)
    model.load_grads(2 * grads)
    np.testing.assert_array_equal(model.grads_to_host(), 2 * grads)
    model.zero_grad()
    assert not model.grads_to_host().any()
    # p is where the model computes: the optimizer's kernels and a test may write through it
    before = model.forward(IDX).copy()
    model.p["lnfw"][:] = np.full(CONFIG.embed_dim, 0.5, np.float32)
    assert np.abs(model.forward(IDX) - before).max() > 0.01


def test_int8_cannot_train_and_says_so():
    model, _ = make("int8")
    for call in (model.backward, model.zero_grad, model.grads_to_host, model.moments_to_host,
                 lambda: model.load_grads(np.zeros(CONFIG.num_parameters(), np.float32)),
                 lambda: model.forward(IDX, TARGETS, dropout=0.1)):
        with pytest.raises(NotTrainableError, match="cannot train"):
            call()
