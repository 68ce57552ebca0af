"""The engine's crash test: a child process running 50 workflows of 20 steps is SIGKILLed at
random moments at least 20 times and restarted each time (both backends).

At the end: every workflow completed; every step's recorded result is the one first recorded
(checked against a snapshot of the journal taken after every kill); no step body whose
checkpoint had committed ran again (the ledger, written outside the journal, is the witness);
transactional steps' writes happened exactly once; each result equals its journal.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tether.settings import Settings
from tether.store import open_store
from tether.store.base import STEP_OK, RunFilter, Store

pytestmark = pytest.mark.crash

APP = Path(__file__).parent / "apps" / "chain.py"
N, STEPS, KILLS = 50, 20, 20


def env_for(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["TETHER_DATABASE_URL"] = settings.database_url or ""
    env["TETHER_PG_SCHEMA"] = settings.pg_schema
    env["TETHER_MAX_CONCURRENCY"] = "4"
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[2] / "src"), *sys.path])
    return env


def read_ledger(path: Path) -> list[tuple[str, int, int, str]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        run_id, seq, pid, value = line.split(",")
        rows.append((run_id, int(seq), int(pid), value))
    return rows


def journal(store: Store) -> dict[tuple[str, int], str]:
    """Committed step results: (run, seq) -> the JSON string recorded."""
    out = {}
    for run in store.list_runs(RunFilter(limit=10_000)):
        for rec in store.load_steps(run.id):
            if rec.status == STEP_OK and rec.output is not None:
                out[(rec.run_id, rec.seq)] = json.loads(rec.output)
    return out


def tx_rows(settings: Settings, table: str) -> collections.Counter[tuple[str, int]]:
    url = settings.database_url or ""
    if url.startswith("sqlite:///"):
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            rows = conn.execute(f"SELECT run_id, seq FROM {table}").fetchall()
        finally:
            conn.close()
    else:
        import psycopg

        with psycopg.connect(url) as pg:
            rows = pg.execute(f"SELECT run_id, seq FROM {table}").fetchall()
    return collections.Counter((r[0], int(r[1])) for r in rows)


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(APP), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_ready(proc: subprocess.Popen[str], timeout: float = 30) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"child did not start: {line!r}\n{err[-3000:]}")
    assert time.monotonic() < deadline


@pytest.mark.timeout(300)
def test_kill_storm__nothing_lost_nothing_repeated(settings: Settings, tmp_path: Path):
    ledger = tmp_path / "ledger.csv"
    table = f"crash_tx_{uuid.uuid4().hex[:8]}"
    args = [str(ledger), table, str(N), str(STEPS)]
    env = env_for(settings)
    store = open_store(settings)
    store.migrate()
    rng = random.Random(int(os.environ.get("TETHER_CRASH_SEED", "0")) or None)
    snapshots: list[tuple[int, dict[tuple[str, int], str]]] = []  # (killed pid, journal)
    kills = 0
    try:
        while kills < KILLS:
            proc = spawn(args, env)
            wait_ready(proc)
            time.sleep(rng.uniform(0.02, 0.6))
            if proc.poll() is not None:
                proc.communicate()
                break  # finished before we could kill it: the run is too short
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            kills += 1
            snapshots.append((proc.pid, journal(store)))
        assert kills >= KILLS, f"the work finished after only {kills} kills"
        final = spawn(args, env)
        out, err = final.communicate(timeout=180)
        assert "DONE" in out, err[-3000:]

        runs = store.list_runs(RunFilter(limit=10_000))
        assert len(runs) == N
        assert {r.status for r in runs} == {"SUCCEEDED"}
        recorded = journal(store)
        assert len(recorded) == N * STEPS
        for run in runs:
            steps = store.load_steps(run.id)
            assert [s.seq for s in steps] == list(range(STEPS)), "journal has a gap"
            assert run.output is not None
            assert json.loads(run.output) == [recorded[(run.id, i)] for i in range(STEPS)]

        # Every step's recorded result is the one first recorded.
        for _, snap in snapshots:
            changed = {k for k, v in snap.items() if recorded[k] != v}
            assert not changed, f"recorded results changed after a kill: {sorted(changed)[:5]}"

        # No completed (checkpointed) step body ran again after the kill that found it done.
        executions = read_ledger(ledger)
        pids_in_order = [pid for pid, _ in snapshots]
        rerun = []
        for i, (_, snap) in enumerate(snapshots):
            later = set(pids_in_order[i + 1 :]) | {final.pid}
            rerun += [(r, s, p) for r, s, p, _ in executions if p in later and (r, s) in snap]
        assert not rerun, f"completed steps ran again: {rerun[:5]}"
        # Each recorded value came from an execution in the ledger.
        logged = {(r, s, v) for r, s, _, v in executions}
        assert all((r, s, v) in logged for (r, s), v in recorded.items())

        # Transactional steps: exactly one row per step, none lost, none doubled.
        rows = tx_rows(settings, table)
        expected = {(f"chain-{i:03d}", s) for i in range(N) for s in range(STEPS) if s % 5 == 4}
        assert set(rows) == expected
        assert set(rows.values()) == {1}

        counts = collections.Counter((r, s) for r, s, _, _ in executions)
        reexecuted = sum(1 for c in counts.values() if c > 1)
        print(
            f"\nkills={kills} step executions={len(executions)} "
            f"steps re-executed after an interrupted attempt={reexecuted} "
            f"recoveries={sum(r.recoveries for r in runs)}"
        )
    finally:
        store.close()
