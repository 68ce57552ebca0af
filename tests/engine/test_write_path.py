"""The checkpoint write path: one durable write and no read per step on first execution."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import tether


def count_calls(app: tether.App) -> Counter[str]:
    calls: Counter[str] = Counter()
    store = app.store
    for name in (
        "create_run",
        "get_run",
        "list_runs",
        "load_steps",
        "record_steps",
        "complete_run",
        "record_step_transactionally",
        "write_batch",
    ):
        original = getattr(store, name)

        def counting(*a: Any, _n: str = name, _f: Any = original, **k: Any) -> Any:
            calls[_n] += 1
            return _f(*a, **k)

        setattr(store, name, counting)
    return calls


async def test_first_execution__one_write_per_step_no_reads(app: tether.App):
    @app.step()
    async def tiny(i: int) -> int:
        return i

    @app.workflow()
    async def ten() -> int:
        return sum([await tiny(i) for i in range(10)])

    async with app:
        calls = count_calls(app)
        await (await app.start(ten)).result(timeout=10)
    # the start and the completion go through the batch writer; each step is one write
    assert calls == Counter({"write_batch": 2, "record_steps": 10})


async def test_concurrent_steps__share_commits(app: tether.App):
    """Steps finishing together are journaled in fewer commits than steps."""

    @app.step()
    async def tiny(i: int) -> int:
        await asyncio.sleep(0)
        return i

    @app.workflow()
    async def fan() -> int:
        return sum(await asyncio.gather(*(tiny(i) for i in range(50))))

    async with app:
        calls = count_calls(app)
        assert await (await app.start(fan)).result(timeout=10) == sum(range(50))
    if app.store.dialect == "sqlite" and app.store.inline_writes:
        assert calls["record_steps"] == 50  # cheap commits are written as they come
    else:
        assert calls["record_steps"] + calls["write_batch"] < 50 + 2


async def test_sqlite_hot_path__one_statement_per_step(tmp_path: Path):
    """SQLite can trace statements; on PostgreSQL the call count above covers the same."""
    settings = tether.Settings(
        database_url=f"sqlite:///{tmp_path / 'trace.db'}", poll_interval=60.0
    )  # no claim transactions meanwhile
    app = tether.App(settings=settings)
    statements: list[str] = []

    @app.step()
    async def tiny(i: int) -> int:
        return i

    @app.workflow()
    async def five() -> int:
        return sum([await tiny(i) for i in range(5)])

    async with app:
        writer: sqlite3.Connection = app.store._writer  # type: ignore[attr-defined]
        handle = await app.start(five)
        writer.set_trace_callback(statements.append)
        await handle.result(timeout=10)
        writer.set_trace_callback(None)
    app.close()
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT INTO STEPS")]
    assert len(inserts) == 5
    assert statements[:5] == inserts, statements  # each step: one statement, no BEGIN/COMMIT
    # then the completion: one transaction that also wakes runs waiting for this one
    assert [s.strip().split()[0].upper() for s in statements[5:]][:: len(statements) - 6] == [
        "BEGIN",
        "COMMIT",
    ]
