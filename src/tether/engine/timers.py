"""Durable timers: `tether.sleep` and `tether.sleep_until`.

The wake-up time is journaled before the workflow starts waiting, so a run resumed after a
restart wakes at the original deadline, not at a new one. A long sleep evicts the run from
memory; the store wakes it when the time comes.
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable

from tether.engine import checks
from tether.engine.context import Wait
from tether.engine.waiting import Position, execution, wait_async, wait_sync
from tether.errors import TetherError

NAME = "tether.sleep"


def sleep(seconds: float | datetime.timedelta) -> Awaitable[None]:
    """Pause the workflow durably for `seconds` (a number or a `timedelta`).

        await tether.sleep(60)
        await tether.sleep(datetime.timedelta(days=1))

    In a plain `def` workflow use `tether.sync.sleep`.
    """
    pos = _position("tether.sleep()")
    return _sleep(pos, pos.started_at + _seconds(seconds))


def sleep_until(when: datetime.datetime) -> Awaitable[None]:
    """Pause the workflow durably until `when` (a timezone-aware datetime)."""
    pos = _position("tether.sleep_until()")
    return _sleep(pos, _timestamp(when))


def sleep_blocking(seconds: float | datetime.timedelta) -> None:
    """`sleep` for plain `def` workflows: blocks the workflow's thread (or evicts it)."""
    pos = _position("tether.sync.sleep()", blocking=True)
    _sleep_blocking(pos, pos.started_at + _seconds(seconds))


def sleep_until_blocking(when: datetime.datetime) -> None:
    """`sleep_until` for plain `def` workflows."""
    pos = _position("tether.sync.sleep_until()", blocking=True)
    _sleep_blocking(pos, _timestamp(when))


async def _sleep(pos: Position, deadline: float) -> None:
    prior = pos.replay()
    if pos.final(prior):
        return
    if prior is not None and prior.retry_at is not None:
        deadline = prior.retry_at  # the deadline journaled before a restart
    else:
        await pos.acommit(pos.entry(None, waiting=True, waiting_until=deadline))
    await wait_async(pos, Wait(deadline=deadline), _never)
    await pos.acommit(pos.entry(b"null"))


def _sleep_blocking(pos: Position, deadline: float) -> None:
    prior = pos.replay()
    if pos.final(prior):
        return
    if prior is not None and prior.retry_at is not None:
        deadline = prior.retry_at
    else:
        pos.commit(pos.entry(None, waiting=True, waiting_until=deadline))
    wait_sync(pos, Wait(deadline=deadline), lambda: (False, None))
    pos.commit(pos.entry(b"null"))


async def _never() -> tuple[bool, None]:
    return False, None


def _position(what: str, *, blocking: bool = False) -> Position:
    ex = execution(what)
    if ex.is_async == blocking:
        kind = "a plain def" if blocking else "an async def"
        raise TetherError(
            f"{what} cannot be used in {'an async def' if blocking else 'a plain def'} "
            f"workflow; use the variant for {kind} workflows "
            "(tether.sleep in async workflows, tether.sync.sleep in plain def ones)"
        )
    return Position(ex, NAME)


def _seconds(value: float | datetime.timedelta) -> float:
    return checks.seconds(value, "a duration")


def _timestamp(when: datetime.datetime) -> float:
    return checks.aware(when, "sleep_until's time").timestamp()
