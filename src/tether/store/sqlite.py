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
    DeduplicatedError,
    LeaseLostError,
    StoreError,
    StoreUnavailableError,
    WorkflowConflictError,
    WorkflowFinishedError,
    WorkflowNotFoundError,
)
from tether.store import migrate
from tether.store import sqlite_sql as sql
from tether.store.base import (
    FINAL_RUN_STATUSES,
    NOT_FINAL,
    STEP_OK,
    Batch,
    BatchResult,
    Completion,
    Connection,
    Lease,
    NewMessage,
    NewRun,
    QueueLimits,
    RunFilter,
    RunRow,
    StepRecord,
    WorkerRow,
    completion_refused,
    conflict,
    lease_lost,
)

T = TypeVar("T")

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

    def run_statuses(self, run_ids: Sequence[str]) -> dict[str, str]:
        """Return the status of each of these runs that exists."""
        rows = self._read(
            "read statuses", lambda c: c.execute(sql.RUN_STATUSES, (_json_list(run_ids),))
        )
        return {r[0]: r[1] for r in rows}

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

    # -- waiting, messages, events ----------------------------------------------------------

    def suspend(
        self,
        lease: Lease,
        wake_at: float | None,
        topics: Sequence[str],
        runs: Sequence[str],
        now: float,
    ) -> bool:
        """Release the run to WAITING unless what it waits for is already there."""

        def txn(conn: sqlite3.Connection) -> bool:
            state = conn.execute(sql.LEASE_STATE, (lease.run_id,)).fetchone()
            if state is None or state[0] != lease.epoch or state[1] != "RUNNING":
                row = conn.execute(sql.SELECT_RUN, (lease.run_id,)).fetchone()
                raise lease_lost(lease, None if row is None else _run_row(row))
            if (
                topics
                and conn.execute(
                    sql.PENDING_MESSAGE_ON, (lease.run_id, _json_list(topics))
                ).fetchone()
            ):
                return False
            if runs:
                targets = _json_list(runs)
                ended = conn.execute(sql.ANY_ENDED, (targets,)).fetchone()[0]
                known = conn.execute(sql.COUNT_RUNS, (targets,)).fetchone()[0]
                if ended or known < len(set(runs)):
                    return False
            conn.execute(sql.DROP_WAITS, (lease.run_id,))
            for target in runs:
                conn.execute(sql.ADD_WAIT, (target, lease.run_id))
            conn.execute(sql.SUSPEND, (wake_at, now, lease.run_id, lease.epoch))
            return True

        return self._write("suspend a run", txn)

    def send_message(self, message: NewMessage) -> bool:
        """Put a message in the run's inbox and wake the run if it waits."""

        def txn(conn: sqlite3.Connection) -> bool:
            row = conn.execute(sql.RUN_STATUS, (message.run_id,)).fetchone()
            if row is None:
                raise WorkflowNotFoundError(message.run_id)
            if row[0] in FINAL_RUN_STATUSES:
                raise WorkflowFinishedError(message.run_id, row[0])
            m = message
            params = (m.run_id, m.topic, m.payload, m.key, m.created_at)
            if conn.execute(sql.INSERT_MESSAGE, params).rowcount == 0:
                return False
            conn.execute(sql.WAKE_RUN, (m.created_at, m.created_at, m.run_id))
            return True

        return self._write("send a message", txn)

    def consume_message(
        self, lease: Lease, seq: int, name: str, topic: str, now: float
    ) -> StepRecord | LeaseLostError | None:
        """Take the oldest unread message on `topic` and journal it at `seq`."""

        def txn(conn: sqlite3.Connection) -> StepRecord | LeaseLostError | None:
            existing = conn.execute(sql.SELECT_STEP, (lease.run_id, seq)).fetchone()
            if existing is not None and existing[3] not in NOT_FINAL:
                return StepRecord(*existing)
            message = conn.execute(sql.OLDEST_MESSAGE, (lease.run_id, topic)).fetchone()
            if message is None:
                return None
            started = existing[7] if existing is not None else now
            record = StepRecord(lease.run_id, seq, name, STEP_OK, message[1], None, 1, started, now)
            outcome = _record(conn, lease, record)
            if outcome is not record:
                raise _Rollback(outcome)
            conn.execute(sql.CONSUME, (now, message[0]))
            return record

        try:
            return self._write("take a message", txn)
        except _Rollback as rb:
            return rb.outcome

    def set_event(
        self, lease: Lease, record: StepRecord, key: str, value: bytes
    ) -> StepRecord | LeaseLostError:
        """Journal `record` and set the run's event, in one transaction."""

        def txn(conn: sqlite3.Connection) -> StepRecord | LeaseLostError:
            outcome = _record(conn, lease, record)
            if outcome is record:
                conn.execute(sql.UPSERT_EVENT, (lease.run_id, key, value, record.ended_at))
            return outcome

        return self._write("set an event", txn)

    def get_event(self, run_id: str, key: str) -> bytes | None:
        """Return the run's event `key`, or None."""
        row = self._read(
            "read an event", lambda c: c.execute(sql.SELECT_EVENT, (run_id, key)).fetchone()
        )
        return None if row is None else bytes(row[0])

    # -- control ----------------------------------------------------------------------------

    def cancel_run(self, run_id: str, reason: bytes | None, now: float) -> list[str]:
        """Cancel the run and its unfinished descendants."""

        def txn(conn: sqlite3.Connection) -> list[str]:
            if conn.execute(sql.RUN_STATUS, (run_id,)).fetchone() is None:
                raise WorkflowNotFoundError(run_id)
            return _cancel_trees(conn, [run_id], reason, now)

        return self._write("cancel a run", txn)

    def expire_runs(self, reason: bytes, now: float) -> list[str]:
        """Cancel the unfinished runs whose deadline has passed, and their descendants."""

        def txn(conn: sqlite3.Connection) -> list[str]:
            expired = [r[0] for r in conn.execute(sql.EXPIRED, (now,)).fetchall()]
            return _cancel_trees(conn, expired, reason, now) if expired else []

        return self._write("expire runs", txn)

    def resume_run(self, run_id: str, now: float) -> RunRow:
        """Make a cancelled or failed run PENDING again, dropping its failure's entries."""

        def txn(conn: sqlite3.Connection) -> RunRow:
            if conn.execute(sql.RESUME_RUN, (now, run_id)).rowcount == 1:
                conn.execute(sql.DROP_FAILED_TAIL, (run_id, run_id))
            row = conn.execute(sql.SELECT_RUN, (run_id,)).fetchone()
            if row is None:
                raise WorkflowNotFoundError(run_id)
            return _run_row(row)

        return self._write("resume a run", txn)

    def fork_run(self, run_id: str, new_id: str, from_seq: int, now: float) -> RunRow:
        """Create `new_id` from `run_id`'s workflow, input and journal below `from_seq`."""

        def txn(conn: sqlite3.Connection) -> RunRow:
            if conn.execute(sql.RUN_STATUS, (run_id,)).fetchone() is None:
                raise WorkflowNotFoundError(run_id)
            if conn.execute(sql.FORK_RUN, (new_id, now, now, run_id)).rowcount == 0:
                raise WorkflowConflictError(new_id, "that id already (fork under a new id)")
            conn.execute(sql.FORK_STEPS, (new_id, run_id, from_seq))
            return _run_row(conn.execute(sql.SELECT_RUN, (new_id,)).fetchone())

        return self._write("fork a run", txn)

    def next_wake_at(self) -> float | None:
        """Return the earliest timer among waiting runs."""
        row = self._read("read timers", lambda c: c.execute(sql.NEXT_WAKE).fetchone())
        return None if row is None or row[0] is None else float(row[0])

    def queue_counts(self) -> list[tuple[str, str, int]]:
        """Return (queue, status, count) rows."""
        rows = self._read("count queues", lambda c: c.execute(sql.QUEUE_COUNTS).fetchall())
        return [(r[0], r[1], int(r[2])) for r in rows]

    def advance_schedule(self, name: str, previous: float | None, tick: float) -> bool:
        """Compare-and-set schedule `name`'s latest tick."""

        def txn(conn: sqlite3.Connection) -> bool:
            if previous is None:
                return conn.execute(sql.INSERT_TICK, (name, tick)).rowcount == 1
            return conn.execute(sql.ADVANCE_TICK, (tick, name, previous)).rowcount == 1

        return self._write("advance a schedule", txn)

    def last_tick(self, name: str) -> float | None:
        """Return schedule `name`'s latest tick."""
        row = self._read("read a schedule", lambda c: c.execute(sql.LAST_TICK, (name,)).fetchone())
        return None if row is None else float(row[0])

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
        names: Sequence[str],
        limit: int,
        now: float,
        lease_ttl: float,
        queues: Sequence[QueueLimits] = (),
    ) -> list[tuple[Lease, RunRow]]:
        """Claim due runs, then queued runs within their queues' limits.

        One write transaction: SQLite's single writer serializes claimers across processes.
        """
        if not names or limit <= 0:
            return []
        named = _json_list(names)

        def txn(conn: sqlite3.Connection) -> list[RunRow]:
            due = (worker_id, now, now, named, now, now - lease_ttl, limit)
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


