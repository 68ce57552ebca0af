"""Cancel, resume, fork and deadlines (both backends)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

import tether
from tests.conftest import MakeApp

from .helpers import eventually, journal_names, status


def define_chain(
    app: tether.App,
    ledger: Counter[str],
    gate: asyncio.Event | None,
    hold_at: int = 2,
    steps: int = 5,
) -> None:
    @app.step(name="work")
    async def work(i: int) -> int:
        ledger[f"work-{i}"] += 1
        if gate is not None and i == hold_at:
            await gate.wait()
        return i

    @app.workflow(name="chain")
    async def chain() -> list[int]:
        return [await work(i) for i in range(steps)]


async def test_cancel__stops_at_next_step_boundary(app: tether.App):
    ledger: Counter[str] = Counter()
    gate = asyncio.Event()
    define_chain(app, ledger, gate)
    async with app:
        handle = await app.start("chain", id="c")
        await eventually(lambda: ledger["work-2"] == 1, what="step 2 running")
        assert await app.cancel("c") == ["c"]
        gate.set()  # step 2 finishes; step 3 must not start
        with pytest.raises(tether.WorkflowCancelledError):
            await handle.result(timeout=10)
        await asyncio.sleep(0.1)
    assert "work-3" not in ledger
    assert status(app, "c") == "CANCELLED"
    assert [seq for seq, _, _ in journal_names(app, "c")] == [0, 1]


async def test_cancel__children_too_and_waiting_runs(make_app: MakeApp):
    app = make_app(wait_in_memory=0.05)

    @app.workflow(name="kid")
    async def kid() -> None:
        await tether.recv("never")

    @app.workflow(name="parent")
    async def parent() -> None:
        await kid()

    async with app:
        handle = await app.start(parent, id="par")
        await eventually(lambda: status(app, "par:0") == "WAITING", what="child evicted")
        await eventually(lambda: status(app, "par") == "WAITING", what="parent evicted")
        assert sorted(await app.cancel("par")) == ["par", "par:0"]
        with pytest.raises(tether.WorkflowCancelledError):
            await handle.result(timeout=10)
        assert await app.cancel("par") == []  # cancelling again changes nothing


async def test_cancel__from_another_process__worker_notices(make_app: MakeApp):
    ledger: Counter[str] = Counter()
    gate = asyncio.Event()
    worker, client = make_app(heartbeat_interval=0.1, lease_ttl=1.0), make_app()
    define_chain(worker, ledger, gate, hold_at=1)
    define_chain(client, Counter(), None)
    async with worker:
        await worker.start("chain", id="remote")
        await eventually(lambda: ledger["work-1"] == 1, what="step 1 running")
        await client.cancel("remote")
        runner = worker._worker
        assert runner is not None

        def noticed() -> bool:
            entry = runner.running.get("remote")
            return entry is None or (entry[0] is not None and entry[0].cancelled)

        await eventually(noticed, what="the worker to notice")
        gate.set()
        with pytest.raises(tether.WorkflowCancelledError):
            await client.retrieve("remote").result(timeout=10)
    assert "work-2" not in ledger


async def test_resume__cancelled_run_continues_from_journal(make_app: MakeApp):
    ledger: Counter[str] = Counter()
    first = make_app()
    gate = asyncio.Event()
    define_chain(first, ledger, gate)
    async with first:
        await first.start("chain", id="r")
        await eventually(lambda: ledger["work-2"] == 1, what="step 2 running")
        await first.cancel("r")
        gate.set()
        await eventually(lambda: "r" not in (first._worker.running if first._worker else {}))
    second = make_app()
    define_chain(second, ledger, None)
    async with second:
        handle = await second.resume("r")
        assert await handle.result(timeout=10) == [0, 1, 2, 3, 4]
    assert ledger == Counter({"work-0": 1, "work-1": 1, "work-2": 2, "work-3": 1, "work-4": 1})


async def test_resume__failed_run_retries_the_failed_step(make_app: MakeApp):
    broken = {"on": True}
    app = make_app()

    @app.step(name="flaky", retry=None)
    async def flaky() -> str:
        if broken["on"]:
            raise RuntimeError("dependency down")
        return "ok"

    @app.step(name="before")
    async def before() -> str:
        return "before"

    @app.workflow(name="w")
    async def w() -> list[str]:
        return [await before(), await flaky()]

    async with app:
        handle = await app.start(w, id="f")
        with pytest.raises(tether.WorkflowFailedError):
            await handle.result(timeout=10)
        broken["on"] = False
        await app.resume("f")
        assert await handle.result(timeout=10) == ["before", "ok"]
        with pytest.raises(tether.TetherError, match="only a CANCELLED or FAILED"):
            await app.resume("f")
    with pytest.raises(tether.WorkflowNotFoundError):
        await app.resume("nobody")


async def test_fork__keeps_journal_before_step_and_runs_rest_with_new_code(make_app: MakeApp):
    ledger: Counter[str] = Counter()
    first = make_app()
    define_chain(first, ledger, None)
    async with first:
        assert await (await first.start("chain", id="orig")).result(timeout=10) == [0, 1, 2, 3, 4]
    second = make_app()

    @second.step(name="work")
    async def work(i: int) -> int:
        ledger[f"new-{i}"] += 1
        return i * 100

    @second.workflow(name="chain")
    async def chain() -> list[int]:
        return [await work(i) for i in range(5)]

    async with second:
        fork = await second.fork("orig", 3, new_id="orig-v2")
        assert fork.id == "orig-v2"
        assert await fork.result(timeout=10) == [0, 1, 2, 300, 400]
        auto = await second.fork("orig", 0)
        assert auto.id.startswith("orig-fork-")
        assert await auto.result(timeout=10) == [0, 100, 200, 300, 400]
    assert ledger["new-3"] == 2
    assert ledger["new-0"] == 1
    with pytest.raises(tether.ConfigError, match="from_step"):
        await second.fork("orig", -1)


async def test_deadline__cancels_run_and_children_with_reason(make_app: MakeApp):
    app = make_app(wait_in_memory=0.05)

    @app.workflow(name="kid")
    async def kid() -> None:
        await tether.sleep(60)

    @app.workflow(name="slow", timeout=0.4)
    async def slow() -> None:
        await kid()

    async with app:
        handle = await app.start(slow, id="slow")
        with pytest.raises(tether.WorkflowCancelledError, match="deadline passed") as info:
            await handle.result(timeout=10)
        assert info.value.reason is not None
        await eventually(lambda: status(app, "slow:0") == "CANCELLED", what="child cancelled")


async def test_deadline__per_run_option_survives_restart(make_app: MakeApp):
    def define(app: tether.App) -> None:
        @app.workflow(name="sleeper")
        async def sleeper() -> None:
            await tether.sleep(60)

    first = make_app()
    define(first)
    async with first:
        await first.options(timeout=0.5).start("sleeper", id="s")
        row = first.store.get_run("s")
        assert row is not None
        assert row.deadline_at is not None
    second = make_app()
    define(second)
    async with second:
        with pytest.raises(tether.WorkflowCancelledError, match="deadline"):
            await second.retrieve("s").result(timeout=10)


async def test_resume__pending_or_running_run__refused(app: tether.App):
    @app.workflow(name="idle")
    async def idle() -> None:
        return None

    await app.start(idle, id="pending")  # not entered: stays PENDING
    with pytest.raises(tether.TetherError, match="PENDING"):
        await app.resume("pending")
