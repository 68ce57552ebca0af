"""Row builders for the store contract suite."""

from __future__ import annotations

import time
import uuid

from tether.store.base import STEP_OK, Lease, NewRun, StepRecord, WorkerRow

NOW = 1_800_000_000.0


def new_run(
    run_id: str | None = None,
    *,
    name: str = "wf",
    owner: str | None = "w1",
    input_hash: str = "h1",
    created_at: float = NOW,
) -> NewRun:
    return NewRun(
        id=run_id or f"run-{uuid.uuid4().hex[:8]}",
        name=name,
        input=b'{"args":[]}',
        input_hash=input_hash,
        created_at=created_at,
        owner=owner,
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
