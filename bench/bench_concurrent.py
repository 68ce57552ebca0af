"""Step throughput with C workflows running at once in one worker process.

    python bench/bench_concurrent.py --backend sqlite|sqlite-full|postgres [--conc 1 16 64]

C client loops each start a workflow of --steps trivial steps and wait for its result, again
and again, for --seconds; throughput is steps completed per second of wall time. Concurrent
steps' checkpoints share commits (group commit), so throughput is not capped at one commit
per step.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import tether

from benchlib import emit, fresh_database


async def measure(
    env: dict[str, str], conc: int, steps: int = 10, seconds: float = 3.0
) -> dict[str, Any]:
    app = tether.App(settings=tether.Settings.from_env(env))

    @app.step(name="tiny")
    async def tiny(i: int) -> int:
        return i + 1

    @app.workflow(name="steps")
    async def wf(n: int) -> int:
        acc = 0
        for i in range(n):
            acc += await tiny(i)
        return acc

    done = 0

    async def client(until: float) -> None:
        nonlocal done
        while time.perf_counter() < until:
            await (await app.start(wf, steps)).result()
            done += 1

    async with app:
        await asyncio.gather(*(client(time.perf_counter() + 0.5) for _ in range(conc)))
        done = 0
        started = time.perf_counter()
        await asyncio.gather(*(client(started + seconds) for _ in range(conc)))
        wall = time.perf_counter() - started
    app.close()
    return {"conc": conc, "workflows": done, "steps_per_s": round(done * steps / wall)}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--backend", default="sqlite", choices=["sqlite", "sqlite-full", "postgres"])
    p.add_argument("--conc", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args()
    for c in args.conc:
        with fresh_database(args.backend) as env:
            result = asyncio.run(measure(env, c, args.steps, args.seconds))
        print(result)
        emit({"bench": "concurrent", "backend": args.backend, **result})
