"""Steps: where a workflow touches the world, each outcome journaled before the workflow moves on.

A step called from a workflow gets the next journal position at the moment it is *called*
(not when it first runs), so steps started together under `asyncio.gather` get positions in
argument order on every replay. If the journal already holds an outcome at that position,
the step returns (or raises) it without running. Otherwise the body runs, with retries, and
its outcome is committed first and returned second.

`StepCall` holds the decisions of one call (replay, attempts, records); `call_async`,
`call_sync` and `call_transaction` are the thin drivers that do the waiting and writing for
`async def` steps, plain `def` steps, and transactional steps.

A plain `def` step runs on the thread that calls it: in a `def` workflow, the workflow's
thread; in an `async def` workflow, the event loop's thread, which it holds until it
returns. Give slow blocking steps an `async def` body (for example with `asyncio.to_thread`).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import time
import typing
from collections.abc import Callable
from typing import Any

from tether.codec import adapter, step_place
from tether.engine import failures
from tether.engine.context import Execution, StepFrame, current
from tether.engine.retry import Retry
from tether.errors import (
    ConfigError,
    LeaseLostError,
    NonDeterminismError,
    NotInWorkflowError,
    StepTimeoutError,
    StoreUnavailableError,
    TetherError,
)
from tether.store.base import STEP_ERROR, STEP_OK, STEP_RETRY, StepRecord


@dataclasses.dataclass(slots=True)
class StepSpec:
    """A decorated step function and its options."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    retry: Retry
    timeout: float | None
    transactional: bool = False
    _returns: Any = dataclasses.field(default=None, repr=False)

    @property
    def returns(self) -> Any:
        """The return annotation (resolved on first use, so forward references work)."""
        if self._returns is None:
            try:
                hints = typing.get_type_hints(self.fn)
            except Exception as exc:
                raise ConfigError(
                    f"cannot resolve the type hints of step {self.name!r}: {exc}; make the "
                    "names in its annotations importable from its module"
                ) from exc
            self._returns = hints.get("return", Any)
            adapter(self._returns)  # fail early on a type tether cannot store
        return self._returns


