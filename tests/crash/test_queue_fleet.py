"""A queue shared by several worker processes: limits hold across all of them, nothing twice.

Three worker processes share one database and the queue `fleet` (concurrency 4, at most 10
starts per second). A client enqueues 60 jobs. Measured from the recorded start and end times:
never more than 4 runs started and unfinished, never more than 10 starts in any one-second
window; every job ran exactly once (a ledger outside the journal), spread over the workers.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tether
from tether.settings import Settings
from tether.store.base import RunFilter

pytestmark = pytest.mark.crash

APP = Path(__file__).parent / "apps" / "fleet_worker.py"
JOBS, WORKERS = 60, 3
EPS = 0.005


@pytest.mark.timeout(180)
def test_queue_fleet__limits_hold_across_processes(settings: Settings, tmp_path: Path):
    path = tmp_path / "ledger.csv"
    env = dict(
        os.environ,
        TETHER_DATABASE_URL=settings.database_url or "",
        TETHER_PG_SCHEMA=settings.pg_schema,
        TETHER_POLL_INTERVAL="0.05",
        PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2] / "src"), *sys.path]),
    )
    client = tether.App(settings=settings)
    queue = client.register_queue(tether.Queue("fleet", concurrency=4, rate_limit=(10, 1.0)))

    @client.workflow(name="job")
    async def job(n: int) -> int:
        return n

    async def enqueue_all() -> list[str]:
        return [(await client.enqueue(queue, job, n, id=f"job-{n:03d}")).id for n in range(JOBS)]

    ids = asyncio.run(enqueue_all())
    procs = [
        subprocess.Popen(
            [sys.executable, str(APP), str(path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(WORKERS)
    ]
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done = client.store.list_runs(RunFilter(statuses=("SUCCEEDED",), limit=1000))
            if len(done) == JOBS:
                break
            time.sleep(0.1)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err[-2000:]
    runs = client.store.list_runs(RunFilter(limit=1000))
    client.close()
    assert sorted(r.id for r in runs) == ids
    assert {r.status for r in runs} == {"SUCCEEDED"}

    # Each time is stamped by the worker that writes it, when it issues the write: a claim
    # that waited for the database's lock while another run's completion committed can carry
    # a start a fraction of a millisecond before that completion's end. EPS absorbs that; a
    # real excess would overlap by a whole job (50 ms).
    spans = sorted((r.started_at or 0.0, r.finished_at or 0.0) for r in runs)
    worst = max(sum(1 for s, e in spans if s <= start < e - EPS) for start, _ in spans)
    assert worst <= 4, f"{worst} runs of the queue were going at once"
    starts = [s for s, _ in spans]
    busiest = max(sum(1 for t in starts if s <= t < s + 1.0 - EPS) for s in starts)
    assert busiest <= 10, f"{busiest} starts in one second"

    executions = [line.split(",") for line in path.read_text().split()]
    per_run = collections.Counter(run_id for run_id, _ in executions)
    assert set(per_run.values()) == {1}
    assert len(per_run) == JOBS
    by_worker = collections.Counter(pid for _, pid in executions)
    print(f"\nmost at once={worst} busiest second={busiest} jobs per worker={dict(by_worker)}")
    assert len(by_worker) >= 2, "the jobs should spread over the worker processes"
