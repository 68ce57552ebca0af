"""Sequential cost: the time tether adds per step, and per workflow.

    python bench/bench_seq.py --backend sqlite|sqlite-full|postgres [--n 200] [--steps 10]

per step: the median time around each `await step(i)` inside a running workflow (a trivial
step body), for an async workflow with async steps and a plain `def` workflow with plain
steps. per workflow: the median time from `app.start` to `handle.result()` of a workflow with
no steps. Also checks the write path: store calls per step on first execution.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from typing import Any

import tether

from benchlib import emit, fresh_database, median, pct


def build(app: tether.App, lat: list[float]) -> dict[str, Any]:
    @app.step(name="tiny")
    async def tiny(i: int) -> int:
        return i + 1

    @app.step(name="tiny_sync")
    def tiny_sync(i: int) -> int:
        return i + 1

    @app.workflow(name="steps")
    async def steps(n: int) -> int:
        acc = 0
        for i in range(n):
            t = time.perf_counter()
            acc += await tiny(i)
            lat.append(time.perf_counter() - t)
        return acc

    @app.workflow(name="steps_sync")
    def steps_sync(n: int) -> int:
        acc = 0
        for i in range(n):
            t = time.perf_counter()
            acc += tiny_sync(i)
            lat.append(time.perf_counter() - t)
        return acc

    @app.workflow(name="empty")
    async def empty() -> int:
        return 0

    return {"steps": steps, "steps_sync": steps_sync, "empty": empty}


def count_store_calls(app: tether.App) -> Counter[str]:
    """Wrap the store's methods to count calls (write-path check)."""
    calls: Counter[str] = Counter()
    store = app.store
    for name in (
        "create_run",
        "get_run",
        "load_steps",
        "record_steps",
        "complete_run",
        "record_step_transactionally",
        "claim_runs",
        "write_batch",
    ):
        original = getattr(store, name)

        def counting(*a: Any, _n: str = name, _f: Any = original, **k: Any) -> Any:
            calls[_n] += 1
            return _f(*a, **k)

        setattr(store, name, counting)
    return calls


async def measure(env: dict[str, str], n: int = 200, steps: int = 10) -> dict[str, Any]:
    lat: list[float] = []
    app = tether.App(settings=tether.Settings.from_env(env))
    wfs = build(app, lat)
    out: dict[str, Any] = {}
    async with app:
        for label, wf in (("async", wfs["steps"]), ("sync", wfs["steps_sync"])):
            for _ in range(20):
                await (await app.start(wf, steps)).result()
            lat.clear()
            started = time.perf_counter()
            for _ in range(n):
                await (await app.start(wf, steps)).result()
            total = time.perf_counter() - started
            out[f"step_{label}_us"] = round(median(lat) * 1e6, 1)
            out[f"step_{label}_p90_us"] = round(pct(lat, 90) * 1e6, 1)
            out[f"steps_per_s_{label}"] = round(n * steps / total)
        wf0 = []
        for _ in range(n):
            t = time.perf_counter()
            await (await app.start(wfs["empty"])).result()
            wf0.append(time.perf_counter() - t)
        out["workflow_us"] = round(median(wf0) * 1e6, 1)
        out["workflow_p90_us"] = round(pct(wf0, 90) * 1e6, 1)
        calls = count_store_calls(app)
        await (await app.start(wfs["steps"], 10)).result()
        out["store_calls_10_steps"] = dict(calls)
    app.close()
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--backend", default="sqlite", choices=["sqlite", "sqlite-full", "postgres"])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    with fresh_database(args.backend) as env:
        result = asyncio.run(measure(env, args.n, args.steps))
    print(result)
    emit({"bench": "seq", "backend": args.backend, **result})
