"""The training loop (cllm.training): exact resume, metrics, pointers, pruning, the loss plot, the
batch sampler and the evaluation, with a tiny model on a tiny corpus."""
import json
import math
import os
import signal

import numba
import numpy as np
import pytest
from train_helpers import (
    all_threads_after,  # noqa: F401  (autouse)
    read_metrics,
    tiny_config,
    train_losses,
)
from train_helpers import prepared_dataset as _prepared

from cllm import checkpoint as ck
from cllm.config import ModelConfig
from cllm.errors import ConfigError
from cllm.model import Model
from cllm.optim import AdamW
from cllm.training import BatchSampler, build_config, evaluate_tokens, train


@pytest.fixture
def dataset(tmp_path_factory):
    return _prepared(tmp_path_factory)


def _interrupt_at(monkeypatch, step):
    """Send a real SIGINT to this process during the optimizer update of `step` (the loop's Ctrl-C path)."""
    calls = {"n": 0}
    original = AdamW.step

    def optimizer_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(AdamW, "step", optimizer_step)


def _params(run_dir):
    return ck.load_checkpoint(os.path.join(run_dir, "latest")).params


def test_resume_after_interrupt_is_bit_identical(tmp_path, dataset, monkeypatch):
    full = tmp_path / "full"
    summary = train(tiny_config(dataset, full, max_steps=12, eval_interval=6))
    assert summary["steps"] == 12 and not summary["interrupted"]
    reference = train_losses(full)
    assert sorted(reference) == list(range(1, 13))

    part = tmp_path / "part"
    with monkeypatch.context() as m:
        _interrupt_at(m, 5)
        first = train(tiny_config(dataset, part, max_steps=12, eval_interval=6))
    k = first["steps"]  # the loop stops after the step during which Ctrl-C came, or the next one
    assert first["interrupted"] and k in (5, 6)
    assert os.path.basename(os.path.realpath(part / "latest")) == f"step_{k:06d}"
    assert json.loads((part / "latest" / "state.json").read_text())["step"] == k

    second = train(tiny_config(dataset, part, max_steps=12, eval_interval=6, resume="latest"))
    assert second["steps"] == 12 and not second["interrupted"]
    resumed = train_losses(part)
    assert resumed == reference  # bit-identical floats, every step logged exactly once
    for name, tensor in _params(full).items():
        np.testing.assert_array_equal(tensor, _params(part)[name], err_msg=name)
    # the evaluations agree as well (the interrupted run also evaluated where it stopped)
    val = lambda d: {r["step"]: r["val_loss"] for r in read_metrics(d) if "val_loss" in r}  # noqa: E731
    assert set(val(full)) == {6, 12} and set(val(part)) == {k, 6, 12}
    assert {s: val(part)[s] for s in (6, 12)} == val(full)


def test_resume_from_a_step_directory_into_another_run(tmp_path, dataset):
    full = tmp_path / "full"
    train(tiny_config(dataset, full, max_steps=9, checkpoint_interval=3, keep_last=5))
    reference = train_losses(full)
    other = tmp_path / "other"
    train(tiny_config(dataset, other, max_steps=9, resume=str(full / "step_000003")))
    assert train_losses(other) == {s: reference[s] for s in range(4, 10)}


def test_resume_with_another_model_config_is_refused(tmp_path, dataset):
    run = tmp_path / "run"
    train(tiny_config(dataset, run, max_steps=3))
    with pytest.raises(ConfigError, match=r"embed-dim") as info:
        train(tiny_config(dataset, run, max_steps=6, embed_dim=32, resume="latest"))
    assert "16" in str(info.value) and "32" in str(info.value)
    with pytest.raises(ConfigError, match=r"num-layers"):
        train(tiny_config(dataset, run, max_steps=6, num_layers=2, resume="latest"))
    # the refused runs left the checkpoint alone
    assert os.path.basename(os.path.realpath(run / "latest")) == "step_000003"


def test_build_config_resumes_the_saved_run(tmp_path, dataset):
    run = tmp_path / "run"
    cfg = tiny_config(dataset, run, max_steps=3, learning_rate=3e-3, weight_decay=0.05)
    train(cfg)
    again = build_config({"resume": "latest", "checkpoint_dir": str(run), "max_steps": 5})
    assert again.max_steps == 5  # a flag given now wins
    assert again.learning_rate == 3e-3 and again.weight_decay == 0.05 and again.data == str(dataset)
    assert (again.embed_dim, again.num_layers, again.num_heads, again.seq_len) == (16, 1, 2, 16)


