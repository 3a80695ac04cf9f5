"""`cli.py evaluate` and cllm.evaluate: loss, perplexity, bits per byte, windows with a stride."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from serve_helpers import T, tiny_run

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def loaded(run):
    from cllm.completion import load_for_generation

    model, tok, _ = load_for_generation(str(run["run"]))
    return model, tok


def cli(capsys, *args) -> tuple[int, str, str]:
    from cllm import cli as cli_module

    code = cli_module.main(["evaluate", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_evaluate_reproduces_the_validation_loss_training_logged(run, capsys):
    # the validation split as text, cut to training's windows: evaluate must give training's number
    code, out, err = cli(capsys, run["run"], run["val_text"], "--json")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["tokens"] == run["val_windows"] * T + 1
    assert result["windows"] == run["val_windows"] and result["stride"] == T == result["context"]
    assert result["loss"] == pytest.approx(run["val_loss"], rel=1e-5, abs=1e-6)
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
    # char tokens of ASCII text are bytes: bits per byte is the loss in bits
    assert result["bits_per_byte"] == pytest.approx(result["loss"] / math.log(2) * result["tokens"] / result["bytes"])
    assert result["bits_per_byte"] == pytest.approx(result["loss"] / math.log(2))


def test_the_loader_is_trainings(run, loaded):
    from cllm.data import read_token_file
    from cllm.evaluate import encode_corpus

    _, tok = loaded
    tokens, nbytes, docs = encode_corpus(str(run["corpus"]), tok)
    expected = np.concatenate([read_token_file(str(run["dataset"] / f"{s}.bin")) for s in ("train", "val")])
    assert docs == 1
    np.testing.assert_array_equal(tokens, expected.astype(np.int32))
    assert nbytes == len(run["corpus"].read_text().encode())


def test_whole_split_matches_trainings_function_and_stride_1_matches_a_direct_reference(run, loaded):
    from cllm.data import read_token_file
    from cllm.evaluate import evaluate_stream
    from cllm.training import evaluate_tokens

    model, _ = loaded
    val = np.asarray(read_token_file(str(run["dataset"] / "val.bin")), dtype=np.int32)
    n = run["val_windows"] * T + 1
    got = evaluate_stream(model, val[:n], n, stride=T, batch_size=3)
    assert got["loss"] == pytest.approx(evaluate_tokens(model, val, 4, T), rel=1e-5)
    assert got["loss"] == pytest.approx(run["val_loss"], rel=1e-5)

    # stride 1: target t is predicted from the T tokens before it (or from the start when t <= T)
    short = val[: T + 24]
    ref = []
    for t in range(1, short.size):
        start = max(0, t - T)
        window = short[start : start + T + 1] if start + T + 1 <= short.size else short[start:]
        model.forward(window[None, :-1], window[None, 1:])
        ref.append(float(model.token_losses()[0, t - start - 1]))
    got1 = evaluate_stream(model, short, short.size, stride=1, batch_size=5)
    assert got1["scored_tokens"] == short.size - 1 == len(ref)
    assert got1["loss"] == pytest.approx(np.mean(ref), rel=1e-5)
    # the batch size changes nothing; a bigger stride changes the context, so (slightly) the loss
    assert evaluate_stream(model, short, short.size, stride=1, batch_size=1)["loss"] == pytest.approx(
        got1["loss"], rel=1e-6
    )
    assert evaluate_stream(model, short, short.size, stride=T)["loss"] != pytest.approx(got1["loss"], rel=1e-9)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(2, 200), t=st.integers(1, 20), data=st.data())
def test_window_plan_scores_every_target_once_with_enough_context(n, t, data):
    from cllm.evaluate import window_plan

    stride = data.draw(st.integers(1, t))
    plan = window_plan(n, t, stride)
    width = min(t, n - 1)
    scored = []
    for start, skip in plan:
        assert 0 <= start and start + width + 1 <= n
        first = max(skip, 0)
        assert first < width
        for j in range(first, width):
            scored.append(start + j + 1)
            # a scored target sees at least t - stride tokens of context, or everything before it
            assert j >= min(start + j, t - stride) or start == 0
    assert scored == list(range(1, n))


def test_text_file_directory_and_stdin_agree(run, capsys, tmp_path):
    text = "the cat sat on the mat. the dog ran far away!\nbirds sang of the moon and the sun.\n"
    (tmp_path / "one.txt").write_text(text)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text(text)
    (tmp_path / "d" / "b.md").write_text("a small old dog sat.\n")
    code, out, _ = cli(capsys, run["run"], tmp_path / "one.txt", "--json")
    from_file = json.loads(out)
    code2, out2, _ = cli(capsys, run["run"], "--text", text, "--json")
    assert code == code2 == 0
    from_text = json.loads(out2)
    for key in ("loss", "tokens", "bytes", "bits_per_byte"):
        assert from_file[key] == pytest.approx(from_text[key])
    _, out3, _ = cli(capsys, run["run"], tmp_path / "d", "--json", "--stride", "4")
    from_dir = json.loads(out3)
    assert from_dir["documents"] == 2 and from_dir["stride"] == 4
    assert from_dir["tokens"] == len(text) + len("a small old dog sat.\n")
    # stdin through a real process, with the human-readable report
    proc = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "evaluate", str(run["run"]), "-"],
        input=text,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{from_text['loss']:.4f} nats/token" in proc.stdout
    assert "perplexity" in proc.stdout and "bits/byte" in proc.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["{run}", "{missing}"], "no such file"),
        (["{run}"], "give the text"),
        (["{run}", "{val}", "--text", "abc"], "give the text"),
        (["{run}", "--text", "  "], "at least 2"),
        (["{run}", "--text", "the cat", "--stride", "0"], "--stride"),
        (["{run}", "--text", "the cat", "--stride", str(T + 1)], "--stride"),
        (["{run}", "--text", "the cat", "--batch-size", "0"], "--batch-size"),
        (["{missing}", "--text", "the cat"], "no checkpoint"),
        (["{run}", "--text", "the cat", "--bogus", "1"], "unknown flag --bogus"),
    ],
)
def test_user_errors_are_one_line(run, capsys, tmp_path, args, needle):
    subst = {"run": run["run"], "missing": tmp_path / "nope", "val": run["val_text"]}
    code, out, err = cli(capsys, *[a.format(**subst) for a in args])
    assert code == 2
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and needle in errors[0], err
