"""The store against a model: random interleavings of starts, claims by several workers,
journal writes under fenced leases, heartbeats, crashes and recoveries, waits, messages,
cancellations, resumptions and completions (both backends).

A `RuleBasedStateMachine` drives the real `Store` protocol; a plain-Python model holds what the
protocol's docstrings say the store must hold. Every rule checks the store's answer against the
model's, and after every rule the invariants compare every run row and journal with the model:

- a final journal entry never changes once written (only `resume_run` drops failed ones);
- a run in a final state stays there (only `resume_run` takes it back to PENDING);
- a message is consumed at most once, and every message of a live run can still be consumed;
- a write under a lease that is no longer the run's (a fenced owner) is refused;
- a run claimed again (a recovery) finds its whole journal.

Time is the model's: every call that takes `now` gets the model's clock, which rules advance.
Each test shares one database across its examples; each example works under its own workflow
name, run ids and worker ids, so claims never see another example's runs.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tether.errors import (
    LeaseLostError,
    WorkflowConflictError,
    WorkflowFinishedError,
    WorkflowNotFoundError,
)
from tether.store.base import (
    FINAL_RUN_STATUSES,
    NOT_FINAL,
    STEP_ERROR,
    STEP_OK,
    STEP_RETRY,
    STEP_WAIT,
    Batch,
    BatchResult,
    Completion,
    Lease,
    NewMessage,
    NewRun,
    RunRow,
    StepRecord,
    Store,
)

from .helpers import NOW, worker

TTL = 10.0
RUNS = 4
WORKERS = 3
SEQS = 4
TOPICS = ("a", "b")
KEYS = (None, None, "k1", "k2")
RECV = "tether.recv"
WAKE_TOPIC = "wake"
REASON = b'{"type":"tether.errors.WorkflowCancelledError"}'

LEASE = st.integers(0, 6)
EXAMPLES = int(os.environ.get("STATE_MACHINE_EXAMPLES", "50"))
STEPS = int(os.environ.get("STATE_MACHINE_STEPS", "40"))
HYPOTHESIS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

_examples = itertools.count()


@dataclasses.dataclass
class Message:
    topic: str
    payload: bytes
    key: str | None
    consumed: bool = False


@dataclasses.dataclass
class Run:
    """What the store must hold for one run."""

    id: str
    input_hash: str
    parent: str | None
    created_at: float
    status: str
    owner: str | None
    epoch: int
    recoveries: int = 0
    output: bytes | None = None
    error: bytes | None = None
    wake_at: float | None = None
    finished_at: float | None = None
    steps: dict[int, StepRecord] = dataclasses.field(default_factory=dict)
    inbox: list[Message] = dataclasses.field(default_factory=list)
    waiting_on: set[str] = dataclasses.field(default_factory=set)

    def holds(self, lease: Lease) -> bool:
        """Whether `lease` is this run's: its current epoch while it runs."""
        return self.epoch == lease.epoch and self.status == "RUNNING"


@dataclasses.dataclass
class Worker:
    id: str
    heartbeat_at: float
    stopped: bool = False

    def live(self, now: float) -> bool:
        return not self.stopped and self.heartbeat_at > now - TTL


