"""Every command in the user documents (README.md and docs/*.md) works as written from a fresh clone.

A document's commands are the lines of its shell code blocks (``` fences without a language; lines
joined at trailing backslashes) that run a program: `python`, `pip`, `make` or `mpirun`. Each
`cli.py` command must parse with the command parser and name only files a clone has (or that an
earlier command of the same document creates). Then each document's `cli.py` commands run in order
in a scratch directory of their own that holds a clone's data/: short ones as written; a training
run (minutes as written) with `--max-steps 3` and a small validation split appended, so that the
commands after it find the checkpoint it makes. The commands that only parse are listed in
PARSE_ONLY_* below, each with the reason. ```python blocks must compile. And the documents stay
documents: the README short, and no commit hashes, issue numbers or dates in any of them."""
import importlib
import os
import re
import shlex
import subprocess
import sys
import tomllib

import pytest
from train_helpers import ROOT

from cllm import cli
from cllm.commands import UsageError, parse_command_line

DOCUMENTS = ["README.md"] + sorted("docs/" + p.name for p in (ROOT / "docs").glob("*.md"))

# cli.py commands that only parse, and why:
PARSE_ONLY_COMMANDS = {
    "serve": "a server runs until stopped (tests/test_serve.py starts and queries one)",
    "scrape": "a crawl needs the outside site it names (tests/test_crawl_cli.py crawls a local one)",
    "chat": "a conversation reads the terminal until /exit (tests/test_chat_cli.py pipes sessions into it)",
}
# whole programs that only parse, and why:
PARSE_ONLY_PROGRAMS = {
    "mpirun": "needs MPI and several processes (tests/test_mpi.py runs them)",
    "bench": "benchmarks take minutes, and their PyTorch side needs torch: the script must exist and take the flags",
    "make": "sets up a virtual environment: the target must exist in the Makefile",
    "pip": "installs packages: the extra must exist in pyproject.toml",
}
# a training run as written takes minutes: this many steps instead (the last value of a flag wins), and
# a validation split of 1% (its one validation over 10% of tiny Shakespeare took two thirds of a short
# run: 28 s against 10 s for the 30-minute recipe's model on a loaded machine); a resumed run needs steps
# beyond the 3 its first run made
SHORT_TRAINING = ["--max-steps", "3", "--eval-interval", "3", "--sample-interval", "1000000", "--val-fraction", "0.01"]
SHORT_RESUME = ["--max-steps", "6", "--eval-interval", "3", "--sample-interval", "1000000", "--val-fraction", "0.01"]

ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")


def code_blocks(name: str) -> list[tuple[str, str]]:
    """(language, text) of every fenced code block of document `name`, in order."""
    blocks, lang, lines = [], None, []
    for line in (ROOT / name).read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            if lang is None:  # an opening fence: ``` or ```python
                lang, lines = line[3:].strip(), []
            else:
                blocks.append((lang, "\n".join(lines) + "\n"))
                lang = None
        elif lang is not None:
            lines.append(line)
    assert lang is None, f"{name}: a code block is never closed"
    return blocks


def document_commands(name: str) -> list[list[str]]:
    """The words of every command line inside the shell code blocks of document `name`."""
    commands = []
    for lang, block in code_blocks(name):
        if lang:
            continue  # ```python: code, not commands
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #")[0].strip()
            program = next((w for w in line.split() if not ENV_ASSIGNMENT.match(w)), "")
            if os.path.basename(program) in ("python", "python3", "pip", "make", "mpirun"):
                commands.append(shlex.split(line))  # only now: prose in a listing may hold a lone quote
    return commands


def python_blocks(name: str) -> list[str]:
    return [block for lang, block in code_blocks(name) if lang == "python"]


def cli_words(words: list[str]) -> list[str] | None:
    """The words after `cli.py` (None for a line that does not run cli.py)."""
    for i, w in enumerate(words):
        if w.endswith("cli.py") and i > 0 and words[i - 1].endswith(("python", "python3")):
            return words[i + 1:]
    return None


