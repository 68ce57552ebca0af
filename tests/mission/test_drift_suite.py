"""The drift scenario suite as a CI guard: every scenario through the real stack, the targets held.

The figures and their definitions are in docs/semantic.md; `make drift` prints them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.mission.drift import suite


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[suite.Run]:
    import asyncio

    folder: Path = tmp_path_factory.mktemp("drift")
    return asyncio.run(suite.run_all(suite.load(), folder))


@pytest.mark.timeout(300)
def test_the_suite_is_large_and_covers_every_drift_kind():
    scenarios = suite.load()
    drifted = [sc for sc in scenarios if not sc.healthy]
    assert len(drifted) >= 40
    assert len(scenarios) - len(drifted) >= 40
    for kind in suite.DRIFT_KINDS:
        assert sum(1 for sc in drifted if sc.drift == kind) >= 3, kind
    assert len({sc.task.name for sc in scenarios}) >= 4


@pytest.mark.timeout(300)
def test_detection_targets(runs: list[suite.Run]):
    figures = suite.measure(runs)
    assert figures["precision"] >= 0.9
    assert figures["recall"] >= 0.9
    for kind, row in figures["by_drift"].items():
        assert row["recall"] is not None, kind
        assert row["recall"] >= 0.8, (kind, row)


@pytest.mark.timeout(300)
def test_healthy_runs_are_never_halted_and_all_close(runs: list[suite.Run]):
    healthy = [r for r in runs if r.scenario.healthy]
    assert [r.scenario.id for r in healthy if r.state != "closed"] == []
    assert [r.scenario.id for r in healthy if not r.verified] == []


@pytest.mark.timeout(300)
def test_correction_targets(runs: list[suite.Run]):
    figures = suite.measure(runs)
    assert figures["correction_success"] >= 0.7
    forbidden = [r for r in runs if r.scenario.drift == "forbidden_tool"]
    # Breaking a mission-wide rule halts before the tool runs; a phase rule blocks the call.
    for r in forbidden:
        assert r.state in ("halted", "closed"), r.scenario.id
        if r.state == "halted":
            assert "forbidden" in r.reason
            assert not set(r.ran) & {"delete_file", "send_email", "close_ticket", "add_comment"}
