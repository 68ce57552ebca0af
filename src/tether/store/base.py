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
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from tether.errors import LeaseLostError, WorkflowConflictError

# Journal entry states.
STEP_OK = "ok"
"""The step returned; `output` holds its result."""
STEP_ERROR = "error"
"""The step failed for good; `error` holds the exception."""
STEP_RETRY = "retry"
"""An attempt failed and another is due at `retry_at`; the entry is not final."""

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

    runs: list[tuple[RunRow, bool] | WorkflowConflictError]
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
        self, worker_id: str, names: Sequence[str], limit: int, now: float, lease_ttl: float
    ) -> list[tuple[Lease, RunRow]]:
        """Claim up to `limit` unfinished runs of the workflows `names` that nobody live owns.

        A run is claimable when it is PENDING or RUNNING and its owner is none, stopped, or
        has not sent a heartbeat within `lease_ttl`. Claiming sets the owner, bumps the epoch
        (fencing the previous owner) and, for a run that had an owner, counts a recovery.
        Concurrent claimers never claim the same run.
        """
        ...


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
