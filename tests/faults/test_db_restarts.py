"""PostgreSQL restarted under a supervised fleet in a kill storm: every run completes.

A real `tether supervise worker:app --workers 3` runs on a private cluster (never the shared
server) while the driver SIGKILLs a random live child every 0.5 to 3 s and the supervisor
restarts it. The cluster is restarted twice during the storm (`pg_ctl restart -m fast`, 4 s and
10 s in) and once more as a crash (`-m immediate`) right after the fourth kill, while the dead
worker's runs are being resumed. Children that crash because the database is gone are
restarted like the killed ones. The ledger then shows no run lost, no step outcome recorded
twice and no completed step body run again; SIGTERM then stops the supervisor cleanly.
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
    SupervisedStorm,
    client,
    start_runs,
    supervise_env,
    takeover_times,
    verdict,
)
from tether.settings import Settings
from tether.store import open_store

pytestmark = [pytest.mark.postgres, pytest.mark.crash]

RUNS = int(os.environ.get("TETHER_RESTART_RUNS", "150"))
STEPS = 10


@pytest.mark.timeout(600)
def test_restarts_during_a_supervised_kill_storm__all_runs_complete(
    private_pg: PrivateCluster, tmp_path: Path
):
    settings = Settings(database_url=private_pg.url(), pg_schema="tether")
    store = open_store(settings)
    store.migrate()
    app = client(settings)
    ledger = tmp_path / "ledger.csv"
    storm = SupervisedStorm(
        tmp_path,
        supervise_env(settings, ledger, {"max_concurrency": 8}),
        3,
        seed=int(os.environ.get("TETHER_CRASH_SEED", "0")),
    )
    restarted: list[tuple[str, float, float]] = []  # why, began, back

    def restart(mode: str, why: str) -> None:
        began = time.time()
        private_pg.restart(mode)
        restarted.append((why, began, time.time()))

    def during_storm() -> None:
        for delay in (4.0, 6.0):
            time.sleep(delay)
            restart("fast", "during the storm")

    def on_kill(n: int) -> None:
        if n == 4:  # the dead worker's runs are about to be resumed
            restart("immediate", "during a recovery")

    background = threading.Thread(target=during_storm)
    stopped = None
    try:
        storm.start(store)
        began = time.monotonic()
        ids = start_runs(app, RUNS, STEPS, 0.3)
        background.start()
        storm.rage(store, ids, within=400, on_kill=on_kill)
        background.join()
        elapsed = time.monotonic() - began
        restarts, replaced = storm.restarts(), storm.replacement_times()
        stopped = storm.stop()
        exits = storm.exits()
        seen = Ledger.read(ledger)
        v = verdict(store, ids, STEPS, seen)
        takeovers = takeover_times(seen, [(k.pid, k.at) for k in storm.kills])
        fourth = storm.kills[3] if len(storm.kills) > 3 else None
        print(
            f"\n{RUNS}x{STEPS}, 3 supervised workers, {len(storm.kills)} kills, "
            f"supervisor restarts={restarts}, child exits by code={dict(exits)}, database "
            f"restarts {[(w, round(b - a, 2)) for w, a, b in restarted]} (seconds down), done "
            f"in {elapsed:.1f}s: lost={len(v.lost)} recorded twice={len(v.recorded_twice)} "
            f"completed re-run={len(v.completed_rerun)} re-executed unfinished steps="
            f"{v.reexecuted}; kill -> step committed elsewhere max "
            f"{max(takeovers, default=0):.2f}s; kill -> replacement started max "
            f"{max(replaced, default=0):.2f}s; fourth kill -> its takeover "
            f"{takeover_times(seen, [(fourth.pid, fourth.at)]) if fourth else None}; "
            f"supervisor SIGTERM -> exit code {stopped.code}, children left {stopped.left}"
        )
        assert len(restarted) == 3, "the storm ended before the three restarts: make it bigger"
        assert not v.lost, (v.lost[:5], stopped.log)
        assert not v.recorded_twice
        assert not v.completed_rerun
        assert not v.not_from_ledger
        assert exits["-9"] == len(storm.kills), (exits, stopped.log)
        assert stopped.code == 0, stopped.log
        assert not stopped.left, stopped.left
        assert not any(w["running"] for w in stopped.status["workers"]), stopped.status
    finally:
        if background.is_alive():
            background.join()
        if stopped is None and storm.proc is not None:
            storm.stop()
        app.close()
        store.close()
