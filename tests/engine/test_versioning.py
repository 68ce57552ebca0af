"""tether.patched: new code takes a new path; runs recorded before replay the old one."""

from __future__ import annotations

import asyncio

import tether
from tests.conftest import MakeApp

from .helpers import eventually, journal_names


def define_v1(app: tether.App, gate: asyncio.Event | None) -> None:
    @app.step(name="search_v1")
    async def search_v1() -> str:
        return "v1"

    @app.step(name="hold")
    async def hold() -> None:
        if gate is not None:
            await gate.wait()

    @app.workflow(name="lookup")
    async def lookup() -> list[str]:
        found = await search_v1()
        await hold()
        return [found]


def define_v2(app: tether.App) -> None:
    @app.step(name="search_v1")
    async def search_v1() -> str:
        return "v1"

    @app.step(name="search_v2")
    async def search_v2() -> str:
        return "v2"

    @app.step(name="hold")
    async def hold() -> None:
        return None

    @app.workflow(name="lookup")
    async def lookup() -> list[str]:
        found = await search_v2() if tether.patched("search-v2") else await search_v1()
        await hold()
        return [found]


async def test_patched__old_runs_replay_old_path_new_runs_take_new(make_app: MakeApp):
    old = make_app()
    define_v1(old, asyncio.Event())
    async with old:
        await old.start("lookup", id="old-run")
        await eventually(lambda: len(old.store.load_steps("old-run")) == 1, what="v1 step")

    new = make_app()
    define_v2(new)
    async with new:
        assert await new.retrieve("old-run").result(timeout=10) == ["v1"]
        assert await (await new.start("lookup", id="new-run")).result(timeout=10) == ["v2"]
    assert [n for _, n, _ in journal_names(new, "old-run")] == ["search_v1", "hold"]
    assert [n for _, n, _ in journal_names(new, "new-run")] == [
        "tether.patch:search-v2",
        "search_v2",
        "hold",
    ]


async def test_patched__replayed_new_run_stays_on_new_path(make_app: MakeApp):
    first = make_app()
    define_v2(first)
    async with first:
        await (await first.start("lookup", id="n")).result(timeout=10)
    steps = first.store.load_steps("n")
    again = make_app()
    define_v2(again)
    async with again:
        # fork from the end: the whole journal replays, the marker included
        fork = await again.fork("n", len(steps))
        assert await fork.result(timeout=10) == ["v2"]
