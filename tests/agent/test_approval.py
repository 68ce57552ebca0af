"""A tool that needs a human's approval waits durably; a refusal goes back to the model."""

from __future__ import annotations

import tether
from tests.conftest import MakeApp
from tether.agent import RequireApproval
from tether.agent.providers import scripted as s

from .helpers import agent, define_runner


def define(app: tether.App, refunds: list[str]) -> s.ScriptedProvider:
    @app.tool(side_effect="effectful", approval=RequireApproval(timeout=60))
    async def refund(order: str, amount: float) -> str:
        """Refund an order."""
        refunds.append(tether.context().idempotency_key)
        return f"refunded {amount} on {order}"

    model = s.ScriptedProvider([s.call("refund", order="o-7", amount=12.5), s.reply("handled")])
    define_runner(app, agent(model, [refund]))
    return model


async def test_approval__granted__the_tool_runs_once(make_app: MakeApp):
    app = make_app(wait_in_memory=0.05)  # the run is evicted while it waits
    refunds: list[str] = []
    model = define(app, refunds)
    async with app:
        handle = await app.start("runner", "refund o-7", id="ap1")
        request = await app.get_event("ap1", "approval:approve:refund", timeout=20)
        assert request == {
            "tool": "refund",
            "arguments": {"order": "o-7", "amount": 12.5},
            "call_id": "call_0_0",
        }
        await app.send("ap1", "approve:refund", {"approved": True, "by": "ana"})
        result = await handle.result(timeout=20)
    assert result["conversation"][2]["content"] == "refunded 12.5 on o-7"
    assert len(refunds) == 1
    assert len(model.calls) == 2


async def test_approval__refused__the_model_is_told_and_the_tool_never_runs(make_app: MakeApp):
    app = make_app()
    refunds: list[str] = []
    define(app, refunds)
    async with app:
        handle = await app.start("runner", "refund o-7", id="ap2")
        await app.get_event("ap2", "approval:approve:refund", timeout=20)
        await app.send("ap2", "approve:refund", {"approved": False, "by": "bo", "reason": "no"})
        result = await handle.result(timeout=20)
    answer = result["conversation"][2]["content"]
    assert answer == "error: the call to refund was not approved by bo: no"
    assert refunds == []
