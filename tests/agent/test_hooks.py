"""Hooks: inject messages, block tool calls, stop the run; their decisions are journaled."""

from __future__ import annotations

from typing import Any

import pytest

import tether
from tests.conftest import MakeApp
from tether.agent import (
    AgentHooks,
    AgentState,
    AgentStoppedError,
    HookDecision,
    Message,
    StepEvent,
    ToolCall,
)
from tether.agent.providers import scripted as s

from .helpers import Toolbox, agent, define_runner


class Steering(AgentHooks):
    def __init__(self) -> None:
        self.events: list[str] = []
        self.before_model_calls = 0

    async def before_model(self, state: AgentState) -> HookDecision | None:
        self.before_model_calls += 1
        if state.model_calls == 1:
            return HookDecision(messages=(Message(role="user", content="Stay on the task."),))
        return None

    def before_tool(self, state: AgentState, call: ToolCall) -> HookDecision | None:
        if call.name == "send_email":
            return HookDecision(result="blocked: emails are not allowed in this phase")
        return None

    async def after_step(self, state: AgentState, event: StepEvent) -> HookDecision | None:
        self.events.append(f"{event.kind}:{getattr(event, 'blocked', '')}")
        return None


async def test_hooks__inject_block_and_observe_each_step(make_app: MakeApp):
    app = make_app()
    box = Toolbox(app)
    hooks = Steering()
    model = s.ScriptedProvider(
        [s.call("add", a=1, b=1), s.call("send_email", to="x", body="y"), s.reply("ok")]
    )
    define_runner(app, agent(model, box.all, hooks=[hooks]))
    async with app:
        result = await (await app.start("runner", "task", id="h1")).result(timeout=20)
    conversation = [(m["role"], m["content"]) for m in result["conversation"]]
    # The injected message comes after the tool answers, before the second model call.
    assert conversation[2:4] == [("tool", "2"), ("user", "Stay on the task.")]
    assert ("tool", "blocked: emails are not allowed in this phase") in conversation
    assert box.count("send_email") == 0
    assert hooks.events == ["model:", "tool:False", "model:", "tool:True", "model:"]
    names = [st.name for st in app.store.load_steps("h1")]
    assert names.count("hook:before_model") == 3
    assert names.count("hook:before_tool") == 2
    assert names.count("hook:after_step") == 5


class StopOnEmail(AgentHooks):
    def after_step(self, state: AgentState, event: StepEvent) -> HookDecision | None:
        if event.kind == "tool" and event.call.name == "send_email":
            return HookDecision(stop="an email went out during research")
        return None


async def test_hooks__stop_the_run_with_a_reason(make_app: MakeApp):
    app = make_app()
    box = Toolbox(app)
    model = s.ScriptedProvider([s.call("send_email", to="x", body="y"), s.reply("never")])
    define_runner(app, agent(model, box.all, hooks=[StopOnEmail()]))
    async with app:
        handle = await app.start("runner", "task", id="h2")
        with pytest.raises(tether.WorkflowFailedError) as info:
            await handle.result(timeout=20)
    error = info.value.cause
    assert isinstance(error, AgentStoppedError)
    assert error.reason == "an email went out during research"
    assert len(model.calls) == 1


class Counting(AgentHooks):
    """A hook whose answer would differ if it ran again: replay must use the journaled one."""

    def __init__(self) -> None:
        self.calls = 0

    def before_model(self, state: AgentState) -> HookDecision | None:
        self.calls += 1
        return HookDecision(messages=(Message(role="user", content=f"note {self.calls}"),))


async def test_hooks__decisions_replayed_from_the_journal_not_recomputed(make_app: MakeApp):
    app = make_app()
    box = Toolbox(app)
    hook = Counting()
    model = s.ScriptedProvider([s.call("add", a=1, b=1), s.reply("done")])
    the_agent = agent(model, box.all, hooks=[hook])
    fail_once = [1]

    @app.workflow(name="fails_after")
    async def fails_after() -> list[Any]:
        result = await the_agent.run("task")
        if fail_once:
            fail_once.pop()
            raise RuntimeError("once")
        return [m.content for m in result.conversation if m.content.startswith("note")]

    async with app:
        with pytest.raises(tether.WorkflowFailedError):
            await (await app.start(fails_after, id="h3")).result(timeout=20)
        await app.resume("h3")
        notes = await app.retrieve("h3").result(timeout=20)
    assert notes == ["note 1", "note 2"]
    assert hook.calls == 2
    assert len(model.calls) == 2


async def test_hooks__a_wrong_return_type_is_a_clear_error(make_app: MakeApp):
    class Wrong(AgentHooks):
        def before_model(self, state: AgentState) -> Any:
            return "stop please"

    app = make_app()
    define_runner(app, agent(s.ScriptedProvider([s.reply("x")]), [], hooks=[Wrong()]))
    async with app:
        handle = await app.start("runner", "task", id="h4")
        with pytest.raises(tether.WorkflowFailedError, match="return a HookDecision or None"):
            await handle.result(timeout=20)