def bench_words(words: list[str]) -> list[str] | None:
    """The script and its arguments of a `python bench/<name>.py ...` line (None for another line)."""
    for i, w in enumerate(words):
        if w.startswith("bench/") and w.endswith(".py") and i > 0 and words[i - 1].endswith(("python", "python3")):
            return words[i:]
    return None


def _parse(args: list[str]):
    name = args[0]
    module = importlib.import_module("cllm.commands." + cli.COMMANDS[name])
    return parse_command_line(module, name, args[1:])


ALL_COMMANDS = [(doc, words) for doc in DOCUMENTS for words in document_commands(doc)]


def _id(item) -> str:
    doc, words = item
    return doc + ": " + " ".join(words)


def test_the_documents_have_commands_and_no_paths_outside_the_clone():
    assert sum(cli_words(c) is not None for c in document_commands("README.md")) >= 2
    for name in ("docs/training.md", "docs/interop.md", "docs/images.md", "docs/serving.md"):
        assert sum(cli_words(c) is not None for c in document_commands(name)) >= 3, name
    for doc, words in ALL_COMMANDS:
        assert not any(w.startswith("../") for w in words), (doc, words)  # a fresh clone has nothing beside it


COMMAND_LINE = re.compile(r"^([A-Z_][A-Z0-9_]*=\S*\s+)*(\S*/)?(python3?|pip|make|mpirun)\s")


def test_no_command_line_is_missed():
    """Every line of a document that starts like a command is one of its parsed commands (a ```python
    fence taken for a shell one, or a fence left open, would hide the commands after it)."""
    for doc in DOCUMENTS:
        lines = [ln for ln in (ROOT / doc).read_text(encoding="utf-8").splitlines() if COMMAND_LINE.match(ln)]
        assert len(lines) == len(document_commands(doc)), doc


def test_every_command_is_a_command_this_repository_has():
    """Each program line is a cli.py command, a bench script, or one of the parse-only programs."""
    for doc, words in ALL_COMMANDS:
        program = os.path.basename(next(w for w in words if not ENV_ASSIGNMENT.match(w)))
        if program.startswith("python"):
            assert cli_words(words) is not None or bench_words(words) is not None, (doc, words)
        else:
            assert program in PARSE_ONLY_PROGRAMS, (doc, words)


