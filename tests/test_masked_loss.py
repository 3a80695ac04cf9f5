"""The masked cross-entropy: a target of -1 has no loss (PyTorch's ignore_index), for supervised fine-tuning.

Kernels against PyTorch's F.cross_entropy(ignore_index=-1) through a fixture (tests/reference/
make_masked_loss_reference.py; torch is not imported here); float64 finite differences of a tiny gpt2 and llama
model's masked loss; a fully masked batch; the unmasked path's bits against the same fixture's numbers made before
the mask existed; the input check; the trainer's token-weighted accumulation; evaluate_tokens with labels; the
int8 model; and the CUDA model in Numba's simulator (in a child process, as tests/test_model_interface.py does).
"""
import os
import types
import warnings

import numpy as np
import pytest
from cuda_sim_helpers import SIMULATED, patch_simulator, run_in_simulator

import cllm.kernels as K
from cllm.config import ModelConfig
from cllm.device import average_gradients
from cllm.distributed import SingleProcess
from cllm.errors import ConfigError, DataError
from cllm.evaluate import evaluate_tokens
from cllm.model import Model
from cllm.quantize import Int8Model, dequantize_in_place
from cllm.training.trainer import Trainer

if SIMULATED:
    patch_simulator()
    from cllm.device import CudaModel

FIXTURE = os.path.join(os.path.dirname(__file__), "reference", "masked_loss_reference.npz")
CONFIGS = {  # as tests/reference/make_masked_loss_reference.py's
    "gpt2": ModelConfig(vocab_size=11, max_seq_len=6, num_layers=2, num_heads=2, embed_dim=8, padded_vocab_size=13),
    "llama": ModelConfig(arch="llama", vocab_size=11, max_seq_len=6, num_layers=2, num_heads=4, num_kv_heads=2,
                         embed_dim=16, ffn_dim=24, padded_vocab_size=13, tie_embeddings=False, attention_bias=True),
}
B, T = 2, 6
MASK = np.array([[1, 0, 1, 1, 0, 0], [0, 0, 1, 0, 1, 1]], dtype=bool)  # True: scored


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def model_for(cfg: ModelConfig, dtype=np.float32, noise: float = 0.05) -> Model:
    """The fixture script's model: gains and biases not 1 and 0, padded rows 0."""
    model = Model(cfg, seed=3, dtype=dtype)
    model.params += np.random.default_rng(3).normal(0, noise, model.params.size).astype(dtype)
    for name in ("wte", "lm_head"):
        if name in model.p:
            model.p[name][cfg.vocab_size * cfg.embed_dim:] = 0
    return model


def model_batch(cfg: ModelConfig, seed: int):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, cfg.vocab_size, (B, T)).astype(np.int32),
            rng.integers(0, cfg.vocab_size, (B, T)).astype(np.int32))


def masked(targets: np.ndarray, mask=MASK) -> np.ndarray:
    return np.where(mask, targets, -1).astype(np.int32)


