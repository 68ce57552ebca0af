"""The SQLite store: one file in WAL mode, the zero-configuration default.

Writes go through one connection guarded by a lock (SQLite has one writer at a time anyway);
reads use a second connection, which WAL lets run beside a write. Several processes may share
the file: write transactions start with `BEGIN IMMEDIATE`, so they queue on the busy timeout
instead of failing halfway.

The calls for waiting, messages, events, control and schedules, with the completions and
queue admission the store shares with them, live in `sqlite_coordination` (the mixin
`SqliteCoordination`, which `SqliteStore` inherits); the services' breakers and budgets in
`sqlite_services` (`SqliteServices`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from tether.errors import (
    CorruptRowError,
    DeduplicatedError,
    LeaseLostError,
    StoreError,
    StoreFullError,
    StoreUnavailableError,
    WorkflowConflictError,
)
from tether.store import migrate
from tether.store import sqlite_sql as sql
from tether.store.base import (
    Batch,
    BatchResult,
    Completion,
    Connection,
    Lease,
    NewRun,
    QueueLimits,
    RunFilter,
    RunRow,
    StepRecord,
    WorkerRow,
    WorkflowKey,
    conflict,
    workflow_keys,
)
from tether.store.sqlite_audit import SqliteAudit
from tether.store.sqlite_backup import SqliteBackup
from tether.store.sqlite_blobs import SqliteBlobs
from tether.store.sqlite_coordination import (
    SqliteCoordination,
    _claim_from_queue,
    _complete,
    _json_list,
    _record,
    _Rollback,
    _run_row,
)
from tether.store.sqlite_services import SqliteServices

T = TypeVar("T")

_UNAVAILABLE = ("locked", "busy", "disk i/o", "full", "unable to open", "readonly")


def _translate(exc: sqlite3.Error, what: str) -> StoreError:
    """Turn a sqlite3 error into tether's, saying what was being done."""
    text = str(exc)
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in text:
        return StoreFullError(
            f"SQLite could not {what}: the disk holding the database is full ({text}); "
            "nothing was written. Free space on that disk (or move the database to a larger "
            "one): tether retries, and runs resume from their last recorded step"
        )
    if isinstance(exc, sqlite3.OperationalError) and any(w in text.lower() for w in _UNAVAILABLE):
        return StoreUnavailableError(
            f"SQLite could not {what}: {text}; tether retries transient failures, check "
            "the disk and that no other program holds the database locked"
        )
    if "malformed" in text or "not a database" in text:
        return CorruptRowError(
            f"SQLite could not {what}: {text}; restore the database from a backup"
        )
    return StoreError(f"SQLite could not {what}: {text}")


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """Raise sqlite3 errors as tether's (see `_translate`)."""
    try:
        yield
    except sqlite3.Error as exc:
        raise _translate(exc, what) from exc


