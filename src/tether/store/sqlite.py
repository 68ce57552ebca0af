"""The SQLite store: one file in WAL mode, the zero-configuration default.

Writes go through one connection guarded by a lock (SQLite has one writer at a time anyway);
reads use a second connection, which WAL lets run beside a write. Several processes may share
the file: write transactions start with `BEGIN IMMEDIATE`, so they queue on the busy timeout
instead of failing halfway.
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
    LeaseLostError,
    StoreError,
    StoreUnavailableError,
    WorkflowConflictError,
)
from tether.store import migrate
from tether.store.base import (
    STEP_RETRY,
    Batch,
    BatchResult,
    Completion,
    Connection,
    Lease,
    NewRun,
    RunFilter,
    RunRow,
    StepRecord,
    WorkerRow,
    completion_refused,
    conflict,
    lease_lost,
)

T = TypeVar("T")

RUN_COLUMNS = (
    "id, name, status, input, input_hash, output, error, owner, epoch, recoveries, "
    "created_at, updated_at, finished_at, version, parent_id"
)
STEP_COLUMNS = "run_id, seq, name, status, output, error, attempts, started_at, ended_at, retry_at"
WORKER_COLUMNS = "id, host, boot_id, pid, pid_start, started_at, heartbeat_at, stopped_at"

INSERT_RUN = """
INSERT INTO runs (id, name, version, status, input, input_hash, owner, epoch, parent_id,
                  created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO NOTHING
"""
SELECT_RUN = f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?"
COMPLETE_RUN = """
UPDATE runs SET status = ?, output = ?, error = ?, updated_at = ?, finished_at = ?
WHERE id = ? AND epoch = ? AND status IN ('PENDING', 'RUNNING', 'WAITING')
"""
# The journal write: conditioned on the lease (and on the run not having ended), never
# overwriting a final entry. The WHERE on
# the SELECT is also what lets SQLite parse the upsert after INSERT ... SELECT.
RECORD_STEP = """
INSERT INTO steps (run_id, seq, name, status, output, error, attempts, started_at, ended_at,
                   retry_at)
SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?
WHERE EXISTS (SELECT 1 FROM runs WHERE id = ? AND epoch = ? AND status = 'RUNNING')
ON CONFLICT (run_id, seq) DO UPDATE SET
    name = excluded.name, status = excluded.status, output = excluded.output,
    error = excluded.error, attempts = excluded.attempts, ended_at = excluded.ended_at,
    retry_at = excluded.retry_at
WHERE steps.status = 'retry'
"""
SELECT_STEP = f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ? AND seq = ?"
SELECT_STEPS = f"SELECT {STEP_COLUMNS} FROM steps WHERE run_id = ? ORDER BY seq"
CLAIM_RUNS = f"""
UPDATE runs
SET owner = ?, epoch = epoch + 1, status = 'RUNNING', updated_at = ?,
    recoveries = recoveries + (owner IS NOT NULL)
WHERE id IN (
    SELECT id FROM runs
    WHERE status IN ('PENDING', 'RUNNING')
      AND name IN (SELECT value FROM json_each(?))
      AND (owner IS NULL OR owner NOT IN (
          SELECT id FROM workers WHERE stopped_at IS NULL AND heartbeat_at > ?))
    ORDER BY created_at
    LIMIT ?)
RETURNING {RUN_COLUMNS}
"""
UPSERT_WORKER = f"""
INSERT INTO workers ({WORKER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, stopped_at = NULL
"""
# Workers silent for a day are forgotten; their runs were claimable long before.
PRUNE_WORKERS = "DELETE FROM workers WHERE heartbeat_at < ?"
HEARTBEAT = "UPDATE workers SET heartbeat_at = ? WHERE id = ? AND stopped_at IS NULL"
SELECT_WORKERS = (
    f"SELECT {WORKER_COLUMNS} FROM workers WHERE stopped_at IS NULL ORDER BY started_at"
)
STOP_WORKERS = """
UPDATE workers SET stopped_at = ?
WHERE id IN (SELECT value FROM json_each(?)) AND stopped_at IS NULL
"""
DATABASE_TIME = "SELECT (julianday('now') - 2440587.5) * 86400.0"

_UNAVAILABLE = ("locked", "busy", "disk i/o", "full", "unable to open", "readonly")


def _json_list(values: Sequence[str]) -> str:
    return json.dumps(list(values))


def _translate(exc: sqlite3.Error, what: str) -> StoreError:
    """Turn a sqlite3 error into tether's, saying what was being done."""
    text = str(exc)
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


class SqliteStore:
    """A `Store` on a SQLite file.

    Args:
        path: the database file; its folder is created if missing.
        synchronous: `NORMAL` or `FULL` (see `Settings.sqlite_synchronous`).
        busy_timeout: seconds a write waits for another process's write lock.
    """

    dialect = "sqlite"

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
        return float(self._read("read the time", lambda c: c.execute(DATABASE_TIME).fetchone()[0]))

    # -- runs -------------------------------------------------------------------------------

    def create_run(self, run: NewRun) -> tuple[RunRow, bool]:
        """Insert the run, or return the existing one with the same id and input."""
        with self._write_lock, _translated("create a run"):
            outcome = _create(self._writer, run)
        if isinstance(outcome, WorkflowConflictError):
            raise outcome
        return outcome

    def get_run(self, run_id: str) -> RunRow | None:
        """Return the run or None."""
        row = self._read("read a run", lambda c: c.execute(SELECT_RUN, (run_id,)).fetchone())
        return None if row is None else _run_row(row)

    def list_runs(self, query: RunFilter) -> list[RunRow]:
        """Return matching runs, newest first."""
        sql = f"SELECT {RUN_COLUMNS} FROM runs WHERE 1=1"
        params: list[Any] = []
        if query.statuses:
            sql += " AND status IN (SELECT value FROM json_each(?))"
            params.append(_json_list(query.statuses))
        if query.name is not None:
            sql += " AND name = ?"
            params.append(query.name)
        if query.created_before is not None:
            sql += " AND created_at < ?"
            params.append(query.created_before)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        params.append(query.limit)
        rows = self._read("list runs", lambda c: c.execute(sql, params).fetchall())
        return [_run_row(r) for r in rows]

    def complete_run(
        self, lease: Lease, status: str, output: bytes | None, error: bytes | None, now: float
    ) -> None:
        """Record the final outcome under `lease`."""
        with self._write_lock, _translated("complete a run"):
            refused = _complete(self._writer, Completion(lease, status, output, error, now))
        if refused is not None:
            raise refused

    # -- journal ----------------------------------------------------------------------------

    def load_steps(self, run_id: str) -> list[StepRecord]:
        """Return the journal in order."""
        rows = self._read("read a journal", lambda c: c.execute(SELECT_STEPS, (run_id,)).fetchall())
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

        if len(batch.runs) + len(batch.steps) + len(batch.completions) == 1:
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

        def txn(conn: sqlite3.Connection) -> None:
            conn.execute(PRUNE_WORKERS, (worker.heartbeat_at - 86400.0,))
            conn.execute(
                UPSERT_WORKER,
                (
                    worker.id,
                    worker.host,
                    worker.boot_id,
                    worker.pid,
                    worker.pid_start,
                    worker.started_at,
                    worker.heartbeat_at,
                    worker.stopped_at,
                ),
            )

        self._write("register a worker", txn)

    def heartbeat(self, worker_id: str, now: float) -> bool:
        """Refresh the worker's heartbeat."""
        with self._write_lock, _translated("record a heartbeat"):
            return self._writer.execute(HEARTBEAT, (now, worker_id)).rowcount == 1

    def list_workers(self) -> list[WorkerRow]:
        """Return the workers that have not stopped."""
        rows = self._read("list workers", lambda c: c.execute(SELECT_WORKERS).fetchall())
        return [WorkerRow(*r) for r in rows]

    def stop_workers(self, worker_ids: Sequence[str], now: float) -> None:
        """Mark the workers stopped."""
        if worker_ids:
            with self._write_lock, _translated("stop workers"):
                self._writer.execute(STOP_WORKERS, (now, _json_list(worker_ids)))

    def claim_runs(
        self, worker_id: str, names: Sequence[str], limit: int, now: float, lease_ttl: float
    ) -> list[tuple[Lease, RunRow]]:
        """Claim unowned or orphaned runs; one write transaction serializes claimers."""
        if not names or limit <= 0:
            return []
        params = (worker_id, now, _json_list(names), now - lease_ttl, limit)
        rows = self._write("claim runs", lambda c: c.execute(CLAIM_RUNS, params).fetchall())
        runs = sorted((_run_row(r) for r in rows), key=lambda r: r.created_at)
        return [(Lease(r.id, worker_id, r.epoch), r) for r in runs]


class _BodyFailed(Exception):
    """Carries a transactional step body's error past the driver-error translation."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class _Rollback(Exception):
    """Carries a transactional step's outcome out of a transaction that must not commit."""

    def __init__(self, outcome: StepRecord | LeaseLostError) -> None:
        self.outcome = outcome


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


def _create(conn: sqlite3.Connection, run: NewRun) -> tuple[RunRow, bool] | WorkflowConflictError:
    status, epoch = ("RUNNING", 1) if run.owner else ("PENDING", 0)
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
    )
    if conn.execute(INSERT_RUN, params).rowcount == 1:
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
        )
        return row, True
    existing = _run_row(conn.execute(SELECT_RUN, (run.id,)).fetchone())
    return conflict(run, existing) or (existing, False)


def _record(
    conn: sqlite3.Connection, lease: Lease, record: StepRecord
) -> StepRecord | LeaseLostError:
    """Write a journal entry; if nothing was written, say why.

    Either a final entry exists (returned: the outcome that stands) or the lease is lost.
    """
    if conn.execute(RECORD_STEP, _step_params(lease, record)).rowcount == 1:
        return record
    row = conn.execute(SELECT_STEP, (record.run_id, record.seq)).fetchone()
    if row is not None and row[3] != STEP_RETRY:
        return StepRecord(*row)
    run = conn.execute(SELECT_RUN, (lease.run_id,)).fetchone()
    return lease_lost(lease, None if run is None else _run_row(run))


def _complete(conn: sqlite3.Connection, c: Completion) -> LeaseLostError | None:
    params = (c.status, c.output, c.error, c.now, c.now, c.lease.run_id, c.lease.epoch)
    if conn.execute(COMPLETE_RUN, params).rowcount == 1:
        return None
    row = conn.execute(SELECT_RUN, (c.lease.run_id,)).fetchone()
    return completion_refused(c.lease, None if row is None else _run_row(row))


def _step_params(lease: Lease, r: StepRecord) -> tuple[Any, ...]:
    return (
        r.run_id,
        r.seq,
        r.name,
        r.status,
        r.output,
        r.error,
        r.attempts,
        r.started_at,
        r.ended_at,
        r.retry_at,
        lease.run_id,
        lease.epoch,
    )


def _run_row(row: Sequence[Any]) -> RunRow:
    try:
        return RunRow(*row)
    except TypeError as exc:
        raise CorruptRowError(f"a run row has an unexpected shape: {exc}") from None
