"""Hostile payloads, on both databases: stored exactly, or refused with a named error.

10 MB strings, NUL characters, lone surrogates, 10,000-deep nesting, NaN and the infinities,
as workflow inputs, step results, workflow results, messages and events. Each is either
refused (at start, at send, or failing the run with the error recorded) with a named
`TetherError`, or round-trips exactly; no run is ever left in a non-final state.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import pytest

import tether
from tests.conftest import MakeApp

pytestmark = pytest.mark.timeout(180)

BIG = "x" * 10_000_000


def _deep(depth: int) -> list[Any]:
    root: list[Any] = []
    cur = root
    for _ in range(depth):
        nxt: list[Any] = []
        cur.append(nxt)
        cur = nxt
    return root


VALUES: dict[str, Any] = {
    "big": BIG,
    "nul": {"text": "a\x00b\x00", "\x00key": "\x00"},
    "surrogate": ["ok", "\ud800 alone"],
    "deep": _deep(10_000),
    "nan": {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "list": [math.nan, 1.5]},
}
REFUSED: dict[str, type[tether.TetherError] | None] = {
    "big": tether.PayloadTooLargeError,
    "nul": None,
    "surrogate": tether.SerializationError,
    "deep": tether.SerializationError,
    "nan": None,
}
KINDS = list(VALUES)


def same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN (the exact round trip the test asks for)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def define(app: tether.App) -> None:
    @app.step(name="give")
    async def give(kind: str) -> Any:
        return VALUES[kind]

    @app.workflow(name="takes")
    async def takes(value: Any, kind: str) -> bool:
        return same(value, VALUES[kind])

    @app.workflow(name="as_step")
    async def as_step(kind: str) -> bool:
        return same(await give(kind), VALUES[kind])

    @app.workflow(name="as_result")
    async def as_result(kind: str) -> Any:
        return VALUES[kind]

    @app.workflow(name="inbox")
    async def inbox(kind: str) -> bool:
        return same(await tether.recv("in", timeout=60), VALUES[kind])

    @app.workflow(name="publish")
    async def publish(kind: str) -> str:
        try:
            await tether.set_event("e", VALUES[kind])
        except tether.TetherError as exc:
            return type(exc).__name__
        return "set"


async def final(app: tether.App, run_id: str) -> tether.Status:
    """The run's status once it has ended (waits for it); never a non-final one."""
    handle = app.retrieve(run_id)
    with contextlib.suppress(tether.WorkflowFailedError):
        await handle.result(timeout=60)
    status = await handle.status()
    assert status.finished, f"run {run_id} left {status}"
    return status


def expect(kind: str, limit: int | None) -> type[tether.TetherError] | None:
    return None if kind == "big" and limit else REFUSED[kind]


# Every kind at the default limit, and the 10 MB string again under a limit it fits in.
CASES = [pytest.param(k, None, id=k) for k in KINDS] + [
    pytest.param("big", 32 * 1024 * 1024, id="big-under-32MiB-limit")
]


@pytest.mark.parametrize(("kind", "limit"), CASES)
async def test_hostile__workflow_input(make_app: MakeApp, kind: str, limit: int | None):
    app = make_app(**({"max_payload_bytes": limit} if limit else {}))
    define(app)
    refused = expect(kind, limit)
    async with app:
        if refused is not None:
            with pytest.raises(refused):
                await app.start("takes", VALUES[kind], kind, id="r")
            assert app.store.get_run("r") is None  # nothing written
            return
        handle = await app.start("takes", VALUES[kind], kind, id="r")
        assert await handle.result(timeout=60) is True


@pytest.mark.parametrize(("kind", "limit"), CASES)
async def test_hostile__step_result(make_app: MakeApp, kind: str, limit: int | None):
    app = make_app(**({"max_payload_bytes": limit} if limit else {}))
    define(app)
    refused = expect(kind, limit)
    async with app:
        await app.start("as_step", kind, id="r")
        status = await final(app, "r")
    if refused is None:
        assert status == tether.Status.SUCCEEDED
        assert await app.retrieve("r").result() is True
        return
    assert status == tether.Status.FAILED
    with pytest.raises(tether.WorkflowFailedError) as info:
        await app.retrieve("r").result()
    assert isinstance(info.value.cause, refused)
    [step] = await app.retrieve("r").steps()
    assert (step.name, step.status) == ("give", "error")
    assert step.error_type == f"tether.errors.{refused.__name__}"


