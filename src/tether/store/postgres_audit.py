"""Audit chains on PostgreSQL: `PostgresAudit`, a mixin of `PostgresStore`.

Appends to a chain hold a transaction-scoped advisory lock on the chain's id, so two writers
cannot both extend the same head; reads take one snapshot (REPEATABLE READ) of records and head.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg

from tether.store.base import AuditHead, AuditRow, audit_appends
from tether.store.postgres_sql import Statements

T = TypeVar("T")
_Conn = psycopg.Connection[tuple[Any, ...]]


class PostgresAudit:
    """Append-only, hash-chained audit logs; `PostgresStore` inherits them."""

    _sql: Statements

    @abc.abstractmethod
    def _pooled(self, what: str, fn: Callable[[_Conn], T], transaction: bool = False) -> T:
        """Run `fn` on a pooled connection (autocommit, or in one transaction)."""

    @abc.abstractmethod
    def _rows(self, what: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one read on a pooled connection; return its rows."""

    def append_audit(self, rows: Sequence[AuditRow], now: float) -> None:
        """Append records to their chains and move each chain's head, in one transaction."""
        q = self._sql

        def txn(conn: _Conn) -> None:
            for chain_id in sorted({r.chain_id for r in rows}):  # one lock order everywhere
                conn.execute(q.LOCK_AUDIT_CHAIN, (chain_id,))

            def head(chain_id: str) -> tuple[int, str] | None:
                row = conn.execute(q.SELECT_AUDIT_HEAD, (chain_id,)).fetchone()
                return None if row is None else (int(row[0]), str(row[1]))

            def stored(chain_id: str, seq: int) -> str | None:
                row = conn.execute(q.SELECT_AUDIT_HASH, (chain_id, seq)).fetchone()
                return None if row is None else str(row[0])

            inserts = audit_appends(rows, head, stored)
            with conn.cursor() as cur:
                cur.executemany(q.INSERT_AUDIT, [dataclasses.astuple(r) for r in inserts])
                last = {r.chain_id: r for r in inserts}
                cur.executemany(
                    q.MOVE_AUDIT_HEAD, [(r.chain_id, r.seq, r.hash, now) for r in last.values()]
                )

        self._pooled("append to an audit chain", txn, transaction=True)

    def load_audit(self, chain_id: str) -> tuple[list[AuditRow], AuditHead | None]:
        """Return a chain's records in seq order, and its head."""
        q = self._sql

        def read(conn: _Conn) -> tuple[list[AuditRow], AuditHead | None]:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            records = [
                AuditRow(r[0], r[1], r[2], bytes(r[3]), r[4], r[5], r[6])
                for r in conn.execute(q.SELECT_AUDIT, (chain_id,)).fetchall()
            ]
            head = conn.execute(q.SELECT_AUDIT_HEAD_ROW, (chain_id,)).fetchone()
            return records, None if head is None else AuditHead(*head)

        return self._pooled("read an audit chain", read, transaction=True)

    def list_audit_heads(self, prefix: str = "", limit: int = 1000) -> list[AuditHead]:
        """Return the heads of chains whose id starts with `prefix`, newest first."""
        rows = self._rows("list audit chains", self._sql.SELECT_AUDIT_HEADS, (prefix, limit))
        return [AuditHead(*row) for row in rows]
