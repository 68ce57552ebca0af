"""Durable timers: sleep and sleep_until, in memory and evicted, across restarts."""

from __future__ import annotations

import datetime
import time

import pytest

import tether
from tests.conftest import MakeApp

from .helpers import eventually, journal_names, status


async def test_sleep__short__in_memory_and_journaled(app: tether.App):
    @app.workflow()
    async def nap() -> float:
        started = time.monotonic()
        await tether.sleep(0.15)
        return time.monotonic() - started

    async with app:
        handle = await app.start(nap, id="nap")
        assert await handle.result(timeout=10) >= 0.14
    assert journal_names(app, "nap") == [(0, "tether.sleep", "ok")]


async def test_sleep__long__evicted_then_woken_at_deadline(make_app: MakeApp):
    app = make_app(wait_in_memory=0.05)

    @app.workflow(name="long_nap")
    async def long_nap() -> str:
        await tether.sleep(0.6)
        return "awake"

    async with app:
        started = time.time()
        handle = await app.start(long_nap, id="long")
        await eventually(lambda: status(app, "long") == "WAITING", what="eviction")
        assert app._worker is not None
        assert "long" not in app._worker.running  # no coroutine, no memory
        row = app.store.get_run("long")
        assert row is not None
        assert row.owner is None
        assert row.wake_at == pytest.approx(started + 0.6, abs=0.1)
        assert await handle.result(timeout=10) == "awake"
        assert time.time() - started >= 0.6


async def test_sleep__restart_midway__wakes_at_original_deadline(make_app: MakeApp):
    def define(app: tether.App) -> None:
        @app.workflow(name="nap")
        async def nap() -> float:
            await tether.sleep(1.0)
            return time.time()

    first = make_app(wait_in_memory=5.0)
    define(first)
    async with first:
        started = time.time()
        await first.start("nap", id="n1")
        await eventually(lambda: len(first.store.load_steps("n1")) == 1, what="the deadline")
    [wait] = first.store.load_steps("n1")
    assert (wait.name, wait.status) == ("tether.sleep", "wait")
    assert wait.retry_at == pytest.approx(started + 1.0, abs=0.1)

    second = make_app()
    define(second)
    async with second:
        woke = await second.retrieve("n1").result(timeout=10)
    assert wait.retry_at is not None
    assert woke >= wait.retry_at
    assert woke < wait.retry_at + 0.8  # the original deadline, not a new one


async def test_sleep_until__aware_datetime(app: tether.App):
    @app.workflow()
    async def until(when: datetime.datetime) -> float:
        await tether.sleep_until(when)
        return time.time()

    async with app:
        target = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=0.2)
        assert await (await app.start(until, target)).result(timeout=10) >= target.timestamp()


async def test_sleep__bad_arguments_and_places__clear_errors(app: tether.App):
    @app.step()
    async def in_step() -> None:
        await tether.sleep(1)

    @app.workflow()
    async def misuse(kind: str) -> None:
        if kind == "naive":
            await tether.sleep_until(datetime.datetime(2030, 1, 1))
        elif kind == "step":
            await in_step()
        elif kind == "text":
            await tether.sleep("soon")  # type: ignore[arg-type]
        else:
            tether.sync.sleep(1)

    with pytest.raises(tether.NotInWorkflowError, match="only inside a workflow"):
        tether.sleep(1)
    async with app:
        for kind, error, words in [
            ("naive", tether.ConfigError, "timezone-aware"),
            ("step", tether.NotInWorkflowError, "not inside a step"),
            ("text", tether.ConfigError, "seconds"),
            ("sync", tether.TetherError, "plain def"),
        ]:
            with pytest.raises(tether.WorkflowFailedError) as info:
                await (await app.start(misuse, kind)).result(timeout=10)
            assert isinstance(info.value.cause, error)
            assert words in str(info.value.cause)


async def test_sync_sleep__plain_def_workflow_evicted_and_resumed(make_app: MakeApp):
    app = make_app(wait_in_memory=0.05)

    @app.step(name="tick")
    def tick(i: int) -> int:
        return i

    @app.workflow(name="def_nap")
    def def_nap() -> list[int]:
        first = tick(1)
        tether.sync.sleep(0.4)
        return [first, tick(2)]

    async with app:
        handle = await app.start(def_nap, id="dn")
        await eventually(lambda: status(app, "dn") == "WAITING", what="eviction")
        assert await handle.result(timeout=10) == [1, 2]
    assert [n for _, n, _ in journal_names(app, "dn")] == ["tick", "tether.sleep", "tick"]
