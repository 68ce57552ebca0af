"""Contract: the journal, its fencing, and transactional steps (both backends)."""

from __future__ import annotations

import pytest

from tether.errors import LeaseLostError, WorkflowConflictError
from tether.store.base import STEP_ERROR, STEP_OK, STEP_RETRY, RunFilter, Store

from .helpers import NOW, lease, new_run, placeholder, step, unique_table


def test_record_steps__single__is_loaded_back_in_order(store: Store):
    store.create_run(new_run("a"))
    for seq in (0, 1, 2):
        assert store.record_steps([(lease("a"), step("a", seq, output=str(seq).encode()))]) == [
            step("a", seq, output=str(seq).encode())
        ]
    assert [s.output for s in store.load_steps("a")] == [b"0", b"1", b"2"]


def test_record_steps__batch_across_runs__commits_all(store: Store):
    store.create_run(new_run("a"))
    store.create_run(new_run("b"))
    items = [(lease("a"), step("a", 0)), (lease("b"), step("b", 0)), (lease("a"), step("a", 1))]
    assert store.record_steps(items) == [rec for _, rec in items]
    assert len(store.load_steps("a")) == 2
    assert len(store.load_steps("b")) == 1


def test_record_steps__final_entry_exists__first_recorded_stands(store: Store):
    store.create_run(new_run("a"))
    store.record_steps([(lease("a"), step("a", 0, output=b"first"))])
    result = store.record_steps([(lease("a"), step("a", 0, output=b"second"))])
    assert result[0] == step("a", 0, output=b"first")
    assert store.load_steps("a")[0].output == b"first"


def test_record_steps__retry_entry__is_replaced_by_final(store: Store):
    store.create_run(new_run("a"))
    store.record_steps(
        [(lease("a"), step("a", 0, status=STEP_RETRY, output=None, attempts=1, retry_at=NOW + 5))]
    )
    store.record_steps(
        [(lease("a"), step("a", 0, status=STEP_RETRY, output=None, attempts=2, retry_at=NOW + 9))]
    )
    loaded = store.load_steps("a")[0]
    assert (loaded.status, loaded.attempts, loaded.retry_at) == (STEP_RETRY, 2, NOW + 9)
    store.record_steps([(lease("a"), step("a", 0, status=STEP_ERROR, output=None, attempts=3))])
    loaded = store.load_steps("a")[0]
    assert (loaded.status, loaded.attempts, loaded.retry_at) == (STEP_ERROR, 3, None)


def test_record_steps__final_entry__is_never_turned_back_into_retry(store: Store):
    store.create_run(new_run("a"))
    store.record_steps([(lease("a"), step("a", 0))])
    out = store.record_steps([(lease("a"), step("a", 0, status=STEP_RETRY, attempts=5))])
    assert out[0].status == STEP_OK  # type: ignore[union-attr]


def test_record_steps__stale_lease__refused_others_in_batch_still_commit(store: Store):
    store.create_run(new_run("a"))
    store.create_run(new_run("b"))
    out = store.record_steps([(lease("a", epoch=2), step("a", 0)), (lease("b"), step("b", 0))])
    assert isinstance(out[0], LeaseLostError)
    assert out[1] == step("b", 0)
    assert store.load_steps("a") == []
    assert len(store.load_steps("b")) == 1


def test_record_steps__unknown_run__refused(store: Store):
    out = store.record_steps([(lease("ghost"), step("ghost", 0))])
    assert isinstance(out[0], LeaseLostError)
    assert store.load_steps("ghost") == []


def test_record_steps__after_claim_by_other_worker__old_lease_fenced(store: Store):
    store.create_run(new_run("a", owner=None))
    [(first, _)] = store.claim_runs("w1", ["wf"], 10, NOW, 10.0)
    store.stop_workers(["w1"], NOW)
    [(second, _)] = store.claim_runs("w2", ["wf"], 10, NOW, 10.0)
    assert second.epoch == first.epoch + 1
    assert isinstance(store.record_steps([(first, step("a", 0))])[0], LeaseLostError)
    assert store.record_steps([(second, step("a", 0))])[0] == step("a", 0)


def _make_table(store: Store) -> str:
    table = unique_table()

    def create(conn):
        conn.execute(f"CREATE TABLE {table} (v integer)")
        return step("setup", 0)

    store.create_run(new_run("setup"))
    store.record_step_transactionally(lease("setup"), create)
    return table


