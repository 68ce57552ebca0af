"""Durable waits: how a run waits for time, a message or another run without holding memory.

A coordination call (`sleep`, `recv`, waiting for a run's result, starting a child) takes a
journal position like a step does, when it is called. Its entry records what it waits for:
a `wait` entry holds the deadline, so a restart resumes the same wait with the same deadline;
the final entry holds the outcome, so replay returns it at once.

While a run waits it first stays in memory for `Settings.wait_in_memory` seconds, woken early
by what happens in this process (a message sent here, a run ending here, a cancellation).
Then, if no step of the run is running, it is *evicted*: the store records the union of what
its waits wait for and releases the run to WAITING, and its coroutines (or its thread) are
unwound. The run holds no memory, thread or coroutine until the store wakes it (the timer
passes, a message comes, the awaited run ends); then any worker claims it and replays it.
`Store.suspend` checks atomically that what the run waits for has not already come, so no
wake-up is lost between the last look and the eviction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tether.codec import step_place
from tether.engine.context import Abandoned, Execution, StepFrame, Wait, current
from tether.engine.journal import retrying
from tether.errors import (
    LeaseLostError,
    NonDeterminismError,
    NotInWorkflowError,
    StoreUnavailableError,
)
from tether.store.base import NOT_FINAL, STEP_OK, STEP_WAIT, StepRecord

T = TypeVar("T")


def execution(what: str) -> Execution:
    """The run whose workflow code is calling `what`, or a clear error."""
    cur = current.get()
    if isinstance(cur, Execution):
        return cur
    if isinstance(cur, StepFrame):
        raise NotInWorkflowError(
            f"{what} belongs in workflow code, not inside a step: a step's body is not "
            "replayed, so its waits would not be durable"
        )
    raise NotInWorkflowError(f"{what} is available only inside a workflow")


class Position:
    """A journal position taken by a coordination call: replay, and recording its entries."""

    __slots__ = ("ex", "name", "seq", "started_at")

    def __init__(self, ex: Execution, name: str) -> None:
        self.ex = ex
        self.name = name
        self.seq = ex.take_seq()
        self.started_at = ex.worker.clock.now()

    def check(self) -> None:
        """Refuse to go on in a run that is cancelled, evicted or lost to this worker."""
        self.ex.ensure_active()

    def replay(self) -> StepRecord | None:
        """Return the entry journaled here (final or a wait in progress), or None."""
        self.check()
        prior = self.ex.journal.pop(self.seq, None)
        if prior is not None and prior.name != self.name:
            raise self.ex.fail(NonDeterminismError(self.ex.run_id, self.seq, prior.name, self.name))
        if prior is not None and prior.status == STEP_WAIT:
            self.started_at = prior.started_at
        return prior

    @staticmethod
    def final(prior: StepRecord | None) -> bool:
        """Whether `prior` holds the call's outcome."""
        return prior is not None and prior.status not in NOT_FINAL

    def entry(
        self, output: bytes | None, *, waiting_until: float | None = None, waiting: bool = False
    ) -> StepRecord:
        """The entry for this position: final with `output` (JSON), or a wait in progress.

        `output` is sealed for this position's row by the app's codecs.
        """
        if output is not None:
            output = self.ex.worker.codec.reseal(output, "a journal entry", "", self.place())
        return StepRecord(
            self.ex.run_id,
            self.seq,
            self.name,
            STEP_WAIT if waiting else STEP_OK,
            output,
            None,
            1,
            self.started_at,
            self.ex.worker.clock.now(),
            waiting_until,
        )

    def place(self) -> str:
        """The row identity of this position's output (the context its payload is sealed for)."""
        return step_place(self.ex.run_id, self.seq, "output")

    def value(self, record: StepRecord, annotation: Any, what: str) -> Any:
        """Decode the output of the entry journaled at this position."""
        assert record.output is not None
        return self.ex.worker.codec.decode(record.output, annotation, what, self.place)

    async def acommit(self, record: StepRecord) -> StepRecord:
        """Journal `record` (async)."""
        try:
            return await self.ex.worker.committer.acommit(self.ex.lease, record)
        except (LeaseLostError, StoreUnavailableError) as exc:
            raise self.ex.fail(exc) from None

    def commit(self, record: StepRecord) -> StepRecord:
        """Journal `record` (blocking)."""
        try:
            return self.ex.worker.committer.commit(self.ex.lease, record)
        except (LeaseLostError, StoreUnavailableError) as exc:
            raise self.ex.fail(exc) from None


