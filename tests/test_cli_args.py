"""The one command-line parser (cllm/commands/__init__.py), walked over every command cli.py knows:
text arrives as the exact string typed, --help shows every parameter with its real default, and a
warning reaches the user as one plain line."""
import importlib
import inspect
import re
import subprocess
import sys

import pytest
from train_helpers import CLI, ROOT, run_cli

from cllm.commands import (
    _base_type,
    action_parsers,
    command_function,
    command_parameters,
    flag_name,
    nearest,
    parse_command_line,
)

sys.path.insert(0, str(ROOT))
from cllm import cli  # noqa: E402

# what a user may type as text, each of which a Python-literal parser would turn into something else
TEXTS = ["1984", "Hello, world", "True", "None", "[1, 2]", "{'a': 1}", "-", "3.5", " padded "]


def _commands():
    """(command, action or "", function, OPTIONS dataclass or None) for every command and sub-action."""
    out = []
    for name, module_name in sorted(cli.COMMANDS.items()):
        module = importlib.import_module("cllm.commands." + module_name)
        actions = getattr(module, "ACTIONS", None) or {"": command_function(module, name)}
        for action, func in actions.items():
            out.append((name, action, func, getattr(module, "OPTIONS", None), module))
    return out


COMMANDS = _commands()


def _text_parameters():
    cases = []
    for name, action, func, options, module in COMMANDS:
        for pname, kind, annotation, _, _ in command_parameters(func, options):
            if _base_type(annotation, pname)[0] is str:
                cases.append(pytest.param(name, action, module, func, options, pname,
                                          id=f"{name}{' ' + action if action else ''}:{pname}"))
    return cases


def _argv_with(func, options, pname: str, value: str) -> tuple[list[str], object]:
    """A command line giving `value` to parameter `pname` (the others required filled with "x"), and
    where the value must arrive: ("arg", index) or ("kw", name)."""
    params = command_parameters(func, options)
    positional = any(name == pname and kind in ("positional", "varargs") for name, kind, *_ in params)
    argv, where = [], None
    for name, kind, annotation, default, _ in params:
        if kind == "positional":
            if name == pname:
                where = ("arg", len(argv))
                argv.append(value)
            elif default is inspect.Parameter.empty or (positional and where is None):
                argv.append("x")  # required, or an optional one before the positional under test
        elif kind == "varargs" and name == pname:
            where = ("arg", len(argv))
            argv.append(value)
    for name, kind, annotation, _, _ in params:
        if name == pname and kind in ("flag", "option"):
            argv += [flag_name(name), value]
            where = ("kw", name)
    return argv, where


def test_every_command_is_walked():
    names = {c[0] for c in COMMANDS}
    assert {"train", "generate", "prepare", "scrape", "tokenizer", "evaluate", "serve"} <= names
    assert len(_text_parameters()) >= 20  # prompt, stop, checkpoint, tokenizer, sample_prompt, ...


@pytest.mark.parametrize("name, action, module, func, options, pname", _text_parameters())
def test_text_arrives_exactly_as_typed(name, action, module, func, options, pname):
    for value in TEXTS:
        argv, where = _argv_with(func, options, pname, value)
        got_func, args, kwargs = parse_command_line(module, name, ([action] if action else []) + argv)
        assert got_func is func
        got = args[where[1]] if where[0] == "arg" else kwargs[where[1]]
        if isinstance(got, list):  # a repeatable flag: the list of the values given
            assert len(got) == 1
            got = got[0]
        assert got == value and type(got) is str, (name, action, pname, value, got)


def test_hello_world_is_encoded_as_one_text(tmp_path):
    from cllm.tokenizers import train_tokenizer

    tok = train_tokenizer("char", "Hello, world! 1984 True None [1, 2] {'a': 1} -", progress=False)
    path = tmp_path / "tok.json"
    tok.save(str(path))
    for text in ("Hello, world", "1984", "[1, 2]"):
        r = run_cli("tokenizer", "encode", path, text)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [str(i) for i in tok.encode(text)]


