"""The fleet kill storm: worker processes SIGKILLed at random and replaced, on both databases.

`TETHER_STORM_RUNS` workflows of `TETHER_STORM_STEPS` steps run on `TETHER_STORM_WORKERS`
worker processes; every 0.5 to 3 seconds a random worker is SIGKILLed and a new worker
process takes its place. The ledger, written outside the journal with fsync, shows at the end:
no workflow lost, no step outcome recorded twice, no completed step body run again, and every
recorded value produced by an execution it witnessed. Printed: kills, re-executions of steps
that were in flight when their worker died, and the time from each kill to the first step
committed elsewhere for a run the killed worker owned.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import pytest

from tests.faults.fleet import (
    Ledger,
    Storm,
    client,
    start_runs,
    takeover_times,
    verdict,
    worker_env,
)
from tether.settings import Settings
from tether.store import open_store

pytestmark = pytest.mark.crash

RUNS = int(os.environ.get("TETHER_STORM_RUNS", "500"))
STEPS = int(os.environ.get("TETHER_STORM_STEPS", "10"))
WORKERS = int(os.environ.get("TETHER_STORM_WORKERS", "3"))
PAUSE = float(os.environ.get("TETHER_STORM_STEP_SECONDS", "0.3"))
CONCURRENCY = int(os.environ.get("TETHER_STORM_CONCURRENCY", "16"))


def summary(label: str, values: list[float]) -> str:
    if not values:
        return f"{label}: none"
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
    return (
        f"{label}: n={len(values)} median={statistics.median(values):.2f}s "
        f"p95={p95:.2f}s max={values[-1]:.2f}s"
    )


@pytest.mark.timeout(900)
def test_fleet_storm__nothing_lost_nothing_twice(settings: Settings, tmp_path: Path):
    store = open_store(settings)
    store.migrate()
    app = client(settings)
    ledger = tmp_path / "ledger.csv"
    env = worker_env(settings, {"max_concurrency": CONCURRENCY})
    storm = Storm(
        settings, ledger, env, WORKERS, seed=int(os.environ.get("TETHER_CRASH_SEED", "0"))
    )
    try:
        storm.start()
        began = time.monotonic()
        ids = start_runs(app, RUNS, STEPS, PAUSE)
        storm.rage(store, ids, within=600)
        elapsed = time.monotonic() - began
        errors = storm.stop()
        seen = Ledger.read(ledger)
        v = verdict(store, ids, STEPS, seen)
        takeovers = takeover_times(seen, storm.kills)
        recoveries = sum(r.recoveries for r in (store.get_run(i) for i in ids) if r is not None)
        print(
            f"\n[{store.dialect}] {RUNS}x{STEPS} on {WORKERS} workers in {elapsed:.1f}s: "
            f"kills={len(storm.kills)} executions={v.executions} "
            f"re-executed unfinished steps={v.reexecuted} recoveries={recoveries} "
            f"lost={len(v.lost)} recorded twice={len(v.recorded_twice)} "
            f"completed re-run={len(v.completed_rerun)}\n"
            + summary("kill -> first step committed elsewhere", takeovers)
        )
        assert not v.lost, (v.lost[:5], errors)
        assert not v.recorded_twice, v.recorded_twice[:5]
        assert not v.completed_rerun, v.completed_rerun[:5]
        assert not v.not_from_ledger, v.not_from_ledger[:5]
        assert storm.kills, "the work ended before the first kill: make it bigger"
    finally:
        storm.stop()
        app.close()
        store.close()
