"""`tether worker MODULE:APP` as a real process: runs workflows, drains on SIGTERM.

The ledger (a file the steps append to, outside the journal) is the witness of what ran,
where, and how many times.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import tether
from tether.cli.main import app as cli
from tether.settings import Settings
from tether.store import open_store

from .helpers import (
    APP,
    cleanup,
    env_for,
    ledger_lines,
    results,
    start_runs,
    stop,
    tether_process,
    wait_for,
)

pytestmark = pytest.mark.crash


def _workers(settings: Settings) -> list[str]:
    store = open_store(settings)
    try:
        return [w.id for w in store.list_workers()]
    finally:
        store.close()


@pytest.mark.timeout(120)
def test_worker__runs_workflows_from_a_module__sigterm_exits_0(
    settings: Settings, tmp_path: Path, fleet_client: tether.App
):
    ledger = tmp_path / "ledger"
    ids = [f"job-{i}" for i in range(4)]
    start_runs(fleet_client, ids)  # PENDING: only a worker with `job` version 1 runs them
    worker = tether_process(
        "worker", [APP, "--concurrency", "2"], env_for(settings, ledger), tmp_path / "log"
    )
    with cleanup(worker):
        assert results(fleet_client, ids) == [0, 2, 4, 6]
        assert stop(worker) == 0
    pids = {pid for _, _, _, pid in ledger_lines(ledger)}
    assert pids == {worker.pid}
    assert _workers(settings) == []  # deregistered on the way out


@pytest.mark.timeout(120)
def test_sigterm__step_in_flight_finishes_and_is_recorded__next_worker_resumes(
    settings: Settings, tmp_path: Path, fleet_client: tether.App
):
    ledger, gate = tmp_path / "ledger", tmp_path / "gate"
    start_runs(fleet_client, ["drained"])
    env = env_for(settings, ledger, FLEET_GATE=str(gate), FLEET_STEP_SECONDS="1")
    first = tether_process("worker", [APP, "--grace", "30"], env, tmp_path / "log-a")
    with cleanup(first):
        wait_for(lambda: ledger_lines(ledger), "the first step to start")
        first.send_signal(15)  # SIGTERM while the step is in flight
        gate.touch()  # the step goes on: it sleeps a second, then returns
        assert first.wait(60) == 0
    row = fleet_client.store.get_run("drained")
    assert row is not None
    assert (row.status, row.owner, row.recoveries) == ("WAITING", None, 0)  # released
    assert [(s.seq, s.name, s.status) for s in fleet_client.store.load_steps("drained")] == [
        (0, "first", "ok")
    ]
    second = tether_process("worker", [APP], env, tmp_path / "log-b")
    with cleanup(second):
        assert results(fleet_client, ["drained"]) == [0]
        assert stop(second) == 0
    assert ledger_lines(ledger) == [
        ("first", "start", "drained", first.pid),
        ("first", "end", "drained", first.pid),
        ("second", "end", "drained", second.pid),
    ]
    row = fleet_client.store.get_run("drained")
    assert row is not None
    assert row.recoveries == 0  # a drained run is handed over, not recovered


@pytest.mark.timeout(120)
def test_sigterm__grace_expires__exit_1_and_the_run_is_resumed_at_once(
    settings: Settings, tmp_path: Path, fleet_client: tether.App
):
    ledger, gate = tmp_path / "ledger", tmp_path / "gate"
    start_runs(fleet_client, ["stuck"])
    env = env_for(settings, ledger, FLEET_GATE=str(gate), TETHER_LEASE_TTL="600")
    first = tether_process("worker", [APP, "--grace", "0.5"], env, tmp_path / "log-a")
    with cleanup(first):
        wait_for(lambda: ledger_lines(ledger), "the first step to start")
        assert stop(first) == 1  # the step never finished: cut off
    assert _workers(settings) == []  # declared stopped: no waiting for its 600 s lease
    gate.touch()
    second = tether_process("worker", [APP], env, tmp_path / "log-b")
    with cleanup(second):
        assert results(fleet_client, ["stuck"]) == [0]
        assert stop(second) == 0
    assert [(s, e, pid) for s, e, _, pid in ledger_lines(ledger)] == [
        ("first", "start", first.pid),
        ("first", "start", second.pid),
        ("first", "end", second.pid),
        ("second", "end", second.pid),
    ]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_colon", "is not of the form MODULE:APP"),
        ("tests.fleet.apps.missing:app", "cannot import module 'tests.fleet.apps.missing'"),
        ("tests.fleet.apps.ledger:nothing", "has no attribute 'nothing'"),
        ("tests.fleet.apps.ledger:NOT_AN_APP", "is a int, not a tether.App"),
    ],
)
def test_worker__bad_target__clear_error_exit_1(target: str, message: str, tmp_path):
    result = CliRunner().invoke(cli, ["worker", target, "--db", f"sqlite:///{tmp_path}/x.db"])
    assert result.exit_code == 1
    assert message in result.output


@pytest.mark.timeout(60)
def test_worker__database_down_at_start__logged_exit_1_no_traceback(tmp_path: Path):
    env = env_for(
        Settings(database_url="postgresql://postgres@127.0.0.1:1/none"),
        tmp_path / "ledger",
        TETHER_CONNECT_TIMEOUT="1",
        TETHER_STORE_RETRY_TIMEOUT="1",
    )
    log = tmp_path / "log"
    proc = tether_process("worker", [APP], env, log)
    with cleanup(proc):
        assert proc.wait(50) == 1
    text = log.read_text()
    assert "the worker cannot run: PostgreSQL at" in text, text
    assert "Traceback" not in text, text
