"""Training and using a llama model through the commands: the architecture flags, exact resume, --init-from,
the time budget, grad-accum against MPI ranks, generate (samplers, beam, stream, int8), evaluate, serve,
dropout, and one clear error for what llama cannot do (export-llmc)."""
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
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
from cllm.completion import load_for_generation
from cllm.errors import ConfigError
from cllm.generation import Generator, SamplingConfig
from cllm.optim import AdamW
from cllm.training import build_config, train

# a llama with every option off its default: 2 query heads over 1 kv head, an untied LM head, q/k/v biases
LLAMA = {"arch": "llama", "num_kv_heads": 1, "ffn_dim": 24, "rope_theta": 500000.0, "norm_eps": 1e-6,
         "tie_embeddings": False, "attention_bias": True}
LLAMA_FLAGS = ["--arch", "llama", "--num-kv-heads", "1", "--ffn-dim", "24", "--rope-theta", "500000",
               "--norm-eps", "1e-6", "--no-tie-embeddings", "--attention-bias"]
TINY_FLAGS = ["--embed-dim", "16", "--num-layers", "2", "--num-heads", "2", "--seq-len", "16", "--batch-size", "4",
              "--threads", "1"]


@pytest.fixture
def dataset(tmp_path_factory):
    return _prepared(tmp_path_factory)


def llama_config(data, run, **kw):
    return tiny_config(data, run, **{"num_layers": 2, **LLAMA, **kw})


def test_resume_after_interrupt_is_bit_identical(tmp_path, dataset, monkeypatch):
    full = tmp_path / "full"
    train(llama_config(dataset, full, max_steps=8, eval_interval=4, dropout=0.1))  # masks redrawn on resume
    reference = train_losses(full)
    saved = json.loads((full / "latest" / "config.json").read_text())["model"]
    assert {k: saved[k] for k in LLAMA} == LLAMA and saved["num_heads"] == 2
    part = tmp_path / "part"
    calls = {"n": 0}
    original = AdamW.step

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(AdamW, "step", interrupted)
        first = train(llama_config(dataset, part, max_steps=8, eval_interval=4, dropout=0.1))
    assert first["interrupted"] and first["steps"] < 8
    # the resumed run is given no architecture flag: it takes the checkpoint's
    again = build_config({"resume": "latest", "checkpoint_dir": str(part), "max_steps": 8})
    train(again)
    assert train_losses(part) == reference
    for name, tensor in ck.load_checkpoint(str(full / "latest")).params.items():
        np.testing.assert_array_equal(tensor, ck.load_checkpoint(str(part / "latest")).params[name], err_msg=name)


def test_resume_and_init_from_keep_the_checkpoints_architecture(tmp_path, dataset):
    run = tmp_path / "run"
    train(llama_config(dataset, run, max_steps=2))
    with pytest.raises(ConfigError, match="cannot resume: the checkpoint has arch llama but --arch gpt2"):
        train(tiny_config(dataset, run, max_steps=4, num_layers=2, resume="latest", arch="gpt2"))
    with pytest.raises(ConfigError, match="has num-kv-heads 1 but --num-kv-heads 2"):
        train(tiny_config(dataset, tmp_path / "tuned", max_steps=2, num_layers=2, init_from=str(run / "latest"),
                          num_kv_heads=2))
    tuned = tmp_path / "tuned2"
    train(tiny_config(dataset, tuned, max_steps=2, num_layers=2, init_from=str(run / "latest")))
    model = ck.load_checkpoint(str(tuned / "latest")).model_config
    assert (model.arch, model.num_kv_heads, model.tie_embeddings, model.attention_bias) == ("llama", 1, False, True)


