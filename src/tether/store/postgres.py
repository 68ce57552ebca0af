"""The PostgreSQL store: several processes on several machines share one database.

Every table lives in the schema `Settings.pg_schema` and every statement names it; the schema
is never put on a connection's `search_path`, because a transactional step's body gets the
same connection and its tables live in the user's own schema.

Hot writes (journal entries, claims, heartbeats, completions) go through one autocommit
connection guarded by a lock: each is a single statement, so one round trip and one commit.
Reads and transactional steps borrow connections from a pool. A connection that breaks is
replaced on the next call, so the store outlives a database restart.

Fencing: a journal write checks the run's epoch and locks the run's row `FOR SHARE` in the
same statement; a claim locks the rows it takes `FOR UPDATE SKIP LOCKED`. A claim therefore
never takes a run while one of its journal writes is in flight (it passes over it until the
write has committed), and a write that arrives after a claim waits for it and then finds the
epoch moved. A claimer never reads a journal that a fenced-off worker appends to later.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import operator
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool

from tether.errors import (
    ConfigError,
    CorruptRowError,
    LeaseLostError,
    StoreError,
    StoreUnavailableError,
    WorkflowConflictError,
)
from tether.settings import Settings
from tether.store import migrate, redact
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
_Conn = psycopg.Connection[tuple[Any, ...]]
_Outcome = StepRecord | LeaseLostError
_Item = tuple[Lease, StepRecord]
_Created = tuple[RunRow, bool] | WorkflowConflictError
# Row dataclasses as parameter tuples, in field order (the statements list columns to match).
_NEW_RUN_FIELDS = operator.attrgetter(*(f.name for f in dataclasses.fields(NewRun)))
_STEP_FIELDS = operator.attrgetter(*(f.name for f in dataclasses.fields(StepRecord)))
_WORKER_FIELDS = operator.attrgetter(*(f.name for f in dataclasses.fields(WorkerRow)))

# Templates: `{s}` is the quoted schema, filled in once per store by `_Sql`. Times are float
# Unix seconds on the wire: `to_timestamp` on the way in, `extract(epoch ...)` on the way out
# (exact to the microsecond, timestamptz's precision).
RUN_COLUMNS = (
    "id, name, status, input, input_hash, output, error, owner, epoch, recoveries, "
    "extract(epoch FROM created_at)::float8, extract(epoch FROM updated_at)::float8, "
    "extract(epoch FROM finished_at)::float8, version, parent_id"
)
STEP_COLUMNS = (
    "run_id, seq, name, status, output, error, attempts, "
    "extract(epoch FROM started_at)::float8, extract(epoch FROM ended_at)::float8, "
    "extract(epoch FROM retry_at)::float8"
)
WORKER_COLUMNS = (
    "id, host, boot_id, pid, pid_start, extract(epoch FROM started_at)::float8, "
    "extract(epoch FROM heartbeat_at)::float8, extract(epoch FROM stopped_at)::float8"
)

# Serializes processes migrating the same schema: (a constant for tether, the schema's hash).
LOCK_SCHEMA = "SELECT pg_advisory_xact_lock(1952805992, hashtext(%s))"
CREATE_SCHEMA = "CREATE SCHEMA IF NOT EXISTS {s}"
CREATE_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS {s}.schema_version (version integer NOT NULL)"
VERSION_TABLE_EXISTS = "SELECT to_regclass(%s) IS NOT NULL"
SELECT_VERSION = "SELECT coalesce(max(version), 0) FROM {s}.schema_version"
INSERT_VERSION = "INSERT INTO {s}.schema_version (version) VALUES (%s)"
# Migration files name no schema; this makes their CREATEs land in ours, for one transaction.
SET_MIGRATION_PATH = "SET LOCAL search_path TO {s}"

INSERT_RUN = f"""
INSERT INTO {{s}}.runs (id, name, input, input_hash, created_at, owner, version, parent_id,
                        status, epoch, updated_at)