class StepCall:
    """One call of a step at one journal position: the decisions, without the I/O."""

    __slots__ = ("attempts", "ex", "retry_at", "seq", "spec", "started_at")

    def __init__(self, ex: Execution, seq: int, spec: StepSpec) -> None:
        self.ex = ex
        self.seq = seq
        self.spec = spec
        self.attempts = 0
        self.retry_at: float | None = None
        self.started_at = 0.0

    def check(self) -> None:
        """Refuse to go on in a run this worker has given up."""
        self.ex.ensure_active()

    def replay(self) -> tuple[bool, Any]:
        """Return (True, value) if the journal holds this call's outcome, else (False, None).

        A recorded error is raised; a recorded retry hands over its attempt count and the
        time its next attempt is due.
        """
        self.check()
        prior = self.ex.journal.pop(self.seq, None)
        if prior is None:
            return False, None
        if prior.name != self.spec.name:
            raise self.ex.fail(
                NonDeterminismError(self.ex.run_id, self.seq, prior.name, self.spec.name)
            )
        if prior.status == STEP_RETRY:
            self.attempts = prior.attempts
            self.retry_at = prior.retry_at
            return False, None
        return True, self.outcome(prior)

    def outcome(self, record: StepRecord) -> Any:
        """Return the value of a final journal entry, or raise its error."""
        if record.status == STEP_OK:
            assert record.output is not None
            return self.ex.worker.codec.decode(
                record.output, self.spec.returns, self._what, self._where
            )
        assert record.error is not None
        codec = self.ex.worker.codec
        raise failures.decode_error(failures.open_error(codec, record.error, self._error_where))

    def wait_before_first(self) -> float:
        """Seconds still to wait for a backoff that a crash interrupted."""
        if self.retry_at is None:
            return 0.0
        return max(0.0, self.retry_at - self.ex.worker.clock.now())

    def begin(self) -> StepFrame:
        """Start an attempt."""
        self.check()
        self.attempts += 1
        self.started_at = self.ex.worker.clock.now()
        return StepFrame(self.ex, self.seq, self.spec.name, self.attempts)

    def succeeded(self, value: Any) -> tuple[StepRecord, Any]:
        """Encode a result: return the entry to record and the value the workflow gets.

        The value is the decoded payload, so the first run sees exactly what every replay will.
        """
        codec = self.ex.worker.codec
        what, where = self._what, self._where
        payload = codec.encode(value, what, where)
        result = codec.decode(payload, self.spec.returns, what, where)
        record = StepRecord(
            self.ex.run_id,
            self.seq,
            self.spec.name,
            STEP_OK,
            payload,
            None,
            self.attempts,
            self.started_at,
            self.ex.worker.clock.now(),
        )
        return record, result

    def failed(self, error: BaseException) -> tuple[StepRecord, float | None]:
        """Decide on a failed attempt: the entry to record and the backoff (None: give up)."""
        now = self.ex.worker.clock.now()
        delay = self.spec.retry.delay(self.attempts, error)
        if delay is None:
            error.add_note(
                f"tether: step {self.spec.name!r} failed after {self.attempts} attempt(s)"
            )
        status = STEP_ERROR if delay is None else STEP_RETRY
        record = StepRecord(
            self.ex.run_id,
            self.seq,
            self.spec.name,
            status,
            None,
            failures.seal_error(self.ex.worker.codec, error, self._error_where),
            self.attempts,
            self.started_at,
            now,
            None if delay is None else now + delay,
        )
        return record, delay

    def resolve(self, stored: StepRecord, mine: StepRecord | None, result: Any) -> Any:
        """Return what the workflow gets once `mine` was written.

        The journal's first outcome stands if another write got there first (an
        acknowledgement lost and the write retried).
        """
        return result if stored is mine or stored == mine else self.outcome(stored)

    def lease_lost(self, exc: LeaseLostError) -> BaseException:
        """Mark the run as lost to this worker; every later step raises the same."""
        return self.ex.fail(exc)

    def timed_out(self) -> StepTimeoutError:
        """The error for an attempt that outran the step's timeout."""
        return StepTimeoutError(
            f"step {self.spec.name!r} attempt {self.attempts} ran longer than its timeout of "
            f"{self.spec.timeout}s; raise the timeout or make the step faster"
        )

    def _what(self) -> str:
        return f"the result of step {self.spec.name!r} (position {self.seq} of {self.ex.run_id!r})"

    def _where(self) -> str:
        return step_place(self.ex.run_id, self.seq, "output")

    def _error_where(self) -> str:
        return step_place(self.ex.run_id, self.seq, "error")


