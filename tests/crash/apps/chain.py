"""A tether app for the crash tests: N workflows of S steps, run until SIGKILL.

    python chain.py LEDGER TABLE N STEPS      (database from TETHER_DATABASE_URL etc.)

Every step body appends one line to LEDGER when it has done its work (`run,seq,pid,value`),
before tether journals it: the ledger counts executions outside the journal. Each step
returns a value no replay could reproduce (pid and a random nonce), so a step that ran again
would show. Every fifth step is transactional: it inserts (run, seq, pid) into TABLE in the
transaction that journals it. Even-numbered workflows are `async def`, odd ones plain `def`.

The app starts all N workflows (ids chain-000 ...; starting an existing id is a no-op), prints
READY once its worker is up, then waits for every result and prints DONE.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from typing import Any

import tether

LEDGER, TABLE = sys.argv[1], sys.argv[2]
N, STEPS = int(sys.argv[3]), int(sys.argv[4])
PID = os.getpid()
_fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

app = tether.App()


def effect(seq: int) -> str:
    """Do 'the work' and log it outside the journal; return an unrepeatable value."""
    ctx = tether.context()
    value = f"{PID}:{random.getrandbits(48):012x}"
    # One O_APPEND write per line: a SIGKILL cannot split it, and the page cache keeps it.
    os.write(_fd, f"{ctx.workflow_id},{seq},{PID},{value}\n".encode())
    return value


def placeholder() -> str:
    return "?" if app.store.dialect == "sqlite" else "%s"


# Each body does its effect first and then more work, so that kills land in the window
# between an effect and its checkpoint, where a step may legitimately run again.


@app.step(name="work")
async def work(seq: int) -> str:
    await asyncio.sleep(random.uniform(0.0, 0.03))
    value = effect(seq)
    await asyncio.sleep(random.uniform(0.0, 0.03))
    return value


@app.step(name="work_sync")
def work_sync(seq: int) -> str:
    time.sleep(random.uniform(0.0, 0.03))
    value = effect(seq)
    time.sleep(random.uniform(0.0, 0.03))
    return value


@app.transaction(name="write")
def write(conn: Any, seq: int) -> str:
    value = effect(seq)
    p = placeholder()
    conn.execute(
        f"INSERT INTO {TABLE} (run_id, seq, pid) VALUES ({p}, {p}, {p})",
        (tether.context().workflow_id, seq, PID),
    )
    time.sleep(random.uniform(0.0, 0.02))
    return value


@app.workflow(name="chain_async")
async def chain_async(steps: int) -> list[str]:
    return [write(i) if i % 5 == 4 else await work(i) for i in range(steps)]


@app.workflow(name="chain_sync")
def chain_sync(steps: int) -> list[str]:
    return [write(i) if i % 5 == 4 else work_sync(i) for i in range(steps)]


def create_table() -> None:
    if app.store.dialect == "sqlite":
        import sqlite3

        url = app.settings.database_url or ""
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30)
        conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (run_id TEXT, seq INTEGER, pid INTEGER)")
        conn.commit()
        conn.close()
    else:
        import psycopg

        with psycopg.connect(app.settings.database_url or "") as pg:
            pg.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (run_id text, seq integer, pid integer)"
            )


async def main() -> None:
    create_table()
    async with app:
        print("READY", flush=True)
        handles = [
            await app.start(chain_async if i % 2 == 0 else chain_sync, STEPS, id=f"chain-{i:03d}")
            for i in range(N)
        ]
        for handle in handles:
            await handle.result()
    print("DONE", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
