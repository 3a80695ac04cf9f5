"""The CLI's commands, one module each, and the one parser that reads every command's flags.

A command is a function in cllm/commands/<module>.py (`main`, or several named in the module's
`COMMANDS` dict). Its signature is its command line:

    def main(prompt: str = "", *, checkpoint: str = "checkpoints", max_new_tokens: int = 200, ...):
        '''One-line summary.

        Args:
          prompt: the text to continue
          max_new_tokens: tokens to generate
        '''

- positional parameters are positional arguments, `*args` takes any number of them;
- keyword-only parameters are flags `--name-with-dashes` (a trailing underscore, for a Python
  keyword, is dropped: `class_` is `--class`); `bool` ones also have `--no-name`;
  `list[str]` ones may be repeated;
- the annotation is the type: `str` reaches the function as the exact text typed ("1984",
  "Hello, world" and "None" stay strings), `int`/`float` are parsed, anything else is refused;
- the default is the signature's, and `--help` shows it beside the `Args:` line; only a default
  of None ("decided later") may be explained by the line itself, as `(none: ...)` or `(default: ...)`,
  and then `--help` adds nothing: every flag's help states its default once;
- `**flags` takes the fields of the dataclass named by the module's `OPTIONS` (train takes
  TrainConfig's): each field is a flag with the field's default and its `help` metadata; only the
  flags the user typed reach the function (so a resumed run can tell them from defaults);
- a module with `ACTIONS` (a dict name -> function) is a command with sub-actions
  (`cli.py tokenizer train ...`), each action a signature as above.

`run_command` is the single place where user errors become one message and an exit code: a
command line that does not parse is one line naming the nearest flag (or action) and the command's
--help, exit code 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import re
import sys
import textwrap
import types
import typing
import warnings

from cllm.errors import CLLMError


class UsageError(Exception):
    """A command line that does not parse (unknown flag, missing argument, a value of the wrong type);
    `prog` is the command whose --help the message points to."""

    def __init__(self, message: str, prog: str = "cli.py"):
        super().__init__(message)
        self.prog = prog

    def line(self) -> str:
        """The one line the user sees (without the leading "error: ")."""
        return f"{self}; see '{self.prog} --help'"


def nearest(typed: str, choices, n: int = 3) -> list[str]:
    """What `typed` most likely meant: the choices it abbreviates (`--lr` for --learning-rate, `--seq`
    for --seq-len, `--max-new` for --max-new-tokens), up to n, nearest first; else difflib's closest
    choice (`--temprature` for --temperature); else none."""
    choices = list(dict.fromkeys(choices))
    word = typed.lstrip("-").replace("_", "-").lower()

    def similarity(choice):
        return difflib.SequenceMatcher(None, typed, choice).ratio()

    abbreviations = [c for c in choices if _abbreviates(word.replace("-", ""), c.lstrip("-").split("-"))]
    if abbreviations:
        return sorted(abbreviations, key=similarity, reverse=True)[:n]
    return difflib.get_close_matches(typed, choices, n=1, cutoff=0.6)


def _abbreviates(letters: str, words: list[str]) -> bool:
    """Whether `letters` is a prefix of the first word, then of the next, and so on: "lr" of
    learning-rate, "seq" of seq-len, "maxnew" of max-new-tokens."""
    if not letters:
        return True
    if not words:
        return False
    first = words[0]
    return any(letters.startswith(first[:k]) and _abbreviates(letters[k:], words[1:])
               for k in range(len(first), 0, -1))


def did_you_mean(typed: str, choices) -> str:
    """The message's ' (did you mean --a or --b?)' for the nearest choices; '' when none is near."""
    near = nearest(typed, choices)
    if not near:
        return ""
    return " (did you mean " + (near[0] if len(near) == 1 else ", ".join(near[:-1]) + " or " + near[-1]) + "?)"


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        """argparse's messages, reworded as one line each; never the usage block."""
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
            first = message[len(prefix):].split(" ")[0]
            if first.startswith("-"):
                flag = first.split("=")[0]
                message = f"unknown flag {flag}{did_you_mean(flag, self.flags())}"
            else:
                message = f"unexpected argument {first!r}"
        elif message.startswith("the following arguments are required: "):
            message = "missing " + message.split(": ", 1)[1]
        raise UsageError(message, self.prog)

    def flags(self) -> list[str]:
        """Every flag --help lists (python-fire's hidden --noflag spellings left out)."""
        return [s for a in self._actions if a.help != argparse.SUPPRESS for s in a.option_strings
                if s.startswith("--")]


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written (they hold examples), each flag on one line where it fits, and help
    lines never broken at a hyphen (flag names, URLs and defaults such as a user agent stay whole)."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=30, width=110)

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def _plain_warning(message, category, filename, lineno, file=None, line=None):
    """A warning reaches the user as one line, without Python's file path and source line."""
    (file or sys.stderr).write(f"warning: {message}\n")


