"""The store protocol: durable state as rows, and the verbs that change it.

The store knows nothing of workflows' meaning. It keeps runs, their journals and the workers
that own them, as rows holding encoded bytes; the engine decides what the bytes mean. Every
method is one transaction: nothing partial survives an error. Driver errors never escape: they
are translated into `tether.errors.StoreError` subclasses at this boundary.

Ownership is fenced. A worker that claims a run gets a `Lease` (worker id and epoch); every
write on behalf of a run (a journal entry, the final outcome) is conditioned on that lease in
the same statement, so a worker whose run was taken over writes nothing more.

Times are Unix seconds (floats) passed in by the caller from its `Clock`; store code never
reads the time itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from tether.codec import run_place, step_place
from tether.errors import (
    BackupError,
    DeduplicatedError,
    LeaseLostError,
    StoreError,
    WorkflowConflictError,
)

# Journal entry states.
STEP_OK = "ok"
"""The step returned; `output` holds its result."""
STEP_ERROR = "error"
"""The step failed for good; `error` holds the exception."""
STEP_RETRY = "retry"
"""An attempt failed and another is due at `retry_at`; the entry is not final."""
STEP_WAIT = "wait"
"""A wait is in progress (a message, a timer, another run's end); `retry_at` holds its
deadline, if any. The entry is not final."""
NOT_FINAL = (STEP_RETRY, STEP_WAIT)

FINAL_RUN_STATUSES = ("SUCCEEDED", "FAILED", "CANCELLED")


@dataclasses.dataclass(frozen=True, slots=True)
class NewRun:
    """A run to create.

    `owner` set means the creating worker executes the run at once (status RUNNING, epoch 1);
    None leaves it PENDING for any worker to claim.
    """

    id: str
    name: str
    input: bytes
    input_hash: str
    created_at: float
    owner: str | None = None
    version: str | None = None
    parent_id: str | None = None
    queue: str | None = None
    priority: int = 0
    partition: str | None = None
    dedup_id: str | None = None
    deadline_at: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class RunRow:
    """A workflow run as stored."""

    id: str
    name: str
    status: str
    input: bytes
    input_hash: str
    output: bytes | None
    error: bytes | None
    owner: str | None
    epoch: int
    recoveries: int
    created_at: float
    updated_at: float
    finished_at: float | None
    version: str | None
    parent_id: str | None
    queue: str | None = None
    priority: int = 0
    partition: str | None = None
    dedup_id: str | None = None
    wake_at: float | None = None
    started_at: float | None = None
    deadline_at: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Lease:
    """Proof that `worker_id` owns run `run_id` at `epoch`; every write for the run carries it."""

    run_id: str
    worker_id: str
    epoch: int


@dataclasses.dataclass(frozen=True, slots=True)
class StepRecord:
    """One journal entry: the outcome of the step at position `seq` of run `run_id`."""

    run_id: str
    seq: int
    name: str
    status: str
    output: bytes | None
    error: bytes | None
    attempts: int
    started_at: float
    ended_at: float
    retry_at: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class NewMessage:
    """A message for run `run_id`'s inbox. `key` makes sending it idempotent."""

    run_id: str
    topic: str
    payload: bytes
    created_at: float
    key: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class QueueLimits:
    """What `claim_runs` may start from a queue, across every worker sharing the database.

    Attributes:
        name: the queue.
        concurrency: most runs of the queue started and unfinished (running or waiting).
        worker_concurrency: most runs of the queue the claiming worker executes at once.
        rate_limit: (n, seconds): at most n runs started in any window of that many seconds.
        partition_concurrency: most started, unfinished runs per partition key.
    """

    name: str
    concurrency: int | None = None
    worker_concurrency: int | None = None
    rate_limit: tuple[int, float] | None = None
    partition_concurrency: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Completion:
    """A run's final status and outcome, to record under its lease."""

    lease: Lease
    status: str
    output: bytes | None
    error: bytes | None
    now: float


@dataclasses.dataclass(frozen=True, slots=True)
class Batch:
    """Writes to commit together: new runs, then journal entries, then completions."""

    runs: Sequence[NewRun] = ()
    steps: Sequence[tuple[Lease, StepRecord]] = ()
    completions: Sequence[Completion] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class BatchResult:
    """What happened to each write of a `Batch`, in the batch's order.

    Errors are returned, not raised, so one write's failure leaves the others standing.
    """

    runs: list[tuple[RunRow, bool] | WorkflowConflictError | DeduplicatedError]
    steps: list[StepRecord | LeaseLostError]
    completions: list[LeaseLostError | None]


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerRow:
    """A worker process: who it is, where it runs, and when it last proved it is alive.

    `host`, `boot_id`, `pid` and `pid_start` identify the process exactly, so a worker on the
    same machine can tell at once that it is gone (and take its runs over without waiting for
    the lease to lapse).
    """

    id: str
    host: str
    boot_id: str
    pid: int
    pid_start: str
    started_at: float
    heartbeat_at: float
    stopped_at: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class RunFilter:
    """What `Store.list_runs` returns: newest first."""

    statuses: tuple[str, ...] = ()
    name: str | None = None
    limit: int = 100
    created_before: float | None = None


Reseal = Callable[[bytes, str, str], bytes]
"""Moves a stored payload to another row: `(payload, from_place, to_place) -> payload`.

Places are the row identities of `tether.codec` (`run_place`, `step_place`,
`message_place` ...); an encrypting codec binds them, so a payload copied by the store into
another row (a message taken into the journal, a forked journal) is re-sealed for it."""

Reason = bytes | Callable[[str], bytes] | None
"""The error recorded for runs that a cancellation ends: the same bytes for all, or built per
run id (so that each run's error is sealed for that run's row)."""

Connection = Any
"""The database connection handed to a transactional step: `sqlite3.Connection` or
`psycopg.Connection`, inside the transaction that will also record the step."""


class Store(Protocol):
    """Durable state. Every method is one transaction; nothing partial survives an error."""

    dialect: str
    """`sqlite` or `postgresql`."""

    inline_writes: bool
    """True when a checkpoint commit is fast enough (no network, no fsync) that the engine may
    run it on the event loop's thread instead of handing it to a writer thread."""

    def migrate(self) -> int:
        """Apply pending migrations; return the schema version now in place.

        Raises:
            SchemaVersionError: the database was migrated by a newer tether.
        """
        ...

    def check_schema(self) -> int:
        """Return the schema version, or raise `SchemaVersionError` if it is not current."""
        ...

    def close(self) -> None:
        """Release connections; the store cannot be used afterwards."""
        ...

    def database_time(self) -> float:
        """Return the database server's clock, for leases that every machine compares alike."""
        ...

    def create_run(self, run: NewRun) -> tuple[RunRow, bool]:
        """Insert `run`; return (row, created). The same id and input hash returns the existing row.

        Raises:
            WorkflowConflictError: the id exists with another workflow name or input hash.
        """
        ...

    def get_run(self, run_id: str) -> RunRow | None:
        """Return the run, or None if there is none with this id."""
        ...

    def list_runs(self, query: RunFilter) -> list[RunRow]:
        """Return runs matching `query`, newest first."""
        ...

    def complete_run(
        self, lease: Lease, status: str, output: bytes | None, error: bytes | None, now: float
    ) -> None:
        """Record the run's final status and outcome.

        Idempotent: if the run already ended under this lease (an acknowledgement lost), this
        returns quietly.

        Raises:
            LeaseLostError: the lease is no longer the run's.
        """
        ...

    def load_steps(self, run_id: str) -> list[StepRecord]:
        """Return the run's journal in position order."""
        ...

    def write_batch(self, batch: Batch) -> BatchResult:
        """Commit a batch of writes in one transaction; say what happened to each.

        Each write has the meaning of `create_run`, `record_steps` and `complete_run`, with
        their errors (`WorkflowConflictError`, `LeaseLostError`) returned in the result
        instead of raised. This is how concurrent runs' starts, checkpoints and completions
        share commits.
        """
        ...

    def record_steps(
        self, items: Sequence[tuple[Lease, StepRecord]]
    ) -> list[StepRecord | LeaseLostError]:
        """Append journal entries, in one commit, and say what happened to each.

        For each item, in order: the record itself if it was written; the entry already in the
        journal at that position if a final one was there (the first recorded outcome always
        stands); or a `LeaseLostError` if the lease is no longer the run's. A `STEP_RETRY`
        entry may be replaced by a later one; a final entry never is. One item's failure does
        not prevent the others.
        """
        ...

    def record_step_transactionally(
        self, lease: Lease, body: Callable[[Connection], StepRecord]
    ) -> StepRecord:
        """Run `body(conn)` inside a transaction and record the entry it returns in the same one.

        The body's writes and the journal entry commit together or not at all. If a final
        entry already exists at that position, the transaction is rolled back and that entry
        is returned. If `body` raises, the transaction is rolled back and the error propagates.

        Raises:
            LeaseLostError: the lease is no longer the run's (the body's writes are rolled back).
        """
        ...

    # -- waiting, messages and events ---------------------------------------------------------

    def suspend(
        self,
        lease: Lease,
        wake_at: float | None,
        topics: Sequence[str],
        runs: Sequence[str],
        now: float,
    ) -> bool:
        """Release the run to WAITING, owned by no worker, until something wakes it.

        It is woken (claimable again) when `wake_at` passes, a message arrives on one of
        `topics`, or one of `runs` ends. Returns False and changes nothing if it need not
        wait: such a message is already there, or such a run has already ended. A message or
        an end that comes while this runs is never missed.

        Raises:
            LeaseLostError: the lease is no longer the run's.
        """
        ...

    def send_message(self, message: NewMessage) -> bool:
        """Put a message in a run's inbox, and wake the run if it waits.

        Returns False, writing nothing, if a message with the same key was delivered before.

        Raises:
            WorkflowNotFoundError: no such run.
            WorkflowFinishedError: the run has ended.
        """
        ...

    def consume_message(
        self,
        lease: Lease,
        seq: int,
        name: str,
        topic: str,
        now: float,
        reseal: Reseal | None = None,
    ) -> StepRecord | LeaseLostError | None:
        """Take the oldest unread message on `topic` and journal it at `seq`, in one transaction.

        The entry's output is the message's payload, passed through `reseal` (from the
        message's `message_place` to the entry's `step_place`) when given. Returns None if no
        message waits; the final entry already at `seq` (consuming nothing) if there is one.
        """
        ...

    def set_event(
        self, lease: Lease, record: StepRecord, key: str, value: bytes
    ) -> StepRecord | LeaseLostError:
        """Journal `record` and set the run's event `key` to `value`, in one transaction.

        If a final entry is already at the record's position, only that entry is returned.
        """
        ...

    def get_event(self, run_id: str, key: str) -> bytes | None:
        """Return the run's event `key`, or None if it was never set."""
        ...

    # -- control ------------------------------------------------------------------------------

    def cancel_run(self, run_id: str, reason: Reason, now: float) -> list[str]:
        """Cancel the run and its unfinished descendants; return the ids cancelled.

        Runs that had ended are left as they are. `reason` is recorded as their error.

        Raises:
            WorkflowNotFoundError: no such run.
        """
        ...

    def resume_run(self, run_id: str, now: float) -> RunRow:
        """Make a CANCELLED or FAILED run PENDING again; return it.

        Journal entries that recorded the failure (errors after the last success) are
        removed, so those steps run again; everything before them is replayed. Runs in other
        states are returned unchanged.

        Raises:
            WorkflowNotFoundError: no such run.
        """
        ...

    def fork_run(
        self, run_id: str, new_id: str, from_seq: int, now: float, reseal: Reseal | None = None
    ) -> RunRow:
        """Create run `new_id`, PENDING, from run `run_id`'s workflow, input and early journal.

        The new run gets a copy of the final journal entries at positions below `from_seq`;
        it replays them and runs the rest anew. With `reseal`, every copied payload (input,
        entries' outputs and errors) is re-sealed for its new row.

        Raises:
            WorkflowNotFoundError: no run `run_id`.
            WorkflowConflictError: `new_id` exists.
        """
        ...

    def expire_runs(self, reason: Reason, now: float) -> list[str]:
        """Cancel the unfinished runs whose deadline has passed, and their descendants."""
        ...

    def run_statuses(self, run_ids: Sequence[str]) -> dict[str, str]:
        """Return the status of each of these runs that exists."""
        ...

    def next_wake_at(self) -> float | None:
        """Return the earliest timer among waiting runs."""
        ...

    def queue_counts(self) -> list[tuple[str, str, int]]:
        """Return (queue, status, number of runs) for every queue and status present."""
        ...

    def advance_schedule(self, name: str, previous: float | None, tick: float) -> bool:
        """Record `tick` as schedule `name`'s latest if `previous` still is; True if it was.

        The compare-and-set makes each tick start once across every process.
        """
        ...

    def last_tick(self, name: str) -> float | None:
        """Return schedule `name`'s latest recorded tick."""
        ...

    # -- workers ------------------------------------------------------------------------------

    def register_worker(self, worker: WorkerRow) -> None:
        """Insert the worker's row; for a known id, refresh its heartbeat and revive it."""
        ...

    def heartbeat(self, worker_id: str, now: float) -> bool:
        """Record that the worker is alive; False if it was declared dead or stopped meanwhile."""
        ...

    def list_workers(self) -> list[WorkerRow]:
        """Return the known workers that have not stopped."""
        ...

    def stop_workers(self, worker_ids: Sequence[str], now: float) -> None:
        """Declare workers stopped (gone or dead): their runs may be claimed at once."""
        ...

    def claim_runs(
        self,
        worker_id: str,
        names: Sequence[str],
        limit: int,
        now: float,
        lease_ttl: float,
        queues: Sequence[QueueLimits] = (),
    ) -> list[tuple[Lease, RunRow]]:
        """Claim up to `limit` runs of the workflows `names` that are due and nobody live owns.

        Claimable: a WAITING run whose `wake_at` has passed; a RUNNING run whose owner is
        stopped or has sent no heartbeat within `lease_ttl` (a recovery); a PENDING run
        outside queues; and a PENDING run of one of `queues` as far as that queue's limits
        allow, highest priority (lowest number) first. Claiming sets the owner and status
        RUNNING, bumps the epoch (fencing the previous owner), sets `started_at` on a first
        start, and counts a recovery for a run taken from a dead owner. Concurrent claimers
        never claim the same run, and queue limits hold across all of them.
        """
        ...

    # -- backup and restore -------------------------------------------------------------------

    def backup(self, sink: Callable[[str, tuple[Any, ...]], None]) -> int:
        """Hand every row of every tether table to `sink(table, values)`; return the schema version.

        All rows are read in one read transaction, so they are one consistent snapshot of the
        whole workflow state while workers go on writing. Tables come in `BACKUP_TABLES`
        order, rows in primary-key order, values in the table's `BACKUP_TABLES` column order:
        text, integers, floats (times as Unix seconds), bytes (payloads, as stored) or None.
        """
        ...

    def restore(
        self,
        columns: Mapping[str, Sequence[str]],
        rows: Iterable[tuple[str, Sequence[Any]]],
        *,
        replace: bool = False,
    ) -> dict[str, int]:
        """Insert backed-up `rows` (values in the order of `columns[table]`) in one transaction.

        The schema is migrated first. All or nothing: if anything fails (a bad row, an error
        raised by the `rows` iterator) nothing is written. Returns the rows restored per table.

        Raises:
            StoreError: the database already holds tether data and `replace` is False
                (with `replace`, everything in tether's tables is deleted first, in the
                same transaction).
            BackupError: a table or column this schema does not have.
        """
        ...


BACKUP_TABLES: dict[str, tuple[str, ...]] = {
    "runs": (
        "id", "name", "version", "status", "input", "input_hash", "output", "error", "owner",
        "epoch", "recoveries", "parent_id", "created_at", "updated_at", "finished_at", "queue",
        "priority", "partition_key", "dedup_id", "wake_at", "started_at", "deadline_at",
    ),
    "steps": (
        "run_id", "seq", "name", "status", "output", "error", "attempts", "started_at",
        "ended_at", "retry_at",
    ),
    "workers": (
        "id", "host", "boot_id", "pid", "pid_start", "started_at", "heartbeat_at", "stopped_at",
    ),
    "messages": ("id", "run_id", "topic", "payload", "key", "created_at", "consumed_at"),
    "events": ("run_id", "key", "value", "updated_at"),
    "waiters": ("target_id", "waiter_id"),
    "schedules": ("name", "last_tick"),
}  # fmt: skip
"""Every tether table and its columns, as backups hold them (the schema, less its version)."""

BACKUP_KEYS: dict[str, str] = {
    "runs": "id",
    "steps": "run_id, seq",
    "workers": "id",
    "messages": "id",
    "events": "run_id, key",
    "waiters": "target_id, waiter_id",
    "schedules": "name",
}
"""Each table's primary key: the order rows are backed up in."""

TIME_COLUMNS = frozenset(
    {
        "created_at", "updated_at", "finished_at", "wake_at", "started_at", "deadline_at",
        "ended_at", "retry_at", "heartbeat_at", "stopped_at", "consumed_at", "last_tick",
    }
)  # fmt: skip
"""Columns holding times: Unix seconds in backups, `timestamptz` in PostgreSQL."""


def check_backup_columns(columns: Mapping[str, Sequence[str]]) -> None:
    """Raise `BackupError` unless every table and column named is one of this schema's."""
    for table, names in columns.items():
        known = BACKUP_TABLES.get(table)
        if known is None:
            raise BackupError(
                f"the backup holds table {table!r}, which this tether does not have; restore "
                "it with the tether version that wrote it (or a newer one)"
            )
        unknown = [n for n in names if n not in known]
        if unknown:
            raise BackupError(
                f"the backup's table {table!r} has columns {unknown} that this tether does not "
                "have; restore it with the tether version that wrote it (or a newer one)"
            )


def not_empty(counts: Mapping[str, int]) -> StoreError:
    """The error for a restore into a database that holds tether data."""
    held = ", ".join(f"{n} {t}" for t, n in counts.items() if n)
    return StoreError(
        f"the target database already holds tether data ({held}); restore into an empty "
        "database, or pass --replace (tether restore) / replace=True to delete it first"
    )


# Shared by the implementations: how to read a write that changed nothing.


def conflict(new: NewRun, existing: RunRow) -> WorkflowConflictError | None:
    """The error if `existing` is not the run `new` describes (same workflow, same input)."""
    if existing.name != new.name:
        return WorkflowConflictError(new.id, f"another workflow ({existing.name!r})")
    if existing.input_hash != new.input_hash:
        return WorkflowConflictError(new.id, "different input")
    return None


def lease_lost(lease: Lease, run: RunRow | None) -> LeaseLostError:
    """Explain why `lease` no longer holds, given the run as it is now."""
    if run is None:
        return LeaseLostError(lease.run_id, "the run does not exist")
    if run.epoch != lease.epoch:
        return LeaseLostError(lease.run_id, f"claimed by worker {run.owner} at epoch {run.epoch}")
    return LeaseLostError(lease.run_id, f"the run is {run.status}")


def completion_refused(lease: Lease, run: RunRow | None) -> LeaseLostError | None:
    """Why a completion under `lease` that changed nothing was refused.

    None if it had already been recorded under this lease (an acknowledgement lost and the
    write retried).
    """
    if run is not None and run.epoch == lease.epoch and run.status in FINAL_RUN_STATUSES:
        return None
    return lease_lost(lease, run)


def reason_for(reason: Reason, run_id: str) -> bytes | None:
    """The error to record for run `run_id` ended by a cancellation with `reason`."""
    return reason(run_id) if callable(reason) else reason


def resealed_fork(
    reseal: Reseal,
    old: str,
    new: str,
    input_: bytes,
    steps: Sequence[tuple[int, bytes | None, bytes | None]],
) -> tuple[bytes, list[tuple[bytes | None, bytes | None, int]]]:
    """A forked run's input and copied entries `(seq, output, error)`, re-sealed for `new`.

    Returns the new input and `(output, error, seq)` per entry, ready for an UPDATE.
    """
    moved = reseal(input_, run_place(old, "input"), run_place(new, "input"))
    entries = []
    for seq, output, error in steps:
        if output is not None:
            output = reseal(output, step_place(old, seq, "output"), step_place(new, seq, "output"))
        if error is not None:
            error = reseal(error, step_place(old, seq, "error"), step_place(new, seq, "error"))
        entries.append((output, error, seq))
    return moved, entries
