"""Cron schedules: each tick starts exactly one run, across every process and restart.

    @app.scheduled("*/5 * * * *")
    async def poll_inbox(tick: datetime.datetime) -> None: ...

A tick's run id is the schedule's name and the tick's time (`poll_inbox@2026-11-26T09:05:00Z`),
so starting it twice finds the existing run; the newest tick started is recorded in the store
with a compare-and-set, so a restart does not start old ticks again.

Ticks missed while no worker ran are handled by the schedule's `missed` policy:

- `"latest"` (default): start only the most recent missed tick, then go on;
- `"all"`: start every missed tick (at most `MAX_CATCH_UP`), oldest first;
- `"skip"`: start none of them (a tick is missed if it is more than `GRACE` seconds old when
  a worker first sees it due).

A schedule's first tick is the first one after a worker first sees it: deploying a schedule
does not start a run for a tick that passed before.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from croniter import croniter

from tether.errors import ConfigError
from tether.store.base import Store

MAX_CATCH_UP = 100
GRACE = 60.0
Missed = Literal["latest", "all", "skip"]


@dataclasses.dataclass(frozen=True, slots=True)
class Schedule:
    """A workflow started on a cron schedule (times in UTC)."""

    name: str
    cron: str
    workflow: str
    missed: Missed = "latest"

    def __post_init__(self) -> None:
        if not croniter.is_valid(self.cron):
            raise ConfigError(
                f"schedule {self.name!r}: {self.cron!r} is not a cron expression; for example "
                "'*/5 * * * *' (every five minutes) or '0 9 * * 1-5' (9:00 on weekdays)"
            )
        if self.missed not in ("latest", "all", "skip"):
            raise ConfigError(
                f"schedule {self.name!r}: missed={self.missed!r}; use 'latest', 'all' or 'skip'"
            )

    def ticks_between(self, after: float, until: float) -> list[float]:
        """The ticks in (after, until], oldest first, at most MAX_CATCH_UP + 1 of them."""
        it = croniter(self.cron, _utc(after))
        ticks: list[float] = []
        while len(ticks) <= MAX_CATCH_UP:
            tick = float(it.get_next(float))
            if tick > until:
                break
            ticks.append(tick)
        return ticks

    def latest_at_or_before(self, when: float) -> float:
        """The most recent tick at or before `when`."""
        return float(croniter(self.cron, _utc(when + 1e-6)).get_prev(float))

    def run_id(self, tick: float) -> str:
        """The id of the run a tick starts."""
        return f"{self.name}@{_utc(tick).strftime('%Y-%m-%dT%H:%M:%SZ')}"

    def due(self, last: float | None, now: float) -> tuple[list[float], float | None]:
        """(ticks to start now, the newest tick to record) given the newest recorded one."""
        if last is None:
            return [], self.latest_at_or_before(now)
        ticks = self.ticks_between(last, now)
        if not ticks:
            return [], None
        if self.missed == "skip":
            return ticks[-1:] if now - ticks[-1] <= GRACE else [], ticks[-1]
        if self.missed == "latest":
            return ticks[-1:], ticks[-1]
        return ticks[:MAX_CATCH_UP], ticks[:MAX_CATCH_UP][-1]


StartTick = Callable[[Schedule, float], Awaitable[None]]


async def run_due(
    store: Store,
    schedules: list[Schedule],
    now: float,
    start: StartTick,
    call: Callable[..., Awaitable[Any]],
) -> None:
    """Start the due ticks of `schedules` and record them (every worker calls this).

    `call(fn, *args)` runs a blocking store method (the worker's `db`).
    """
    for schedule in schedules:
        last = await call(store.last_tick, schedule.name)
        ticks, newest = schedule.due(last, now)
        for tick in ticks:
            await start(schedule, tick)
        if newest is not None:
            await call(store.advance_schedule, schedule.name, last, newest)


def _utc(ts: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC)
