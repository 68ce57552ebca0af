"""/healthz and /readyz of `tether worker --health-port`: ready, schema not current, draining,
database unreachable."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tether.settings import Settings
from tether.store import migrate

from .helpers import (
    APP,
    Proxy,
    cleanup,
    env_for,
    free_port,
    http_get,
    ledger_lines,
    start_runs,
    tether_process,
    wait_for,
)

pytestmark = pytest.mark.crash


def _readyz(port: int) -> tuple[int, object]:
    return http_get(f"http://127.0.0.1:{port}/readyz")


def _ready(port: int) -> bool:
    return _readyz(port)[0] == 200


def _reason(port: int, reason: str):
    code, body = _readyz(port)
    return code == 503 and isinstance(body, dict) and body["reason"] == reason and body


def _execute(settings: Settings, sql: str) -> None:
    url = settings.database_url or ""
    if url.startswith("sqlite:///"):
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        with conn:
            conn.execute(sql)
        conn.close()
    else:
        with psycopg.connect(url, autocommit=True) as pg:
            pg.execute(sql.replace("schema_version", f'"{settings.pg_schema}".schema_version'))


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    env = env_for(settings, tmp_path / "ledger", FLEET_GATE=str(tmp_path / "gate"))
    proc = tether_process(
        "worker", [APP, "--health-port", str(port), "--grace", "30"], env, tmp_path / "log"
    )
    with cleanup(proc):
        yield proc, port


@pytest.mark.timeout(120)
def test_health__ready__schema_not_current__draining(settings, tmp_path, worker, fleet_client):
    proc, port = worker
    wait_for(lambda: _ready(port), "readiness")
    assert http_get(f"http://127.0.0.1:{port}/healthz") == (200, {"status": "ok"})
    code, status = http_get(f"http://127.0.0.1:{port}/status")
    assert code == 200
    assert (status["pid"], status["draining"]) == (proc.pid, False)

    dialect = "sqlite" if (settings.database_url or "").startswith("sqlite") else "postgresql"
    newer = migrate.latest(dialect) + 1
    _execute(settings, f"INSERT INTO schema_version (version) VALUES ({newer})")
    body = wait_for(lambda: _reason(port, "schema"), "readiness to see the schema")
    assert "upgrade tether" in body["detail"]
    _execute(settings, f"DELETE FROM schema_version WHERE version = {newer}")
    wait_for(lambda: _ready(port), "readiness again")

    start_runs(fleet_client, ["held"])
    wait_for(lambda: ledger_lines(tmp_path / "ledger"), "the step to start")
    proc.send_signal(15)
    wait_for(lambda: _reason(port, "draining"), "readiness to say draining")
    assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200  # alive while draining
    (tmp_path / "gate").touch()
    assert proc.wait(60) == 0
    assert http_get(f"http://127.0.0.1:{port}/healthz") == (0, None)


@pytest.mark.postgres
@pytest.mark.timeout(120)
def test_health__database_unreachable__503_then_ready_again(pg_settings: Settings, tmp_path):
    proxy = Proxy(("127.0.0.1", 5432))
    assert pg_settings.database_url is not None
    dbname = pg_settings.database_url.rpartition("/")[2]
    through = Settings(
        database_url=f"postgresql://postgres@127.0.0.1:{proxy.port}/{dbname}",
        pg_schema=pg_settings.pg_schema,
    )
    port = free_port()
    env = env_for(through, tmp_path / "ledger", TETHER_CONNECT_TIMEOUT="1")
    proc = tether_process("worker", [APP, "--health-port", str(port)], env, tmp_path / "log")
    with cleanup(proc), contextlib.closing(proxy):
        wait_for(lambda: _ready(port), "readiness")
        proxy.cut()
        body = wait_for(lambda: _reason(port, "database_unreachable"), "the outage to show")
        assert body["status"] == "unavailable"
        assert http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200  # alive: not restarted
        proxy.restore()
        wait_for(lambda: _ready(port), "readiness after the outage")
        proc.send_signal(15)
        assert proc.wait(60) == 0