def _help_blocks(text: str) -> dict[str, str]:
    """{"--flag" or "NAME": the help text that follows it} from argparse's --help output."""
    blocks, current = {}, None
    for line in text.splitlines():
        m = re.match(r"^  (--[a-z0-9-]+|[A-Z_]+)\b(.*)$", line)
        if m:
            current = m.group(1)
            blocks[current] = m.group(2)
        elif current and line.startswith("      "):
            blocks[current] += " " + line.strip()
        else:
            current = None
    return {k: " ".join(v.split()) for k, v in blocks.items()}


def _shown(default) -> str:
    if default is None or default == () or default == []:
        return "none"
    if isinstance(default, bool):
        return "on" if default else "off"
    return str(default).strip() or "'"


# how a help line states a default: the parser's "(default: X)", or the line's own "(none: ...)",
# "(default: ...)" or "... by default"
DEFAULT_STATED = re.compile(r"\((?:default|none): |\bby default\b")


def _help_of(name: str, action: str = "") -> str:
    r = subprocess.run([sys.executable, CLI, name, *([action] if action else []), "--help"], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 0 and not r.stderr, r.stderr
    return r.stdout


@pytest.mark.parametrize("name, action, func, options", [pytest.param(c[0], c[1], c[2], c[3],
                         id=f"{c[0]} {c[1]}".strip()) for c in COMMANDS])
def test_help_lists_every_parameter_with_its_default(name, action, func, options):
    help_text = _help_of(name, action)
    blocks = _help_blocks(help_text)
    for pname, kind, annotation, default, doc in command_parameters(func, options):
        key = pname.upper() if kind in ("positional", "varargs") else flag_name(pname)
        assert key in blocks, (key, help_text)
        text = blocks[key]
        assert doc and doc.split()[0] in text, (key, text)  # the one-line meaning
        if kind == "varargs" or default is inspect.Parameter.empty:
            continue
        if default is None and DEFAULT_STATED.search(doc):
            continue  # the help line itself says what leaving it out means
        assert f"default: {_shown(default)}" in text, (key, text)
    # no short flag besides -h, so none can collide with it
    assert not re.findall(r"(?<![\w-])-[a-gi-zA-Z]\b", help_text.split("\n\n")[0])


@pytest.mark.parametrize("name, action", [pytest.param(c[0], c[1], id=f"{c[0]} {c[1]}".strip()) for c in COMMANDS]
                         + [pytest.param("tokenizer", "", id="tokenizer (actions)")])
def test_help_shows_each_default_once(name, action):
    """Every argument's help, as --help prints it, states its default at most once (prepare's
    --vocab-size said "(default: word 8192, ...) (default: none)"; --epochs "(none: 1, ...) (default: 1.0)")."""
    blocks = _help_blocks(_help_of(name, action))
    assert blocks
    twice = {key: text for key, text in blocks.items() if len(DEFAULT_STATED.findall(text)) > 1}
    assert not twice, twice


def test_a_command_with_actions_lists_them_and_refuses_a_missing_one():
    r = run_cli("tokenizer", "--help")
    assert r.returncode == 0
    module = importlib.import_module("cllm.commands.tokenizer")
    assert all(action in r.stdout for action in module.ACTIONS)
    r = run_cli("tokenizer")
    assert r.returncode == 2 and r.stderr.startswith("error: tokenizer needs an action")


def test_serve_dash_h_is_help_not_a_host():
    r = run_cli("serve", "-h")
    assert r.returncode == 0 and "--host" in r.stdout and "usage: cli.py serve" in r.stdout


def test_bad_values_and_flags_are_one_clear_error():
    """One line: what is wrong, the nearest flag or action, and which --help to read; no usage block."""
    for args, msg, see in (
            (["generate", "hi", "--max-new-tokens", "many"], "expected an integer, got 'many'", "generate"),
            (["generate", "hi", "--temprature", "0"], "unknown flag --temprature (did you mean --temperature?)",
             "generate"),
            (["train", "--embed-dims", "16"], "unknown flag --embed-dims (did you mean --embed-dim?)", "train"),
            (["train", "--seq", "16"], "unknown flag --seq (did you mean --seq-len?)", "train"),  # no abbreviations
            (["train", "--lr", "0.1"], "unknown flag --lr (did you mean --learning-rate?)", "train"),
            (["train", "--lr=0.1"], "unknown flag --lr (did you mean --learning-rate?)", "train"),
            (["train", "--max-stpes", "3"], "unknown flag --max-stpes (did you mean --max-steps?)", "train"),
            (["train", "--learning-rate", "fast"], "expected a number, got 'fast'", "train"),
            (["train", "--frobnicate"], "unknown flag --frobnicate;", "train"),
            (["scrape"], "missing START_URL, OUT_DIR", "scrape"),
            (["scrape", "http://x", "out", "5", "--max-pages", "7"], "MAX_PAGES given twice", "scrape"),
            (["tokenizer", "trian", "x"], "unknown tokenizer action 'trian' (did you mean train?)", "tokenizer"),
            (["tokenizer", "exprot-hf"], "unknown tokenizer action 'exprot-hf' (did you mean export-hf?)",
             "tokenizer"),
            (["tokenizer", "train", "x", "--vocab", "9"], "unknown flag --vocab (did you mean --vocab-size?)",
             "tokenizer train")):
        r = run_cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith("error: ") and msg in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.splitlines()) == 1 and "usage" not in r.stderr, r.stderr
        assert r.stderr.rstrip().endswith(f"see 'cli.py {see} --help'"), r.stderr


