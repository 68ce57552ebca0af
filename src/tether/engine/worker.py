"""The worker: the part of an `App` that executes runs, while the app is entered.

A worker registers itself (with its process identity) and proves it is alive with a
heartbeat. It executes the runs its app starts, and claims the runs nobody live owns:
PENDING runs started by clients, and runs whose worker died (at once when that worker was a
process on this machine that no longer exists, otherwise once its heartbeat is older than
`lease_ttl`). A run it claims is resumed from its journal.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from tether.clock import SystemClock
from tether.codec import Codec
from tether.engine import failures, process
from tether.engine.context import Execution
from tether.engine.journal import Committer, retrying
from tether.engine.step import Abandoned
from tether.engine.workflow import Outcome, WorkflowSpec, execute
from tether.errors import LeaseLostError, RecoveryLimitError, StoreUnavailableError, TetherError
from tether.settings import Settings
from tether.status import Status
from tether.store.base import (
    Completion,
    Connection,
    Lease,
    RunRow,
    StepRecord,
    Store,
    WorkerRow,
)

T = TypeVar("T")
log = logging.getLogger("tether.worker")


class Worker:
    """Executes runs for one entered `App`.

    Args:
        store: the app's store.
        settings: the app's settings.
        codec: the app's payload codec.
        workflows: the app's registered workflows, by name.
    """

    def __init__(
        self,
        store: Store,
        settings: Settings,
        codec: Codec,
        workflows: Mapping[str, WorkflowSpec],
    ) -> None:
        self.store = store
        self.settings = settings
        self.codec = codec
        self.workflows = workflows
        self.id = uuid.uuid4().hex
        self.clock = SystemClock()
        self.committer = Committer(store, settings.store_retry_timeout)
        self.workflow_threads = concurrent.futures.ThreadPoolExecutor(
            settings.sync_threads, thread_name_prefix="tether-workflow"
        )
        self.step_threads = concurrent.futures.ThreadPoolExecutor(
            settings.sync_threads, thread_name_prefix="tether-step"
        )
        self.running: dict[str, tuple[Execution | None, asyncio.Task[None]]] = {}
        self.results: dict[str, asyncio.Future[Outcome | None]] = {}
        self._reserved = 0
        self._backlog = False  # runs were left PENDING here for want of room
        self._loops: list[asyncio.Task[None]] = []
        self._claim_wakeup = asyncio.Event()
        self._last_heartbeat = 0.0

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Register, resume what was left unfinished, and start heartbeats and claims."""
        self.clock = SystemClock(await self.db(self._database_offset))
        await self.db(self.store.register_worker, self._row())
        self._last_heartbeat = time.monotonic()
        await self.recover()
        self._loops = [
            asyncio.create_task(self._heartbeat_loop(), name="tether-heartbeat"),
            asyncio.create_task(self._claim_loop(), name="tether-claims"),
        ]

    async def stop(self) -> None:
        """Stop claiming, abandon the runs in flight to recovery, and deregister."""
        for task in self._loops:
            task.cancel()
        self.abandon_all()
        pending = [task for _, task in self.running.values()] + self._loops
        await asyncio.gather(*pending, return_exceptions=True)
        self.workflow_threads.shutdown(wait=False, cancel_futures=True)
        self.step_threads.shutdown(wait=False, cancel_futures=True)
        self.committer.close()
        try:
            await self.db(self.store.stop_workers, [self.id], self.clock.now())
        except TetherError as exc:
            log.warning("could not deregister worker %s: %s", self.id, exc)

    def abandon_all(self) -> None:
        """Give up every run in flight; their owners' leases let others resume them."""
        for ex, task in list(self.running.values()):
            if ex is not None:
                ex.abandoned = True
            task.cancel()

    # -- running work -------------------------------------------------------------------------

    def reserve(self) -> bool:
        """Reserve room for a run about to be started here; False if the worker is full.

        A run started while the worker is full is left PENDING and claimed when room frees.
        Call `unreserve` once the run is launched (or turned out to exist already).
        """
        if len(self.running) + self._reserved >= self.settings.max_concurrency:
            self._backlog = True
            return False
        self._reserved += 1
        return True

    def unreserve(self) -> None:
        """Return a reservation made by `reserve`."""
        self._reserved -= 1

    def launch(
        self,
        spec: WorkflowSpec,
        lease: Lease,
        payload: bytes,
        recoveries: int,
        journal: list[StepRecord] | None,
    ) -> None:
        """Execute a run this worker owns; `journal=None` means read it first (a resumption)."""
        loop = asyncio.get_running_loop()
        self.results[lease.run_id] = loop.create_future()
        task = loop.create_task(
            self._run(spec, lease, payload, recoveries, journal), name=f"tether-run-{lease.run_id}"
        )
        self.running[lease.run_id] = (None, task)

    async def _run(
        self,
        spec: WorkflowSpec,
        lease: Lease,
        payload: bytes,
        recoveries: int,
        journal: list[StepRecord] | None,
    ) -> None:
        run_id = lease.run_id
        outcome: Outcome | None = None
        try:
            if recoveries > self.settings.max_recoveries:
                outcome = _poison(run_id, recoveries)
            else:
                if journal is None:
                    journal = await self.db(self.store.load_steps, run_id)
                ex = Execution(self, spec, lease, journal)
                self.running[run_id] = (ex, self.running[run_id][1])
                outcome = await self._execute(ex, payload)
            status, output, error = outcome
            completion = Completion(lease, status.value, output, error, self.clock.now())
            await self.committer.acomplete(completion)
        except (Abandoned, asyncio.CancelledError, LeaseLostError) as exc:
            log.info("run %s left to recovery: %s", run_id, type(exc).__name__)
            outcome = None
        except TetherError as exc:
            log.error("run %s could not be completed: %s", run_id, exc)
            outcome = None
        finally:
            self.running.pop(run_id, None)
            waiter = self.results.pop(run_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(outcome)
            if self._backlog and len(self.running) < self.settings.max_concurrency:
                self.wake_claims()  # room for a run left PENDING

    async def _execute(self, ex: Execution, payload: bytes) -> Outcome:
        try:
            args, kwargs = ex.spec.decode_input(self.codec, payload)
        except TetherError as exc:
            return Status.FAILED, None, failures.encode_error(exc)
        return await execute(ex, args, kwargs)

    def transact(self, lease: Lease, body: Callable[[Connection], StepRecord]) -> StepRecord:
        """Run a transactional step's body and journal entry in one transaction."""
        return retrying(
            lambda: self.store.record_step_transactionally(lease, body),
            self.settings.store_retry_timeout,
            "run a transactional step",
        )

    # -- recovery and claims ------------------------------------------------------------------

    async def recover(self) -> list[str]:
        """Declare this machine's dead workers stopped, then claim and resume orphaned runs."""
        await self.db(self._retire_dead_local_workers)
        return await self.claim()

    def _retire_dead_local_workers(self) -> None:
        gone = [
            w.id
            for w in self.store.list_workers()
            if w.id != self.id and process.is_gone(w.host, w.boot_id, w.pid, w.pid_start)
        ]
        if gone:
            log.info("workers %s are gone; their runs will be resumed", gone)
            self.store.stop_workers(gone, self.clock.now())

    async def claim(self) -> list[str]:
        """Claim runs nobody live owns, up to this worker's free capacity, and execute them."""
        capacity = self.settings.max_concurrency - len(self.running) - self._reserved
        if capacity <= 0 or not self.workflows:
            return []
        claimed = await self.db(
            self.store.claim_runs,
            self.id,
            list(self.workflows),
            capacity,
            self.clock.now(),
            self.settings.lease_ttl,
        )
        if len(claimed) < capacity:
            self._backlog = False
        for lease, row in claimed:
            self._launch_claimed(lease, row)
        return [lease.run_id for lease, _ in claimed]

    def _launch_claimed(self, lease: Lease, row: RunRow) -> None:
        spec = self.workflows[row.name]
        if row.recoveries:
            log.info("resuming run %s (%s), recovery %d", row.id, row.name, row.recoveries)
        self.launch(spec, lease, row.input, row.recoveries, None)

    def wake_claims(self) -> None:
        """Look for claimable runs now rather than at the next poll."""
        self._claim_wakeup.set()

    async def _claim_loop(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # arrives just as the event is set, and the worker would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.poll_interval):
                    await self._claim_wakeup.wait()
            self._claim_wakeup.clear()
            try:
                await self.recover()
            except TetherError as exc:
                log.warning("claiming runs failed: %s", exc)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            try:
                alive = await self.db(self.store.heartbeat, self.id, self.clock.now())
            except TetherError as exc:
                silent = time.monotonic() - self._last_heartbeat
                log.warning("heartbeat failed (%s), last success %.1fs ago", exc, silent)
                if silent > self.settings.lease_ttl:
                    # Others may take our runs now: stop writing for them before they do.
                    self.abandon_all()
                continue
            self._last_heartbeat = time.monotonic()
            if not alive:
                log.warning("worker %s was declared stopped; abandoning its runs", self.id)
                self.abandon_all()
                await self.db(self.store.register_worker, self._row())

    def _row(self) -> WorkerRow:
        """This worker's row, with a fresh heartbeat."""
        me = process.identity()
        now = self.clock.now()
        return WorkerRow(self.id, me.host, me.boot_id, me.pid, me.pid_start, now, now)

    def _database_offset(self) -> float:
        """Seconds to add to this machine's clock to read the database's."""
        before = time.time()
        db_now = self.store.database_time()
        after = time.time()
        return db_now - (before + after) / 2

    # -- helpers ------------------------------------------------------------------------------

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """Call a blocking store method from the event loop.

        Cheap stores are called on the loop's thread; others, and any retry after the
        database was unavailable, run in a thread so the loop goes on meanwhile.
        """
        if self.store.inline_writes:
            try:
                return fn(*args)
            except StoreUnavailableError:
                pass
        return await asyncio.to_thread(
            retrying, lambda: fn(*args), self.settings.store_retry_timeout, fn.__name__
        )


def _poison(run_id: str, recoveries: int) -> Outcome:
    error = RecoveryLimitError(
        f"run {run_id!r} was resumed {recoveries} times after its worker died; it was failed "
        "so that it stops taking workers down. Look at its last step in `tether workflows "
        "show`, fix the cause, then start it again under a new id"
    )
    return Status.FAILED, None, failures.encode_error(error)