def test_metrics_pointers_pruning_and_plot(tmp_path, dataset):
    run = tmp_path / "run"
    lr, min_lr, warmup = 2e-3, 2e-4, 2
    train(tiny_config(dataset, run, max_steps=10, eval_interval=4, checkpoint_interval=2, keep_last=2,
                      learning_rate=lr, min_lr=min_lr, warmup_steps=warmup))
    records = read_metrics(run)
    steps = [r for r in records if "train_loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 11))
    for r in steps:
        for key in ("step", "train_loss", "lr", "tokens_per_sec", "elapsed_s"):
            assert key in r, (key, r)
        assert math.isfinite(r["train_loss"]) and r["train_loss"] > 0
        assert r["tokens_per_sec"] > 0 and r["elapsed_s"] >= 0
    elapsed = [r["elapsed_s"] for r in steps]
    assert elapsed == sorted(elapsed)
    # validation exactly on eval steps and at the end
    val = {r["step"]: r["val_loss"] for r in records if "val_loss" in r}
    assert set(val) == {4, 8, 10}
    assert all(math.isfinite(v) for v in val.values())
    # the schedule: linear warmup to the peak, then a non-increasing decay that stays >= min_lr
    lrs = [r["lr"] for r in steps]
    assert lrs[0] == pytest.approx(lr / warmup) and max(lrs) == pytest.approx(lr)
    after = lrs[warmup - 1:]
    assert all(a >= b for a, b in zip(after, after[1:])) and min(lrs) >= min_lr
    # pointers: latest is the last save; best is the saved step of the lowest validation loss
    assert os.path.basename(os.readlink(run / "latest")) == "step_000010"
    best_step = min(val, key=lambda s: (val[s], -s))
    assert os.path.basename(os.readlink(run / "best")) == f"step_{best_step:06d}"
    # keep-last 2, plus whatever best points to
    kept = sorted(d for d in os.listdir(run) if d.startswith("step_"))
    assert kept == sorted({"step_000008", "step_000010", f"step_{best_step:06d}"})
    for d in kept:
        loaded = ck.load_checkpoint(str(run / d), with_optimizer=True)
        assert loaded.state["step"] == int(d[5:])
        assert loaded.m is not None and loaded.tokenizer_path is not None
    png = run / "loss.png"
    try:
        import matplotlib  # noqa: F401, PLC0415 - optional: the plot extra; loss.png is drawn only with it
    except ImportError:
        assert not png.exists()
    else:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_batch_sampler_windows_and_state():
    tokens = np.arange(1000, dtype=np.uint16)
    sampler = BatchSampler(tokens, B=3, T=8, seed=1)
    x, y = sampler.next()
    assert x.shape == y.shape == (3, 8) and x.dtype == np.int32
    for row_x, row_y in zip(x, y):  # consecutive tokens, targets shifted by one
        np.testing.assert_array_equal(np.diff(row_x), 1)
        np.testing.assert_array_equal(row_y, row_x + 1)
    state = sampler.state()
    after = [sampler.next()[0] for _ in range(3)]
    sampler.set_state(state)
    again = [sampler.next()[0] for _ in range(3)]
    for a, b in zip(after, again):
        np.testing.assert_array_equal(a, b)
    other = BatchSampler(tokens, B=3, T=8, seed=1)
    np.testing.assert_array_equal(other.next()[0], x)  # same seed, same first batch


def test_evaluate_tokens_is_the_mean_over_every_window():
    model = Model(ModelConfig(vocab_size=11, max_seq_len=8, num_layers=1, num_heads=2, embed_dim=8), seed=3)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 11, size=45).astype(np.uint16)
    T = 8
    expected = []
    for i in range((len(tokens) - 1) // T):  # 5 non-overlapping windows of T+1 tokens
        window = tokens[i * T:i * T + T + 1].astype(np.int64)
        logits = np.array(model.forward(window[None, :-1]), dtype=np.float64)[0]
        logp = logits - logits.max(axis=1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
        expected.extend(-logp[np.arange(T), window[1:]])
    assert len(expected) == 5 * T
    for B in (1, 2, 3, 7):  # the batching (and its padding) must not change the figure
        assert evaluate_tokens(model, tokens, B, T) == pytest.approx(np.mean(expected), rel=1e-5)


def test_threads_flag_holds_for_the_whole_run(tmp_path, dataset, monkeypatch):
    """--threads N is the number of Numba threads the training steps run on (creating the Model must
    not reset it to every core)."""
    seen = []
    original = AdamW.step

    def optimizer_step(self, *args, **kwargs):
        seen.append(numba.get_num_threads())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(AdamW, "step", optimizer_step)
    train(tiny_config(dataset, tmp_path / "one", max_steps=2, threads=1))
    assert seen == [1, 1]
    if numba.config.NUMBA_NUM_THREADS >= 2:
        seen.clear()
        train(tiny_config(dataset, tmp_path / "two", max_steps=2, threads=2))
        assert seen == [2, 2]


def test_best_is_saved_whenever_validation_improves(tmp_path, dataset):
    # evaluation steps that are not checkpoint steps: a new best must still be saved and pointed to
    run = tmp_path / "run"
    old = os.umask(0o022)
    try:
        train(tiny_config(dataset, run, max_steps=9, eval_interval=3, checkpoint_interval=1000, keep_last=1,
                          learning_rate=3e-3))
    finally:
        os.umask(old)
    val = {r["step"]: r["val_loss"] for r in read_metrics(run) if "val_loss" in r}
    assert set(val) == {3, 6, 9}
    best_step = min(val, key=lambda s: (val[s], s))  # the first step that reached the lowest loss
    target = run / "best"
    assert os.path.basename(os.readlink(target)) == f"step_{best_step:06d}"
    assert ck.load_checkpoint(str(target)).state["val_loss"] == pytest.approx(val[best_step])
    # checkpoints are as readable as any file the user writes (mkdtemp/mkstemp alone give 0700/0600)
    step_dir = os.path.realpath(target)
    assert os.stat(step_dir).st_mode & 0o777 == 0o755
    assert os.stat(os.path.join(step_dir, "model.safetensors")).st_mode & 0o777 == 0o644