def test_nearest_flag():
    flags = ["--learning-rate", "--min-lr", "--seq-len", "--seed", "--sample-interval", "--sample-prompt",
             "--max-new-tokens", "--temperature", "--max-steps"]
    assert nearest("--lr", flags) == ["--learning-rate"]  # initials; not --min-lr
    assert nearest("--seq", flags) == ["--seq-len"]
    assert nearest("--max-new", flags) == ["--max-new-tokens"]
    assert nearest("--learning_rate", flags) == ["--learning-rate"]
    assert nearest("--temp", flags) == ["--temperature"]
    assert set(nearest("--sample", flags)) == {"--sample-interval", "--sample-prompt"}
    assert nearest("--tempreture", flags) == ["--temperature"]  # no abbreviation: difflib's closest
    assert nearest("--xyz", flags) == []


def test_every_flag_maps_to_a_field_of_the_same_name():
    """train's flags are TrainConfig's fields, name for name (cllm/training/config.py is their one home)."""
    import dataclasses

    from cllm.training import TrainConfig

    parser = action_parsers(importlib.import_module("cllm.commands.train"), "train")[""]
    flags = {a.dest for a in parser._actions if a.option_strings and a.dest != "help" and not a.dest.startswith("_")}
    assert flags | {"data"} == {f.name for f in dataclasses.fields(TrainConfig)}  # DATA: also positional


def test_a_warning_is_one_plain_line(tmp_path):
    from cllm.tokenizers import train_tokenizer

    path = tmp_path / "tok.json"
    train_tokenizer("char", "abc abc", progress=False).save(str(path))
    r = run_cli("tokenizer", "encode", path, "ab\u2603c")
    assert r.returncode == 0
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: char tokenizer: dropping 1 character"), r.stderr
    assert ".py" not in r.stderr and "Warning" not in r.stderr


def test_a_flag_left_out_is_not_passed_as_given():
    """train sees only the flags typed (a resumed run tells them from defaults): a boolean left out
    must not arrive as True or False."""
    module = importlib.import_module("cllm.commands.train")
    _, args, kwargs = parse_command_line(module, "train", ["--max-steps", "3"])
    assert kwargs == {"max_steps": 3} and args == [None]
    for argv, value in ((["--overwrite"], True), (["--no-overwrite"], False), (["--nooverwrite"], False)):
        assert parse_command_line(module, "train", argv)[2] == {"overwrite": value}
