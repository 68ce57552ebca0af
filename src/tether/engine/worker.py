"""The worker: the part of an `App` that executes runs, while the app is entered.

A worker registers itself (with its process identity) and proves it is alive with a
heartbeat. It executes the runs its app starts, and claims the runs that are due and that
nobody live owns: PENDING runs (queued ones as their queue's limits allow), waiting runs whose
timer passed or that a message or an awaited run's end woke, and runs whose worker died (at
once when that worker was a process on this machine that no longer exists, otherwise once its
heartbeat is older than `lease_ttl`). A run it claims is resumed from its journal.

With every poll it also cancels runs past their deadline and starts due schedule ticks; with
every heartbeat it looks for runs of its own that were cancelled from elsewhere.

A worker leaves gracefully with `drain`: it claims nothing more, lets each run's step in
flight finish and be recorded, releases the runs (due at once, for any worker) and
deregisters. `stop` leaves at once: runs in flight are cut off and resumed elsewhere from
their last checkpoint.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import heapq
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from tether.clock import SystemClock
from tether.codec import Codec
from tether.engine import failures, process, schedules
from tether.engine.context import Abandoned, Execution
from tether.engine.journal import Committer, retrying
from tether.engine.queues import Queue
from tether.engine.workflow import Outcome, WorkflowSpec, execute, failed
from tether.errors import (
    DeadlineExceededError,
    LeaseLostError,
    RecoveryLimitError,
    StoreUnavailableError,
    TetherError,
)
from tether.settings import Settings
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

_DEADLINE = DeadlineExceededError("the run's deadline passed; it was cancelled, with its children")


@dataclasses.dataclass
class Registry:
    """What an app declares: its workflows, queues and schedules, by name."""

    workflows: dict[str, WorkflowSpec] = dataclasses.field(default_factory=dict)
    queues: dict[str, Queue] = dataclasses.field(default_factory=dict)
    schedules: dict[str, schedules.Schedule] = dataclasses.field(default_factory=dict)


class Worker:
    """Executes runs for one entered `App`.

    Args:
        store: the app's store.
        settings: the app's settings.
        codec: the app's payload codec.
        registry: the app's workflows, queues and schedules.
        start_tick: starts a schedule's run for a tick (the app's start, with the tick's id).
    """

    def __init__(
        self,
        store: Store,
        settings: Settings,
        codec: Codec,
        registry: Registry,
        start_tick: schedules.StartTick,
    ) -> None:
        self.store = store
        self.settings = settings
        self.codec = codec
        self.registry = registry
        self.workflows = registry.workflows
        self.id = uuid.uuid4().hex
        self.clock = SystemClock()
        self.committer = Committer(store, settings.store_retry_timeout, self.fenced)
        self.workflow_threads = concurrent.futures.ThreadPoolExecutor(
            settings.sync_threads, thread_name_prefix="tether-workflow"
        )
        self.step_threads = concurrent.futures.ThreadPoolExecutor(
            settings.sync_threads, thread_name_prefix="tether-step"
        )
        self.running: dict[str, tuple[Execution | None, asyncio.Task[None]]] = {}
        self.results: dict[str, asyncio.Future[Outcome | None]] = {}
        self._start_tick = start_tick
        self._reserved = 0
        self._backlog = False  # runs were left PENDING here for want of room
        self._abandoned: set[asyncio.Task[None]] = set()  # given up, not yet finished
        self._epochs: dict[str, int] = {}  # the lease epoch each run executing here holds
        self._timers: list[float] = []  # wake-up times of runs evicted here (a heap)
        self._loops: list[asyncio.Task[None]] = []
        self.draining = False
        self._claim_wakeup = asyncio.Event()
        self._last_heartbeat = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Register, resume what was left unfinished, and start heartbeats and claims."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.clock = SystemClock(await self.db(self._database_offset))
        await self.db(self.store.register_worker, self._row())
        self._last_heartbeat = time.monotonic()
        await self.recover()
        self._loops = [
            asyncio.create_task(self._heartbeat_loop(), name="tether-heartbeat"),
            asyncio.create_task(self._claim_loop(), name="tether-claims"),
        ]

    async def drain(self, grace: float) -> bool:
        """Leave gracefully: claim nothing more, finish the steps in flight, then `stop`.

        Each run executing here stops at its next step boundary: the step in flight finishes
        and its checkpoint is recorded, and the run is released, due at once, to whichever
        worker claims it next (this is not counted as a recovery). Runs started here meanwhile
        are left PENDING for other workers. The heartbeat goes on meanwhile, so nobody takes
        these runs early. Whatever is still running after `grace` seconds is cut off as by
        `stop`; the worker is declared stopped, so other workers resume those runs at once
        from their last checkpoint. Cancelling the caller cuts the grace period short alike.

        Returns:
            True if every run stopped at a boundary within the grace period.
        """
        self.draining = True
        for task in self._loops:
            if task.get_name() == "tether-claims":  # the heartbeat goes on meanwhile
                task.cancel()
        for ex, _ in list(self.running.values()):
            if ex is not None:
                ex.abandoned = True
                ex.notify()
        tasks = [task for _, task in self.running.values()]
        log.info("worker %s draining: %d run(s) in flight", self.id, len(tasks))
        try:
            left: set[asyncio.Task[None]] = set()
            if tasks:
                _, left = await asyncio.wait(tasks, timeout=grace)
            if left:
                log.warning(
                    "worker %s: %d run(s) still running after the %.1fs grace period are cut "
                    "off; other workers resume them from their last checkpoint",
                    self.id,
                    len(left),
                    grace,
                )
            return not left
        finally:
            await self.stop()

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
        for entry in list(self.running.values()):
            self._give_up(entry)

    def _give_up(self, entry: tuple[Execution | None, asyncio.Task[None]]) -> None:
        ex, task = entry
        if ex is not None:
            ex.abandoned = True
            ex.notify()
        self._abandoned.add(task)  # on its way out even before it made its execution
        task.add_done_callback(self._abandoned.discard)
        task.cancel()

    # -- running work -------------------------------------------------------------------------

    def reserve(self) -> bool:
        """Reserve room for a run about to be started here; False if the worker is full.

        A run started while the worker is full is left PENDING and claimed when room frees.
        Call `unreserve` once the run is launched (or turned out to exist already).
        """
        if self.draining:
            return False
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
        """Execute a run this worker owns; `journal=None` means read it first (a resumption).

        A run already executing here is not launched twice.
        """
        existing = self.running.get(lease.run_id)
        if (
            existing is not None
            and not _leaving(existing[0])
            and existing[1] not in self._abandoned
        ):
            log.warning("run %s is already executing here; not launched again", lease.run_id)
            return
        loop = asyncio.get_running_loop()
        waiter = self.results.get(lease.run_id)
        if waiter is None or waiter.done():  # else: handles already wait on it
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
                outcome = _poison(self.codec, run_id, recoveries)
            else:
                if journal is None:
                    journal = await self.db(self.store.load_steps, run_id)
                ex = Execution(self, spec, lease, journal)
                ex.abandoned = self.draining
                self.running[run_id] = (ex, self.running[run_id][1])
                outcome = await self._execute(ex, payload)
            status, output, error = outcome
            completion = Completion(lease, status.value, output, error, self.clock.now())
            await self.committer.acomplete(completion)
        except Abandoned:
            log.debug("run %s left to the store", run_id)
            outcome = None
            if self.draining:
                await self._release(run_id, lease)
        except (asyncio.CancelledError, LeaseLostError) as exc:
            log.debug("run %s left to the store: %s", run_id, type(exc).__name__)
            outcome = None
        except StoreUnavailableError as exc:
            # A checkpoint or the completion could not be written (a full disk, a database
            # down past the retry timeout): nothing partial was, the run is not failed for it.
            # It starts again here from its journal a little later, under the same lease.
            log.error("run %s paused, the database refused a write: %s", run_id, exc)
            outcome = None
            self._relaunch_later(spec, lease, payload, recoveries)
        except TetherError as exc:
            log.error("run %s could not be completed: %s", run_id, exc)
            outcome = None
        finally:
            self._finished(run_id, outcome)

    async def _release(self, run_id: str, lease: Lease) -> None:
        """Give a run stopped at a step boundary by `drain` back to the store, due now.

        It becomes a waiting run whose timer is now: any worker claims it at once and
        replays it, and the claim is not counted as a recovery. A run that was evicted,
        cancelled or lost meanwhile is not this worker's to release.
        """
        ex = self._execution(run_id)
        if ex is None or ex.evicting or ex.cancelled or ex.fatal is not None:
            return
        now = self.clock.now()
        try:
            await self.db(self.store.suspend, lease, now, [], [], now)
        except TetherError as exc:
            log.info("run %s not released (%s); it is resumed after this worker stops", run_id, exc)

    def _relaunch_later(
        self, spec: WorkflowSpec, lease: Lease, payload: bytes, recoveries: int
    ) -> None:
        """Start a paused run again from its journal, here, once the database takes writes.

        Only while this worker still holds its lease: not once it is fenced or took a new
        identity, nor if another worker claimed the run meanwhile (its next owner resumes it).
        """

        async def again() -> None:
            await asyncio.sleep(min(self.settings.lease_ttl / 2, 5.0))
            try:
                row = await self.db(self.store.get_run, lease.run_id)
            except TetherError:
                self._relaunch_later(spec, lease, payload, recoveries)  # still unavailable
                return
            mine = (
                row is not None
                and row.status == "RUNNING"
                and row.epoch == lease.epoch
                and lease.worker_id == self.id
                and not self.fenced()
            )
            if mine and lease.run_id not in self.running:
                self.launch(spec, lease, payload, recoveries, None)

        self._loops = [t for t in self._loops if not t.done()]
        self._loops.append(asyncio.create_task(again(), name=f"tether-relaunch-{lease.run_id}"))

    def _finished(self, run_id: str, outcome: Outcome | None) -> None:
        entry = self.running.get(run_id)
        if entry is not None and entry[1] is not asyncio.current_task():
            return  # evicted, and already claimed again by a newer execution here
        self.running.pop(run_id, None)
        self._epochs.pop(run_id, None)
        waiter = self.results.pop(run_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(outcome)  # None: the handle reads the outcome from the store
        if outcome is not None:
            self.run_ended(run_id)
        if self._backlog and len(self.running) < self.settings.max_concurrency:
            self.wake_claims()  # room for a run left PENDING

    async def _execute(self, ex: Execution, payload: bytes) -> Outcome:
        try:
            args, kwargs = ex.spec.decode_input(self.codec, payload, ex.run_id)
        except TetherError as exc:
            return failed(self.codec, ex.run_id, exc)
        return await execute(ex, args, kwargs)

    def transact(self, lease: Lease, body: Callable[[Connection], StepRecord]) -> StepRecord:
        """Run a transactional step's body and journal entry in one transaction.

        Retried while the database is unavailable, until it lands or this worker is fenced
        (a retry whose first attempt committed finds its entry and rolls the body back).
        """
        try:
            return retrying(
                lambda: self.store.record_step_transactionally(lease, body),
                self.settings.store_retry_timeout,
                "run a transactional step",
                self.fenced,
            )
        except StoreUnavailableError as exc:
            raise LeaseLostError(
                lease.run_id, "its worker could not reach the database for longer than the lease"
            ) from exc

    def fenced(self) -> bool:
        """Whether this worker may have lost its leases: no heartbeat landed for `lease_ttl`."""
        return time.monotonic() - self._last_heartbeat > self.settings.lease_ttl

    # -- what happens to runs here --------------------------------------------------------------

    def evicted(self, ex: Execution, wake_at: float | None) -> None:
        """A run released itself to WAITING: unwind its other waits, remember its timer.

        Safe to call from a plain `def` workflow's thread.
        """
        ex.abandoned = True
        if threading.get_ident() == self._loop_thread:
            self._after_eviction(ex, wake_at, asyncio.current_task())
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(self._after_eviction, ex, wake_at, None)

    def _after_eviction(
        self, ex: Execution, wake_at: float | None, evicting: asyncio.Task[Any] | None
    ) -> None:
        for task in list(ex.wait_tasks):
            if task is not evicting:
                task.cancel()
        if wake_at is not None:
            heapq.heappush(self._timers, wake_at)

    def notify(self, run_id: str) -> None:
        """Something for run `run_id` came (a message): wake its waits.

        If it does not run here (it was evicted), look for it among the claimable runs now.
        """
        ex = self._execution(run_id)
        if ex is not None:
            ex.notify()
        else:
            self.wake_claims()

    def run_ended(self, run_id: str) -> None:
        """Wake the runs here that wait for `run_id` to end."""
        for ex, _ in list(self.running.values()):
            if ex is not None and any(w.run == run_id for w in ex.waits.values()):
                ex.notify()

    def cancel_local(self, run_ids: list[str]) -> None:
        """These runs were cancelled: stop the ones running here at their next boundary."""
        for run_id in run_ids:
            ex = self._execution(run_id)
            if ex is not None:
                ex.cancelled = True
                ex.notify()
            self.run_ended(run_id)

    def _execution(self, run_id: str) -> Execution | None:
        entry = self.running.get(run_id)
        return None if entry is None else entry[0]

    # -- recovery and claims ------------------------------------------------------------------

    async def recover(self) -> list[str]:
        """Declare this machine's dead workers stopped, then claim and resume due runs."""
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
        """Claim due runs, up to this worker's free capacity, and execute them."""
        capacity = self.settings.max_concurrency - len(self.running) - self._reserved
        if capacity <= 0 or not self.workflows:
            return []
        limits = [q.limits() for q in self.registry.queues.values()]
        claimed = await self.db(
            self.store.claim_runs,
            self.id,
            [(spec.name, spec.version) for spec in self.workflows.values()],
            capacity,
            self.clock.now(),
            self.settings.lease_ttl,
            limits,
        )
        # A full claim may have left due runs behind: claim again as soon as room frees.
        self._backlog = len(claimed) >= capacity
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
                async with asyncio.timeout(self._next_pause()):
                    await self._claim_wakeup.wait()
            self._claim_wakeup.clear()
            try:
                await self._upkeep()
                await self.recover()
            except TetherError as exc:
                log.warning("claiming runs failed: %s", exc)

    def _next_pause(self) -> float:
        """Until the next poll, or the next timer of a run evicted here if sooner."""
        now = self.clock.now()
        while self._timers and self._timers[0] <= now - 1.0:
            heapq.heappop(self._timers)  # long past: claimed already, or by someone else
        pause = self.settings.poll_interval
        if self._timers:
            pause = min(pause, max(0.0, self._timers[0] - now))
            if self._timers[0] <= now:
                heapq.heappop(self._timers)
        return pause

    async def _upkeep(self) -> None:
        """Cancel runs past their deadline; start due schedule ticks."""
        expired = await self.db(
            self.store.expire_runs, failures.reason(self.codec, _DEADLINE), self.clock.now()
        )
        if expired:
            log.info("runs %s passed their deadline and were cancelled", expired)
            self.cancel_local(expired)
        if self.registry.schedules:
            await schedules.run_due(
                self.store,
                list(self.registry.schedules.values()),
                self.clock.now(),
                self._start_tick,
                self.db,
            )

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            try:
                await self._heartbeat()
            except TetherError as exc:
                silent = time.monotonic() - self._last_heartbeat
                log.warning("heartbeat failed (%s), last success %.1fs ago", exc, silent)
                if silent > self.settings.lease_ttl:
                    # Others may take our runs now: stop writing for them before they do.
                    self.abandon_all()

    async def _heartbeat(self) -> None:
        """Prove this worker alive; one that may have lost its runs starts over.

        Not retried: a failed heartbeat is followed by the next one. A worker that was
        declared stopped, or whose heartbeats failed for longer than the lease (its writes
        gave up meanwhile), abandons what it runs and takes a new identity.
        """
        alive = await asyncio.to_thread(self.store.heartbeat, self.id, self.clock.now())
        if not alive or self.fenced():
            why = "was declared stopped" if not alive else "went longer than its lease unheard"
            log.warning("worker %s %s; abandoning its runs", self.id, why)
            self.abandon_all()
            await self._take_new_identity()
        self._last_heartbeat = time.monotonic()
        if self.running:
            await self._look_for_cancellations()

    async def _take_new_identity(self) -> None:
        """After abandoning its runs: make them claimable, by anyone, at once.

        The runs still name this worker as their owner, which is alive again, so nobody would
        claim them: the old identity is declared stopped and the worker registers anew.
        """
        old, self.id = self.id, uuid.uuid4().hex
        await self.db(self.store.register_worker, self._row())
        await self.db(self.store.stop_workers, [old], self.clock.now())
        log.warning("worker %s continues as %s", old, self.id)
        self.wake_claims()

    async def _look_for_cancellations(self) -> None:
        statuses = await self.db(self.store.run_statuses, list(self.running))
        cancelled = [run_id for run_id, status in statuses.items() if status == "CANCELLED"]
        if cancelled:
            self.cancel_local(cancelled)

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


def _poison(codec: Codec, run_id: str, recoveries: int) -> Outcome:
    error = RecoveryLimitError(
        f"run {run_id!r} was resumed {recoveries} times after its worker died; it was failed "
        "so that it stops taking workers down. Look at its last step in `tether workflows "
        "show`, fix the cause, then start it again under a new id"
    )
    return failed(codec, run_id, error)


def _leaving(ex: Execution | None) -> bool:
    """Whether an execution is on its way out (evicted or abandoned), so the run may start anew."""
    return ex is not None and (ex.abandoned or ex.evicting)
