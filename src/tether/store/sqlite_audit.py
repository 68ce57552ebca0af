"""Audit chains on SQLite: `SqliteAudit`, a mixin of `SqliteStore`.

The writer's `BEGIN IMMEDIATE` serializes appends, so reading a head and moving it in one
transaction is enough to keep each chain linear.
"""

from __future__ import annotations

import abc
import dataclasses
import sqlite3
from collections.abc import Callable, Sequence
from typing import TypeVar

from tether.store.base import AuditHead, AuditRow, audit_appends

T = TypeVar("T")

_HEAD = "SELECT seq, hash FROM audit_heads WHERE chain_id = ?"
_HASH = "SELECT hash FROM audit WHERE chain_id = ? AND seq = ?"
_INSERT = """
INSERT INTO audit (chain_id, seq, kind, body, prev_hash, hash, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""
_MOVE_HEAD = """
INSERT INTO audit_heads (chain_id, seq, hash, updated_at) VALUES (?, ?, ?, ?)
ON CONFLICT (chain_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,
    updated_at = excluded.updated_at
"""
_ROWS = """
SELECT chain_id, seq, kind, body, prev_hash, hash, created_at FROM audit
WHERE chain_id = ? ORDER BY seq
"""
_HEAD_ROW = "SELECT chain_id, seq, hash, updated_at FROM audit_heads WHERE chain_id = ?"
_HEADS = """
SELECT chain_id, seq, hash, updated_at FROM audit_heads
WHERE substr(chain_id, 1, length(?)) = ? ORDER BY updated_at DESC, chain_id LIMIT ?
"""


class SqliteAudit:
    """Append-only, hash-chained audit logs; `SqliteStore` inherits them."""

    @abc.abstractmethod
    def _read(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the read connection."""

    @abc.abstractmethod
    def _write(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one write transaction."""

    def append_audit(self, rows: Sequence[AuditRow], now: float) -> None:
        """Append records to their chains and move each chain's head, in one transaction."""

        def txn(conn: sqlite3.Connection) -> None:
            def head(chain_id: str) -> tuple[int, str] | None:
                row = conn.execute(_HEAD, (chain_id,)).fetchone()
                return None if row is None else (int(row[0]), str(row[1]))

            def stored(chain_id: str, seq: int) -> str | None:
                row = conn.execute(_HASH, (chain_id, seq)).fetchone()
                return None if row is None else str(row[0])

            inserts = audit_appends(rows, head, stored)
            conn.executemany(_INSERT, [dataclasses.astuple(r) for r in inserts])
            last = {r.chain_id: r for r in inserts}
            conn.executemany(_MOVE_HEAD, [(r.chain_id, r.seq, r.hash, now) for r in last.values()])

        self._write("append to an audit chain", txn)

    def load_audit(self, chain_id: str) -> tuple[list[AuditRow], AuditHead | None]:
        """Return a chain's records in seq order, and its head."""

        def read(conn: sqlite3.Connection) -> tuple[list[AuditRow], AuditHead | None]:
            conn.execute("BEGIN")  # one snapshot for the records and the head
            try:
                records = [AuditRow(*r) for r in conn.execute(_ROWS, (chain_id,))]
                head = conn.execute(_HEAD_ROW, (chain_id,)).fetchone()
            finally:
                conn.execute("COMMIT")
            return records, None if head is None else AuditHead(*head)

        return self._read("read an audit chain", read)

    def list_audit_heads(self, prefix: str = "", limit: int = 1000) -> list[AuditHead]:
        """Return the heads of chains whose id starts with `prefix`, newest first."""
        rows = self._read(
            "list audit chains", lambda c: c.execute(_HEADS, (prefix, prefix, limit)).fetchall()
        )
        return [AuditHead(*row) for row in rows]