def test_what_llama_cannot_do_is_refused_before_the_data_is_read(tmp_path):
    missing = tmp_path / "no-such-data"  # never read: each refusal comes first
    for overrides, needle in ((dict(num_kv_heads=3), "multiple of num_kv_heads"),
                              (dict(num_heads=16), "must be even")):
        with pytest.raises(ConfigError, match=needle):
            train(llama_config(missing, tmp_path / "run", **overrides))
    with pytest.raises(ConfigError, match="use --arch llama"):
        train(tiny_config(missing, tmp_path / "run", num_kv_heads=1))


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """A llama trained through `cli.py train` with every architecture flag, within a time budget."""
    base = tmp_path_factory.mktemp("llama_cli")
    corpus = write_corpus(base)
    run = base / "run"
    r = run_cli("train", corpus, *TINY_FLAGS, *LLAMA_FLAGS, "--max-steps", "150", "--learning-rate", "1e-2",
                "--warmup-steps", "5", "--no-progress", "--checkpoint-dir", run, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "llama" in r.stderr + r.stdout
    return corpus, run


def test_generate_every_sampler_beam_stream_and_int8(cli_run):
    _, run = cli_run
    model, tok, _ = load_for_generation(str(run))
    assert model.config.arch == "llama" and model.config.num_kv_heads == 1
    ids = tok.encode("the cat ")
    greedy = tok.decode(list(Generator(model, eos_id=tok.eos_id).stream(
        ids, SamplingConfig(max_new_tokens=40, temperature=0))))
    r = run_cli("generate", "the cat ", "--checkpoint", run, "--temperature", "0", "--max-new-tokens", "40")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "the cat " + greedy + "\n" and len(set(greedy)) > 3  # 40 > 16: the context slid
    for flags in (["--top-k", "5", "--temperature", "0.9"], ["--top-p", "0.8", "--repeat-penalty", "1.3"],
                  ["--stream"], ["--beam-width", "3", "--num-samples", "2"], ["--quantize", "int8"]):
        r = run_cli("generate", "the cat ", "--checkpoint", run, "--max-new-tokens", "20", "--seed", "3", *flags)
        assert r.returncode == 0 and "the cat " in r.stdout, (flags, r.stderr)
        assert "--- beam 2" in r.stdout if "--beam-width" in flags else r.stdout.startswith("the cat ")
    same = run_cli("generate", "the cat ", "--checkpoint", run, "--max-new-tokens", "20", "--seed", "3",
                   "--top-k", "5", "--temperature", "0.9")
    again = run_cli("generate", "the cat ", "--checkpoint", run, "--max-new-tokens", "20", "--seed", "3",
                    "--top-k", "5", "--temperature", "0.9")
    assert same.stdout == again.stdout


def test_evaluate_float_and_int8(cli_run):
    corpus, run = cli_run
    losses = {}
    for flags in ([], ["--quantize", "int8"]):
        r = run_cli("evaluate", "--checkpoint", run, "--text", corpus.read_text()[:3000], *flags)
        assert r.returncode == 0, r.stderr
        losses[bool(flags)] = float(r.stdout.split("loss")[1].split()[0].strip(":= "))
    assert 0 < losses[False] < 3 and abs(losses[True] - losses[False]) < 0.05


def test_export_llmc_refuses_llama(cli_run, tmp_path):
    _, run = cli_run
    assert_clean_error(run_cli("export-llmc", run / "latest", tmp_path / "m.bin"), "llama", "gpt2")
    assert not (tmp_path / "m.bin").exists()


def test_cli_refusals_are_one_line(tmp_path):
    corpus = write_corpus(tmp_path)
    assert_clean_error(run_cli("train", corpus, *TINY_FLAGS, "--arch", "llama", "--num-kv-heads", "3",
                               "--checkpoint-dir", tmp_path / "b"), "num_kv_heads")
    assert_clean_error(run_cli("train", corpus, *TINY_FLAGS, "--arch", "mamba", "--checkpoint-dir", tmp_path / "c"),
                       "unknown architecture")


def test_a_time_budget_alone_sets_the_run(tmp_path, dataset):
    run = tmp_path / "run"
    summary = train(llama_config(dataset, run, max_steps=None, max_time=4.0, eval_interval=None,
                                 checkpoint_interval=None))
    assert summary["steps"] > 0 and not summary["interrupted"]
    assert ck.load_checkpoint(str(run / "latest")).model_config.arch == "llama"


async def test_serve_completes_and_streams(cli_run, aiohttp_client):
    from cllm.serve import Engine, ServerSettings, create_app

    _, run = cli_run
    engine = Engine.load(str(run))
    client = await aiohttp_client(create_app(engine, ServerSettings()))
    r = await client.post("/v1/completions", json={"prompt": "the cat", "max_tokens": 12, "temperature": 0})
    body = await r.json()
    assert r.status == 200, body
    text = body["choices"][0]["text"]
    assert len(text) == 12
    r = await client.post("/v1/completions", json={"prompt": "the cat", "max_tokens": 12, "temperature": 0,
                                                   "stream": True})
    assert r.status == 200
    chunks = [json.loads(line[6:]) for line in (await r.text()).splitlines()
              if line.startswith("data: {")]
    assert "".join(c["choices"][0]["text"] for c in chunks) == text


MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
try:
    import mpi4py  # noqa: F401
except ImportError:
    MPIEXEC = None


@pytest.mark.skipif(MPIEXEC is None, reason="MPI is not installed: pip install -e '.[mpi]' (make test does)")
def test_two_ranks_equal_one_process_with_grad_accum(tmp_path):
    corpus = write_corpus(tmp_path)
    flags = [*TINY_FLAGS[:-2], *LLAMA_FLAGS, "--max-steps", "5", "--no-progress", "--eval-interval", "5"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")

    def run(*launcher, extra=(), ckdir):
        r = subprocess.run([*launcher, sys.executable, str(ROOT / "cli.py"), "train", str(corpus), *flags, *extra,
                            "--checkpoint-dir", ckdir], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                           env=env)
        assert r.returncode == 0, r.stderr
        return train_losses(tmp_path / ckdir), ck.load_checkpoint(str(tmp_path / ckdir / "latest")).params

    one_losses, one = run(extra=("--grad-accum", "2"), ckdir="one")
    two_losses, two = run(MPIEXEC, "-n", "2", ckdir="two")
    assert sorted(one_losses) == sorted(two_losses) == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([one_losses[s] for s in one_losses], [two_losses[s] for s in one_losses], rtol=1e-5)
    for name in one:
        np.testing.assert_allclose(one[name], two[name], rtol=0, atol=1e-5, err_msg=name)
    assert np.abs(one["lm_head"]).max() > 0 and np.abs(one["qkvb"]).max() > 0
