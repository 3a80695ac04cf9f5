"""`train --optimizer muon` (cllm/optim.py Muon, cllm/kernels/muon.py): the Newton-Schulz orthogonalization, ten
steps against a PyTorch Muon written here from its published description, exact resume, a resume with the other
optimizer, grad-accum against two MPI ranks, and the flags' refusals.

The PyTorch comparison skips, with the reason printed, when torch is absent, as tests/test_hf_interop.py's do
(`make test-interop` installs it)."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from train_helpers import (
    ROOT,
    all_threads_after,  # noqa: F401  (autouse)
    assert_clean_error,
    run_cli,
    tiny_config,
    train_losses,
    write_corpus,
)
from train_helpers import prepared_dataset as _prepared

from cllm import checkpoint as ck
from cllm.config import ModelConfig
from cllm.errors import CheckpointError, ConfigError, TrainingError
from cllm.kernels.muon import newton_schulz, segment_length, work_size
from cllm.model import Model
from cllm.optim import HIDDEN_MATRICES, MUON_STATE, Muon
from cllm.training import train

MISSING = ""
try:
    import torch
except ImportError as exc:  # the reason is printed by the skip below
    torch = None
    MISSING = f"{exc.name} is not installed: make test-interop (pip install -e '.[interop]')"
    if os.environ.get("CLLM_INTEROP_REQUIRED"):  # make test-interop: a missing reference is a failure, not a skip
        raise
needs_torch = pytest.mark.skipif(torch is None, reason=MISSING)


@pytest.fixture
def dataset(tmp_path_factory):
    return _prepared(tmp_path_factory)


def orthogonalize(g: np.ndarray, steps: int = 5) -> np.ndarray:
    r, c = g.shape
    work = np.zeros(work_size(r, c), dtype=g.dtype)
    work[:r * c] = g.reshape(-1)
    return newton_schulz(work, r, c, steps).reshape(r, c).copy()


def cosine(a, b):
    return float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("shape", [(96, 384), (384, 96), (60, 100)])
def test_newton_schulz_gives_the_polar_factor_with_singular_values_near_one(shape):
    rng = np.random.default_rng(0)
    # a random matrix: every singular value lands in the quintic's band, roughly [0.7, 1.2] (not exactly 1)
    s = np.linalg.svd(orthogonalize(rng.standard_normal(shape).astype(np.float32)), compute_uv=False)
    assert 0.65 < s.min() and s.max() < 1.2, (s.min(), s.max())
    # one with singular values spread over 1.5 decades, as a gradient's are: the band too, and the direction
    # of its polar factor U V^T (which the matrix itself is far from)
    n = min(shape)
    u = np.linalg.qr(rng.standard_normal((shape[0], n)))[0]
    v = np.linalg.qr(rng.standard_normal((shape[1], n)))[0]
    g = ((u * np.logspace(0, -1.5, n)) @ v.T).astype(np.float32)
    o = orthogonalize(g)
    s = np.linalg.svd(o, compute_uv=False)
    assert 0.65 < s.min() and s.max() < 1.2, (s.min(), s.max())
    assert cosine(o, u @ v.T) > 0.98 and cosine(g, u @ v.T) < 0.8


def plain_newton_schulz64(g: np.ndarray, steps: int = 5) -> np.ndarray:
    """The published iteration as written (X <- aX + (bA + cA^2)X, A = X X^T on the small side), in float64."""
    x = g.astype(np.float64)
    x = x.T if x.shape[0] > x.shape[1] else x
    x = x / (np.linalg.norm(x) + 1e-7)
    for _ in range(steps):
        A = x @ x.T
        x = 3.4445 * x + (-4.7750 * A + 2.0315 * A @ A) @ x
    return x.T if g.shape[0] > g.shape[1] else x


@pytest.mark.parametrize("shape", [(576, 192), (192, 768), (384, 96), (100, 33), (60, 100), (192, 192)])
def test_newton_schulz_rounds_as_the_plain_float32_iteration(shape):
    """The long matrices (3m > 5n) run their iterations in the Gram space, in segments of 3 + 2
    (cllm/kernels/muon.py); the others the plain iteration. Either must stay as close to the float64 iteration
    as the plain float32 one (1e-6 to 2.4e-6 measured on these, 5e-6 the Gram space's worst), where one segment
    of 5 was 2e-5 to 1e-4 off and 4 + 1 up to 1.4e-5: on a spectrum spread over four decades, and on a rank-4
    matrix with noise, the two that amplify float32 rounding most."""
    r, c = shape
    n = min(shape)
    assert segment_length(r, c, 5) == (3 if 3 * max(shape) > 5 * n else 1)
    rng = np.random.default_rng(0)
    u = np.linalg.qr(rng.standard_normal((r, n)))[0]
    v = np.linalg.qr(rng.standard_normal((c, n)))[0]
    spread = (u * np.logspace(0, -4, n)) @ v.T
    low_rank = rng.standard_normal((r, 4)) @ rng.standard_normal((4, c)) + 1e-3 * rng.standard_normal((r, c))
    for g in (spread, low_rank):
        reference = plain_newton_schulz64(g)
        error = float(np.abs(orthogonalize(g.astype(np.float32)) - reference).max())
        assert error < 1e-5, error
        # float64 scratch takes the same products through the double-precision BLAS (dsyrk, dgemm)
        error = float(np.abs(orthogonalize(g) - reference).max())
        assert error < 1e-12, error


def test_newton_schulz_of_zero_is_zero():
    # a matrix that got no gradient (its momentum zero) must not move: the norm's epsilon keeps it finite
    assert not orthogonalize(np.zeros((8, 24), np.float32)).any()


# ---------------------------------------------------------------- PyTorch reference
def torch_newton_schulz(g, steps=5):
    """Keller Jordan's quintic iteration (in float32 here; his runs use bfloat16 on a GPU)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.T if g.shape[0] > g.shape[1] else g
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        A = x @ x.T
        x = a * x + (b * A + c * A @ A) @ x
    return x.T if g.shape[0] > g.shape[1] else x


class TorchMuon:
    """The published algorithm, from its description: per 2-D hidden matrix, momentum buf = mu*buf + g, the
    Nesterov g + mu*buf orthogonalized, p *= 1 - lr*wd, p -= lr * sqrt(max(1, rows/cols)) * O; AdamW
    (torch.optim.AdamW) for every other parameter, weight decay on the embedding and head matrices only;
    the global gradient norm clipped first."""

    def __init__(self, named, lr, muon_lr, mu, wd, clip, betas):
        self.named, self.lr, self.muon_lr, self.mu, self.wd, self.clip = named, lr, muon_lr, mu, wd, clip
        self.hidden = {n: [torch.zeros_like(p[0]) for _ in range(p.shape[0])]
                       for n, p in named.items() if n in HIDDEN_MATRICES}
        decayed = [p for n, p in named.items() if n in ("wte", "wpe", "lm_head")]
        rest = [p for n, p in named.items() if n not in self.hidden and n not in ("wte", "wpe", "lm_head")]
        self.adamw = torch.optim.AdamW([{"params": decayed, "weight_decay": wd}, {"params": rest, "weight_decay": 0}],
                                       lr=lr, betas=betas, eps=1e-8)

    def step(self, lr):
        with torch.no_grad():  # not a decorator: the class must be defined when torch is absent
            return self._step(lr)

    def _step(self, lr):
        params = list(self.named.values())
        norm = float(torch.nn.utils.clip_grad_norm_(params, self.clip))
        for group in self.adamw.param_groups:
            group["lr"] = lr
        self.adamw.step()
        muon_lr = self.muon_lr * lr / self.lr
        for name, bufs in self.hidden.items():
            p, g = self.named[name], self.named[name].grad
            for layer, buf in enumerate(bufs):  # one matrix per layer
                buf.mul_(self.mu).add_(g[layer])
                o = torch_newton_schulz(g[layer].add(buf, alpha=self.mu))
                rows, cols = o.shape
                p[layer].mul_(1 - muon_lr * self.wd).add_(o, alpha=-muon_lr * max(1, rows / cols) ** 0.5)
        return norm


def small_config(arch):
    if arch == "llama":  # every llama option off its default: GQA, an untied head, q/k/v biases
        return ModelConfig(vocab_size=40, max_seq_len=16, num_layers=2, num_heads=4, embed_dim=32, arch="llama",
                           num_kv_heads=2, ffn_dim=48, tie_embeddings=False, attention_bias=True)
    return ModelConfig(vocab_size=40, max_seq_len=16, num_layers=2, num_heads=4, embed_dim=32)


@needs_torch
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_ten_steps_equal_a_pytorch_muon(arch):
    """Two trajectories from the same weights: CLLM's Muon, and the PyTorch one on torch tensors. CLLM's model
    computes both's gradients (its forward and backward against PyTorch's are tests/test_reference.py's), so
    what is compared is the optimizer: every update, the clipping, the weight decay, the schedule's scaling."""
    cfg = small_config(arch)
    rng = np.random.default_rng(3)
    batches = [(rng.integers(0, 40, (4, 16)), rng.integers(0, 40, (4, 16))) for _ in range(10)]
    lrs = [3e-3 * (k + 1) / 4 if k < 4 else 3e-3 * (0.5 + 0.05 * k) for k in range(10)]  # a warmup, then varying
    hp = dict(lr=3e-3, muon_lr=0.02, wd=0.1, clip=1.0)

    ours = Model(cfg, seed=5)
    start = {n: ours.tensor(n).copy() for n in ours.shapes}
    opt = Muon(lr=hp["lr"], beta1=0.9, beta2=0.95, weight_decay=hp["wd"], grad_clip=hp["clip"],
               muon_lr=hp["muon_lr"], momentum=0.95)
    our_norms = []
    for (x, y), lr in zip(batches, lrs):
        ours.zero_grad()
        _, loss = ours.forward(x, y)
        ours.backward()
        our_norms.append(opt.step(ours, lr, loss))

    oracle = Model(cfg, seed=None)  # CLLM's gradients at the PyTorch trajectory's weights
    named = {n: torch.tensor(t, requires_grad=True) for n, t in start.items()}
    ref = TorchMuon(named, mu=0.95, betas=(0.9, 0.95), **hp)
    their_norms = []
    for (x, y), lr in zip(batches, lrs):
        for n, p in named.items():
            oracle.tensor(n)[...] = p.detach().numpy()
        oracle.zero_grad()
        oracle.forward(x, y)
        oracle.backward()
        for n, p in named.items():
            p.grad = torch.tensor(oracle.g[n].reshape(oracle.shapes[n]).copy())
        their_norms.append(ref.step(lr))

    np.testing.assert_allclose(our_norms, their_norms, rtol=1e-4)
    assert our_norms[0] > hp["clip"]  # the clipping took part
    for n, p in named.items():
        np.testing.assert_allclose(ours.tensor(n), p.detach().numpy(), rtol=0, atol=1e-5, err_msg=n)
    # the steps moved every hidden matrix far beyond the tolerance
    assert min(np.abs(ours.tensor(n) - start[n]).max() for n in HIDDEN_MATRICES) > 1e-2


def test_a_non_finite_gradient_is_refused_and_nothing_moves():
    model = Model(small_config("gpt2"), seed=1)
    x = np.random.default_rng(0).integers(0, 40, (2, 16))
    opt = Muon(lr=1e-3)
    model.forward(x, x)
    model.backward()
    opt.step(model)
    before, momentum = model.params.copy(), opt.buffer(model).copy()
    model.g["fcw"][3] = np.nan
    with pytest.raises(TrainingError, match="gradient norm is nan at step 2"):
        opt.step(model)
    with pytest.raises(TrainingError, match="loss is inf"):
        opt.step(model, loss=float("inf"))
    np.testing.assert_array_equal(model.params, before)
    np.testing.assert_array_equal(opt.buffer(model), momentum)
    assert opt.t == 1


# ---------------------------------------------------------------- training runs
def _latest(run_dir):
    return ck.load_checkpoint(os.path.join(run_dir, "latest"), with_optimizer=True)


def test_resume_is_bit_identical(tmp_path, dataset):
    """8 steps in one run, and 4 + 4 resumed from its step-4 checkpoint: the same losses and weights to the bit."""
    full = tmp_path / "full"
    train(tiny_config(dataset, full, optimizer="muon", muon_lr=0.05, max_steps=8, checkpoint_interval=4,
                      keep_last=5, num_layers=2))
    ckpt = ck.load_checkpoint(str(full / "step_000004"), with_optimizer=True)
    assert ckpt.optimizer == "muon" and np.abs(ckpt.optimizer_state[MUON_STATE]).max() > 0
    other = tmp_path / "other"
    train(tiny_config(dataset, other, optimizer="muon", muon_lr=0.05, max_steps=8, num_layers=2,
                      resume=str(full / "step_000004")))
    reference = train_losses(full)
    assert train_losses(other) == {s: reference[s] for s in range(5, 9)}
    a, b = _latest(full), _latest(other)
    for name, tensor in a.params.items():
        np.testing.assert_array_equal(tensor, b.params[name], err_msg=name)
    np.testing.assert_array_equal(a.optimizer_state[MUON_STATE], b.optimizer_state[MUON_STATE])
    np.testing.assert_array_equal(a.m, b.m)
    # the momentum holds the hidden matrices (every layer's), nothing else
    size = sum(math.prod(s) for n, s in a.model_config.param_shapes().items() if n in HIDDEN_MATRICES)
    assert a.optimizer_state[MUON_STATE].shape == (size,)


def test_resume_with_the_other_optimizer_is_refused(tmp_path, dataset):
    muon, adamw = tmp_path / "muon", tmp_path / "adamw"
    train(tiny_config(dataset, muon, optimizer="muon", max_steps=2))
    train(tiny_config(dataset, adamw, max_steps=2))
    assert _latest(adamw).optimizer == "adamw" and not _latest(adamw).optimizer_state
    with pytest.raises(ConfigError, match="trained with --optimizer muon but --optimizer adamw was given"):
        train(tiny_config(dataset, muon, optimizer="adamw", max_steps=4, resume="latest"))
    with pytest.raises(ConfigError, match="trained with --optimizer adamw but --optimizer muon was given"):
        train(tiny_config(dataset, adamw, optimizer="muon", max_steps=4, resume="latest"))
    # a Muon checkpoint without its momentum is refused, naming what is missing
    step2 = os.path.realpath(muon / "latest")
    broken = tmp_path / "broken"
    shutil.copytree(step2, broken / "step_000002")
    opt_file = str(broken / "step_000002" / ck.OPTIMIZER_FILE)
    tensors = {k: t for k, t in load_file(opt_file).items() if k != MUON_STATE}
    save_file(tensors, opt_file, metadata={"optimizer": "muon"})
    with pytest.raises(CheckpointError, match=MUON_STATE):
        train(tiny_config(dataset, tmp_path / "again", optimizer="muon", max_steps=4,
                          resume=str(broken / "step_000002")))
    # `--resume latest` alone continues with the run's own optimizer (build_config takes the saved flags)
    r = run_cli("train", "--resume", "latest", "--checkpoint-dir", muon, "--max-steps", "3", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert _latest(muon).optimizer == "muon" and _latest(muon).state["step"] == 3


@pytest.mark.parametrize("flags, needle", [
    (["--optimizer", "sgd"], "--optimizer must be adamw or muon"),
    (["--optimizer", "muon", "--muon-lr", "0"], "--muon-lr must be positive"),
    (["--optimizer", "muon", "--muon-momentum", "1"], "--muon-momentum must lie in [0, 1)"),
    (["--optimizer", "muon", "--device", "cuda"], "--optimizer muon runs on --device cpu only"),
])
def test_bad_flags_are_one_clear_error(flags, needle, tmp_path):
    corpus = write_corpus(tmp_path)
    r = run_cli("train", corpus, "--checkpoint-dir", tmp_path / "run", "--max-steps", "1", *flags)
    assert_clean_error(r, needle)
    assert not (tmp_path / "run").exists()  # refused before anything was written


try:
    import mpi4py  # noqa: F401

    MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
except ImportError:
    MPIEXEC = None


@pytest.mark.skipif(MPIEXEC is None, reason="MPI is not installed: pip install -e '.[mpi]' (make test does)")
def test_two_ranks_equal_one_process_with_grad_accum(tmp_path):
    """Muon steps on the accumulated gradients, after the all-reduce: 2 ranks orthogonalize the momenta that
    one process with --grad-accum 2 does (to float32 rounding of the reduction order)."""
    corpus = write_corpus(tmp_path)
    flags = ["train", str(corpus), "--optimizer", "muon", "--embed-dim", "32", "--num-layers", "2", "--num-heads",
             "2", "--seq-len", "16", "--batch-size", "4", "--max-steps", "5", "--no-progress", "--threads", "1"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cli = str(ROOT / "cli.py")
    one = subprocess.run([sys.executable, cli, *flags, "--grad-accum", "2", "--checkpoint-dir", "one"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, env=env)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([MPIEXEC, "-n", "2", sys.executable, cli, *flags, "--checkpoint-dir", "two"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, env=env)
    assert two.returncode == 0, two.stderr
    assert json.loads((tmp_path / "two" / "latest" / "state.json").read_text())["world_size"] == 2
    a, b = train_losses(tmp_path / "one"), train_losses(tmp_path / "two")
    assert len(a) == 5
    np.testing.assert_allclose(list(a.values()), list(b.values()), rtol=1e-5, atol=0)
    wa = load_file(str(tmp_path / "one" / "latest" / "model.safetensors"))
    wb = load_file(str(tmp_path / "two" / "latest" / "model.safetensors"))
    for name in wa:
        np.testing.assert_allclose(wa[name], wb[name], rtol=0, atol=1e-5, err_msg=name)