VALUES (%s, %s, %s, %s, to_timestamp(%s::float8), %s, %s, %s, %s, %s, to_timestamp(%s::float8))
ON CONFLICT (id) DO NOTHING
RETURNING {RUN_COLUMNS}
"""
INSERT_RUNS = f"""
INSERT INTO {{s}}.runs (id, name, input, input_hash, created_at, owner, version, parent_id,
                        status, epoch, updated_at)
SELECT v.id, v.name, v.input, v.input_hash, to_timestamp(v.created_at), v.owner, v.version,
       v.parent_id, v.status, v.epoch, to_timestamp(v.created_at)
FROM unnest(%s::text[], %s::text[], %s::bytea[], %s::text[], %s::float8[], %s::text[],
            %s::text[], %s::text[], %s::text[], %s::int8[])
     AS v(id, name, input, input_hash, created_at, owner, version, parent_id, status, epoch)
ON CONFLICT (id) DO NOTHING
RETURNING {RUN_COLUMNS}
"""
SELECT_RUN = f"SELECT {RUN_COLUMNS} FROM {{s}}.runs WHERE id = %s"
SELECT_RUNS = f"SELECT {RUN_COLUMNS} FROM {{s}}.runs WHERE id = ANY(%s::text[])"
LIST_RUNS = f"SELECT {RUN_COLUMNS} FROM {{s}}.runs WHERE true"
COMPLETE_RUN = """
UPDATE {s}.runs SET status = %(status)s, output = %(output)s, error = %(error)s,
    updated_at = to_timestamp(%(now)s::float8), finished_at = to_timestamp(%(now)s::float8)
WHERE id = %(id)s AND epoch = %(epoch)s AND status IN ('PENDING', 'RUNNING', 'WAITING')
"""
COMPLETE_RUNS = """
UPDATE {s}.runs AS r SET status = v.status, output = v.output, error = v.error,
    updated_at = to_timestamp(v.now), finished_at = to_timestamp(v.now)
FROM unnest(%s::text[], %s::int8[], %s::text[], %s::bytea[], %s::bytea[], %s::float8[])
     AS v(id, epoch, status, output, error, now)
WHERE r.id = v.id AND r.epoch = v.epoch AND r.status IN ('PENDING', 'RUNNING', 'WAITING')
RETURNING r.id
"""
# The journal write. Fenced: a row is written only while its lease's epoch is the run's (and the
# run has not ended), and
# the run's row is locked FOR SHARE until the commit, so a claim (which bumps the epoch) cannot
# slip in between the check and the commit. A final entry is never overwritten; a 'retry'
# entry is. `{source}` is a batch (RECORD_STEPS, column arrays) or one entry (RECORD_STEP:
# scalars, which plan and bind in half the time of one-element arrays on the hot path).
_RECORD = """
INSERT INTO {s}.steps AS t (run_id, seq, name, status, output, error, attempts, started_at,
                            ended_at, retry_at)
SELECT v.run_id, v.seq, v.name, v.status, v.output, v.error, v.attempts,
       to_timestamp(v.started_at), to_timestamp(v.ended_at), to_timestamp(v.retry_at)
FROM {source}
     AS v(run_id, seq, name, status, output, error, attempts, started_at, ended_at, retry_at,
          lease_run, lease_epoch)
WHERE EXISTS (SELECT 1 FROM {s}.runs r WHERE r.id = v.lease_run AND r.epoch = v.lease_epoch
              AND r.status = 'RUNNING' FOR SHARE)
ON CONFLICT (run_id, seq) DO UPDATE SET
    name = excluded.name, status = excluded.status, output = excluded.output,
    error = excluded.error, attempts = excluded.attempts, ended_at = excluded.ended_at,
    retry_at = excluded.retry_at
