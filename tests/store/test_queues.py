"""Contract: queue limits when claiming (both backends)."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from tether.errors import DeduplicatedError
from tether.store.base import Batch, QueueLimits, Store

from .helpers import NOW, lease, new_run, worker

TTL = 10.0


def queued(
    run_id: str,
    *,
    queue: str = "q",
    created_at: float = NOW,
    priority: int = 0,
    partition: str | None = None,
    dedup_id: str | None = None,
):
    return dataclasses.replace(
        new_run(run_id, owner=None, created_at=created_at),
        queue=queue,
        priority=priority,
        partition=partition,
        dedup_id=dedup_id,
    )


def claim(
    store: Store, limits: QueueLimits, worker_id: str = "w1", now: float = NOW, limit: int = 100
) -> list[str]:
    store.register_worker(worker(worker_id, heartbeat_at=now))
    return [r.id for _, r in store.claim_runs(worker_id, ["wf"], limit, now, TTL, [limits])]


def test_queued_runs__never_claimed_without_their_queue(store: Store):
    store.create_run(queued("a"))
    assert [r.id for _, r in store.claim_runs("w1", ["wf"], 10, NOW, TTL)] == []
    assert claim(store, QueueLimits("q")) == ["a"]
    assert store.get_run("a").started_at == NOW  # type: ignore[union-attr]


def test_concurrency__counts_running_and_waiting_across_workers(store: Store):
    for i in range(5):
        store.create_run(queued(f"r{i}", created_at=NOW + i))
    limits = QueueLimits("q", concurrency=2)
    assert claim(store, limits, "w1") == ["r0", "r1"]
    assert claim(store, limits, "w2") == []
    store.suspend(lease("r0", "w1", 1), NOW + 1000, [], [], NOW)  # waiting still counts
    assert claim(store, limits, "w2") == []
    store.complete_run(lease("r1", "w1", 1), "SUCCEEDED", b"1", None, NOW)
    assert claim(store, limits, "w2") == ["r2"]


def test_worker_concurrency__per_worker(store: Store):
    for i in range(5):
        store.create_run(queued(f"r{i}", created_at=NOW + i))
    limits = QueueLimits("q", worker_concurrency=2)
    assert claim(store, limits, "w1") == ["r0", "r1"]
    assert claim(store, limits, "w1") == []
    assert claim(store, limits, "w2") == ["r2", "r3"]


def test_rate_limit__starts_per_window(store: Store):
    for i in range(6):
        store.create_run(queued(f"r{i}", created_at=NOW + i))
    limits = QueueLimits("q", rate_limit=(2, 10.0))
    assert claim(store, limits, now=NOW) == ["r0", "r1"]
    assert claim(store, limits, now=NOW + 5) == []
    assert claim(store, limits, now=NOW + 10.5) == ["r2", "r3"]


def test_priority__lower_number_first_then_oldest(store: Store):
    store.create_run(queued("late-urgent", created_at=NOW + 5, priority=-1))
    store.create_run(queued("old", created_at=NOW, priority=0))
    store.create_run(queued("newer", created_at=NOW + 1, priority=0))
    store.create_run(queued("low", created_at=NOW - 5, priority=3))
    assert set(claim(store, QueueLimits("q"), limit=3)) == {"late-urgent", "old", "newer"}
    assert claim(store, QueueLimits("q"), limit=3) == ["low"]


def test_partitions__one_at_a_time_per_key(store: Store):
    for i, part in enumerate(["a", "a", "b", "a", "b", "c"]):
        store.create_run(queued(f"r{i}", created_at=NOW + i, partition=part))
    limits = QueueLimits("q", partition_concurrency=1)
    assert claim(store, limits) == ["r0", "r2", "r5"]
    assert claim(store, limits) == []
    store.complete_run(lease("r0", "w1", 1), "SUCCEEDED", b"1", None, NOW)
    assert claim(store, limits) == ["r1"]


def test_dedup_id__taken_while_unfinished(store: Store):
    store.create_run(queued("a", dedup_id="job-7"))
    with pytest.raises(DeduplicatedError, match="job-7") as info:
        store.create_run(queued("b", dedup_id="job-7"))
    assert info.value.existing_id == "a"
    result = store.write_batch(Batch(runs=[queued("c", dedup_id="job-7")]))
    assert isinstance(result.runs[0], DeduplicatedError)
    [(claimed, _)] = store.claim_runs("w1", ["wf"], 1, NOW, TTL, [QueueLimits("q")])
    store.complete_run(claimed, "SUCCEEDED", b"1", None, NOW)
    row, created = store.create_run(queued("b", dedup_id="job-7"))
    assert created
    assert row.dedup_id == "job-7"


def test_queue_counts__by_queue_and_status(store: Store):
    store.create_run(queued("a", queue="x"))
    store.create_run(queued("b", queue="x"))
    store.create_run(queued("c", queue="y"))
    store.create_run(new_run("plain"))
    claim(store, QueueLimits("x", concurrency=1))
    assert store.queue_counts() == [("x", "PENDING", 1), ("x", "RUNNING", 1), ("y", "PENDING", 1)]


def test_concurrency__concurrent_claimers_never_exceed_global_limit(store: Store, make_store):
    for i in range(40):
        store.create_run(queued(f"r{i:02d}", created_at=NOW + i))
    limits = QueueLimits("q", concurrency=3)
    stores = [make_store() for _ in range(4)]
    for i in range(4):
        store.register_worker(worker(f"w{i}"))
    barrier = threading.Barrier(4)
    claimed: list[str] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        barrier.wait()
        for _ in range(30):
            got = stores[i].claim_runs(f"w{i}", ["wf"], 5, NOW, TTL, [limits])
            with lock:
                claimed.extend(r.id for _, r in got)
            active = stores[i].queue_counts()
            running = sum(n for q, s, n in active if q == "q" and s in ("RUNNING", "WAITING"))
            assert running <= 3
            for lse, _ in got:
                stores[i].complete_run(lse, "SUCCEEDED", b"1", None, NOW)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(claimed) == len(set(claimed)) == 40
