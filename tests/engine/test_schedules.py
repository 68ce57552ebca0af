"""Cron schedules: one run per tick across workers and restarts; missed-tick policies."""

from __future__ import annotations

import asyncio
import datetime

import pytest

import tether
from tests.conftest import MakeApp
from tether.clock import FakeClock
from tether.engine.schedules import Schedule
from tether.store.base import RunFilter

TICK = 1_800_000_000.0  # a multiple of 300: a five-minute boundary


def test_due__first_sight_records_latest_without_starting_it():
    s = Schedule("s", "*/5 * * * *", "wf")
    assert s.due(None, TICK + 10) == ([], TICK)
    assert s.due(TICK, TICK + 299) == ([], None)
    assert s.due(TICK, TICK + 300) == ([TICK + 300], TICK + 300)


@pytest.mark.parametrize(
    ("missed", "expected"),
    [("latest", [TICK]), ("all", [TICK - 900, TICK - 600, TICK - 300, TICK]), ("skip", [TICK])],
)
def test_due__missed_ticks_policies(missed, expected):
    s = Schedule("s", "*/5 * * * *", "wf", missed=missed)
    ticks, newest = s.due(TICK - 1200, TICK + 5)
    assert (ticks, newest) == (expected, TICK)
    long_ago = s.due(TICK - 1200, TICK + 200)
    assert long_ago[1] == TICK
    if missed == "skip":
        assert long_ago[0] == []  # the newest tick is 200 s old: missed, skipped


def test_schedule__bad_cron_or_policy__config_error():
    with pytest.raises(tether.ConfigError, match="cron expression"):
        Schedule("s", "every morning", "wf")
    with pytest.raises(tether.ConfigError, match="missed"):
        Schedule("s", "* * * * *", "wf", missed="sometimes")  # type: ignore[arg-type]


def define(app: tether.App, seen: list[str]) -> None:
    @app.scheduled("*/5 * * * *", name="report")
    async def report(tick: datetime.datetime) -> str:
        seen.append(tick.isoformat())
        return tick.isoformat()


async def test_scheduled__each_tick_once_across_workers_and_restarts(make_app: MakeApp):
    seen: list[str] = []
    apps = [make_app(poll_interval=60.0) for _ in range(3)]
    for app in apps:
        define(app, seen)
    clock = FakeClock(TICK + 1)
    async with apps[0], apps[1]:
        for app in apps[:2]:
            assert app._worker is not None
            app._worker.clock = clock  # type: ignore[assignment]
        # First sight: the current tick is recorded, not started.
        await asyncio.gather(*(a._worker._upkeep() for a in apps[:2] if a._worker))
        assert _runs(apps[0]) == []
        clock.advance(300)  # the next tick is due: both workers see it at once
        await asyncio.gather(*(a._worker._upkeep() for a in apps[:2] if a._worker))
        assert _runs(apps[0]) == ["report@2027-01-15T08:05:00Z"]
        await apps[0].retrieve("report@2027-01-15T08:05:00Z").result(timeout=10)
    async with apps[2]:  # a restart: the tick is not started again
        assert apps[2]._worker is not None
        apps[2]._worker.clock = clock  # type: ignore[assignment]
        await apps[2]._worker._upkeep()
        assert _runs(apps[2]) == ["report@2027-01-15T08:05:00Z"]
        clock.advance(300)
        await apps[2]._worker._upkeep()
        assert len(_runs(apps[2])) == 2
        for run_id in _runs(apps[2]):
            await apps[2].retrieve(run_id).result(timeout=10)
    assert seen == ["2027-01-15T08:05:00+00:00", "2027-01-15T08:10:00+00:00"]


def _runs(app: tether.App) -> list[str]:
    return sorted(r.id for r in app.store.list_runs(RunFilter(name="report")))
