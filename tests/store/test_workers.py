"""Contract: workers, heartbeats and claims (both backends)."""

from __future__ import annotations

import dataclasses
import threading

from tether.settings import Settings
from tether.store.base import QueueLimits, Store

from .helpers import NOW, age_worker, lease, new_run, worker

TTL = 10.0


def test_claim_runs__pending__claimed_once_with_epoch_bump(store: Store):
    store.create_run(new_run("a", owner=None))
    claimed = store.claim_runs("w1", ["wf"], 10, NOW, TTL)
    assert [(lease.run_id, lease.worker_id, lease.epoch) for lease, _ in claimed] == [
        ("a", "w1", 1)
    ]
    row = claimed[0][1]
    assert (row.status, row.owner, row.recoveries) == ("RUNNING", "w1", 0)
    store.register_worker(worker("w1"))
    assert store.claim_runs("w2", ["wf"], 10, NOW, TTL) == []


def test_claim_runs__only_named_workflows(store: Store):
    store.create_run(new_run("a", name="mine", owner=None))
    store.create_run(new_run("b", name="other", owner=None))
    assert [r.id for _, r in store.claim_runs("w1", ["mine"], 10, NOW, TTL)] == ["a"]


def test_claim_runs__respects_limit_oldest_first(store: Store):
    for i in range(5):
        store.create_run(new_run(f"r{i}", owner=None, created_at=NOW + i))
    assert [r.id for _, r in store.claim_runs("w1", ["wf"], 2, NOW, TTL)] == ["r0", "r1"]


def test_claim_runs__live_owner__not_claimed(store: Store):
    store.register_worker(worker("w1", heartbeat_at=NOW))
    store.create_run(new_run("a", owner="w1"))
    assert store.claim_runs("w2", ["wf"], 10, NOW + TTL - 1, TTL) == []


def test_claim_runs__owner_heartbeat_lapsed__taken_over_as_recovery(
    store: Store, settings: Settings
):
    store.register_worker(worker("w1", heartbeat_at=NOW))
    store.create_run(new_run("a", owner="w1"))
    age_worker(settings, "w1", TTL + 1)
    [(lease, row)] = store.claim_runs("w2", ["wf"], 10, NOW, TTL)
    assert (lease.worker_id, lease.epoch, row.recoveries) == ("w2", 2, 1)


def test_claim_runs__own_run_with_lapsed_heartbeat__not_reclaimed_by_its_owner(
    store: Store, settings: Settings
):
    store.register_worker(worker("w1", heartbeat_at=NOW))
    store.create_run(new_run("a", owner="w1"))
    age_worker(settings, "w1", TTL + 1)
    assert store.claim_runs("w1", ["wf"], 10, NOW, TTL) == []  # it still executes there
    assert [r.id for _, r in store.claim_runs("w2", ["wf"], 10, NOW, TTL)] == ["a"]


def test_claim_runs__owner_stopped__taken_over_at_once(store: Store):
    store.register_worker(worker("w1", heartbeat_at=NOW))
    store.create_run(new_run("a", owner="w1"))
    store.stop_workers(["w1"], NOW)
    assert [r.id for _, r in store.claim_runs("w2", ["wf"], 10, NOW, TTL)] == ["a"]


def test_claim_runs__finished_runs__never_claimed(store: Store):
    store.create_run(new_run("a", owner=None))
    [(lease, _)] = store.claim_runs("w1", ["wf"], 10, NOW, TTL)
    store.complete_run(lease, "SUCCEEDED", b"1", None, NOW)
    assert store.claim_runs("w2", ["wf"], 10, NOW + 1000, TTL) == []


def test_heartbeat__live__true_and_keeps_runs(store: Store):
    store.register_worker(worker("w1", heartbeat_at=NOW))
    store.create_run(new_run("a", owner="w1"))
    assert store.heartbeat("w1", NOW + 8)
    assert store.claim_runs("w2", ["wf"], 10, NOW + 12, TTL) == []


def test_heartbeat__stopped_or_unknown__false(store: Store):
    store.register_worker(worker("w1"))
    store.stop_workers(["w1"], NOW)
    assert not store.heartbeat("w1", NOW + 1)
    assert not store.heartbeat("nobody", NOW + 1)


