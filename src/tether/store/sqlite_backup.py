"""The SQLite store's backup and restore: one read transaction, and one write to restore.

A backup reads every table on a connection of its own, inside one `BEGIN` ... `COMMIT`: in WAL
mode that transaction sees one snapshot of the database while writers go on. A restore
migrates the schema, then inserts everything in one `BEGIN IMMEDIATE` transaction.
"""

from __future__ import annotations

import abc
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from tether.errors import BackupError
from tether.store.base import (
    BACKUP_KEYS,
    BACKUP_TABLES,
    check_backup_columns,
    not_empty,
)

T = TypeVar("T")
_CHUNK = 500


class SqliteBackup(abc.ABC):
    """`Store.backup` and `Store.restore` for SQLite (mixed into `SqliteStore`)."""

    @abc.abstractmethod
    def _connect(self) -> sqlite3.Connection: ...

    @abc.abstractmethod
    def _write(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    @abc.abstractmethod
    def _version(self, conn: sqlite3.Connection) -> int: ...

    @abc.abstractmethod
    def migrate(self) -> int:
        """Apply pending migrations; return the schema version."""

    @abc.abstractmethod
    def _translated_call(self, what: str, fn: Callable[[], T]) -> T: ...

    def backup(self, sink: Callable[[str, tuple[Any, ...]], None]) -> int:
        """Hand every row to `sink`, all read in one read transaction; return the schema version."""

        def read() -> int:
            conn = self._connect()
            try:
                conn.execute("BEGIN")  # deferred: the first read fixes the snapshot
                version = self._version(conn)
                for table, columns in BACKUP_TABLES.items():
                    query = (
                        f"SELECT {', '.join(columns)} FROM {table} ORDER BY {BACKUP_KEYS[table]}"
                    )
                    for row in conn.execute(query):
                        sink(
                            table, tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                        )
                conn.execute("COMMIT")
                return version
            finally:
                conn.close()

        return self._translated_call("back up the database", read)

    def restore(
        self,
        columns: Mapping[str, Sequence[str]],
        rows: Iterable[tuple[str, Sequence[Any]]],
        *,
        replace: bool = False,
    ) -> dict[str, int]:
        """Insert backed-up rows in one transaction, into an empty database unless `replace`."""
        check_backup_columns(columns)
        self.migrate()

        def txn(conn: sqlite3.Connection) -> dict[str, int]:
            held = {
                t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in BACKUP_TABLES
            }
            if any(held.values()):
                if not replace:
                    raise not_empty(held)
                for table in BACKUP_TABLES:
                    conn.execute(f"DELETE FROM {table}")
            counts = dict.fromkeys(columns, 0)
            statements = {
                t: f"INSERT INTO {t} ({', '.join(c)}) VALUES ({', '.join('?' * len(c))})"
                for t, c in columns.items()
            }
            pending: dict[str, list[Sequence[Any]]] = {t: [] for t in columns}
            for table, values in rows:
                batch = pending.get(table)
                if batch is None:
                    raise BackupError(f"a row of table {table!r}, which the backup's header lacks")
                batch.append(values)
                counts[table] += 1
                if len(batch) >= _CHUNK:
                    conn.executemany(statements[table], batch)
                    batch.clear()
            for table, batch in pending.items():
                if batch:
                    conn.executemany(statements[table], batch)
            return counts

        return self._write("restore a backup", txn)
