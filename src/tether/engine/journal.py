"""The checkpoint write path: group commit of journal entries.

Every step's outcome is committed before its workflow moves on. When many runs finish steps
at once, their entries share one commit: the first writer to arrive becomes the leader and
writes everything queued (its own entry included) in one transaction; writers arriving
meanwhile queue up for the leader's next round. A lone writer pays one round trip and no
waiting, so sequential latency stays at the database's floor while concurrent throughput is
not capped at one commit per step.

Async callers hand the leader's work to a writer thread, so the event loop keeps running the
other workflows while a commit is in flight; when the store says its commits are cheap
(`Store.inline_writes`: SQLite without fsync), they write on the loop's thread instead, which
saves two thread switches per step. Plain `def` code writes from its own thread.

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
        self._inline = store.inline_writes
        self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tether-writer")

    def commit(self, lease: Lease, record: StepRecord) -> StepRecord:
        """Write one entry and wait for it; return the entry the journal holds at that position.

        Raises:
            LeaseLostError: the run belongs to another worker now.
            StoreUnavailableError: the database stayed unavailable past the retry timeout.
        """
        waiter, lead = self._enqueue((lease, record))
        if lead:
            self._drain(until=waiter)
        return waiter.result()

    async def acommit(self, lease: Lease, record: StepRecord) -> StepRecord:
        """`commit` for the event loop: the loop keeps running while the write is in flight."""
        if self._inline:
            return self.commit(lease, record)
        waiter, lead = self._enqueue((lease, record))
        if lead:
            self._writer.submit(self._drain)
        return await asyncio.wrap_future(waiter)

    def close(self) -> None:
        """Finish queued writes and stop the writer thread."""
        self._writer.shutdown(wait=True)

    def _enqueue(self, item: _Item) -> tuple[_Waiter, bool]:
        waiter: _Waiter = concurrent.futures.Future()
        with self._lock:
            self._queue.append((item, waiter))
            lead = not self._leading
            self._leading = True
        return waiter, lead

    def _drain(self, until: _Waiter | None = None) -> None:
        """Write queued entries, a batch per commit, until the queue is empty.

        A caller leading on its own thread (`until` set) leads only until its own entry is
        written, then hands what is left to the writer thread, so no caller is kept writing
        other runs' entries indefinitely.
        """
        while True:
            with self._lock:
                if until is not None and until.done() and self._queue:
                    self._writer.submit(self._drain)
                    return
                batch, self._queue = self._queue, []
                if not batch:
                    self._leading = False
                    return
            self._write(batch)

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