# ---------------------------------------------------------------- the kernels against PyTorch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernels_equal_pytorchs_ignore_index(ref, dtype):
    logits, targets = ref["ce_logits"], ref["ce_targets"]
    N, V = logits.shape
    Vp = V + 3  # padded columns must come out 0
    count = int(np.count_nonzero(targets >= 0))
    assert 0 < count < N
    padded = np.zeros((N, Vp), dtype=dtype)
    padded[:, :V] = logits
    probs = np.empty(N * Vp, dtype=dtype)
    K.softmax_forward(probs, padded.reshape(-1), 1, N, V, Vp)
    losses = np.full(N, np.nan, dtype=dtype)
    K.crossentropy_forward(losses, probs, targets, 1, N, Vp)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(losses, ref["ce_token_losses"], rtol=tol, atol=tol)  # 0 where ignored
    assert np.all(losses[targets < 0] == 0)
    assert float(losses.sum(dtype=np.float64) / count) == pytest.approx(float(ref["ce_loss"]), rel=tol)
    dlosses = np.full(N, 1.0 / count, dtype=dtype)
    want = np.zeros((N, Vp))
    want[:, :V] = ref["ce_dlogits"]
    stale = np.full(N * Vp, 7.0, dtype=dtype)  # what overwrite must ignore
    K.crossentropy_softmax_backward(stale, dlosses, probs, targets, 1, N, V, Vp, True)
    added = np.full(N * Vp, 2.0, dtype=dtype)  # accumulating adds nothing on ignored rows
    K.crossentropy_softmax_backward(added, dlosses, probs, targets, 1, N, V, Vp)
    inplace = probs.copy()
    K.crossentropy_softmax_backward_inplace(inplace, dlosses, targets, 1, N, V, Vp)
    for name, got, offset in (("overwrite", stale, 0.0), ("accumulate", added, 2.0), ("in place", inplace, 0.0)):
        got = got.reshape(N, Vp)
        np.testing.assert_allclose(got[:, :V] - offset, want[:, :V], rtol=0, atol=tol, err_msg=name)
        assert np.all(got[targets < 0] == offset), name  # exactly: nothing at an ignored position
    assert np.all(stale.reshape(N, Vp)[:, V:] == 0) and np.all(inplace.reshape(N, Vp)[:, V:] == 0)


# ---------------------------------------------------------------- the model: finite differences, exact zeros
@pytest.mark.parametrize("arch", list(CONFIGS))
def test_finite_differences_of_the_masked_loss(arch):
    cfg = CONFIGS[arch]
    model = model_for(cfg, np.float64, noise=0.3)
    idx, targets = model_batch(cfg, 7)
    tgt = masked(targets)
    _, full = model.forward(idx, targets)
    full_losses = model.token_losses().copy()
    model.zero_grad()
    _, loss = model.forward(idx, tgt)
    # the mean over the scored positions of the unmasked losses; 0 at the others
    assert loss == pytest.approx(full_losses[MASK].mean(), rel=1e-13) and loss != pytest.approx(full)
    np.testing.assert_array_equal(model.token_losses()[~MASK], 0)
    np.testing.assert_allclose(model.token_losses()[MASK], full_losses[MASK], rtol=1e-13)
    model.backward()
    dlogits = model.a["probs"].reshape(B * T, cfg.padded_vocab_size)  # the logits' gradient, in place
    assert np.all(dlogits[~MASK.reshape(-1)] == 0) and np.abs(dlogits[MASK.reshape(-1)]).max() > 0
    grads = {name: model.g[name].copy() for name in model.shapes}
    rng = np.random.default_rng(1)
    h = 1e-6
    for name, view in model.p.items():
        picks = rng.choice(view.size, min(view.size, 8), replace=False)
        for i in picks:
            old = view[i]
            view[i] = old + h
            up = model.loss(idx, tgt)
            view[i] = old - h
            down = model.loss(idx, tgt)
            view[i] = old
            assert grads[name][i] == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-9), (name, i)
        assert np.abs(grads[name]).max() > 0, f"{name} got no gradient"


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_a_fully_masked_batch_has_loss_0_and_zero_gradients(arch):
    cfg = CONFIGS[arch]
    model = model_for(cfg)
    idx, targets = model_batch(cfg, 2)
    model.zero_grad()
    with warnings.catch_warnings(), np.errstate(all="raise"):  # no 0/0 anywhere
        warnings.simplefilter("error", RuntimeWarning)
        _, loss = model.forward(idx, np.full((B, T), -1))
        model.backward()
    assert loss == 0.0 and model.num_targets == 0
    assert not model.token_losses().any() and not model.grads.any()
    model.zero_grad()
    model.loss(idx, targets)
    model.backward(normalizer=0)  # what the trainer passes for a global batch with nothing to score
    assert not model.grads.any()


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_without_masks_the_bits_are_those_before_the_mask_existed(ref, arch):
    model = model_for(CONFIGS[arch])
    idx, targets = model_batch(CONFIGS[arch], 5)
    model.zero_grad()
    _, loss = model.forward(idx, targets)
    assert loss == float(ref[f"{arch}_loss"])
    np.testing.assert_array_equal(model.token_losses(), ref[f"{arch}_token_losses"])
    model.backward()
    np.testing.assert_array_equal(model.grads, ref[f"{arch}_grads"])


