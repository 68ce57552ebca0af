"""The write path: group commit of run starts, journal entries and run completions.

Every step's outcome is committed before its workflow moves on. When many runs write at once
(a step finished, a run started here, a run ended), their writes share one commit: the first
writer to arrive becomes the leader and writes everything queued (its own write included) as
one batch; writers arriving meanwhile queue up for the leader's next round. A lone writer pays
one round trip and no waiting, so sequential latency stays at the database's floor while
concurrent throughput is not capped at one commit per write.

A lone async writer commits on the event loop's thread: a thread switch costs about as much
as a fast commit, and nothing else was ready to run meanwhile. A batch goes to a writer
thread, so the loop keeps running the other workflows while it is in flight. When the store
says its commits are cheap (`Store.inline_writes`: SQLite without fsync), every write happens
on the caller's thread. Plain `def` code writes from its own thread.

A write that fails because the database is unavailable is retried with backoff: a step
outcome already computed is not thrown away. Journal entries and completions are retried until
they land or the worker is fenced (it could not prove it was alive for longer than its lease,
so another worker may own the run now: they then fail with `LeaseLostError` and the run is
left to its new owner); without a fence, and for new runs, until `Settings.store_retry_timeout`.
A retried write whose first attempt did commit (its acknowledgement was lost) finds its own
row and returns it: entries, completions and starts are idempotent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from tether.errors import LeaseLostError, StoreUnavailableError, TetherError
from tether.store.base import Batch, Completion, Lease, NewRun, RunRow, StepRecord, Store

T = TypeVar("T")
log = logging.getLogger("tether.journal")

_Item = NewRun | tuple[Lease, StepRecord] | Completion


class _Waiter:
    """Where a queued write's outcome goes: a thread's future, or an event loop's.

    A loop's futures are settled with one callback per batch and loop (not one wake-up per
    write), or directly when the batch was written on that loop's own thread.
    """

    __slots__ = ("future", "loop", "thread")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop
        self.thread = threading.get_ident()
        self.future: concurrent.futures.Future[Any] | asyncio.Future[Any] = (
            concurrent.futures.Future() if loop is None else loop.create_future()
        )

    def done(self) -> bool:
        return self.future.done()


def _settle(pairs: list[tuple[_Waiter, Any]]) -> None:
    """Give each waiter its outcome (an exception outcome is raised to it)."""
    for waiter, outcome in pairs:
        future = waiter.future
        if future.done():  # an async caller that was cancelled meanwhile
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def retrying(
    fn: Callable[[], T],
    timeout: float,
    what: str,
    until: Callable[[], bool] | None = None,
) -> T:
    """Call `fn`, retrying `StoreUnavailableError` with backoff (50 ms doubling to 2 s).

    Args:
        fn: the call.
        timeout: give up (re-raise) once another try would start after this many seconds.
        what: what `fn` does, for the log.
        until: if given, replaces `timeout`: give up as soon as it returns True.
    """
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            return fn()
        except StoreUnavailableError as exc:
            if until() if until is not None else time.monotonic() + delay > deadline:
                raise
            log.warning("database unavailable while trying to %s (%s); retrying", what, exc)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


class Committer:
    """Writes with group commit; thread-safe.

    Writes wait in a queue; at most one writer drains it at a time (`_leading`). An async
    caller that finds nobody writing first yields once to the event loop (`_gathering`), so
    that the other runs ready at that moment reach their writes and join its commit; if it is
    still alone it writes on the loop's thread (one round trip, no thread switch), otherwise
    the writer thread commits the whole batch while the loop runs on. The gathering caller
    never holds the writer's role while suspended, so a plain `def` step committing from the
    loop's thread can always take that role itself instead of waiting for the loop.

    Args:
        store: where writes go.
        retry_timeout: how long a write is retried while the database is unavailable.
        fenced: if given, writes are retried until it returns True instead (the writer may
            have lost its leases); journal entries and completions then fail with
            `LeaseLostError`.
    """

    def __init__(
        self, store: Store, retry_timeout: float, fenced: Callable[[], bool] | None = None
    ) -> None:
        self._store = store
        self._retry_timeout = retry_timeout
        self._fenced = fenced
        self._lock = threading.Lock()
        self._queue: list[tuple[_Item, _Waiter]] = []
        self._leading = False
        self._gathering = False
        self._inline = store.inline_writes
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tether-writer")

    def commit(self, lease: Lease, record: StepRecord) -> StepRecord:
        """Journal a step's outcome and wait; return the entry the journal holds there.

        Raises:
            LeaseLostError: the run belongs to another worker now, or has ended.
            StoreUnavailableError: the database stayed unavailable past the retry timeout.
        """
        result: StepRecord = self._submit((lease, record))
        return result

    async def acommit(self, lease: Lease, record: StepRecord) -> StepRecord:
        """`commit` for the event loop: the loop keeps running while a batch is in flight."""
        result: StepRecord = await self._asubmit((lease, record))
        return result

    async def acreate(self, run: NewRun) -> tuple[RunRow, bool]:
        """`Store.create_run`, sharing commits with other writes."""
        result: tuple[RunRow, bool] = await self._asubmit(run)
        return result

    async def acomplete(self, completion: Completion) -> None:
        """`Store.complete_run`, sharing commits with other writes."""
        await self._asubmit(completion)

    def close(self) -> None:
        """Let queued writes finish and stop the writer thread when idle."""
        self._writer.shutdown(wait=False)

    def _submit(self, item: _Item) -> Any:
        waiter: _Waiter | None = None
        with self._lock:
            lead = not self._leading
            self._leading = True
            if not (lead and not self._queue):
                waiter = _Waiter()
                self._queue.append((item, waiter))
        if waiter is None:
            return self._write_alone(item)
        if lead:
            self._drain(until=waiter)
        assert isinstance(waiter.future, concurrent.futures.Future)
        return waiter.future.result()

    async def _asubmit(self, item: _Item) -> Any:
        if self._inline:
            return self._submit(item)
        waiter = _Waiter(asyncio.get_running_loop())
        with self._lock:
            self._queue.append((item, waiter))
            gather = not self._leading and not self._gathering
            self._gathering = self._gathering or gather
        if gather:
            await asyncio.sleep(0)  # let the runs that are ready join this commit
            with self._lock:
                self._gathering = False
                lead = not self._leading and not waiter.done()
                alone = lead and len(self._queue) == 1
                self._leading = self._leading or lead
            if alone:
                self._drain(until=waiter)
            elif lead:
                self._handoff()
        assert isinstance(waiter.future, asyncio.Future)
        return await waiter.future

    def _write_alone(self, item: _Item) -> Any:
        """Write one item with nobody else waiting; this caller holds the writer's role."""
        try:
            if isinstance(item, tuple):  # a journal entry: the hot path, one statement
                try:
                    outcome: Any = self._store.record_steps([item])[0]
                except StoreUnavailableError:
                    outcome = self._retrying(lambda: self._store.record_steps([item])[0])
            else:
                outcome = self._write_batch([item])[0]
        except StoreUnavailableError as exc:
            outcome = self._gave_up(item, exc)
        finally:
            self._release()
        if isinstance(outcome, TetherError):
            raise outcome
        return outcome

    def _write_batch(self, items: list[_Item]) -> list[Any]:
        """Write a mixed batch; return each item's outcome, in the items' order."""
        batch = Batch(
            runs=[i for i in items if isinstance(i, NewRun)],
            steps=[i for i in items if isinstance(i, tuple)],
            completions=[i for i in items if isinstance(i, Completion)],
        )
        checkpoints = bool(batch.steps or batch.completions)
        result = self._retrying(lambda: self._store.write_batch(batch), checkpoints)
        runs, steps, done = iter(result.runs), iter(result.steps), iter(result.completions)
        return [
            next(runs)
            if isinstance(i, NewRun)
            else next(steps)
            if isinstance(i, tuple)
            else next(done)
            for i in items
        ]

    def _retrying(self, fn: Callable[[], T], checkpoints: bool = True) -> T:
        """Retry `fn` while the database is unavailable.

        Checkpoints (journal entries, completions) until the worker is fenced; new runs alone
        until then or until `store_retry_timeout`, whichever comes first.
        """
        fenced = self._fenced
        if fenced is None:
            return retrying(fn, self._retry_timeout, "write to the journal")
        if not checkpoints:
            deadline = time.monotonic() + self._retry_timeout
            return retrying(
                fn,
                self._retry_timeout,
                "start a run",
                lambda: fenced() or time.monotonic() > deadline,
            )
        return retrying(fn, self._retry_timeout, "write to the journal", fenced)

    def _gave_up(self, item: _Item, exc: StoreUnavailableError) -> TetherError:
        """The error for a write given up: fenced entries and completions lost their lease."""
        if self._fenced is None or isinstance(item, NewRun):
            return exc
        run_id = item.lease.run_id if isinstance(item, Completion) else item[0].run_id
        lost = LeaseLostError(
            run_id,
            "its worker could not reach the database for longer than the lease, so another "
            "worker may own it now",
        )
        lost.__cause__ = exc
        return lost

    def _release(self) -> None:
        """Give up the writer's role, passing it to the writer thread if writes wait."""
        with self._lock:
            if not self._queue:
                self._leading = False
                return
        self._handoff()

    def _handoff(self) -> None:
        try:
            self._writer.submit(self._drain)
        except RuntimeError:  # closed: whoever holds the role drains here
            self._drain()

    def _drain(self, until: _Waiter | None = None) -> None:
        """Write queued items, a batch per commit, until the queue is empty.

        A caller leading on its own thread (`until` set) leads only until its own write is
        done, then hands what is left to the writer thread, so no caller is kept writing
        other runs' items indefinitely.
        """
        while True:
            with self._lock:
                if until is not None and until.done() and self._queue:
                    break
                batch, self._queue = self._queue, []
                if not batch:
                    self._leading = False
                    return
            self._write(batch)
        self._handoff()

    def _write(self, batch: list[tuple[_Item, _Waiter]]) -> None:
        items = [item for item, _ in batch]
        try:
            if all(isinstance(item, tuple) for item in items):
                steps: list[Any] = items
                outcomes: list[Any] = self._retrying(lambda: self._store.record_steps(steps))
            else:
                outcomes = self._write_batch(items)
        except StoreUnavailableError as exc:
            outcomes = [self._gave_up(item, exc) for item in items]
        except BaseException as exc:
            outcomes = [exc] * len(batch)
        here = threading.get_ident()
        now: list[tuple[_Waiter, Any]] = []
        later: dict[asyncio.AbstractEventLoop, list[tuple[_Waiter, Any]]] = {}
        for (_, waiter), outcome in zip(batch, outcomes, strict=True):
            if waiter.loop is None or waiter.thread == here:
                now.append((waiter, outcome))
            else:
                later.setdefault(waiter.loop, []).append((waiter, outcome))
        _settle(now)
        for loop, pairs in later.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits there now
                loop.call_soon_threadsafe(_settle, pairs)
