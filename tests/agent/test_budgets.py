"""Budgets: steps, tokens, cost and wall time each stop the run with a named error."""

from __future__ import annotations

import asyncio

import pytest

import tether
from tests.conftest import MakeApp
from tether.agent import Agent, AgentHooks, Budget, BudgetExceededError, Model, Price, Usage
from tether.agent.providers import scripted as s

from .helpers import QUICK, Toolbox, define_runner


async def failure_of(app: tether.App, run_id: str) -> BaseException:
    async with app:
        handle = await app.start("runner", "task", id=run_id)
        with pytest.raises(tether.WorkflowFailedError) as info:
            await handle.result(timeout=30)
    return info.value.cause


def looping(usage: Usage | None = None) -> s.ScriptedProvider:
    turn = s.Turn(tool_calls=(("add", {"a": 1, "b": 1}),), usage=usage)
    return s.ScriptedProvider(s.loop(turn, 50))


async def test_steps_budget__stops_a_looping_agent(make_app: MakeApp):
    app = make_app()
    box = Toolbox(app)
    model = looping()
    define_runner(app, Agent(model=Model(model, "m"), tools=box.all, budget=Budget(max_steps=5)))
    error = await failure_of(app, "steps")
    assert isinstance(error, BudgetExceededError)
    assert (error.budget, error.limit, error.used) == ("steps", 5, 5)
    assert "steps budget is spent: used 5 of 5" in str(error)
    assert len(model.calls) == 3  # model, tool, model, tool, model: the sixth step is refused
    assert box.count("add") == 2


async def test_tokens_budget__stops_after_the_call_that_went_over(make_app: MakeApp):
    app = make_app()
    box = Toolbox(app)
    model = looping(Usage(input_tokens=100, output_tokens=50))
    budget = Budget(max_tokens=400)
    define_runner(app, Agent(model=Model(model, "m"), tools=box.all, budget=budget))
    error = await failure_of(app, "tokens")
    assert isinstance(error, BudgetExceededError)
    assert (error.budget, error.limit, error.used) == ("tokens", 400, 450)
    assert len(model.calls) == 3


async def test_cost_budget__priced_per_million_tokens(make_app: MakeApp):
    app = make_app()
    box = Toolbox(app)
    model = looping(Usage(input_tokens=200_000, output_tokens=100_000))
    price = Price(input=2.0, output=10.0)  # 0.4 + 1.0 = 1.4 per call
    the_agent = Agent(
        model=Model(model, "m", price=price), tools=box.all, budget=Budget(max_cost=3.0)
    )
    define_runner(app, the_agent)
    error = await failure_of(app, "cost")
    assert isinstance(error, BudgetExceededError)
    assert error.budget == "cost"
    assert error.used == pytest.approx(4.2)
    assert len(model.calls) == 3


def test_cost_budget__needs_a_price_for_every_model():
    model = s.ScriptedProvider([])
    with pytest.raises(tether.ConfigError, match="needs a price"):
        Agent(model=Model(model, "m"), budget=Budget(max_cost=1.0))
    priced = Agent(model="scripted:m", providers=[model], prices={"scripted:m": Price(1, 1)})
    assert priced.chain[0].price == Price(1, 1)


class FailOnce(AgentHooks):
    """Fails the run at the second model call, once (the process 'crashes' there)."""

    def __init__(self) -> None:
        self.calls = 0
        self.failed = False

    def before_model(self, state):
        self.calls += 1
        if state.model_calls == 1 and not self.failed:
            self.failed = True
            raise RuntimeError("stopped midway")
        return None


async def test_time_budget__measured_from_the_journaled_start_across_a_resume(
    make_app: MakeApp,
):
    app = make_app()
    box = Toolbox(app)
    model = s.ScriptedProvider([s.call("add", a=1, b=2), s.reply("done")])
    the_agent = Agent(
        model=Model(model, "m"),
        tools=box.all,
        budget=Budget(max_time=0.5),
        hooks=[FailOnce()],
        retry=QUICK,
    )
    define_runner(app, the_agent)
    async with app:
        handle = await app.start("runner", "task", id="time")
        with pytest.raises(tether.WorkflowFailedError, match="stopped midway"):
            await handle.result(timeout=30)
        await asyncio.sleep(0.6)  # the budget runs out while the run stands still
        await app.resume("time")
        with pytest.raises(tether.WorkflowFailedError) as info:
            await app.retrieve("time").result(timeout=30)
    error = info.value.cause
    assert isinstance(error, BudgetExceededError)
    assert error.budget == "time"
    assert error.used > 0.5
    assert len(model.calls) == 1  # the recorded call replayed; the next one was refused
    assert box.count("add") == 1


def test_budget__rejects_non_positive_limits():
    with pytest.raises(tether.ConfigError, match="max_steps"):
        Budget(max_steps=0)
