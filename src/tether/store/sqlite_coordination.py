"""The SQLite store's coordination: waiting, messages, events, control, queues and schedules.

`SqliteCoordination` holds the operations by which runs wait for timers, messages, events and
other runs, and by which callers cancel, expire, resume and fork them; with them the ends of
runs and the wake-ups that follow, the queue admission of claims, the queue counts and the
schedules' ticks. `SqliteStore` inherits it and supplies the connections it runs on (`_read`,
`_write`, declared here for the type checker).

The store's completions, claims and journal use helpers of this module (`_complete`,
`_claim_from_queue`, `_record`, `_run_row`, `_json_list`, `_Rollback`): the store imports this
module, never the other way round.
"""

from __future__ import annotations

import abc
import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tether.codec import message_place, step_place
from tether.errors import (
    CorruptRowError,
    LeaseLostError,
    WorkflowConflictError,
    WorkflowFinishedError,
    WorkflowNotFoundError,
)
from tether.store import sqlite_sql as sql
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
    completion_refused,
    lease_lost,
    reason_for,
    resealed_fork,
)

T = TypeVar("T")


class SqliteCoordination:
    """Waiting, messages, events, control and schedules; `SqliteStore` inherits them."""

    # -- the store's connections (SqliteStore supplies them) --------------------------------

    @abc.abstractmethod
    def _read(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the read connection."""

    @abc.abstractmethod
    def _write(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one write transaction."""

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
        self,
        lease: Lease,
        seq: int,
        name: str,
        topic: str,
        now: float,
        reseal: Reseal | None = None,
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
            payload = bytes(message[1])
            if reseal is not None:
                source = message_place(lease.run_id, topic, message[2])
                payload = reseal(payload, source, step_place(lease.run_id, seq, "output"))
            record = StepRecord(lease.run_id, seq, name, STEP_OK, payload, None, 1, started, now)
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

    def cancel_run(self, run_id: str, reason: Reason, now: float) -> list[str]:
        """Cancel the run and its unfinished descendants."""

        def txn(conn: sqlite3.Connection) -> list[str]:
            if conn.execute(sql.RUN_STATUS, (run_id,)).fetchone() is None:
                raise WorkflowNotFoundError(run_id)
            return _cancel_trees(conn, [run_id], reason, now)

        return self._write("cancel a run", txn)

    def expire_runs(self, reason: Reason, now: float) -> list[str]:
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

    def fork_run(
        self, run_id: str, new_id: str, from_seq: int, now: float, reseal: Reseal | None = None
    ) -> RunRow:
        """Create `new_id` from `run_id`'s workflow, input and journal below `from_seq`."""

        def txn(conn: sqlite3.Connection) -> RunRow:
            if conn.execute(sql.RUN_STATUS, (run_id,)).fetchone() is None:
                raise WorkflowNotFoundError(run_id)
            if conn.execute(sql.FORK_RUN, (new_id, now, now, run_id)).rowcount == 0:
                raise WorkflowConflictError(new_id, "that id already (fork under a new id)")
            conn.execute(sql.FORK_STEPS, (new_id, run_id, from_seq))
            if reseal is not None:
                _reseal_fork(conn, reseal, run_id, new_id)
            return _run_row(conn.execute(sql.SELECT_RUN, (new_id,)).fetchone())

        return self._write("fork a run", txn)

    def run_statuses(self, run_ids: Sequence[str]) -> dict[str, str]:
        """Return the status of each of these runs that exists."""
        rows = self._read(
            "read statuses", lambda c: c.execute(sql.RUN_STATUSES, (_json_list(run_ids),))
        )
        return {r[0]: r[1] for r in rows}

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


class _Rollback(Exception):
    """Carries an outcome out of a transaction that must not commit."""

    def __init__(self, outcome: StepRecord | LeaseLostError) -> None:
        self.outcome = outcome


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


def _reseal_fork(conn: sqlite3.Connection, reseal: Reseal, old: str, new: str) -> None:
    (input_,) = conn.execute(sql.SELECT_INPUT, (new,)).fetchone()
    steps = [(s, _opt(o), _opt(e)) for s, o, e in conn.execute(sql.SELECT_PAYLOADS, (new,))]
    moved, entries = resealed_fork(reseal, old, new, bytes(input_), steps)
    conn.execute(sql.SET_INPUT, (moved, new))
    conn.executemany(sql.SET_PAYLOADS, [(o, e, new, seq) for o, e, seq in entries])


def _opt(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def _cancel_trees(
    conn: sqlite3.Connection, roots: list[str], reason: Reason, now: float
) -> list[str]:
    tree: list[str] = []
    for root in roots:
        tree += [r[0] for r in conn.execute(sql.RUN_TREE, (root,)).fetchall()]
    params = (None if callable(reason) else reason, now, now, _json_list(tree))
    cancelled = [r[0] for r in conn.execute(sql.CANCEL_RUNS, params).fetchall()]
    if callable(reason):
        conn.executemany(sql.SET_RUN_ERROR, [(reason_for(reason, r), r) for r in cancelled])
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


def _record(
    conn: sqlite3.Connection, lease: Lease, record: StepRecord
) -> StepRecord | LeaseLostError:
    """Write a journal entry; if nothing was written, say why.

    Either a final entry exists and the lease is still the run's (returned: the outcome that
    stands, an earlier write's acknowledgement was lost) or the lease is lost.
    """
    if conn.execute(sql.RECORD_STEP, _step_params(lease, record)).rowcount == 1:
        return record
    row = conn.execute(sql.SELECT_STEP, (record.run_id, record.seq)).fetchone()
    found = conn.execute(sql.SELECT_RUN, (lease.run_id,)).fetchone()
    run = None if found is None else _run_row(found)
    if row is not None and row[3] not in NOT_FINAL and run is not None and run.epoch == lease.epoch:
        return StepRecord(*row)
    return lease_lost(lease, run)


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


def _json_list(values: Sequence[str]) -> str:
    return json.dumps(list(values))
