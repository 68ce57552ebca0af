"""The PostgreSQL store: several processes on several machines share one database.

Every table lives in the schema `Settings.pg_schema` and every statement names it (see
`postgres_sql`); the schema is never put on a connection's `search_path`, because a
transactional step's body gets the same connection and its tables live in the user's own schema.

Hot writes (journal entries, batches, claims) go through one autocommit connection guarded by
a lock: a lone journal entry is a single statement, so one round trip and one commit; a lone
completion (which must wake its waiters in a statement of its own) is two statements sent as
one pipeline, still one round trip and one commit. Reads,
heartbeats, direct starts and completions, and the calls for waiting and control borrow
connections from a pool. A connection that breaks is replaced on the next call, so the store
outlives a database restart.

Fencing: a journal write checks the run's epoch and locks the run's row `FOR SHARE` in the
same statement; a claim locks the rows it takes `FOR UPDATE SKIP LOCKED`. A claim therefore
never takes a run while one of its journal writes is in flight (it passes over it until the
write has committed), and a write that arrives after a claim waits for it and then finds the
epoch moved. A claimer never reads a journal that a fenced-off worker appends to later.

The calls for waiting, messages, events, control and schedules, with the ends of runs, the
wake-ups and the queue admission the store shares with them, live in `postgres_coordination`
(the mixin `PostgresCoordination`, which `PostgresStore` inherits); its docstring sets out
how wake-ups stay safe under concurrent transactions. The services' breakers and budgets live
in `postgres_services` (`PostgresServices`).
"""

from __future__ import annotations

import contextlib
import logging
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
    DeduplicatedError,
    LeaseLostError,
    StoreError,
    StoreFullError,
    StoreUnavailableError,
    WorkflowConflictError,
)
from tether.settings import Settings
from tether.store import migrate, redact
from tether.store.base import (
    NOT_FINAL,
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
    lease_lost,
    workflow_keys,
)
from tether.store.postgres_audit import PostgresAudit
from tether.store.postgres_backup import PostgresBackup
from tether.store.postgres_blobs import PostgresBlobs
from tether.store.postgres_coordination import (
    PostgresCoordination,
    _Conn,
    _Item,
    _Outcome,
    _Rollback,
)
from tether.store.postgres_net import Watchdog, connect_kwargs, reply_deadline
from tether.store.postgres_services import PostgresServices
from tether.store.postgres_sql import (
    DATABASE_TIME,
    LOCK_QUEUES,
    LOCK_SCHEMA,
    VERSION_TABLE_EXISTS,
    WORKER_FIELDS,
    Statements,
    new_run_arrays,
    new_run_params,
    positions,
    rounds,
    run_row,
    step_arrays,
    step_params,
)

T = TypeVar("T")
log = logging.getLogger("tether.store")
_Created = tuple[RunRow, bool] | WorkflowConflictError | DeduplicatedError
# A run refused for a deduplication id whose holder ended before it could be named is tried
# again; each try means a run of that queue and id ended meanwhile.
_CREATE_TRIES = 5


