"""No run is ever overwritten by a plain command: `train` into a directory that holds a run refuses
(saying what is there and how to continue it); `--overwrite` replaces it whole, leaving nothing of
the old run mixed with the new one; `prepare --out` and `import-llmc` refuse foreign or used
directories; the Makefile's demo can run twice."""
import os
import re
import shlex

from train_helpers import (
    ROOT,
    TINY_FLAGS,
    all_threads_after,  # noqa: F401  (autouse)
    assert_clean_error,
    prepared_dataset,
    read_metrics,
    run_cli,
    tiny_config,
    write_corpus,
)


def _snapshot(run) -> dict:
    """Every file of a run directory (links as their targets) -> its bytes."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(run):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, run)
            if os.path.islink(path):
                out[rel] = "->" + os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as f:
                    out[rel] = f.read()
    return out


def _first_run(tmp_path_factory, run):
    from cllm.training import train

    data = prepared_dataset(tmp_path_factory)
    train(tiny_config(data, run, max_steps=12, checkpoint_interval=4, keep_last=5, eval_interval=6))
    return data


def test_train_into_a_run_refuses_and_changes_nothing(tmp_path, tmp_path_factory):
    run = tmp_path / "run"
    data = _first_run(tmp_path_factory, run)
    before = _snapshot(run)
    best = min(r["val_loss"] for r in read_metrics(run) if "val_loss" in r)
    r = run_cli("train", data, *TINY_FLAGS, "--max-steps", "3", "--checkpoint-dir", run, "--no-progress")
    assert_clean_error(r, "already holds a run at step 12", f"{best:.4f}", "--resume latest", "--overwrite")
    assert _snapshot(run) == before


def test_overwrite_replaces_the_whole_run(tmp_path, tmp_path_factory):
    run = tmp_path / "run"
    data = _first_run(tmp_path_factory, run)
    (run / "notes.txt").write_text("mine")  # not part of the run: stays
    r = run_cli("train", data, *TINY_FLAGS, "--max-steps", "6", "--checkpoint-interval", "2", "--keep-last", "2",
                "--eval-interval", "3", "--checkpoint-dir", run, "--no-progress", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert "--overwrite: deleting a run at step 12" in r.stderr
    steps = sorted(d for d in os.listdir(run) if d.startswith("step_"))
    # the old step_000008 and step_000012 would have taken the keep-last slots and pruned the new ones
    assert steps == ["step_000004", "step_000006"], steps
    assert os.readlink(run / "latest") == "step_000006"
    assert [rec["step"] for rec in read_metrics(run) if "train_loss" in rec] == list(range(1, 7))
    assert (run / "notes.txt").read_text() == "mine"


def test_an_interrupted_run_without_checkpoints_is_also_kept(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "train_loss": 4.0}\n')
    corpus = write_corpus(tmp_path / "text")
    r = run_cli("train", corpus, *TINY_FLAGS, "--max-steps", "2", "--checkpoint-dir", run, "--no-progress")
    assert_clean_error(r, "unfinished run", "metrics.jsonl", "--overwrite")
    assert (run / "metrics.jsonl").read_text() == '{"step": 1, "train_loss": 4.0}\n'


def test_prepare_refuses_a_foreign_directory_and_reuses_its_own(tmp_path):
    corpus = write_corpus(tmp_path / "text")
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    r = run_cli("prepare", corpus, "--out", out, "--no-progress")
    assert_clean_error(r, "not a prepared dataset", "thesis.tex")
    assert sorted(os.listdir(out)) == ["thesis.tex"]
    fresh = tmp_path / "fresh"
    for _ in range(2):  # a dataset directory is rebuilt or reused in place
        r = run_cli("prepare", corpus, "--out", fresh, "--no-progress")
        assert r.returncode == 0, r.stderr
    assert "reused cached dataset" in r.stdout


def test_import_llmc_refuses_a_used_directory(tmp_path, tmp_path_factory):
    run = tmp_path / "run"
    _first_run(tmp_path_factory, run)
    model_file = tmp_path / "model.bin"
    assert run_cli("export-llmc", run, model_file).returncode == 0
    before = _snapshot(run)
    assert_clean_error(run_cli("import-llmc", model_file, run), "already holds a run at step 12")
    assert _snapshot(run) == before
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "metrics.jsonl").write_text("{}\n")
    assert_clean_error(run_cli("import-llmc", model_file, tmp_path / "partial"), "already holds an unfinished run")


def test_the_makefile_demo_runs_twice(tmp_path):
    """`make demo` replaces its own run explicitly: its train command, run twice into one directory
    (shrunk by flags appended after it: the last value of a flag wins)."""
    makefile = (ROOT / "Makefile").read_text()
    line = next(li for li in makefile.splitlines() if "cli.py train" in li)
    args = shlex.split(line.split("cli.py", 1)[1])
    assert "--overwrite" in args
    small = write_corpus(tmp_path / "text")
    for _ in range(2):
        r = run_cli(*args, small, *TINY_FLAGS, "--max-steps", "2", "--max-time", "60",
                    "--checkpoint-dir", tmp_path / "demo", "--no-progress")
        assert r.returncode == 0, r.stderr
    assert re.search(r"deleting a run at step 2", r.stderr)
