"""Missions end to end on the scripted model: verified closes, corrections, halts, the chain."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import tether
from tests.conftest import MakeApp
from tether.agent import Agent, Model
from tether.agent.providers import scripted as s
from tether.codec import Codec
from tether.mission import audit, spec
from tether.mission.correction import Policy, Strategy
from tether.mission.mission import Mission

QUICK = tether.Retry(attempts=2, initial_delay=0.01, backoff=2.0, max_delay=1.0, jitter=0.0)
OBJECTIVE = "Write report.md summarizing the quarterly revenue figures in data/sales.csv"
CONTRACT = spec.MissionSpec(
    objective=OBJECTIVE,
    phases=(
        spec.Phase(
            name="report",
            goal="read the sales data and write the revenue report",
            tools=("list_files", "read_file", "write_file"),
        ),
    ),
    final_checks=(
        spec.FileContainsCheck(path="report.md", pattern="Revenue"),
        spec.FileContainsCheck(path="report.md", pattern="1350"),
    ),
    forbidden=(spec.NeverRule(action=spec.Action(tool="delete_file")),),
)
REPORT = "Revenue by quarter: Q1 1200, Q2 1350"
READ = s.call("read_file", path="data/sales.csv")
WRITE = s.call("write_file", path="report.md", content=REPORT)
DONE = s.reply("The report is in report.md: revenue went from 1200 in Q1 to 1350 in Q2.")


def toolbox(app: tether.App, root: Path) -> list[Any]:
    @app.tool(side_effect="read_only")
    def list_files(path: str) -> str:
        """List files."""
        return "\n".join(sorted(p.name for p in (root / path).iterdir()))

    @app.tool(side_effect="read_only")
    def read_file(path: str) -> str:
        """Read a file."""
        return (root / path).read_text()

    @app.tool(side_effect="idempotent")
    def write_file(path: str, content: str) -> str:
        """Write a file."""
        (root / path).write_text(content)
        return f"wrote {len(content)} characters to {path}"

    @app.tool(side_effect="effectful")
    def delete_file(path: str) -> str:
        """Delete a file."""
        (root / path).unlink()
        return "deleted"

    @app.tool(side_effect="read_only")
    def web_search(query: str) -> str:
        """Search the web."""
        return f"results for {query}"

    return [list_files, read_file, write_file, delete_file, web_search]


def setup(
    make_app: MakeApp, tmp_path: Path, script: list[Any], recovery: Sequence[Any] = ()
) -> tether.App:
    app = make_app()
    root = tmp_path / "ws"
    (root / "data").mkdir(parents=True)
    (root / "data" / "sales.csv").write_text("quarter,revenue\nQ1,1200\nQ2,1350\n")
    provider = s.ScriptedProvider(script, recovery=recovery)
    agent = Agent(model=Model(provider, "m1"), tools=toolbox(app, root), retry=QUICK)
    mission = Mission(spec=CONTRACT, agent=agent, workspace=root)

    @app.workflow(name="job")
    async def job(task: str) -> dict[str, Any]:
        return (await mission.run(task)).model_dump(mode="json")

    return app


async def run(app: tether.App, run_id: str) -> dict[str, Any]:
    async with app:
        return await (await app.start("job", OBJECTIVE, id=run_id)).result(timeout=30)  # type: ignore[no-any-return]


def chain(app: tether.App, run_id: str) -> list[audit.Record]:
    rows, head = app.store.load_audit(f"mission/{run_id}")
    assert audit.verify(f"mission/{run_id}", rows, head, Codec()).ok
    return audit.decode(rows, Codec())


def states(records: list[audit.Record]) -> list[str]:
    return [r.data["to"] for r in records if r.kind == "transition"]


async def test_healthy_run__closes_after_verification(make_app: MakeApp, tmp_path: Path):
    app = setup(make_app, tmp_path, [READ, WRITE, DONE])
    outcome = await run(app, "m-ok")
    assert outcome["state"] == "closed"
    assert outcome["corrections"] == 0
    records = chain(app, "m-ok")
    assert states(records) == [
        "planning",
        "approved",
        "pending_execution",
        "in_progress",
        "executed",
        "verifying",
        "closed",
    ]
    verification = [r for r in records if r.kind == "verification"][-1]
    assert all(c["passed"] for c in verification.data["checks"])
    assert outcome["scores"]["action_completion"] == 1.0


async def test_false_completion__checks_fail__corrected_then_closed(
    make_app: MakeApp, tmp_path: Path
):
    app = setup(make_app, tmp_path, [READ, s.claim_done()], recovery=[WRITE, DONE])
    outcome = await run(app, "m-false")
    assert outcome["state"] == "closed"
    records = chain(app, "m-false")
    signal = next(r for r in records if r.kind == "signal")
    assert (signal.data["kind"], signal.data["rule"]) == ("completion", "unverified_claim")
    assert [r.data["action"] for r in records if r.kind == "correction"] == ["message"]
    assert "verifying" in states(records)
    assert states(records)[-3:] == ["executed", "verifying", "closed"]
    failed = next(r for r in records if r.kind == "verification").data["checks"]
    assert not any(c["passed"] for c in failed)


async def test_loop__corrective_message__recovers(make_app: MakeApp, tmp_path: Path):
    app = setup(make_app, tmp_path, [READ, READ, READ, READ], recovery=[WRITE, DONE])
    outcome = await run(app, "m-loop")
    assert outcome["state"] == "closed"
    kinds = {(r.data["kind"], r.data["rule"]) for r in chain(app, "m-loop") if r.kind == "signal"}
    assert ("loop", "repeated_action") in kinds


async def test_tool_outside_the_phase__blocked_before_it_runs(make_app: MakeApp, tmp_path: Path):
    app = setup(
        make_app, tmp_path, [s.call("web_search", query="revenue benchmarks"), READ, WRITE, DONE]
    )
    outcome = await run(app, "m-block")
    assert outcome["state"] == "closed"
    records = chain(app, "m-block")
    assert [r.data["action"] for r in records if r.kind == "correction"][:1] == ["block"]


async def test_forbidden_tool__halts_at_once_and_the_tool_never_runs(
    make_app: MakeApp, tmp_path: Path
):
    app = setup(
        make_app, tmp_path, [READ, s.call("delete_file", path="data/sales.csv"), WRITE, DONE]
    )
    outcome = await run(app, "m-halt")
    assert outcome["state"] == "halted"
    assert "boundary/forbidden" in outcome["reason"]
    assert (tmp_path / "ws" / "data" / "sales.csv").exists()
    assert states(chain(app, "m-halt"))[-1] == "halted"


async def test_repeated_drift__rollback_to_progress_with_the_next_model(
    make_app: MakeApp, tmp_path: Path
):
    # The first model claims completion twice (a message, then a rollback); the rollback's
    # strategy hands over to the second model, which does the work.
    app = make_app()
    root = tmp_path / "ws"
    (root / "data").mkdir(parents=True)
    (root / "data" / "sales.csv").write_text("quarter,revenue\nQ1,1200\nQ2,1350\n")
    first = s.ScriptedProvider([READ, s.claim_done()], recovery=[s.claim_done()], name="first")
    second = s.ScriptedProvider([], recovery=[WRITE, DONE], name="second")
    agent = Agent(
        model=[Model(first, "m1"), Model(second, "m2")], tools=toolbox(app, root), retry=QUICK
    )
    policy = Policy(
        strategies=[Strategy("next model", "Another model takes over.", rotate_models=1)]
    )
    mission = Mission(spec=CONTRACT, agent=agent, workspace=root, policy=policy)

    @app.workflow(name="job")
    async def job(task: str) -> dict[str, Any]:
        return (await mission.run(task)).model_dump(mode="json")

    outcome = await run(app, "m-rollback")
    assert outcome["state"] == "closed"
    records = chain(app, "m-rollback")
    assert [r.data["action"] for r in records if r.kind == "correction"] == ["message", "rollback"]
    resumed = [r for r in records if r.kind == "transition" and r.data["evidence"].get("strategy")]
    assert resumed[0].data["evidence"] == {"strategy": "next model", "to": 3}
    assert [c.model for c in second.calls] == ["m2", "m2"]


async def test_escalation__refused_by_a_human__halts(make_app: MakeApp, tmp_path: Path):
    app = setup(make_app, tmp_path, [READ, s.claim_done()], recovery=[s.claim_done()])
    async with app:
        handle = await app.start("job", OBJECTIVE, id="m-esc")
        for _ in range(400):
            if await app.get_event("m-esc", "approval:mission:escalation") is not None:
                break
            await asyncio.sleep(0.05)
        await app.send(
            "m-esc", "mission:escalation", {"approved": False, "by": "ana", "reason": "wrong data"}
        )
        outcome = await handle.result(timeout=30)
    assert outcome["state"] == "halted"
    assert "wrong data" in outcome["reason"]
    moves = states(chain(app, "m-esc"))
    assert moves[-2:] == ["escalated", "halted"]
    assert [r.data["action"] for r in chain(app, "m-esc") if r.kind == "correction"] == [
        "message",
        "rollback",
        "escalate",
    ]


async def test_spec_without_final_checks__refused(make_app: MakeApp):
    make_app()
    agent = Agent(model=Model(s.ScriptedProvider([DONE]), "m1"))
    with pytest.raises(tether.ConfigError, match="final_checks"):
        Mission(spec=spec.MissionSpec(objective="x"), agent=agent)
