"""Messages, events and approvals: exactly once, in order, across evictions and restarts."""

from __future__ import annotations

import asyncio
import time

import pytest

import tether
from tests.conftest import MakeApp

from .helpers import eventually, journal_names, status


def define_inbox(app: tether.App, n: int = 3, topic: str = "in") -> None:
    @app.workflow(name="inbox")
    async def inbox() -> list[object]:
        return [await tether.recv(topic) for _ in range(n)]


async def test_recv__messages_before_during_and_after_eviction__in_order_once(
    make_app: MakeApp,
):
    app = make_app(wait_in_memory=0.05)
    define_inbox(app, n=3)
    async with app:
        await app.send(await _started(app, "ib"), "in", {"n": 1})  # before it asks
        handle = app.retrieve("ib")
        await eventually(lambda: status(app, "ib") == "WAITING", what="eviction")
        await app.send("ib", "in", {"n": 2})  # wakes the evicted run
        await eventually(lambda: len(app.store.load_steps("ib")) >= 3, what="second message")
        await app.send("ib", "in", {"n": 3})
        assert await handle.result(timeout=10) == [{"n": 1}, {"n": 2}, {"n": 3}]


async def _started(app: tether.App, run_id: str) -> str:
    await app.start("inbox", id=run_id)
    return run_id


async def test_recv__order_per_topic_and_other_topics_untouched(app: tether.App):
    @app.workflow(name="two_topics")
    async def two_topics() -> list[object]:
        a = [await tether.recv("a") for _ in range(3)]
        b = await tether.recv("b")
        return [*a, b]

    async with app:
        handle = await app.start(two_topics, id="tt")
        for i, topic in enumerate(["b", "a", "a", "b", "a"]):
            await app.send("tt", topic, i)
        assert await handle.result(timeout=10) == [1, 2, 4, 0]


async def test_recv__timeout_returns_none_and_deadline_survives_restart(make_app: MakeApp):
    def define(app: tether.App) -> None:
        @app.workflow(name="patient")
        async def patient() -> tuple[object, float]:
            reply = await tether.recv("answer", timeout=0.8)
            return reply, time.time()

    first = make_app(wait_in_memory=5.0)
    define(first)
    async with first:
        await first.start("patient", id="p")
        await eventually(lambda: len(first.store.load_steps("p")) == 1, what="the wait entry")
    [wait] = first.store.load_steps("p")
    assert (wait.name, wait.status) == ("tether.recv", "wait")
    second = make_app()
    define(second)
    async with second:
        reply, ended = await second.retrieve("p").result(timeout=10)
    assert reply is None
    assert wait.retry_at is not None
    assert wait.retry_at <= ended < wait.retry_at + 0.8


async def test_recv__restart_midway__message_sent_while_no_worker_runs(make_app: MakeApp):
    first = make_app(wait_in_memory=5.0)
    define_inbox(first, n=1)
    async with first:
        await first.start("inbox", id="lonely")
        await eventually(lambda: len(first.store.load_steps("lonely")) == 1, what="the wait")
    client = make_app()
    define_inbox(client, n=1)
    await client.send("lonely", "in", "hello")  # nobody executes the run right now
    second = make_app()
    define_inbox(second, n=1)
    async with second:
        assert await second.retrieve("lonely").result(timeout=10) == ["hello"]


async def test_send__unknown_finished_and_duplicate_key(app: tether.App):
    define_inbox(app, n=1)
    with pytest.raises(tether.WorkflowNotFoundError):
        await app.send("nobody", "in", 1)
    async with app:
        handle = await app.start("inbox", id="once")
        assert await app.send("once", "in", "x", key="k1")
        assert not await app.send("once", "in", "x", key="k1")
        assert await handle.result(timeout=10) == ["x"]
        with pytest.raises(tether.WorkflowFinishedError, match="SUCCEEDED"):
            await app.send("once", "in", "late")
        with pytest.raises(tether.ConfigError, match="topic"):
            await app.send("once", "", "x")


async def test_events__progress_visible_outside_latest_wins(make_app: MakeApp):
    app, client = make_app(), make_app()
    gate = asyncio.Event()

    @app.workflow(name="progress")
    async def progress() -> None:
        await tether.set_event("progress", {"done": 1})
        await gate.wait()
        await tether.set_event("progress", {"done": 2})

    async with app:
        await app.start(progress, id="pg")
        assert await client.get_event("pg", "progress", timeout=10) == {"done": 1}
        assert await client.get_event("pg", "missing", timeout=0.1) is None
        gate.set()
        await app.retrieve("pg").result(timeout=10)
    assert await client.get_event("pg", "progress") == {"done": 2}
    with pytest.raises(tether.WorkflowNotFoundError):
        await client.get_event("nobody", "progress", timeout=0.1)


async def test_events__replay_does_not_set_again(make_app: MakeApp):
    calls: list[int] = []

    def define(app: tether.App, gate: asyncio.Event | None) -> None:
        @app.step(name="hold")
        async def hold() -> None:
            if gate is not None:
                await gate.wait()

        @app.workflow(name="evented")
        async def evented() -> None:
            calls.append(1)
            await tether.set_event("stage", "one")
            await hold()
            await tether.set_event("stage", "two")

    first = make_app()
    define(first, asyncio.Event())
    async with first:
        await first.start("evented", id="ev")
        await eventually(lambda: first.store.get_event("ev", "stage") is not None)
    second = make_app()
    define(second, None)
    async with second:
        await second.retrieve("ev").result(timeout=10)
    assert [n for _, n, _ in journal_names(second, "ev")] == [
        "tether.set_event",
        "hold",
        "tether.set_event",
    ]
    assert calls == [1, 1]
    assert await second.get_event("ev", "stage") == "two"


async def test_request_approval__approved_refused_and_timed_out(make_app: MakeApp):
    app = make_app(wait_in_memory=0.05)

    @app.workflow(name="refund")
    async def refund(amount: int, wait: float) -> str:
        answer = await tether.request_approval("refund", {"amount": amount}, timeout=wait)
        if answer.timed_out:
            return "no answer"
        return f"{'approved' if answer.approved else 'refused'} by {answer.by}"

    async with app:
        yes = await app.start(refund, 120, 30.0, id="yes")
        no = await app.start(refund, 500, 30.0, id="no")
        silent = await app.start(refund, 5, 0.3, id="silent")
        assert await app.get_event("yes", "approval:refund", timeout=10) == {"amount": 120}
        await eventually(lambda: status(app, "yes") == "WAITING", what="eviction")
        await app.send("yes", "refund", {"approved": True, "by": "ana"})
        await app.send("no", "refund", {"approved": False, "by": "bo", "reason": "too much"})
        assert await yes.result(timeout=10) == "approved by ana"
        assert await no.result(timeout=10) == "refused by bo"
        assert await silent.result(timeout=10) == "no answer"


async def test_sync_recv__plain_def_workflow(make_app: MakeApp):
    app = make_app(wait_in_memory=0.05)

    @app.workflow(name="def_inbox")
    def def_inbox() -> list[object]:
        tether.sync.set_event("ready", True)
        return [tether.sync.recv("in"), tether.sync.recv("in", timeout=0.2)]

    async with app:
        handle = await app.start(def_inbox, id="di")
        assert await app.get_event("di", "ready", timeout=10) is True
        await eventually(lambda: status(app, "di") == "WAITING", what="eviction")
        await app.send("di", "in", "first")
        assert await handle.result(timeout=10) == ["first", None]
