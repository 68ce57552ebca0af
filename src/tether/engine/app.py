"""`App`: where workflows and steps are declared, started and followed.

An `App` that is not entered is a client of its database: it starts runs (left PENDING for a
worker) and follows them. `async with app:` makes this process a worker too: it resumes the
runs left unfinished, executes the runs it starts at once, and claims runs nobody executes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import functools
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar, overload

from tether.codec import PayloadCodec
from tether.crypto import app_codec
from tether.engine import children, control
from tether.engine import step as steps
from tether.engine.context import Execution, current
from tether.engine.handle import WorkflowHandle
from tether.engine.journal import retrying
from tether.engine.queues import Queue
from tether.engine.retry import DEFAULT_RETRY, Retry
from tether.engine.schedules import Missed, Schedule
from tether.engine.starting import MAX_ID, Starter, StartOptions
from tether.engine.worker import Registry, Worker
from tether.engine.workflow import Outcome, WorkflowSpec
from tether.errors import ConfigError, NotInWorkflowError, TetherError, WorkflowNotFoundError
from tether.settings import Settings
from tether.store import open_store
from tether.store.base import Store

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class App:
    """A tether application: its workflows, steps, database and (when entered) its worker.

        app = tether.App()                         # SQLite under ./.tether/
        app = tether.App("postgresql://db/prod")   # or TETHER_DATABASE_URL

    Args:
        database_url: `sqlite:///path`, `postgresql://...`; None reads `TETHER_DATABASE_URL`,
            else uses a SQLite file at `./.tether/tether.db`.
        settings: every other option (see `Settings`); by default from `TETHER_*` variables.
        codecs: payload codecs (compression, encryption) applied to everything stored.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        settings: Settings | None = None,
        codecs: Sequence[PayloadCodec] = (),
    ) -> None:
        settings = settings if settings is not None else Settings.from_env()
        if database_url is not None:
            settings = dataclasses.replace(settings, database_url=database_url)
        self.settings = settings
        self.codec = app_codec(settings, codecs)
        self._registry = Registry()
        self._workflows = self._registry.workflows
        self._store: Store | None = None
        self._store_lock = threading.Lock()
        self._worker: Worker | None = None

    # -- declaring ----------------------------------------------------------------------------

    @property
    def workflows(self) -> Mapping[str, WorkflowSpec]:
        """The registered workflows, by name."""
        return self._workflows

    def workflow(
        self, *, name: str | None = None, version: str | None = None, timeout: float | None = None
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Declare a workflow: deterministic code whose steps are journaled.

            @app.workflow()
            async def digest(urls: list[str]) -> str: ...

        Args:
            name: the name runs are stored under (default: the function's qualified name).
                Workers resume a run with the workflow registered under its name.
            version: recorded with each run; only workers that register this workflow with
                the same version claim, resume or recover the run.
            timeout: a deadline for each run, in seconds from its start: a run still going
                then is cancelled, children too. `app.options(timeout=...)` overrides it.
        """
        _check_timeout(timeout)

        def decorate(fn: Callable[P, R]) -> Callable[P, R]:
            is_async = inspect.iscoroutinefunction(fn)
            spec = WorkflowSpec(_name(fn, name), fn, is_async, version, timeout)
            known = self._workflows.get(spec.name)
            if known is not None and known.fn is not fn:
                raise ConfigError(
                    f"two workflows are named {spec.name!r}; give one another name with "
                    "@app.workflow(name=...)"
                )
            self._workflows[spec.name] = spec
            return self._workflow_wrapper(spec)

        return decorate

    def step(
        self,
        *,
        name: str | None = None,
        retry: Retry | None = DEFAULT_RETRY,
        timeout: float | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Declare a step: a call whose outcome is journaled, so it never runs again once done.

            @app.step(retry=tether.Retry(attempts=5), timeout=30.0)
            async def fetch(url: str) -> str: ...

        Args:
            name: the name recorded in the journal (default: the function's qualified name).
            retry: the retry policy; None for a single attempt.
            timeout: seconds an attempt may run before it fails with `StepTimeoutError`.
        """
        _check_timeout(timeout)

        def decorate(fn: Callable[P, R]) -> Callable[P, R]:
            spec = steps.StepSpec(
                _name(fn, name),
                fn,
                inspect.iscoroutinefunction(fn),
                retry or Retry.never(),
                timeout,
            )
            return steps.make_wrapper(spec)

        return decorate

    def transaction(
        self, *, name: str | None = None, retry: Retry | None = DEFAULT_RETRY
    ) -> Callable[[Callable[Concatenate[Any, P], R]], Callable[P, R]]:
        """Declare a transactional step: its writes commit with its journal entry, exactly once.

        The function receives a connection to the app's database (`sqlite3.Connection` or
        `psycopg.Connection`) inside an open transaction; callers omit that argument.

            @app.transaction()
            def record(conn, row: dict) -> None:
                conn.execute("INSERT INTO orders (id) VALUES (?)", (row["id"],))

        Args:
            name: the name recorded in the journal.
            retry: the retry policy (a failed attempt's writes are rolled back).
        """

        def decorate(fn: Callable[Concatenate[Any, P], R]) -> Callable[P, R]:
            if inspect.iscoroutinefunction(fn):
                raise ConfigError(
                    f"transactional step {fn.__qualname__!r} must be a plain def: database "
                    "drivers run transactions synchronously"
                )
            spec = steps.StepSpec(
                _name(fn, name), fn, False, retry or Retry.never(), None, transactional=True
            )
            return steps.make_wrapper(spec)

        return decorate

    # -- starting and following ---------------------------------------------------------------

    @overload
    def start(
        self,
        fn: Callable[..., Coroutine[Any, Any, R]],
        /,
        *args: Any,
        id: str | None = None,
        **kwargs: Any,
    ) -> Coroutine[Any, Any, WorkflowHandle[R]]: ...

    @overload
    def start(
        self, fn: Callable[..., R], /, *args: Any, id: str | None = None, **kwargs: Any
    ) -> Coroutine[Any, Any, WorkflowHandle[R]]: ...

    @overload
    def start(
        self, fn: str, /, *args: Any, id: str | None = None, **kwargs: Any
    ) -> Coroutine[Any, Any, WorkflowHandle[Any]]: ...

    def start(
        self,
        fn: Callable[..., Any] | str,
        /,
        *args: Any,
        id: str | None = None,
        **kwargs: Any,
    ) -> Coroutine[Any, Any, WorkflowHandle[Any]]:
        """Start a run of workflow `fn` with these arguments; return its handle.

            handle = await app.start(digest, urls, id="digest-2026-11-26")

        Pass `id=` to name the run: starting an id that exists returns the existing run
        (it never runs twice), and raises `WorkflowConflictError` if its input differs.
        Entered (`async with app`), this process executes the run at once; otherwise a
        worker will. Called from workflow code, it starts a child workflow, once across
        replays. For a deadline or a queue, see `options` and `enqueue`.

        Raises:
            WorkflowArgumentError: the arguments do not fit the workflow's signature.
            SerializationError: an argument cannot be stored as JSON.
            WorkflowConflictError: the id exists with other input.
        """
        return Starter(self, StartOptions()).start(fn, *args, id=id, **kwargs)

    def options(
        self,
        *,
        timeout: float | None = None,
        queue: Queue | str | None = None,
        dedup_id: str | None = None,
        priority: int = 0,
        partition: str | None = None,
    ) -> Starter:
        """Start runs with options; see `StartOptions`.

        For example `await app.options(timeout=3600).start(digest, urls)`, or
        `await app.options(dedup_id="nightly-7", priority=1).enqueue(llm, summarize, 7)`.
        """
        return Starter(self, StartOptions(timeout, queue, dedup_id, priority, partition))

    def enqueue(
        self,
        queue: Queue | str,
        fn: Callable[..., Any] | str,
        /,
        *args: Any,
        id: str | None = None,
        **kwargs: Any,
    ) -> Coroutine[Any, Any, WorkflowHandle[Any]]:
        """Start a run through a registered queue, within its limits.

            handle = await app.enqueue(llm, summarize, doc_id)

        Raises:
            ConfigError: the queue is not registered with this app.
            DeduplicatedError: (with `options(dedup_id=...)`) the id is taken.
        """
        return Starter(self, StartOptions(queue=queue)).start(fn, *args, id=id, **kwargs)

    def register_queue(self, queue: Queue) -> Queue:
        """Register `queue`: runs can be enqueued to it, and this app's worker starts them."""
        known = self._registry.queues.get(queue.name)
        if known is not None and known != queue:
            raise ConfigError(f"queue {queue.name!r} is already registered with other limits")
        self._registry.queues[queue.name] = queue
        return queue

    def scheduled(
        self, cron: str, *, name: str | None = None, missed: Missed = "latest"
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Declare a workflow started on a cron schedule (UTC), once per tick across workers.

            @app.scheduled("0 9 * * 1-5")
            async def morning_report(tick: datetime.datetime) -> None: ...

        The workflow takes the tick's time. `missed` says what to do with ticks missed while
        no worker ran: start the `"latest"` one, `"all"` of them, or `"skip"` them.
        """

        def decorate(fn: Callable[P, R]) -> Callable[P, R]:
            wrapped = self.workflow(name=name)(fn)
            spec = self._spec_of(wrapped)
            self._registry.schedules[spec.name] = Schedule(spec.name, cron, spec.name, missed)
            return wrapped

        return decorate

    async def send(
        self, workflow_id: str, topic: str, payload: Any, *, key: str | None = None
    ) -> bool:
        """Send a message to a run; it takes it with `tether.recv(topic)`, exactly once.

            await app.send("order-7", "approval", {"approved": True, "by": "ana"})

        With `key`, sending the same message again delivers it once (returns False).

        Raises:
            WorkflowNotFoundError: no such run.
            WorkflowFinishedError: the run has ended.
        """
        return await control.send(self, workflow_id, topic, payload, key)

    async def get_event(
        self,
        workflow_id: str,
        key: str,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Any:
        """Return the value a run published under `key` with `tether.set_event`.

        Waits up to `timeout` seconds for it to be set (None: as long as it takes); returns
        None if it is not set by then.
        """
        return await control.get_event(self, workflow_id, key, timeout)

    async def cancel(self, workflow_id: str) -> list[str]:
        """Cancel a run and its unfinished children; return the ids cancelled.

        The run stops at its next step boundary (a step in flight finishes, its result is not
        recorded); `result()` then raises `WorkflowCancelledError`.
        """
        return await control.cancel(self, workflow_id)

    async def resume(self, workflow_id: str) -> WorkflowHandle[Any]:
        """Let a cancelled or failed run continue.

        It replays its journal and goes on, running again the steps that failed.
        """
        return await control.resume(self, workflow_id)

    async def fork(
        self, workflow_id: str, from_step: int, *, new_id: str | None = None
    ) -> WorkflowHandle[Any]:
        """Start a new run of the same workflow and input, from journal position `from_step`.

        The new run keeps the journal before `from_step` and runs the rest anew, with the
        code registered now.
        """
        return await control.fork(self, workflow_id, from_step, new_id)

    def retrieve(self, workflow_id: str) -> WorkflowHandle[Any]:
        """Return a handle for an existing run.

        Raises:
            WorkflowNotFoundError: no run has this id.
        """
        row = retrying(lambda: self.store.get_run(workflow_id), 5.0, "read a run")
        if row is None:
            raise WorkflowNotFoundError(workflow_id)
        return WorkflowHandle(self, workflow_id, row.name)

    async def recover(self) -> list[WorkflowHandle[Any]]:
        """Resume now every unfinished run that no live worker owns; return their handles.

        Workers also do this when they start and then every `poll_interval`.

        Raises:
            NotInWorkflowError: the app is not entered, so it has no worker to run them.
        """
        if self._worker is None:
            raise NotInWorkflowError("app.recover() runs work: call it inside `async with app:`")
        return [self.retrieve(run_id) for run_id in await self._worker.recover()]

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        """The app's store, opened and migrated on first use."""
        if self._store is None:
            with self._store_lock:
                if self._store is None:
                    store = open_store(self.settings)
                    try:
                        store.migrate()
                    except BaseException:
                        store.close()
                        raise
                    self._store = store
        return self._store

    async def __aenter__(self) -> App:
        if self._worker is not None:
            raise ConfigError("this App is already entered; enter it once per process")
        worker = Worker(self.store, self.settings, self.codec, self._registry, self._start_tick)
        self._worker = worker
        try:
            await worker.start()
        except BaseException:
            self._worker = None
            await worker.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    @property
    def worker_id(self) -> str | None:
        """The id of this process's worker while the app is entered, else None."""
        return None if self._worker is None else self._worker.id

    @property
    def draining(self) -> bool:
        """True while this process's worker is leaving (see `shutdown`)."""
        return self._worker is not None and self._worker.draining

    async def shutdown(self, grace: float | None = None) -> bool:
        """Leave gracefully: finish the steps in flight, release the runs, deregister.

        The worker of this entered app claims nothing more, lets each run's step in flight
        finish and be recorded, releases the runs to other workers (due at once) and
        deregisters. `async with app` does this on exit, with `Settings.shutdown_grace`. Runs
        started meanwhile are left PENDING for other workers. Runs still going after `grace`
        seconds (default `Settings.shutdown_grace`) are cut off and resumed elsewhere from
        their last checkpoint; cancelling the caller cuts the grace short the same way. The
        app is no longer entered afterwards.

        Returns:
            True if every run stopped at a step boundary within the grace period; also True
            if the app was not entered.
        """
        worker = self._worker
        if worker is None:
            return True
        try:
            return await worker.drain(self.settings.shutdown_grace if grace is None else grace)
        finally:
            self._worker = None

    def close(self) -> None:
        """Close the database connections (an entered app closes them on exit)."""
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- internals shared with handles ----------------------------------------------------------

    def _local_result(self, run_id: str) -> asyncio.Future[Outcome | None] | None:
        return None if self._worker is None else self._worker.results.get(run_id)

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        if self._worker is not None:
            return await self._worker.db(fn, *args)
        if self.store.inline_writes:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    def _now(self) -> float:
        return self._worker.clock.now() if self._worker else time.time()

    def _queue(self, queue: Queue | str | None) -> Queue | None:
        if queue is None:
            return None
        name = queue if isinstance(queue, str) else queue.name
        registered = self._registry.queues.get(name)
        if registered is None:
            raise ConfigError(
                f"queue {name!r} is not registered with this app; call app.register_queue("
                "tether.Queue(...)) in every process that enqueues or runs it"
            )
        return registered

    async def _start_tick(self, schedule: Schedule, tick: float) -> None:
        when = datetime.datetime.fromtimestamp(tick, datetime.UTC)
        await self.start(schedule.workflow, when, id=schedule.run_id(tick))

    def _spec_of(self, fn: Callable[..., Any] | str) -> WorkflowSpec:
        name = fn if isinstance(fn, str) else getattr(fn, "__tether_workflow__", None)
        spec = self._workflows.get(name) if isinstance(name, str) else None
        if spec is None:
            raise ConfigError(
                f"{getattr(fn, '__qualname__', fn)!r} is not a workflow of this app; decorate it "
                "with @app.workflow() on the same App you start it with"
            )
        return spec

    def _workflow_wrapper(self, spec: WorkflowSpec) -> Callable[..., Any]:
        fn = spec.fn

        if spec.is_async:

            @functools.wraps(fn)
            def call_async(*args: Any, **kwargs: Any) -> Awaitable[Any]:
                ex = current.get()
                if isinstance(ex, Execution):  # a child: start it and wait for its result
                    child = children.child_id(ex, ex.peek_seq())
                    start = Starter(self, StartOptions()).start(spec.name, *args, **kwargs)
                    return _then(start, children.await_run(ex, child, spec.returns, None))
                _not_in_workflow(spec)
                return self._start_and_wait(spec, args, kwargs)

            wrapper: Callable[..., Any] = call_async
        else:

            @functools.wraps(fn)
            def call_sync(*args: Any, **kwargs: Any) -> Any:
                raise TetherError(
                    f"workflow {spec.name!r} is a plain def: start it with "
                    f"`await app.start({spec.name}, ...)` or `tether.run(app, {spec.name}, ...)`"
                )

            wrapper = call_sync
        wrapper.__tether_workflow__ = spec.name  # type: ignore[attr-defined]
        return wrapper

    async def _start_and_wait(
        self, spec: WorkflowSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if self._worker is None:
            raise NotInWorkflowError(
                f"calling workflow {spec.name!r} runs it durably, which needs a worker: call "
                "it inside `async with app:`, or use app.start() to leave it to a worker"
            )
        handle = await self.start(spec.name, *args, **kwargs)
        return await handle.result()


def run(app: App, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Run a workflow to its end in this process and return its result (for scripts).

    result = tether.run(app, digest, ["https://example.org"], id="digest-1")
    """

    async def main() -> Any:
        async with app:
            handle = await app.start(fn, *args, **kwargs)
            return await handle.result()

    return asyncio.run(main())


def _name(fn: Callable[..., Any], name: str | None) -> str:
    if name is not None:
        if not name or len(name) > MAX_ID:
            raise ConfigError(f"name {name!r} must be 1 to {MAX_ID} characters")
        return name
    return fn.__qualname__


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"timeout={timeout} must be a positive number of seconds")


def _not_in_workflow(spec: WorkflowSpec) -> None:
    if current.get() is not None:
        raise TetherError(
            f"workflow {spec.name!r} was called from inside a workflow or step; start it "
            "with app.start() from outside workflow code"
        )


async def _then(first: Awaitable[Any], second: Awaitable[T]) -> T:
    await first
    return await second
