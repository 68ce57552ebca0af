"""PostgreSQL restarted under a fleet in a kill storm: every run completes, nothing is stuck.

A private cluster (never the shared server) is restarted twice while worker processes are
SIGKILLed and replaced at random, and once more, as a crash (`-m immediate`), right after a
kill while the replacement is resuming the dead worker's runs. The ledger then shows no run
lost, no step outcome recorded twice and no completed step body run again.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from tests.faults.cluster import PrivateCluster
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

pytestmark = [pytest.mark.postgres, pytest.mark.crash]

RUNS = int(os.environ.get("TETHER_RESTART_RUNS", "150"))
STEPS = 10


@pytest.mark.timeout(600)
def test_restarts_during_a_kill_storm__all_runs_complete(
    private_pg: PrivateCluster, tmp_path: Path
):
    settings = Settings(database_url=private_pg.url(), pg_schema="tether")
    store = open_store(settings)
    store.migrate()
    app = client(settings)
    env = worker_env(settings, {"max_concurrency": 8})
    storm = Storm(
        settings,
        tmp_path / "ledger.csv",
        env,
        3,
        seed=int(os.environ.get("TETHER_CRASH_SEED", "0")),
    )
    restarted: list[tuple[str, float]] = []

    def restart(mode: str, why: str) -> None:
        private_pg.restart(mode)
        restarted.append((why, time.time()))

    def during_storm() -> None:
        for delay in (4.0, 6.0):
            time.sleep(delay)
            restart("fast", "during the storm")

    def on_kill(n: int) -> None:
        if n == 4:  # the replacement has just started to resume the dead worker's runs
            restart("immediate", "during a recovery")

    background = threading.Thread(target=during_storm)
    try:
        storm.start()
        began = time.monotonic()
        ids = start_runs(app, RUNS, STEPS, 0.3)
        background.start()
        storm.rage(store, ids, within=400, on_kill=on_kill)
        background.join()
        elapsed = time.monotonic() - began
        storm.stop()
        seen = Ledger.read(tmp_path / "ledger.csv")
        v = verdict(store, ids, STEPS, seen)
        takeovers = takeover_times(seen, storm.kills)
        print(
            f"\n{RUNS}x{STEPS}, 3 workers, {len(storm.kills)} kills, restarts "
            f"{[w for w, _ in restarted]}, done in {elapsed:.1f}s: lost={len(v.lost)} "
            f"recorded twice={len(v.recorded_twice)} completed re-run={len(v.completed_rerun)} "
            f"re-executed unfinished steps={v.reexecuted}; kill -> step committed elsewhere max "
            f"{max(takeovers, default=0):.2f}s"
        )
        assert len(restarted) == 3, "the storm ended before the three restarts: make it bigger"
        assert not v.lost, v.lost[:5]
        assert not v.recorded_twice
        assert not v.completed_rerun
        assert not v.not_from_ledger
    finally:
        if background.is_alive():
            background.join()
        storm.stop()
        app.close()
        store.close()
