"""int8 generation (cllm/quantize.py, cllm/kernels/quant.py): the row quantizer against a NumPy
reference, the int8 matrix-vector product against NumPy on the dequantized weights, the int8 decode
against the float decode of the same rounded weights, greedy tokens on a trained model, and the
--quantize flag of generate, evaluate and serve."""
import numpy as np
import pytest
from train_helpers import all_threads_after, assert_clean_error, run_cli, trained_checkpoint  # noqa: F401

import cllm.kernels as K
from cllm.config import ModelConfig
from cllm.model import Model
from cllm.quantize import Int8Model, dequantize_in_place


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
    from cllm.completion import load_for_generation

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
    assert len(quant.stdout) > len("the ") and quant.stdout.startswith("the ")
    text = tmp_path / "eval.txt"
    text.write_text("the cat sat on the mat and the dog ran far away into the woods.\n" * 20)
    import json

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
    import threading

    from cllm.completion import load_for_generation
    from cllm.generation import Generator, SamplingConfig
    from cllm.serve import Engine
    from cllm.serve.engine import CompletionRequest

    run = str(trained_checkpoint(tmp_path_factory))
    engine = Engine.load(run, threads=1, quantize="int8")
    assert isinstance(engine.model, Int8Model)
    pieces = []
    engine._run(CompletionRequest(prompts=["the "], max_tokens=15, temperature=0.0, ignore_eos=True),
                threading.Event(), lambda kind, index, *rest: pieces.append(rest[0]) if kind == "delta" else None)
    model, tok, _ = load_for_generation(run, quantize="int8")
    ids = list(Generator(model).stream(tok.encode("the "), SamplingConfig(max_new_tokens=15, temperature=0,
                                                                          ignore_eos=True)))
    assert "".join(pieces) == tok.decode(ids)
