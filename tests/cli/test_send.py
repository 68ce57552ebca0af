"""`tether send` delivers JSON messages a waiting run receives (both backends)."""

from __future__ import annotations

from typing import Any

import pytest

import tether
from tests.conftest import MakeApp
from tests.engine.helpers import eventually, status

from .helpers import ainvoke


def define_inbox(app: tether.App) -> None:
    @app.workflow(name="inbox")
    async def inbox() -> list[Any]:
        got: list[Any] = []
        while (message := await tether.recv("x")) != "stop":
            got.append(message)
        return got


async def test_send__json_values_and_a_key_twice__delivered_once_in_order(make_app: MakeApp):
    app = make_app(wait_in_memory=0.05)
    define_inbox(app)
    async with app:
        handle = await app.start("inbox", id="box")
        await eventually(lambda: status(app, "box") == "WAITING", what="evicted")

        first = await ainvoke(app, "send", "box", "x", '{"approved": true}', "--key", "k1")
        again = await ainvoke(app, "send", "box", "x", '{"approved": true}', "--key", "k1")
        number = await ainvoke(app, "send", "box", "x", "42")
        stop = await ainvoke(app, "send", "box", "x", '"stop"')

        assert [r.exit_code for r in (first, again, number, stop)] == [0, 0, 0, 0], [
            r.output for r in (first, again, number, stop)
        ]
        assert "delivered to 'box' on topic 'x'" in first.output
        assert "already delivered (same key 'k1')" in again.output
        assert await handle.result(timeout=10) == [{"approved": True}, 42]


@pytest.mark.parametrize("text", ["approved", "{'approved': True}", "NaN", ""])
async def test_send__invalid_json__exit_2_with_an_example_and_nothing_sent(
    make_app: MakeApp, text: str
):
    app = make_app(wait_in_memory=0.05)
    define_inbox(app)
    async with app:
        handle = await app.start("inbox", id="box")
        await eventually(lambda: status(app, "box") == "WAITING", what="evicted")

        result = await ainvoke(app, "send", "box", "x", text)

        assert result.exit_code == 2, result.output
        flat = " ".join(result.output.replace("│", " ").split())
        assert """for example '{"approved": true}'""" in flat
        assert (await ainvoke(app, "send", "box", "x", '"stop"')).exit_code == 0
        assert await handle.result(timeout=10) == []


async def test_send__unknown_run__exit_1_with_library_message(app: tether.App):
    app.store.migrate()
    result = await ainvoke(app, "send", "nope", "x", "1")
    assert result.exit_code == 1
    assert str(tether.WorkflowNotFoundError("nope")) in result.output
    assert app.store.get_run("nope") is None


async def test_send__finished_run__exit_1_with_library_message(make_app: MakeApp):
    app = make_app()

    @app.workflow(name="quick")
    async def quick() -> int:
        return 1

    async with app:
        await (await app.start(quick, id="done")).result(timeout=10)

    result = await ainvoke(app, "send", "done", "x", "1", "--key", "k")

    assert result.exit_code == 1
    assert str(tether.WorkflowFinishedError("done", "SUCCEEDED")) in result.output
    assert status(app, "done") == "SUCCEEDED"
