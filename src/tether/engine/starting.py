"""Starting runs: ids, options, queues, deadlines, and children started from workflow code.

    await app.start(digest, urls, id="digest-1")
    await app.options(timeout=3600).start(digest, urls)
    await app.enqueue(llm_queue, summarize, doc_id)
    await app.options(dedup_id=f"sum-{doc_id}", priority=2).enqueue(llm_queue, summarize, doc_id)

Called from workflow code, `start` starts a child: its id is derived from the parent's id and
the journal position (unless given), and the start is journaled, so replay finds the same
child instead of starting another.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from tether.engine import checks, children
from tether.engine.context import Execution, current
from tether.engine.handle import WorkflowHandle
from tether.engine.queues import Queue
from tether.engine.workflow import WorkflowSpec
from tether.errors import ConfigError, WorkflowArgumentError
from tether.store.base import Lease, NewRun

if TYPE_CHECKING:
    from tether.engine.app import App

MAX_ID = 200


@dataclasses.dataclass(frozen=True, slots=True)
class StartOptions:
    """How a run is started, beyond its workflow and arguments.

    Attributes:
        timeout: seconds after its start by which the run must end; past it the run (and
            its children) is cancelled, wherever and whenever that happens.
        queue: the queue to start it through (a registered `Queue` or its name).
        dedup_id: with a queue: refused while an unfinished run of the queue holds it.
        priority: with a queue that has `priority=True`: lower numbers start first.
        partition: with a queue: the run's partition (else the queue's `partition_key`).
    """

    timeout: float | None = None
    queue: Queue | str | None = None
    dedup_id: str | None = None
    priority: int = 0
    partition: str | None = None

    def __post_init__(self) -> None:
        if self.timeout is not None:
            checks.seconds(self.timeout, "timeout", positive=True)


class Starter:
    """Starts runs with a set of `StartOptions` (see `App.options`)."""

    def __init__(self, app: App, options: StartOptions) -> None:
        self._app = app
        self._options = options

    def start(
        self, fn: Callable[..., Any] | str, /, *args: Any, id: str | None = None, **kwargs: Any
    ) -> Coroutine[Any, Any, WorkflowHandle[Any]]:
        """Start a run (a child, from workflow code); the handle is returned when awaited.

        See `App.start`.
        """
        spec = self._app._spec_of(fn)
        ex = current.get()
        if isinstance(ex, Execution):
            child = children.start_child(ex, spec, args, kwargs, _optional_id(id), self._create)
            return _handle(self._app, child, spec.name)
        return self._start(spec, args, kwargs, _run_id(id), None)

    def enqueue(
        self,
        queue: Queue | str,
        fn: Callable[..., Any] | str,
        /,
        *args: Any,
        id: str | None = None,
        **kwargs: Any,
    ) -> Coroutine[Any, Any, WorkflowHandle[Any]]:
        """Start a run through `queue` (see `App.enqueue`)."""
        options = dataclasses.replace(self._options, queue=queue)
        return Starter(self._app, options).start(fn, *args, id=id, **kwargs)

    async def _create(
        self,
        spec: WorkflowSpec,
        run_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        parent_id: str,
    ) -> None:
        await self._start(spec, args, kwargs, run_id, parent_id)

    async def _start(
        self,
        spec: WorkflowSpec,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        run_id: str,
        parent_id: str | None,
    ) -> WorkflowHandle[Any]:
        app, options = self._app, self._options
        if options.queue is None and (options.dedup_id or options.priority or options.partition):
            raise ConfigError(
                "dedup_id, priority and partition apply to queued runs: use "
                "app.options(...).enqueue(queue, workflow, ...)"
            )
        payload, digest = spec.encode_input(app.codec, args, kwargs, run_id)
        queue = app._queue(options.queue)
        now = app._now()
        timeout = options.timeout if options.timeout is not None else spec.timeout
        new = NewRun(
            run_id,
            spec.name,
            payload,
            digest,
            now,
            version=spec.version,
            parent_id=parent_id,
            queue=None if queue is None else queue.name,
            priority=_priority(queue, options),
            partition=_partition(queue, options, spec, args, kwargs),
            dedup_id=options.dedup_id,
            deadline_at=None if timeout is None else now + timeout,
        )
        worker = app._worker
        if worker is None:
            await app._db(app.store.create_run, new)
        elif queue is not None or not worker.reserve():
            await worker.committer.acreate(new)  # PENDING: a claim starts it within limits
            worker.wake_claims()
        else:
            owned = dataclasses.replace(new, owner=worker.id)
            try:
                row, created = await worker.committer.acreate(owned)
            finally:
                worker.unreserve()
            # A first execution (empty journal) only for the row this call inserted: just
            # created, or created by a write whose acknowledgement was lost and retried (then
            # the stored row is ours to the float: our creation time, first epoch). A run
            # this worker merely claimed meanwhile is launched by the claim, with its journal.
            ours = created or (row.created_at == owned.created_at and row.epoch == 1)
            if ours and row.owner == worker.id and row.status == "RUNNING":
                worker.launch(spec, Lease(run_id, worker.id, row.epoch), payload, 0, journal=[])
        return WorkflowHandle(app, run_id, spec.name)


async def _handle(app: App, child: Awaitable[str], name: str) -> WorkflowHandle[Any]:
    return WorkflowHandle(app, await child, name)


def _priority(queue: Queue | None, options: StartOptions) -> int:
    if options.priority and (queue is None or not queue.priority):
        raise ConfigError(
            f"queue {None if queue is None else queue.name!r} does not take priorities; "
            "create it with Queue(..., priority=True)"
        )
    return options.priority


def _partition(
    queue: Queue | None,
    options: StartOptions,
    spec: WorkflowSpec,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> str | None:
    if options.partition is not None or queue is None:
        return options.partition
    return queue.partition_of(spec.signature, args, kwargs)


def _optional_id(value: Any) -> str | None:
    return None if value is None else _run_id(value)


def _run_id(value: Any) -> str:
    if value is None:
        return uuid.uuid4().hex
    if not isinstance(value, str) or not value or len(value) > MAX_ID:
        raise WorkflowArgumentError(
            f"a workflow id must be a non-empty string of at most {MAX_ID} characters, "
            f"not {value!r}"
        )
    if not checks.storable(value):
        raise WorkflowArgumentError(
            f"a workflow id cannot hold a NUL character or a lone surrogate (databases cannot "
            f"store them as text), not {value!r}; use printable characters"
        )
    return value
