"""The engine against a model: random starts, messages, cancellations, crashes and
recoveries of real `tether.App` workers in one process (both backends).

Each run executes `flow`: step, recv, step, recv, step. Its steps record every execution in a
ledger and return values derived from the run id, so the result a run must reach is known from
the messages sent to it. Two worker slots hold entered Apps; a crash abandons a worker without
its graceful shutdown (its runs are cancelled mid-flight and its row stays live until another
worker declares it stopped, as one does for a process that is gone); a worker can also be
declared stopped while it still runs, so its executions go on and their late writes must be
fenced. A client App that is never entered starts, messages and cancels runs, as another
process would.

After every rule: final journal entries never change, final states stay final, and no message
is journaled twice. At the end a fresh worker finishes every run: each run that was not
cancelled returns exactly what the model says (it resumed from its journal with the messages
in the order sent), and each step ran once, or more only when a fenced worker ran it again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import os
import sys
import time
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import tether
from tether.settings import Settings
from tether.store.base import FINAL_RUN_STATUSES, NOT_FINAL, StepRecord

RUNS = 3
SLOTS = 2
RECV = "tether.recv"
FAST = {
    "poll_interval": 0.02,
    "heartbeat_interval": 0.1,
    "lease_ttl": 30.0,  # never lapses within a test: workers are declared stopped instead
    "wait_in_memory": 0.05,
}
EXAMPLES = int(os.environ.get("STATE_MACHINE_EXAMPLES", "50")) // 5
HYPOTHESIS = settings(
    max_examples=max(EXAMPLES, 1),
    stateful_step_count=25,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=list(HealthCheck),
)

_examples = itertools.count()


def define(app: tether.App, ledger: collections.Counter[tuple[str, int]]) -> None:
    """Register `flow` on `app`: three steps with a message awaited between each."""

    @app.step(name="act")
    async def act(run_id: str, i: int) -> str:
        ledger[(run_id, i)] += 1
        return f"{run_id}:{i}"

    @app.workflow(name="flow")
    async def flow(run_id: str) -> list[Any]:
        out: list[Any] = []
        for i in range(2):
            out.append(await act(run_id, i))
            out.append(await tether.recv("m"))
        out.append(await act(run_id, 2))
        return out


@dataclasses.dataclass
class Run:
    sent: list[str] = dataclasses.field(default_factory=list)
    cancelled: bool = False


class EngineModel(RuleBasedStateMachine):
    """Workers in slots, a client, and the runs they share, against the model."""

    base: ClassVar[Settings]
    tally: ClassVar[collections.Counter[str]]

    def __init__(self) -> None:
        super().__init__()
        n = next(_examples)
        self.run_ids = [f"e{n}-r{i}" for i in range(RUNS)]
        self.loop = asyncio.new_event_loop()
        self.ledger: collections.Counter[tuple[str, int]] = collections.Counter()
        self.slots: list[tether.App | None] = [None] * SLOTS
        self.closed: list[tether.App] = []
        self.client = self.new_app()
        self.runs: dict[str, Run] = {}
        self.messages = itertools.count()
        self.fenced = 0  # workers declared stopped while their executions went on
        self.finals: dict[tuple[str, int], StepRecord] = {}
        self.ended: dict[str, str] = {}

    def new_app(self) -> tether.App:
        app = tether.App(settings=dataclasses.replace(self.base, **FAST))  # type: ignore[arg-type]
        define(app, self.ledger)
        return app

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def live(self) -> list[tether.App]:
        return [a for a in self.slots if a is not None]

    # -- workers ----------------------------------------------------------------------------

    @rule(slot=st.integers(0, SLOTS - 1))
    def enter_worker(self, slot: int) -> None:
        """A worker starts (or restarts in an empty slot): it recovers what nobody runs."""
        if self.slots[slot] is None:
            app = self.new_app()
            self.run(app.__aenter__())
            self.slots[slot] = app

    @precondition(lambda self: any(self.slots))
    @rule(slot=st.integers(0, SLOTS - 1))
    def crash(self, slot: int) -> None:
        """The worker dies: no graceful stop, no deregistration; then it is found gone."""
        app = self.slots[slot]
        if app is None:
            return
        self.slots[slot] = None
        worker = app._worker
        assert worker is not None
        app._worker = None
        self.run(_kill(worker))
        self.client.store.stop_workers([worker.id], time.time())
        self.closed.append(app)

    @precondition(lambda self: any(self.slots))
    @rule(slot=st.integers(0, SLOTS - 1))
    def declare_stopped(self, slot: int) -> None:
        """The worker is declared stopped while it runs: others take its runs, it is fenced."""
        app = self.slots[slot]
        if app is not None and app._worker is not None:
            self.client.store.stop_workers([app._worker.id], time.time())
            self.fenced += 1

    @rule(ms=st.sampled_from([10, 50, 150]))
    def time_passes(self, ms: int) -> None:
        self.run(asyncio.sleep(ms / 1000))

    # -- runs -------------------------------------------------------------------------------

    @rule(r=st.integers(0, RUNS - 1), slot=st.none() | st.integers(0, SLOTS - 1))
    def start(self, r: int, slot: int | None) -> None:
        """Start (idempotently) from a worker, which runs it at once, or from the client."""
        app = self.client if slot is None else self.slots[slot] or self.client
        run_id = self.run_ids[r]
        handle = self.run(app.start("flow", run_id, id=run_id))
        assert handle.id == run_id
        self.runs.setdefault(run_id, Run())

    @precondition(lambda self: self.runs)
    @rule(r=st.integers(0, RUNS - 1), slot=st.none() | st.integers(0, SLOTS - 1))
    def send(self, r: int, slot: int | None) -> None:
        run_id = self.run_ids[r]
        if run_id not in self.runs:
            return
        app = self.client if slot is None else self.slots[slot] or self.client
        payload = f"msg-{next(self.messages)}"
        try:
            assert self.run(app.send(run_id, "m", payload))
        except tether.WorkflowFinishedError:
            row = app.store.get_run(run_id)
            assert row is not None
            assert row.status in FINAL_RUN_STATUSES
            return
        self.runs[run_id].sent.append(payload)

    @precondition(lambda self: self.runs)
    @rule(r=st.integers(0, RUNS - 1))
    def cancel(self, r: int) -> None:
        run_id = self.run_ids[r]
        if run_id not in self.runs:
            return
        apps = self.live() or [self.client]
        if run_id in self.run(apps[0].cancel(run_id)):
            self.runs[run_id].cancelled = True

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def journals_and_states_hold(self) -> None:
        self.tally["steps"] += 1
        store = self.client.store
        taken: list[bytes | None] = []
        for run_id in self.runs:
            journal = store.load_steps(run_id)
            for entry in journal:
                if entry.status not in NOT_FINAL:
                    first = self.finals.setdefault((run_id, entry.seq), entry)
                    assert entry == first, f"final entry {run_id}/{entry.seq} changed"
                if entry.name == RECV and entry.status not in NOT_FINAL:
                    taken.append(entry.output)
            for (rid, seq), first in self.finals.items():
                if rid == run_id:
                    assert first in journal, f"final entry {rid}/{seq} vanished"
            row = store.get_run(run_id)
            assert row is not None
            if row.status in FINAL_RUN_STATUSES:
                assert self.ended.setdefault(run_id, row.status) == row.status
            else:
                assert run_id not in self.ended, f"{run_id} left {self.ended[run_id]}"
        assert len(taken) == len(set(taken)), "a message was journaled twice"

    # -- the end ----------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            if sys.exc_info()[0] is None:
                self.tally["examples"] += 1
                self.run(self.finish())
        finally:
            self.run(self.close_all())
            self.loop.close()

    async def finish(self) -> None:
        """Every run goes to its end on a fresh worker, with what the model says it returns."""
        finisher = self.new_app()
        self.closed.append(finisher)
        async with finisher:
            for run_id, run in self.runs.items():
                while len(run.sent) < 2 and not run.cancelled:
                    payload = f"msg-{next(self.messages)}"
                    try:
                        await finisher.send(run_id, "m", payload)
                    except tether.WorkflowFinishedError:
                        break
                    run.sent.append(payload)
            for run_id, run in self.runs.items():
                await self.check_end(finisher, run_id, run)

    async def check_end(self, app: tether.App, run_id: str, run: Run) -> None:
        handle = app.retrieve(run_id)
        if run.cancelled:
            with pytest.raises(tether.WorkflowCancelledError):
                await handle.result(timeout=20)
            return
        result = await handle.result(timeout=20)
        assert result == [f"{run_id}:0", run.sent[0], f"{run_id}:1", run.sent[1], f"{run_id}:2"]
        self.tally["finished"] += 1
        journal = app.store.load_steps(run_id)
        assert [(e.seq, e.name) for e in journal] == [
            (0, "act"),
            (1, RECV),
            (2, "act"),
            (3, RECV),
            (4, "act"),
        ]
        for i in range(3):
            # a step that completed never runs again, except on a worker fenced meanwhile
            assert 1 <= self.ledger[(run_id, i)] <= 1 + self.fenced, (run_id, i, self.ledger)

    async def close_all(self) -> None:
        for app in self.live():
            with contextlib.suppress(Exception):
                await app.__aexit__(None, None, None)
            self.closed.append(app)
        self.slots = [None] * SLOTS
        for app in [*self.closed, self.client]:
            app.close()


async def _kill(worker: Any) -> None:
    """Stop a worker as a dying process would: its tasks end, nothing is written for it."""
    for task in worker._loops:
        task.cancel()
    worker.abandon_all()
    tasks = [task for _, task in worker.running.values()] + worker._loops
    await asyncio.gather(*tasks, return_exceptions=True)
    worker.workflow_threads.shutdown(wait=False, cancel_futures=True)
    worker.step_threads.shutdown(wait=False, cancel_futures=True)
    worker.committer.close()


def _run_machine(base: Settings) -> None:
    tally: collections.Counter[str] = collections.Counter()
    machine = type("EngineModelHere", (EngineModel,), {"base": base, "tally": tally})
    started = time.perf_counter()
    run_state_machine_as_test(machine, settings=HYPOTHESIS)
    elapsed = time.perf_counter() - started
    backend = str(base.database_url).split(":")[0]
    print(f"engine model on {backend}: {dict(tally)} in {elapsed:.1f}s")
    assert tally["examples"] >= HYPOTHESIS.max_examples


@pytest.mark.timeout(900)
def test_engine__random_interleavings__match_the_model(settings: Settings):
    _run_machine(settings)
