#!/usr/bin/env python3
"""The command dispatcher: `cllm COMMAND ...` (installed) or `python cli.py COMMAND ...` (a checkout).

Each command lives in its own module under cllm/commands/ and is imported only when it is called,
so that `generate` does not pay for the crawler's imports (and vice versa); the top-level --help
therefore reads each command's one-line summary from SUMMARIES, not from the module.
"""
import importlib
import sys

from cllm.commands import did_you_mean, run_command

# command name -> module under cllm.commands holding a `main` function with the command's flags
COMMANDS = {
    "train": "train",
    "generate": "generate",
    "chat": "chat",
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

# what each command does, one line for `cli.py --help` (tests/test_cli.py checks every command has one)
SUMMARIES = {
    "train": "train a GPT on text: a file, a folder, a prepared dataset or a crawl (default: data/)",
    "generate": "continue a prompt with a trained model",
    "chat": "talk with a model fine-tuned on conversations, in the terminal",
    "prepare": "clean and tokenize a corpus into a token dataset that train reads",
    "scrape": "crawl a website politely into clean text files, a corpus for prepare and train",
    "tokenizer": "train, inspect, convert and use tokenizers (actions: train, encode, decode, ...)",
    "evaluate": "loss, perplexity and bits per byte on a text, assistant-token loss on conversations, accuracy on a "
                "multiple-choice task (--task)",
    "serve": "serve a model over HTTP: OpenAI-style completions and chat completions, and a page that streams text",
    "export-llmc": "write a model as llm.c's model file",
    "import-llmc": "read llm.c's model file into a checkpoint",
    "export-hf": "write a model as a HuggingFace transformers folder (GPT-2 or Llama)",
    "import-hf": "read a HuggingFace GPT-2, Llama, Qwen2 or Mistral folder into a checkpoint",
    "export-gguf": "write a model as a GGUF file that llama.cpp runs",
}


def usage() -> str:
    """The top-level --help: every command with its line, and how to see a command's flags."""
    width = max(map(len, COMMANDS)) + 2
    lines = ["usage: python cli.py COMMAND [ARGUMENTS] [--flags]   (installed: cllm COMMAND ...)", "",
             "Train, run and share small GPT language models on your own text.", "", "commands:"]
    lines += [f"  {name:<{width}}{SUMMARIES[name]}" for name in COMMANDS]
    lines += ["", "python cli.py COMMAND --help lists a command's arguments and flags, with their defaults."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the `cllm` script of [project.scripts] calls main() without arguments
        argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(usage())
        return 0
    name = argv[0]
    if name not in COMMANDS:
        sys.stderr.write(f"error: unknown command {name!r}{did_you_mean(name, COMMANDS)}; see 'cli.py --help'\n")
        return 2
    try:
        module = importlib.import_module("cllm.commands." + COMMANDS[name])
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("cllm"):
            sys.stderr.write(f"error: command {name!r} is not available in this version\n")
            return 2
        raise
    return run_command(module, name, argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