class _Rollback(Exception):
    """Carries an outcome out of a transaction that must not commit."""

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


def _record(
    conn: sqlite3.Connection, lease: Lease, record: StepRecord
) -> StepRecord | LeaseLostError:
    """Write a journal entry; if nothing was written, say why.

    Either a final entry exists (returned: the outcome that stands) or the lease is lost.
    """
    if conn.execute(sql.RECORD_STEP, _step_params(lease, record)).rowcount == 1:
        return record
    row = conn.execute(sql.SELECT_STEP, (record.run_id, record.seq)).fetchone()
    if row is not None and row[3] not in NOT_FINAL:
        return StepRecord(*row)
    run = conn.execute(sql.SELECT_RUN, (lease.run_id,)).fetchone()
    return lease_lost(lease, None if run is None else _run_row(run))


def _complete(conn: sqlite3.Connection, c: Completion) -> LeaseLostError | None:
    params = (c.status, c.output, c.error, c.now, c.now, c.lease.run_id, c.lease.epoch)
    if conn.execute(sql.COMPLETE_RUN, params).rowcount == 1:
        _wake_waiters(conn, [c.lease.run_id], c.now)
        return None
    row = conn.execute(sql.SELECT_RUN, (c.lease.run_id,)).fetchone()
    return completion_refused(c.lease, None if row is None else _run_row(row))


