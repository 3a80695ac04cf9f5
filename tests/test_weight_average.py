"""`train --ema-decay` (cllm/training/average.py): the kernel, the average a run saves against one computed here
from a plain run's weights step by step, the validation of the average, exact resume, a resume that drops the
average, and the flag's refusals."""
from __future__ import annotations

import os

import numpy as np
import pytest
from train_helpers import (
    all_threads_after,  # noqa: F401  (autouse)
    assert_clean_error,
    read_metrics,
    run_cli,
    tiny_config,
    train_losses,
    write_corpus,
)
from train_helpers import prepared_dataset as _prepared

from cllm import checkpoint as ck
from cllm.data import read_token_file
from cllm.evaluate import evaluate_tokens
from cllm.kernels import ema_update
from cllm.model import Model
from cllm.training import train
from cllm.training.average import ONLINE_WEIGHTS

DECAY = 0.6  # short enough that 6 steps move the average well away from any one step's weights


@pytest.fixture
def dataset(tmp_path_factory):
    return _prepared(tmp_path_factory)


def flat(ckpt) -> np.ndarray:
    """A checkpoint's model weights as one (P,) vector in the model's order."""
    shapes = ckpt.model_config.param_shapes()
    return np.concatenate([ckpt.params[name].reshape(-1) for name in shapes])


def load(run_dir, step=None):
    where = os.path.join(run_dir, "latest" if step is None else f"step_{step:06d}")
    return ck.load_checkpoint(where, with_optimizer=True)


@pytest.mark.parametrize("n", [7, 300_000])  # one thread's loop and the parallel one
def test_kernel_is_the_moving_average(n):
    rng = np.random.default_rng(0)
    average, params = rng.standard_normal((2, n)).astype(np.float32)
    expected = average.astype(np.float64) * 0.9 + params.astype(np.float64) * 0.1
    ema_update(average, params, 0.9)
    np.testing.assert_allclose(average, expected, rtol=0, atol=1e-6)


def test_the_saved_model_is_the_average_of_the_plain_runs_weights(tmp_path, dataset):
    """A plain run's weights after every step, averaged here with the documented decay schedule, equal the
    checkpoint of the same run with --ema-decay; its optimizer weights equal the plain run's, bit for bit (the
    average never feeds back into training); its logged validation loss is the average's."""
    steps = 6
    common = dict(max_steps=steps, checkpoint_interval=1, keep_last=steps + 1, optimizer="muon", muon_lr=0.05)
    train(tiny_config(dataset, tmp_path / "plain", **common))
    train(tiny_config(dataset, tmp_path / "ema", ema_decay=DECAY, **common))
    first = load(tmp_path / "plain", 1)
    average = Model(first.model_config, seed=7).params.astype(np.float64)  # tiny_config's seed: the initial weights
    for step in range(1, steps + 1):
        d = min(DECAY, (1 + step) / (10 + step))
        average = d * average + (1 - d) * flat(load(tmp_path / "plain", step))
    ema, plain = load(tmp_path / "ema"), load(tmp_path / "plain")
    np.testing.assert_allclose(flat(ema), average, rtol=0, atol=2e-6)
    np.testing.assert_array_equal(ema.optimizer_state[ONLINE_WEIGHTS], flat(plain))
    assert np.abs(flat(ema) - flat(plain)).max() > 1e-3  # the average is not the last step's weights
    assert ONLINE_WEIGHTS not in plain.optimizer_state
    assert train_losses(tmp_path / "ema") == train_losses(tmp_path / "plain")
    # the logged validation loss is the saved (averaged) model's, not the optimizer's weights'
    val = np.asarray(read_token_file(os.path.join(dataset, "val.bin")))
    logged = [m["val_loss"] for m in read_metrics(tmp_path / "ema") if "val_loss" in m][-1]
    model = ck.model_from_checkpoint(ema)
    assert logged == pytest.approx(evaluate_tokens(model, val, 4, 16), abs=1e-6)
    model.load_params(ema.optimizer_state[ONLINE_WEIGHTS])
    assert abs(logged - evaluate_tokens(model, val, 4, 16)) > 1e-4


def test_resume_is_bit_identical(tmp_path, dataset):
    """8 steps in one run, and 4 + 4 resumed from its step-4 checkpoint: the same losses, average and weights."""
    full, other = tmp_path / "full", tmp_path / "other"
    train(tiny_config(dataset, full, ema_decay=DECAY, max_steps=8, checkpoint_interval=4, keep_last=5))
    train(tiny_config(dataset, other, ema_decay=DECAY, max_steps=8, resume=str(full / "step_000004")))
    reference = train_losses(full)
    assert train_losses(other) == {s: reference[s] for s in range(5, 9)}
    a, b = load(full), load(other)
    np.testing.assert_array_equal(flat(a), flat(b))
    np.testing.assert_array_equal(a.optimizer_state[ONLINE_WEIGHTS], b.optimizer_state[ONLINE_WEIGHTS])
    np.testing.assert_array_equal(a.m, b.m)


def test_a_resume_may_drop_the_average_or_start_one(tmp_path, dataset):
    """--ema-decay 0 on resume: training continues from the optimizer's weights, as if there had been no average;
    --ema-decay given to the resume of a plain run starts one from its weights."""
    plain, ema = tmp_path / "plain", tmp_path / "ema"
    train(tiny_config(dataset, plain, max_steps=8, checkpoint_interval=4, keep_last=5))
    train(tiny_config(dataset, ema, ema_decay=DECAY, max_steps=8, checkpoint_interval=4, keep_last=5))
    train(tiny_config(dataset, tmp_path / "dropped", ema_decay=0.0, max_steps=8, resume=str(ema / "step_000004")))
    dropped = load(tmp_path / "dropped")
    np.testing.assert_array_equal(flat(dropped), flat(load(plain)))
    assert ONLINE_WEIGHTS not in dropped.optimizer_state
    train(tiny_config(dataset, tmp_path / "started", ema_decay=DECAY, max_steps=8, resume=str(plain / "step_000004")))
    started = load(tmp_path / "started")
    np.testing.assert_array_equal(started.optimizer_state[ONLINE_WEIGHTS], flat(load(plain)))
    assert np.abs(flat(started) - flat(load(plain))).max() > 1e-5  # an average, not the last weights


@pytest.mark.parametrize("flags, needle", [
    (["--ema-decay", "1"], "--ema-decay must lie in [0, 1)"),
    (["--ema-decay", "-0.5"], "--ema-decay must lie in [0, 1)"),
    (["--ema-decay", "0.99", "--device", "cuda"], "--ema-decay runs on --device cpu only"),
])
def test_bad_flags_are_one_clear_error(flags, needle, tmp_path):
    corpus = write_corpus(tmp_path)
    r = run_cli("train", str(corpus), "--checkpoint-dir", str(tmp_path / "run"), "--max-steps", "1", *flags)
    assert_clean_error(r, needle)
    assert not (tmp_path / "run").exists()
