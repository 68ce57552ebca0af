"""The SQLite store's content-addressed blobs.

`SqliteBlobs` holds the blob calls of the `Store` protocol; `SqliteStore` inherits it and
supplies the connections (`_read`, `_write`, declared here for the type checker). Blobs are
written on the writer connection, one transaction per call: callers keep calls to a few MiB so
that journal writes queued behind them do not wait long.
"""

from __future__ import annotations

import abc
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

# SQLite allows 32,766 parameters per statement (999 before 3.32); stay well under either.
_KEYS_PER_STATEMENT = 500

INSERT_BLOB = "INSERT INTO blobs (hash, data, size) VALUES (?, ?, ?) ON CONFLICT (hash) DO NOTHING"
BLOB_STATS = "SELECT count(*), coalesce(sum(size), 0) FROM blobs"


def _select(columns: str, n: int) -> str:
    return f"SELECT {columns} FROM blobs WHERE hash IN ({', '.join('?' * n)})"


def _slices(keys: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(keys), _KEYS_PER_STATEMENT):
        yield keys[start : start + _KEYS_PER_STATEMENT]


def _unique(keys: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(keys))


class SqliteBlobs:
    """Content-addressed blobs; `SqliteStore` inherits them."""

    @abc.abstractmethod
    def _read(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the read connection."""

    @abc.abstractmethod
    def _write(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one write transaction."""

    def put_blobs(self, items: Sequence[tuple[str, bytes]]) -> int:
        """Store the blobs whose hashes are new, in one transaction; return how many."""
        fresh = {key: data for key, data in items}
        if not fresh:
            return 0

        def txn(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.executemany(INSERT_BLOB, [(k, d, len(d)) for k, d in fresh.items()])
            return conn.total_changes - before

        return self._write("store blobs", txn)

    def missing_blobs(self, hashes: Sequence[str]) -> list[str]:
        """Return the hashes not stored, once each, in their order."""
        keys = _unique(hashes)

        def read(conn: sqlite3.Connection) -> set[str]:
            found: set[str] = set()
            for part in _slices(keys):
                found.update(r[0] for r in conn.execute(_select("hash", len(part)), part))
            return found

        stored = self._read("look up blobs", read) if keys else set()
        return [k for k in keys if k not in stored]

    def get_blobs(self, hashes: Sequence[str]) -> dict[str, bytes]:
        """Return the bytes of the stored blobs among `hashes`."""
        keys = _unique(hashes)

        def read(conn: sqlite3.Connection) -> dict[str, bytes]:
            out: dict[str, bytes] = {}
            for part in _slices(keys):
                out.update(
                    (r[0], bytes(r[1]))
                    for r in conn.execute(_select("hash, data", len(part)), part)
                )
            return out

        return self._read("read blobs", read) if keys else {}

    def blob_stats(self) -> tuple[int, int]:
        """Return (number of blobs, total bytes)."""
        row = self._read("count blobs", lambda c: c.execute(BLOB_STATS).fetchone())
        return int(row[0]), int(row[1])
