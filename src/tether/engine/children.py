"""Child workflows, waiting on other runs, and parallel branches, all replay-safe.

A child started from workflow code gets an id derived from its parent's id and the journal
position of the start (`<parent>:<seq>`), unless one is given, so a replay after a crash finds
the same child instead of starting another. Waiting for a run's result from workflow code is a
durable wait: the outcome is journaled when it comes (and replayed from the journal after),
and a long wait evicts the waiting run until the awaited one ends.

Every coordination call takes its journal position when it is called, so branches started
together under `tether.gather` get the same positions on every replay.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from tether.codec import adapter, run_place
from tether.engine import failures
from tether.engine.context import Execution, Wait
from tether.engine.waiting import Position, wait_async
from tether.engine.workflow import WorkflowSpec
from tether.errors import (
    ResultTimeoutError,
    WorkflowCancelledError,
    WorkflowFailedError,
    WorkflowNotFoundError,
)
from tether.status import Status
from tether.store.base import RunRow, StepRecord

T = TypeVar("T")

START = "tether.start_child"
RESULT = "tether.result"

CreateChild = Callable[[WorkflowSpec, str, tuple[Any, ...], dict[str, Any], str], Awaitable[None]]
"""Creates (and, room permitting, launches) a child run: (spec, id, args, kwargs, parent)."""


def child_id(ex: Execution, seq: int) -> str:
    """The id of the child started at journal position `seq` of `ex`'s run."""
    return f"{ex.run_id}:{seq}"


def start_child(
    ex: Execution,
    spec: WorkflowSpec,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    given_id: str | None,
    create: CreateChild,
) -> Awaitable[str]:
    """Start a child of `ex`'s run (once across replays); return its id when awaited."""
    pos = Position(ex, START)
    return _start_child(pos, spec, args, kwargs, given_id or child_id(ex, pos.seq), create)


async def _start_child(
    pos: Position,
    spec: WorkflowSpec,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    child: str,
    create: CreateChild,
) -> str:
    prior = pos.replay()
    if prior is not None and pos.final(prior):
        return str(pos.value(prior, str, "the id of a child run"))
    # Create first, journal second: a crash in between re-creates the same child (same id,
    # same input: the existing run), never a second one.
    await create(spec, child, args, kwargs, pos.ex.run_id)
    await pos.acommit(pos.entry(json.dumps(child).encode()))
    return child


def await_run(ex: Execution, run_id: str, returns: Any, timeout: float | None) -> Awaitable[Any]:
    """Wait durably for run `run_id` to end; return its result or raise its error."""
    pos = Position(ex, RESULT)
    deadline = None if timeout is None else pos.started_at + timeout
    return _await_run(pos, run_id, returns, deadline)


async def _await_run(pos: Position, run_id: str, returns: Any, deadline: float | None) -> Any:
    ex = pos.ex
    prior = pos.replay()
    if pos.final(prior):
        assert prior is not None
        return _outcome(pos, run_id, prior, returns)
    if prior is not None:
        deadline = prior.retry_at

    async def ready() -> tuple[bool, RunRow | None]:
        row = await ex.worker.db(ex.worker.store.get_run, run_id)
        if row is None:
            raise WorkflowNotFoundError(run_id)
        return Status(row.status).finished, row

    done, row = await ready()
    if not done:
        if prior is None:
            await pos.acommit(pos.entry(None, waiting=True, waiting_until=deadline))
        done, row = await wait_async(pos, Wait(deadline=deadline, run=run_id), ready)
    record = await pos.acommit(pos.entry(_encode_outcome(ex, row if done else None)))
    return _outcome(pos, run_id, record, returns)


def _encode_outcome(ex: Execution, row: RunRow | None) -> bytes:
    """The journaled outcome of an awaited run: its status and its output or error, as JSON.

    The awaited run's payloads are opened from its own rows; the entry that holds them is
    sealed for the awaiting run's journal position.
    """
    codec = ex.worker.codec
    if row is None:
        value: dict[str, Any] = {"status": "TIMEOUT"}
    else:
        value = {"status": row.status}
        if row.output is not None:
            where = run_place(row.id, "output")
            value["output"] = json.loads(codec.open(row.output, f"the result of {row.id!r}", where))
        if row.error is not None:
            error = failures.open_error(codec, row.error, run_place(row.id, "error"))
            value["error"] = json.loads(error)
    return codec.to_json(value, "an awaited run's outcome")


def _outcome(pos: Position, run_id: str, record: StepRecord, returns: Any) -> Any:
    value = pos.value(record, Any, "an awaited run's outcome")
    status = value.get("status")
    if status == Status.SUCCEEDED:
        return adapter(returns).validate_python(value.get("output"))
    if status == "TIMEOUT":
        raise ResultTimeoutError(
            f"workflow {run_id!r} did not finish within the time this workflow waited for it"
        )
    if status == Status.CANCELLED:
        raise WorkflowCancelledError(run_id)
    error = value.get("error") or {"type": "tether.errors.StepError", "message": "unknown"}
    raise WorkflowFailedError(run_id, failures.decode_error(json.dumps(error).encode()))


async def gather(*aws: Awaitable[T], return_exceptions: bool = False) -> list[T]:
    """Run steps, waits and children in parallel; their results in argument order.

        a, b = await tether.gather(fetch(u1), fetch(u2))

    Journal positions are taken when each call is made (before `gather` runs), so replay
    after a crash gives every branch the same position.
    """
    results = await asyncio.gather(*aws, return_exceptions=return_exceptions)
    return cast(list[T], list(results))