def test_the_commands_table_lists_every_command():
    """The README's table has one line per command of cllm/cli.py's COMMANDS."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([a-z-]+)[ `]", text, flags=re.M)
    assert sorted(rows) == sorted(cli.COMMANDS)


@pytest.mark.parametrize("item", [c for c in ALL_COMMANDS if cli_words(c[1]) is not None], ids=_id)
def test_every_cli_command_parses(item):
    doc, words = item
    args = cli_words(words)
    assert args[0] in cli.COMMANDS, (doc, words)
    if "--help" in args:
        return
    try:
        _parse(args)
    except UsageError as exc:
        pytest.fail(f"{doc}: {' '.join(words)}: {exc}")


def test_bench_make_and_pip_commands_name_what_exists():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    for doc, words in ALL_COMMANDS:
        bench = bench_words(words)
        program = os.path.basename(next(w for w in words if not ENV_ASSIGNMENT.match(w)))
        if bench is not None:
            source = (ROOT / bench[0]).read_text(encoding="utf-8")
            for flag in (w for w in bench[1:] if w.startswith("--")):
                assert f'"{flag}"' in source, f"{doc}: {bench[0]} takes no {flag}"
        elif program == "make":
            for target in words[1:]:
                assert re.search(rf"^{re.escape(target)}:", makefile, flags=re.M), f"{doc}: no make target {target}"
        elif program == "pip":
            for extra in re.findall(r"\.\[([\w,-]+)\]", " ".join(words)):
                for name in extra.split(","):
                    assert name in extras, f"{doc}: pyproject.toml has no extra {name!r}"


@pytest.mark.parametrize("doc", [d for d in DOCUMENTS if python_blocks(d)])
def test_python_blocks_compile(doc):
    """A ```python block needs a server or torch to run (serving.md, interop.md): it must at least compile."""
    for code in python_blocks(doc):
        compile(code, doc, "exec")


def _input_paths(args: list[str]) -> list[str]:
    """Arguments that name files of the clone (data/..., *.txt, *.png ...), as opposed to outputs."""
    return [a for a in args if re.match(r"^(data|docs|tests|bench)/", a)]


# bench scripts that a document's later commands need the output of, and that take seconds: they run too
RUN_BENCH = {("bench/chat_tasks.py", "make"): "writes the task conversations that docs/training.md's SFT trains on"}
# ...each with flags appended (argparse keeps the last) that shrink its output as SHORT_TRAINING shrinks a run: the
# document's 40,000 questions per task make an 8.6M-token dataset whose preparation alone took 25 s
SHORT_BENCH = {("bench/chat_tasks.py", "make"): ["--train", "200"]}


def _runnable(doc: str) -> list[list[str]]:
    out = []
    for words in document_commands(doc):
        bench = bench_words(words)
        if bench is not None and tuple(bench[:2]) in RUN_BENCH:
            out.append(bench + SHORT_BENCH.get(tuple(bench[:2]), []))  # the script's path first
            continue
        args = cli_words(words)
        if args is None or args[0] in PARSE_ONLY_COMMANDS or "mpirun" in words:
            continue
        out.append(args)
    return out


@pytest.mark.parametrize("doc", [d for d in DOCUMENTS if _runnable(d)])
def test_document_commands_run_in_order(doc, tmp_path):
    """A document's commands as a new user runs them, top to bottom, in a clone-like directory."""
    work = tmp_path / "clone"
    work.mkdir()
    for name in ("data", "docs", "cli.py"):
        os.symlink(ROOT / name, work / name)
    for args in _runnable(doc):
        if args[0].startswith("bench/"):
            r = subprocess.run([sys.executable, str(ROOT / args[0]), *args[1:]], cwd=work, capture_output=True,
                               text=True, timeout=300)
            assert r.returncode == 0, f"{doc}: {' '.join(args)}:\n{r.stderr[-2000:]}"
            continue
        shown = f"{doc}: cli.py {' '.join(args)}"
        for path in _input_paths(args):
            assert (work / path).exists(), f"{shown}: {path} is not in the clone"
        if args[0] == "train":
            args = args + (SHORT_RESUME if "--resume" in args else SHORT_TRAINING)
        if args[0] in ("train", "prepare", "evaluate"):
            args = args + ["--no-progress"]
        r = subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=work, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, f"{shown}:\n{r.stderr[-2000:]}"
        assert "Traceback" not in r.stderr, shown


def test_the_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 160, f"README.md has {len(lines)} lines; the rest belongs in docs/"


# a commit hash: 7 to 40 hex digits with at least one digit and one letter (so neither 20240326 nor
# "defaced" counts); an issue number; a date
COMMIT = re.compile(r"\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b")
ISSUE = re.compile(r"\bissues?\s*#|\bissues?\s+\d+\b", re.I)
DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
# "seed" is a random seed only: the original C program is not "the seed", the medium config not "seed config"
OLD_SEED = re.compile(r"\bseed config\b|\bthe seed's\b", re.I)


def diary_marks(text: str) -> list[str]:
    return [m.group(0) for pattern in (COMMIT, ISSUE, DATE, OLD_SEED) for m in pattern.finditer(text)]


def test_the_diary_finder_finds_diary_marks():
    old = "since 6425c5f the memory child failed (issue #18's note, 2026-11-30; the seed config, issue 20)"
    assert diary_marks(old) == ["6425c5f", "issue #", "issue 20", "2026-11-30", "seed config"]
    assert diary_marks("magic 20240326, a defaced page, --seed 1337, cl100k, 5e15 FLOPs") == []


@pytest.mark.parametrize("doc", DOCUMENTS)
def test_documents_have_no_hashes_issues_or_dates(doc):
    marks = diary_marks((ROOT / doc).read_text(encoding="utf-8"))
    assert not marks, f"{doc}: {marks}"