class StoreModel(RuleBasedStateMachine):
    """Drives `stores` (several connections to one database) against the model."""

    stores: ClassVar[Sequence[Store]] = ()
    tally: ClassVar[collections.Counter[str]] = collections.Counter()

    def __init__(self) -> None:
        super().__init__()
        n = next(_examples)
        self.name = f"wf{n}"
        self.run_ids = [f"e{n}-r{i}" for i in range(RUNS)]
        self.worker_ids = [f"e{n}-w{i}" for i in range(WORKERS)]
        self.now = NOW
        self.runs: dict[str, Run] = {}
        self.workers: dict[str, Worker] = {}
        self.leases: list[Lease] = []
        self.values = itertools.count()
        self.finals: dict[tuple[str, int], StepRecord] = {}  # every final entry ever seen
        self.ended: dict[str, str] = {}  # runs seen in a final state, and that state

    # -- plumbing ---------------------------------------------------------------------------

    def store_of(self, worker_id: str) -> Store:
        return self.stores[self.worker_ids.index(worker_id) % len(self.stores)]

    @property
    def client(self) -> Store:
        return self.stores[-1]

    def value(self, what: str) -> bytes:
        return f'"{what}-{next(self.values)}"'.encode()

    def pick_lease(self, pick: int) -> Lease:
        """The `pick`-th most recent lease: mostly current ones, sometimes fenced ones."""
        return self.leases[-1 - pick % len(self.leases)]

    def wake_waiters(self, ended: Sequence[str]) -> None:
        for run in self.runs.values():
            hit = run.waiting_on & set(ended)
            if hit and run.status == "WAITING":
                run.wake_at = self.now
            run.waiting_on -= hit

    def record(self, seq: int, status: str, name: str) -> StepRecord:
        output = self.value("out") if status == STEP_OK else None
        error = None if status in (STEP_OK, STEP_WAIT) else self.value("err")
        retry_at = self.now + 5 if status in NOT_FINAL else None
        return StepRecord("", seq, name, status, output, error, 1, self.now, self.now, retry_at)

    def expect_record(self, lease: Lease, rec: StepRecord) -> StepRecord | type[LeaseLostError]:
        """Apply a journal write to the model; return what the store must answer."""
        run = self.runs[lease.run_id]
        existing = run.steps.get(rec.seq)
        if existing is not None and existing.status not in NOT_FINAL:
            # The entry that stands, to its writer (whose acknowledgement was lost); a fenced
            # writer learns only that it lost the run.
            return existing if run.epoch == lease.epoch else LeaseLostError
        if not run.holds(lease):
            return LeaseLostError
        if existing is not None:  # a retry or wait entry is replaced; it keeps its start
            stored = dataclasses.replace(rec, started_at=existing.started_at)
        else:
            stored = rec
        run.steps[rec.seq] = stored
        return rec

    def expect_completion(
        self, lease: Lease, status: str, output: bytes | None, error: bytes | None
    ) -> type[LeaseLostError] | None:
        run = self.runs[lease.run_id]
        if run.holds(lease):
            run.status, run.output, run.error = status, output, error
            run.finished_at, run.wake_at = self.now, None
            self.wake_waiters([run.id])
            return None
        if run.epoch == lease.epoch and run.status in FINAL_RUN_STATUSES:
            return None  # already ended under this lease: an acknowledgement lost
        return LeaseLostError

    def new_run(self, run_id: str, owner: str | None, conflicting: bool, parent: str | None):
        return NewRun(
            id=run_id,
            name=self.name,
            input=b'{"args":[]}',
            input_hash="other" if conflicting else f"h-{run_id}",
            created_at=self.now,
            owner=owner,
            parent_id=parent,
        )

    def expect_create(self, new: NewRun) -> tuple[str, bool] | type[WorkflowConflictError]:
        known = self.runs.get(new.id)
        if known is not None:
            if known.input_hash != new.input_hash:
                return WorkflowConflictError
            return known.id, False
        self.runs[new.id] = Run(
            id=new.id,
            input_hash=new.input_hash,
            parent=new.parent_id,
            created_at=new.created_at,
            status="RUNNING" if new.owner else "PENDING",
            owner=new.owner,
            epoch=1 if new.owner else 0,
        )
        if new.owner:
            self.leases.append(Lease(new.id, new.owner, 1))
        return new.id, True

    def claimable(self, claimer: str) -> set[str]:
        """What `claimer` may claim: never its own running runs (they still execute there)."""
        live = {w.id for w in self.workers.values() if w.live(self.now)} | {claimer}
        due: set[str] = set()
        for run in self.runs.values():
            if (
                run.status == "PENDING"
                or (run.status == "WAITING" and run.wake_at is not None and run.wake_at <= self.now)
                or (run.status == "RUNNING" and run.owner not in live)
            ):
                due.add(run.id)
        return due

    def apply_claims(self, worker_id: str, claimed: list[tuple[Lease, RunRow]]) -> None:
        for lease, _ in claimed:
            run = self.runs[lease.run_id]
            run.recoveries += run.status == "RUNNING"
            run.status, run.owner, run.epoch, run.wake_at = (
                "RUNNING",
                worker_id,
                run.epoch + 1,
                None,
            )
            assert lease == Lease(run.id, worker_id, run.epoch)
            self.leases.append(lease)

    # -- rules: workers ---------------------------------------------------------------------

    @initialize()
    def register_workers(self) -> None:
        for wid in self.worker_ids:
            self.store_of(wid).register_worker(worker(wid, heartbeat_at=self.now))
            self.workers[wid] = Worker(wid, self.now)

    @rule(seconds=st.integers(1, 12))
    def time_passes(self, seconds: int) -> None:
        self.now += seconds

    @rule(w=st.integers(0, WORKERS - 1))
    def heartbeat(self, w: int) -> None:
        wid = self.worker_ids[w]
        model = self.workers[wid]
        assert self.store_of(wid).heartbeat(wid, self.now) is (not model.stopped)
        if not model.stopped:
            model.heartbeat_at = self.now

    @rule(w=st.integers(0, WORKERS - 1))
    def crash(self, w: int) -> None:
        """The worker is declared stopped (its process is gone): its runs may be taken."""
        wid = self.worker_ids[w]
        self.client.stop_workers([wid], self.now)
        self.workers[wid].stopped = True

    @rule(w=st.integers(0, WORKERS - 1))
    def restart(self, w: int) -> None:
        wid = self.worker_ids[w]
        self.store_of(wid).register_worker(worker(wid, heartbeat_at=self.now))
        self.workers[wid] = Worker(wid, self.now)

    @rule(w=st.integers(0, WORKERS - 1), limit=st.integers(1, 3))
    def claim(self, w: int, limit: int) -> None:
        """Claim due runs; one taken from a dead owner is a recovery, and fences the old one."""
        wid = self.worker_ids[w]
        due = self.claimable(wid)
        claimed = self.store_of(wid).claim_runs(wid, [self.name], limit, self.now, TTL)
        ids = [lease.run_id for lease, _ in claimed]
        assert len(ids) == len(set(ids)) == min(limit, len(due)), (ids, due)
        assert set(ids) <= due, (ids, due)
        self.apply_claims(wid, claimed)
        for _, row in claimed:
            self.check_run(row)
            # a recovered run resumes from its journal: every entry is there to replay
            assert self.store_of(wid).load_steps(row.id) == self.journal(row.id)

    # -- rules: runs ------------------------------------------------------------------------

    @rule(
        r=st.integers(0, RUNS - 1),
        owner=st.none() | st.integers(0, WORKERS - 1),
        conflicting=st.booleans(),
        parent=st.none() | st.integers(0, RUNS - 1),
    )
    def create(self, r: int, owner: int | None, conflicting: bool, parent: int | None) -> None:
        run_id = self.run_ids[r]
        parent_id = self.run_ids[parent] if parent is not None else None
        if parent_id == run_id or (parent_id is not None and parent_id not in self.runs):
            parent_id = None
        if run_id in self.runs:
            parent_id = self.runs[run_id].parent
        owner_id = None if owner is None else self.worker_ids[owner]
        new = self.new_run(run_id, owner_id, conflicting and run_id in self.runs, parent_id)
        expected = self.expect_create(new)
        store = self.client if owner_id is None else self.store_of(owner_id)
        if expected is WorkflowConflictError:
            with pytest.raises(WorkflowConflictError):
                store.create_run(new)
            return
        row, created = store.create_run(new)
        assert (row.id, created) == expected
        self.check_run(row)

    @precondition(lambda self: self.leases)
    @rule(
        pick=LEASE,
        seq=st.integers(0, SEQS - 1),
        status=st.sampled_from([STEP_OK, STEP_OK, STEP_ERROR, STEP_RETRY, STEP_WAIT]),
        name=st.sampled_from(["s", "t"]),
    )
    def record_step(self, pick: int, seq: int, status: str, name: str) -> None:
        """One journal write under some lease, current or stale."""
        lease = self.pick_lease(pick)
        rec = dataclasses.replace(self.record(seq, status, name), run_id=lease.run_id)
        expected = self.expect_record(lease, rec)
        [got] = self.store_of(lease.worker_id).record_steps([(lease, rec)])
        self.check_outcome(got, expected)

    @precondition(lambda self: self.leases)
    @rule(
        items=st.lists(
            st.tuples(
                LEASE,
                st.integers(0, SEQS - 1),
                st.sampled_from([STEP_OK, STEP_ERROR, STEP_RETRY, STEP_WAIT]),
            ),
            min_size=1,
            max_size=4,
        ),
        ends=st.lists(st.tuples(LEASE, st.sampled_from(FINAL_RUN_STATUSES)), max_size=2),
        start=st.none() | st.tuples(st.integers(0, RUNS - 1), st.integers(0, WORKERS - 1)),
        batched=st.booleans(),
    )
    def write_many(
        self,
        items: list[tuple[int, int, str]],
        ends: list[tuple[int, str]],
        start: tuple[int, int] | None,
        batched: bool,
    ) -> None:
        """Several writes in one commit: `write_batch` (runs, steps, completions) or
        `record_steps`; the same position may come twice (a retry entry, then its successor)."""
        new = None
        if batched and start is not None:
            run_id, owner = self.run_ids[start[0]], self.worker_ids[start[1]]
            parent = self.runs[run_id].parent if run_id in self.runs else None
            new = self.new_run(run_id, owner, False, parent)
        expected_new = [] if new is None else [self.expect_create(new)]
        writes = []
        for pick, seq, status in items:
            lease = self.pick_lease(pick)
            rec = dataclasses.replace(self.record(seq, status, "s"), run_id=lease.run_id)
            writes.append((lease, rec))
        expected_steps = [self.expect_record(lease, rec) for lease, rec in writes]
        if not batched:
            got_steps = self.client.record_steps(writes)
            assert len(got_steps) == len(writes)
            for got, want in zip(got_steps, expected_steps, strict=True):
                self.check_outcome(got, want)
            return
        completions = [self.completion(pick, status) for pick, status in ends]
        expected_ends = [
            self.expect_completion(c.lease, c.status, c.output, c.error) for c in completions
        ]
        result = self.client.write_batch(Batch([new] if new else [], writes, completions))
        self.check_batch(result, expected_new, expected_steps, expected_ends)

    def completion(self, pick: int, status: str) -> Completion:
        output = self.value("result") if status == "SUCCEEDED" else None
        error = None if status == "SUCCEEDED" else self.value("failure")
        return Completion(self.pick_lease(pick), status, output, error, self.now)

    def check_batch(
        self,
        result: BatchResult,
        expected_new: list[tuple[str, bool] | type[WorkflowConflictError]],
        expected_steps: list[StepRecord | type[LeaseLostError]],
        expected_ends: list[type[LeaseLostError] | None],
    ) -> None:
        for got_run, want_run in zip(result.runs, expected_new, strict=True):
            if want_run is WorkflowConflictError:
                assert isinstance(got_run, WorkflowConflictError)
            else:
                assert isinstance(got_run, tuple)
                assert (got_run[0].id, got_run[1]) == want_run
        for got, want in zip(result.steps, expected_steps, strict=True):
            self.check_outcome(got, want)
        for got_end, want_end in zip(result.completions, expected_ends, strict=True):
            if want_end is None:
                assert got_end is None
            else:
                assert isinstance(got_end, LeaseLostError)

    @precondition(lambda self: self.leases)
    @rule(pick=LEASE, status=st.sampled_from(FINAL_RUN_STATUSES))
    def complete(self, pick: int, status: str) -> None:
        lease = self.pick_lease(pick)
        output = self.value("result") if status == "SUCCEEDED" else None
        error = None if status == "SUCCEEDED" else self.value("failure")
        expected = self.expect_completion(lease, status, output, error)
        store = self.store_of(lease.worker_id)
        if expected is LeaseLostError:
            with pytest.raises(LeaseLostError):
                store.complete_run(lease, status, output, error, self.now)
        else:
            store.complete_run(lease, status, output, error, self.now)

    @precondition(lambda self: self.leases)
    @rule(
        pick=LEASE,
        wake_in=st.none() | st.integers(0, 20),
        topics=st.lists(st.sampled_from(TOPICS), max_size=2, unique=True),
        on_runs=st.lists(st.integers(0, RUNS - 1), max_size=2, unique=True),
    )
    def suspend(
        self, pick: int, wake_in: int | None, topics: list[str], on_runs: list[int]
    ) -> None:
        """Release a run to WAITING, unless what it waits for is already there."""
        lease = self.pick_lease(pick)
        run = self.runs[lease.run_id]
        targets = [self.run_ids[i] for i in on_runs if self.run_ids[i] != run.id]
        wake_at = None if wake_in is None else self.now + wake_in
        store = self.store_of(lease.worker_id)
        if not run.holds(lease):
            with pytest.raises(LeaseLostError):
                store.suspend(lease, wake_at, topics, targets, self.now)
            return
        message_there = any(not m.consumed and m.topic in topics for m in run.inbox)
        run_over = any(
            t not in self.runs or self.runs[t].status in FINAL_RUN_STATUSES for t in targets
        )
        suspended = store.suspend(lease, wake_at, topics, targets, self.now)
        assert suspended is not (message_there or run_over)
        if suspended:
            run.status, run.owner, run.wake_at, run.waiting_on = (
                "WAITING",
                None,
                wake_at,
                set(targets),
            )

    @rule(r=st.integers(0, RUNS - 1), topic=st.sampled_from(TOPICS), key=st.sampled_from(KEYS))
    def send(self, r: int, topic: str, key: str | None) -> None:
        run_id = self.run_ids[r]
        self.send_to(run_id, topic, key)

    def send_to(self, run_id: str, topic: str, key: str | None) -> None:
        message = NewMessage(run_id, topic, self.value("msg"), self.now, key)
        run = self.runs.get(run_id)
        if run is None:
            with pytest.raises(WorkflowNotFoundError):
                self.client.send_message(message)
            return
        if run.status in FINAL_RUN_STATUSES:
            with pytest.raises(WorkflowFinishedError):
                self.client.send_message(message)
            return
        duplicate = key is not None and any(m.key == key for m in run.inbox)
        assert self.client.send_message(message) is (not duplicate)
        if not duplicate:
            run.inbox.append(Message(topic, message.payload, key))
            if run.status == "WAITING":
                run.wake_at = self.now

    @precondition(lambda self: self.leases)
    @rule(pick=LEASE, seq=st.integers(0, SEQS - 1), topic=st.sampled_from(TOPICS))
    def consume(self, pick: int, seq: int, topic: str) -> None:
        """Take the oldest message on a topic into the journal at `seq`, as `recv` does."""
        lease = self.pick_lease(pick)
        got = self.store_of(lease.worker_id).consume_message(lease, seq, RECV, topic, self.now)
        self.check_outcome(got, self.expect_consume(lease, seq, topic))

    def expect_consume(
        self, lease: Lease, seq: int, topic: str
    ) -> StepRecord | type[LeaseLostError] | None:
        run = self.runs[lease.run_id]
        existing = run.steps.get(seq)
        if existing is not None and existing.status not in NOT_FINAL:
            return existing
        message = next((m for m in run.inbox if m.topic == topic and not m.consumed), None)
        if message is None:
            return None
        if not run.holds(lease):
            return LeaseLostError
        started = existing.started_at if existing is not None else self.now
        record = StepRecord(run.id, seq, RECV, STEP_OK, message.payload, None, 1, started, self.now)
        run.steps[seq] = record
        message.consumed = True
        return record

    @rule(r=st.integers(0, RUNS - 1))
    def cancel(self, r: int) -> None:
        run_id = self.run_ids[r]
        if run_id not in self.runs:
            with pytest.raises(WorkflowNotFoundError):
                self.client.cancel_run(run_id, REASON, self.now)
            return
        tree, frontier = [], [run_id]
        while frontier:
            tree += frontier
            frontier = [r.id for r in self.runs.values() if r.parent in frontier]
        cancelled = sorted(t for t in tree if self.runs[t].status not in FINAL_RUN_STATUSES)
        assert self.client.cancel_run(run_id, REASON, self.now) == cancelled
        for t in cancelled:
            run = self.runs[t]
            run.status, run.error, run.finished_at, run.wake_at = (
                "CANCELLED",
                REASON,
                self.now,
                None,
            )
        self.wake_waiters(cancelled)

    @rule(r=st.integers(0, RUNS - 1))
    def resume(self, r: int) -> None:
        """The one way out of a final state: a CANCELLED or FAILED run goes on from its journal."""
        run_id = self.run_ids[r]
        if run_id not in self.runs:
            with pytest.raises(WorkflowNotFoundError):
                self.client.resume_run(run_id, self.now)
            return
        run = self.runs[run_id]
        if run.status in ("CANCELLED", "FAILED"):
            run.status, run.owner, run.output, run.error = "PENDING", None, None, None
            run.finished_at, run.wake_at, run.recoveries = None, None, 0
            last_ok = max((s for s, e in run.steps.items() if e.status == STEP_OK), default=-1)
            for seq in [s for s, e in run.steps.items() if e.status != STEP_OK and s > last_ok]:
                del run.steps[seq]
                self.finals.pop((run_id, seq), None)
            self.ended.pop(run_id, None)
        self.check_run(self.client.resume_run(run_id, self.now))

    # -- checks -----------------------------------------------------------------------------

    def journal(self, run_id: str) -> list[StepRecord]:
        run = self.runs[run_id]
        return [run.steps[s] for s in sorted(run.steps)]

    def check_outcome(self, got: object, expected: object) -> None:
        if expected is LeaseLostError:
            assert isinstance(got, LeaseLostError), f"a fenced write was accepted: {got}"
        else:
            assert got == expected

    def check_run(self, row: RunRow | None) -> None:
        assert row is not None
        run = self.runs[row.id]
        got = (row.status, row.owner, row.epoch, row.recoveries, row.output, row.error)
        want = (run.status, run.owner, run.epoch, run.recoveries, run.output, run.error)
        assert got == want, f"run {row.id}: store {got}, model {want}"
        assert (row.wake_at, row.finished_at, row.parent_id) == (
            run.wake_at,
            run.finished_at,
            run.parent,
        ), row

    @invariant()
    def store_matches_model(self) -> None:
        self.tally["steps"] += 1
        for run_id in self.runs:
            self.check_run(self.client.get_run(run_id))
            assert self.client.load_steps(run_id) == self.journal(run_id), run_id
        live = {w.id for w in self.client.list_workers() if w.id in self.workers}
        assert live == {w.id for w in self.workers.values() if not w.stopped}

    @invariant()
    def final_entries_never_change(self) -> None:
        for run_id in self.runs:
            for entry in self.client.load_steps(run_id):
                if entry.status not in NOT_FINAL:
                    first = self.finals.setdefault((run_id, entry.seq), entry)
                    assert entry == first, f"final entry {run_id}/{entry.seq} changed"
            for (rid, seq), first in self.finals.items():
                if rid == run_id:
                    assert first in self.client.load_steps(run_id), f"{rid}/{seq} vanished"

    @invariant()
    def final_states_stay_final(self) -> None:
        for run_id, row in self.client_rows().items():
            if row.status in FINAL_RUN_STATUSES:
                assert self.ended.setdefault(run_id, row.status) == row.status
            else:
                assert run_id not in self.ended, f"{run_id} left {self.ended[run_id]}"

    @invariant()
    def messages_consumed_at_most_once(self) -> None:
        payloads = [
            e.output
            for run_id in self.runs
            for e in self.client.load_steps(run_id)
            if e.name == RECV
        ]
        assert len(payloads) == len(set(payloads))
        consumed = {m.payload for r in self.runs.values() for m in r.inbox if m.consumed}
        assert set(payloads) == consumed

    def client_rows(self) -> dict[str, RunRow]:
        rows = {run_id: self.client.get_run(run_id) for run_id in self.runs}
        return {k: v for k, v in rows.items() if v is not None}

    def teardown(self) -> None:
        """No message of a live run is lost: a fresh worker takes every live run and drains it."""
        self.tally["examples"] += 1
        if not self.runs or sys.exc_info()[0] is not None:
            return  # nothing ran, or a rule failed already
        self.now += TTL + 1
        for run in self.runs.values():
            timer_due = run.wake_at is not None and run.wake_at <= self.now
            if run.status == "WAITING" and not timer_due and any(not m.consumed for m in run.inbox):
                self.send_to(run.id, WAKE_TOPIC, None)  # wake it: messages wait for it
        drainer = f"{self.worker_ids[0]}-drain"
        self.client.stop_workers(self.worker_ids, self.now)
        for w in self.workers.values():
            w.stopped = True
        self.client.register_worker(worker(drainer, heartbeat_at=self.now))
        self.workers[drainer] = Worker(drainer, self.now)
        due = self.claimable(drainer)
        claimed = self.client.claim_runs(drainer, [self.name], 100, self.now, TTL)
        assert {lease.run_id for lease, _ in claimed} == due
        self.apply_claims(drainer, claimed)
        for lease, _ in claimed:
            self.drain(lease)
        self.tally["drained"] += len(claimed)

    def drain(self, lease: Lease) -> None:
        run = self.runs[lease.run_id]
        seq = SEQS
        for topic in (*TOPICS, WAKE_TOPIC):
            waiting = [m.payload for m in run.inbox if m.topic == topic and not m.consumed]
            taken = []
            while True:
                got = self.client.consume_message(lease, seq, RECV, topic, self.now)
                if got is None:
                    break
                assert isinstance(got, StepRecord)
                taken.append(got.output)
                seq += 1
            assert taken == waiting, f"run {run.id} topic {topic}: {taken} != {waiting}"


def _run_machine(stores: Sequence[Store]) -> None:
    tally: collections.Counter[str] = collections.Counter()
    machine = type("StoreModelHere", (StoreModel,), {"stores": stores, "tally": tally})
    started = time.perf_counter()
    run_state_machine_as_test(machine, settings=HYPOTHESIS)
    elapsed = time.perf_counter() - started
    print(f"store model on {stores[0].dialect}: {dict(tally)} in {elapsed:.1f}s")
    assert tally["examples"] >= EXAMPLES  # the machine ran, every example to its end


@pytest.mark.timeout(900)
def test_store__random_interleavings__match_the_model(
    store: Store, make_store: Callable[[], Store]
):
    """Three workers on two connections (two 'processes') and a client share one database."""
    _run_machine([store, make_store(), store])
