"""Contract: cancel, resume, fork, deadlines, schedules (both backends)."""

from __future__ import annotations

import dataclasses

import pytest

from tether.errors import LeaseLostError, WorkflowConflictError, WorkflowNotFoundError
from tether.store.base import STEP_ERROR, STEP_OK, STEP_RETRY, Store

from .helpers import NOW, lease, new_run, step


def test_cancel_run__cancels_unfinished_descendants_and_fences_writes(store: Store):
    store.create_run(new_run("root"))
    store.create_run(dataclasses.replace(new_run("kid"), parent_id="root"))
    store.create_run(dataclasses.replace(new_run("grandkid"), parent_id="kid"))
    store.create_run(dataclasses.replace(new_run("done-kid"), parent_id="root"))
    store.complete_run(lease("done-kid"), "SUCCEEDED", b"1", None, NOW)
    assert store.cancel_run("root", b'{"type": "x"}', NOW + 1) == ["grandkid", "kid", "root"]
    statuses = store.run_statuses(["root", "kid", "grandkid", "done-kid", "nope"])
    assert statuses == {
        "root": "CANCELLED",
        "kid": "CANCELLED",
        "grandkid": "CANCELLED",
        "done-kid": "SUCCEEDED",
    }
    assert isinstance(store.record_steps([(lease("root"), step("root", 0))])[0], LeaseLostError)
    assert store.get_run("root").error == b'{"type": "x"}'  # type: ignore[union-attr]
    assert store.cancel_run("root", None, NOW + 2) == []


def test_cancel_run__unknown__raises(store: Store):
    with pytest.raises(WorkflowNotFoundError):
        store.cancel_run("ghost", None, NOW)


def test_resume_run__failed_run__pending_again_without_its_failure(store: Store):
    store.create_run(new_run("a"))
    store.record_steps([(lease("a"), step("a", 0))])
    store.record_steps([(lease("a"), step("a", 1, status=STEP_ERROR, output=None))])
    store.record_steps([(lease("a"), step("a", 2))])
    store.record_steps([(lease("a"), step("a", 3, status=STEP_ERROR, output=None))])
    store.complete_run(lease("a"), "FAILED", None, b"{}", NOW)
    row = store.resume_run("a", NOW + 1)
    assert (row.status, row.owner, row.error, row.finished_at, row.recoveries) == (
        "PENDING",
        None,
        None,
        None,
        0,
    )
    assert [(s.seq, s.status) for s in store.load_steps("a")] == [
        (0, STEP_OK),
        (1, STEP_ERROR),
        (2, STEP_OK),
    ]
    [(new_lease, _)] = store.claim_runs("w2", ["wf"], 10, NOW + 2, 10.0)
    assert new_lease.epoch == 2


def test_resume_run__running_or_succeeded__unchanged(store: Store):
    store.create_run(new_run("a"))
    assert store.resume_run("a", NOW).status == "RUNNING"
    store.complete_run(lease("a"), "SUCCEEDED", b"1", None, NOW)
    assert store.resume_run("a", NOW).status == "SUCCEEDED"
    with pytest.raises(WorkflowNotFoundError):
        store.resume_run("ghost", NOW)


def test_fork_run__copies_final_entries_before_position(store: Store):
    store.create_run(new_run("a", input_hash="hh"))
    store.record_steps([(lease("a"), step("a", i, output=str(i).encode())) for i in range(4)])
    store.record_steps([(lease("a"), step("a", 4, status=STEP_RETRY, output=None))])
    fork = store.fork_run("a", "a-fork", 3, NOW + 5)
    assert (fork.id, fork.name, fork.status, fork.input_hash, fork.owner) == (
        "a-fork",
        "wf",
        "PENDING",
        "hh",
        None,
    )
    assert [s.output for s in store.load_steps("a-fork")] == [b"0", b"1", b"2"]
    all_in = store.fork_run("a", "a-fork2", 100, NOW)
    assert all_in.status == "PENDING"
    assert len(store.load_steps("a-fork2")) == 4  # the retry entry is not final: not copied
    with pytest.raises(WorkflowConflictError):
        store.fork_run("a", "a-fork", 1, NOW)
    with pytest.raises(WorkflowNotFoundError):
        store.fork_run("ghost", "x", 1, NOW)


def test_expire_runs__past_deadline__cancelled_with_reason(store: Store):
    store.create_run(dataclasses.replace(new_run("late"), deadline_at=NOW + 10))
    store.create_run(dataclasses.replace(new_run("kid"), parent_id="late"))
    store.create_run(dataclasses.replace(new_run("fine"), deadline_at=NOW + 100))
    assert store.expire_runs(b'{"deadline": true}', NOW + 5) == []
    assert store.expire_runs(b'{"deadline": true}', NOW + 11) == ["kid", "late"]
    assert store.get_run("late").error == b'{"deadline": true}'  # type: ignore[union-attr]
    assert store.get_run("fine").status == "RUNNING"  # type: ignore[union-attr]


def test_schedule_ticks__compare_and_set(store: Store):
    assert store.last_tick("nightly") is None
    assert store.advance_schedule("nightly", None, NOW)
    assert not store.advance_schedule("nightly", None, NOW)
    assert store.advance_schedule("nightly", NOW, NOW + 60)
    assert not store.advance_schedule("nightly", NOW, NOW + 60)
    assert store.last_tick("nightly") == NOW + 60
