"""A worker process for the queue fleet test: it runs queued jobs until it is stopped.

python fleet_worker.py LEDGER            (database from TETHER_DATABASE_URL etc.)
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import tether

LEDGER = sys.argv[1]
_fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

app = tether.App()
FLEET = app.register_queue(tether.Queue("fleet", concurrency=4, rate_limit=(10, 1.0)))


@app.step(name="job_step")
async def job_step(n: int) -> int:
    os.write(_fd, f"{tether.context().workflow_id},{os.getpid()}\n".encode())
    await asyncio.sleep(0.05)
    return n


@app.workflow(name="job")
async def job(n: int) -> int:
    return await job_step(n)


async def main() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with app:
        print("READY", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
