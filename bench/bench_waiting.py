"""Many waiting runs: the worker's memory while they wait, and the time to wake them all.

    python bench/bench_waiting.py --backend postgres|sqlite [--n 10000]

This process is the worker. It starts N workflows that each take one step and then wait for
a message (with a one-hour timeout, so each also holds a timer), and waits until every run
has been evicted (WAITING in the store, nothing in memory). It reports its resident memory
then, and its peak. A separate client process then sends each run its message; the figure is
the time from the first send until every run has finished, as the worker claims, replays and
completes them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import time
from typing import Any

import tether
from tether.settings import Settings
from tether.store.base import RunFilter

from benchlib import emit, fresh_database


def rss_mb() -> float:
    """This process's resident memory now, in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def define(app: tether.App) -> Any:
    @app.step(name="prepare")
    async def prepare(i: int) -> int:
        return i

    @app.workflow(name="waiter")
    async def waiter(i: int) -> object:
        await prepare(i)
        return await tether.recv("go", timeout=3600)

    return waiter


async def until(done: Any, every: float = 0.2) -> None:
    """Poll the store (where the other side's progress shows) until `done()`."""
    while not done():  # noqa: ASYNC110 - the progress is in the database, not an event
        await asyncio.sleep(every)


def count(app: tether.App, status: str) -> int:
    runs = app.store.list_runs(RunFilter(statuses=(status,), limit=1_000_000))
    return len(runs)


async def measure(env: dict[str, str], n: int) -> dict[str, Any]:
    settings = Settings.from_env(env)
    app = tether.App(settings=settings)
    waiter = define(app)
    result: dict[str, Any] = {"n": n, "rss_start_mb": round(rss_mb(), 1)}
    async with app:
        started = time.perf_counter()
        for i in range(n):
            await app.start(waiter, i, id=f"w{i:06d}")
        await until(lambda: count(app, "WAITING") >= n)
        result["start_and_evict_all_s"] = round(time.perf_counter() - started, 1)
        result["rss_all_waiting_mb"] = round(rss_mb(), 1)
        assert app._worker is not None
        result["runs_in_memory"] = len(app._worker.running)

        sender = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--role",
            "send",
            "--n",
            str(n),
            env={**os.environ, **env},
        )
        woke = time.perf_counter()
        await until(lambda: count(app, "SUCCEEDED") >= n)
        result["wake_all_by_messages_s"] = round(time.perf_counter() - woke, 1)
        await sender.wait()
    result["rss_peak_mb"] = round(peak_mb(), 1)
    app.close()
    return result


async def send_all(n: int) -> None:
    client = tether.App(settings=Settings.from_env())
    sem = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        async with sem:
            await client.send(f"w{i:06d}", "go", i)

    await asyncio.gather(*(one(i) for i in range(n)))
    client.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--backend", default="postgres", choices=["sqlite", "postgres"])
    p.add_argument("--role", default="worker", choices=["worker", "send"])
    p.add_argument("--n", type=int, default=10_000)
    args = p.parse_args()
    if args.role == "send":
        asyncio.run(send_all(args.n))
    else:
        with fresh_database(args.backend) as env:
            figures = asyncio.run(measure(env, args.n))
        print(figures)
        emit({"bench": "waiting", "backend": args.backend, **figures})
