"""A tether app for the coordination crash tests: sleeps, messages, gathers and a queue.

    python coordination.py LEDGER N         (database from TETHER_DATABASE_URL etc.)

Each step body appends `run,seq,pid` to LEDGER (outside the journal) when it has done its
work. Workflows: `sleeper-i` (a step, a 1.5 s sleep, a step), `listener-i` (a step, a recv
without timeout, a step), `fan-i` (a gather of eight steps), `queued-i` through the queue
`crashq` (concurrency 3, at most 5 starts per second). The app starts them all (idempotent
ids), prints READY, waits for every result and prints DONE.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from typing import Any

import tether

LEDGER, N = sys.argv[1], int(sys.argv[2])
PID = os.getpid()
_fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

app = tether.App()
QUEUE = app.register_queue(tether.Queue("crashq", concurrency=3, rate_limit=(5, 1.0)))


@app.step(name="work")
async def work(tag: str) -> str:
    await asyncio.sleep(random.uniform(0.01, 0.08))
    ctx = tether.context()
    os.write(_fd, f"{ctx.workflow_id},{ctx.step_seq},{PID}\n".encode())
    await asyncio.sleep(random.uniform(0.0, 0.03))
    return f"{tag}:{PID}"


@app.workflow(name="sleeper")
async def sleeper() -> list[str]:
    first = await work("before")
    await tether.sleep(1.5)
    return [first, await work("after")]


@app.workflow(name="listener")
async def listener() -> list[object]:
    first = await work("before")
    message = await tether.recv("go")
    return [first, message, await work("after")]


@app.workflow(name="fan")
async def fan() -> list[str]:
    return await tether.gather(*(work(f"branch-{i}") for i in range(8)))


@app.workflow(name="queued")
async def queued() -> str:
    return await work("queued")


async def main() -> None:
    async with app:
        print("READY", flush=True)
        handles: list[tether.WorkflowHandle[Any]] = []
        for i in range(N):
            handles.append(await app.start(sleeper, id=f"sleeper-{i}"))
            handles.append(await app.start(listener, id=f"listener-{i}"))
            handles.append(await app.start(fan, id=f"fan-{i}"))
            handles.append(await app.enqueue(QUEUE, queued, id=f"queued-{i}"))
        for handle in handles:
            await handle.result()
    print("DONE", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