def test_targets_accept_minus_1_and_nothing_else_out_of_the_vocabulary():
    cfg = CONFIGS["gpt2"]
    model = model_for(cfg)
    idx, targets = model_batch(cfg, 2)
    model.forward(idx, masked(targets))
    for bad in (-2, cfg.vocab_size):
        with pytest.raises(ConfigError, match=r"targets holds token ids outside \[0, 11\) or -1"):
            model.forward(idx, np.where(MASK, targets, bad))
    with pytest.raises(ConfigError, match=r"idx holds token ids outside \[0, 11\)$"):
        model.forward(np.where(MASK, idx, -1), targets)  # inputs have no "no token"


# ---------------------------------------------------------------- gradient accumulation: weighted by tokens
def _accumulate(model, batches, K):
    """Trainer.forward_backward over `batches` (the whole global batch) on one process with grad-accum K."""
    trainer = types.SimpleNamespace(
        cfg=types.SimpleNamespace(grad_accum=K, seed=0, dropout=0.0), comm=SingleProcess(), step=0,
        sampler=types.SimpleNamespace(next_global=lambda n: batches), model=model, micro_batches=K)
    return Trainer.forward_backward(trainer) / K  # share()'s figure on one process


def _two_ranks(model, batches):
    """(loss, grads) of 2 MPI ranks with one micro-batch each, played in turn in this process: each rank's
    Allreduce is left out here (a no-op comm), and the sum of the ranks' results is what it would give."""
    loss, grads = 0.0, 0.0
    for rank in (0, 1):
        comm = types.SimpleNamespace(rank=rank, size=2, allreduce_sum_=lambda array: None)
        trainer = types.SimpleNamespace(
            cfg=types.SimpleNamespace(grad_accum=1, seed=0, dropout=0.0), comm=comm, step=0,
            sampler=types.SimpleNamespace(next_global=lambda n: batches), model=model, micro_batches=2)
        loss += Trainer.forward_backward(trainer) / 2  # share(): the Allreduce of the losses, / micro-batches
        grads = grads + model.grads
    return loss, grads


@pytest.mark.parametrize("arch", list(CONFIGS))
@pytest.mark.parametrize("world", ["grad-accum 2", "2 ranks"])
def test_accumulation_gives_the_mean_over_every_scored_token(arch, world):
    cfg = CONFIGS[arch]
    model = model_for(cfg, np.float64)
    (x1, y1), (x2, y2) = model_batch(cfg, 3), model_batch(cfg, 4)
    m2 = np.zeros_like(MASK)
    m2[0, 5] = True  # 1 scored target against the first micro-batch's 6: a mean of means would weigh it 6x
    batches = [(x1, masked(y1)), (x2, masked(y2, m2))]
    if world == "2 ranks":
        loss, grads = _two_ranks(model, batches)
    else:
        loss = _accumulate(model, batches, 2)
        grads = model.grads.copy()
    model.zero_grad()
    want = model.loss(np.concatenate([x1, x2]), np.concatenate([b[1] for b in batches]))  # one batch of 2B rows
    model.backward()
    assert loss == pytest.approx(want, rel=1e-13)
    np.testing.assert_allclose(grads, model.grads, rtol=1e-11, atol=1e-15)
    # nothing scored in the whole global batch: loss 0, zero gradients
    assert _accumulate(model, [(x1, np.full_like(y1, -1)), (x2, np.full_like(y2, -1))], 2) == 0.0
    assert not model.grads.any()


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_accumulation_without_masks_is_todays_mean_of_means_bit_for_bit(arch):
    cfg = CONFIGS[arch]
    model = model_for(cfg)
    batches = [model_batch(cfg, 3), model_batch(cfg, 4), model_batch(cfg, 5)]
    loss = _accumulate(model, batches, 3)
    grads = model.grads.copy()
    model.zero_grad()  # the loop before token weighting: each micro-batch's mean, then 1/n
    losses = []
    for x, y in batches:
        losses.append(model.loss(x, y))
        model.backward()
    average_gradients(model, SingleProcess(), 3)
    assert loss == sum(losses) / 3
    np.testing.assert_array_equal(grads, model.grads)


