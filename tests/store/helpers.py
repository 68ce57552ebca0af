"""Row builders for the store contract suite."""

from __future__ import annotations

import contextlib
import sqlite3
import time
import uuid

from tether.settings import Settings
from tether.store.base import STEP_OK, Lease, NewRun, StepRecord, WorkerRow

NOW = 1_800_000_000.0


def new_run(
    run_id: str | None = None,
    *,
    name: str = "wf",
    owner: str | None = "w1",
    input_hash: str = "h1",
    created_at: float = NOW,
    version: str | None = None,
) -> NewRun:
    return NewRun(
        id=run_id or f"run-{uuid.uuid4().hex[:8]}",
        name=name,
        input=b'{"args":[]}',
        input_hash=input_hash,
        created_at=created_at,
        owner=owner,
        version=version,
    )


def step(
    run_id: str,
    seq: int,
    *,
    name: str = "s",
    status: str = STEP_OK,
    output: bytes | None = b"1",
    attempts: int = 1,
    retry_at: float | None = None,
) -> StepRecord:
    return StepRecord(
        run_id=run_id,
        seq=seq,
        name=name,
        status=status,
        output=output,
        error=None if status == STEP_OK else b'{"type":"E"}',
        attempts=attempts,
        started_at=NOW,
        ended_at=NOW + 0.001,
        retry_at=retry_at,
    )


def lease(run_id: str, worker: str = "w1", epoch: int = 1) -> Lease:
    return Lease(run_id, worker, epoch)


def worker(worker_id: str, *, heartbeat_at: float = NOW, pid: int = 4242) -> WorkerRow:
    return WorkerRow(
        id=worker_id,
        host="host-a",
        boot_id="boot-1",
        pid=pid,
        pid_start="77",
        started_at=heartbeat_at,
        heartbeat_at=heartbeat_at,
    )


def placeholder(dialect: str) -> str:
    return "?" if dialect == "sqlite" else "%s"


def unique_table() -> str:
    return f"items_{uuid.uuid4().hex[:10]}"


def wall() -> float:
    return time.time()


def age_worker(settings: Settings, worker_id: str, seconds: float) -> None:
    """Move a worker's heartbeat `seconds` into the past, in the database itself.

    Heartbeats are stamped with the database's clock on PostgreSQL, so a test cannot date
    one in the past through the store: it ages the row instead (on both backends alike).
    """
    url = settings.database_url
    assert url is not None
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn, conn:
            conn.execute(
                "UPDATE workers SET heartbeat_at = heartbeat_at - ? WHERE id = ?",
                (seconds, worker_id),
            )
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg:
        pg.execute(
            f'UPDATE "{settings.pg_schema}".workers '
            "SET heartbeat_at = heartbeat_at - %s * interval '1 second' WHERE id = %s",
            (seconds, worker_id),
        )
