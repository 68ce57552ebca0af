"""Handles: following a run from any process, by its id."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from tether.codec import run_place, step_place
from tether.engine import children, failures
from tether.engine.context import Execution, current
from tether.engine.workflow import Outcome
from tether.errors import (
    ResultTimeoutError,
    WorkflowCancelledError,
    WorkflowFailedError,
    WorkflowNotFoundError,
)
from tether.status import Status
from tether.store.base import STEP_OK, RunRow, StepRecord

if TYPE_CHECKING:
    from tether.engine.app import App

R = TypeVar("R")

_POLL_FIRST = 0.005
_POLL_MAX = 0.5


@dataclasses.dataclass(frozen=True, slots=True)
class StepInfo:
    """One journal entry, for display.

    Attributes:
        seq: the step's position in the run.
        name: the step's name.
        status: `ok`, `error`, or `retry` (failed attempts, another one due at `retry_at`).
        attempts: attempts made so far.
        started_at: when the first attempt started (Unix seconds).
        ended_at: when the last attempt ended.
        retry_at: when the next attempt is due, for `retry`.
        output: the result as plain JSON, for `ok`.
        error_type: the exception's qualified type name, for `error` and `retry`.
        error_message: the exception's message.
    """

    seq: int
    name: str
    status: str
    attempts: int
    started_at: float
    ended_at: float
    retry_at: float | None
    output: Any
    error_type: str | None
    error_message: str | None


class WorkflowHandle(Generic[R]):
    """A reference to one workflow run, usable from any process that reaches its database.

    handle = await app.start(digest, urls, id="digest-2026-11-26")
    print(await handle.status())
    text = await handle.result(timeout=600)
    """

    def __init__(self, app: App, workflow_id: str, workflow_name: str | None = None) -> None:
        self._app = app
        self._id = workflow_id
        self._name = workflow_name

    @property
    def id(self) -> str:
        """The run's id."""
        return self._id

    def __repr__(self) -> str:
        return f"WorkflowHandle({self._id!r})"

    async def status(self) -> Status:
        """Return the run's current status."""
        return Status((await self._row()).status)

    def result(self, timeout: float | None = None) -> Coroutine[Any, Any, R]:
        """Wait for the run to end and return its result, wherever it executes.

            text = await handle.result(timeout=600)

        From workflow code this is a durable wait: the outcome is journaled, and a long wait
        evicts the waiting run until this one ends.

        Raises:
            WorkflowFailedError: the run failed; `.cause` is its error.
            WorkflowCancelledError: the run was cancelled.
            ResultTimeoutError: it did not end within `timeout` seconds (it goes on running).
        """
        ex = current.get()
        if isinstance(ex, Execution):
            spec = None if self._name is None else self._app.workflows.get(self._name)
            returns = Any if spec is None else spec.returns
            return children.await_run(ex, self._id, returns, timeout)  # type: ignore[return-value]
        return self._result(timeout)

    async def _result(self, timeout: float | None) -> R:  # noqa: ASYNC109
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        local = self._app._local_result(self._id)
        if local is not None:
            try:
                async with asyncio.timeout(timeout):
                    outcome = await asyncio.shield(local)
            except TimeoutError:
                raise self._timeout(timeout) from None
            if outcome is not None:
                return self._value(outcome, self._name)
        delay = _POLL_FIRST
        while True:
            row = await self._row()
            if Status(row.status).finished:
                return self._value((Status(row.status), row.output, row.error), row.name)
            pause = delay
            if deadline is not None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise self._timeout(timeout)
                pause = min(pause, remaining)
            await asyncio.sleep(pause)
            delay = min(delay * 2, _POLL_MAX)

    async def steps(self) -> list[StepInfo]:
        """Return the run's journal, oldest step first."""
        await self._row()
        records = await self._app._db(self._app.store.load_steps, self._id)
        return [self._step_info(r) for r in records]

    async def _row(self) -> RunRow:
        row = await self._app._db(self._app.store.get_run, self._id)
        if row is None:
            raise WorkflowNotFoundError(self._id)
        return row

    def _value(self, outcome: Outcome, name: str | None) -> R:
        status, output, error = outcome
        if status == Status.SUCCEEDED:
            assert output is not None
            spec = None if name is None else self._app.workflows.get(name)
            returns = Any if spec is None else spec.returns
            what = f"the result of workflow {self._id!r}"
            where = run_place(self._id, "output")
            value: R = self._app.codec.decode(output, returns, what, where)
            return value
        record = None
        if error is not None:
            record = failures.open_error(self._app.codec, error, run_place(self._id, "error"))
        if status == Status.CANCELLED:
            reason = None if record is None else failures.error_summary(record)[1]
            raise WorkflowCancelledError(self._id, reason)
        assert record is not None
        raise WorkflowFailedError(self._id, failures.decode_error(record))

    def _timeout(self, timeout: float | None) -> ResultTimeoutError:
        return ResultTimeoutError(
            f"workflow {self._id!r} did not finish within {timeout}s; it goes on running: "
            "call result() again to keep waiting"
        )

    def _step_info(self, r: StepRecord) -> StepInfo:
        output = None
        if r.status == STEP_OK and r.output is not None:
            where = step_place(r.run_id, r.seq, "output")
            output = self._app.codec.decode(r.output, Any, "a step result", where)
        error_type = error_message = None
        if r.error is not None:
            record = failures.open_error(
                self._app.codec, r.error, step_place(r.run_id, r.seq, "error")
            )
            error_type, error_message, _ = failures.error_summary(record)
        return StepInfo(
            r.seq,
            r.name,
            r.status,
            r.attempts,
            r.started_at,
            r.ended_at,
            r.retry_at,
            output,
            error_type,
            error_message,
        )
