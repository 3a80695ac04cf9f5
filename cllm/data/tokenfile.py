"""Token dataset files: a 1024-byte header, then the token ids, memory-mapped for training.

Header: 256 little-endian int32 (as llm.c's, but our own magic so the two are never confused):
    [0] MAGIC 0x544B4C43 ("CLKT")  [1] VERSION 1  [2] bytes per token (2 = uint16, 4 = uint32)
    [3] token count, low 31 bits   [4] token count >> 31   [5] vocabulary size   [6:] zero
ids are uint16 when the vocabulary fits (<= 65,536 ids), else uint32.

llm.c's token file (llm.c `dataloader.h`, for its train_gpt2.c; `cli.py prepare --llmc`) is written and read
here too: header 256 x int32 [0] magic 20240520, [1] version 1, [2] token count, the rest zero; then the
tokens as little-endian uint16 (so vocabularies of at most 65,535 ids). llm.c's model file is
cllm/interop/llmc.py's.
"""
from __future__ import annotations

import os

import numpy as np

from cllm.data.errors import TokenFileError
from cllm.errors import DataError
from cllm.fileio import atomic_open

MAGIC = 0x544B4C43
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
_DTYPES = {2: np.dtype("<u2"), 4: np.dtype("<u4")}
LLMC_TOKENS_MAGIC = 20240520  # header[0] of llm.c's token file
LLMC_TOKENS_VERSION = 1


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
        if h[0] == LLMC_TOKENS_MAGIC:
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


# ------------------------------------------------------------------------------ llm.c's token file
def export_llmc_tokens(tokens, out_path) -> int:
    """Write ids (a CLLM token file's path or an array) as llm.c's token file; returns the count.
    llm.c stores uint16, so every id must be below 65,536 (vocabularies up to 65,535 ids)."""
    if isinstance(tokens, (str, os.PathLike)):
        vocab = read_token_header(tokens)["vocab_size"]
        if vocab > 65535:
            raise DataError(f"llm.c token files hold uint16 ids: a vocabulary of {vocab:,} does not fit (65,535 at "
                            "most); prepare with a smaller --vocab-size")
        tokens = read_token_file(tokens)
    a = np.asarray(tokens)
    if a.size and (int(a.min()) < 0 or int(a.max()) > 65535):
        raise DataError("llm.c token files hold uint16 ids; these ids do not fit (use a vocabulary of at most "
                        "65,535)")
    header = np.zeros(HEADER_INTS, "<i4")
    header[0], header[1], header[2] = LLMC_TOKENS_MAGIC, LLMC_TOKENS_VERSION, a.size
    with atomic_open(os.fspath(out_path), "wb") as f:
        f.write(header.tobytes())
        step = 1 << 24
        for i in range(0, a.size, step):
            f.write(np.ascontiguousarray(a[i:i + step]).astype("<u2").tobytes())
    return int(a.size)


def read_llmc_tokens(path) -> np.ndarray:
    """Read llm.c's token file back (header checked) as a uint16 memmap."""
    size = os.path.getsize(path)
    h = np.fromfile(path, "<i4", HEADER_INTS)
    if (h.size < HEADER_INTS or h[0] != LLMC_TOKENS_MAGIC or h[1] != LLMC_TOKENS_VERSION
            or size != HEADER_BYTES + 2 * int(h[2])):
        raise TokenFileError(f"{path} is not a valid llm.c token file (magic {LLMC_TOKENS_MAGIC}, version "
                             f"{LLMC_TOKENS_VERSION}, uint16 tokens)")
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(int(h[2]),))


def export_dataset_tokens(out_dir: str) -> None:
    """A prepared dataset's train.bin and val.bin (in out_dir) as llm.c token files train_llmc.bin, val_llmc.bin."""
    for split in ("train", "val"):
        export_llmc_tokens(os.path.join(out_dir, f"{split}.bin"), os.path.join(out_dir, f"{split}_llmc.bin"))