class PostgresStore(
    PostgresBackup, PostgresCoordination, PostgresAudit, PostgresServices, PostgresBlobs
):
    """A `Store` in a schema of a PostgreSQL database.

    Args:
        url: `postgresql://user:password@host:5432/dbname` (libpq parameters allowed).
        settings: `pg_schema`, `pg_pool_size`, `connect_timeout` and `statement_timeout`.
    """

    dialect = "postgresql"
    inline_writes = False
    database_clock_leases = True

    def __init__(self, url: str, settings: Settings) -> None:
        self.schema = settings.pg_schema
        self._sql = Statements(settings.pg_schema)
        self._where = redact(url)
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise ConfigError(f"database URL {self._where!r} is not valid: {exc}") from None
        self._password = str(params.get("password") or "")
        self._url = url
        self._kwargs = connect_kwargs(params, settings)
        self._watchdog = Watchdog(reply_deadline(settings), f"tether-watchdog-{self.schema}")
        self._lock = threading.Lock()
        self._writer: _Conn | None = None
        self._closed = False
        self._checking = threading.Lock()  # one sweep of the pool's idle connections at a time
        self._pool: _Pool = _Pool(
            self._watchdog,
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
        except psycopg.errors.DiskFull as exc:
            raise StoreFullError(
                f"{self._failed(what, exc)}; the database server's disk is full "
                "and wrote nothing: free space on it, tether retries and runs resume from their "
                "last recorded step"
            ) from exc
        except psycopg.errors.TransactionRollback as exc:  # a deadlock or serialization failure
            raise StoreUnavailableError(
                f"{self._failed(what, exc)}; it collided with a concurrent transaction and was "
                "rolled back whole, tether retries it"
            ) from exc
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

    def _write(self, what: str, fn: Callable[[_Conn], T], transaction: bool = False) -> T:
        """Run `fn` on the writer connection (autocommit, or in one transaction)."""
        if self._closed:
            raise self._closed_error()
        with self._lock, self._translated(what):
            conn = self._writer
            if conn is None:
                conn = self._writer = psycopg.connect(self._url, **self._kwargs)
            try:
                with self._watchdog.watch(conn):
                    return _run(conn, fn, transaction)
            except BaseException:
                if conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
                    self._writer = None  # broken or interrupted: reconnect on the next call
                    conn.close()
                raise

    @contextlib.contextmanager
    def _borrowed(self) -> Iterator[_Conn]:
        """Lend a pool connection (autocommit); after a broken one, weed out its siblings.

        The siblings are checked by a thread of their own (each check bounded by the
        watchdog), so the caller goes on to retry at once.
        """
        if self._closed:
            raise self._closed_error()
        conn = self._pool.getconn()
        try:
            yield conn
        finally:
            broken = conn.broken
            self._pool.putconn(conn)
            if broken and self._checking.acquire(blocking=False):
                threading.Thread(target=self._sweep, name="tether-pool-check", daemon=True).start()

    def _sweep(self) -> None:
        try:
            if not self._closed:
                self._pool.check()
        except Exception as exc:  # a closing pool; the next broken connection sweeps again
            log.debug("checking the pool's connections failed: %s", exc)
        finally:
            self._checking.release()

    def _pooled(self, what: str, fn: Callable[[_Conn], T], transaction: bool = False) -> T:
        """Run `fn` on a pooled connection (autocommit, or in one transaction).

        For reads, and for writes that must not queue behind the journal writer.
        """
        with self._translated(what), self._borrowed() as conn, self._watchdog.watch(conn):
            return _run(conn, fn, transaction)

    def _rows(self, what: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one read on a pooled connection; return its rows."""
        return self._pooled(what, lambda c: c.execute(sql, params, binary=True).fetchall())

    def _runs(self, conn: _Conn, ids: Sequence[str]) -> dict[str, RunRow]:
        rows = conn.execute(self._sql.SELECT_RUNS, (list(ids),), binary=True).fetchall()
        return {r.id: r for r in map(run_row, rows)}

    def close(self) -> None:
        """Close the writer connection and the pool."""
        self._closed = True
        self._watchdog.close()
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
            while self._write("migrate the schema", self._migrate_one, transaction=True):
                pass
        return self.check_schema()

    def _migrate_one(self, conn: _Conn) -> bool:
        conn.execute(LOCK_SCHEMA, (self.schema,))
        conn.execute(self._sql.CREATE_SCHEMA)
        conn.execute(self._sql.CREATE_VERSION_TABLE)
        todo = migrate.pending(self.dialect, _scalar(conn, self._sql.SELECT_VERSION))
        if not todo:
            return False
        conn.execute(self._sql.SET_MIGRATION_PATH)
        conn.execute(todo[0].sql)  # no parameters: several statements are allowed
        conn.execute(self._sql.INSERT_VERSION, (todo[0].version,))
        return True

    def check_schema(self) -> int:
        """Return the schema version or raise `SchemaVersionError`."""
        return migrate.require_current(self.dialect, self._version())

    def _version(self) -> int:
        """The recorded schema version; 0 for a schema (or database) never migrated."""

        def read(conn: _Conn) -> int:
            if not _scalar(conn, VERSION_TABLE_EXISTS, (f'"{self.schema}".schema_version',)):
                return 0
            return int(_scalar(conn, self._sql.SELECT_VERSION))

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
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def get_run(self, run_id: str) -> RunRow | None:
        """Return the run or None."""
        return self._pooled("read a run", lambda c: self._runs(c, [run_id])).get(run_id)

    def list_runs(self, query: RunFilter) -> list[RunRow]:
        """Return matching runs, newest first."""
        sql = self._sql.LIST_RUNS
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
        return [run_row(r) for r in self._rows("list runs", sql, params)]

    def complete_run(
        self, lease: Lease, status: str, output: bytes | None, error: bytes | None, now: float
    ) -> None:
        """Record the final outcome under `lease` and wake the runs waiting for it (pooled)."""
        completion = Completion(lease, status, output, error, now)
        [refused] = self._pooled(
            "complete a run", lambda c: self._complete_at_once(c, [completion])
        )
        if refused is not None:
            raise refused

    def _create(self, conn: _Conn, runs: Sequence[NewRun]) -> list[_Created]:
        """Insert runs; for each, (row, created), or the run of its id or deduplication id."""
        out: dict[int, _Created] = {}
        todo = list(range(len(runs)))
        for _ in range(_CREATE_TRIES):
            made = self._insert(conn, [runs[i] for i in todo])
            missed = []
            for i in todo:
                row = made.pop(runs[i].id, None)  # a repeated id is then found existing
                if row is None:
                    missed.append(i)
                else:
                    out[i] = (row, True)
            todo = self._refused(conn, runs, missed, out)
            if not todo:
                return [out[i] for i in range(len(runs))]
        raise StoreError(
            f"PostgreSQL at {self._where} could not create run {runs[todo[0]].id!r}: its "
            "deduplication id was taken and freed again on every try; try again"
        )

    def _insert(self, conn: _Conn, runs: Sequence[NewRun]) -> dict[str, RunRow]:
        if len(runs) == 1:
            params = new_run_params(runs[0])
            cur = conn.execute(self._sql.INSERT_RUN, params, prepare=True, binary=True)
        else:
            cur = conn.execute(self._sql.INSERT_RUNS, new_run_arrays(runs), binary=True)
        return {r.id: r for r in map(run_row, cur.fetchall())}

    def _refused(
        self, conn: _Conn, runs: Sequence[NewRun], indexes: list[int], out: dict[int, _Created]
    ) -> list[int]:
        """Explain runs not inserted (their id, else their deduplication id, is taken).

        Returns those to insert again: the holder of their deduplication id ended meanwhile.
        """
        if not indexes:
            return []
        existing = self._runs(conn, list({runs[i].id for i in indexes}))
        deduped = [runs[i] for i in indexes if runs[i].id not in existing]
        holders: dict[tuple[str | None, str | None], str] = {}
        if deduped:
            keys = ([r.queue for r in deduped], [r.dedup_id for r in deduped])
            found = conn.execute(self._sql.SELECT_DEDUP, keys).fetchall()
            holders = {(q, d): run_id for q, d, run_id in found}
        again = []
        for i in indexes:
            run = runs[i]
            row = existing.get(run.id)
            holder = holders.get((run.queue, run.dedup_id))
            if row is not None:
                out[i] = conflict(run, row) or (row, False)
            elif holder is not None:
                out[i] = DeduplicatedError(run.queue or "", run.dedup_id or "", holder)
            else:
                again.append(i)
        return again

    # -- journal ----------------------------------------------------------------------------

    def load_steps(self, run_id: str) -> list[StepRecord]:
        """Return the journal in order."""
        return [
            StepRecord(*r) for r in self._rows("read a journal", self._sql.SELECT_STEPS, (run_id,))
        ]

    def record_steps(self, items: Sequence[_Item]) -> list[_Outcome]:
        """Append journal entries in one commit: one statement, one round trip."""
        if not items:
            return []
        several = len(rounds(positions(items))) > 1
        return self._write(
            "record steps", lambda conn: self._record_rounds(conn, items), transaction=several
        )

    def _record_rounds(self, conn: _Conn, items: Sequence[_Item]) -> list[_Outcome]:
        """Write entries, a position at most once per statement.

        The same position twice (a 'retry' entry then its successor) cannot be upserted by one
        statement, so each repeat goes in a later one (the caller opened a transaction).
        """
        groups = rounds(positions(items))
        if len(groups) == 1:
            return self._record(conn, items)
        out: list[_Outcome | None] = [None] * len(items)
        for indexes in groups:
            done = self._record(conn, [items[i] for i in indexes])
            for i, outcome in zip(indexes, done, strict=True):
                out[i] = outcome
        return [o for o in out if o is not None]

    def _record(self, conn: _Conn, items: Sequence[_Item]) -> list[_Outcome]:
        """Write entries at distinct positions; explain those that were not written."""
        if len(items) == 1:
            cur = conn.execute(self._sql.RECORD_STEP, step_params(*items[0]), prepare=True)
        else:
            cur = conn.execute(self._sql.RECORD_STEPS, step_arrays(items), prepare=True)
        written = set(cur.fetchall())
        missed = [item for item in items if (item[1].run_id, item[1].seq) not in written]
        explained = iter(self._resolve(conn, missed) if missed else [])
        return [rec if (rec.run_id, rec.seq) in written else next(explained) for _, rec in items]

    def _resolve(self, conn: _Conn, items: Sequence[_Item]) -> list[_Outcome]:
        """Explain writes that wrote nothing: a final entry stands, or the lease is lost.

        The entry is returned only to a writer whose lease is still the run's (its earlier
        write's acknowledgement was lost); a writer fenced off meets `LeaseLostError` even if
        the new owner has recorded that position meanwhile.
        """
        keys = ([r.run_id for _, r in items], [r.seq for _, r in items])
        steps = conn.execute(self._sql.SELECT_STEPS_AT, keys, binary=True).fetchall()
        final = {(s[0], s[1]): StepRecord(*s) for s in steps if s[3] not in NOT_FINAL}
        runs = self._runs(conn, list({lease.run_id for lease, _ in items}))
        out: list[_Outcome] = []
        for lease, rec in items:
            run = runs.get(lease.run_id)
            entry = final.get((rec.run_id, rec.seq))
            held = run is not None and run.epoch == lease.epoch
            out.append(entry if entry is not None and held else lease_lost(lease, run))
        return out

    def write_batch(self, batch: Batch) -> BatchResult:
        """Commit new runs, journal entries and completions together.

        Journal entries alone at distinct positions, or runs alone, are one statement in
        autocommit (runs not inserted are then explained by reads). Completions alone, of
        distinct runs, are two statements in one implicit transaction and one round trip (see
        `_complete_at_once`). Anything else is one transaction.
        """

        def write(conn: _Conn) -> BatchResult:
            return BatchResult(
                runs=self._create(conn, batch.runs) if batch.runs else [],
                steps=self._record_rounds(conn, batch.steps) if batch.steps else [],
                completions=self._complete(conn, batch.completions) if batch.completions else [],
            )

        ends = batch.completions
        if not batch.runs and not batch.steps and len(rounds([c.lease.run_id for c in ends])) == 1:
            return self._write(
                "write a batch", lambda c: BatchResult([], [], self._complete_at_once(c, ends))
            )
        single = (
            not batch.completions
            and not (batch.runs and batch.steps)
            and len(rounds(positions(batch.steps))) <= 1
        )
        return self._write("write a batch", write, transaction=not single)

    def record_step_transactionally(
        self, lease: Lease, body: Callable[[Connection], StepRecord]
    ) -> StepRecord:
        """Run `body` on a pooled connection and record its entry in the same transaction."""
        try:
            with (
                self._translated("run a transactional step"),
                self._borrowed() as conn,
                contextlib.ExitStack() as watched,
            ):
                conn.autocommit = False  # reset to True by the pool when the conn comes back
                with conn.transaction():
                    try:
                        record = body(conn)
                    except Exception as exc:
                        raise _BodyFailed(exc, conn.broken) from exc
                    # The body may take its time; the entry and the commit are bounded.
                    watched.enter_context(self._watchdog.watch(conn))
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
        """Insert the worker's row, stamped with the database's time; forget silent workers."""
        params = WORKER_FIELDS(worker)  # the columns of UPSERT_WORKER, in order

        def write(conn: _Conn) -> None:
            conn.execute(self._sql.PRUNE_WORKERS)
            conn.execute(self._sql.UPSERT_WORKER, params)

        self._write("register a worker", write, transaction=True)

    def heartbeat(self, worker_id: str, now: float) -> bool:
        """Refresh the worker's heartbeat.

        The time is the database's (`now` is not used), like every lease comparison here.
        On a pooled connection, not the writer: a journal write waiting on a lock must not
        hold up the heartbeat until the worker's lease lapses.
        """
        return self._pooled(
            "record a heartbeat",
            lambda c: c.execute(self._sql.HEARTBEAT, (worker_id,), prepare=True).rowcount == 1,
        )

    def list_workers(self) -> list[WorkerRow]:
        """Return the workers that have not stopped."""
        return [WorkerRow(*r) for r in self._rows("list workers", self._sql.SELECT_WORKERS)]

    def stop_workers(self, worker_ids: Sequence[str], now: float) -> None:
        """Mark the workers stopped."""
        if worker_ids:
            params = (now, list(worker_ids))
            self._write("stop workers", lambda c: c.execute(self._sql.STOP_WORKERS, params))

    def claim_runs(
        self,
        worker_id: str,
        names: Sequence[str | WorkflowKey],
        limit: int,
        now: float,
        lease_ttl: float,
        queues: Sequence[QueueLimits] = (),
    ) -> list[tuple[Lease, RunRow]]:
        """Claim due runs (one statement), then queued runs within their queues' limits.

        Owners' heartbeats are compared with the database's clock (`now` dates the claim and
        decides which timers are due). With queues, one transaction: the queues' advisory
        locks, taken in one order (by key) before any is counted, are held to its end.
        """
        if not names or limit <= 0:
            return []
        workflows = workflow_keys(names)
        due: dict[str, Any] = {"limit": limit, "worker": worker_id, "lease_ttl": lease_ttl}
        due.update(names=[n for n, _ in workflows], versions=[v for _, v in workflows], now=now)

        def claim(conn: _Conn) -> list[RunRow]:
            rows = conn.execute(self._sql.CLAIM_DUE, due, prepare=True, binary=True).fetchall()
            claimed = [run_row(r) for r in rows]
            if queues and len(claimed) < limit:
                keys = sorted({f"{self.schema}:{q.name}" for q in queues})
                conn.execute(LOCK_QUEUES, (keys,))
                for q in queues:
                    room = limit - len(claimed)
                    if room <= 0:
                        break
                    claimed += self._claim_queued(conn, q, worker_id, workflows, room, now)
            return claimed

        claimed = self._write("claim runs", claim, transaction=bool(queues))
        runs = sorted(claimed, key=lambda r: (r.created_at, r.id))
        return [(Lease(r.id, worker_id, r.epoch), r) for r in runs]


class _Pool(ConnectionPool[_Conn]):
    """A pool whose checks of idle connections are bounded by the store's watchdog."""

    def __init__(self, watchdog: Watchdog, *args: Any, **kwargs: Any) -> None:
        self._watchdog = watchdog
        super().__init__(*args, **kwargs)

    def check_connection(self, conn: _Conn) -> None:  # type: ignore[override]
        """Check `conn` with an empty query; a silent connection is cut, and so discarded."""
        with self._watchdog.watch(conn):
            ConnectionPool.check_connection(conn)


class _BodyFailed(Exception):
    """Carries a transactional step body's error past the driver-error translation."""

    def __init__(self, error: Exception, broken: bool) -> None:
        self.error = error
        self.broken = broken


def _run(conn: _Conn, fn: Callable[[_Conn], T], transaction: bool) -> T:
    if not transaction:
        return fn(conn)  # in autocommit, each statement is its own transaction
    with conn.transaction():
        return fn(conn)


def _autocommit(conn: _Conn) -> None:
    conn.autocommit = True


def _scalar(conn: _Conn, sql: str, params: Sequence[Any] = ()) -> Any:
    row = conn.execute(sql, params or None).fetchone()
    if row is None:
        raise CorruptRowError(f"expected a row from {sql!r}")
    return row[0]
