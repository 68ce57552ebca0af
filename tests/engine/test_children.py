"""Children, gather and waiting on other runs: deterministic positions across restarts."""

from __future__ import annotations

import asyncio
from collections import Counter

import tether
from tests.conftest import MakeApp

from .helpers import eventually, journal_names, status


async def test_child__called_directly__started_once_and_awaited(app: tether.App):
    @app.workflow(name="square")
    async def square(x: int) -> int:
        return x * x

    @app.workflow(name="parent")
    async def parent(xs: list[int]) -> int:
        return sum([await square(x) for x in xs])

    async with app:
        assert await (await app.start(parent, [1, 2, 3], id="p")).result(timeout=10) == 14
    kids = {r.id: r for r in app.store.list_runs(tether_filter()) if r.parent_id == "p"}
    assert sorted(kids) == ["p:0", "p:2", "p:4"]  # start at n, await at n + 1
    assert [n for _, n, _ in journal_names(app, "p")] == ["tether.start_child", "tether.result"] * 3


def tether_filter():
    from tether.store.base import RunFilter

    return RunFilter(limit=1000)


async def test_child__started_not_awaited__runs_on_its_own(app: tether.App):
    @app.workflow(name="note")
    async def note(text: str) -> str:
        return text.upper()

    @app.workflow(name="fire")
    async def fire() -> str:
        handle = await app.start(note, "hi")
        return handle.id

    async with app:
        child_id = await (await app.start(fire, id="f")).result(timeout=10)
        assert child_id == "f:0"
        assert await app.retrieve(child_id).result(timeout=10) == "HI"


async def test_child__failure__raised_in_parent_with_cause(app: tether.App):
    @app.workflow(name="broken")
    async def broken() -> None:
        raise ValueError("child says no")

    @app.workflow(name="careful")
    async def careful() -> str:
        try:
            await broken()
        except tether.WorkflowFailedError as exc:
            return f"{type(exc.cause).__name__}: {exc.cause}"
        return "no error"

    async with app:
        result = await (await app.start(careful, id="c")).result(timeout=10)
    assert result == "ValueError: child says no"


async def test_gather__steps_and_children_in_parallel(app: tether.App):
    @app.step(name="slow")
    async def slow(x: int) -> int:
        await asyncio.sleep(0.05)
        return x

    @app.workflow(name="kid")
    async def kid(x: int) -> int:
        return x * 10

    @app.workflow(name="fan")
    async def fan() -> list[int]:
        return await tether.gather(slow(1), kid(2), slow(3), kid(4))

    async with app:
        assert await (await app.start(fan, id="fan")).result(timeout=10) == [1, 20, 3, 40]


async def test_gather__restart_midway__same_positions_completed_work_kept(make_app: MakeApp):
    runs: Counter[str] = Counter()

    def define(app: tether.App, gate: asyncio.Event | None) -> None:
        @app.step(name="work")
        async def work(x: int) -> int:
            runs[f"work-{x}"] += 1
            if gate is not None and x % 2:
                await gate.wait()  # odd ones hang in the first process
            return x

        @app.workflow(name="branches")
        async def branches() -> list[int]:
            return await tether.gather(*(work(x) for x in range(6)))

    first = make_app()
    define(first, asyncio.Event())
    async with first:
        await first.start("branches", id="br")
        await eventually(lambda: len(first.store.load_steps("br")) == 3, what="even steps")
    second = make_app()
    define(second, None)
    async with second:
        assert await second.retrieve("br").result(timeout=10) == list(range(6))
    assert runs == Counter(
        {"work-0": 1, "work-2": 1, "work-4": 1, "work-1": 2, "work-3": 2, "work-5": 2}
    )
    assert [s.seq for s in second.store.load_steps("br")] == list(range(6))


async def test_await_other_run__durable_evicted_and_woken(make_app: MakeApp):
    app = make_app(wait_in_memory=0.05)

    @app.workflow(name="slowpoke")
    async def slowpoke() -> str:
        await tether.recv("go")
        return "done"

    @app.workflow(name="watcher")
    async def watcher(target: str) -> str:
        result = await app.retrieve(target).result()
        return f"saw {result}"

    async with app:
        await app.start(slowpoke, id="target")
        watch = await app.start(watcher, "target", id="watch")
        await eventually(lambda: status(app, "watch") == "WAITING", what="watcher evicted")
        await app.send("target", "go", True)
        assert await watch.result(timeout=10) == "saw done"
    assert [n for _, n, _ in journal_names(app, "watch")] == ["tether.result"]


async def test_await_other_run__timeout_journaled(app: tether.App):
    @app.workflow(name="forever")
    async def forever() -> None:
        await tether.recv("never")

    @app.workflow(name="impatient")
    async def impatient(target: str) -> str:
        try:
            await app.retrieve(target).result(timeout=0.2)
        except tether.ResultTimeoutError:
            return "gave up"
        return "finished"

    async with app:
        await app.start(forever, id="fv")
        assert await (await app.start(impatient, "fv", id="imp")).result(timeout=10) == "gave up"
        await app.cancel("fv")


async def test_child__restart_after_start_before_result__same_child(make_app: MakeApp):
    def define(app: tether.App, gate: asyncio.Event | None) -> None:
        @app.step(name="hold")
        async def hold() -> None:
            if gate is not None:
                await gate.wait()

        @app.workflow(name="kid")
        async def kid() -> str:
            await hold()
            return "kid done"

        @app.workflow(name="mom")
        async def mom() -> str:
            return await kid()

    first = make_app()
    define(first, asyncio.Event())
    async with first:
        await first.start("mom", id="mom")
        await eventually(lambda: status(first, "mom:0") == "RUNNING", what="the child")
    second = make_app()
    define(second, None)
    async with second:
        assert await second.retrieve("mom").result(timeout=10) == "kid done"
    ids = [r.id for r in second.store.list_runs(tether_filter())]
    assert sorted(ids) == ["mom", "mom:0"]


def test_gather__outside_workflow_is_plain_asyncio():
    async def one() -> int:
        return 1

    assert asyncio.run(tether.gather(one(), one())) == [1, 1]


async def test_start_child__inside_step__is_a_normal_start(app: tether.App):
    @app.workflow(name="leaf")
    async def leaf() -> int:
        return 7

    @app.step(name="launcher")
    async def launcher() -> str:
        return (await app.start(leaf, id="from-step")).id

    @app.workflow(name="root")
    async def root() -> str:
        return await launcher()

    async with app:
        assert await (await app.start(root)).result(timeout=10) == "from-step"
        assert await app.retrieve("from-step").result(timeout=10) == 7
        row = app.store.get_run("from-step")
        assert row is not None
        assert row.parent_id is None


async def test_gather__no_eviction_while_a_branch_runs_a_step(make_app: MakeApp):
    app = make_app(wait_in_memory=0.05)
    gate = asyncio.Event()
    done: list[str] = []

    @app.step(name="long")
    async def long() -> str:
        await gate.wait()
        done.append("long")
        return "long"

    @app.workflow(name="mixed")
    async def mixed() -> list[object]:
        return await tether.gather(long(), tether.recv("go"))

    async with app:
        handle = await app.start(mixed, id="mx")
        await asyncio.sleep(0.3)  # well past wait_in_memory: the step keeps the run in memory
        assert status(app, "mx") == "RUNNING"
        gate.set()
        await eventually(lambda: status(app, "mx") == "WAITING", what="eviction after the step")
        await app.send("mx", "go", 1)
        assert await handle.result(timeout=10) == ["long", 1]
    assert done == ["long"]  # the step ran once: replay returned its journaled result