@pytest.mark.parametrize(("kind", "limit"), CASES)
async def test_hostile__workflow_result(make_app: MakeApp, kind: str, limit: int | None):
    app = make_app(**({"max_payload_bytes": limit} if limit else {}))
    define(app)
    refused = expect(kind, limit)
    async with app:
        await app.start("as_result", kind, id="r")
        status = await final(app, "r")
    if refused is None:
        assert status == tether.Status.SUCCEEDED
        assert same(await app.retrieve("r").result(), VALUES[kind])
        return
    assert status == tether.Status.FAILED
    with pytest.raises(tether.WorkflowFailedError) as info:
        await app.retrieve("r").result()
    assert isinstance(info.value.cause, refused)


@pytest.mark.parametrize(("kind", "limit"), CASES)
async def test_hostile__message(make_app: MakeApp, kind: str, limit: int | None):
    app = make_app(**({"max_payload_bytes": limit} if limit else {}))
    define(app)
    refused = expect(kind, limit)
    async with app:
        handle = await app.start("inbox", kind, id="r")
        if refused is not None:
            with pytest.raises(refused):
                await app.send("r", "in", VALUES[kind])
            await app.send("r", "in", "something else")
            assert await handle.result(timeout=60) is False
        else:
            await app.send("r", "in", VALUES[kind])
            assert await handle.result(timeout=60) is True
        assert (await final(app, "r")) == tether.Status.SUCCEEDED


@pytest.mark.parametrize(("kind", "limit"), CASES)
async def test_hostile__event(make_app: MakeApp, kind: str, limit: int | None):
    app = make_app(**({"max_payload_bytes": limit} if limit else {}))
    define(app)
    refused = expect(kind, limit)
    async with app:
        outcome = await (await app.start("publish", kind, id="r")).result(timeout=60)
    if refused is not None:
        assert outcome == refused.__name__
        assert await app.get_event("r", "e", timeout=0) is None
    else:
        assert outcome == "set"
        assert same(await app.get_event("r", "e"), VALUES[kind])


@pytest.mark.parametrize(
    "bad", ["nul\x00inside", "lone \udc00 surrogate"], ids=["nul", "surrogate"]
)
async def test_hostile__names_and_ids__refused_before_any_write(make_app: MakeApp, bad: str):
    app = make_app()
    define(app)
    with pytest.raises(tether.WorkflowArgumentError, match="NUL character or a lone surrogate"):
        await app.start("as_result", "nul", id=bad)
    async with app:
        handle = await app.start("inbox", "nul", id="r")
        with pytest.raises(tether.ConfigError, match="NUL character or a lone surrogate"):
            await app.send("r", bad, "x")
        with pytest.raises(tether.ConfigError, match="NUL character or a lone surrogate"):
            await app.send("r", "in", "x", key=bad)
        await app.send("r", "in", VALUES["nul"])
        assert await handle.result(timeout=60) is True


async def test_hostile__step_raising_a_huge_unprintable_error__recorded_cut(make_app: MakeApp):
    app = make_app()

    class Nasty(Exception):
        def __init__(self) -> None:
            super().__init__(BIG, math.nan, "\ud800")
            self.blob = _deep(5_000)

        def __str__(self) -> str:
            return "\ud800" + BIG

    @app.step(name="boom")
    async def boom() -> None:
        raise Nasty()

    @app.workflow(name="w")
    async def w() -> None:
        await boom()

    async with app:
        await app.start(w, id="r")
        assert await final(app, "r") == tether.Status.FAILED
    [step] = await app.retrieve("r").steps()
    assert step.error_type is not None
    assert step.error_type.endswith("Nasty")
    assert step.error_message is not None
    assert step.error_message.startswith("[")
    assert "characters cut" in step.error_message
    assert len(step.error_message) < 40_000
