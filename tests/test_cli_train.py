"""`cli.py train` and `cli.py generate` as a user runs them (subprocesses): prompts stay text,
Ctrl-C saves and exits 130, and every kind of bad input is one clear `error:` line."""

import importlib
import json
import os
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
    assert_clean_error,
    read_metrics,
    run_cli,
    tiny_config,
    trained_checkpoint,
    write_corpus,
)
from train_helpers import prepared_dataset as _prepared

from cllm.commands import parse_command_line
from cllm.completion import load_for_generation
from cllm.generation import Generator, SamplingConfig
from cllm.model import MATRIX_PARAMS
from cllm.training import TrainConfig, Trainer, build_config, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = trained_checkpoint(tmp_path_factory)
    model, tok, _ = load_for_generation(str(run))
    return run, model, tok


def _greedy_text(model, tok, prompt, n):
    ids = tok.encode(prompt)
    return tok.decode(
        list(Generator(model, eos_id=tok.eos_id).stream(ids, SamplingConfig(max_new_tokens=n, temperature=0)))
    )


@pytest.mark.parametrize("args", [["1984"], ["a,b"], ["True"], ["--prompt", "1984"], ["--prompt=a,b"]])
def test_the_prompt_is_always_text(trained, args):
    run, model, tok = trained
    prompt = args[-1].split("=", 1)[-1]
    r = run_cli("generate", *args, "--checkpoint", run, "--temperature", "0", "--max-new-tokens", "12")
    assert r.returncode == 0, r.stderr
    assert r.stdout == prompt + _greedy_text(model, tok, prompt, 12) + "\n"


def test_a_stop_string_with_a_comma_stays_one_string(trained):
    run, model, tok = trained
    body = _greedy_text(model, tok, "the ", 30)
    # were "a,b" split into the stops "a" and "b", this text would be cut early
    assert "a" in body or "b" in body
    expected = "the " + body.split("a,b")[0] + "\n"
    r = run_cli(
        "generate", "the ", "--checkpoint", run, "--temperature", "0", "--max-new-tokens", "30", "--stop", "a,b"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected


def test_a_prompt_longer_than_the_context_is_cropped_with_a_warning(trained):
    run, model, tok = trained
    prompt = "the cat sat on the mat " * 4
    assert len(tok.encode(prompt)) > model.config.max_seq_len
    r = run_cli("generate", prompt, "--checkpoint", run, "--temperature", "0", "--max-new-tokens", "5")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(prompt) and len(r.stdout) == len(prompt) + 5 + 1
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "context" in warnings[0], r.stderr
    assert "Traceback" not in r.stderr


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path, tmp_path_factory):
    data = _prepared(tmp_path_factory)
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        CLI,
        "train",
        str(data),
        *TINY_FLAGS,
        "--max-steps",
        "1000000",
        "--checkpoint-interval",
        "1000000",
        "--eval-interval",
        "1000000",
        "--sample-interval",
        "1000000",
        "--checkpoint-dir",
        str(run),
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().count("\n") >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert os.path.lexists(run / "latest")
    state = json.loads((run / "latest" / "state.json").read_text())
    assert state["reason"] == "interrupt"
    steps = [r["step"] for r in read_metrics(run) if "train_loss" in r]
    assert state["step"] == steps[-1] >= 3
    # and the run goes on from there (in process: the flags are what `train --resume latest` gives)
    train(
        build_config(
            {"resume": "latest", "checkpoint_dir": str(run), "max_steps": state["step"] + 2, "progress": False}
        )
    )
    assert [r["step"] for r in read_metrics(run) if "train_loss" in r] == list(range(1, state["step"] + 3))


def test_resuming_with_another_model_config_is_refused(tmp_path, tmp_path_factory):
    data = _prepared(tmp_path_factory)
    run = tmp_path / "run"
    train(tiny_config(data, run, max_steps=2))
    r = run_cli("train", "--resume", "latest", "--checkpoint-dir", run, "--embed-dim", "32", "--max-steps", "4")
    assert_clean_error(r, "cannot resume", "embed-dim")
    assert os.readlink(run / "latest") == "step_000002"