async def call_async(
    ex: Execution, seq: int, spec: StepSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Run (or replay) an `async def` step."""
    call = StepCall(ex, seq, spec)
    done, value = call.replay()
    if done:
        return value
    if (pause := call.wait_before_first()) > 0:
        await asyncio.sleep(pause)
    while True:
        token = current.set(call.begin())
        ex.inflight += 1  # a run with a step in flight is not evicted
        try:
            try:
                value = await _run_async_body(call, args, kwargs)
            finally:
                ex.inflight -= 1
                current.reset(token)
            record, result = call.succeeded(value)
        except Exception as exc:
            record, delay = call.failed(exc)
            await _commit_async(call, record)
            if delay is None:
                raise
            await asyncio.sleep(delay)
            continue
        return call.resolve(await _commit_async(call, record), record, result)


async def _run_async_body(call: StepCall, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    spec = call.spec
    if spec.timeout is None:
        return await spec.fn(*args, **kwargs)
    scope = asyncio.timeout(spec.timeout)
    try:
        async with scope:
            return await spec.fn(*args, **kwargs)
    except TimeoutError:
        if scope.expired():
            raise call.timed_out() from None
        raise


async def _commit_async(call: StepCall, record: StepRecord) -> StepRecord:
    try:
        return await call.ex.worker.committer.acommit(call.ex.lease, record)
    except LeaseLostError as exc:
        raise call.lease_lost(exc) from None
    except StoreUnavailableError as exc:
        raise call.ex.fail(exc) from None  # the run pauses; it is not failed for this


def call_sync(
    ex: Execution, seq: int, spec: StepSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Run (or replay) a plain `def` step on the calling thread."""

    def attempt(call: StepCall, frame: StepFrame) -> _Attempted:
        record, result = call.succeeded(_run_sync_body(call, frame, args, kwargs))
        return _commit_sync(call, record), record, result

    return _drive_sync(StepCall(ex, seq, spec), attempt)


def call_transaction(
    ex: Execution, seq: int, spec: StepSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Run (or replay) a transactional step: its writes commit with its journal entry."""

    def attempt(call: StepCall, frame: StepFrame) -> _Attempted:
        written: list[tuple[StepRecord, Any]] = []

        def body(conn: Any) -> StepRecord:
            token = current.set(frame)
            try:
                value = spec.fn(conn, *args, **kwargs)
            finally:
                current.reset(token)
            record, result = call.succeeded(value)
            written[:] = [(record, result)]
            return record

        try:
            stored = ex.worker.transact(ex.lease, body)
        except LeaseLostError as exc:
            raise call.lease_lost(exc) from None
        except StoreUnavailableError as exc:
            raise ex.fail(exc) from None
        mine, result = written[0] if written else (None, None)
        return stored, mine, result

    return _drive_sync(StepCall(ex, seq, spec), attempt)


_Attempted = tuple[StepRecord, StepRecord | None, Any]
"""An attempt's (entry the journal holds, entry this attempt wrote, value it returned)."""


def _drive_sync(call: StepCall, attempt: Callable[[StepCall, StepFrame], _Attempted]) -> Any:
    """Replay, or run attempts with retries and backoff, blocking the calling thread."""
    done, value = call.replay()
    if done:
        return value
    if (pause := call.wait_before_first()) > 0:
        time.sleep(pause)
    while True:
        frame = call.begin()
        try:
            call.ex.inflight += 1
            try:
                stored, mine, result = attempt(call, frame)
            finally:
                call.ex.inflight -= 1
        except Exception as exc:
            if exc is call.ex.fatal:
                raise  # the run is lost to this worker: there is nothing to record
            record, delay = call.failed(exc)
            _commit_sync(call, record)
            if delay is None:
                raise
            time.sleep(delay)
            continue
        return call.resolve(stored, mine, result)


def _run_sync_body(
    call: StepCall, frame: StepFrame, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    spec = call.spec
    token = current.set(frame)
    try:
        if spec.timeout is None:
            return spec.fn(*args, **kwargs)
        # A thread cannot be stopped: on timeout the attempt is abandoned (and retried per
        # policy) while its thread runs on to its end; its result is then ignored.
        ctx = contextvars.copy_context()
        future = call.ex.worker.step_threads.submit(ctx.run, spec.fn, *args, **kwargs)
        try:
            return future.result(timeout=spec.timeout)
        except TimeoutError:
            if future.done():
                raise
            raise call.timed_out() from None
    finally:
        current.reset(token)


def _commit_sync(call: StepCall, record: StepRecord) -> StepRecord:
    try:
        return call.ex.worker.committer.commit(call.ex.lease, record)
    except LeaseLostError as exc:
        raise call.lease_lost(exc) from None
    except StoreUnavailableError as exc:
        raise call.ex.fail(exc) from None


def make_wrapper(spec: StepSpec) -> Callable[..., Any]:
    """Return the function users call in place of the step's body."""
    fn = spec.fn
    if spec.transactional:
        driver: Callable[..., Any] = call_transaction
    elif spec.is_async:
        driver = call_async
    else:
        driver = call_sync

    @functools.wraps(fn)
    def step_wrapper(*args: Any, **kwargs: Any) -> Any:
        cur = current.get()
        if not isinstance(cur, Execution):
            return _outside_workflow(spec, cur, args, kwargs)
        if spec.is_async and not cur.is_async:
            raise TetherError(
                f"step {spec.name!r} is async but workflow {cur.spec.name!r} is a plain def; "
                "make the workflow async (and await the step), or make the step a plain def"
            )
        return driver(cur, cur.take_seq(), spec, args, kwargs)

    step_wrapper.__tether_step__ = spec  # type: ignore[attr-defined]
    return step_wrapper


def _outside_workflow(
    spec: StepSpec, cur: StepFrame | None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """A step called outside a workflow (or inside another step) is a plain function call."""
    if spec.transactional:
        where = "inside another step" if cur is not None else "outside a workflow"
        raise NotInWorkflowError(
            f"transactional step {spec.name!r} was called {where}; call it from workflow "
            "code, which gives it its transaction and journal entry"
        )
    return spec.fn(*args, **kwargs)
