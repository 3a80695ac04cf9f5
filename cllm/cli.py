#!/usr/bin/env python3
"""CLLM command line.

    python cli.py train [DATA] [--flags]      train a GPT on text (default: the bundled data/)
    python cli.py generate "prompt" [--flags] generate text from a checkpoint
    python cli.py prepare DATA [--flags]      clean + tokenize a corpus into a token dataset
    python cli.py scrape URL OUT_DIR [...]    crawl a site politely into clean text files

Each command lives in its own module under cllm/commands/ and is imported only when it is
called, so that `generate` does not pay for the crawler's imports (and vice versa).
`python cli.py COMMAND --help` lists a command's flags.
"""
import importlib
import sys

# command name -> module under cllm.commands holding a `main` function with the command's flags
COMMANDS = {
    "train": "train",
    "generate": "generate",
    "prepare": "prepare",
    "scrape": "scrape",
    "tokenizer": "tokenizer",
    "evaluate": "evaluate",
    "serve": "serve",
    "export-llmc": "llmc",
    "import-llmc": "llmc",
    "export-hf": "hf",
    "import-hf": "hf",
    "export-gguf": "gguf",
}


def _usage() -> str:
    return __doc__.strip() + "\n\ncommands: " + ", ".join(sorted(COMMANDS)) + "\n"


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the `cllm` script of [project.scripts] calls main() without arguments
        argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(_usage())
        return 0
    name = argv[0]
    if name not in COMMANDS:
        sys.stderr.write(f"error: unknown command {name!r}\n\n" + _usage())
        return 2
    try:
        module = importlib.import_module("cllm.commands." + COMMANDS[name])
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("cllm"):
            sys.stderr.write(f"error: command {name!r} is not available in this version\n")
            return 2
        raise
    from cllm.commands import run_command

    return run_command(module, name, argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
