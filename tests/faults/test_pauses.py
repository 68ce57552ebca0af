"""Fencing without a network fault, on both databases.

- A worker paused (SIGSTOP) past its lease loses its runs to another worker, which resumes
  them from the journal; resumed (SIGCONT), the paused worker's late checkpoint writes are
  refused and the journal stays the new owner's.
- Timers whose deadline passed while every worker was down (SIGKILLed) fire when a worker
  comes back.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.faults.fleet import (
    Ledger,
    client,
    interleaved,
    start_runs,
    start_worker,
    stop_worker,
    verdict,
    wait_finished,
    worker_env,
)
from tether.settings import Settings
from tether.store import open_store

pytestmark = pytest.mark.crash

FAST_LEASE: dict[str, object] = {"poll_interval": 0.2, "lease_ttl": 3.0, "heartbeat_interval": 1.0}


def wait_for(check: object, within: float, what: str) -> None:
    assert callable(check)
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def executions(ledger: Path, run: str, pid: int) -> int:
    return sum(1 for r, _, p, _, _ in Ledger.read(ledger).executed if r == run and p == pid)


@pytest.mark.timeout(120)
def test_paused_worker__taken_over__late_writes_refused(settings: Settings, tmp_path: Path):
    ledger = tmp_path / "ledger.csv"
    store = open_store(settings)
    store.migrate()
    app = client(settings)
    env = worker_env(settings, FAST_LEASE)
    paused = start_worker(ledger, env)
    heir = None
    try:
        ids = start_runs(app, 1, 12, 1.0, "chain_sync", "s") + start_runs(app, 1, 12, 1.0)
        wait_for(lambda: executions(ledger, "s-0000", paused.pid) >= 2, 30, "the sync run")
        heir = start_worker(ledger, env)
        # Stop it just after a step body began: its thread is inside the body.
        begun = executions(ledger, "s-0000", paused.pid)
        wait_for(lambda: executions(ledger, "s-0000", paused.pid) > begun, 10, "a new step")
        paused.send_signal(signal.SIGSTOP)
        stopped = time.time()
        wait_for(
            lambda: (
                {r for r, _, p, _ in Ledger.read(ledger).committed if p == heir.pid} == set(ids)
            ),
            30,
            "the other worker to resume both runs",
        )
        paused.send_signal(signal.SIGCONT)
        wait_for(lambda: Ledger.read(ledger).fenced, 20, "the paused worker's late write refused")
        statuses = wait_finished(store, ids, 60)
        seen = Ledger.read(ledger)
        v = verdict(store, ids, 12, seen)
        first = min(t for _, _, p, t in seen.committed if p == heir.pid)
        late = interleaved(store, ids, paused.pid, heir.pid)
        print(
            f"\n[{store.dialect}] taken over {first - stopped:.2f}s after SIGSTOP (lease 3s); "
            f"late writes refused: {[(r, s) for r, s, _, _ in seen.fenced]}"
        )
        assert set(statuses.values()) == {"SUCCEEDED"}
        assert {p for _, _, p, _ in seen.fenced} == {paused.pid}
        assert not late, "the journal has the paused worker's outcomes after the heir's"
        assert not v.recorded_twice
        assert not v.completed_rerun
        assert not v.not_from_ledger
        for r, seq, _, _ in seen.fenced:  # the refused position holds the heir's outcome
            assert any(c[:3] == (r, seq, heir.pid) for c in seen.committed)
    finally:
        stop_worker(paused)
        if heir is not None:
            stop_worker(heir)
        app.close()
        store.close()


@pytest.mark.timeout(120)
def test_timers_due_while_every_worker_was_down_fire_on_return(settings: Settings, tmp_path: Path):
    ledger = tmp_path / "ledger.csv"
    store = open_store(settings)
    store.migrate()
    app = client(settings)
    env = worker_env(settings, {**FAST_LEASE, "wait_in_memory": 0.2})
    workers = [start_worker(ledger, env), start_worker(ledger, env)]
    try:
        ids = start_runs(app, 6, 4.0, 0.0, "nap", "n")
        wait_for(lambda: set(store.run_statuses(ids).values()) == {"WAITING"}, 30, "runs asleep")
        for proc in workers:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
        time.sleep(5.0)  # every deadline passes with no worker alive
        assert set(store.run_statuses(ids).values()) == {"WAITING"}
        back = time.time()
        workers = [start_worker(ledger, env)]
        statuses = wait_finished(store, ids, 60)
        seen = Ledger.read(ledger)
        late = [t - due for _, _, t, due in seen.woke]
        print(
            f"\n[{store.dialect}] {len(ids)} timers due while no worker ran; fired "
            f"{min(t for _, _, t, _ in seen.woke) - back:.2f}s to "
            f"{max(t for _, _, t, _ in seen.woke) - back:.2f}s after a worker came back "
            f"({max(late):.2f}s after their deadline at most)"
        )
        assert set(statuses.values()) == {"SUCCEEDED"}
        assert sorted(r for r, *_ in seen.woke) == sorted(ids)  # each fired once
        assert all(p == workers[0].pid for _, p, _, _ in seen.woke)
    finally:
        for proc in workers:
            stop_worker(proc)
        app.close()
        store.close()