class _Window:
    """When a wait looks again, gives up, or tries to evict its run."""

    def __init__(self, pos: Position, wait: Wait) -> None:
        self.pos = pos
        self.wait = wait
        self.memory = pos.ex.worker.settings.wait_in_memory
        self.until = pos.ex.worker.clock.now() + self.memory

    def next(self) -> tuple[str, float]:
        """('expired', 0), ('evict', 0) or ('pause', seconds)."""
        now = self.pos.ex.worker.clock.now()
        deadline = self.wait.deadline
        if deadline is not None and now >= deadline:
            return "expired", 0.0
        if now >= self.until:
            self.until = now + self.memory
            if self.pos.ex.inflight == 0 and not self.pos.ex.evicting:
                return "evict", 0.0
        pause = self.until - now if deadline is None else min(self.until, deadline) - now
        return "pause", max(pause, 0.0)


async def wait_async(
    pos: Position, wait: Wait, ready: Callable[[], Awaitable[tuple[bool, T | None]]]
) -> tuple[bool, T | None]:
    """Wait until `ready()` says done (True, value) or the deadline passes (False, None).

    Evicts the run when it has waited in memory long enough (raising `Abandoned`).
    """
    ex = pos.ex
    ex.waits[pos.seq] = wait
    task = asyncio.current_task()
    if task is not None:
        ex.wait_tasks.add(task)
    window = _Window(pos, wait)
    try:
        while True:
            pos.check()
            done, value = await ready()
            if done:
                return True, value
            action, pause = window.next()
            if action == "expired":
                return False, None
            if action == "evict":
                suspended, wake_at = await ex.worker.db(_suspend, ex)
                if suspended:
                    ex.worker.evicted(ex, wake_at)
                    raise Abandoned
                continue
            await ex.signalled(pause)
    finally:
        ex.waits.pop(pos.seq, None)
        if task is not None:
            ex.wait_tasks.discard(task)


def wait_sync(
    pos: Position, wait: Wait, ready: Callable[[], tuple[bool, T | None]]
) -> tuple[bool, T | None]:
    """`wait_async` for plain `def` workflows, blocking their thread."""
    ex = pos.ex
    ex.waits[pos.seq] = wait
    window = _Window(pos, wait)
    try:
        while True:
            pos.check()
            done, value = ready()
            if done:
                return True, value
            action, pause = window.next()
            if action == "expired":
                return False, None
            if action == "evict":
                suspended, wake_at = _suspend(ex)
                if suspended:
                    ex.worker.evicted(ex, wake_at)
                    raise Abandoned
                continue
            ex.signalled_sync(pause)
    finally:
        ex.waits.pop(pos.seq, None)


def _suspend(ex: Execution) -> tuple[bool, float | None]:
    """Evict the run: release it to WAITING with the union of its waits.

    Returns (False, _) if one of them is satisfied already (the caller looks again), else
    (True, the timer it will be woken by, if any).
    """
    worker = ex.worker
    waits = list(ex.waits.values())
    deadlines = [w.deadline for w in waits if w.deadline is not None]
    wake_at = min(deadlines) if deadlines else None
    topics = sorted({w.topic for w in waits if w.topic is not None})
    runs = sorted({w.run for w in waits if w.run is not None})
    ex.evicting = True  # stays set once suspended: the run may be claimed again at once
    try:
        suspended = retrying(
            lambda: worker.store.suspend(ex.lease, wake_at, topics, runs, worker.clock.now()),
            worker.settings.store_retry_timeout,
            "suspend a run",
        )
    except LeaseLostError as exc:
        ex.evicting = False
        raise ex.fail(exc) from None
    ex.evicting = suspended
    return suspended, wake_at
