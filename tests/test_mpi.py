"""Data-parallel training under `mpiexec -n 2` (the [mpi] extra: mpi4py + MPICH from PyPI).

Equivalence: 2 ranks with batch B see the same global batches as 1 process with --grad-accum 2, so
their losses and final weights must agree to float32 rounding of the reduction order.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parents[1]
CLI = str(ROOT / "cli.py")

try:
    import mpi4py  # noqa: F401

    MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
except ImportError:
    MPIEXEC = None

needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason="MPI is not installed: pip install -e '.[mpi]' (make test does)")

FLAGS = [
    "--embed-dim",
    "32",
    "--num-layers",
    "2",
    "--num-heads",
    "2",
    "--seq-len",
    "32",
    "--batch-size",
    "4",
    "--eval-interval",
    "4",
    "--sample-interval",
    "1000",
    "--no-progress",
    "--learning-rate",
    "3e-3",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("mpi")
    text = (ROOT / "data" / "tinyshakespeare.txt").read_text()[:60000]
    (d / "small.txt").write_text(text)
    return d


def _train(cmd, cwd, timeout=240):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def _losses(ckdir):
    rows = [json.loads(line) for line in open(ckdir / "metrics.jsonl")]
    return [r["train_loss"] for r in rows if "train_loss" in r]


def _trained_steps(ckdir):
    try:
        return len(_losses(ckdir))
    except (OSError, ValueError):
        return 0


def _weights(ckdir):
    return load_file(str(ckdir / "latest" / "model.safetensors"))


@needs_mpi
def test_two_ranks_equal_one_process_with_grad_accum(corpus):
    # with dropout: each rank draws the masks of its global micro-batch, those --grad-accum 2 draws
    one = _train(
        [
            sys.executable,
            CLI,
            "train",
            "small.txt",
            *FLAGS,
            "--grad-accum",
            "2",
            "--max-steps",
            "6",
            "--dropout",
            "0.1",
            "--checkpoint-dir",
            "ck_one",
        ],
        corpus,
    )
    assert one.returncode == 0, one.stderr
    two = _train(
        [
            MPIEXEC,
            "-n",
            "2",
            sys.executable,
            CLI,
            "train",
            "small.txt",
            *FLAGS,
            "--max-steps",
            "6",
            "--dropout",
            "0.1",
            "--checkpoint-dir",
            "ck_two",
        ],
        corpus,
    )
    assert two.returncode == 0, two.stderr
    a, b = _losses(corpus / "ck_one"), _losses(corpus / "ck_two")
    assert len(a) == len(b) == 6
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=0)
    wa, wb = _weights(corpus / "ck_one"), _weights(corpus / "ck_two")
    for name in wa:
        np.testing.assert_allclose(wa[name], wb[name], rtol=0, atol=1e-5, err_msg=name)
    # the weights moved: the comparison above is not between two untrained models
    assert max(np.abs(wa[n]).max() for n in ("lnfb",)) > 0
    # only rank 0 writes: one metrics line per step, and the checkpoint records the world size
    state = json.loads((corpus / "ck_two" / "latest" / "state.json").read_text())
    assert state["world_size"] == 2


@needs_mpi
def test_resume_with_another_world_size_says_so(corpus):
    first = _train(
        [
            MPIEXEC,
            "-n",
            "2",
            sys.executable,
            CLI,
            "train",
            "small.txt",
            *FLAGS,
            "--max-steps",
            "3",
            "--checkpoint-dir",
            "ck_ws",
        ],
        corpus,
    )
    assert first.returncode == 0, first.stderr
    again = _train(
        [sys.executable, CLI, "train", "--resume", "latest", "--max-steps", "5", "--checkpoint-dir", "ck_ws"], corpus
    )
    assert again.returncode == 0, again.stderr
    assert "written by 2 process(es) and resumes on 1" in again.stderr
    assert _losses(corpus / "ck_ws")[-1] > 0 and len(_losses(corpus / "ck_ws")) == 5


@needs_mpi
def test_a_dead_rank_ends_the_others(corpus):
    proc = subprocess.Popen(
        [
            MPIEXEC,
            "-n",
            "2",
            sys.executable,
            CLI,
            "train",
            "small.txt",
            *FLAGS,
            "--max-steps",
            "100000",
            "--checkpoint-dir",
            "ck_dead",
        ],
        cwd=corpus,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # wait until both ranks are training, then kill rank 1 without warning
        deadline = time.time() + 120
        victim = None
        while time.time() < deadline and victim is None:
            time.sleep(0.5)
            for child in psutil.Process(proc.pid).children(recursive=True):
                try:
                    env = child.environ()
                except (psutil.Error, OSError):
                    continue
                if env.get("PMI_RANK") == "1" and _trained_steps(corpus / "ck_dead") >= 1:
                    victim = child
        assert victim is not None, "rank 1 never started training"
        time.sleep(1.0)
        victim.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=60)  # the survivors must not hang in Allreduce
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    assert len(_losses(corpus / "ck_dead")) >= 1


def test_mpirun_without_mpi4py_is_a_clear_error(tmp_path):
    # an MPI launcher's variables without mpi4py importable: one clear message, exit 2
    code = (
        "import sys; sys.modules['mpi4py'] = None; sys.argv = ['cli.py', 'train', '--max-steps', '1'];"
        f"sys.path.insert(0, {str(ROOT)!r}); from cllm.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    env = dict(os.environ, PMI_SIZE="2", PMI_RANK="0")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "mpi4py is not installed" in r.stderr and "Traceback" not in r.stderr
