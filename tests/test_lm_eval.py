"""lm-evaluation-harness against `cli.py serve`: its local-completions model (which finds the server's /tokenizer_info
and /tokenize, so sends token-id prompts with echo and logprobs) scores a multiple-choice task written here, and its
acc and acc_norm equal `cli.py evaluate --task` on the same questions.

Needs the evalharness extra (pip install -e '.[evalharness]'); `make test` has no lm-eval and skips this, saying so;
`make test-interop` installs it and sets CLLM_INTEROP_REQUIRED=1, where a missing lm-eval fails.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys

import pytest
from serve_helpers import T, corpus_text, tiny_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(ROOT, "cli.py")

try:
    import lm_eval
    from lm_eval.models.openai_completions import LocalCompletionsAPI
    from lm_eval.tasks import TaskManager
except ImportError as exc:
    lm_eval = None
    MISSING = f"{exc.name} is not installed: make test-interop (pip install -e '.[evalharness]')"
    if os.environ.get("CLLM_INTEROP_REQUIRED"):  # make test-interop: a missing harness is a failure, not a skip
        raise

pytestmark = pytest.mark.skipif(lm_eval is None, reason=MISSING if lm_eval is None else "")


def questions(n: int) -> list[dict]:
    """n questions from the tiny run's corpus: two words, then the third (gold) or two other words, short enough
    that context + choice fits the tiny model's context (T tokens, one character each), so nobody truncates."""
    rng = random.Random(7)
    words = sorted({w.strip(".!?;") for line in corpus_text(150).splitlines() for w in line.split()})
    out = []
    for line in corpus_text(150).splitlines():
        w = [x.strip(".!?;") for x in line.split()]
        context, gold_word = " ".join(w[:2]), w[2]
        choices = [gold_word, *rng.sample([x for x in words if x != gold_word], 2)]
        if len(context) + 1 + max(map(len, choices)) > T:
            continue
        rng.shuffle(choices)
        out.append({"context": context, "choices": choices, "gold": choices.index(gold_word)})
        if len(out) == n:
            break
    return out


TASK_YAML = """task: cllm_next_word
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
target_delimiter: " "
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def test_lm_eval_local_completions_equals_cli_evaluate(tmp_path_factory, tmp_path, monkeypatch):
    run = tiny_run(tmp_path_factory)["run"]
    task_file = tmp_path / "questions.jsonl"
    task_file.write_text("".join(json.dumps(q) + "\n" for q in questions(12)), encoding="utf-8")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "cllm_next_word.yaml").write_text(TASK_YAML.format(data=task_file), encoding="utf-8")

    r = subprocess.run([sys.executable, CLI, "evaluate", str(run), "--task", str(task_file), "--json",
                        "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    expected = json.loads(r.stdout)

    for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):  # the task's data is a local file
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    proc = subprocess.Popen([sys.executable, CLI, "serve", "--checkpoint", str(run), "--port", "0"], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        m = re.search(r"on (http://127\.0\.0\.1:\d+/)", line)
        assert m, line
        # max_length: the harness keeps max_length - 1 tokens of context + continuation, the model's whole
        # context here (none of these questions is longer)
        lm = LocalCompletionsAPI(model="cllm", base_url=m.group(1) + "v1/completions", tokenizer_backend="auto",
                                 max_length=T + 1, num_concurrent=1, max_retries=1)
        assert lm.tokenizer_backend == "remote"  # found /tokenizer_info and /tokenize: token-id prompts
        results = lm_eval.simple_evaluate(model=lm, tasks=["cllm_next_word"],
                                          task_manager=TaskManager(include_path=str(tasks)), batch_size=1)
    finally:
        proc.terminate()
        proc.wait(10)
    got = results["results"]["cllm_next_word"]
    assert got["acc,none"] == pytest.approx(expected["acc"], abs=1e-12)
    assert got["acc_norm,none"] == pytest.approx(expected["acc_norm"], abs=1e-12)
    assert expected["questions"] == 12 and 0 < expected["acc"] < 1  # a real comparison: neither all nor none right
