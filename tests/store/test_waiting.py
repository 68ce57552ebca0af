"""Contract: suspension, messages, events and waiting on runs (both backends)."""

from __future__ import annotations

import threading

import pytest

from tether.errors import LeaseLostError, WorkflowFinishedError, WorkflowNotFoundError
from tether.store.base import STEP_OK, STEP_WAIT, NewMessage, Store

from .helpers import NOW, lease, new_run, step, worker

TTL = 10.0


def message(run_id: str, topic: str = "t", payload: bytes = b'"hi"', key: str | None = None):
    return NewMessage(run_id, topic, payload, NOW, key)


def claim_one(store: Store, worker: str = "w9", now: float = NOW) -> list[str]:
    return [r.id for _, r in store.claim_runs(worker, ["wf"], 10, now, TTL)]


def test_suspend__timer__waiting_until_due_then_claimed(store: Store):
    store.create_run(new_run("a"))
    assert store.suspend(lease("a"), NOW + 60, [], [], NOW)
    row = store.get_run("a")
    assert row is not None
    assert (row.status, row.owner, row.wake_at) == ("WAITING", None, NOW + 60)
    assert store.next_wake_at() == NOW + 60
    assert claim_one(store, now=NOW + 59) == []
    [(new_lease, claimed)] = store.claim_runs("w9", ["wf"], 10, NOW + 61, TTL)
    assert (claimed.status, claimed.owner, claimed.recoveries) == ("RUNNING", "w9", 0)
    assert new_lease.epoch == 2
    assert claimed.wake_at is None


def test_suspend__stale_lease__raises_and_changes_nothing(store: Store):
    store.create_run(new_run("a"))
    with pytest.raises(LeaseLostError):
        store.suspend(lease("a", epoch=4), NOW + 60, [], [], NOW)
    assert store.get_run("a").status == "RUNNING"  # type: ignore[union-attr]


def test_suspend__message_already_there__does_not_wait(store: Store):
    store.create_run(new_run("a"))
    assert store.send_message(message("a", "t"))
    assert not store.suspend(lease("a"), None, ["other", "t"], [], NOW)
    assert store.get_run("a").status == "RUNNING"  # type: ignore[union-attr]
    assert store.suspend(lease("a"), None, ["other"], [], NOW)


def test_send_message__wakes_waiting_run(store: Store):
    store.create_run(new_run("a"))
    assert store.suspend(lease("a"), None, ["t"], [], NOW)
    assert claim_one(store) == []
    assert store.send_message(message("a", "t"))
    assert claim_one(store, now=NOW + 1) == ["a"]


def test_send_message__same_key_twice__delivered_once(store: Store):
    store.create_run(new_run("a"))
    assert store.send_message(message("a", key="k1"))
    assert not store.send_message(message("a", key="k1", payload=b'"again"'))
    got = store.consume_message(lease("a"), 0, "tether.recv", "t", NOW)
    assert isinstance(got, type(step("a", 0)))
    assert store.consume_message(lease("a"), 1, "tether.recv", "t", NOW) is None


def test_send_message__unknown_or_finished_run__clear_errors(store: Store):
    with pytest.raises(WorkflowNotFoundError):
        store.send_message(message("ghost"))
    store.create_run(new_run("a"))
    store.complete_run(lease("a"), "SUCCEEDED", b"1", None, NOW)
    with pytest.raises(WorkflowFinishedError, match="SUCCEEDED"):
        store.send_message(message("a"))


def test_consume_message__in_order_per_topic_each_once(store: Store):
    store.create_run(new_run("a"))
    for i, topic in enumerate(["t", "u", "t", "t"]):
        store.send_message(message("a", topic, f'"{topic}{i}"'.encode()))
    got = []
    for seq in range(3):
        rec = store.consume_message(lease("a"), seq, "tether.recv", "t", NOW + seq)
        assert rec is not None
        assert not isinstance(rec, LeaseLostError)
        assert (rec.seq, rec.status) == (seq, STEP_OK)
        got.append(rec.output)
    assert got == [b'"t0"', b'"t2"', b'"t3"']
    assert store.consume_message(lease("a"), 3, "tether.recv", "t", NOW) is None
    assert [s.output for s in store.load_steps("a")] == got


