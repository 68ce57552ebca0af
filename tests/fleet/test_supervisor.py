"""`tether supervise`: keeps N workers running, restarts one that is SIGKILLed, stops in order."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import tether
from tether.cli import worker as worker_cli
from tether.cli.main import app as cli
from tether.server.supervisor import Backoff, Supervisor
from tether.settings import Settings

from .helpers import (
    APP,
    cleanup,
    env_for,
    free_port,
    http_get,
    ledger_lines,
    results,
    start_runs,
    stop,
    tether_process,
    wait_for,
)

pytestmark = pytest.mark.crash


def _status(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def _pids(path: Path) -> list[int] | None:
    status = _status(path)
    if status is None:
        return None
    pids = [w["pid"] for w in status["workers"]]
    return pids if all(pids) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.timeout(180)
def test_supervise__sigkilled_worker_restarted__runs_complete__sigterm_stops_all(
    settings: Settings, tmp_path: Path, fleet_client: tether.App
):
    ledger, status_file, log = tmp_path / "ledger", tmp_path / "status.json", tmp_path / "log"
    port = free_port()
    args = [APP, "--workers", "2", "--grace", "10", "--status-file", str(status_file)]
    args += ["--health-port", f"127.0.0.1:{port}"]
    env = env_for(settings, ledger, FLEET_STEP_SECONDS="0.2")
    supervisor = tether_process("supervise", args, env, log)
    with cleanup(supervisor):
        before = wait_for(lambda: _pids(status_file), "two workers")
        assert len(set(before)) == 2
        wait_for(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, "readiness")
        assert http_get(f"http://127.0.0.1:{port}/healthz") == (200, {"status": "ok"})

        ids = [f"fleet-{i}" for i in range(8)]
        start_runs(fleet_client, ids)
        wait_for(lambda: ledger_lines(ledger), "work to start")
        os.kill(before[0], signal.SIGKILL)
        after = wait_for(
            lambda: (p := _pids(status_file)) and p[0] != before[0] and p, "a restarted worker"
        )
        assert after[1] == before[1]
        assert results(fleet_client, ids) == [2 * i for i in range(8)]

        code, body = http_get(f"http://127.0.0.1:{port}/status")
        assert code == 200
        assert [w["pid"] for w in body["workers"]] == after
        assert [w["restarts"] for w in body["workers"]] == [1, 0]
        assert body["workers"][0]["last_exit"] == -signal.SIGKILL

        assert stop(supervisor) == 0
    assert not any(_alive(pid) for pid in after)
    final = _status(status_file)
    assert final is not None
    assert [w["running"] for w in final["workers"]] == [False, False]
    text = log.read_text()
    assert f"worker[0] pid {before[0]} exited with code -9 (SIGKILL)" in text
    assert f"worker[0] restarted: pid {after[0]}" in text
    # Every run reached its last step (one cut off by the kill may have run it twice).
    assert {run for s, _, run, _ in ledger_lines(ledger) if s == "second"} == set(ids)


def test_backoff__doubles_to_a_ceiling_and_starts_over_after_a_stable_run():
    policy = Backoff(initial=0.5, maximum=4.0, stable_after=10.0)
    assert [policy.delay(n) for n in range(6)] == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0]


class _Restarts(logging.Handler):
    """Keeps the supervisor's "restarting in" lines and signals the first one."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "restarting in" in record.getMessage():
            self.lines.append(record.getMessage())
            self.seen.set()


async def _first_restart_line(backoff: Backoff) -> str:
    """Run a child that exits after 0.3 s; return the supervisor's restart log line."""
    child = [sys.executable, "-c", "import time; time.sleep(0.3); raise SystemExit(3)"]
    supervisor = Supervisor(child, 1, grace=1.0, backoff=backoff)
    handler = _Restarts()
    log = logging.getLogger("tether.supervisor")
    log.addHandler(handler)
    try:
        running = asyncio.create_task(supervisor.run())
        await asyncio.wait_for(handler.seen.wait(), 20)
        supervisor.stop()
        assert await running == 0
    finally:
        log.removeHandler(handler)
    return handler.lines[0]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("stable_after", "delay"), [(0.1, "0.0s"), (10.0, "0.5s")])
def test_stable_after__a_child_up_that_long_restarts_at_once_a_quicker_one_backs_off(
    stable_after: float, delay: str
):
    line = asyncio.run(_first_restart_line(Backoff(initial=0.5, stable_after=stable_after)))
    assert "exited with code 3" in line
    assert line.endswith(f"restarting in {delay}")


def test_supervise_cli__stable_after_reaches_the_supervisor(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    made: list[Backoff] = []

    class Recorder(Supervisor):
        async def run(self) -> int:
            made.append(self.backoff)
            return 0

    monkeypatch.setattr(worker_cli, "Supervisor", Recorder)
    db = ["--db", f"sqlite:///{tmp_path}/x.db"]
    result = CliRunner().invoke(cli, ["supervise", APP, *db, "--stable-after", "2.5"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["supervise", APP, *db])
    assert result.exit_code == 0, result.output
    assert made == [Backoff(stable_after=2.5), Backoff()]
