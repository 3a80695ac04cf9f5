"""Every command in the README's code blocks runs as written from a fresh clone.

Each `cli.py` line of a code block (lines joined at trailing backslashes) must parse with the command
parser and name only files a clone has (or that an earlier README command creates). Then the
README's commands run in order in a scratch directory that holds a clone's data/: short ones as
written; a long training run (a few minutes as written) with `--max-steps 3` appended, so that the
commands after it find the checkpoint it makes; servers, crawls of outside sites, MPI and benchmarks
only parse."""
import importlib
import os
import re
import shlex
import subprocess
import sys

import pytest
from train_helpers import ROOT

from cllm.commands import UsageError, parse_command_line

sys.path.insert(0, str(ROOT))
from cllm import cli  # noqa: E402

PARSE_ONLY = {"serve", "scrape"}  # a server runs until stopped; a crawl needs the site it names


def readme_commands() -> list[list[str]]:
    """The words of every command line inside the README's fenced code blocks."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #")[0].strip()
            if "python" in line or line.startswith(("make", "mpirun")):  # a command, not a listing
                commands.append(shlex.split(line))
    return commands


def cli_words(words: list[str]) -> list[str] | None:
    """The words after `cli.py` (None for a line that does not run cli.py)."""
    for i, w in enumerate(words):
        if w.endswith("cli.py") and i > 0 and words[i - 1].endswith(("python", "python3")):
            return words[i + 1:]
    return None


def _parse(args: list[str]):
    name = args[0]
    module = importlib.import_module("cllm.commands." + cli.COMMANDS[name])
    return parse_command_line(module, name, args[1:])


def test_the_readme_has_commands_and_no_paths_outside_the_clone():
    commands = readme_commands()
    assert sum(cli_words(c) is not None for c in commands) >= 5
    for words in commands:
        assert not any(w.startswith("../") for w in words), words  # a fresh clone has nothing beside it


@pytest.mark.parametrize("words", [c for c in readme_commands() if cli_words(c) is not None], ids=" ".join)
def test_every_readme_command_parses(words):
    args = cli_words(words)
    assert args[0] in cli.COMMANDS, words
    if "--help" in args:
        return
    try:
        _parse(args)
    except UsageError as exc:
        pytest.fail(f"{' '.join(words)}: {exc}")


def _input_paths(args: list[str]) -> list[str]:
    """Arguments that name files of the clone (data/..., *.txt, *.png ...), as opposed to outputs."""
    return [a for a in args if re.match(r"^(data|docs|tests|bench)/", a)]


def test_readme_commands_run_in_order(tmp_path):
    """The README's commands as a new user runs them, top to bottom, in a clone-like directory."""
    work = tmp_path / "clone"
    work.mkdir()
    for name in ("data", "docs", "cli.py"):
        if (ROOT / name).exists():
            os.symlink(ROOT / name, work / name)
    ran = 0
    for words in readme_commands():
        args = cli_words(words)
        if args is None or args[0] in PARSE_ONLY or words[0] == "mpirun":
            continue
        for path in _input_paths(args):
            assert (work / path).exists(), f"{' '.join(words)}: {path} is not in the clone"
        if args[0] == "train":  # minutes as written: 3 steps (the last value of a flag wins)
            args = args + ["--max-steps", "3", "--eval-interval", "3", "--sample-interval", "1000000"]
        r = subprocess.run([sys.executable, str(ROOT / "cli.py"), *args, *(["--no-progress"] if args[0] in
                            ("train", "prepare", "evaluate") else [])], cwd=work, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, f"{' '.join(words)}:\n{r.stderr[-2000:]}"
        assert "Traceback" not in r.stderr
        ran += 1
    assert ran >= 3