def test_consume_message__position_already_journaled__returns_it_consumes_nothing(store: Store):
    store.create_run(new_run("a"))
    store.send_message(message("a", payload=b'"first"'))
    first = store.consume_message(lease("a"), 0, "tether.recv", "t", NOW)
    store.send_message(message("a", payload=b'"second"'))
    again = store.consume_message(lease("a"), 0, "tether.recv", "t", NOW)
    assert again == first
    nxt = store.consume_message(lease("a"), 1, "tether.recv", "t", NOW)
    assert nxt is not None
    assert not isinstance(nxt, LeaseLostError)
    assert nxt.output == b'"second"'


def test_consume_message__replaces_wait_entry_and_keeps_its_start(store: Store):
    store.create_run(new_run("a"))
    wait = step("a", 0, name="tether.recv", status=STEP_WAIT, output=None, retry_at=NOW + 30)
    store.record_steps([(lease("a"), wait)])
    store.send_message(message("a"))
    rec = store.consume_message(lease("a"), 0, "tether.recv", "t", NOW + 5)
    assert rec is not None
    assert not isinstance(rec, LeaseLostError)
    assert (rec.status, rec.started_at, rec.ended_at) == (STEP_OK, NOW, NOW + 5)


def test_consume_message__lease_lost__message_stays_unread(store: Store):
    store.create_run(new_run("a"))
    store.send_message(message("a"))
    assert isinstance(store.consume_message(lease("a", epoch=3), 0, "r", "t", NOW), LeaseLostError)
    assert store.consume_message(lease("a"), 0, "r", "t", NOW) is not None


def test_consume_message__concurrent_takers__each_message_once(store: Store, make_store):
    store.create_run(new_run("a"))
    for i in range(40):
        store.send_message(message("a", payload=f"{i}".encode()))
    stores = [make_store() for _ in range(3)]
    barrier = threading.Barrier(3)
    taken: list[bytes] = []
    lock = threading.Lock()
    positions = iter(range(1000))

    def take(s: Store) -> None:
        barrier.wait()
        while True:
            with lock:
                seq = next(positions)
            rec = s.consume_message(lease("a"), seq, "r", "t", NOW)
            if rec is None:
                return
            assert not isinstance(rec, LeaseLostError)
            with lock:
                taken.append(rec.output or b"")

    threads = [threading.Thread(target=take, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(taken, key=int) == [f"{i}".encode() for i in range(40)]


def test_wait_on_run__woken_when_it_ends(store: Store):
    store.register_worker(worker("w1"))  # the child's owner is alive
    store.create_run(new_run("parent"))
    store.create_run(new_run("child"))
    assert store.suspend(lease("parent"), None, [], ["child"], NOW)
    assert claim_one(store) == []
    store.complete_run(lease("child"), "SUCCEEDED", b"1", None, NOW + 1)
    assert claim_one(store, now=NOW + 2) == ["parent"]


def test_wait_on_run__already_ended_or_unknown__does_not_wait(store: Store):
    store.create_run(new_run("parent"))
    store.create_run(new_run("child"))
    store.complete_run(lease("child"), "FAILED", None, b"{}", NOW)
    assert not store.suspend(lease("parent"), None, [], ["child"], NOW)
    assert not store.suspend(lease("parent"), None, [], ["nobody"], NOW)
    assert store.get_run("parent").status == "RUNNING"  # type: ignore[union-attr]


def test_wait_on_run__woken_when_it_is_cancelled(store: Store):
    store.register_worker(worker("w1"))
    store.create_run(new_run("parent"))
    store.create_run(new_run("child"))
    assert store.suspend(lease("parent"), None, [], ["child"], NOW)
    store.cancel_run("child", None, NOW + 1)
    assert claim_one(store, now=NOW + 2) == ["parent"]


def test_set_event__journal_and_value_together_last_write_wins(store: Store):
    store.create_run(new_run("a"))
    assert store.get_event("a", "progress") is None
    assert store.set_event(
        lease("a"), step("a", 0, name="tether.set_event"), "progress", b"0.5"
    ) == step("a", 0, name="tether.set_event")
    store.set_event(lease("a"), step("a", 1, name="tether.set_event"), "progress", b"1.0")
    assert store.get_event("a", "progress") == b"1.0"
    again = store.set_event(
        lease("a"), step("a", 1, name="tether.set_event", output=b"x"), "progress", b"replayed"
    )
    assert again == step("a", 1, name="tether.set_event")
    assert store.get_event("a", "progress") == b"1.0"


def test_set_event__lease_lost__sets_nothing(store: Store):
    store.create_run(new_run("a"))
    out = store.set_event(lease("a", epoch=2), step("a", 0), "k", b"1")
    assert isinstance(out, LeaseLostError)
    assert store.get_event("a", "k") is None
