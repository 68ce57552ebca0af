"""What is running right now: the current run, and the current step inside it.

One `ContextVar` holds either the `Execution` of the workflow whose code is running or the
`StepFrame` of the step running inside it. `tether.context()` is the public view of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import threading
import uuid
from typing import TYPE_CHECKING, Any

from tether.errors import NotInWorkflowError
from tether.store.base import Lease, StepRecord

if TYPE_CHECKING:
    from tether.engine.worker import Worker
    from tether.engine.workflow import WorkflowSpec

_KEY_NAMESPACE = uuid.UUID("6f1c2d0e-8a47-4e0b-9a3e-2b1f5c7d9e10")


class Abandoned(BaseException):
    """Unwinds a run this worker gives up (cancelled, evicted, shut down, lease lost).

    A BaseException, so that workflow code's `except Exception` cannot swallow it.
    """


class Execution:
    """The in-memory state of one run that this worker executes.

    The journal is read once, when a run is resumed; on first execution it is empty and
    every step goes straight to its body. Positions are handed out in call order, which is
    deterministic as long as the workflow's code is.
    """

    __slots__ = (
        "_async_signal",
        "_seq",
        "_thread_signal",
        "abandoned",
        "cancelled",
        "evicting",
        "fatal",
        "inflight",
        "is_async",
        "journal",
        "lease",
        "run_id",
        "spec",
        "wait_tasks",
        "waits",
        "worker",
    )

    def __init__(
        self,
        worker: Worker,
        spec: WorkflowSpec,
        lease: Lease,
        journal: list[StepRecord],
    ) -> None:
        self.worker = worker
        self.spec = spec
        self.lease = lease
        self.run_id = lease.run_id
        self.is_async = spec.is_async
        self.journal = {r.seq: r for r in journal}
        self.abandoned = False
        self.cancelled = False
        self.evicting = False
        self.fatal: BaseException | None = None
        self.inflight = 0  # step attempts running now
        self.waits: dict[int, Wait] = {}  # durable waits in progress, by journal position
        self.wait_tasks: set[asyncio.Task[Any]] = set()  # their tasks, unwound on eviction
        self._seq = 0
        self._async_signal: asyncio.Event | None = None
        self._thread_signal = threading.Event()

    def notify(self) -> None:
        """Wake the run's waits to look again (a message, an end, a cancellation came).

        Call it on the event loop's thread.
        """
        self._thread_signal.set()
        if self._async_signal is not None:
            self._async_signal.set()

    async def signalled(self, seconds: float) -> None:
        """Wait up to `seconds` for `notify` (async workflows)."""
        if self._async_signal is None:
            self._async_signal = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._async_signal.wait()
        self._async_signal.clear()

    def signalled_sync(self, seconds: float) -> None:
        """Wait up to `seconds` for `notify` (plain `def` workflows, on their thread)."""
        self._thread_signal.wait(seconds)
        self._thread_signal.clear()

    def ensure_active(self) -> None:
        """Raise if the run must not go on here: `Abandoned`, or its fatal error.

        A worker that has gone unheard for longer than its lease (it was paused or cut off)
        starts no more steps: another worker may own the run now.
        """
        if self.abandoned or self.cancelled or self.worker.fenced():
            raise Abandoned
        if self.fatal is not None:
            raise self.fatal

    def fail(self, error: BaseException) -> BaseException:
        """Make `error` fatal to the run and return the run's first fatal error.

        Every later step call raises it, and the run ends with it even if workflow code
        catches it.
        """
        if self.fatal is None:
            self.fatal = error
        return self.fatal

    def take_seq(self) -> int:
        """Return the journal position of the next step call."""
        seq = self._seq
        self._seq += 1
        return seq

    def peek_seq(self) -> int:
        """Return the journal position the next step call will take."""
        return self._seq


@dataclasses.dataclass(frozen=True, slots=True)
class Wait:
    """What a durable wait in progress waits for; eviction records the union of a run's."""

    deadline: float | None = None
    topic: str | None = None
    run: str | None = None


class StepFrame:
    """A step attempt in progress (a plain slotted class: one is made per attempt)."""

    __slots__ = ("attempt", "execution", "name", "seq")

    def __init__(self, execution: Execution, seq: int, name: str, attempt: int) -> None:
        self.execution = execution
        self.seq = seq
        self.name = name
        self.attempt = attempt


current: contextvars.ContextVar[Execution | StepFrame | None] = contextvars.ContextVar(
    "tether_current", default=None
)


@dataclasses.dataclass(frozen=True, slots=True)
class Context:
    """Where the calling code runs: which workflow run, and which step of it.

    Attributes:
        workflow_id: the run's id.
        workflow_name: the workflow's registered name.
        step_name: the step's name, or None in workflow code outside a step.
        step_seq: the step's position in the journal, or None outside a step.
        attempt: the step's attempt number (1 for the first), or None outside a step.
    """

    workflow_id: str
    workflow_name: str
    step_name: str | None = None
    step_seq: int | None = None
    attempt: int | None = None

    @property
    def idempotency_key(self) -> str:
        """A key for external APIs, the same on every attempt and every replay of this step.

        It is a UUID derived from the run id and the step's journal position, so it fits the
        idempotency-key fields of payment, email and queue APIs:

            key = tether.context().idempotency_key
            client.charges.create(..., idempotency_key=key)

        Raises:
            NotInWorkflowError: called outside a step.
        """
        if self.step_seq is None:
            raise NotInWorkflowError(
                "an idempotency key belongs to a step; read it inside a function decorated "
                "with @app.step"
            )
        return str(uuid.uuid5(_KEY_NAMESPACE, f"{self.workflow_id}/{self.step_seq}"))


def context() -> Context:
    """Return the `Context` of the workflow or step that is running.

    Raises:
        NotInWorkflowError: called outside a workflow.
    """
    cur = current.get()
    if cur is None:
        raise NotInWorkflowError(
            "tether.context() is available only inside a workflow or a step it runs"
        )
    if isinstance(cur, StepFrame):
        ex = cur.execution
        return Context(ex.run_id, ex.spec.name, cur.name, cur.seq, cur.attempt)
    return Context(cur.run_id, cur.spec.name)
