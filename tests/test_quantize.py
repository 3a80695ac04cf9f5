"""int8 generation (cllm/quantize.py, cllm/kernels/quant.py): the row quantizer against a NumPy
reference, the int8 matrix-vector product against NumPy on the dequantized weights, the int8 decode
against the float decode of the same rounded weights, greedy tokens on a trained model, generation
past the context (generate, the server's engine) against the float model of the rounded weights,
float and int8 models decoding in one process (fresh processes, cold and warm Numba cache), and the
--quantize flag of generate, evaluate and serve."""
import json
import math
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from train_helpers import (
    ROOT,
    all_threads_after,  # noqa: F401  (a fixture: one thread by the tiny runs, then all)
    assert_clean_error,
    corpus_text,
    run_cli,
    trained_checkpoint,
)

import cllm.kernels as K
from cllm.checkpoint import save_checkpoint
from cllm.completion import load_for_generation
from cllm.config import ModelConfig
from cllm.generation import Generator, SamplingConfig
from cllm.kernels.matmul import PARALLEL_MATVEC_MIN
from cllm.model import Model
from cllm.quantize import Int8Model, dequantize_in_place
from cllm.serve import Engine
from cllm.serve.engine import CompletionRequest
from cllm.tokenizers import train_tokenizer


def numpy_int8_rows(w: np.ndarray):
    """Reference int8 of a (rows, cols) matrix: per row, scale absmax/127 and weights rounded to the
    nearest multiple of it. Returns (q (rows, cols) int, scales (rows,))."""
    d = (np.abs(w.astype(np.float64)).max(axis=1) / 127.0).astype(np.float32)
    safe = np.where(d > 0, d.astype(np.float64), 1.0)
    q = np.where(d[:, None] > 0, np.rint(w.astype(np.float64) / safe[:, None]), 0).astype(np.int64)
    return q, d


@pytest.mark.parametrize("rows, cols", [(5, 64), (7, 70), (3, 16)])
def test_quantizer_matches_numpy_and_bounds_the_error(rows, cols):
    rng = np.random.default_rng(rows * cols)
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    w[1, 3] = 9.0  # an outlier sets its row's grid
    w[2, :] = 0.0  # an all-zero row: scale 0, no division by zero
    q, scales = K.quantize_int8_rows(w.ravel(), rows, cols)
    q_ref, s_ref = numpy_int8_rows(w)
    np.testing.assert_array_equal(scales, s_ref)
    np.testing.assert_array_equal(q.reshape(rows, cols).astype(np.int64), q_ref)
    assert np.abs(q).max() <= 127 and scales[1] == pytest.approx(9.0 / 127) and scales[2] == 0
    deq = np.empty(rows * cols, dtype=np.float32)
    K.dequantize_int8_rows(deq, q, scales, rows, cols)
    assert np.all(np.abs(deq.reshape(rows, cols) - w) <= s_ref[:, None] / 2 * (1 + 1e-5))