# ---------------------------------------------------------------- bad input
def _damaged_checkpoint(tmp_path, run, damage):
    ck = tmp_path / "ck"
    shutil.copytree(os.path.realpath(run / "latest"), ck)
    model_file = ck / "model.safetensors"
    config = json.loads((ck / "config.json").read_text())
    if damage == "truncated":
        raw = model_file.read_bytes()
        model_file.write_bytes(raw[: len(raw) - 100])
    elif damage == "missing":
        model_file.unlink()
    elif damage == "version":
        config["format_version"] = 7
    elif damage == "shapes":
        config["model"].update(embed_dim=32, ffn_dim=128)  # a consistent gpt2 config (4C) that the tensors do not fit
    elif damage == "negative":
        config["model"]["num_layers"] = -1
    (ck / "config.json").write_text(json.dumps(config))
    return ck


@pytest.mark.parametrize(
    "damage, needles",
    [
        ("truncated", ["model.safetensors", "corrupt or truncated"]),
        ("missing", ["missing model.safetensors"]),
        ("version", ["format version 7"]),
        ("shapes", ["shape"]),
        ("negative", ["num_layers"]),
    ],
)
def test_generate_from_a_damaged_checkpoint(tmp_path, trained, damage, needles):
    ck = _damaged_checkpoint(tmp_path, trained[0], damage)
    assert_clean_error(run_cli("generate", "hi", "--checkpoint", ck), *needles)


def _bad_case(name, tmp_path, run):
    """(argv, words the error line must hold) for each bad input."""
    small = tmp_path / "small.txt"
    small.write_text("the cat sat on the mat\n")
    if name == "missing checkpoint":
        return ["generate", "hi", "--checkpoint", tmp_path / "nothing"], ["no checkpoint"]
    if name == "temperature < 0":
        return ["generate", "hi", "--checkpoint", run, "--temperature", "-0.5"], ["--temperature", ">= 0"]
    if name == "top-p 0":
        return ["generate", "hi", "--checkpoint", run, "--top-p", "0"], ["--top-p", "(0, 1]"]
    if name == "top-p > 1":
        return ["generate", "hi", "--checkpoint", run, "--top-p", "1.5"], ["--top-p", "(0, 1]"]
    if name == "negative max-new-tokens":
        return ["generate", "hi", "--checkpoint", run, "--max-new-tokens", "-3"], ["--max-new-tokens"]
    if name == "negative top-k":
        return ["generate", "hi", "--checkpoint", run, "--top-k", "-1"], ["--top-k"]
    if name == "generate unknown flag":
        return ["generate", "hi", "--checkpoint", run, "--temprature", "0"], ["unknown flag --temprature"]
    if name == "train unknown flag":
        return ["train", small, "--embed-dims", "16"], ["unknown flag --embed-dims"]
    if name == "negative embed-dim":
        return ["train", small, "--embed-dim", "-16", "--checkpoint-dir", tmp_path / "ck"], ["--embed-dim", "positive"]
    if name == "negative seq-len":
        return ["train", small, "--seq-len", "-1", "--checkpoint-dir", tmp_path / "ck"], ["--seq-len", "positive"]
    if name == "zero batch-size":
        return ["train", small, "--batch-size", "0", "--checkpoint-dir", tmp_path / "ck"], ["--batch-size", "positive"]
    if name == "heads not dividing":
        return (
            ["train", small, "--embed-dim", "16", "--num-heads", "3", "--checkpoint-dir", tmp_path / "ck"],
            ["divisible", "num_heads"],
        )
    if name == "dataset smaller than a window":
        return (
            ["train", small, *TINY_FLAGS, "--checkpoint-dir", tmp_path / "ck", "--no-progress"],
            ["fewer than one window", "--seq-len"],
        )
    if name == "validation split smaller than a window":
        corpus = write_corpus(tmp_path, "mid.txt", n_lines=5)  # ~250 characters: val ~25 < 33
        return (
            [
                "train",
                corpus,
                "--embed-dim",
                "16",
                "--num-layers",
                "1",
                "--num-heads",
                "2",
                "--seq-len",
                "32",
                "--batch-size",
                "2",
                "--checkpoint-dir",
                tmp_path / "ck",
                "--no-progress",
            ],
            ["validation split", "--seq-len"],
        )
    if name == "unwritable checkpoint dir":
        (tmp_path / "afile").write_text("a regular file")
        return ["train", small, "--checkpoint-dir", tmp_path / "afile" / "ck"], ["not writable", "--checkpoint-dir"]
    if name == "empty corpus":
        (tmp_path / "empty.txt").write_text("")
        return ["train", tmp_path / "empty.txt", "--checkpoint-dir", tmp_path / "ck", "--no-progress"], ["empty"]
    if name == "empty directory":
        (tmp_path / "nothing").mkdir()
        return ["train", tmp_path / "nothing", "--checkpoint-dir", tmp_path / "ck", "--no-progress"], ["no text files"]
    if name == "missing data":
        return ["train", tmp_path / "nope.txt", "--checkpoint-dir", tmp_path / "ck"], ["no such file"]
    if name == "resume without a checkpoint":
        return ["train", small, "--resume", "latest", "--checkpoint-dir", tmp_path / "ck"], ["no checkpoint"]
    raise AssertionError(name)