def _wake_waiters(conn: sqlite3.Connection, ended: list[str], now: float) -> None:
    targets = _json_list(ended)
    conn.execute(sql.WAKE_WAITERS, (now, now, targets))
    conn.execute(sql.FORGET_WAITERS, (targets,))


def _cancel_trees(
    conn: sqlite3.Connection, roots: list[str], reason: bytes | None, now: float
) -> list[str]:
    tree: list[str] = []
    for root in roots:
        tree += [r[0] for r in conn.execute(sql.RUN_TREE, (root,)).fetchall()]
    params = (reason, now, now, _json_list(tree))
    cancelled = [r[0] for r in conn.execute(sql.CANCEL_RUNS, params).fetchall()]
    if cancelled:
        _wake_waiters(conn, cancelled, now)
    return sorted(cancelled)


def _claim_from_queue(
    conn: sqlite3.Connection, q: QueueLimits, worker_id: str, named: str, room: int, now: float
) -> list[RunRow]:
    """Claim what `q`'s limits allow now, highest priority and oldest first."""
    allowed = room
    if q.concurrency is not None:
        active = conn.execute(sql.QUEUE_ACTIVE, (q.name,)).fetchone()[0]
        allowed = min(allowed, q.concurrency - active)
    if q.worker_concurrency is not None:
        mine = conn.execute(sql.QUEUE_MINE, (q.name, worker_id)).fetchone()[0]
        allowed = min(allowed, q.worker_concurrency - mine)
    if q.rate_limit is not None:
        n, per = q.rate_limit
        recent = conn.execute(sql.QUEUE_STARTED_SINCE, (q.name, now - per)).fetchone()[0]
        allowed = min(allowed, n - recent)
    if allowed <= 0:
        return []
    if q.partition_concurrency is None:
        rows = conn.execute(sql.QUEUE_CANDIDATES, (q.name, named, allowed)).fetchall()
    else:
        params = (q.name, named, q.name, q.partition_concurrency, allowed)
        rows = conn.execute(sql.QUEUE_PARTITION_CANDIDATES, params).fetchall()
    if not rows:
        return []
    ids = _json_list([r[0] for r in rows])
    return [_run_row(r) for r in conn.execute(sql.CLAIM_IDS, (worker_id, now, now, ids))]


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
