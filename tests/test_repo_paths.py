"""Every repository path named in the code's comments and strings and in the documents exists (a
comment that cites cllm/foo.py or docs/design.md must lead a reader somewhere)."""
import re
import subprocess

from train_helpers import ROOT

TOP = ("cllm", "tests", "bench", "docs", "data")
PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./-]*[\w/])" % "|".join(TOP))
GENERATED = ("__pycache__", "data/.cache", ".venv")  # made at run time, never in a clone
# paths in trafilatura's repository, whose evaluation set bench/fetch_extraction_sets.py fetches and
# bench/extraction.py reads (docs/design.md cites them): not ours
EXTERNAL = {"tests/eval", "tests/eval/", "tests/cache", "tests/cache/", "tests/evaldata.json", "tests/evaluate.py",
            "tests/eval_common.py"}


def _tracked_text_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    return [f for f in out if f.endswith((".py", ".md", ".toml", ".js", ".html")) or f in ("Makefile", ".ci/run")]


def _cited_paths(text: str) -> set[str]:
    found = set()
    for m in PATH.finditer(text):
        path = m.group(1).rstrip(".")
        if any(g in path for g in GENERATED) or path in EXTERNAL:
            continue
        found.add(path)
    return found


def test_every_cited_repository_path_exists():
    missing = []
    for rel in _tracked_text_files():
        if rel == "tests/test_repo_paths.py":
            continue  # its own examples
        text = (ROOT / rel).read_text(encoding="utf-8", errors="replace")
        for path in sorted(_cited_paths(text)):
            module = path.rsplit(".", 1)[0] + ".py"  # cllm/kernels/blas.gemm: a name in cllm/kernels/blas.py
            if not (ROOT / path).exists() and not (ROOT / module).exists():
                missing.append(f"{rel}: {path}")
    assert not missing, "\n".join(missing)


def test_design_document_is_cited_by_its_path():
    """`design.md` alone (the old shared picture, not in the repository) is never cited."""
    bare = []
    for rel in _tracked_text_files():
        for n, line in enumerate((ROOT / rel).read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if re.search(r"(?<![\w/])design\.md", line) and rel != "tests/test_repo_paths.py":
                bare.append(f"{rel}:{n}: {line.strip()}")
    assert not bare, "\n".join(bare)


def test_the_path_finder_finds_paths():
    found = _cited_paths("see cllm/model.py, and cllm/kernels/_common.py.")
    assert found == {"cllm/model.py", "cllm/kernels/_common.py"}
    assert _cited_paths("a/cllm/x.py or xcllm/y.py") == set()
