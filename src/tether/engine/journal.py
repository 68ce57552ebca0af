"""The checkpoint write path: group commit of journal entries.

Every step's outcome is committed before its workflow moves on. When many runs finish steps
at once, their entries share one commit: the first writer to arrive becomes the leader and
writes everything queued (its own entry included) in one transaction; writers arriving
meanwhile queue up for the leader's next round. A lone writer pays one round trip and no
waiting, so sequential latency stays at the database's floor while concurrent throughput is
not capped at one commit per step.

A lone async writer commits on the event loop's thread: a thread switch costs about as much
as a fast commit, and nothing else was ready to run meanwhile. A batch goes to a writer
thread, so the loop keeps running the other workflows while it is in flight. When the store
says its commits are cheap (`Store.inline_writes`: SQLite without fsync), every write happens
on the caller's thread. Plain `def` code writes from its own thread.

A write that fails because the database is unavailable is retried with backoff until
`Settings.store_retry_timeout`: a step outcome already computed is not thrown away.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from tether.errors import LeaseLostError, StoreUnavailableError
from tether.store.base import Lease, StepRecord, Store

T = TypeVar("T")
log = logging.getLogger("tether.journal")

_Item = tuple[Lease, StepRecord]
_Waiter = concurrent.futures.Future[StepRecord]


def retrying(fn: Callable[[], T], timeout: float, what: str) -> T:
    """Call `fn`, retrying `StoreUnavailableError` with backoff for up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            return fn()
        except StoreUnavailableError as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("database unavailable while trying to %s (%s); retrying", what, exc)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


class Committer:
    """Writes journal entries with group commit; thread-safe.

    Entries wait in a queue; at most one writer drains it at a time (`_leading`). An async
    caller that finds nobody writing first yields once to the event loop (`_gathering`), so
    that the other runs ready at that moment reach their checkpoints and join its commit; if it
    is still alone it writes on the loop's thread (one round trip, no thread switch), otherwise
    the writer thread commits the whole batch while the loop runs on. The gathering caller
    never holds the writer's role while suspended, so a plain `def` step committing from the
    loop's thread can always take that role itself instead of waiting for the loop.

    Args:
        store: where entries go.
        retry_timeout: how long a write is retried while the database is unavailable.
    """

    def __init__(self, store: Store, retry_timeout: float) -> None:
        self._store = store
        self._retry_timeout = retry_timeout
        self._lock = threading.Lock()
        self._queue: list[tuple[_Item, _Waiter]] = []
        self._leading = False
        self._gathering = False
        self._inline = store.inline_writes
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tether-writer")

    def commit(self, lease: Lease, record: StepRecord) -> StepRecord:
        """Write one entry and wait for it; return the entry the journal holds at that position.

        Raises:
            LeaseLostError: the run belongs to another worker now.
            StoreUnavailableError: the database stayed unavailable past the retry timeout.
        """
        item = (lease, record)
        waiter: _Waiter | None = None
        with self._lock:
            lead = not self._leading
            self._leading = True
            if not (lead and not self._queue):
                waiter = concurrent.futures.Future()
                self._queue.append((item, waiter))
        if waiter is None:
            return self._write_alone(item)
        if lead:
            self._drain(until=waiter)
        return waiter.result()

    async def acommit(self, lease: Lease, record: StepRecord) -> StepRecord:
        """`commit` for the event loop: the loop keeps running while a batch is in flight."""
        if self._inline:
            return self.commit(lease, record)
        waiter: _Waiter = concurrent.futures.Future()
        with self._lock:
            self._queue.append(((lease, record), waiter))
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
        if waiter.done():
            return waiter.result()
        return await asyncio.wrap_future(waiter)

    def close(self) -> None:
        """Let queued writes finish and stop the writer thread when idle."""
        self._writer.shutdown(wait=False)

    def _write_alone(self, item: _Item) -> StepRecord:
        """Write one entry with no other waiting; this caller holds the writer's role."""
        try:
            try:
                result = self._store.record_steps([item])[0]
            except StoreUnavailableError:
                result = retrying(
                    lambda: self._store.record_steps([item])[0], self._retry_timeout, "record"
                )
        finally:
            self._release()
        if isinstance(result, LeaseLostError):
            raise result
        return result

    def _release(self) -> None:
        """Give up the writer's role, passing it to the writer thread if entries wait."""
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
        """Write queued entries, a batch per commit, until the queue is empty.

        A caller leading on its own thread (`until` set) leads only until its own entry is
        written, then hands what is left to the writer thread, so no caller is kept writing
        other runs' entries indefinitely.
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
            results = retrying(
                lambda: self._store.record_steps(items), self._retry_timeout, "record steps"
            )
        except BaseException as exc:
            for _, waiter in batch:
                waiter.set_exception(exc)
            return
        for (_, waiter), result in zip(batch, results, strict=True):
            if isinstance(result, LeaseLostError):
                waiter.set_exception(result)
            else:
                waiter.set_result(result)
