"""The store protocol: durable state as rows, and the verbs that change it.

The store knows nothing of workflows' meaning. It keeps runs, their journals and the workers
that own them, as rows holding encoded bytes; the engine decides what the bytes mean. Every
method is one transaction: nothing partial survives an error. Driver errors never escape: they
are translated into `tether.errors.StoreError` subclasses at this boundary.

Ownership is fenced. A worker that claims a run gets a `Lease` (worker id and epoch); every
write on behalf of a run (a journal entry, the final outcome) is conditioned on that lease in
the same statement, so a worker whose run was taken over writes nothing more.

Times are Unix seconds (floats) passed in by the caller from its `Clock`; store code never
reads the time itself, with one exception: leases. Where the database has a clock of its own
that every worker shares (`Store.database_clock_leases`, PostgreSQL), heartbeats and the
lease-expiry comparison of `claim_runs` use the database server's clock in SQL, and the
caller's `now` (and a `WorkerRow`'s times) are not used for them, so clock skew between
machines cannot make one worker take a live worker's runs. SQLite lives on the machine of its
workers: there the caller's `now` is used for leases too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from tether.codec import run_place, step_place
from tether.errors import (
    BackupError,
    CorruptRowError,
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

WorkflowKey = tuple[str, str | None]
"""A workflow a worker can run: (name, version). `claim_runs` takes a bare name for
(name, None), an unversioned workflow."""


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


@dataclasses.dataclass(frozen=True, slots=True)
class AuditRow:
    """One record of an audit chain: `hash` covers the record and `prev_hash`, the link."""

    chain_id: str
    seq: int
    kind: str
    body: bytes
    prev_hash: str
    hash: str
    created_at: float


@dataclasses.dataclass(frozen=True, slots=True)
class AuditHead:
    """The last record of a chain, as written with it."""

    chain_id: str
    seq: int
    hash: str
    updated_at: float


# Service breaker states (see `Store.admit_service_call`).
BREAKER_CLOSED = "closed"
"""Calls go through; failures are counted."""
BREAKER_OPEN = "open"
"""No call goes through until `ServiceRow.retry_at`."""
BREAKER_HALF_OPEN = "half_open"
"""One probe call at a time goes through; its outcome closes or re-opens the breaker."""

# Outcomes of a service call (see `Store.finish_service_call`).
CALL_OK = "ok"
"""The call succeeded: a half-open breaker's probe closes it."""
CALL_FAILURE = "failure"
"""The call failed in a way that says the service is unwell: it counts toward opening."""
CALL_NEUTRAL = "neutral"
"""Neither (a bad request, a cancelled call): the breaker is not moved."""


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceLimits:
    """How a service is guarded: its circuit breaker and its rate budget.

    Attributes:
        failure_threshold: failures within `failure_window` seconds that open the breaker.
        failure_window: seconds over which failures are counted (a sliding window).
        cooldown: seconds an open breaker refuses every call before it lets a probe through.
        probe_timeout: seconds after which a probe that never reported is given up, and
            another may go.
        requests: most requests admitted in any `rate_window` seconds; None for no limit.
        tokens: most tokens reserved (then used) in any `rate_window` seconds; None for no limit.
        rate_window: the length of the budget's sliding window, in seconds.
    """

    failure_threshold: int = 5
    failure_window: float = 30.0
    cooldown: float = 30.0
    probe_timeout: float = 60.0
    requests: int | None = None
    tokens: int | None = None
    rate_window: float = 60.0


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceCall:
    """A call a caller wants to make to a service, for `Store.admit_service_call`.

    `id` names the call from admission to outcome; admitting the same id again returns the
    first admission (so a retry after a lost acknowledgement reserves nothing twice).
    """

    service: str
    id: str
    limits: ServiceLimits
    requests: int = 1
    tokens: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceRow:
    """A service's breaker and its budget's use, as seen at `now`.

    Attributes:
        name: the service.
        state: `BREAKER_CLOSED`, `BREAKER_OPEN` or `BREAKER_HALF_OPEN`, as it stands at `now`
            (an open breaker whose cooldown has passed reads half-open: its next call probes).
        failures: failures counted within the failure window (closed breaker).
        opened_at: when the breaker last opened.
        retry_at: open: when a probe may go; half-open with a probe out: when that probe is
            given up.
        probe_id: the call holding the half-open breaker's probe, if one is out.
        window_requests: requests admitted within the rate window ending at `now`.
        window_tokens: tokens reserved or used within that window.
        limits: the limits the latest caller gave (None if none has yet).
        now: the clock reading this row was computed at.
    """

    name: str
    state: str
    failures: int
    opened_at: float | None
    retry_at: float | None
    probe_id: str | None
    window_requests: int
    window_tokens: int
    limits: ServiceLimits | None
    now: float


