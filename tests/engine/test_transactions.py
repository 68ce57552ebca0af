"""Transactional steps: their writes commit with their journal entry (both backends)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest

import tether
from tests.conftest import MakeApp


def table_for(app: tether.App) -> tuple[str, str]:
    name = f"orders_{uuid.uuid4().hex[:8]}"
    return name, "?" if app.store.dialect == "sqlite" else "%s"


def count_rows(app: tether.App, table: str) -> int:
    import sqlite3

    settings = app.settings
    if app.store.dialect == "sqlite":
        assert settings.database_url is not None
        conn = sqlite3.connect(settings.database_url.removeprefix("sqlite:///"))
        try:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        finally:
            conn.close()
    import psycopg

    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as pg:
        row = pg.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert row is not None
        return int(row[0])


def define(app: tether.App, table: str, p: str, calls: Counter[str], gate: asyncio.Event | None):
    @app.transaction(name="setup")
    def setup(conn) -> None:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (id text PRIMARY KEY, qty integer)")

    @app.transaction(name="record")
    def record(conn, order_id: str, qty: int) -> int:
        calls[order_id] += 1
        conn.execute(f"INSERT INTO {table} (id, qty) VALUES ({p}, {p})", (order_id, qty))
        return qty

    @app.step(name="pause")
    async def pause() -> None:
        if gate is not None:
            await gate.wait()

    @app.workflow(name="orders")
    async def orders(n: int) -> int:
        setup()
        total = 0
        for i in range(n):
            total += record(f"o{i}", i)
            if i == 1:
                await pause()
        return total


async def test_transaction__writes_once_and_replay_skips_them(make_app: MakeApp):
    calls: Counter[str] = Counter()
    first = make_app()
    table, p = table_for(first)
    define(first, table, p, calls, asyncio.Event())
    async with first:
        await first.start("orders", 4, id="tx")
        for _ in range(300):
            if len(first.store.load_steps("tx")) >= 3:
                break
            await asyncio.sleep(0.01)
    assert count_rows(first, table) == 2
    second = make_app()
    define(second, table, p, calls, None)
    async with second:
        assert await second.retrieve("tx").result(timeout=10) == 0 + 1 + 2 + 3
    assert count_rows(second, table) == 4
    assert calls == Counter({"o0": 1, "o1": 1, "o2": 1, "o3": 1})


async def test_transaction__failure__rolls_back_its_writes(app: tether.App):
    table, p = table_for(app)

    @app.transaction(retry=None)
    def setup(conn) -> None:
        conn.execute(f"CREATE TABLE {table} (id text PRIMARY KEY)")

    @app.transaction(retry=None)
    def half(conn) -> None:
        conn.execute(f"INSERT INTO {table} (id) VALUES ({p})", ("a",))
        raise RuntimeError("after the write")

    @app.workflow()
    async def wf() -> None:
        setup()
        half()

    async with app:
        handle = await app.start(wf)
        with pytest.raises(tether.WorkflowFailedError, match="after the write"):
            await handle.result(timeout=10)
        steps = await handle.steps()
    assert count_rows(app, table) == 0
    assert [(s.status, s.error_type) for s in steps] == [
        ("ok", None),
        ("error", "builtins.RuntimeError"),
    ]


async def test_transaction__unserializable_result__rolled_back_and_recorded(app: tether.App):
    table, p = table_for(app)

    @app.transaction(retry=None)
    def setup(conn) -> None:
        conn.execute(f"CREATE TABLE {table} (id text PRIMARY KEY)")

    @app.transaction(retry=None)
    def returns_object(conn) -> object:
        conn.execute(f"INSERT INTO {table} (id) VALUES ({p})", ("a",))
        return object()

    @app.workflow()
    async def wf() -> None:
        setup()
        returns_object()

    async with app:
        with pytest.raises(tether.WorkflowFailedError) as info:
            await (await app.start(wf)).result(timeout=10)
    assert isinstance(info.value.cause, tether.SerializationError)
    assert count_rows(app, table) == 0


async def test_transaction__outside_workflow__raises(app: tether.App):
    @app.transaction()
    def write(conn) -> None:
        return None

    with pytest.raises(tether.NotInWorkflowError, match="outside a workflow"):
        write()


def test_transaction__async_function__refused(app: tether.App):
    with pytest.raises(tether.ConfigError, match="plain def"):

        @app.transaction()
        async def write(conn) -> None:
            return None
