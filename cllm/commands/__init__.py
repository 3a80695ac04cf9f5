"""The CLI's commands, one module each with a `main(...)` whose keyword arguments are the flags.

`run_command` is the single place where user errors become a message and an exit code.
"""
import inspect
import sys

import fire

from cllm.errors import CLLMError


def run_command(module, name: str, args: list[str]) -> int:
    # A module may declare which function implements which command (llmc has two).
    func = getattr(module, "COMMANDS", {}).get(name, getattr(module, "main", None))
    if any(a in ("--help", "-h") for a in args[:args.index("--") if "--" in args else len(args)]):
        args = ["--help"]  # help only: fire would otherwise run the command first (`train DATA --help`)
    unknown = unknown_flags(func, args)
    if unknown:
        sys.stderr.write(f"error: unknown flag {unknown} for {name!r}; see: python cli.py {name} --help\n")
        return 2
    if hasattr(module, "TEXT_FLAGS"):
        args = quote_text_args(args, module.TEXT_FLAGS, getattr(module, "BOOL_FLAGS", ()),
                               getattr(module, "LIST_FLAGS", ()))
    try:
        # an int result is the exit code: fire must not print it (it would end generated text with "0")
        result = fire.Fire(func, command=args, name=f"cli.py {name}",
                           serialize=lambda r: None if isinstance(r, int) and not isinstance(r, bool) else r)
    except CLLMError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    except fire.core.FireExit as exc:  # bad flags: fire already printed its usage message
        return int(exc.code or 0)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    return int(result) if isinstance(result, int) and not isinstance(result, bool) else 0


def unknown_flags(func, args: list[str]) -> str | None:
    """The first --flag in args that func does not take, or None. Fire itself would only notice it
    after running the command (it applies leftover arguments to the result), which for `train`
    means after a whole training run."""
    params = inspect.signature(func).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    names = set(params)
    for arg in args:
        if arg == "--":
            break
        if not arg.startswith("--") or len(arg) == 2:
            continue
        key = arg[2:].split("=", 1)[0].replace("-", "_")
        if key in ("help", "h") or key in names or (key.startswith("no") and key[2:] in names):
            continue
        return arg.split("=", 1)[0]
    return None


def quote_text_args(args: list[str], text_flags, bool_flags=(), list_flags=()) -> list[str]:
    """Hand positional arguments and the values of text flags to fire as quoted Python string
    literals: fire would otherwise turn "1984" into an int, "a,b" into a tuple, "True" into a bool.
    A flag in list_flags may be repeated; its values reach the command as one list."""
    out, lists, i = [], {}, 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg[2:].partition("=")
            key = name.replace("-", "_")
            if key in text_flags:
                if not eq:
                    if i + 1 >= len(args):
                        out.append(arg)  # fire reports the missing value
                        break
                    i += 1
                    value = args[i]
                if key in list_flags:
                    lists.setdefault(name, []).append(value)
                else:
                    out += [f"--{name}", repr(value)]
            else:
                out.append(arg)
                if not eq and key not in bool_flags and i + 1 < len(args):
                    i += 1
                    out.append(args[i])
        else:
            out.append(repr(arg))
        i += 1
    for name, values in lists.items():
        out += [f"--{name}", repr(values)]
    return out
