#!/usr/bin/env python3
"""`python cli.py COMMAND ...` from a checkout: the same as the installed `cllm COMMAND ...` (cllm/cli.py)."""
import sys

from cllm.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