WHERE t.status = 'retry'
RETURNING t.run_id, t.seq
"""
RECORD_STEPS = _RECORD.replace(
    "{source}",
    "unnest(%s::text[], %s::int4[], %s::text[], %s::text[], %s::bytea[], %s::bytea[],\n"
    "            %s::int4[], %s::float8[], %s::float8[], %s::float8[], %s::text[], %s::int8[])",
)
RECORD_STEP = _RECORD.replace(
    "{source}",
    "(VALUES (%s::text, %s::int4, %s::text, %s::text, %s::bytea, %s::bytea, %s::int4,\n"
    "         %s::float8, %s::float8, %s::float8, %s::text, %s::int8))",
)
SELECT_STEPS = f"SELECT {STEP_COLUMNS} FROM {{s}}.steps WHERE run_id = %s ORDER BY seq"
SELECT_STEPS_AT = f"""
SELECT {STEP_COLUMNS} FROM {{s}}.steps
WHERE (run_id, seq) IN (SELECT * FROM unnest(%s::text[], %s::int4[]))
"""
# SKIP LOCKED: concurrent claimers pass over each other's rows, and over runs with a journal
# write in flight (see the module docstring). MATERIALIZED: the pick runs exactly once.
CLAIM_RUNS = f"""
WITH picked AS MATERIALIZED (
    SELECT id AS picked_id FROM {{s}}.runs
    WHERE status IN ('PENDING', 'RUNNING') AND name = ANY(%(names)s::text[])
      AND (owner IS NULL OR owner NOT IN (
          SELECT id FROM {{s}}.workers
          WHERE stopped_at IS NULL AND heartbeat_at > to_timestamp(%(alive_after)s::float8)))
    ORDER BY created_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED)
UPDATE {{s}}.runs SET owner = %(worker)s, epoch = runs.epoch + 1, status = 'RUNNING',
    recoveries = runs.recoveries + (runs.owner IS NOT NULL)::int,
    updated_at = to_timestamp(%(now)s::float8)