def _count(store: Store, table: str) -> int:
    box: list[int] = []

    def read(conn):
        box.append(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        raise _Abort

    with pytest.raises(_Abort):
        store.record_step_transactionally(lease("setup"), read)
    return box[0]


class _Abort(Exception):
    pass


def test_record_step_transactionally__commits_body_and_entry_together(store: Store):
    table = _make_table(store)
    store.create_run(new_run("a"))
    p = placeholder(store.dialect)

    def body(conn):
        conn.execute(f"INSERT INTO {table} (v) VALUES ({p})", (7,))
        return step("a", 0, output=b"7")

    assert store.record_step_transactionally(lease("a"), body) == step("a", 0, output=b"7")
    assert _count(store, table) == 1
    assert store.load_steps("a")[0].output == b"7"


def test_record_step_transactionally__body_raises__rolls_back_everything(store: Store):
    table = _make_table(store)
    store.create_run(new_run("a"))
    p = placeholder(store.dialect)

    def body(conn):
        conn.execute(f"INSERT INTO {table} (v) VALUES ({p})", (7,))
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        store.record_step_transactionally(lease("a"), body)
    assert _count(store, table) == 0
    assert store.load_steps("a") == []


def test_record_step_transactionally__lease_lost__rolls_back_body(store: Store):
    table = _make_table(store)
    store.create_run(new_run("a"))
    p = placeholder(store.dialect)

    def body(conn):
        conn.execute(f"INSERT INTO {table} (v) VALUES ({p})", (7,))
        return step("a", 0)

    with pytest.raises(LeaseLostError):
        store.record_step_transactionally(lease("a", epoch=9), body)
    assert _count(store, table) == 0


def test_record_step_transactionally__already_recorded__returns_it_and_rolls_back(store: Store):
    table = _make_table(store)
    store.create_run(new_run("a"))
    store.record_steps([(lease("a"), step("a", 0, output=b"first"))])
    p = placeholder(store.dialect)

    def body(conn):
        conn.execute(f"INSERT INTO {table} (v) VALUES ({p})", (7,))
        return step("a", 0, output=b"second")

    assert store.record_step_transactionally(lease("a"), body).output == b"first"
    assert _count(store, table) == 0


def test_record_steps__same_position_twice_in_batch__applied_in_order(store: Store):
    store.create_run(new_run("a"))
    retry = step("a", 0, status=STEP_RETRY, output=None, attempts=1, retry_at=NOW + 1)
    final = step("a", 0, output=b"done", attempts=2)
    assert store.record_steps([(lease("a"), retry), (lease("a"), final)]) == [retry, final]
    loaded = store.load_steps("a")[0]
    assert (loaded.status, loaded.output, loaded.attempts) == (STEP_OK, b"done", 2)


def test_record_steps__run_already_ended__refused(store: Store):
    store.create_run(new_run("a"))
    store.complete_run(lease("a"), "SUCCEEDED", b"1", None, NOW)
    [outcome] = store.record_steps([(lease("a"), step("a", 0))])
    assert isinstance(outcome, LeaseLostError)
    assert "SUCCEEDED" in str(outcome)
    assert store.load_steps("a") == []


def test_record_step_transactionally__body_driver_error__propagates_unchanged(store: Store):
    store.create_run(new_run("a"))
    raised: list[BaseException] = []

    def body(conn):
        try:
            conn.execute("INSERT INTO no_such_table_here (v) VALUES (1)")
        except Exception as exc:
            raised.append(exc)
            raise
        return step("a", 0)

    with pytest.raises(Exception) as info:  # noqa: PT011 - the driver's own type, per backend
        store.record_step_transactionally(lease("a"), body)
    assert info.value is raised[0]
    assert store.load_steps("a") == []


def test_write_batch__mixed_writes__each_gets_its_outcome(store: Store):
    from tether.store.base import Batch, Completion

    store.create_run(new_run("old", input_hash="h1"))
    store.create_run(new_run("done"))
    store.create_run(new_run("ending"))
    batch = Batch(
        runs=[new_run("fresh"), new_run("old", input_hash="other"), new_run("old")],
        steps=[(lease("old"), step("old", 0)), (lease("old", epoch=5), step("old", 1))],
        completions=[
            Completion(lease("ending"), "SUCCEEDED", b"1", None, NOW),
            Completion(lease("done", epoch=3), "FAILED", None, b"{}", NOW),
        ],
    )
    result = store.write_batch(batch)
    fresh, conflict, same = result.runs
    assert isinstance(fresh, tuple)
    assert fresh[1] is True
    assert isinstance(conflict, WorkflowConflictError)
    assert isinstance(same, tuple)
    assert same[1] is False
    assert result.steps[0] == step("old", 0)
    assert isinstance(result.steps[1], LeaseLostError)
    assert result.completions[0] is None
    assert isinstance(result.completions[1], LeaseLostError)
    assert store.get_run("fresh") is not None
    assert store.get_run("ending").status == "SUCCEEDED"  # type: ignore[union-attr]
    assert store.get_run("done").status == "RUNNING"  # type: ignore[union-attr]
    assert [s.seq for s in store.load_steps("old")] == [0]


def test_write_batch__single_kind_batches(store: Store):
    from tether.store.base import Batch, Completion

    runs = store.write_batch(Batch(runs=[new_run(f"r{i}") for i in range(3)])).runs
    assert [r[1] for r in runs if isinstance(r, tuple)] == [True, True, True]
    steps = store.write_batch(Batch(steps=[(lease(f"r{i}"), step(f"r{i}", 0)) for i in range(3)]))
    assert steps.steps == [step(f"r{i}", 0) for i in range(3)]
    done = Batch(
        completions=[Completion(lease(f"r{i}"), "SUCCEEDED", b"1", None, NOW) for i in range(3)]
    )
    assert store.write_batch(done).completions == [None, None, None]
    assert store.write_batch(done).completions == [None, None, None]  # acknowledged again
    assert {r.status for r in store.list_runs(RunFilter())} == {"SUCCEEDED"}


def test_record_steps__fenced_writer__refused_even_where_the_new_owner_recorded(store: Store):
    store.create_run(new_run("a", owner=None))
    [(first, _)] = store.claim_runs("w1", ["wf"], 10, NOW, 10.0)
    store.stop_workers(["w1"], NOW)
    [(second, _)] = store.claim_runs("w2", ["wf"], 10, NOW, 10.0)
    assert store.record_steps([(second, step("a", 0))])[0] == step("a", 0)
    late = store.record_steps([(first, step("a", 0, output=b'"late"'))])[0]
    assert isinstance(late, LeaseLostError)
    # the writer still holding the lease gets the entry that stands (a lost acknowledgement)
    assert store.record_steps([(second, step("a", 0, output=b'"again"'))])[0] == step("a", 0)
