"""The App of the agent layer: the engine's App plus tools.

`tether.App` is this class; everything the engine's App does, it does. Layers stay downward
only: the engine knows nothing of tools, this module extends it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

from tether.agent.llm import ServiceGate
from tether.agent.tool_services import ToolService
from tether.agent.tools import (
    RequireApproval,
    SideEffect,
    Tool,
    ToolOptions,
    declare,
    make_tool,
)
from tether.codec import PayloadCodec
from tether.engine import app as engine_app
from tether.engine.retry import Retry
from tether.errors import ConfigError
from tether.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")


class App(engine_app.App):
    """A tether application: workflows, steps, tools, a database and (entered) a worker.

    See `tether.engine.app.App` for everything but tools.

    Attributes:
        services: the service gate (circuit breakers and rate budgets, e.g.
            `tether.agent.Services(app.store, {...})`) that tools declaring a `service` go
            through when workflow code calls them, and when an agent without its own
            `services=` does. None (the default): such tools are not guarded.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        settings: Settings | None = None,
        codecs: Sequence[PayloadCodec] = (),
    ) -> None:
        super().__init__(database_url, settings=settings, codecs=codecs)
        self._tools: dict[str, Tool[..., Any]] = {}
        self.services: ServiceGate | None = None

    @property
    def tools(self) -> Mapping[str, Tool[..., Any]]:
        """The registered tools, by name."""
        return self._tools

    def tool(  # noqa: PLR0913 - the options of a decorator, each keyword-only and documented
        self,
        *,
        name: str | None = None,
        description: str | None = None,
        side_effect: SideEffect = "effectful",
        timeout: float | None = None,
        retry: Retry | None = None,
        approval: RequireApproval | bool = False,
        service: str | ToolService | None = None,
    ) -> Callable[[Callable[P, R]], Tool[P, R]]:
        """Declare a tool: a function an agent's model may call, each call a durable step.

            @app.tool(side_effect="read_only", timeout=10)
            async def search(query: str, limit: int = 5) -> list[str]:
                \"\"\"Search the knowledge base.\"\"\"

        Args:
            name: the name the model calls it by (default: the function's name).
            description: what the model is told it does (default: the docstring's first
                paragraph).
            side_effect: "read_only", "idempotent" or "effectful" (the default, the safe
                assumption): effectful tools are not retried unless `retry` is given.
            timeout: seconds an attempt may run; a timeout goes back to the model.
            retry: the retry policy (default: three attempts unless effectful).
            approval: True or `RequireApproval(...)`: each call waits for a human's approval.
            service: the service the tool calls ("github", or a `ToolService` that also
                says which exceptions count as its failures and how long a call may wait for
                its rate budget). With a service gate (`Agent(services=...)` or
                `app.services`), each call goes through the service's fleet-wide circuit
                breaker and rate budget; None (the default): the tool is not guarded.
        """

        def decorate(fn: Callable[P, R]) -> Tool[P, R]:
            declared = declare(fn, name, description, retry, approval, service)
            options = ToolOptions(side_effect=side_effect, timeout=timeout, **declared)
            tool = make_tool(fn, options, self._services)
            known = self._tools.get(tool.name)
            if known is not None and known.fn is not fn:
                raise ConfigError(
                    f"two tools are named {tool.name!r}; give one another name with "
                    "@app.tool(name=...)"
                )
            self._tools[tool.name] = tool
            return tool

        return decorate

    def _services(self) -> ServiceGate | None:
        return self.services