FROM picked WHERE runs.id = picked.picked_id
RETURNING {RUN_COLUMNS}
"""
UPSERT_WORKER = """
INSERT INTO {s}.workers (id, host, boot_id, pid, pid_start, started_at, heartbeat_at, stopped_at)
VALUES (%s, %s, %s, %s, %s, to_timestamp(%s::float8), to_timestamp(%s::float8),
        to_timestamp(%s::float8))
ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, stopped_at = NULL
"""
# Workers silent for a day are forgotten; their runs were claimable long before.
PRUNE_WORKERS = "DELETE FROM {s}.workers WHERE heartbeat_at < to_timestamp(%s::float8)"
HEARTBEAT = """
UPDATE {s}.workers SET heartbeat_at = to_timestamp(%s::float8)
WHERE id = %s AND stopped_at IS NULL
"""
SELECT_WORKERS = (
    f"SELECT {WORKER_COLUMNS} FROM {{s}}.workers WHERE stopped_at IS NULL ORDER BY started_at"
)
STOP_WORKERS = """
UPDATE {s}.workers SET stopped_at = to_timestamp(%s::float8)
WHERE id = ANY(%s::text[]) AND stopped_at IS NULL
"""
DATABASE_TIME = "SELECT extract(epoch FROM clock_timestamp())::float8"


@dataclasses.dataclass(frozen=True, slots=True)
class _Sql:
    """The templates above that name tables, with the schema filled in once per store."""

    create_schema: str
    create_version_table: str
    select_version: str
    insert_version: str
    set_migration_path: str
    insert_run: str
    insert_runs: str
    select_run: str
    select_runs: str
    list_runs: str
    complete_run: str
    complete_runs: str
    record_steps: str
    record_step: str
    select_steps: str
    select_steps_at: str
    claim_runs: str
    upsert_worker: str
    prune_workers: str
    heartbeat: str
    select_workers: str
    stop_workers: str

    @classmethod
    def for_schema(cls, schema: str) -> _Sql:
        quoted = f'"{schema}"'  # Settings allows identifier characters only: no quotes
        templates = globals()
        return cls(
            **{f.name: templates[f.name.upper()].format(s=quoted) for f in dataclasses.fields(cls)}
        )


class PostgresStore:
    """A `Store` in a schema of a PostgreSQL database.

    Args:
        url: `postgresql://user:password@host:5432/dbname` (libpq parameters allowed).
        settings: `pg_schema`, `pg_pool_size`, `connect_timeout` and `statement_timeout`.
    """

    dialect = "postgresql"
    inline_writes = False

    def __init__(self, url: str, settings: Settings) -> None:
        self.schema = settings.pg_schema
        self._sql = _Sql.for_schema(settings.pg_schema)
        self._where = redact(url)
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise ConfigError(f"database URL {self._where!r} is not valid: {exc}") from None
        self._password = str(params.get("password") or "")
        self._url = url
        self._kwargs = _connect_kwargs(params, settings)
        self._lock = threading.Lock()
        self._writer: _Conn | None = None
        self._closed = False
        self._pool: ConnectionPool[_Conn] = ConnectionPool(
            url,
            kwargs=self._kwargs,
            min_size=1,
            max_size=settings.pg_pool_size,
            timeout=settings.connect_timeout,
            reset=_autocommit,
            name=f"tether-{self.schema}",
            open=True,
        )

    # -- plumbing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """Turn driver errors into tether's, saying what was being done and what to do."""
        try:
            yield
        except psycopg.OperationalError as exc:
            if self._closed:
                raise self._closed_error() from exc
            raise StoreUnavailableError(
                f"{self._failed(what, exc)}; tether retries while the database is unavailable, "
                "check that the server is up and reachable"
            ) from exc
        except psycopg.errors.UndefinedTable as exc:
            raise StoreError(
                f"{self._failed(what, exc)}; create tether's tables with `tether migrate`"
            ) from exc
        except psycopg.Error as exc:
            raise StoreError(f"{self._failed(what, exc)}; the server's log may say more") from exc

    def _failed(self, what: str, exc: Exception) -> str:
        text = str(exc).strip() or type(exc).__name__
        if self._password:
            text = text.replace(self._password, "***")
        return f"PostgreSQL at {self._where} could not {what}: {text}"

    def _closed_error(self) -> StoreError:
        return StoreError("this PostgreSQL store was closed; open a new one with open_store()")

    def _write(self, what: str, fn: Callable[[_Conn], T]) -> T:
        """Run `fn` on the writer connection (autocommit), connecting it first if needed."""
        if self._closed:
            raise self._closed_error()
        with self._lock, self._translated(what):
            conn = self._writer
            if conn is None:
                conn = self._writer = psycopg.connect(self._url, **self._kwargs)
            try:
                return fn(conn)
            except BaseException:
                if conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
                    self._writer = None  # broken or interrupted: reconnect on the next call
                    conn.close()
                raise

    @contextlib.contextmanager
    def _borrowed(self) -> Iterator[_Conn]:
        """Lend a pool connection (autocommit); after a broken one, weed out its siblings."""
        if self._closed:
            raise self._closed_error()
        conn = self._pool.getconn()
        try:
            yield conn
        finally:
            broken = conn.broken
            self._pool.putconn(conn)
            if broken:
                self._pool.check()

    def _pooled(self, what: str, fn: Callable[[_Conn], T]) -> T:
        """Run `fn` on a pooled autocommit connection.

        For reads, and for writes that must not queue behind the journal writer.
        """
        with self._translated(what), self._borrowed() as conn:
            return fn(conn)

    def close(self) -> None:
        """Close the writer connection and the pool."""
        self._closed = True
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        self._pool.close()

    # -- schema -----------------------------------------------------------------------------

    def migrate(self) -> int:
        """Apply pending migrations, each in its own transaction, one process at a time.

        A schema already current is only read, so workers whose role may not create tables
        can still start (and call this) once an administrator has run `tether migrate`.
        """
        if migrate.pending(self.dialect, self._version()):
            while self._write("migrate the schema", self._migrate_one):
                pass
        return self.check_schema()

    def _migrate_one(self, conn: _Conn) -> bool:
        with conn.transaction():
            conn.execute(LOCK_SCHEMA, (self.schema,))
            conn.execute(self._sql.create_schema)
            conn.execute(self._sql.create_version_table)
            todo = migrate.pending(self.dialect, _scalar(conn, self._sql.select_version))
            if not todo:
                return False
            conn.execute(self._sql.set_migration_path)
            conn.execute(todo[0].sql)  # no parameters: several statements are allowed
            conn.execute(self._sql.insert_version, (todo[0].version,))
            return True

    def check_schema(self) -> int:
        """Return the schema version or raise `SchemaVersionError`."""
        return migrate.require_current(self.dialect, self._version())

    def _version(self) -> int:
        """The recorded schema version; 0 for a schema (or database) never migrated."""

        def read(conn: _Conn) -> int:
            if not _scalar(conn, VERSION_TABLE_EXISTS, (f'"{self.schema}".schema_version',)):
                return 0
            return int(_scalar(conn, self._sql.select_version))

        return self._pooled("read the schema version", read)

    def database_time(self) -> float:
        """Return the database server's clock."""
        return float(self._pooled("read the time", lambda c: _scalar(c, DATABASE_TIME)))

    # -- runs -------------------------------------------------------------------------------

    def create_run(self, run: NewRun) -> tuple[RunRow, bool]:
        """Insert the run, or return the existing one with the same id and input.

        On a pooled connection: starts from many clients proceed side by side.
        """
        [outcome] = self._pooled("create a run", lambda c: self._create(c, [run]))
        if isinstance(outcome, WorkflowConflictError):
            raise outcome
        return outcome

    def get_run(self, run_id: str) -> RunRow | None:
        """Return the run or None."""
        row = self._pooled(
            "read a run",
            lambda c: c.execute(self._sql.select_run, (run_id,), binary=True).fetchone(),
        )
        return None if row is None else _run_row(row)

    def list_runs(self, query: RunFilter) -> list[RunRow]:
        """Return matching runs, newest first."""
        sql = self._sql.list_runs
        params: list[Any] = []
        if query.statuses:
            sql += " AND status = ANY(%s::text[])"
            params.append(list(query.statuses))
        if query.name is not None:
            sql += " AND name = %s"
            params.append(query.name)
        if query.created_before is not None:
            sql += " AND created_at < to_timestamp(%s::float8)"
            params.append(query.created_before)
        sql += " ORDER BY created_at DESC, id DESC LIMIT %s"
        params.append(query.limit)
        rows = self._pooled("list runs", lambda c: c.execute(sql, params, binary=True).fetchall())
        return [_run_row(r) for r in rows]

    def complete_run(
        self, lease: Lease, status: str, output: bytes | None, error: bytes | None, now: float
    ) -> None:
        """Record the final outcome under `lease` (on a pooled connection)."""
        completion = Completion(lease, status, output, error, now)
        [refused] = self._pooled("complete a run", lambda c: self._complete(c, [completion]))
        if refused is not None:
            raise refused

    def _create(self, conn: _Conn, runs: Sequence[NewRun]) -> list[_Created]:
        """Insert runs; for each, (row, created) or the conflict with the run of that id."""
        if len(runs) == 1:
            rows = conn.execute(
                self._sql.insert_run, _new_run_params(runs[0]), prepare=True, binary=True
            ).fetchall()
        else:
            arrays = [list(c) for c in zip(*map(_new_run_params, runs), strict=True)]
            rows = conn.execute(self._sql.insert_runs, arrays[:-1], binary=True).fetchall()
        made = {r.id: r for r in map(_run_row, rows)}
        missing = [run.id for run in runs if run.id not in made]
        existing: dict[str, RunRow] = {}
        if missing:
            found = conn.execute(self._sql.select_runs, (missing,), binary=True).fetchall()
            existing = {r.id: r for r in map(_run_row, found)}
        out: list[_Created] = []
        for run in runs:
            if run.id in made:
                out.append((made.pop(run.id), True))  # a repeated id is found existing
            else:
                row = existing[run.id]
                out.append(conflict(run, row) or (row, False))
        return out

    def _complete(self, conn: _Conn, items: Sequence[Completion]) -> list[LeaseLostError | None]:
        """Record final outcomes; for each, None or why it was refused."""
        if len(items) == 1:
            c = items[0]
            params = {
                "status": c.status,
                "output": c.output,
                "error": c.error,
                "now": c.now,
                "id": c.lease.run_id,
                "epoch": c.lease.epoch,
            }
            done = (
                {c.lease.run_id}
                if conn.execute(self._sql.complete_run, params, prepare=True).rowcount == 1
                else set()
            )
        else:
            arrays = [
                [c.lease.run_id for c in items],
                [c.lease.epoch for c in items],
                [c.status for c in items],
                [c.output for c in items],
                [c.error for c in items],
                [c.now for c in items],
            ]
            done = {r[0] for r in conn.execute(self._sql.complete_runs, arrays).fetchall()}
        missing = [c.lease.run_id for c in items if c.lease.run_id not in done]
        runs: dict[str, RunRow] = {}
        if missing:
            found = conn.execute(self._sql.select_runs, (missing,), binary=True).fetchall()
            runs = {r.id: r for r in map(_run_row, found)}
        return [
            None
            if c.lease.run_id in done
            else completion_refused(c.lease, runs.get(c.lease.run_id))
            for c in items
        ]

    # -- journal ----------------------------------------------------------------------------

    def load_steps(self, run_id: str) -> list[StepRecord]:
        """Return the journal in order."""
        rows = self._pooled(
            "read a journal",
            lambda c: c.execute(self._sql.select_steps, (run_id,), binary=True).fetchall(),
        )
        return [StepRecord(*r) for r in rows]

    def record_steps(self, items: Sequence[_Item]) -> list[_Outcome]:
        """Append journal entries in one commit: one statement, one round trip."""
        if not items:
            return []
        return self._write("record steps", lambda conn: self._record_rounds(conn, items))

    def _record_rounds(self, conn: _Conn, items: Sequence[_Item]) -> list[_Outcome]:
        rounds = _rounds(items)
        if len(rounds) == 1:  # in autocommit, the statement is the transaction
            return self._record(conn, items)
        # The same position twice (a 'retry' entry then its successor): one statement
        # cannot upsert a row twice, so each repeat goes in a later statement.
        out: list[_Outcome | None] = [None] * len(items)
        with conn.transaction():
            for indexes in rounds:
                done = self._record(conn, [items[i] for i in indexes])
                for i, outcome in zip(indexes, done, strict=True):
                    out[i] = outcome
        return [o for o in out if o is not None]

    def _record(self, conn: _Conn, items: Sequence[_Item]) -> list[_Outcome]:
        """Write entries at distinct positions; explain those that were not written."""
        if len(items) == 1:
            cur = conn.execute(self._sql.record_step, _step_params(*items[0]), prepare=True)
        else:
            cur = conn.execute(self._sql.record_steps, _step_arrays(items), prepare=True)
        written = set(cur.fetchall())
        missed = [item for item in items if (item[1].run_id, item[1].seq) not in written]
        explained = iter(self._resolve(conn, missed) if missed else [])
        return [rec if (rec.run_id, rec.seq) in written else next(explained) for _, rec in items]

    def write_batch(self, batch: Batch) -> BatchResult:
        """Commit new runs, journal entries and completions together.

        A batch of one kind is a single statement in autocommit; a mixed batch is one
        transaction of up to three statements.
        """

        def write(conn: _Conn) -> BatchResult:
            return BatchResult(
                runs=self._create(conn, batch.runs) if batch.runs else [],
                steps=self._record_rounds(conn, batch.steps) if batch.steps else [],
                completions=self._complete(conn, batch.completions) if batch.completions else [],
            )

        kinds = sum(1 for part in (batch.runs, batch.steps, batch.completions) if part)
        if kinds <= 1 and len(_rounds(batch.steps)) <= 1:
            return self._write("write a batch", write)

        def in_transaction(conn: _Conn) -> BatchResult:
            with conn.transaction():
                return write(conn)

        return self._write("write a batch", in_transaction)

    def _resolve(self, conn: _Conn, items: Sequence[_Item]) -> list[_Outcome]:
        """Explain writes that wrote nothing: a final entry stands, or the lease is lost."""
        keys = ([r.run_id for _, r in items], [r.seq for _, r in items])
        steps = conn.execute(self._sql.select_steps_at, keys, binary=True).fetchall()
        final = {(s[0], s[1]): StepRecord(*s) for s in steps if s[3] != STEP_RETRY}
        ids = list({lease.run_id for lease, _ in items})
        runs = conn.execute(self._sql.select_runs, (ids,), binary=True).fetchall()
        by_id = {r[0]: _run_row(r) for r in runs}
        return [
            final.get((rec.run_id, rec.seq)) or lease_lost(lease, by_id.get(lease.run_id))
            for lease, rec in items
        ]

    def record_step_transactionally(
        self, lease: Lease, body: Callable[[Connection], StepRecord]
    ) -> StepRecord:
        """Run `body` on a pooled connection and record its entry in the same transaction."""
        try:
            with self._translated("run a transactional step"), self._borrowed() as conn:
                conn.autocommit = False  # reset to True by the pool when the conn comes back
                with conn.transaction():
                    try:
                        record = body(conn)
                    except Exception as exc:
                        raise _BodyFailed(exc, conn.broken) from exc
                    [outcome] = self._record(conn, [(lease, record)])
                    if outcome is not record:
                        raise _Rollback(outcome)
                return record
        except _Rollback as rb:
            if isinstance(rb.outcome, LeaseLostError):
                raise rb.outcome from None
            return rb.outcome
        except _BodyFailed as failed:
            error, broken = failed.error, failed.broken
        if broken and isinstance(error, psycopg.Error):
            raise StoreUnavailableError(
                f"{self._failed('run a transactional step', error)}; the connection broke, "
                "nothing was committed and tether retries the step"
            ) from error
        raise error  # outside the except block: the body's error goes on exactly as raised

    # -- workers and claims -----------------------------------------------------------------

    def register_worker(self, worker: WorkerRow) -> None:
        """Insert the worker's row and forget workers silent for a day."""
        params = _WORKER_FIELDS(worker)  # the columns of UPSERT_WORKER, in order

        def write(conn: _Conn) -> None:
            with conn.transaction():
                conn.execute(self._sql.prune_workers, (worker.heartbeat_at - 86400.0,))
                conn.execute(self._sql.upsert_worker, params)

        self._write("register a worker", write)

    def heartbeat(self, worker_id: str, now: float) -> bool:
        """Refresh the worker's heartbeat.

        On a pooled connection, not the writer: a journal write waiting on a lock must not
        hold up the heartbeat until the worker's lease lapses.
        """
        return self._pooled(
            "record a heartbeat",
            lambda c: c.execute(self._sql.heartbeat, (now, worker_id), prepare=True).rowcount == 1,
        )

    def list_workers(self) -> list[WorkerRow]:
        """Return the workers that have not stopped."""
        rows = self._pooled(
            "list workers", lambda c: c.execute(self._sql.select_workers, binary=True).fetchall()
        )
        return [WorkerRow(*r) for r in rows]

    def stop_workers(self, worker_ids: Sequence[str], now: float) -> None:
        """Mark the workers stopped."""
        if worker_ids:
            params = (now, list(worker_ids))
            self._write("stop workers", lambda c: c.execute(self._sql.stop_workers, params))

    def claim_runs(
        self, worker_id: str, names: Sequence[str], limit: int, now: float, lease_ttl: float
    ) -> list[tuple[Lease, RunRow]]:
        """Claim unowned or orphaned runs, oldest first, in one statement."""
        if not names or limit <= 0:
            return []
        alive_after = now - lease_ttl
        params = {"names": list(names), "limit": limit, "alive_after": alive_after}
        params.update(worker=worker_id, now=now)
        rows = self._write(
            "claim runs",
            lambda c: c.execute(self._sql.claim_runs, params, prepare=True, binary=True).fetchall(),
        )
        runs = sorted((_run_row(r) for r in rows), key=lambda r: (r.created_at, r.id))
        return [(Lease(r.id, worker_id, r.epoch), r) for r in runs]


