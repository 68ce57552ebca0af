"""Network faults between a worker and PostgreSQL, through the fault proxy.

- A cut shorter than the lease: the holder keeps its runs (nobody steals them) and finishes
  them once the network heals; no step is recorded twice.
- A cut longer than the lease: a worker with a direct connection takes the runs over and
  resumes them from the journal; when the cut ends, the cut-off worker's late checkpoint
  writes reach the database and are refused (the run's epoch moved): the journal stays the
  new owner's.
- A lost commit acknowledgement (the server commits, the client never hears): the retried
  write finds its own row; the step is recorded once and the workflow's caller sees no error.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import tether
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
from tests.faults.proxy import FaultProxy
from tether.settings import Settings
from tether.store import open_store

pytestmark = [pytest.mark.postgres, pytest.mark.crash]


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    with FaultProxy() as p:
        yield p


def wait_for(check: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.timeout(120)
def test_cut_shorter_than_the_lease__holder_keeps_its_runs(
    pg_settings: Settings, proxy: FaultProxy, tmp_path: Path
):
    ledger = tmp_path / "ledger.csv"
    store = open_store(pg_settings)
    store.migrate()
    app = client(pg_settings)
    options: dict[str, object] = {"poll_interval": 0.2}  # default lease (10 s), heartbeat (2 s)
    holder = start_worker(
        ledger, worker_env(pg_settings, options, url=proxy.url(pg_settings.database_url or ""))
    )
    thief = None
    try:
        ids = start_runs(app, 2, 30, 0.2) + start_runs(app, 2, 30, 0.2, "chain_sync", "s")
        wait_for(lambda: {r for r, *_ in Ledger.read(ledger).executed} == set(ids), 20, "claims")
        thief = start_worker(ledger, worker_env(pg_settings, options))
        proxy.blackhole()
        cut = time.time()
        time.sleep(5.0)
        proxy.pass_through()
        healed = time.time()
        statuses = wait_finished(store, ids, 60)
        seen = Ledger.read(ledger)
        v = verdict(store, ids, 30, seen)
        after = [c for c in seen.committed if c[3] > healed]
        print(
            f"\ncut {healed - cut:.1f}s; holder commits after the cut: {len(after)}; "
            f"commits by others: {sum(1 for c in seen.committed if c[2] != holder.pid)}"
        )
        assert set(statuses.values()) == {"SUCCEEDED"}
        assert {pid for _, _, pid, _ in seen.committed} == {holder.pid}, "a run was stolen"
        assert after, "the holder wrote nothing after the cut"
        assert not seen.fenced
        assert not v.recorded_twice
        assert not v.completed_rerun
        assert not v.not_from_ledger
        assert all(r.recoveries == 0 for r in (store.get_run(i) for i in ids) if r)
    finally:
        errors = stop_worker(holder)
        if thief is not None:
            stop_worker(thief)
        app.close()
        store.close()
    assert "Traceback" not in errors, errors


@pytest.mark.timeout(120)
def test_cut_longer_than_the_lease__taken_over_and_late_writes_refused(
    pg_settings: Settings, proxy: FaultProxy, tmp_path: Path
):
    ledger = tmp_path / "ledger.csv"
    store = open_store(pg_settings)
    store.migrate()
    app = client(pg_settings)
    options: dict[str, object] = {"poll_interval": 0.2, "lease_ttl": 3.0, "heartbeat_interval": 1.0}
    url = proxy.url(pg_settings.database_url or "")
    holder = start_worker(ledger, worker_env(pg_settings, options, url=url))
    heir = None
    try:
        ids = start_runs(app, 2, 40, 0.2) + start_runs(app, 2, 40, 0.2, "chain_sync", "s")
        wait_for(lambda: {r for r, *_ in Ledger.read(ledger).executed} == set(ids), 20, "claims")
        heir = start_worker(ledger, worker_env(pg_settings, options))
        proxy.blackhole()
        cut = time.time()
        wait_for(
            lambda: all(
                any(c[0] == r and c[2] == heir.pid for c in Ledger.read(ledger).committed)
                for r in ids
            ),
            30,
            "the runs resumed by the other worker",
        )
        time.sleep(1.0)
        proxy.pass_through()  # the held writes reach the database now
        healed = time.time()
        statuses = wait_finished(store, ids, 60)
        wait_for(lambda: Ledger.read(ledger).fenced, 20, "the late writes refused")
        seen = Ledger.read(ledger)
        v = verdict(store, ids, 40, seen)
        first_heir = min(t for _, _, p, t in seen.committed if p == heir.pid)
        late = interleaved(store, ids, holder.pid, heir.pid)
        print(
            f"\ncut {healed - cut:.1f}s (lease 3s); first step committed by the heir "
            f"{first_heir - cut:.2f}s after the cut; late writes refused: {len(seen.fenced)}; "
            f"runs whose journal mixes the two after the takeover: {len(late)}"
        )
        assert set(statuses.values()) == {"SUCCEEDED"}
        assert seen.fenced
        assert {p for _, _, p, _ in seen.fenced} == {holder.pid}
        assert not late, "the journal has the cut-off worker's outcomes after the heir's"
        recorded = v  # the journal: each value from the one execution the ledger saw commit
        assert not recorded.recorded_twice
        assert not recorded.completed_rerun
        assert not recorded.not_from_ledger
        for r, seq, _, _ in seen.fenced:  # the refused position holds the heir's outcome
            assert any(c[:3] == (r, seq, heir.pid) for c in seen.committed)
    finally:
        stop_worker(holder)
        if heir is not None:
            stop_worker(heir)
        app.close()
        store.close()


@pytest.fixture
def table(pg_database: str) -> Iterator[str]:
    name = f"lost_ack_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (run_id text, seq int)")
    yield name
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f"DROP TABLE {name}")


async def test_lost_commit_acknowledgements__recorded_once_no_error(
    pg_settings: Settings, proxy: FaultProxy, table: str
):
    url = proxy.url(pg_settings.database_url or "")
    settings = dataclasses.replace(
        pg_settings, database_url=url, poll_interval=0.05, heartbeat_interval=0.5, lease_ttl=2.0
    )
    app = tether.App(settings=settings)
    bodies: list[str] = []
    faults: list[Any] = []

    @app.step(name="plain")
    async def plain(n: int) -> int:
        bodies.append("plain")
        # the journal entry of this step: an autocommit INSERT, its reply lost
        faults.append(proxy.lose_next_commit(b".steps AS t (run_id"))
        return n + 1

    @app.transaction(name="tx")
    def tx(conn: Any, n: int) -> int:
        bodies.append("tx")
        conn.execute(f"INSERT INTO {table} VALUES (%s, 1)", (tether.context().workflow_id,))
        if len(faults) == 1:  # the first attempt: its COMMIT's reply lost
            faults.append(proxy.lose_next_commit())
        return n * 2

    @app.workflow(name="lossy")
    async def lossy(n: int) -> int:
        a = await plain(n)
        b = tx(a)
        if len(faults) == 2:  # the run's completion (a pipeline ended by Sync), reply lost
            faults.append(proxy.lose_next_commit(b"finished_at = to_timestamp("))
        return b

    async with app:
        handle = await app.start(lossy, 20, id="lossy-1")
        assert await handle.result(timeout=60) == 42
    try:
        assert len(faults) == 3
        assert all(f.wait(5) for f in faults), "a fault did not happen"
        steps = app.store.load_steps("lossy-1")
        assert [(s.seq, s.name, s.status) for s in steps] == [(0, "plain", "ok"), (1, "tx", "ok")]
        with psycopg.connect(pg_settings.database_url or "") as conn:
            rows = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        assert rows == (1,), "the transactional step's write happened twice"
        assert bodies.count("plain") == 1, "the journal write's retry ran the step again"
        run = app.store.get_run("lossy-1")
        assert run is not None
        assert run.status == "SUCCEEDED"
        assert run.recoveries == 0
        print(f"\nbodies run: {bodies} (a transactional retry rolls its body back)")
    finally:
        app.close()
