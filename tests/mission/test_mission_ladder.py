"""Regression tests for how the mission climbs its correction ladder and moves through phases."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import MakeApp
from tether.mission import checks, spec
from tether.mission.trace import Event
from tether.mission.watch import Watcher

from .test_mission import DONE, READ, WRITE, chain, run, setup


async def test_a_loop_seen_again_before_the_model_answers__one_correction(
    make_app: MakeApp, tmp_path: Path
):
    # The third identical call is corrected by a message before it runs; its result (the same
    # observation a third time) comes before the model has read that message: it is noted,
    # not escalated to a rollback.
    app = setup(make_app, tmp_path, [READ, READ, READ, READ], recovery=[WRITE, DONE])
    outcome = await run(app, "m-ladder")
    assert outcome["state"] == "closed"
    records = chain(app, "m-ladder")
    acted = [r.data["action"] for r in records if r.kind == "correction"]
    assert acted.count("message") == 1
    assert "rollback" not in acted
    assert ("loop", "same_observation") in {
        (r.data["kind"], r.data["rule"]) for r in records if r.kind == "signal"
    }


def test_one_result_completes_at_most_the_current_phase():
    # Both phases' checks pass after one result; the agent enters the second phase, not the
    # third: it has yet to do the second phase's work with its tools.
    contract = spec.MissionSpec(
        objective="x",
        phases=(
            spec.Phase(name="a", acceptance=(spec.RegexCheck(pattern="."),)),
            spec.Phase(name="b", acceptance=(spec.RegexCheck(pattern="."),)),
            spec.Phase(name="c"),
        ),
        final_checks=(spec.RegexCheck(pattern="."),),
    )
    watcher = Watcher(
        contract, checker=lambda to_run, output: [checks.CheckResult("ok", True) for _ in to_run]
    )
    watcher.observe([Event(step=1, kind="tool_result", text="done", tool="t")])
    assert watcher.view.phase is not None
    assert watcher.view.phase.name == "b"
    watcher.observe([Event(step=2, kind="tool_result", text="done again", tool="t")])
    assert watcher.view.phase.name == "c"