class _Rollback(Exception):
    """Carries a transactional step's outcome out of a transaction that must not commit."""

    def __init__(self, outcome: _Outcome) -> None:
        self.outcome = outcome


class _BodyFailed(Exception):
    """Carries a transactional step body's error past the driver-error translation."""

    def __init__(self, error: Exception, broken: bool) -> None:
        self.error = error
        self.broken = broken


def _connect_kwargs(params: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Connection options: autocommit, the timeouts, and a name DBAs can see."""
    timeout_ms = max(1, round(settings.statement_timeout * 1000))
    return {
        "autocommit": True,
        "connect_timeout": max(1, math.ceil(settings.connect_timeout)),
        "options": f"{params.get('options') or ''} -c statement_timeout={timeout_ms}".strip(),
        "application_name": params.get("application_name") or "tether",
    }


def _autocommit(conn: _Conn) -> None:
    conn.autocommit = True


def _scalar(conn: _Conn, sql: str, params: Sequence[Any] = ()) -> Any:
    row = conn.execute(sql, params or None).fetchone()
    if row is None:
        raise CorruptRowError(f"expected a row from {sql!r}")
    return row[0]


def _rounds(items: Sequence[_Item]) -> list[list[int]]:
    """Group item indexes so no group repeats a journal position: the n-th repeat, group n."""
    rounds: list[list[int]] = []
    seen: dict[tuple[str, int], int] = {}
    for i, (_, rec) in enumerate(items):
        n = seen.get((rec.run_id, rec.seq), 0)
        seen[(rec.run_id, rec.seq)] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(i)
    return rounds


def _new_run_params(run: NewRun) -> tuple[Any, ...]:
    """Parameters for `INSERT_RUN`: the run's fields in order, status, epoch, updated_at."""
    status, epoch = ("RUNNING", 1) if run.owner else ("PENDING", 0)
    return (*_NEW_RUN_FIELDS(run), status, epoch, run.created_at)


def _step_params(lease: Lease, record: StepRecord) -> tuple[Any, ...]:
    """Parameters for `RECORD_STEP`: the record's fields in order, then the lease's."""
    return (*_STEP_FIELDS(record), lease.run_id, lease.epoch)


def _step_arrays(items: Sequence[_Item]) -> list[list[Any]]:
    """Parameters for `RECORD_STEPS`: one array per parameter of `RECORD_STEP`."""
    return [list(column) for column in zip(*(_step_params(*item) for item in items), strict=True)]


def _run_row(row: Sequence[Any] | None) -> RunRow:
    try:
        return RunRow(*(row or ()))
    except TypeError as exc:
        raise CorruptRowError(f"a run row has an unexpected shape: {exc}") from None