def run_command(module, name: str, args: list[str]) -> int:
    """Parse `args` for command `name` of `module`, run it, and turn user errors into exit codes."""
    warnings.showwarning = _plain_warning
    try:
        func, call_args, kwargs = parse_command_line(module, name, args)
    except UsageError as exc:
        sys.stderr.write(f"error: {exc.line()}\n")
        return 2
    except SystemExit as exc:  # --help printed its text
        return int(exc.code or 0)
    try:
        result = func(*call_args, **kwargs)
    except CLLMError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    return int(result) if isinstance(result, int) and not isinstance(result, bool) else 0


def command_function(module, name: str):
    """The function behind command NAME of a module without ACTIONS."""
    return getattr(module, "COMMANDS", {}).get(name, getattr(module, "main", None))


def parse_command_line(module, name: str, args: list[str]):
    """(function, positional args, keyword args) for `cli.py NAME ARGS...`, without running anything.
    Positionals and flags may come in any order (`train --embed-dim 256 DATA`)."""
    actions = getattr(module, "ACTIONS", None)
    if actions is None:
        parser = _command_parser(f"cli.py {name}", command_function(module, name), getattr(module, "OPTIONS", None))
    else:
        if args and args[0] in ("-h", "--help"):
            build_parser(module, name).parse_args(["--help"])
        if not args:
            raise UsageError(f"{name} needs an action: {', '.join(actions)}", f"cli.py {name}")
        if args[0] not in actions:
            hint = did_you_mean(args[0], actions) or f" (the actions: {', '.join(actions)})"
            raise UsageError(f"unknown {name} action {args[0]!r}{hint}", f"cli.py {name}")
        parser = _command_parser(f"cli.py {name} {args[0]}", actions[args[0]], getattr(module, "OPTIONS", None))
        args = args[1:]
    ns = vars(parser.parse_intermixed_args(args))
    func = ns.pop("_func")
    try:
        return func, *_call_arguments(func, ns)
    except UsageError as exc:  # a positional given twice: point to this command's --help
        raise UsageError(str(exc), parser.prog) from None


def build_parser(module, name: str) -> argparse.ArgumentParser:
    """The parser whose --help describes command NAME (for a command with actions: the list of them)."""
    actions = getattr(module, "ACTIONS", None)
    if not actions:
        return _command_parser(f"cli.py {name}", command_function(module, name), getattr(module, "OPTIONS", None))
    parser = _Parser(prog=f"cli.py {name}", description=_summary(inspect.getdoc(module)), allow_abbrev=False,
                     formatter_class=_HelpFormatter)
    sub = parser.add_subparsers(title="actions (each has its own --help)", metavar="ACTION")
    for action, func in actions.items():
        sub.add_parser(action, help=_summary(inspect.getdoc(func)).split("\n")[0])
    return parser


def action_parsers(module, name: str) -> dict[str, argparse.ArgumentParser]:
    """{action: its parser} for a command with ACTIONS, {"": the parser} for one without."""
    options = getattr(module, "OPTIONS", None)
    actions = getattr(module, "ACTIONS", None)
    if not actions:
        return {"": _command_parser(f"cli.py {name}", command_function(module, name), options)}
    return {a: _command_parser(f"cli.py {name} {a}", f, options) for a, f in actions.items()}


def _command_parser(prog: str, func, options) -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description=_summary(inspect.getdoc(func)), allow_abbrev=False,
                     formatter_class=_HelpFormatter)
    _add_signature(parser, func, options)
    return parser


def command_parameters(func, options=None) -> list[tuple[str, str, object, object, str]]:
    """(name, kind, type, default, help) of every argument of a command: kind is "positional",
    "varargs", "flag" or "option" (a field of the OPTIONS dataclass). Tests walk this list."""
    hints = typing.get_type_hints(func)
    docs = _arg_docs(inspect.getdoc(func))
    out = []
    for p in inspect.signature(func).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            if options is None:
                raise TypeError(f"{func.__qualname__} takes **{p.name} but its module names no OPTIONS dataclass")
            out += _dataclass_parameters(options, exclude=set(inspect.signature(func).parameters))
            continue
        if p.name not in hints:
            raise TypeError(f"parameter {p.name!r} of {func.__qualname__} has no type annotation")
        kind = {p.VAR_POSITIONAL: "varargs", p.KEYWORD_ONLY: "flag"}.get(p.kind, "positional")
        out.append((p.name, kind, hints[p.name], p.default, docs.get(p.name, "")))
    return out


def _dataclass_parameters(cls, exclude: set[str]) -> list:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        if not f.metadata.get("help"):
            raise TypeError(f"{cls.__name__}.{f.name} has no help text: declare it as "
                            f"`{f.name}: type = option(default, \"one-line meaning\")` (cllm/config.py)")
        shown = f.metadata.get("shown", f.default)
        out.append((f.name, "option", hints[f.name], shown, f.metadata["help"]))
    return out