@dataclasses.dataclass(frozen=True, slots=True)
class ServiceAdmission:
    """The answer to `Store.admit_service_call`.

    Attributes:
        admitted: the call may go; its reservation is recorded.
        now: the clock reading the decision was made at.
        probe: admitted as the half-open breaker's one probe.
        retry_at: refused by the breaker: when it may let a call through (a time).
        wait: refused by the budget: seconds until it has room (`math.inf`: never, the call
            alone is larger than the whole budget).
        service: the service as it stands after the decision.
    """

    admitted: bool
    now: float
    service: ServiceRow
    probe: bool = False
    retry_at: float | None = None
    wait: float | None = None


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

    database_clock_leases: bool
    """True when heartbeats and lease expiry are measured on the database server's clock
    (PostgreSQL): `heartbeat`'s and `claim_runs`' `now`, and `register_worker`'s row times,
    are then not used for them. False when they are measured on the caller's `now` (SQLite,
    whose workers share one machine and its clock)."""

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
        """Insert the worker's row; for a known id, refresh its heartbeat and revive it.

        Workers silent for a day are forgotten. With `database_clock_leases` the row's
        `started_at` and `heartbeat_at` are the database's time, not the row's.
        """
        ...

    def heartbeat(self, worker_id: str, now: float) -> bool:
        """Record that the worker is alive; False if it was declared dead or stopped meanwhile.

        The heartbeat's time is `now`, or the database's time with `database_clock_leases`.
        """
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
        names: Sequence[str | WorkflowKey],
        limit: int,
        now: float,
        lease_ttl: float,
        queues: Sequence[QueueLimits] = (),
    ) -> list[tuple[Lease, RunRow]]:
        """Claim up to `limit` runs of the workflows `names` that are due and nobody live owns.

        `names` are the workflows the worker runs, as (name, version) pairs (a bare name is
        (name, None)): only runs recorded with one of these names *and* its version are
        claimed, so a run is resumed only by code of the version that started it.

        Claimable: a WAITING run whose `wake_at` has passed (on `now`); a RUNNING run of
        another worker that is stopped or has sent no heartbeat within `lease_ttl` (a recovery;
        measured on `now`, or on the database's clock with `database_clock_leases`; a worker
        never takes its own runs back this way: they still execute there); a PENDING run
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

    # -- blobs --------------------------------------------------------------------------------

    def put_blobs(self, items: Sequence[tuple[str, bytes]]) -> int:
        """Store blobs `(hash, data)` in one transaction; return how many are new.

        The hash names the content (the caller computes it): a hash already stored is skipped
        and its bytes are never rewritten, so concurrent writers of the same content agree.
        """

    def missing_blobs(self, hashes: Sequence[str]) -> list[str]:
        """Return the hashes among `hashes` that are not stored, once each, in their order."""

    def get_blobs(self, hashes: Sequence[str]) -> dict[str, bytes]:
        """Return the stored bytes of each of `hashes` that is stored; missing ones are absent."""

    def blob_stats(self) -> tuple[int, int]:
        """Return (how many blobs are stored, their total size in bytes)."""

    # -- audit chains -------------------------------------------------------------------------

    def append_audit(self, rows: Sequence[AuditRow], now: float) -> None:
        """Append records to their chains and move each chain's head, in one transaction.

        Appending is idempotent, so a replayed execution can append again what it appended
        before a crash: a record whose (chain, seq) exists with the same hash is skipped. A new
        record must follow its chain's head (seq one higher, `prev_hash` equal to the head's
        hash; the first record has seq 0).

        Raises:
            CorruptRowError: a record conflicts with the stored one at its position, or does
                not link to the head; nothing is written.
        """

    def load_audit(self, chain_id: str) -> tuple[list[AuditRow], AuditHead | None]:
        """Return a chain's records in seq order, and its head (None for an unknown chain)."""

    def list_audit_heads(self, prefix: str = "", limit: int = 1000) -> list[AuditHead]:
        """Return the heads of chains whose id starts with `prefix`, newest first."""

    # -- services -----------------------------------------------------------------------------
    #
    # Time: these methods read the clock themselves when `now` is None, inside the transaction
    # and after taking the service's lock, so that decisions are ordered like the clock. On
    # PostgreSQL that clock is the database server's (`clock_timestamp()`): every machine of a
    # fleet measures cooldowns and rate windows alike, whatever the skew between their own
    # clocks. On SQLite, whose processes share one machine, it is that machine's clock. Tests
    # pass `now` to drive time.

    def admit_service_call(self, call: ServiceCall, now: float | None = None) -> ServiceAdmission:
        """Decide, atomically across every process, whether `call` may go to its service now.

        The breaker first: closed admits; open refuses (with `retry_at`) until its cooldown
        has passed; then, half-open, it admits exactly one call fleet-wide as a probe, and
        refuses others until the probe reports or `probe_timeout` passes. Then the budget:
        if `call.requests` more requests and `call.tokens` more tokens fit in the sliding
        window of `rate_window` seconds ending now, the call is admitted and reserved;
        otherwise it is refused with `wait`, the seconds until enough of the window's earlier
        reservations have left it (no probe is taken then). Admitting an id already admitted
        returns that admission again and reserves nothing more. The service's row is created
        on first use, and keeps `call.limits` for display.
        """

    def finish_service_call(
        self,
        call: ServiceCall,
        outcome: str,
        tokens_used: int | None = None,
        now: float | None = None,
    ) -> ServiceRow:
        """Record the outcome of an admitted call; return the service as it stands after.

        `CALL_FAILURE`: counted while the breaker is closed, and `failure_threshold` failures
        within `failure_window` open it for `cooldown` seconds; the probe's failure re-opens it
        for another cooldown. `CALL_OK`: the probe's success closes the breaker and forgets
        the failures. `CALL_NEUTRAL` moves nothing, but frees the probe slot if the call held
        it. Outcomes of calls that are not the probe leave an open or half-open breaker as it
        is. `tokens_used`, when given, replaces the call's token reservation with the tokens
        it actually used. From now on the call counts in the rate window from its finish, not
        its admission (the provider received it somewhere in between). Recording the same
        call's outcome twice changes nothing the second time.
        """

    def list_services(
        self, names: Sequence[str] = (), now: float | None = None
    ) -> list[ServiceRow]:
        """Return the services named (every known one if none is), sorted by name."""


