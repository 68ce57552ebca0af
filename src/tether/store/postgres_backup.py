"""The PostgreSQL store's backup and restore.

A backup reads every table in one `REPEATABLE READ, READ ONLY` transaction (one snapshot of
the whole schema while workers go on writing), through server-side cursors so that memory
stays flat whatever the size. Times leave as Unix seconds and come back through
`to_timestamp`. A restore migrates the schema, then inserts everything in one transaction and
moves the messages' id sequence past the restored ids.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import psycopg

from tether.errors import BackupError, CorruptRowError
from tether.store.base import (
    BACKUP_KEYS,
    BACKUP_TABLES,
    TIME_COLUMNS,
    check_backup_columns,
    not_empty,
)

T = TypeVar("T")
_Conn = psycopg.Connection[tuple[Any, ...]]
_CHUNK = 500


class PostgresBackup(abc.ABC):
    """`Store.backup` and `Store.restore` for PostgreSQL (mixed into `PostgresStore`)."""

    schema: str

    @abc.abstractmethod
    def _pooled(self, what: str, fn: Callable[[_Conn], T], transaction: bool = False) -> T: ...

    @abc.abstractmethod
    def migrate(self) -> int:
        """Apply pending migrations; return the schema version."""

    def _backup_table(self, table: str) -> str:
        return f'"{self.schema}".{table}'

    def backup(self, sink: Callable[[str, tuple[Any, ...]], None]) -> int:
        """Hand every row to `sink`, all read in one snapshot; return the schema version."""

        def read(conn: _Conn) -> int:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            conn.execute("SET LOCAL statement_timeout = 0")
            version = _scalar(
                conn, f"SELECT max(version) FROM {self._backup_table('schema_version')}"
            )
            for table, columns in BACKUP_TABLES.items():
                chosen = ", ".join(
                    f"extract(epoch FROM {c})::float8" if c in TIME_COLUMNS else c for c in columns
                )
                source = self._backup_table(table)
                query = f"SELECT {chosen} FROM {source} ORDER BY {BACKUP_KEYS[table]}"
                with conn.cursor(name=f"tether_backup_{table}") as cur:
                    cur.itersize = 1000
                    cur.execute(query.encode())
                    for row in cur:
                        sink(table, tuple(row))
            return int(version or 0)

        return self._pooled("back up the database", read, transaction=True)

    def restore(
        self,
        columns: Mapping[str, Sequence[str]],
        rows: Iterable[tuple[str, Sequence[Any]]],
        *,
        replace: bool = False,
    ) -> dict[str, int]:
        """Insert backed-up rows in one transaction, into an empty schema unless `replace`."""
        check_backup_columns(columns)
        self.migrate()
        return self._pooled(
            "restore a backup",
            lambda conn: self._restore(conn, columns, rows, replace),
            transaction=True,
        )

    def _restore(
        self,
        conn: _Conn,
        columns: Mapping[str, Sequence[str]],
        rows: Iterable[tuple[str, Sequence[Any]]],
        replace: bool,
    ) -> dict[str, int]:
        conn.execute("SET LOCAL statement_timeout = 0")
        held = {
            t: int(_scalar(conn, f"SELECT count(*) FROM {self._backup_table(t)}"))
            for t in BACKUP_TABLES
        }
        if any(held.values()):
            if not replace:
                raise not_empty(held)
            for table in BACKUP_TABLES:
                conn.execute(f"DELETE FROM {self._backup_table(table)}".encode())
        statements = {t: self._insert_sql(t, c) for t, c in columns.items()}
        counts = dict.fromkeys(columns, 0)
        pending: dict[str, list[Sequence[Any]]] = {t: [] for t in columns}
        with conn.cursor() as cur:
            for table, values in rows:
                batch = pending.get(table)
                if batch is None:
                    raise BackupError(f"a row of table {table!r}, which the backup's header lacks")
                batch.append(values)
                counts[table] += 1
                if len(batch) >= _CHUNK:
                    cur.executemany(statements[table], batch)
                    batch.clear()
            for table, batch in pending.items():
                if batch:
                    cur.executemany(statements[table], batch)
        messages = self._backup_table("messages")
        conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{messages}', 'id'), "
            f"coalesce((SELECT max(id) FROM {messages}), 0) + 1, false)".encode()
        )
        return counts

    def _insert_sql(self, table: str, columns: Sequence[str]) -> bytes:
        values = ", ".join(
            "to_timestamp(%s::float8)" if c in TIME_COLUMNS else "%s" for c in columns
        )
        target = f"{self._backup_table(table)} ({', '.join(columns)})"
        return f"INSERT INTO {target} VALUES ({values})".encode()


def _scalar(conn: _Conn, sql: str) -> Any:
    row = conn.execute(sql.encode()).fetchone()
    if row is None:
        raise CorruptRowError(f"expected a row from {sql!r}")
    return row[0]
