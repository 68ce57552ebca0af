"""Tools that call a service: each call through the fleet's circuit breaker and rate budget.

    @app.tool(side_effect="read_only", service="github")
    async def open_issues(repo: str) -> list[str]: ...

    @app.tool(service=ToolService("payments", failures=(httpx.TransportError,), max_wait=10))
    async def refund(order_id: str) -> str: ...

A tool that declares its service, called with a service gate (`Agent(services=...)`, else
`app.services`), runs inside its step like this: take a permit for the service (1 request, 0
tokens), waiting up to `max_wait` seconds for room in its rate budget; run the tool (within
its `timeout`); give the permit back with the outcome. A breaker that is open, or a budget
that has no room in time, refuses the call with `ToolUnavailableError` and the tool does not
run. Everything happens inside the tool's step, so the outcome, refusals included, is
journaled like any other and a replay sees the same.

What counts toward the breaker (`ToolService.counts`) is what says the *service* is unwell: a
`ServiceUnavailableError` the tool raises, timeouts (the tool's own `timeout` included),
connection errors, provider outages (`counts_as_failure`), and the exception types or
predicate given as `failures`. Anything else (a `ValueError`, a 404 the tool turned into an
exception) is the caller's: it is released as neither success nor failure and moves nothing.
A success closes a half-open breaker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import dataclasses
import datetime
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from tether.agent import services
from tether.agent.errors import ServiceUnavailableError, ToolUnavailableError
from tether.engine import context as contexts
from tether.errors import ConfigError, NotInWorkflowError, StepTimeoutError

if TYPE_CHECKING:
    from tether.agent.llm import ServiceGate

log = logging.getLogger("tether.agent.tools")
T = TypeVar("T")

FailureRule = tuple[type[BaseException], ...] | Callable[[BaseException], bool]
"""Exception types, or a predicate, that say a tool's service is unwell."""

DEFAULT_MAX_WAIT = 30.0
"""Seconds a tool call waits, by default, for room in its service's rate budget."""


@dataclasses.dataclass(frozen=True, slots=True)
class ToolService:
    """The service a tool calls, guarded by its fleet-wide breaker and rate budget.

    `@app.tool(service="github")` is `ToolService("github")`.

    Attributes:
        name: the service's name, as `Services` policies name it.
        failures: exception types (a tuple, or one type) or a predicate over the exception
            that also count as the service failing, beyond the default rule (timeouts,
            connection errors, `ServiceUnavailableError`): for example the HTTP client's
            transport errors, or `lambda e: getattr(e, "status_code", 0) >= 500`.
        max_wait: the longest a call waits for room in the service's rate budget, in
            seconds; past it the call is refused with `ToolUnavailableError`.

    Raises:
        ConfigError: an empty name, failures that are neither exception types nor a
            callable, or a negative `max_wait`.
    """

    name: str
    failures: FailureRule | type[BaseException] = ()
    max_wait: float = DEFAULT_MAX_WAIT

    def __post_init__(self) -> None:
        name: object = self.name
        if not isinstance(name, str) or not name:
            raise ConfigError(
                f"ToolService name {self.name!r} is not usable; give the service's name, a "
                "non-empty string"
            )
        failures: Any = self.failures
        if isinstance(failures, type):
            failures = (failures,)
        elif isinstance(failures, list):
            failures = tuple(failures)
        if isinstance(failures, tuple):
            bad = [
                f for f in failures if not (isinstance(f, type) and issubclass(f, BaseException))
            ]
            if bad:
                raise ConfigError(
                    f"ToolService failures holds {bad[0]!r}; give exception types, or one "
                    "callable that takes the exception and returns True when it counts"
                )
        elif not callable(failures):
            raise ConfigError(
                f"ToolService failures is {failures!r}; give exception types, or one callable "
                "that takes the exception and returns True when it counts"
            )
        object.__setattr__(self, "failures", failures)
        wait: object = self.max_wait
        if (
            isinstance(wait, bool)
            or not isinstance(wait, int | float)
            or not math.isfinite(wait)
            or wait < 0
        ):
            raise ConfigError(f"ToolService max_wait is {wait!r}; give seconds, 0 or more")

    def counts(self, error: BaseException) -> bool:
        """Whether `error`, raised by the tool, says the service is unwell."""
        if isinstance(error, ServiceUnavailableError) or services.counts_as_failure(error):
            return True
        rule = self.failures
        if isinstance(rule, tuple):
            return isinstance(error, rule)
        try:
            return bool(rule(error))
        except Exception:
            log.exception("the failures rule of service %r raised; not counted", self.name)
            return False


