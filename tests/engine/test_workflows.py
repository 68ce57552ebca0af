"""Workflows and steps: results, handles, idempotent start, typed payloads (both backends)."""

from __future__ import annotations

import asyncio
import dataclasses

import pydantic
import pytest

import tether
from tests.conftest import MakeApp


@dataclasses.dataclass
class Page:
    url: str
    size: int


class Summary(pydantic.BaseModel):
    pages: list[Page]
    total: int


async def test_async_workflow__steps_journaled_and_result_returned(app: tether.App):
    @app.step()
    async def fetch(url: str) -> Page:
        return Page(url, len(url))

    @app.workflow()
    async def digest(urls: list[str]) -> Summary:
        pages = [await fetch(u) for u in urls]
        return Summary(pages=pages, total=sum(p.size for p in pages))

    async with app:
        handle = await app.start(digest, ["a", "bbb"], id="d1")
        result = await handle.result(timeout=10)
        assert result == Summary(pages=[Page("a", 1), Page("bbb", 3)], total=4)
        assert await handle.status() == tether.Status.SUCCEEDED
        steps = await handle.steps()
    assert [(s.seq, s.name, s.status, s.attempts) for s in steps] == [
        (0, fetch.__qualname__, "ok", 1),
        (1, fetch.__qualname__, "ok", 1),
    ]
    assert steps[1].output == {"url": "bbb", "size": 3}
    assert all(s.ended_at >= s.started_at for s in steps)


async def test_sync_workflow__plain_def_steps(app: tether.App):
    @app.step()
    def add(a: int, b: int) -> int:
        return a + b

    @app.workflow()
    def total(n: int) -> int:
        acc = 0
        for i in range(n):
            acc = add(acc, i)
        return acc

    async with app:
        assert await (await app.start(total, 10)).result(timeout=10) == 45


def test_run__blocking_convenience__returns_result(app: tether.App):
    @app.workflow()
    def square(x: int) -> int:
        return x * x

    assert tether.run(app, square, 7, id="sq") == 49
    assert tether.run(app, square, 7, id="sq") == 49


async def test_async_workflow__plain_def_step_runs_inline(app: tether.App):
    @app.step()
    def double(x: int) -> int:
        return 2 * x

    @app.workflow()
    async def wf(x: int) -> int:
        return double(x) + double(x + 1)

    async with app:
        assert await (await app.start(wf, 1)).result(timeout=10) == 6


async def test_async_workflow__called_directly__runs_durably(app: tether.App):
    @app.workflow()
    async def hello(name: str) -> str:
        return f"hello {name}"

    async with app:
        assert await hello("you") == "hello you"
    assert [r.name for r in app.store.list_runs(tether_filter())] == [hello.__qualname__]


def tether_filter():
    from tether.store.base import RunFilter

    return RunFilter()


async def test_start__same_id__returns_existing_run_and_never_runs_twice(app: tether.App):
    runs = []

    @app.workflow()
    async def once(x: int) -> int:
        runs.append(x)
        return x

    async with app:
        first = await app.start(once, 1, id="same")
        assert await first.result(timeout=10) == 1
        second = await app.start(once, 1, id="same")
        assert second.id == "same"
        assert await second.result(timeout=10) == 1
    assert runs == [1]


async def test_start__same_id_other_input__raises_conflict(app: tether.App):
    @app.workflow()
    async def once(x: int) -> int:
        return x

    async with app:
        await (await app.start(once, 1, id="same")).result(timeout=10)
        with pytest.raises(tether.WorkflowConflictError, match="different input") as info:
            await app.start(once, 2, id="same")
    assert "app.retrieve('same')" in str(info.value)


async def test_start__generated_ids__are_unique(app: tether.App):
    @app.workflow()
    async def noop() -> None:
        return None

    async with app:
        handles = [await app.start(noop) for _ in range(20)]
        await asyncio.gather(*(h.result(timeout=10) for h in handles))
    assert len({h.id for h in handles}) == 20


async def test_typed_payloads__dataclass_and_model_inputs_round_trip(app: tether.App):
    seen = []

    @app.workflow()
    async def typed(page: Page, summary: Summary, *, tags: tuple[str, ...] = ()) -> Page:
        seen.append((page, summary, tags))
        return page

    async with app:
        s = Summary(pages=[Page("x", 1)], total=1)
        out = await (await app.start(typed, Page("u", 2), s, tags=("a", "b"))).result(timeout=10)
    assert out == Page("u", 2)
    assert seen == [(Page("u", 2), s, ("a", "b"))]


async def test_handle__from_client_app__follows_run_executed_by_worker(make_app: MakeApp):
    worker, client = make_app(), make_app()
    gate = asyncio.Event()

    @worker.workflow(name="slow")
    async def slow(x: int) -> int:
        await gate.wait()
        return x * 2

    async with worker:
        await worker.start(slow, 21, id="s1")
        handle = client.retrieve("s1")
        assert await handle.status() == tether.Status.RUNNING
        gate.set()
        assert await handle.result(timeout=10) == 42


async def test_client_started_run__is_claimed_and_executed_by_a_worker(make_app: MakeApp):
    client, worker = make_app(), make_app()
    for app in (client, worker):

        @app.workflow(name="greet")
        async def greet(name: str) -> str:
            return f"hi {name}"

    handle = await client.start("greet", "bo", id="g1")
    assert await handle.status() == tether.Status.PENDING
    async with worker:
        assert await handle.result(timeout=10) == "hi bo"


async def test_retrieve__unknown_id__raises_not_found(app: tether.App):
    with pytest.raises(tether.WorkflowNotFoundError, match="tether workflows list"):
        app.retrieve("nope")


async def test_result__timeout__raises_and_run_goes_on(app: tether.App):
    gate = asyncio.Event()

    @app.workflow()
    async def waits() -> int:
        await gate.wait()
        return 1

    async with app:
        handle = await app.start(waits)
        with pytest.raises(tether.ResultTimeoutError, match="goes on running"):
            await handle.result(timeout=0.05)
        gate.set()
        assert await handle.result(timeout=10) == 1


async def test_step__called_outside_workflow__is_a_plain_call(app: tether.App):
    @app.step()
    async def inc(x: int) -> int:
        return x + 1

    assert await inc(1) == 2


async def test_context__outside_workflow__raises(app: tether.App):
    with pytest.raises(tether.NotInWorkflowError):
        tether.context()

    @app.workflow()
    async def wf() -> str:
        ctx = tether.context()
        with pytest.raises(tether.NotInWorkflowError, match="inside a function decorated"):
            _ = ctx.idempotency_key
        return ctx.workflow_id

    async with app:
        assert await (await app.start(wf, id="ctx-1")).result(timeout=10) == "ctx-1"


async def test_zlib_codec__payloads_stored_compressed_and_read_back(make_app: MakeApp):
    from tether.codec import ZlibCodec

    app = make_app()
    app.codec = tether.Codec([ZlibCodec(threshold=10)], app.settings.max_payload_bytes)

    @app.step()
    async def big() -> str:
        return "x" * 5000

    @app.workflow()
    async def wf() -> str:
        return await big()

    async with app:
        handle = await app.start(wf, id="z")
        assert await handle.result(timeout=10) == "x" * 5000
    [record] = app.store.load_steps("z")
    assert record.output is not None
    assert len(record.output) < 200