class SqliteStore(SqliteBackup, SqliteCoordination, SqliteAudit, SqliteServices, SqliteBlobs):
    """A `Store` on a SQLite file.

    Args:
        path: the database file; its folder is created if missing.
        synchronous: `NORMAL` or `FULL` (see `Settings.sqlite_synchronous`).
        busy_timeout: seconds a write waits for another process's write lock.
    """

    dialect = "sqlite"
    database_clock_leases = False

    def __init__(self, path: str, *, synchronous: str = "NORMAL", busy_timeout: float = 30.0):
        if path in ("", ":memory:") or path.startswith("file::memory:"):
            raise StoreError(
                "an in-memory SQLite database cannot be shared by tether's connections; "
                "use a file path (sqlite:///path/to.db)"
            )
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        self.path = path
        self.synchronous = synchronous
        self.inline_writes = synchronous == "NORMAL"
        self._busy_timeout = busy_timeout
        self._write_lock = threading.RLock()
        self._read_lock = threading.Lock()
        with _translated(f"open {path}"):
            self._writer = self._connect()
            self._reader = self._connect()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=256,
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        return conn

    # -- plumbing ---------------------------------------------------------------------------

    def _read(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._read_lock, _translated(what):
            return fn(self._reader)

    def _write(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one write transaction (BEGIN IMMEDIATE ... COMMIT)."""
        with self._write_lock, _translated(what):
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

    def _translated_call(self, what: str, fn: Callable[[], T]) -> T:
        with _translated(what):
            return fn()

    def close(self) -> None:
        """Close both connections."""
        with self._write_lock, self._read_lock:
            self._writer.close()
            self._reader.close()

    # -- schema -----------------------------------------------------------------------------

    def _version(self, conn: sqlite3.Connection) -> int:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def migrate(self) -> int:
        """Apply pending migrations, each in its own transaction."""

        def step(conn: sqlite3.Connection) -> bool:
            todo = migrate.pending(self.dialect, self._version(conn))
            if not todo:
                return False
            for statement in _split_sql(todo[0].sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (todo[0].version,))
            return True

        while self._write("migrate the schema", step):
            pass
        return self.check_schema()

    def check_schema(self) -> int:
        """Return the schema version or raise `SchemaVersionError`."""
        version = self._write("read the schema version", self._version)
        return migrate.require_current(self.dialect, version)

    def database_time(self) -> float:
        """Return SQLite's notion of now (the machine's clock)."""
        return float(
            self._read("read the time", lambda c: c.execute(sql.DATABASE_TIME).fetchone()[0])
        )

    # -- runs -------------------------------------------------------------------------------

    def create_run(self, run: NewRun) -> tuple[RunRow, bool]:
        """Insert the run, or return the existing one with the same id and input."""
        with self._write_lock, _translated("create a run"):
            outcome = _create(self._writer, run)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def get_run(self, run_id: str) -> RunRow | None:
        """Return the run or None."""
        row = self._read("read a run", lambda c: c.execute(sql.SELECT_RUN, (run_id,)).fetchone())
        return None if row is None else _run_row(row)

    def list_runs(self, query: RunFilter) -> list[RunRow]:
        """Return matching runs, newest first."""
        text = f"SELECT {sql.RUN_COLUMNS} FROM runs WHERE 1=1"
        params: list[Any] = []
        if query.statuses:
            text += " AND status IN (SELECT value FROM json_each(?))"
            params.append(_json_list(query.statuses))
        if query.name is not None:
            text += " AND name = ?"
            params.append(query.name)
        if query.created_before is not None:
            text += " AND created_at < ?"
            params.append(query.created_before)
        text += " ORDER BY created_at DESC, id DESC LIMIT ?"
        params.append(query.limit)
        rows = self._read("list runs", lambda c: c.execute(text, params).fetchall())
        return [_run_row(r) for r in rows]

    def complete_run(
        self, lease: Lease, status: str, output: bytes | None, error: bytes | None, now: float
    ) -> None:
        """Record the final outcome under `lease`, and wake the runs waiting for it."""
        completion = Completion(lease, status, output, error, now)
        refused = self._write("complete a run", lambda c: _complete(c, completion))
        if refused is not None:
            raise refused

    # -- journal ----------------------------------------------------------------------------

    def load_steps(self, run_id: str) -> list[StepRecord]:
        """Return the journal in order."""
        rows = self._read(
            "read a journal", lambda c: c.execute(sql.SELECT_STEPS, (run_id,)).fetchall()
        )
        return [StepRecord(*r) for r in rows]

    def record_steps(
        self, items: Sequence[tuple[Lease, StepRecord]]
    ) -> list[StepRecord | LeaseLostError]:
        """Append journal entries in one commit."""
        if len(items) == 1:
            # The hot path: one statement in autocommit mode is one transaction, no BEGIN.
            with self._write_lock:
                try:
                    return [_record(self._writer, *items[0])]
                except sqlite3.Error as exc:
                    raise _translate(exc, "record a step") from exc
        return self._write("record steps", lambda c: [_record(c, *item) for item in items])

    def write_batch(self, batch: Batch) -> BatchResult:
        """Commit new runs, journal entries and completions in one transaction."""

        def write(conn: sqlite3.Connection) -> BatchResult:
            return BatchResult(
                runs=[_create(conn, run) for run in batch.runs],
                steps=[_record(conn, *item) for item in batch.steps],
                completions=[_complete(conn, c) for c in batch.completions],
            )

        if len(batch.runs) + len(batch.steps) == 1 and not batch.completions:
            with self._write_lock, _translated("write a batch"):
                return write(self._writer)  # one statement: its own transaction
        return self._write("write a batch", write)

    def record_step_transactionally(
        self, lease: Lease, body: Callable[[Connection], StepRecord]
    ) -> StepRecord:
        """Run `body` and record its entry in the same transaction."""

        def txn(conn: sqlite3.Connection) -> StepRecord:
            try:
                record = body(conn)
            except Exception as exc:
                raise _BodyFailed(exc) from exc
            outcome = _record(conn, lease, record)
            if outcome is record:
                return record
            raise _Rollback(outcome)

        try:
            return self._write("run a transactional step", txn)
        except _Rollback as rb:
            if isinstance(rb.outcome, LeaseLostError):
                raise rb.outcome from None
            return rb.outcome
        except _BodyFailed as failed:
            error = failed.error
        raise error  # the body's own error (even a sqlite3 one) goes on exactly as raised

    # -- workers and claims -----------------------------------------------------------------

    def register_worker(self, worker: WorkerRow) -> None:
        """Insert the worker's row and forget workers silent for a day."""
        w = worker
        params = (
            w.id,
            w.host,
            w.boot_id,
            w.pid,
            w.pid_start,
            w.started_at,
            w.heartbeat_at,
            w.stopped_at,
        )

        def txn(conn: sqlite3.Connection) -> None:
            conn.execute(sql.PRUNE_WORKERS, (worker.heartbeat_at - 86400.0,))
            conn.execute(sql.UPSERT_WORKER, params)

        self._write("register a worker", txn)

    def heartbeat(self, worker_id: str, now: float) -> bool:
        """Refresh the worker's heartbeat."""
        with self._write_lock, _translated("record a heartbeat"):
            return self._writer.execute(sql.HEARTBEAT, (now, worker_id)).rowcount == 1

    def list_workers(self) -> list[WorkerRow]:
        """Return the workers that have not stopped."""
        rows = self._read("list workers", lambda c: c.execute(sql.SELECT_WORKERS).fetchall())
        return [WorkerRow(*r) for r in rows]

    def stop_workers(self, worker_ids: Sequence[str], now: float) -> None:
        """Mark the workers stopped."""
        if worker_ids:
            with self._write_lock, _translated("stop workers"):
                self._writer.execute(sql.STOP_WORKERS, (now, _json_list(worker_ids)))

    def claim_runs(
        self,
        worker_id: str,
        names: Sequence[str | WorkflowKey],
        limit: int,
        now: float,
        lease_ttl: float,
        queues: Sequence[QueueLimits] = (),
    ) -> list[tuple[Lease, RunRow]]:
        """Claim due runs of these workflows and versions, then queued runs within limits.

        One write transaction: SQLite's single writer serializes claimers across processes.
        Leases are measured on the caller's `now` (one machine, one clock).
        """
        if not names or limit <= 0:
            return []
        named = json.dumps(workflow_keys(names))

        def txn(conn: sqlite3.Connection) -> list[RunRow]:
            due = (worker_id, now, now, named, now, worker_id, now - lease_ttl, limit)
            claimed = [_run_row(r) for r in conn.execute(sql.CLAIM_DUE, due).fetchall()]
            for q in queues:
                room = limit - len(claimed)
                if room <= 0:
                    break
                claimed += _claim_from_queue(conn, q, worker_id, named, room, now)
            return claimed

        runs = sorted(self._write("claim runs", txn), key=lambda r: (r.created_at, r.id))
        return [(Lease(r.id, worker_id, r.epoch), r) for r in runs]


class _BodyFailed(Exception):
    """Carries a transactional step body's error past the driver-error translation."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _split_sql(script: str) -> list[str]:
    """Split a migration script into statements, as SQLite's own parser sees them."""
    statements, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    if buf.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in buf.splitlines()
    ):
        raise StoreError(f"a migration ends with an incomplete statement: {buf.strip()[:80]}")
    return statements