def resolve(service: str | ToolService | None) -> ToolService | None:
    """A tool's `service=` option as a `ToolService` (None: the tool is not guarded).

    Raises:
        ConfigError: neither a name, a `ToolService` nor None.
    """
    if service is None or isinstance(service, ToolService):
        return service
    if isinstance(service, str):
        return ToolService(service)
    raise ConfigError(
        f"service={service!r} is not usable; give the service's name or a tether.agent.ToolService"
    )


async def call(
    gate: ServiceGate, use: ToolService, tool: str, run: Callable[[], Awaitable[T]]
) -> T:
    """Run `run()` with a permit for the service; report its outcome to the breaker.

    Raises:
        ToolUnavailableError: the breaker is open, or the budget had no room in time (the
            tool did not run).
    """
    permit = await _admit(gate, use, tool)
    ok = failure = False
    try:
        value = await run()
        ok = True
        return value
    except Exception as exc:
        failure = use.counts(exc)
        raise
    finally:  # a cancelled call is released too, as neither success nor failure
        await gate.release(permit, ok=ok, failure=failure)


async def _admit(gate: ServiceGate, use: ToolService, tool: str) -> Any:
    try:
        return await gate.acquire(use.name, tokens=0, max_wait=use.max_wait)
    except services.RateBudgetError as exc:
        wait = exc.retry_after if math.isfinite(exc.retry_after) else None
        detail = (
            f"has no room in its rate budget for another {exc.retry_after:.1f}s, longer than "
            f"the {use.max_wait:g}s a call may wait; try again later, or make fewer calls to it"
        )
        raise ToolUnavailableError(
            tool, use.name, "rate_budget", retry_at=None, retry_after=wait, detail=detail
        ) from None
    except Exception as exc:
        retry_at = getattr(exc, "retry_at", None)
        if not isinstance(retry_at, int | float) or not hasattr(exc, "service"):
            raise
        after = getattr(exc, "retry_after", None)
        if not isinstance(after, int | float):
            after = 0.0
        why = (
            "a probe call is testing whether it has recovered"
            if getattr(exc, "probing", False)
            else "it failed repeatedly and its circuit breaker is open"
        )
        detail = (
            f"is unavailable until {_utc(retry_at)} (in {after:.1f}s): {why}; try again after "
            "that time, or do without it"
        )
        raise ToolUnavailableError(
            tool,
            use.name,
            "circuit_open",
            retry_at=float(retry_at),
            retry_after=float(after),
            detail=detail,
        ) from None


async def timed(run: Awaitable[T], limit: float | None, tool: str) -> T:
    """Await `run` within `limit`, the tool's timeout; outrunning it raises `StepTimeoutError`.

    The timeout bounds the tool's own work only, not the wait for its service's budget, and a
    timeout is then the tool's failure (which counts toward the breaker), not a cancellation.
    """
    if limit is None:
        return await run
    scope = asyncio.timeout(limit)
    try:
        async with scope:
            return await run
    except TimeoutError:
        if not scope.expired():
            raise
    raise StepTimeoutError(
        f"step 'tool:{tool}' attempt {_attempt()} ran longer than its timeout of {limit}s; "
        "raise the timeout or make the tool faster"
    )


async def in_thread(fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    """Run a plain `def` tool on a thread of its own, with the caller's context.

    The thread is not waited for when the call is abandoned (a timeout): it runs on to its
    end and its result is ignored, as a step's timed-out thread is.
    """
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tether-tool")
    try:
        ctx = contextvars.copy_context()
        return await asyncio.wrap_future(pool.submit(ctx.run, fn, *args, **kwargs))
    finally:
        pool.shutdown(wait=False)


def blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to its end from plain `def` code, on an event loop of its own.

    The loop runs on a thread of its own, so this works whether or not the calling thread
    runs an event loop (a plain `def` tool called from an `async def` workflow runs on the
    workflow's loop thread, which it holds until it returns).
    """
    ctx = contextvars.copy_context()
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tether-gate") as pool:
        return pool.submit(ctx.run, asyncio.run, coro).result()


def _attempt() -> int | str:
    try:
        return contexts.context().attempt or "?"
    except NotInWorkflowError:
        return "?"


def _utc(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
