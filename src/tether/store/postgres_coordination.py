"""The PostgreSQL store's coordination: waiting, messages, events, control, queues, schedules.

`PostgresCoordination` holds the operations by which runs wait for timers, messages, events
and other runs, and by which callers cancel, expire, resume and fork them; with them the ends
of runs and the wake-ups that follow, the queue admission of claims, the queue counts and the
schedules' ticks. `PostgresStore` inherits it and supplies the connections, statements and
journal writes it relies on (`_sql`, `_pooled`, `_rows`, `_runs`, `_record`, declared here for
the type checker). The connection and outcome types, and `_Rollback`, which the store's journal
shares, live here too: the store imports this module, never the other way round.

Wake-ups, under READ COMMITTED (each statement sees what committed before it began):

- A suspender locks the runs it waits for `FOR SHARE`, then its own row `FOR UPDATE`, and only
  then, in later statements, looks for a message and registers its waits. A sender locks the
  receiver's row `FOR UPDATE` before it inserts. Either the suspender sees the message, or the
  sender, waiting for the suspender's commit, sees the run WAITING and wakes it.
- Ending a run (completion, cancellation) updates its row, which waits for a suspender holding
  it `FOR SHARE`, and wakes waiters in a later statement, which sees that suspender's waits.
  Either the suspender sees the run ended, or the ender sees the waits.
- Claimers of a queue take a transaction-scoped advisory lock for it and count the queue's
  load in a later statement, which sees every earlier claim of that queue.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg

from tether.codec import message_place, step_place
from tether.errors import (
    LeaseLostError,
    WorkflowConflictError,
    WorkflowFinishedError,
    WorkflowNotFoundError,
)
from tether.store.base import (
    FINAL_RUN_STATUSES,
    NOT_FINAL,
    STEP_OK,
    Completion,
    Lease,
    NewMessage,
    QueueLimits,
    Reason,
    Reseal,
    RunRow,
    StepRecord,
    WorkflowKey,
    completion_refused,
    lease_lost,
    reason_for,
    resealed_fork,
)
from tether.store.postgres_sql import (
    Statements,
    completion_arrays,
    completion_params,
    rounds,
    run_row,
)

T = TypeVar("T")
_Conn = psycopg.Connection[tuple[Any, ...]]
_Outcome = StepRecord | LeaseLostError
_Item = tuple[Lease, StepRecord]


class PostgresCoordination:
    """Waiting, messages, events, control and schedules; `PostgresStore` inherits them."""

    # -- the store's plumbing and journal (PostgresStore supplies them) ---------------------

    _sql: Statements

    @abc.abstractmethod
    def _pooled(self, what: str, fn: Callable[[_Conn], T], transaction: bool = False) -> T:
        """Run `fn` on a pooled connection (autocommit, or in one transaction)."""

    @abc.abstractmethod
    def _rows(self, what: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one read on a pooled connection; return its rows."""

    @abc.abstractmethod
    def _runs(self, conn: _Conn, ids: Sequence[str]) -> dict[str, RunRow]:
        """Return these runs, by id."""

    @abc.abstractmethod
    def _record(self, conn: _Conn, items: Sequence[_Item]) -> list[_Outcome]:
        """Write entries at distinct positions; explain those that were not written."""

    # -- waiting, messages, events ----------------------------------------------------------

    def suspend(
        self,
        lease: Lease,
        wake_at: float | None,
        topics: Sequence[str],
        runs: Sequence[str],
        now: float,
    ) -> bool:
        """Release the run to WAITING unless what it waits for is already there.

        Locks, in this order: the runs waited for (`FOR SHARE`, by id), the run's own row
        (`FOR UPDATE`); then checks, each in a statement of its own (see the module docstring).
        """
        targets = sorted(set(runs))
        sql = self._sql

        def txn(conn: _Conn) -> bool:
            statuses = [r[0] for r in conn.execute(sql.LOCK_TARGETS, (targets,))] if runs else []
            state = conn.execute(sql.LOCK_RUN, (lease.run_id,)).fetchone()
            if state is None or state[0] != lease.epoch or state[1] != "RUNNING":
                raise lease_lost(lease, self._runs(conn, [lease.run_id]).get(lease.run_id))
            if (
                topics
                and conn.execute(sql.PENDING_MESSAGE_ON, (lease.run_id, list(topics))).fetchone()
            ):
                return False
            if len(statuses) < len(targets) or any(s in FINAL_RUN_STATUSES for s in statuses):
                return False
            params = {"id": lease.run_id, "epoch": lease.epoch, "wake": wake_at, "now": now}
            conn.execute(sql.SUSPEND, params)
            if targets:
                conn.execute(sql.ADD_WAITS, (lease.run_id, targets))
            return True

        return self._pooled("suspend a run", txn, transaction=True)

    def send_message(self, message: NewMessage) -> bool:
        """Put a message in the run's inbox and wake the run if it waits."""
        m, sql = message, self._sql

        def txn(conn: _Conn) -> bool:
            row = conn.execute(sql.LOCK_STATUS, (m.run_id,)).fetchone()
            if row is None:
                raise WorkflowNotFoundError(m.run_id)
            if row[0] in FINAL_RUN_STATUSES:
                raise WorkflowFinishedError(m.run_id, row[0])
            params = (m.run_id, m.topic, m.payload, m.key, m.created_at)
            if conn.execute(sql.INSERT_MESSAGE, params).rowcount == 0:
                return False
            conn.execute(sql.WAKE_RUN, {"at": m.created_at, "id": m.run_id})
            return True

        return self._pooled("send a message", txn, transaction=True)

    def consume_message(
        self,
        lease: Lease,
        seq: int,
        name: str,
        topic: str,
        now: float,
        reseal: Reseal | None = None,
    ) -> StepRecord | LeaseLostError | None:
        """Take the oldest unread message on `topic` and journal it at `seq`."""
        sql = self._sql

        def txn(conn: _Conn) -> StepRecord | None:
            existing = conn.execute(sql.SELECT_STEP, (lease.run_id, seq), binary=True).fetchone()
            if existing is not None and existing[3] not in NOT_FINAL:
                return StepRecord(*existing)
            message = conn.execute(sql.TAKE_MESSAGE, (lease.run_id, topic)).fetchone()
            if message is None:
                return None
            started = existing[7] if existing is not None else now
            payload = bytes(message[1])
            if reseal is not None:
                source = message_place(lease.run_id, topic, message[2])
                payload = reseal(payload, source, step_place(lease.run_id, seq, "output"))
            record = StepRecord(lease.run_id, seq, name, STEP_OK, payload, None, 1, started, now)
            [outcome] = self._record(conn, [(lease, record)])
            if outcome is not record:
                raise _Rollback(outcome)  # the message stays unread
            conn.execute(sql.CONSUME, (now, message[0]))
            return record

        try:
            return self._pooled("take a message", txn, transaction=True)
        except _Rollback as rb:
            return rb.outcome

    def set_event(
        self, lease: Lease, record: StepRecord, key: str, value: bytes
    ) -> StepRecord | LeaseLostError:
        """Journal `record` and set the run's event, in one transaction."""

        def txn(conn: _Conn) -> _Outcome:
            [outcome] = self._record(conn, [(lease, record)])
            if outcome is record:
                params = (lease.run_id, key, value, record.ended_at)
                conn.execute(self._sql.UPSERT_EVENT, params)
            return outcome

        return self._pooled("set an event", txn, transaction=True)

    def get_event(self, run_id: str, key: str) -> bytes | None:
        """Return the run's event `key`, or None."""
        rows = self._rows("read an event", self._sql.SELECT_EVENT, (run_id, key))
        return bytes(rows[0][0]) if rows else None

    # -- control ----------------------------------------------------------------------------

    def cancel_run(self, run_id: str, reason: Reason, now: float) -> list[str]:
        """Cancel the run and its unfinished descendants."""

        def txn(conn: _Conn) -> list[str]:
            if conn.execute(self._sql.RUN_STATUS, (run_id,)).fetchone() is None:
                raise WorkflowNotFoundError(run_id)
            return self._cancel(conn, [run_id], reason, now)

        return self._pooled("cancel a run", txn, transaction=True)

    def expire_runs(self, reason: Reason, now: float) -> list[str]:
        """Cancel the unfinished runs whose deadline has passed, and their descendants."""

        def txn(conn: _Conn) -> list[str]:
            expired = [r[0] for r in conn.execute(self._sql.EXPIRED, (now,))]
            return self._cancel(conn, expired, reason, now) if expired else []

        return self._pooled("expire runs", txn, transaction=True)

    def _cancel(self, conn: _Conn, roots: list[str], reason: Reason, now: float) -> list[str]:
        params = {"roots": roots, "reason": None if callable(reason) else reason, "now": now}
        cancelled = sorted(r[0] for r in conn.execute(self._sql.CANCEL_TREES, params))
        if callable(reason) and cancelled:
            with conn.cursor() as cur:
                errors = [(reason_for(reason, r), r) for r in cancelled]
                cur.executemany(self._sql.SET_RUN_ERROR, errors)
        if cancelled:
            self._wake(conn, cancelled, [now] * len(cancelled))
        return cancelled

    def resume_run(self, run_id: str, now: float) -> RunRow:
        """Make a cancelled or failed run PENDING again, dropping its failure's entries."""

        def txn(conn: _Conn) -> RunRow:
            if conn.execute(self._sql.RESUME_RUN, (now, run_id)).rowcount == 1:
                conn.execute(self._sql.DROP_FAILED_TAIL, {"id": run_id})
            row = self._runs(conn, [run_id]).get(run_id)
            if row is None:
                raise WorkflowNotFoundError(run_id)
            return row

        return self._pooled("resume a run", txn, transaction=True)

    def fork_run(
        self, run_id: str, new_id: str, from_seq: int, now: float, reseal: Reseal | None = None
    ) -> RunRow:
        """Create `new_id` from `run_id`'s workflow, input and journal below `from_seq`."""
        sql = self._sql

        def txn(conn: _Conn) -> RunRow:
            if conn.execute(sql.RUN_STATUS, (run_id,)).fetchone() is None:
                raise WorkflowNotFoundError(run_id)
            params = {"new": new_id, "now": now, "old": run_id}
            if conn.execute(sql.FORK_RUN, params).rowcount == 0:
                raise WorkflowConflictError(new_id, "that id already (fork under a new id)")
            conn.execute(sql.FORK_STEPS, (new_id, run_id, from_seq))
            if reseal is not None:
                self._reseal_fork(conn, reseal, run_id, new_id)
            return run_row(conn.execute(sql.SELECT_RUN, (new_id,), binary=True).fetchone())

        return self._pooled("fork a run", txn, transaction=True)

    def _reseal_fork(self, conn: _Conn, reseal: Reseal, old: str, new: str) -> None:
        sql = self._sql
        (input_,) = conn.execute(sql.SELECT_INPUT, (new,)).fetchone() or (b"",)
        steps = [
            (s, None if o is None else bytes(o), None if e is None else bytes(e))
            for s, o, e in conn.execute(sql.SELECT_PAYLOADS, (new,))
        ]
        moved, entries = resealed_fork(reseal, old, new, bytes(input_), steps)
        conn.execute(sql.SET_INPUT, (moved, new))
        if entries:
            with conn.cursor() as cur:
                cur.executemany(sql.SET_PAYLOADS, [(o, e, new, seq) for o, e, seq in entries])

    def run_statuses(self, run_ids: Sequence[str]) -> dict[str, str]:
        """Return the status of each of these runs that exists."""
        rows = self._rows("read statuses", self._sql.RUN_STATUSES, (list(run_ids),))
        return {r[0]: r[1] for r in rows}

    def next_wake_at(self) -> float | None:
        """Return the earliest timer among waiting runs."""
        [(value,)] = self._rows("read timers", self._sql.NEXT_WAKE)
        return None if value is None else float(value)

    def queue_counts(self) -> list[tuple[str, str, int]]:
        """Return (queue, status, count) rows."""
        return [(q, st, int(n)) for q, st, n in self._rows("count queues", self._sql.QUEUE_COUNTS)]

    def advance_schedule(self, name: str, previous: float | None, tick: float) -> bool:
        """Compare-and-set schedule `name`'s latest tick (one statement)."""
        sql, params = self._sql.INSERT_TICK, [name, tick]
        if previous is not None:
            sql, params = self._sql.ADVANCE_TICK, [tick, name, previous]
        return self._pooled("advance a schedule", lambda c: c.execute(sql, params).rowcount == 1)

    def last_tick(self, name: str) -> float | None:
        """Return schedule `name`'s latest tick."""
        rows = self._rows("read a schedule", self._sql.LAST_TICK, (name,))
        return float(rows[0][0]) if rows else None

    # -- ends and wake-ups (for the store's completions) ------------------------------------

    def _complete(self, conn: _Conn, items: Sequence[Completion]) -> list[LeaseLostError | None]:
        """Record final outcomes, then wake the runs waiting for them (inside a transaction).

        For each, None or why it was refused. The wake is a statement of its own: see the
        module docstring.
        """
        out: list[LeaseLostError | None] = [None] * len(items)
        ended: list[int] = []
        for indexes in rounds([c.lease.run_id for c in items]):
            part = [items[i] for i in indexes]
            done = {r[0] for r in self._end(conn, part).fetchall()}
            for i, refused in zip(indexes, self._refused_ends(conn, part, done), strict=True):
                out[i] = refused
                if items[i].lease.run_id in done:
                    ended.append(i)
        if ended:
            ended.sort()
            self._wake(conn, [items[i].lease.run_id for i in ended], [items[i].now for i in ended])
        return out

    def _complete_at_once(
        self, conn: _Conn, items: Sequence[Completion]
    ) -> list[LeaseLostError | None]:
        """`_complete` for distinct runs on an autocommit connection: one round trip.

        The outcomes and the wake go as a pipeline ended by one Sync, which the server runs as
        one implicit transaction, a statement at a time, each with a snapshot of its own.
        """
        with conn.pipeline():
            cur = self._end(conn, items)
            self._wake(conn, [c.lease.run_id for c in items], [c.now for c in items])
        return self._refused_ends(conn, items, {r[0] for r in cur.fetchall()})

    def _refused_ends(
        self, conn: _Conn, items: Sequence[Completion], done: set[str]
    ) -> list[LeaseLostError | None]:
        """For each completion: None if recorded (or recorded before), else why refused."""
        missing = [c.lease.run_id for c in items if c.lease.run_id not in done]
        runs = self._runs(conn, missing) if missing else {}
        return [
            None
            if c.lease.run_id in done
            else completion_refused(c.lease, runs.get(c.lease.run_id))
            for c in items
        ]

    def _end(self, conn: _Conn, items: Sequence[Completion]) -> psycopg.Cursor[tuple[Any, ...]]:
        """Record the outcomes of distinct runs; the cursor returns the ids recorded."""
        if len(items) == 1:
            return conn.execute(self._sql.COMPLETE_RUN, completion_params(items[0]), prepare=True)
        return conn.execute(self._sql.COMPLETE_RUNS, completion_arrays(items), prepare=True)

    def _wake(self, conn: _Conn, ended: list[str], at: list[float]) -> None:
        """Wake the runs waiting for runs that just ended (in an earlier statement)."""
        if len(ended) == 1:
            params = {"id": ended[0], "at": at[0]}
            conn.execute(self._sql.WAKE_WAITERS_OF, params, prepare=True)
        else:
            conn.execute(self._sql.WAKE_WAITERS, {"ids": ended, "ats": at}, prepare=True)

    # -- queue admission (for the store's claims) -------------------------------------------

    def _claim_queued(
        self,
        conn: _Conn,
        q: QueueLimits,
        worker_id: str,
        keys: Sequence[WorkflowKey],
        room: int,
        now: float,
    ) -> list[RunRow]:
        """Claim what `q`'s limits allow now (its advisory lock held), highest priority first."""
        since = None if q.rate_limit is None else now - q.rate_limit[1]
        load = {"queue": q.name, "worker": worker_id, "since": since}
        active, mine, recent = conn.execute(self._sql.QUEUE_LOAD, load).fetchone() or (0, 0, 0)
        allowed = room
        if q.concurrency is not None:
            allowed = min(allowed, q.concurrency - active)
        if q.worker_concurrency is not None:
            allowed = min(allowed, q.worker_concurrency - mine)
        if q.rate_limit is not None:
            allowed = min(allowed, q.rate_limit[0] - recent)
        if allowed <= 0:
            return []
        params: dict[str, Any] = {"queue": q.name, "allowed": allowed}
        params.update(names=[n for n, _ in keys], versions=[v for _, v in keys])
        params.update(worker=worker_id, now=now, per_partition=q.partition_concurrency)
        sql = self._sql.CLAIM_QUEUED
        if q.partition_concurrency is not None:
            sql = self._sql.CLAIM_QUEUED_PARTITIONED
        return [run_row(r) for r in conn.execute(sql, params, binary=True).fetchall()]


class _Rollback(Exception):
    """Carries an outcome out of a transaction that must not commit."""

    def __init__(self, outcome: _Outcome) -> None:
        self.outcome = outcome