def _create(
    conn: sqlite3.Connection, run: NewRun
) -> tuple[RunRow, bool] | WorkflowConflictError | DeduplicatedError:
    status, epoch = ("RUNNING", 1) if run.owner else ("PENDING", 0)
    started = run.created_at if run.owner else None
    params = (
        run.id,
        run.name,
        run.version,
        status,
        run.input,
        run.input_hash,
        run.owner,
        epoch,
        run.parent_id,
        run.created_at,
        run.created_at,
        started,
        run.queue,
        run.priority,
        run.partition,
        run.dedup_id,
        run.deadline_at,
    )
    try:
        inserted = conn.execute(sql.INSERT_RUN, params).rowcount == 1
    except sqlite3.IntegrityError:
        holder = conn.execute(sql.SELECT_DEDUP, (run.queue, run.dedup_id)).fetchone()
        if holder is None:
            raise
        return DeduplicatedError(run.queue or "", run.dedup_id or "", holder[0])
    if inserted:
        row = RunRow(
            run.id,
            run.name,
            status,
            run.input,
            run.input_hash,
            None,
            None,
            run.owner,
            epoch,
            0,
            run.created_at,
            run.created_at,
            None,
            run.version,
            run.parent_id,
            run.queue,
            run.priority,
            run.partition,
            run.dedup_id,
            None,
            started,
            run.deadline_at,
        )
        return row, True
    existing = _run_row(conn.execute(sql.SELECT_RUN, (run.id,)).fetchone())
    return conflict(run, existing) or (existing, False)
