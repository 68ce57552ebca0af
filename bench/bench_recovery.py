"""Recovery: the time from a restart to the first resumed step.

    python bench/bench_recovery.py --backend sqlite|sqlite-full|postgres [--n 100] [--steps 10]

A child process runs N workflows of S steps (each step sleeps --sleep-ms, then appends a line
to a log outside the journal). When about half of all steps ran, the parent SIGKILLs it and
starts a new child, which resumes every run. Reported: seconds from the new process's start,
and from the moment its imports were done (the app starting), to its first resumed step; and
checks that no step whose checkpoint had committed ran again.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time

import tether
from tether.settings import Settings
from tether.store import open_store
from tether.store.base import RunFilter

from benchlib import emit, fresh_database

T_IMPORTED = time.time()


def child(args: argparse.Namespace) -> None:
    app = tether.App(settings=Settings.from_env())
    log = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    @app.step(name="sleepy")
    async def sleepy(i: int) -> int:
        await asyncio.sleep(args.sleep_ms / 1000)
        ctx = tether.context()
        os.write(log, f"{ctx.workflow_id},{i},{os.getpid()},{time.time():.6f}\n".encode())
        return i

    @app.workflow(name="chain")
    async def chain(n: int) -> int:
        return sum([await sleepy(i) for i in range(n)])

    async def main() -> None:
        async with app:
            if args.role == "start":
                for k in range(args.n):
                    await app.start(chain, args.steps, id=f"rec-{k:04d}")
                print("STARTED", flush=True)
                await asyncio.sleep(3600)
            expect = sum(range(args.steps))
            for k in range(args.n):
                assert await app.retrieve(f"rec-{k:04d}").result() == expect
        print(f"IMPORTED {T_IMPORTED:.6f}", flush=True)

    asyncio.run(main())


def read_log(path: str) -> list[tuple[str, int, int, float]]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = [line.strip().split(",") for line in f if line.strip()]
    return [(r, int(s), int(p), float(t)) for r, s, p, t in rows]


def measure(env: dict[str, str], n: int, steps: int, sleep_ms: float) -> dict[str, object]:
    log = os.path.join(tempfile.gettempdir(), f"tether-recovery-{os.getpid()}.log")
    if os.path.exists(log):
        os.remove(log)
    me = [
        sys.executable,
        os.path.abspath(__file__),
        "--n",
        str(n),
        "--steps",
        str(steps),
        "--sleep-ms",
        str(sleep_ms),
        "--log",
        log,
    ]
    full_env = {**os.environ, **env}
    first = subprocess.Popen(
        [*me, "--role", "start"], env=full_env, stdout=subprocess.PIPE, text=True
    )
    assert first.stdout is not None
    assert first.stdout.readline().startswith("STARTED")
    while len(read_log(log)) < n * steps // 2:
        time.sleep(0.005)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    store = open_store(Settings.from_env(env))
    committed = {
        (s.run_id, s.seq)
        for r in store.list_runs(RunFilter(limit=100_000))
        for s in store.load_steps(r.id)
    }
    store.close()

    t0 = time.time()
    second = subprocess.run(
        [*me, "--role", "recover"],
        env={**full_env, "BENCH_T0": repr(t0)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if second.returncode != 0:
        raise SystemExit(second.stderr[-3000:])
    t_imported = float(second.stdout.split("IMPORTED ")[1].split()[0])
    effects = read_log(log)
    os.remove(log)
    resumed = [t for _, _, p, t in effects if p != first.pid]
    rerun = [(r, s) for r, s, p, _ in effects if p != first.pid and (r, s) in committed]
    return {
        "n": n,
        "steps": steps,
        "checkpointed_at_kill": len(committed),
        "restart_to_first_step_s": round(min(resumed) - t0, 3),
        "app_start_to_first_step_s": round(min(resumed) - t_imported, 3),
        "restart_to_all_done_s": round(max(resumed) - t0, 3),
        "reran_checkpointed_steps": len(rerun),
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--backend", default="sqlite", choices=["sqlite", "sqlite-full", "postgres"])
    p.add_argument("--role", choices=["parent", "start", "recover"], default="parent")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--sleep-ms", type=float, default=10.0)
    p.add_argument("--log", default="")
    args = p.parse_args()
    if args.role != "parent":
        child(args)
    else:
        with fresh_database(args.backend) as env:
            result = measure(env, args.n, args.steps, args.sleep_ms)
        print(result)
        emit({"bench": "recovery", "backend": args.backend, **result})
