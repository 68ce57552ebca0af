"""An app for the fleet tests: its steps note what they do in a ledger outside the journal.

Run as `tether worker tests.fleet.apps.ledger:app`, with the database from `TETHER_*` and:
FLEET_LEDGER (the ledger file), FLEET_GATE (the first step waits until this file exists),
FLEET_STEP_SECONDS (how long the first step then sleeps).
"""

from __future__ import annotations

import asyncio
import os
import time

import tether

app = tether.App()
NOT_AN_APP = 42


def note(step: str, event: str) -> None:
    """Append `step,event,run,pid` to the ledger (one write: lines never interleave)."""
    line = f"{step},{event},{tether.context().workflow_id},{os.getpid()}\n"
    fd = os.open(os.environ["FLEET_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def wait_for_file(path: str) -> None:
    while not os.path.exists(path):
        time.sleep(0.02)


@app.step(name="first")
async def first(n: int) -> int:
    note("first", "start")
    gate = os.environ.get("FLEET_GATE")
    if gate:
        await asyncio.to_thread(wait_for_file, gate)
    await asyncio.sleep(float(os.environ.get("FLEET_STEP_SECONDS", "0")))
    note("first", "end")
    return n


@app.step(name="second")
async def second(n: int) -> int:
    note("second", "end")
    return n * 2


@app.workflow(name="job", version="1")
async def job(n: int) -> int:
    return await second(await first(n))
