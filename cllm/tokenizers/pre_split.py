"""The pre-split of byte-level BPE: text is cut into chunks by a regex before any merge, and merges
never cross a chunk. GPT-4's and GPT-2's patterns are also run as a Numba scanner over code points
(cllm/kernels/bpe_split.py), which reads the per-code-point classes made here from the `regex` module.
"""
from __future__ import annotations

import numpy as np
import regex

from cllm.errors import TokenizerError

PATTERNS = {
    # GPT-4 (tiktoken cl100k_base)
    "gpt4": (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
             r"""|\s*[\r\n]|\s+(?!\S)|\s+"""),
    # GPT-2
    "gpt2": r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
}

_CLASSES = None


def char_classes() -> np.ndarray:
    """(0x110000,) uint8 class bits per code point for the Numba pre-split (cllm/kernels/bpe_split.py),
    computed once per process from the `regex` module's own letter, number and space classes, a block
    of code points at a time (all of them in one string would take ~100 MB while it is built)."""
    global _CLASSES
    if _CLASSES is None:
        cls = np.zeros(0x110000, np.uint8)
        classes = ((1, r"\p{L}+"), (2, r"\p{N}+"), (4, r"\s+"), (8, r"[\r\n]+"))
        pats = [(bit, regex.compile(pat)) for bit, pat in classes]
        block = 1 << 14
        for lo in range(0, 0x110000, block):
            part = "".join(map(chr, range(lo, lo + block)))
            for bit, pat in pats:
                for m in pat.finditer(part):
                    cls[lo + m.start(): lo + m.end()] |= bit
        _CLASSES = cls
    return _CLASSES


def resolve_pattern(pattern: str) -> str:
    """The pattern a name ("gpt4", "gpt2") or a `regex` pattern stands for; a bad pattern is a
    TokenizerError."""
    pat = PATTERNS.get(pattern, pattern)
    try:
        regex.compile(pat)
    except regex.error as exc:
        raise TokenizerError(f"invalid pre-split pattern {pattern!r}: {exc}; use 'gpt4', 'gpt2' or a valid `regex` "
                             "pattern") from None
    return pat


def split_mode(pattern: str) -> bool | None:
    """How a resolved pattern is pre-split: True GPT-4's and False GPT-2's pattern, both by the Numba
    scanner; None any other pattern, by the `regex` module."""
    return {PATTERNS["gpt4"]: True, PATTERNS["gpt2"]: False}.get(pattern)