BAD = [
    "missing checkpoint",
    "temperature < 0",
    "top-p 0",
    "top-p > 1",
    "negative max-new-tokens",
    "negative top-k",
    "generate unknown flag",
    "train unknown flag",
    "negative embed-dim",
    "negative seq-len",
    "zero batch-size",
    "heads not dividing",
    "dataset smaller than a window",
    "validation split smaller than a window",
    "unwritable checkpoint dir",
    "empty corpus",
    "empty directory",
    "missing data",
    "resume without a checkpoint",
]


@pytest.mark.parametrize("name", BAD)
def test_bad_input_is_one_clear_error(tmp_path, trained, name):
    args, needles = _bad_case(name, tmp_path, trained[0])
    r = run_cli(*args)
    assert_clean_error(r, *needles)
    if name.startswith(("validation split", "dataset smaller")):  # refused before any training step
        assert not (tmp_path / "ck" / "metrics.jsonl").exists() or not read_metrics(tmp_path / "ck")
        assert not os.path.lexists(tmp_path / "ck" / "latest")


def _adamw_reference(params: dict, grads: list[dict], lr: float, beta1: float, beta2: float, weight_decay: float,
                     grad_clip: float, eps: float = 1e-8) -> dict:
    """AdamW as its formula says, in float64, over {name: flat parameter} for a list of steps' gradients:
    clip the global gradient norm, update the moments, correct their bias, decay the matrices (decoupled)."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    for t, g in enumerate(grads, start=1):
        g = {k: x.astype(np.float64) for k, x in g.items()}
        norm = np.sqrt(sum(float(np.sum(x * x)) for x in g.values()))
        if grad_clip and norm > grad_clip:
            g = {k: x * (grad_clip / (norm + 1e-6)) for k, x in g.items()}
        for k in p:
            m[k] = beta1 * m[k] + (1 - beta1) * g[k]
            v2[k] = beta2 * v2[k] + (1 - beta2) * g[k] ** 2
            update = (m[k] / (1 - beta1 ** t)) / (np.sqrt(v2[k] / (1 - beta2 ** t)) + eps)
            p[k] = p[k] - lr * (update + (weight_decay if k in MATRIX_PARAMS else 0.0) * p[k])
    return p


def test_the_optimizer_flags_reach_adamw(tmp_path):
    """--weight-decay, --grad-clip, --beta1 and --beta2, parsed as `cli.py train` parses them, are the
    AdamW the Trainer builds, and two of its updates move the weights as AdamW's formula says with these
    values, not with the defaults."""
    chosen = {"weight_decay": 0.3, "grad_clip": 0.05, "beta1": 0.5, "beta2": 0.7}
    argv = [str(write_corpus(tmp_path)), *TINY_FLAGS, "--checkpoint-dir", str(tmp_path / "ck"), "--no-progress"]
    for name, value in chosen.items():
        argv += ["--" + name.replace("_", "-"), str(value)]
    _, args, given = parse_command_line(importlib.import_module("cllm.commands.train"), "train", argv)
    trainer = Trainer(build_config(dict(given, data=args[0])))
    opt, model = trainer.optimizer, trainer.model
    assert {name: getattr(opt, name) for name in chosen} == chosen

    rng = np.random.default_rng(0)
    start = {k: v.copy() for k, v in model.p.items()}
    grads = []
    for _ in range(2):  # two steps: the first update of Adam is sign(g) whatever the betas
        model.grads[:] = rng.standard_normal(model.grads.size).astype(model.grads.dtype) * 0.01
        grads.append({k: v.copy() for k, v in model.g.items()})
        opt.step(model, lr=0.01)
    got = {k: v.astype(np.float64) for k, v in model.p.items()}
    want = _adamw_reference(start, grads, lr=0.01, **chosen)
    defaults = {name: getattr(TrainConfig, name) for name in chosen}
    with_defaults = _adamw_reference(start, grads, lr=0.01, **defaults)
    for k in got:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)
    # the test can tell: with the default values the weights would differ far beyond that tolerance
    assert max(float(np.max(np.abs(with_defaults[k] - want[k]))) for k in got) > 1e-3
