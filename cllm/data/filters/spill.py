"""The filters' per-corpus state on disk, once it outgrows its memory budget (FilterOptions.filter_memory_mb).

Below the budget the state stays in memory as it always did; beyond it, it moves to files in a temporary
directory next to the dataset being written (SpillDir: DIR/filters-spill-*.tmp, removed at the end, on error
or Ctrl-C; a killed run's leftover is removed by the next run into DIR, cllm/data/prepare.py):

  near-dup index   band key -> first kept document in a SQLite table with a bounded page cache (DiskMap), the
                   kept documents' signatures appended to a flat file read back by offset (SignatureFile)
  exact duplicates the documents' 16-byte hashes in a SQLite table (DiskSet)
  file list        the corpus's (path, kind, site) in sorted runs merged into one file (cllm/data/files.py's
                   FileList), the crawl manifest's page -> site in a SQLite table while it is walked (DiskDict)
  lengths          each document's length, for the split, in a flat int64 file (cllm/data/corpus.py's DocLengths)
  boilerplate      its line hashes in sorted runs of (hash, pages) counted by a merge (boilerplate.py)

SQLite comes with Python; its files are read through the page cache (os.pread, not mmap), which is the
kernel's memory, not the process's RSS. Nothing here changes an answer: the same keys, the same first-seen
rules, only where they are kept (tests/test_prepare_memory.py checks the dataset byte for byte).
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import weakref

import numpy as np

from cllm.errors import DataError

MB = 1 << 20
SPILL_PREFIX = "filters-spill-"  # SpillDir's name: SPILL_PREFIX + random + ".tmp"
SQL_CHUNK = 500  # keys per "IN (...)" query: below every SQLite's limit on parameters


class SpillDir:
    """A temporary directory made on first use in `parent` (None: the system's temporary directory), removed
    by close() or, failing that, when this object is collected or the interpreter exits."""

    def __init__(self, parent: str | None = None):
        self.parent = parent
        self.path: str | None = None
        self._cleanup = None

    def file(self, name: str) -> str:
        """A new path inside the directory (made unique by a prefix)."""
        if self.path is None:
            if self.parent is not None:  # prepare's DIR, maybe not made yet (the file list spills before)
                try:
                    os.makedirs(self.parent, exist_ok=True)
                except OSError as exc:
                    raise DataError(f"cannot write to output directory {self.parent}: {exc.strerror}; choose "
                                    "another --out") from None
            self.path = tempfile.mkdtemp(prefix=SPILL_PREFIX, suffix=".tmp", dir=self.parent)
            self._cleanup = weakref.finalize(self, shutil.rmtree, self.path, True)
        fd, path = tempfile.mkstemp(prefix=name + "-", dir=self.path)
        os.close(fd)
        return path

    def close(self) -> None:
        if self._cleanup is not None:
            self._cleanup()  # runs once: rmtree, errors ignored
        self.path, self._cleanup = None, None


def _connect(path: str, cache_bytes: int) -> sqlite3.Connection:
    """A SQLite database for scratch data: no journal, no fsync (a crash loses nothing worth keeping), its page
    cache at most cache_bytes (its memory while it grows past that)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute(f"PRAGMA cache_size=-{max(cache_bytes // 1024, 256)}")  # negative: KiB
    db.execute("PRAGMA temp_store=FILE")
    db.execute("PRAGMA locking_mode=EXCLUSIVE")  # one user: no file lock taken and checked per statement
    return db


class DiskMap:
    """int64 key -> int64 value on disk; a key keeps the first value put under it."""

    def __init__(self, path: str, cache_bytes: int):
        self.path = path
        self.db = _connect(path, cache_bytes)
        self.db.execute("CREATE TABLE m (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)")

    def get_many(self, keys: list[int]) -> dict[int, int]:
        """{key: value} of those of `keys` present."""
        out: dict[int, int] = {}
        for i in range(0, len(keys), SQL_CHUNK):
            part = keys[i:i + SQL_CHUNK]
            out.update(self.db.execute(f"SELECT k, v FROM m WHERE k IN ({','.join('?' * len(part))})", part))
        return out

    def put_new(self, items) -> None:
        """(key, value) pairs; a key already present keeps its value."""
        self.db.execute("BEGIN")
        self.db.executemany("INSERT OR IGNORE INTO m VALUES (?, ?)", items)
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()
        os.unlink(self.path)


class DiskSet:
    """A set of bytes on disk: add() says whether the value was there already."""

    def __init__(self, path: str, cache_bytes: int):
        self.path = path
        self.db = _connect(path, cache_bytes)
        self.db.execute("CREATE TABLE s (h BLOB PRIMARY KEY) WITHOUT ROWID")
        self.db.execute("BEGIN")  # one transaction: a commit a document would write the file each time

    def add_many(self, values) -> None:
        self.db.executemany("INSERT OR IGNORE INTO s VALUES (?)", ((v,) for v in values))

    def add(self, value: bytes) -> bool:
        """True if `value` was in the set (else it joins it)."""
        return self.db.execute("INSERT OR IGNORE INTO s VALUES (?)", (value,)).rowcount == 0

    def close(self) -> None:
        self.db.close()
        os.unlink(self.path)


class DiskDict:
    """str key -> int value (or None) on disk, as a dict: a later update replaces a key's value."""

    def __init__(self, path: str, cache_bytes: int):
        self.path = path
        self.db = _connect(path, cache_bytes)
        self.db.execute("CREATE TABLE d (k BLOB PRIMARY KEY, v INTEGER) WITHOUT ROWID")

    @staticmethod
    def _key(key: str) -> bytes:  # bytes: a file name's undecodable bytes (surrogates) are no valid SQLite text
        return key.encode("utf-8", "surrogatepass")

    def update(self, items) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("INSERT OR REPLACE INTO d VALUES (?, ?)", ((self._key(k), v) for k, v in items))
        self.db.execute("COMMIT")

    def get(self, key: str, default=None):
        row = self.db.execute("SELECT v FROM d WHERE k = ?", (self._key(key),)).fetchone()
        return default if row is None else row[0]

    def __len__(self) -> int:
        return self.db.execute("SELECT count(*) FROM d").fetchone()[0]

    def close(self) -> None:
        self.db.close()
        os.unlink(self.path)


class SignatureFile:
    """Fixed-size rows (uint32 (K,) signatures) appended to a file and read back by row number."""

    def __init__(self, path: str, width: int):
        self.path = path
        self.width = width
        self.row_bytes = 4 * width
        self._file = open(path, "w+b")  # noqa: SIM115 (kept open for appends and reads until close)
        self.rows = 0

    def append(self, sigs: np.ndarray) -> None:
        """uint32 (N, K) rows, after the ones already there."""
        self._file.seek(0, os.SEEK_END)
        self._file.write(np.ascontiguousarray(sigs, np.uint32).tobytes())
        self._file.flush()  # os.pread reads the file, not Python's buffer
        self.rows += len(sigs)

    def read(self, row: int) -> np.ndarray:
        data = os.pread(self._file.fileno(), self.row_bytes, row * self.row_bytes)
        return np.frombuffer(data, np.uint32)

    def close(self) -> None:
        self._file.close()
        os.unlink(self.path)
