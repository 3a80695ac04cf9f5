"""The CLI's commands, one module each with a `main(...)` whose keyword arguments are the flags.

`run_command` is the single place where user errors become a message and an exit code.
"""
import sys

import fire

from cllm.errors import CLLMError


def run_command(module, name: str, args: list[str]) -> int:
    # A module may declare which function implements which command (llmc has two).
    func = getattr(module, "COMMANDS", {}).get(name, getattr(module, "main", None))
    if hasattr(module, "preprocess_args"):
        args = module.preprocess_args(args)
    try:
        result = fire.Fire(func, command=args, name=f"cli.py {name}")
    except CLLMError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    except fire.core.FireExit as exc:  # bad flags: fire already printed its usage message
        return int(exc.code or 0)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    return int(result) if isinstance(result, int) and not isinstance(result, bool) else 0
