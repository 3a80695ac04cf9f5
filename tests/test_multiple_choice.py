"""`cli.py evaluate CKPT --task FILE` (cllm/multiple_choice.py): lm-evaluation-harness's multiple-choice scoring.
Log-likelihoods against one full forward per choice with a log-softmax written here, acc_norm's rule on chosen
values, a trained model that prefers real words to reversed ones, and the errors."""
import json

import numpy as np
import pytest
from train_helpers import (
    all_threads_after,  # noqa: F401  (autouse)
    assert_clean_error,
    run_cli,
    trained_checkpoint,
)

import cllm.multiple_choice as mc
from cllm.completion import load_for_generation
from cllm.errors import DataError

WORDS = "cat dog mat woods birds night moon star light green small blue".split()


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    run = trained_checkpoint(tmp_path_factory)
    model, tok, _ = load_for_generation(str(run))
    return run, model, tok


def reference_loglikelihood(model, tok, context, choice):
    """Sum of log p(continuation token | everything before it), one forward over context + continuation."""
    cont_text = " " + choice
    if context.endswith(" "):  # the harness moves the context's trailing space into the continuation
        context, cont_text = context[:-1], " " + choice
    whole = tok.encode(context + cont_text)
    n_ctx = len(tok.encode(context))
    seq = whole[-(model.config.max_seq_len + 1):]
    n_cont = min(len(whole) - n_ctx, len(seq) - 1)  # a continuation longer than the context: its last tokens
    logits = np.array(model.forward(np.array([seq[:-1]], dtype=np.int32))[0], dtype=np.float64)
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return sum(logp[j - 1, seq[j]] for j in range(len(seq) - n_cont, len(seq)))


@pytest.mark.parametrize("context", ["the cat sat on the", "big red sun ", "the dog ran far away into the woods and"])
def test_loglikelihoods_equal_a_forward_per_choice(loaded, context):
    _, model, tok = loaded
    choices = ["mat", "moon.", "night sang of birds"]
    got = mc.choice_loglikelihoods(model, tok, context, choices)
    want = [reference_loglikelihood(model, tok, context, c) for c in choices]
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_the_continuation_is_split_as_the_harness_splits_it(loaded):
    _, _, tok = loaded
    ctx, cont = mc.encode_pair(tok, "the cat", "sat")
    assert tok.decode(ctx) == "the cat" and tok.decode(cont) == " sat"
    ctx, cont = mc.encode_pair(tok, "the cat ", "sat")  # the trailing space moves, and is not doubled
    assert tok.decode(ctx) == "the cat" and tok.decode(cont) == " sat"


def test_acc_norm_divides_by_the_choices_length(loaded, monkeypatch):
    _, model, tok = loaded
    values = {("q1",): [-3.0, -8.0], ("q2",): [-5.0, -4.0, -4.0]}
    monkeypatch.setattr(mc, "choice_loglikelihoods", lambda m, t, context, choices: values[(context,)])
    questions = [{"context": "q1", "choices": ["a", "bbbbbbbb"], "gold": 1},  # acc picks 0; -8/8 > -3/1: norm 1
                 {"context": "q2", "choices": ["aaaa", "bb", "cc"], "gold": 1}]  # tie -4, -4: the lower index, 1
    out = mc.evaluate_task(model, tok, questions)
    assert out["acc"] == 0.5 and out["acc_norm"] == 0.5  # q1: acc wrong, norm right; q2: acc right, norm wrong
    assert [d["prediction"] for d in out["details"]] == [0, 1]
    assert [d["prediction_norm"] for d in out["details"]] == [1, 0]
    assert out["acc_stderr"] == pytest.approx(np.sqrt(0.25 / 1))


def test_the_command_scores_a_trained_model_above_chance(loaded, tmp_path):
    run, _, _ = loaded
    rng = np.random.default_rng(0)
    task = tmp_path / "words.jsonl"
    with open(task, "w") as f:
        for i in range(16):
            word = WORDS[i % len(WORDS)]
            gold = int(rng.integers(2))
            choices = [word[::-1], word] if gold else [word, word[::-1]]
            f.write(json.dumps({"context": "the big old", "choices": choices, "gold": gold}) + "\n")
    r = run_cli("evaluate", run, "--task", task, "--json", "--no-progress")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["questions"] == 16 and out["acc"] >= 0.75, out["acc"]
    assert 0 <= out["acc_norm"] <= 1 and len(out["details"]) == 16
    r = run_cli("evaluate", run, "--task", task, "--no-progress")
    assert "acc " in r.stdout and "acc_norm" in r.stdout


@pytest.mark.parametrize("line, needle", [
    ("not json", "not JSON"),
    ('{"context": "a", "choices": ["x"], "gold": 0}', "at least two"),
    ('{"context": "a", "choices": ["x", "y"], "gold": 2}', "gold"),
    ('{"context": 3, "choices": ["x", "y"], "gold": 0}', "context"),
    ('[1, 2]', "object"),
])
def test_bad_task_files_name_their_line(tmp_path, line, needle):
    task = tmp_path / "t.jsonl"
    task.write_text('{"context": "a", "choices": ["x", "y"], "gold": 0}\n' + line + "\n")
    with pytest.raises(DataError, match=needle) as err:
        mc.read_task(str(task))
    assert ":2:" in str(err.value)


def test_command_errors_are_one_clear_line(loaded, tmp_path):
    run, _, _ = loaded
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert_clean_error(run_cli("evaluate", run, "--task", empty), "no question")
    assert_clean_error(run_cli("evaluate", run, "--task", tmp_path / "missing.jsonl"), "no such task file")
    assert_clean_error(run_cli("evaluate", run, "some.txt", "--task", empty), "--task")
