"""Queues through the engine: limits, priority, partitions, dedup, restarts (both backends).

The multi-process version on PostgreSQL is tests/crash/test_queue_fleet.py.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

import tether
from tests.conftest import MakeApp

from .helpers import eventually


class Tracker:
    """Counts runs in their body at once, and the most ever."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.order: list[str] = []
        self.by_key: Counter[str] = Counter()
        self.most_by_key = 0

    def enter(self, name: str, key: str = "") -> None:
        self.now += 1
        self.most = max(self.most, self.now)
        self.order.append(name)
        self.by_key[key] += 1
        self.most_by_key = max(self.most_by_key, self.by_key[key])

    def leave(self, key: str = "") -> None:
        self.now -= 1
        self.by_key[key] -= 1


def define(app: tether.App, queue: tether.Queue, tracker: Tracker) -> None:
    app.register_queue(queue)

    @app.step(name="busy")
    async def busy(name: str, key: str) -> str:
        tracker.enter(name, key)
        await asyncio.sleep(0.03)
        tracker.leave(key)
        return name

    @app.workflow(name="job")
    async def job(name: str, key: str = "") -> str:
        return await busy(name, key)


async def test_concurrency__across_two_workers_never_exceeded(make_app: MakeApp):
    queue = tether.Queue("llm", concurrency=2)
    tracker = Tracker()
    a, b = make_app(), make_app()
    define(a, queue, tracker)
    define(b, queue, tracker)
    async with a, b:
        handles = [await a.enqueue(queue, "job", f"j{i}") for i in range(10)]
        results = [await h.result(timeout=20) for h in handles]
    assert results == [f"j{i}" for i in range(10)]
    assert tracker.most == 2


async def test_worker_concurrency__per_worker(make_app: MakeApp):
    queue = tether.Queue("local", worker_concurrency=1)
    tracker = Tracker()
    a = make_app()
    define(a, queue, tracker)
    async with a:
        handles = [await a.enqueue(queue, "job", f"j{i}") for i in range(5)]
        for h in handles:
            await h.result(timeout=20)
    assert tracker.most == 1


async def test_rate_limit__starts_spread_over_windows(make_app: MakeApp):
    queue = tether.Queue("rated", rate_limit=(2, 0.5))
    tracker = Tracker()
    a = make_app()
    define(a, queue, tracker)
    async with a:
        handles = [await a.enqueue(queue, "job", f"j{i}") for i in range(6)]
        for h in handles:
            await h.result(timeout=20)
    starts = sorted(r.started_at or 0 for r in a.store.list_runs(_all()))
    for i in range(len(starts) - 2):
        assert starts[i + 2] - starts[i] >= 0.5 - 0.01  # never 3 starts in one window


def _all():
    from tether.store.base import RunFilter

    return RunFilter(limit=1000)


async def test_priority__lower_number_first(make_app: MakeApp):
    queue = tether.Queue("prio", concurrency=1, priority=True)
    tracker = Tracker()
    a = make_app()
    define(a, queue, tracker)
    client = make_app()
    client.register_queue(queue)
    define(client, queue, Tracker())
    for name, prio in [("low", 5), ("high", 1), ("mid", 3), ("top", 0)]:
        await client.options(priority=prio).enqueue(queue, "job", name)
    async with a:
        await eventually(lambda: len(tracker.order) == 4, what="all four")
    assert tracker.order == ["top", "high", "mid", "low"]


async def test_partitions__one_run_per_key_at_once(make_app: MakeApp):
    queue = tether.Queue("chat", partition_key="key")
    tracker = Tracker()
    a = make_app()
    define(a, queue, tracker)
    async with a:
        handles = [await a.enqueue(queue, "job", f"m{i}", key=f"conv-{i % 2}") for i in range(8)]
        for h in handles:
            await h.result(timeout=20)
    assert tracker.most_by_key == 1
    assert tracker.most == 2  # the two conversations ran side by side


async def test_dedup__refused_while_unfinished(make_app: MakeApp):
    queue = tether.Queue("dedup", concurrency=1)
    a = make_app()
    define(a, queue, Tracker())
    first = await a.options(dedup_id="nightly").enqueue(queue, "job", "one")
    with pytest.raises(tether.DeduplicatedError, match="nightly") as info:
        await a.options(dedup_id="nightly").enqueue(queue, "job", "two")
    assert info.value.existing_id == first.id
    async with a:
        await first.result(timeout=10)
        again = await a.options(dedup_id="nightly").enqueue(queue, "job", "three")
        assert await again.result(timeout=10) == "three"


async def test_queue__restart_midway__limits_hold_nothing_twice(make_app: MakeApp):
    queue = tether.Queue("restart", concurrency=2)
    tracker = Tracker()
    executed: Counter[str] = Counter()

    def define_counting(app: tether.App, gate: asyncio.Event | None) -> None:
        app.register_queue(queue)

        @app.step(name="busy")
        async def busy(name: str) -> str:
            executed[name] += 1
            tracker.enter(name)
            try:
                if gate is not None:
                    await gate.wait()
                await asyncio.sleep(0.02)
            finally:
                tracker.leave()
            return name

        @app.workflow(name="job")
        async def job(name: str) -> str:
            return await busy(name)

    first = make_app()
    define_counting(first, asyncio.Event())
    handles = [await first.enqueue(queue, "job", f"j{i}") for i in range(6)]
    async with first:
        await eventually(lambda: tracker.now == 2, what="two running")
    assert tracker.most == 2
    second = make_app()
    define_counting(second, None)
    async with second:
        for h in handles:
            await second.retrieve(h.id).result(timeout=20)
    assert tracker.most == 2
    assert sum(executed.values()) == 6 + 2  # the two interrupted ones ran again, nothing else


async def test_queue__misuse__clear_errors(app: tether.App):
    @app.workflow(name="job")
    async def job() -> None:
        return None

    with pytest.raises(tether.ConfigError, match="not registered"):
        await app.enqueue("nope", job)
    plain = app.register_queue(tether.Queue("plain"))
    with pytest.raises(tether.ConfigError, match="priority=True"):
        await app.options(priority=3).enqueue(plain, job)
    with pytest.raises(tether.ConfigError, match="queued runs"):
        await app.options(dedup_id="x").start(job)
    with pytest.raises(tether.ConfigError, match="concurrency"):
        tether.Queue("bad", concurrency=0)
    with pytest.raises(tether.ConfigError, match="rate_limit"):
        tether.Queue("bad", rate_limit=(0, 1.0))