def _add_signature(parser: argparse.ArgumentParser, func, options) -> None:
    parser.set_defaults(_func=func)
    for name, kind, annotation, default, help_text in command_parameters(func, options):
        base, is_list = _base_type(annotation, f"{func.__qualname__}({name})")
        required = default is inspect.Parameter.empty
        text = help_text or name.replace("_", " ")
        if states_default(text):  # the help line says what leaving the flag out means
            if default is not None:
                raise TypeError(f"{func.__qualname__}({name}): the help line states a default, but the default is "
                                f"{default!r}; drop it from the line (--help shows {_show(default)!r} itself)")
        elif not (required or kind == "varargs"):
            text += f" (default: {_show(default)})"
        if kind in ("positional", "varargs"):
            nargs = "*" if kind == "varargs" else (None if required else "?")
            parser.add_argument(name, nargs=nargs, type=_converter(base), help=text, metavar=name.upper(),
                                **({} if required or kind == "varargs" else {"default": default}))
            if kind == "positional" and not required:  # `scrape URL DIR 50` or `scrape URL DIR --max-pages 50`
                parser.add_argument("--" + name.replace("_", "-"), dest=_FLAG_FORM + name, type=_converter(base),
                                    default=None, metavar=base.__name__.upper(), help=f"the same as {name.upper()}")
            continue
        flag = flag_name(name)
        # a flag left out reaches a plain function as its default, an OPTIONS field not at all
        value = argparse.SUPPRESS if kind == "option" else (None if is_list else default)
        if base is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=value, help=text)
            # python-fire's spelling, which earlier versions of these commands took: --noprogress
            parser.add_argument("--no" + flag[2:], dest=name, action="store_false", default=value,
                                help=argparse.SUPPRESS)
        elif is_list:
            parser.add_argument(flag, dest=name, action="append", type=_converter(base), default=value, help=text,
                                metavar=base.__name__.upper())
        else:
            parser.add_argument(flag, dest=name, type=_converter(base), default=value, help=text,
                                metavar=base.__name__.upper())


_DEFAULT_STATED = re.compile(r"\((?:default|none): |\bby default\b")


def states_default(help_text: str) -> int:
    """How many times a help line states a default ("(default: ...)", "(none: ...)", "... by default")."""
    return len(_DEFAULT_STATED.findall(help_text))


def flag_name(name: str) -> str:
    """--max-new-tokens for max_new_tokens; --class for class_ (a Python keyword as a parameter)."""
    return "--" + name.rstrip("_").replace("_", "-")


def _call_arguments(func, ns: dict) -> tuple[list, dict]:
    ns.pop("_action", None)
    args, kwargs = [], {}
    for p in inspect.signature(func).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            kwargs.update(ns)  # the OPTIONS fields the user typed
            break
        value = ns.pop(p.name)
        as_flag = ns.pop(_FLAG_FORM + p.name, None)
        if as_flag is not None:
            if value != p.default:
                raise UsageError(f"{p.name.upper()} given twice: as {value!r} and as --{p.name.replace('_', '-')}")
            value = as_flag
        if p.kind is p.VAR_POSITIONAL:
            args += value
        elif p.kind is p.KEYWORD_ONLY:
            kwargs[p.name] = p.default if value is None else value  # a list flag never given
        else:
            args.append(value)
    return args, kwargs


_TYPES = (str, int, float, bool)
_FLAG_FORM = "_flag_"  # argparse dest of the --flag form of an optional positional


def _base_type(annotation, where: str):
    """(type, is_list) of an annotation: str, int, float, bool, `X | None` or list[X]."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return _base_type(rest[0], where)
    if origin in (list, tuple):
        inner = typing.get_args(annotation)
        if inner and inner[0] in _TYPES:
            return inner[0], True
    if annotation in _TYPES:
        return annotation, False
    raise TypeError(f"{where}: a command-line parameter must be str, int, float, bool, X | None or list[X], "
                    f"not {annotation!r}")


def _converter(base):
    if base is str:
        return str  # the exact text typed, whatever it looks like

    def convert(text: str):
        try:
            return base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if base is int else 'a number'}, "
                                             f"got {text!r}") from None
    convert.__name__ = base.__name__
    return convert


def _show(default) -> str:
    if default is None:
        return "none"
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, str):
        return repr(default) if default.strip() != default or not default else default
    if isinstance(default, (list, tuple)):
        return "none" if not default else ", ".join(map(str, default))
    return str(default)


def _summary(doc: str | None) -> str:
    """A docstring without its Args: section."""
    if not doc:
        return ""
    lines = doc.split("\n")
    for i, line in enumerate(lines):
        if line.strip() == "Args:":
            return "\n".join(lines[:i]).rstrip()
    return doc


def _arg_docs(doc: str | None) -> dict[str, str]:
    """{parameter: its line} from a docstring's `Args:` section (continuation lines are joined)."""
    docs, current, inside = {}, None, False
    for line in (doc or "").split("\n"):
        stripped = line.strip()
        if stripped == "Args:":
            inside = True
            continue
        if not inside:
            continue
        if not stripped:
            current = None
            continue
        head, sep, rest = stripped.partition(":")
        names = [n.strip() for n in head.split(",")]
        if sep and all(n.isidentifier() for n in names):
            for n in names:
                docs[n] = rest.strip()
            current = names
        elif current:
            for n in current:
                docs[n] += " " + stripped
    return docs
