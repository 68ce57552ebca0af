"""Polling helpers for engine tests (never bare sleeps for synchronisation)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import tether


async def eventually(check: Callable[[], bool], within: float = 10.0, what: str = "") -> None:
    """Wait until `check()` is true, polling every 10 ms."""
    for _ in range(int(within / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what or check}")


def status(app: tether.App, run_id: str) -> str | None:
    row = app.store.get_run(run_id)
    return None if row is None else row.status


def journal_names(app: tether.App, run_id: str) -> list[tuple[int, str, str]]:
    return [(s.seq, s.name, s.status) for s in app.store.load_steps(run_id)]
