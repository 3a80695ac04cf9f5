"""Checkpoints (cllm.checkpoint): round trip, validation of corrupt ones, pointers, pruning, stale
temporaries, and atomicity under SIGKILL at random moments of a training run."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from train_helpers import (
    CLI,
    ROOT,
    TINY_FLAGS,
    all_threads_after,  # noqa: F401  (autouse)
    tiny_config,
    train_losses,
)
from train_helpers import prepared_dataset as _prepared

from cllm import checkpoint as ck
from cllm.config import ModelConfig
from cllm.errors import CheckpointError
from cllm.model import Model
from cllm.optim import AdamW
from cllm.training import train

CONFIG = ModelConfig(vocab_size=10, max_seq_len=8, num_layers=2, num_heads=2, embed_dim=8)


@pytest.fixture
def saved(tmp_path):
    model = Model(CONFIG, seed=5)
    model.m[:] = np.linspace(-1, 1, model.m.size)
    model.v[:] = np.linspace(0, 2, model.v.size)
    path = ck.save_checkpoint(str(tmp_path), "step_000003", model, AdamW(), None, {"lr": 1}, {"step": 3})
    return model, path


def test_round_trip(saved):
    model, path = saved
    loaded = ck.load_checkpoint(path, with_optimizer=True)
    assert loaded.model_config == CONFIG and loaded.state == {"step": 3} and loaded.train_config == {"lr": 1}
    again = ck.model_from_checkpoint(loaded)
    np.testing.assert_array_equal(again.params, model.params)
    np.testing.assert_array_equal(again.m, model.m)
    np.testing.assert_array_equal(again.v, model.v)
    assert sorted(os.listdir(path)) == ["config.json", "model.safetensors", "optimizer.safetensors", "state.json"]
    assert not [f for f in os.listdir(os.path.dirname(path)) if f.endswith(".tmp")]


def test_the_model_file_is_safetensors_without_pickle(saved):
    _, path = saved
    raw = open(os.path.join(path, "model.safetensors"), "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    assert header["wte"]["shape"] == [64, 8] and header["wte"]["dtype"] == "F32"
    assert header["qkvw"]["shape"] == [2, 24, 8]


def _rewrite_config(path, **changes):
    cfg_path = os.path.join(path, "config.json")
    cfg = json.load(open(cfg_path))
    for key, value in changes.items():
        if key == "model":
            cfg["model"].update(value)
        else:
            cfg[key] = value
    json.dump(cfg, open(cfg_path, "w"))


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncate", "corrupt or truncated"),
        ("missing_model", "missing model.safetensors"),
        ("missing_config", "no config.json"),
        ("version", "format version 99"),
        ("shapes", "shape"),
        ("negative", "invalid model config: num_layers must be a positive integer"),
        ("heads", "invalid model config: embed_dim .8. must be divisible"),
        ("garbage_config", "not valid JSON"),
    ],
)
def test_damaged_checkpoints_are_refused(saved, damage, message):
    _, path = saved
    model_file = os.path.join(path, "model.safetensors")
    if damage == "truncate":
        raw = open(model_file, "rb").read()
        open(model_file, "wb").write(raw[: len(raw) // 2])
    elif damage == "missing_model":
        os.unlink(model_file)
    elif damage == "missing_config":
        os.unlink(os.path.join(path, "config.json"))
    elif damage == "version":
        _rewrite_config(path, format_version=99)
    elif damage == "shapes":
        _rewrite_config(path, model={"embed_dim": 16, "ffn_dim": 64})  # a consistent config of another size
    elif damage == "negative":
        _rewrite_config(path, model={"num_layers": -2})
    elif damage == "heads":
        _rewrite_config(path, model={"num_heads": 3})
    elif damage == "garbage_config":
        open(os.path.join(path, "config.json"), "w").write('{"format_version": 1, "mod')
    with pytest.raises(CheckpointError, match=message):
        ck.load_checkpoint(path)


def test_missing_optimizer_state_is_refused_for_resume(saved):
    _, path = saved
    os.unlink(os.path.join(path, "optimizer.safetensors"))
    ck.load_checkpoint(path)  # enough for generation
    with pytest.raises(CheckpointError, match="missing optimizer.safetensors"):
        ck.load_checkpoint(path, with_optimizer=True)


def test_resolve_pointers_and_run_directories(saved, tmp_path):
    model, path = saved
    ck.set_pointer(str(tmp_path), "latest", "step_000003")
    ck.save_checkpoint(str(tmp_path), "step_000004", model)
    ck.set_pointer(str(tmp_path), "latest", "step_000004")  # replaces the link
    assert os.readlink(tmp_path / "latest") == "step_000004"  # relative: the run directory can move
    assert ck.resolve_checkpoint(str(tmp_path)) == os.path.realpath(tmp_path / "step_000004")
    assert ck.resolve_checkpoint(str(tmp_path / "latest")) == os.path.realpath(tmp_path / "step_000004")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        ck.resolve_checkpoint(str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="without a checkpoint"):
        ck.resolve_checkpoint(str(tmp_path / "empty"))


def test_a_folder_of_runs_resolves_to_the_most_recent_run(tmp_path):
    model = Model(CONFIG, seed=0)
    for run, when in (("a", 2_000_000_000), ("b", 1_000_000_000)):
        ck.save_checkpoint(str(tmp_path / run), "step_000001", model)
        ck.set_pointer(str(tmp_path / run), "latest", "step_000001")
        os.utime(tmp_path / run / "step_000001", (when, when))
    assert ck.resolve_checkpoint(str(tmp_path)) == os.path.realpath(tmp_path / "a" / "step_000001")


def test_prune_keeps_the_newest_and_the_pointed_to(tmp_path):
    model = Model(CONFIG, seed=0)
    for s in range(1, 7):
        ck.save_checkpoint(str(tmp_path), f"step_{s:06d}", model)
    ck.set_pointer(str(tmp_path), "latest", "step_000006")
    ck.set_pointer(str(tmp_path), "best", "step_000002")
    ck.prune_checkpoints(str(tmp_path), 2)
    assert sorted(d for d in os.listdir(tmp_path) if d.startswith("step_")) == [
        "step_000002",
        "step_000005",
        "step_000006",
    ]


def test_resaving_a_step_never_exposes_a_half_deleted_checkpoint(tmp_path, monkeypatch):
    """Re-saving a step that `latest` points to (a run resumed from an older checkpoint of its own
    directory): a process dying while the old directory is being deleted leaves `latest` readable."""
    ck.save_checkpoint(str(tmp_path), "step_000002", Model(CONFIG, seed=1))
    ck.set_pointer(str(tmp_path), "latest", "step_000002")
    real_rmtree = shutil.rmtree
    died = []

    def dying_rmtree(path, *args, **kwargs):  # deletes one file, then the process "dies"
        if died or not os.path.isdir(path):
            return real_rmtree(path, *args, **kwargs)
        died.append(path)
        os.unlink(os.path.join(path, sorted(os.listdir(path))[0]))
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", dying_rmtree)
    new = Model(CONFIG, seed=2)
    try:
        ck.save_checkpoint(str(tmp_path), "step_000002", new)
    except KeyboardInterrupt:
        pass
    monkeypatch.undo()
    assert died
    loaded = ck.load_checkpoint(str(tmp_path / "latest"))  # complete: the old one or the new one
    np.testing.assert_array_equal(ck.model_from_checkpoint(loaded).params, new.params)
    ck.remove_stale_temporaries(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["latest", "step_000002"]


def test_prune_orders_steps_by_number_past_six_digits(tmp_path):
    model = Model(CONFIG, seed=0)
    for s in (999998, 999999, 1000000, 1000001):
        ck.save_checkpoint(str(tmp_path), f"step_{s:06d}", model)
    ck.prune_checkpoints(str(tmp_path), 2)
    assert sorted(os.listdir(tmp_path)) == ["step_1000000", "step_1000001"]


def test_stale_temporaries_are_removed(tmp_path):
    (tmp_path / ".step_000009.abc123.tmp").mkdir()
    (tmp_path / ".step_000009.abc123.tmp" / "model.safetensors").write_bytes(b"half")
    os.symlink("step_000009", tmp_path / ".latest.4242.tmp")
    (tmp_path / ".metrics.jsonl.xyz.tmp").write_text("partial")
    (tmp_path / "keep.txt").write_text("user file")
    ck.remove_stale_temporaries(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["keep.txt"]


def _kill_test_start(run_dir, data, extra=()):
    resume = ["--resume", "latest"] if os.path.lexists(run_dir / "latest") else []
    # a constant learning rate after the warmup (min-lr = learning-rate), so that the final run's
    # --max-steps does not change the schedule of the steps before it
    cmd = [
        sys.executable,
        CLI,
        "train",
        str(data),
        *TINY_FLAGS,
        "--max-steps",
        "1000000",
        "--checkpoint-interval",
        "1",
        "--eval-interval",
        "1000000",
        "--sample-interval",
        "1000000",
        "--warmup-steps",
        "2",
        "--seed",
        "7",
        "--learning-rate",
        "0.001",
        "--min-lr",
        "0.001",
        "--keep-last",
        "2",
        "--checkpoint-dir",
        str(run_dir),
        "--no-progress",
        *resume,
        *extra,
    ]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _latest_target(run_dir):
    try:
        return os.readlink(run_dir / "latest")
    except OSError:
        return None


def test_sigkill_at_random_moments_never_breaks_latest(tmp_path, tmp_path_factory):
    """A training run saving a checkpoint after every step is SIGKILLed at random moments twelve
    times and restarted with --resume latest: `latest`, whenever it exists, is a complete checkpoint;
    stale temporaries go at the next start; and the losses of the run, killed and resumed twelve
    times, are bit-identical to those of an uninterrupted run."""
    data = _prepared(tmp_path_factory)
    run = tmp_path / "run"
    rng = random.Random(20240326)
    kills = 0
    planted = None
    deadline = time.monotonic() + 150  # about 40 s on an idle 2-core machine
    while kills < 12 and time.monotonic() < deadline:
        before = _latest_target(run)
        proc = _kill_test_start(run, data)
        # wait until this process has saved at least once, then kill it at a random moment
        while proc.poll() is None and _latest_target(run) == before and time.monotonic() < deadline:
            time.sleep(0.02)
        if proc.poll() is None and planted is not None:  # the last round's planted temporaries are gone by now
            assert not os.path.lexists(planted[0]) and not os.path.lexists(planted[1])
        time.sleep(rng.uniform(0.0, 0.5))
        if proc.poll() is not None:
            pytest.fail(f"training ended before it was killed (rc {proc.returncode}): {proc.stderr.read()}")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        kills += 1
        assert os.path.lexists(run / "latest")
        loaded = ck.load_checkpoint(str(run / "latest"), with_optimizer=True)
        assert loaded.state["step"] == int(os.path.basename(loaded.path)[5:])
        # what a killed save can leave, planted so that the next start must clean it
        planted = (run / f".step_999999.{kills}.tmp", run / f".latest.{kills}.tmp")
        planted[0].mkdir()
        (planted[0] / "model.safetensors").write_bytes(b"\0" * 10)
        os.symlink("step_999999", planted[1])
    assert kills == 12, "the kill loop ran out of time"

    # the run completes three steps after its twelfth death (saving only at the end now)
    end = int(_latest_target(run)[5:]) + 3
    done = _kill_test_start(run, data, ["--checkpoint-interval", "1000", "--max-steps", str(end)])
    _, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    assert not [f for f in os.listdir(run) if f.endswith(".tmp")]
    assert os.readlink(run / "latest") == f"step_{end:06d}"
    resumed = train_losses(run)
    assert sorted(resumed) == list(range(1, end + 1))
    reference_dir = tmp_path / "reference"
    train(tiny_config(data, reference_dir, max_steps=end, learning_rate=1e-3, min_lr=1e-3))
    assert resumed == train_losses(reference_dir)
