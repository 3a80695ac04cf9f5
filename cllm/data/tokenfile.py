"""Token dataset files: a 1024-byte header, then the token ids, memory-mapped for training.

Header: 256 little-endian int32 (as llm.c's, but our own magic so the two are never confused):
    [0] MAGIC 0x544B4C43 ("CLKT")  [1] VERSION 1  [2] bytes per token (2 = uint16, 4 = uint32)
    [3] token count, low 31 bits   [4] token count >> 31   [5] vocabulary size   [6:] zero
ids are uint16 when the vocabulary fits (<= 65,536 ids), else uint32.

llm.c's token file (for its train_gpt2.c) is written and read by cllm/llmc.py.
"""
from __future__ import annotations

import os

import numpy as np

from cllm.data.errors import TokenFileError
from cllm.fileio import atomic_open

MAGIC = 0x544B4C43
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
_DTYPES = {2: np.dtype("<u2"), 4: np.dtype("<u4")}


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    return _DTYPES[2] if vocab_size <= 65536 else _DTYPES[4]


def _header(count: int, itemsize: int, vocab_size: int) -> bytes:
    h = np.zeros(HEADER_INTS, "<i4")
    h[0], h[1], h[2] = MAGIC, VERSION, itemsize
    h[3], h[4] = count & 0x7FFFFFFF, count >> 31
    h[5] = vocab_size
    return h.tobytes()


class TokenFileWriter:
    """Stream ids into a token file: `with TokenFileWriter(path, vocab_size) as w: w.write(ids)`.
    The file appears (atomically) only when the block exits cleanly, with its final count."""

    def __init__(self, path, vocab_size: int):
        self.path = os.fspath(path)
        self.vocab_size = int(vocab_size)
        self.dtype = dtype_for_vocab(self.vocab_size)
        self.count = 0

    def __enter__(self):
        self._ctx = atomic_open(self.path, "wb")
        self._f = self._ctx.__enter__()
        self._f.write(_header(0, self.dtype.itemsize, self.vocab_size))
        return self

    def write(self, ids) -> None:
        a = np.asarray(ids)
        if a.size and (a.min() < 0 or a.max() >= self.vocab_size):
            raise TokenFileError(f"token id out of range 0..{self.vocab_size - 1} while writing {self.path}")
        self._f.write(memoryview(np.ascontiguousarray(a.astype(self.dtype, copy=False))))  # no extra bytes copy
        self.count += int(a.size)

    def __exit__(self, *exc):
        if exc[0] is None:
            self._f.seek(0)
            self._f.write(_header(self.count, self.dtype.itemsize, self.vocab_size))
            self._f.seek(0, os.SEEK_END)
        return self._ctx.__exit__(*exc)


def write_token_file(path, ids, vocab_size: int | None = None) -> int:
    """Write one array (or an iterable of arrays) of ids; returns the token count."""
    if isinstance(ids, np.ndarray) or (isinstance(ids, list) and (not ids or not hasattr(ids[0], "__len__"))):
        parts = [np.asarray(ids)]
    else:
        parts = [np.asarray(p) for p in ids]
    if vocab_size is None:
        vocab_size = max((int(p.max()) + 1 for p in parts if p.size), default=1)
    with TokenFileWriter(path, vocab_size) as w:
        for p in parts:
            w.write(p)
    return w.count


def read_token_header(path) -> dict:
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(HEADER_BYTES)
    except FileNotFoundError:
        raise TokenFileError(f"token file {path} does not exist; create it with `cli.py prepare`") from None
    except OSError as exc:
        raise TokenFileError(f"cannot read token file {path}: {exc.strerror}") from None
    if len(head) < HEADER_BYTES:
        raise TokenFileError(f"{path} is too short to be a token file ({size} bytes, the header alone is "
                             f"{HEADER_BYTES}); it is truncated, run `cli.py prepare` again")
    h = np.frombuffer(head, "<i4")
    if h[0] != MAGIC:
        from cllm.llmc import TOKENS_MAGIC

        if h[0] == TOKENS_MAGIC:
            raise TokenFileError(f"{path} is an llm.c token file, not a CLLM one; prepare the corpus with "
                                 "`cli.py prepare` instead")
        raise TokenFileError(f"{path} is not a CLLM token file (wrong magic number {int(h[0]):#x}); create it with "
                             "`cli.py prepare`")
    if h[1] != VERSION:
        raise TokenFileError(f"{path} has token file version {int(h[1])}, this CLLM reads version {VERSION}; "
                             "run `cli.py prepare` again")
    itemsize = int(h[2])
    if itemsize not in _DTYPES:
        raise TokenFileError(f"{path} has an invalid token width ({itemsize} bytes; 2 or 4 expected); the file is "
                             "corrupt, run `cli.py prepare` again")
    count = int(h[3]) + (int(h[4]) << 31)
    if size != HEADER_BYTES + count * itemsize:
        raise TokenFileError(f"{path}: header says {count:,} tokens ({HEADER_BYTES + count * itemsize:,} bytes) but "
                             f"the file has {size:,} bytes; it is truncated or corrupt, run `cli.py prepare` again")
    return {"count": count, "dtype": _DTYPES[itemsize], "vocab_size": int(h[5])}


def read_token_file(path) -> np.ndarray:
    """The ids as a read-only np.memmap (uint16 or uint32), after validating the header."""
    info = read_token_header(path)
    if info["count"] == 0:
        return np.zeros(0, info["dtype"])
    return np.memmap(os.fspath(path), dtype=info["dtype"], mode="r", offset=HEADER_BYTES, shape=(info["count"],))
