"""Tools: functions a model may call, each call a durable step.

    @app.tool(side_effect="effectful", timeout=30, approval=RequireApproval(timeout=3600))
    async def refund(order_id: str, amount: float) -> str:
        \"\"\"Refund part of an order.\"\"\"
        key = tether.context().idempotency_key     # the same on every retry and replay
        return await payments.refund(order_id, amount, idempotency_key=key)

The model sees the tool's name, the first paragraph of its docstring and a JSON schema of its
parameters, derived from the type hints with pydantic (`Annotated[str, Field(description=...)]`
describes a parameter). The model's arguments are validated against the same hints before the
step runs; invalid arguments, and any exception the tool raises once its retries are spent,
go back to the model as the tool's answer, so it can correct itself instead of the run
crashing.

The side-effect class says what a retry may do: `read_only` and `idempotent` tools are retried
(three attempts by default), `effectful` ones are not unless you give a `retry` (and then use
the idempotency key, which external APIs use to perform the effect once).

A tool that declares the service it calls (`service="github"`) goes through that service's
fleet-wide circuit breaker and rate budget when a service gate is configured (see
`tether.agent.tool_services`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import typing
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Literal, ParamSpec, TypeVar

import pydantic

from tether.agent import tool_services
from tether.agent.errors import ToolUnavailableError
from tether.agent.llm import ServiceGate
from tether.agent.tool_services import ToolService
from tether.agent.types import ToolSpec
from tether.engine import runtime
from tether.engine.retry import Retry
from tether.errors import ConfigError

P = ParamSpec("P")
R = TypeVar("R")

SideEffect = Literal["read_only", "idempotent", "effectful"]
SIDE_EFFECTS: tuple[SideEffect, ...] = ("read_only", "idempotent", "effectful")

_ANY: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(Any)


@dataclasses.dataclass(frozen=True, slots=True)
class RequireApproval:
    """A tool call waits for a human's approval before it runs.

    The run publishes the request as the event `approval:<topic>` (tool, arguments, call id)
    and waits durably, holding no worker, for a message on `topic`:
    `await app.send(run_id, "approve:refund", {"approved": True, "by": "ana"})`. A refusal or
    no answer in time goes back to the model as the tool's answer.

    Attributes:
        timeout: seconds to wait for an answer.
        topic: the message topic (default `approve:<tool name>`).
    """

    timeout: float = 86_400.0
    topic: str | None = None

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ConfigError(f"RequireApproval(timeout={self.timeout}) must be positive")


@dataclasses.dataclass(frozen=True, slots=True)
class ToolOptions:
    """How a tool is called (see `App.tool`)."""

    name: str
    description: str
    side_effect: SideEffect
    timeout: float | None
    retry: Retry | None
    approval: RequireApproval | None
    service: ToolService | None = None

    def __post_init__(self) -> None:
        if self.side_effect not in SIDE_EFFECTS:
            raise ConfigError(
                f"side_effect={self.side_effect!r} must be one of {list(SIDE_EFFECTS)}"
            )
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"timeout={self.timeout} must be a positive number of seconds")
        name = self.name
        if not name.replace("_", "a").replace("-", "a").isalnum() or len(name) > 64:
            raise ConfigError(
                f"tool name {name!r} must be 1 to 64 letters, digits, '_' or '-' (what model "
                "providers accept)"
            )
        if self.retry is None:  # effectful tools are not retried unless the author says so
            never = self.side_effect == "effectful"
            object.__setattr__(self, "retry", Retry.never() if never else Retry(attempts=3))


def _no_gate() -> ServiceGate | None:
    return None


class Tool(Generic[P, R]):
    """A function the model may call; calling it from workflow code runs it as a step.

    Attributes:
        fn: the function.
        options: how it is called.
        app_services: returns the service gate of the app that declared it (`app.services`),
            used when the agent calling it has none, and when workflow code calls it.
    """

    def __init__(
        self,
        fn: Callable[P, R],
        options: ToolOptions,
        app_services: Callable[[], ServiceGate | None] = _no_gate,
    ) -> None:
        self.fn = fn
        self.options = options
        self.app_services = app_services
        self.is_async = inspect.iscoroutinefunction(fn)
        name, retry = f"tool:{options.name}", options.retry or Retry.never()
        if options.service is None:
            self._direct = runtime.step(name=name, retry=retry, timeout=options.timeout)(fn)
        else:  # the timeout is applied inside, around the tool's work but not its permit
            self._direct = runtime.step(name=name, retry=retry)(_guarded(self))
        # An agent's model hears of a refusal at once: the step does not wait to retry it.
        refusals = (*retry.non_retryable, ToolUnavailableError)
        for_agent = dataclasses.replace(retry, non_retryable=refusals)
        self._for_agent = runtime.step(name=name, retry=for_agent)(_run)
        functools.update_wrapper(self, fn)

    @property
    def name(self) -> str:
        """The name the model calls it by."""
        return self.options.name

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the tool as a step of the current workflow (or plainly outside one)."""
        return self._direct(*args, **kwargs)

    @functools.cached_property
    def arguments_model(self) -> type[pydantic.BaseModel]:
        """The pydantic model of the tool's parameters."""
        return _arguments_model(self.fn, self.name)

    @functools.cached_property
    def spec(self) -> ToolSpec:
        """The tool as the model sees it."""
        schema = self.arguments_model.model_json_schema()
        schema.pop("title", None)
        return ToolSpec(name=self.name, description=self.options.description, parameters=schema)

    def parse(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Validate a model's arguments; return keyword arguments for the function.

        Raises:
            pydantic.ValidationError: the arguments do not fit the parameters.
        """
        model = self.arguments_model.model_validate(arguments)
        return {name: getattr(model, name) for name in type(model).model_fields}

    @property
    def service(self) -> ToolService | None:
        """The service the tool calls, or None when it declares none."""
        return self.options.service

    def gate(self, given: ServiceGate | None = None) -> ServiceGate | None:
        """The gate a call goes through: `given` (an agent's), else the app's; None if unguarded."""
        if self.options.service is None:
            return None
        return given if given is not None else self.app_services()

    async def run_for_agent(
        self,
        kwargs: dict[str, Any],
        check: Callable[[], None],
        services: ServiceGate | None = None,
    ) -> str:
        """Run the call as this tool's step; return the answer the model reads.

        Args:
            kwargs: the validated arguments.
            check: called inside the step before anything else (a budget check).
            services: the agent's service gate (None: the app's, if any).

        Raises:
            ToolUnavailableError: the tool's service refused the call (journaled).
        """
        result: str = await self._for_agent(self, kwargs, check, services)
        return result


def make_tool(
    fn: Callable[P, R],
    options: ToolOptions,
    app_services: Callable[[], ServiceGate | None] = _no_gate,
) -> Tool[P, R]:
    """Build a `Tool` from a function and its declared options (see `App.tool`)."""
    return Tool(fn, options, app_services)


def declare(
    fn: Callable[..., Any],
    name: str | None,
    description: str | None,
    retry: Retry | None,
    approval: RequireApproval | bool,
    service: str | ToolService | None = None,
) -> dict[str, Any]:
    """The defaults of a tool's options: name, description, retry, approval and service."""
    return {
        "name": name or fn.__name__,
        "description": description if description is not None else _summary(fn),
        "retry": retry,
        "approval": RequireApproval() if approval is True else approval or None,
        "service": tool_services.resolve(service),
    }


async def _run(
    tool: Tool[..., Any],
    kwargs: dict[str, Any],
    check: Callable[[], None],
    services: ServiceGate | None,
) -> str:
    """A tool call made by an agent (a step body): the answer as the model will read it."""
    check()
    gate, use = tool.gate(services), tool.options.service
    timeout, name = tool.options.timeout, tool.name

    def work() -> Awaitable[Any]:
        if tool.is_async:
            return tool_services.timed(tool.fn(**kwargs), timeout, name)
        return tool_services.timed(asyncio.to_thread(tool.fn, **kwargs), timeout, name)

    if gate is None or use is None:
        value = await work()
    else:
        value = await tool_services.call(gate, use, name, work)
    return observation(value)


def _guarded(tool: Tool[..., Any]) -> Callable[..., Any]:
    """The step body of a tool with a service, called from workflow code (or outside one)."""
    fn, timeout, name = tool.fn, tool.options.timeout, tool.name
    use = tool.options.service
    assert use is not None
    if tool.is_async:

        @functools.wraps(fn)
        async def guarded_async(*args: Any, **kwargs: Any) -> Any:
            gate = tool.gate()

            def work() -> Awaitable[Any]:
                return tool_services.timed(fn(*args, **kwargs), timeout, name)

            return await (work() if gate is None else tool_services.call(gate, use, name, work))

        return guarded_async

    @functools.wraps(fn)
    def guarded_sync(*args: Any, **kwargs: Any) -> Any:
        gate = tool.gate()

        def work() -> Awaitable[Any]:
            return tool_services.timed(tool_services.in_thread(fn, args, kwargs), timeout, name)

        if gate is None and timeout is None:
            return fn(*args, **kwargs)

        async def guarded() -> Any:
            return await (work() if gate is None else tool_services.call(gate, use, name, work))

        return tool_services.blocking(guarded())

    return guarded_sync


def observation(value: Any) -> str:
    """A tool's return value as text for the model: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    return _ANY.dump_json(value).decode()


def _arguments_model(fn: Callable[..., Any], name: str) -> type[pydantic.BaseModel]:
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise ConfigError(
            f"cannot resolve the type hints of tool {name!r}: {exc}; make the names in its "
            "annotations importable from its module"
        ) from exc
    fields: dict[str, Any] = {}
    for pname, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigError(f"tool {name!r}: *args and **kwargs cannot be described to a model")
        default = ... if param.default is param.empty else param.default
        fields[pname] = (hints.get(pname, Any), default)
    config = pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=False)
    try:
        return pydantic.create_model(f"{name}_arguments", __config__=config, **fields)
    except (pydantic.PydanticSchemaGenerationError, TypeError) as exc:
        raise ConfigError(f"tool {name!r} has a parameter a model cannot fill: {exc}") from exc


def _summary(fn: Callable[..., Any]) -> str:
    doc = inspect.getdoc(fn) or ""
    return doc.split("\n\n", 1)[0].strip()
