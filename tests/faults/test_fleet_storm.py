"""The fleet kill storm: `tether supervise` keeps the workers up while a driver SIGKILLs them.

A real `tether supervise worker:app --workers TETHER_STORM_WORKERS --status-file F` process
runs the worker app of tests/faults/apps; `TETHER_STORM_RUNS` workflows of
`TETHER_STORM_STEPS` steps are started; every 0.5 to 3 seconds the driver reads the status
file, picks a random live child and SIGKILLs it, and the supervisor starts a new one in its
slot. The ledger, written outside the journal with fsync, shows at the end: no workflow lost,
no step outcome recorded twice, no completed step body run again, and every recorded value
produced by an execution it witnessed. Then the supervisor is sent SIGTERM: it must exit 0
and leave no child behind.

Printed: kills, the supervisor's restarts, re-executions of steps that were in flight when
their worker died, the time from each kill to the first step committed elsewhere for a run
the killed worker owned (target: `lease_ttl` + 2 s), and the time from each kill to the start
of its replacement (from the status file).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import pytest

from tests.faults.fleet import (
    Ledger,
    SupervisedStorm,
    client,
    start_runs,
    supervise_env,
    takeover_times,
    verdict,
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
    """`label: n= median= p95= max=` of a list of durations in seconds."""
    if not values:
        return f"{label}: none"
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
    return (
        f"{label}: n={len(values)} median={statistics.median(values):.2f}s "
        f"p95={p95:.2f}s max={values[-1]:.2f}s"
    )


@pytest.mark.timeout(900)
def test_supervised_fleet_storm__nothing_lost_nothing_twice(settings: Settings, tmp_path: Path):
    store = open_store(settings)
    store.migrate()
    app = client(settings)
    ledger = tmp_path / "ledger.csv"
    storm = SupervisedStorm(
        tmp_path,
        supervise_env(settings, ledger, {"max_concurrency": CONCURRENCY}),
        WORKERS,
        seed=int(os.environ.get("TETHER_CRASH_SEED", "0")),
    )
    stopped = None
    try:
        storm.start(store)
        began = time.monotonic()
        ids = start_runs(app, RUNS, STEPS, PAUSE)
        storm.rage(store, ids, within=600)
        elapsed = time.monotonic() - began
        restarts, replaced = storm.restarts(), storm.replacement_times()
        stopped = storm.stop()
        exits = storm.exits()
        seen = Ledger.read(ledger)
        v = verdict(store, ids, STEPS, seen)
        takeovers = takeover_times(seen, [(k.pid, k.at) for k in storm.kills])
        recoveries = sum(r.recoveries for r in (store.get_run(i) for i in ids) if r is not None)
        target = settings.lease_ttl + 2
        print(
            f"\n[{store.dialect}] {RUNS}x{STEPS} on {WORKERS} supervised workers in "
            f"{elapsed:.1f}s: kills={len(storm.kills)} supervisor restarts={restarts} "
            f"child exits by code={dict(exits)} executions={v.executions} "
            f"re-executed unfinished steps={v.reexecuted} recoveries={recoveries} "
            f"lost={len(v.lost)} recorded twice={len(v.recorded_twice)} "
            f"completed re-run={len(v.completed_rerun)}\n"
            + summary("kill -> first step committed elsewhere", takeovers)
            + f" (target {target:.0f}s, over it: {sum(t > target for t in takeovers)})\n"
            + summary("kill -> replacement started (status file)", replaced)
            + f"\nsupervisor SIGTERM -> exit code {stopped.code}, children left {stopped.left}"
        )
        assert not v.lost, (v.lost[:5], stopped.log)
        assert not v.recorded_twice, v.recorded_twice[:5]
        assert not v.completed_rerun, v.completed_rerun[:5]
        assert not v.not_from_ledger, v.not_from_ledger[:5]
        assert storm.kills, "the work ended before the first kill: make it bigger"
        assert exits["-9"] == len(storm.kills), (exits, len(storm.kills), stopped.log)
        assert restarts >= len(storm.replacement_times()), (restarts, stopped.log)
        assert stopped.code == 0, stopped.log
        assert not stopped.left, stopped.left
        assert stopped.status["stopping"], stopped.status
        assert not any(w["running"] for w in stopped.status["workers"]), stopped.status
    finally:
        if stopped is None and storm.proc is not None:
            storm.stop()
        app.close()
        store.close()