# Shared by the implementations.


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
    "audit": ("chain_id", "seq", "kind", "body", "prev_hash", "hash", "created_at"),
    "audit_heads": ("chain_id", "seq", "hash", "updated_at"),
    "blobs": ("hash", "data", "size"),
}  # fmt: skip
"""Every tether table and its columns, as backups hold them (the schema, less its version).

Service breakers and rate windows (`services`, `service_calls`) are left out: they describe
the providers' health in the last minutes, not the workflows, and start afresh after a restore.
"""

BACKUP_KEYS: dict[str, str] = {
    "runs": "id",
    "steps": "run_id, seq",
    "workers": "id",
    "messages": "id",
    "events": "run_id, key",
    "waiters": "target_id, waiter_id",
    "schedules": "name",
    "audit": "chain_id, seq",
    "audit_heads": "chain_id",
    "blobs": "hash",
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


def workflow_keys(names: Sequence[str | WorkflowKey]) -> list[WorkflowKey]:
    """`claim_runs`' workflows as (name, version) pairs: a bare name is (name, None)."""
    return [(n, None) if isinstance(n, str) else (n[0], n[1]) for n in names]


# How to read a write that changed nothing.


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


GENESIS = "0" * 64
"""The `prev_hash` of a chain's first record."""


def audit_appends(
    rows: Sequence[AuditRow],
    head: Callable[[str], tuple[int, str] | None],
    stored_hash: Callable[[str, int], str | None],
) -> list[AuditRow]:
    """Decide which of `rows` to insert, given each chain's head and the stored hashes.

    Raises:
        CorruptRowError: a row conflicts with a stored record or does not link to its head.
    """
    heads: dict[str, tuple[int, str]] = {}
    inserts: dict[tuple[str, int], AuditRow] = {}
    for row in sorted(rows, key=lambda r: (r.chain_id, r.seq)):
        if row.chain_id not in heads:
            heads[row.chain_id] = head(row.chain_id) or (-1, GENESIS)
        seq, last = heads[row.chain_id]
        if row.seq <= seq:
            mine = inserts.get((row.chain_id, row.seq))
            if (mine.hash if mine else stored_hash(row.chain_id, row.seq)) != row.hash:
                raise CorruptRowError(
                    f"audit chain {row.chain_id!r} already holds a different record at {row.seq}; "
                    "the chain was altered, or two writers appended to it: run "
                    "`tether audit verify` to find the first broken link"
                )
            continue
        if row.seq != seq + 1 or row.prev_hash != last:
            raise CorruptRowError(
                f"audit record {row.seq} does not follow the head of chain {row.chain_id!r} "
                f"(record {seq}); append records in order, each linking to the previous hash"
            )
        inserts[row.chain_id, row.seq] = row
        heads[row.chain_id] = (row.seq, row.hash)
    return list(inserts.values())


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