# ---------------------------------------------------------------- evaluation and the int8 model
def test_evaluate_tokens_with_labels_is_the_mean_over_scored_targets():
    cfg = CONFIGS["gpt2"]
    model = model_for(cfg)
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, 40).astype(np.uint16)
    labels = tokens.astype(np.int32)
    labels[np.random.default_rng(1).random(40) < 0.5] = -1
    plain = evaluate_tokens(model, tokens, 2, T)
    assert evaluate_tokens(model, tokens, 2, T, labels=tokens.astype(np.int32)) == plain  # labels = tokens
    scored = []
    for i in range((len(tokens) - 1) // T):
        model.loss(tokens[None, i * T:i * T + T].astype(np.int32), tokens[None, i * T + 1:i * T + T + 1])
        keep = labels[i * T + 1:i * T + T + 1] >= 0
        scored.extend(model.token_losses()[0][keep])
    for batch in (1, 2, 4):
        assert evaluate_tokens(model, tokens, batch, T, labels=labels) == pytest.approx(np.mean(scored), rel=1e-6)
    with pytest.raises(DataError, match="every label"):
        evaluate_tokens(model, tokens, 2, T, labels=np.full(40, -1))
    with pytest.raises(DataError, match="one per token"):
        evaluate_tokens(model, tokens, 2, T, labels=labels[:-1])


@pytest.mark.parametrize("arch", list(CONFIGS))
def test_int8_model_masks_too(arch):
    ref_model = model_for(CONFIGS[arch])
    dequantize_in_place(ref_model)
    model = Int8Model(ref_model)
    idx, targets = model_batch(CONFIGS[arch], 6)
    want = ref_model.loss(idx, masked(targets))
    assert model.loss(idx, masked(targets)) == pytest.approx(want, rel=1e-4)
    np.testing.assert_array_equal(model.token_losses()[~MASK], 0)
    assert model.loss(idx, np.full((B, T), -1)) == 0.0


# ---------------------------------------------------------------- the CUDA model (simulator)
if not SIMULATED:
    def test_cuda_masked_loss_in_the_simulator():
        run_in_simulator(__file__, "-k", "cuda")
else:
    @pytest.mark.parametrize("arch", list(CONFIGS))
    def test_cuda_masked_loss_and_gradients_equal_the_cpus(arch):
        cfg = CONFIGS[arch]
        cpu = model_for(cfg)
        gpu = CudaModel(model_for(cfg))
        idx, targets = model_batch(cfg, 8)
        for tgt in (masked(targets), np.full((B, T), -1, np.int32)):
            for m in (cpu, gpu):
                m.zero_grad()
                m.loss(idx, tgt)
                m.backward()
            assert gpu.mean_loss == pytest.approx(cpu.mean_loss, rel=1e-5, abs=1e-12)
            np.testing.assert_allclose(gpu.token_losses(), cpu.token_losses(), rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(gpu.token_losses() == 0, tgt < 0)
            scale = max(np.abs(cpu.grads).max(), 1e-30)
            np.testing.assert_allclose(gpu.grads_to_host(), cpu.grads, rtol=0, atol=1e-5 * scale)
        assert not gpu.grads_to_host().any()  # the fully masked batch, last
