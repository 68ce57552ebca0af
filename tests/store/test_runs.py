"""Contract: creating, reading, listing and completing runs (both backends)."""

from __future__ import annotations

import dataclasses

import pytest

from tether.errors import LeaseLostError, WorkflowConflictError
from tether.store.base import Batch, Completion, Lease, RunFilter, Store

from .helpers import NOW, lease, new_run


def test_create_run__new__returns_created_row(store: Store):
    row, created = store.create_run(new_run("a", owner="w1"))
    assert created
    assert (row.id, row.status, row.owner, row.epoch, row.recoveries) == (
        "a",
        "RUNNING",
        "w1",
        1,
        0,
    )
    assert store.get_run("a") == row


def test_create_run__without_owner__is_pending(store: Store):
    row, _ = store.create_run(new_run("a", owner=None))
    assert (row.status, row.owner, row.epoch) == ("PENDING", None, 0)


def test_create_run__same_id_same_input__returns_existing(store: Store):
    first, _ = store.create_run(new_run("a"))
    again, created = store.create_run(new_run("a", owner="w2", created_at=NOW + 5))
    assert not created
    assert again == first


def test_create_run__same_id_other_input__raises_conflict(store: Store):
    store.create_run(new_run("a", input_hash="h1"))
    with pytest.raises(WorkflowConflictError, match="different input") as info:
        store.create_run(new_run("a", input_hash="h2"))
    assert info.value.workflow_id == "a"
    assert store.get_run("a").input_hash == "h1"  # type: ignore[union-attr]


def test_create_run__same_id_other_workflow__raises_conflict(store: Store):
    store.create_run(new_run("a", name="wf1"))
    with pytest.raises(WorkflowConflictError, match="wf1"):
        store.create_run(new_run("a", name="wf2"))


def test_get_run__unknown__returns_none(store: Store):
    assert store.get_run("nope") is None


def test_list_runs__filters_and_orders_newest_first(store: Store):
    store.create_run(new_run("a", name="x", created_at=NOW + 1))
    store.create_run(new_run("b", name="y", created_at=NOW + 2))
    store.create_run(new_run("c", name="x", owner=None, created_at=NOW + 3))
    assert [r.id for r in store.list_runs(RunFilter())] == ["c", "b", "a"]
    assert [r.id for r in store.list_runs(RunFilter(name="x"))] == ["c", "a"]
    assert [r.id for r in store.list_runs(RunFilter(statuses=("PENDING",)))] == ["c"]
    assert [r.id for r in store.list_runs(RunFilter(limit=1))] == ["c"]
    assert [r.id for r in store.list_runs(RunFilter(created_before=NOW + 2.5))] == ["b", "a"]


def test_complete_run__under_lease__records_outcome(store: Store):
    store.create_run(new_run("a"))
    store.complete_run(lease("a"), "SUCCEEDED", b"42", None, NOW + 1)
    row = store.get_run("a")
    assert row is not None
    assert (row.status, row.output, row.error, row.finished_at) == (
        "SUCCEEDED",
        b"42",
        None,
        NOW + 1,
    )


def test_complete_run__twice_same_lease__is_idempotent(store: Store):
    store.create_run(new_run("a"))
    store.complete_run(lease("a"), "FAILED", None, b"{}", NOW)
    store.complete_run(lease("a"), "FAILED", None, b"{}", NOW)
    assert store.get_run("a").status == "FAILED"  # type: ignore[union-attr]


def test_complete_run__stale_epoch__raises_lease_lost_and_writes_nothing(store: Store):
    store.create_run(new_run("a"))
    with pytest.raises(LeaseLostError):
        store.complete_run(lease("a", epoch=7), "SUCCEEDED", b"1", None, NOW)
    assert store.get_run("a").status == "RUNNING"  # type: ignore[union-attr]


@pytest.mark.parametrize("via_batch", [False, True])
def test_complete_run__run_released_to_waiting__lease_lost_and_still_waiting(
    store: Store, via_batch: bool
):
    """A suspended run's lease is no longer its own: a late completion under it is refused.

    (Found by the store model in test_state_machine.py: the completion used to be accepted
    while the run was WAITING at the same epoch.)"""
    store.create_run(new_run("a"))
    assert store.suspend(lease("a"), NOW + 60, [], [], NOW)
    _complete_refused(store, lease("a"), via_batch)
    row = store.get_run("a")
    assert row is not None
    assert (row.status, row.output, row.wake_at) == ("WAITING", None, NOW + 60)


@pytest.mark.parametrize("via_batch", [False, True])
def test_complete_run__cancelled_then_resumed__old_lease_cannot_complete(
    store: Store, via_batch: bool
):
    """Resuming keeps the epoch; the owner from before the cancel must not end the new run."""
    store.create_run(new_run("a"))
    store.cancel_run("a", b"{}", NOW)
    store.resume_run("a", NOW + 1)
    _complete_refused(store, lease("a"), via_batch)
    row = store.get_run("a")
    assert row is not None
    assert (row.status, row.output) == ("PENDING", None)


def _complete_refused(store: Store, held: Lease, via_batch: bool) -> None:
    if via_batch:
        two = [Completion(held, "SUCCEEDED", b"1", None, NOW), _other_completion(store)]
        result = store.write_batch(Batch(completions=two))
        assert isinstance(result.completions[0], LeaseLostError)
        assert result.completions[1] is None
    else:
        with pytest.raises(LeaseLostError, match=r"the run is (WAITING|PENDING)"):
            store.complete_run(held, "SUCCEEDED", b"1", None, NOW)


def _other_completion(store: Store) -> Completion:
    """A valid completion of another run, so the batch takes the several-runs path."""
    store.create_run(new_run("b"))
    return Completion(lease("b"), "SUCCEEDED", b"2", None, NOW)


def test_complete_run__unknown_run__raises_lease_lost(store: Store):
    with pytest.raises(LeaseLostError, match="does not exist"):
        store.complete_run(lease("ghost"), "SUCCEEDED", b"1", None, NOW)


def test_payloads__binary_bytes__round_trip(store: Store):
    blob = bytes(range(256)) * 3
    store.create_run(dataclasses.replace(new_run("bin"), input=blob))
    assert store.get_run("bin").input == blob  # type: ignore[union-attr]
