"""Shared pieces of the agent tests: a small toolbox and quick retry policies."""

from __future__ import annotations

from typing import Any

import tether
from tether.agent import Agent, Model
from tether.agent.providers import scripted as s

QUICK = tether.Retry(attempts=3, initial_delay=0.01, backoff=2.0, max_delay=5.0, jitter=0.0)


class Toolbox:
    """Tools registered on a test's app; every execution is counted."""

    def __init__(self, app: tether.App) -> None:
        self.runs: list[tuple[str, Any]] = []
        self.keys: list[str] = []
        runs, keys = self.runs, self.keys

        @app.tool(side_effect="read_only")
        async def add(a: int, b: int) -> int:
            """Add two integers."""
            runs.append(("add", (a, b)))
            return a + b

        @app.tool(side_effect="effectful")
        def send_email(to: str, body: str) -> str:
            """Send an email (plain def: runs in a thread)."""
            keys.append(tether.context().idempotency_key)
            runs.append(("send_email", to))
            return f"sent to {to}"

        @app.tool(side_effect="read_only", retry=tether.Retry.never())
        async def explode(reason: str) -> str:
            """Always fails."""
            runs.append(("explode", reason))
            raise RuntimeError(f"kaboom: {reason}")

        self.add, self.send_email, self.explode = add, send_email, explode

    @property
    def all(self) -> list[Any]:
        return [self.add, self.send_email, self.explode]

    def count(self, name: str) -> int:
        return sum(1 for n, _ in self.runs if n == name)


def agent(provider: s.ScriptedProvider, tools: list[Any], **options: Any) -> Agent:
    options.setdefault("retry", QUICK)
    return Agent(model=Model(provider, "m1"), tools=tools, **options)


def define_runner(app: tether.App, the_agent: Agent, name: str = "runner") -> None:
    """A workflow that runs the agent and returns the whole result."""

    @app.workflow(name=name)
    async def runner(task: str) -> dict[str, Any]:
        result = await the_agent.run(task)
        return result.model_dump(mode="json")