def test_list_workers__omits_stopped(store: Store):
    store.register_worker(worker("w1"))
    store.register_worker(worker("w2", pid=5))
    store.stop_workers(["w1"], NOW)
    assert [(w.id, w.pid, w.host, w.boot_id, w.pid_start) for w in store.list_workers()] == [
        ("w2", 5, "host-a", "boot-1", "77")
    ]


def test_register_worker__forgets_workers_silent_for_a_day(store: Store, settings: Settings):
    store.register_worker(worker("old", heartbeat_at=NOW))
    age_worker(settings, "old", 90000)
    store.register_worker(worker("new", heartbeat_at=NOW))
    assert [w.id for w in store.list_workers()] == ["new"]


def test_claim_runs__concurrent_claimers__each_run_claimed_exactly_once(store: Store, make_store):
    for i in range(60):
        store.create_run(new_run(f"r{i:02d}", owner=None, created_at=NOW + i))
    stores = [make_store() for _ in range(4)]
    for idx in range(len(stores)):
        store.register_worker(worker(f"w{idx}", heartbeat_at=NOW))
    barrier = threading.Barrier(len(stores))
    claimed: dict[str, list[str]] = {}

    def claim(idx: int) -> None:
        mine: list[str] = []
        barrier.wait()
        while batch := stores[idx].claim_runs(f"w{idx}", ["wf"], 3, NOW, TTL):
            mine.extend(r.id for _, r in batch)
        claimed[f"w{idx}"] = mine

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    everything = [rid for ids in claimed.values() for rid in ids]
    assert sorted(everything) == [f"r{i:02d}" for i in range(60)]


# -- versions: a run is resumed only by code of the version that started it ---------------------


def test_claim_runs__other_version__not_claimed_same_version_claimed(store: Store):
    store.create_run(new_run("v2", owner=None, version="2"))
    assert store.claim_runs("old", [("wf", "1")], 10, NOW, TTL) == []
    assert store.claim_runs("plain", ["wf"], 10, NOW, TTL) == []  # a bare name: no version
    [(lease, row)] = store.claim_runs("new", [("wf", "1"), ("wf", "2")], 10, NOW, TTL)
    assert (lease.run_id, lease.worker_id, row.version) == ("v2", "new", "2")


def test_claim_runs__unversioned_run__only_by_unversioned_workflow(store: Store):
    store.create_run(new_run("plain", owner=None))
    assert store.claim_runs("w1", [("wf", "1")], 10, NOW, TTL) == []
    assert [r.id for _, r in store.claim_runs("w2", [("wf", None)], 10, NOW, TTL)] == ["plain"]


def test_claim_runs__dead_owner__recovered_only_by_a_worker_with_the_version(store: Store):
    store.register_worker(worker("w1"))
    store.create_run(dataclasses.replace(new_run("a", owner="w1"), version="7"))
    store.stop_workers(["w1"], NOW)
    assert store.claim_runs("w-v6", [("wf", "6")], 10, NOW, TTL) == []
    [(lease, row)] = store.claim_runs("w-v7", [("wf", "7")], 10, NOW, TTL)
    assert (lease.worker_id, lease.epoch, row.recoveries) == ("w-v7", 2, 1)


def test_claim_runs__woken_waiter__claimed_only_with_its_version(store: Store):
    store.create_run(new_run("a", version="3"))
    assert store.suspend(lease("a"), NOW + 5, [], [], NOW)
    assert store.claim_runs("w2", [("wf", "2")], 10, NOW + 6, TTL) == []
    assert [r.id for _, r in store.claim_runs("w3", [("wf", "3")], 10, NOW + 6, TTL)] == ["a"]


def test_claim_runs__queued_run__claimed_only_with_its_version(store: Store):
    store.create_run(dataclasses.replace(new_run("q1", owner=None, version="b"), queue="q"))
    store.create_run(
        dataclasses.replace(new_run("q2", owner=None, version="b"), queue="p", partition="k")
    )
    limits = [QueueLimits("q"), QueueLimits("p", partition_concurrency=1)]
    assert store.claim_runs("w1", [("wf", "a")], 10, NOW, TTL, limits) == []
    claimed = store.claim_runs("w2", [("wf", "b")], 10, NOW, TTL, limits)
    assert sorted(r.id for _, r in claimed) == ["q1", "q2"]