@pytest.mark.parametrize("nb, C, OC", [(1, 64, 48), (3, 70, 33), (2, 1024, 1024)])  # the last: the threaded path
def test_int8_matvec_equals_numpy_on_the_dequantized_weights(nb, C, OC):
    rng = np.random.default_rng(C + OC)
    w = rng.standard_normal((OC, C)).astype(np.float32) * 0.05
    x = rng.standard_normal((nb, C)).astype(np.float32)
    bias = rng.standard_normal(OC).astype(np.float32)
    q, scales = K.quantize_int8_rows(w.ravel(), OC, C)
    q_ref, s_ref = numpy_int8_rows(w)
    w_deq = q_ref * s_ref.astype(np.float64)[:, None]
    want = x.astype(np.float64) @ w_deq.T + bias
    for b in (bias, None):
        out = np.empty(nb * OC, dtype=np.float32)
        K.matvec_int8_forward(out, x.ravel(), q, scales, b, nb, C, OC)
        expected = want if b is not None else want - bias
        np.testing.assert_allclose(out.reshape(nb, OC), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def _models(seed=3, C=64):
    cfg = ModelConfig(vocab_size=67, max_seq_len=48, num_layers=2, num_heads=4, embed_dim=C)
    float_model = Model(cfg, seed=seed)
    rounded = Model(cfg, seed=seed)
    dequantize_in_place(rounded)
    return float_model, rounded, Int8Model(float_model)


def test_int8_decode_equals_the_float_decode_of_the_rounded_weights():
    float_model, rounded, int8 = _models()
    assert np.abs(rounded.params - float_model.params).max() > 0  # the rounding changed the weights
    seqs = np.random.default_rng(0).integers(0, 67, (2, 40)).astype(np.int32)
    c_int8, c_rounded = int8.new_kv_cache(2), rounded.new_kv_cache(2)
    full = rounded.forward(seqs).copy()  # (2, 40, V): the training forward over the rounded weights
    for pos in range(40):
        got = int8.decode_step(seqs[:, pos], pos, c_int8)
        np.testing.assert_allclose(got, rounded.decode_step(seqs[:, pos], pos, c_rounded), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got, full[:, pos], rtol=1e-4, atol=1e-4)
    # a prompt in one call (the dequantize-then-gemm path from 8 rows on) equals the steps
    cache = int8.new_kv_cache(1)
    np.testing.assert_allclose(int8.prefill(seqs[0], 0, cache), got[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cache, c_int8[:cache.size], rtol=1e-4, atol=1e-5)


def test_int8_model_holds_about_a_quarter_of_the_bytes():
    float_model, _, int8 = _models(C=128)
    ratio = int8.memory_bytes() / float_model.params.nbytes
    assert 0.25 < ratio < 0.3, ratio  # 1/4 for the matrices (and a scale a row), 1 for the few float tensors


def test_greedy_int8_tokens_follow_the_float_ones_on_a_trained_model(tmp_path_factory):
    """200 greedy tokens from a trained model (the tiny one). They must equal the float model's;
    should the two part at a near tie, the float logits' gap between its top two at that step must
    be under twice the int8 model's logit error there."""
    run = trained_checkpoint(tmp_path_factory)
    float_model, tok, _ = load_for_generation(str(run))
    int8, _, _ = load_for_generation(str(run), quantize="int8")
    assert isinstance(int8, Int8Model)
    n = min(200, float_model.config.max_seq_len)
    tokens = {"float": [tok.encode("the ")[0]], "int8": [tok.encode("the ")[0]]}
    caches = {"float": float_model.new_kv_cache(1), "int8": int8.new_kv_cache(1)}
    for pos in range(n - 1):
        logits = {name: m.decode_step(tokens[name][-1], pos, caches[name])[0]
                  for name, m in (("float", float_model), ("int8", int8))}
        for name in tokens:
            tokens[name].append(int(np.argmax(logits[name])))
        if tokens["float"][-1] != tokens["int8"][-1]:
            top2 = np.sort(logits["float"])[-2:]
            gap, err = top2[1] - top2[0], np.abs(logits["float"] - logits["int8"]).max()
            assert gap < 2 * err, f"parted at token {pos + 1} with a logit gap of {gap:.4g} (int8 error {err:.4g})"
            return
    assert tokens["float"] == tokens["int8"]


def test_cli_generate_evaluate_quantize(tmp_path_factory, tmp_path):
    run = trained_checkpoint(tmp_path_factory)
    plain = run_cli("generate", "the ", "--checkpoint", run, "--temperature", "0", "--max-new-tokens", "20",
                    "--ignore-eos")
    quant = run_cli("generate", "the ", "--checkpoint", run, "--temperature", "0", "--max-new-tokens", "20",
                    "--ignore-eos", "--quantize", "int8")
    assert plain.returncode == 0 and quant.returncode == 0, quant.stderr
    # the continuation itself: the int8 model's 20 greedy tokens (20 of them cross the context of 16)
    model, tok, _ = load_for_generation(str(run), quantize="int8")
    ids = list(Generator(model).stream(tok.encode("the "), _greedy(20)))
    assert len(ids) == 20 and quant.stdout == "the " + tok.decode(ids) + "\n"
    text = tmp_path / "eval.txt"
    text.write_text("the cat sat on the mat and the dog ran far away into the woods.\n" * 20)
    losses = {}
    for q in ([], ["--quantize", "int8"]):
        r = run_cli("evaluate", run, text, "--json", "--no-progress", *q)
        assert r.returncode == 0, r.stderr
        losses[bool(q)] = json.loads(r.stdout)["loss"]
    assert losses[True] != losses[False]  # the int8 weights were scored, not the float ones
    assert abs(losses[True] - losses[False]) < 0.05, losses
    assert_clean_error(run_cli("generate", "x", "--checkpoint", run, "--quantize", "int4"), "--quantize", "int8")
    assert_clean_error(run_cli("evaluate", run, text, "--quantize", "int8", "--device", "cuda"), "--quantize")


def test_serve_engine_loads_and_answers_with_int8_weights(tmp_path_factory):
    """The server's engine (cli.py serve --quantize int8) decodes from the int8 model: greedy text
    equal to the int8 Generator's."""
    run = str(trained_checkpoint(tmp_path_factory))
    engine = Engine.load(run, threads=1, quantize="int8")
    assert isinstance(engine.model, Int8Model)
    model, tok, _ = load_for_generation(run, quantize="int8")
    ids = list(Generator(model).stream(tok.encode("the "), _greedy(15)))
    assert _engine_text(engine, "the ", 15) == tok.decode(ids)


def _greedy(n: int) -> SamplingConfig:
    return SamplingConfig(max_new_tokens=n, temperature=0, ignore_eos=True)


def _engine_text(engine: Engine, prompt: str, n: int) -> str:
    """The text of n greedy tokens after `prompt` from the server's engine."""
    pieces = []
    engine._run(CompletionRequest(prompts=[prompt], max_tokens=n, temperature=0.0, ignore_eos=True),
                threading.Event(), lambda kind, index, *rest: pieces.append(rest[0]) if kind == "delta" else None)
    return "".join(pieces)


# A model whose int8 MLP products take the threaded path (4C x C >= PARALLEL_MATVEC_MIN weights, with
# more than one thread: cllm/kernels/quant.py) and whose context of 16 the generation below passes
# several times (each pass re-prefills 8 tokens: the dequantize-then-gemm path, cllm/kernels/decode.py).
WIDE = dict(max_seq_len=16, num_layers=1, num_heads=8, embed_dim=8 * math.ceil(math.sqrt(PARALLEL_MATVEC_MIN / 4) / 8))


@pytest.fixture(scope="module")
def int8_and_rounded(tmp_path_factory):
    """(a checkpoint, its twin holding the float values its int8 weights stand for): greedy decoding
    must give the same tokens from the first with --quantize int8 as from the second in float32."""
    tok = train_tokenizer("char", corpus_text(), progress=False)
    model = Model(ModelConfig(vocab_size=tok.vocab_size, **WIDE), seed=None)
    rng = np.random.default_rng(11)
    for name in ("wte", "wpe", "qkvw", "attprojw", "fcw", "fcprojw"):
        # five times GPT-2's init: with 0.02 an untrained model's greedy text repeats one token
        model.p[name][:] = rng.normal(0.0, 0.1, model.p[name].size)
    model.p["ln1w"][:] = model.p["ln2w"][:] = model.p["lnfw"][:] = 1
    base = tmp_path_factory.mktemp("int8_twins")
    source = save_checkpoint(str(base), "source", model, tokenizer=tok)
    dequantize_in_place(model)
    return source, save_checkpoint(str(base), "rounded", model, tokenizer=tok)


def test_int8_generation_past_the_context_equals_the_float_of_the_rounded_weights(int8_and_rounded):
    source, rounded = int8_and_rounded
    int8, tok, _ = load_for_generation(source, quantize="int8")
    floats, _, _ = load_for_generation(rounded)
    assert isinstance(int8, Int8Model) and int8.config.max_seq_len == 16
    prompt = tok.encode("the cat")
    got = list(Generator(int8).stream(prompt, _greedy(60)))
    assert len(got) == 60 and got == list(Generator(floats).stream(prompt, _greedy(60)))
    assert len(set(got)) > 10  # not one token repeated: the comparison can tell models apart


def test_cli_generate_and_serve_int8_past_the_context(int8_and_rounded):
    """`generate --quantize int8` and the server's engine past the context: the float text of the rounded weights."""
    source, rounded = int8_and_rounded
    args = ("generate", "the cat", "--temperature", "0", "--max-new-tokens", "60", "--ignore-eos")
    quant = run_cli(*args, "--checkpoint", source, "--quantize", "int8")
    plain = run_cli(*args, "--checkpoint", rounded)
    assert quant.returncode == 0, quant.stderr
    assert plain.returncode == 0, plain.stderr
    assert quant.stdout == plain.stdout and len(quant.stdout) > len("the cat") + 30
    served = _engine_text(Engine.load(source, threads=1, quantize="int8"), "the cat", 60)
    assert served == _engine_text(Engine.load(rounded, threads=1), "the cat", 60)
    assert quant.stdout == "the cat" + served + "\n"


# Loads a float32 model and its int8 version in one process and decodes with each in turn, in the
# order argv[1] gives ("fi" or "if"), three rounds; prints the tokens and the decoding kernels that
# Numba compiled for an Optional argument (the cause of the random "expected array(float32, 1d, C),
# got None" of the int8 product, cllm/kernels/decode.py _linear; found only where this process
# compiled them: kernels loaded from the cache list no signatures).
BOTH_MODELS = """
import json, sys
import numpy as np
from numba import types
import cllm.kernels.decode, cllm.kernels.quant
from cllm.config import ModelConfig
from cllm.model import Model
from cllm.quantize import Int8Model
cfg = ModelConfig(vocab_size=67, **json.loads(sys.argv[2]))
runs = {"f": [], "i": []}
for _ in range(3):
    for kind in sys.argv[1]:
        model = Model(cfg, seed=1)
        model = Int8Model(model) if kind == "i" else model
        cache = model.new_kv_cache(1)
        tokens = [int(np.argmax(model.prefill(np.arange(1, 9, dtype=np.int32), 0, cache)))]
        for pos in range(8, cfg.max_seq_len - 1):
            tokens.append(int(np.argmax(model.decode_step(tokens[-1], pos, cache)[0])))
        runs[kind].append(tokens)
optional = sorted(f"{module.__name__}.{name}" for module in (cllm.kernels.decode, cllm.kernels.quant)
                  for name, f in vars(module).items() if hasattr(f, "signatures")
                  for sig in f.signatures if any(isinstance(t, types.Optional) for t in sig))
print(json.dumps({"runs": runs, "optional": optional}))
"""


def test_float_and_int8_decode_in_one_process_in_fresh_processes(tmp_path):
    """Float32 and int8 models decode in one process, in either order, any number of times: seven fresh
    processes, the first compiling every kernel (an empty Numba cache), the others loading them."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_CACHE_DIR": str(tmp_path / "numba"),
           "NUMBA_NUM_THREADS": "2"}  # the threaded int8 product, on any machine
    shape = json.dumps({**WIDE, "max_seq_len": 40})
    outputs = []
    for order in ("fi", "if", "fi", "if", "fi", "if", "fi"):
        r = subprocess.run([sys.executable, "-c", BOTH_MODELS, order, shape], capture_output=True, text=True,
                           cwd=ROOT, env=env, timeout=600)
        assert r.returncode == 0, f"process {len(outputs) + 1} ({order}) failed:\n{r.stderr[-3000:]}"
        outputs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    assert outputs[0]["optional"] == []  # the cold process compiled no kernel for an Optional argument
    first = outputs[0]["runs"]
    for out in outputs:  # every round of every process gives the same tokens
        for kind in "fi":
            assert out["runs"][kind] == [first[kind][0]] * 3

