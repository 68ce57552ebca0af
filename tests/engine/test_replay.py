"""Replay and recovery in one process: a run abandoned mid-way resumes from its journal
without re-running completed steps (both backends). The SIGKILL versions live in tests/crash."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

import tether
from tests.conftest import MakeApp
from tether.store.base import RunFilter


def define(app: tether.App, ledger: Counter[str], gate: asyncio.Event | None, stop_at: int = 3):
    """A 6-step workflow that blocks at step `stop_at` until `gate` is set."""

    @app.step(name="work")
    async def work(i: int) -> int:
        ledger[f"work-{i}"] += 1
        if gate is not None and i == stop_at:
            await gate.wait()
        return i * 10

    @app.workflow(name="six")
    async def six() -> list[int]:
        return [await work(i) for i in range(6)]

    return six


async def wait_for_steps(app: tether.App, run_id: str, n: int) -> None:
    for _ in range(400):
        if len(app.store.load_steps(run_id)) >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"run {run_id} never reached {n} steps")


async def test_recovery__abandoned_run__resumes_without_rerunning_completed_steps(
    make_app: MakeApp,
):
    ledger: Counter[str] = Counter()
    first = make_app()
    define(first, ledger, asyncio.Event())
    async with first:
        await first.start("six", id="r1")
        await wait_for_steps(first, "r1", 3)
    assert first.store.get_run("r1").status == "RUNNING"  # type: ignore[union-attr]

    second = make_app()
    define(second, ledger, None)
    async with second:
        result = await second.retrieve("r1").result(timeout=10)
    assert result == [0, 10, 20, 30, 40, 50]
    assert ledger == Counter(
        {"work-0": 1, "work-1": 1, "work-2": 1, "work-3": 2, "work-4": 1, "work-5": 1}
    )
    row = second.store.get_run("r1")
    assert row is not None
    assert (row.recoveries, row.epoch) == (1, 2)
    assert [s.seq for s in second.store.load_steps("r1")] == list(range(6))


async def test_recover__explicit_call__returns_resumed_handles(make_app: MakeApp):
    ledger: Counter[str] = Counter()
    first = make_app()
    define(first, ledger, asyncio.Event())
    async with first:
        await first.start("six", id="r2")
        await wait_for_steps(first, "r2", 2)

    second = make_app(poll_interval=60.0)
    define(second, ledger, None)
    async with second:
        # entering already recovered it; a second call finds nothing left to take
        assert await second.recover() == []
        assert await second.retrieve("r2").result(timeout=10) == [0, 10, 20, 30, 40, 50]
    with pytest.raises(tether.NotInWorkflowError):
        await second.recover()


async def test_replay__step_renamed__fails_run_with_nondeterminism_error(make_app: MakeApp):
    ledger: Counter[str] = Counter()
    first = make_app()
    define(first, ledger, asyncio.Event())
    async with first:
        await first.start("six", id="nd")
        await wait_for_steps(first, "nd", 3)

    second = make_app()

    @second.step(name="other")
    async def other(i: int) -> int:
        return i

    @second.workflow(name="six")
    async def six() -> list[int]:
        return [await other(i) for i in range(6)]

    async with second:
        with pytest.raises(tether.WorkflowFailedError) as info:
            await second.retrieve("nd").result(timeout=10)
    cause = info.value.cause
    assert isinstance(cause, tether.NonDeterminismError)
    assert (cause.seq, cause.recorded, cause.attempted) == (0, "work", "other")
    assert "position 0 holds step 'work' but the code now calls 'other'" in str(cause)
    assert len(second.store.load_steps("nd")) == 3  # nothing appended by the wrong code


async def test_replay__workflow_swallows_nondeterminism__run_still_fails(make_app: MakeApp):
    first = make_app()
    define(first, Counter(), asyncio.Event(), stop_at=1)
    async with first:
        await first.start("six", id="sw")
        await wait_for_steps(first, "sw", 1)

    second = make_app()

    @second.step(name="other")
    async def other() -> int:
        return 1

    @second.workflow(name="six")
    async def six() -> str:
        try:
            await other()
        except Exception:
            return "swallowed"
        return "no error"

    async with second:
        with pytest.raises(tether.WorkflowFailedError) as info:
            await second.retrieve("sw").result(timeout=10)
    assert isinstance(info.value.cause, tether.NonDeterminismError)


async def test_replay__code_now_ends_early__fails_with_nondeterminism(make_app: MakeApp):
    first = make_app()
    define(first, Counter(), asyncio.Event())
    async with first:
        await first.start("six", id="short")
        await wait_for_steps(first, "short", 3)

    second = make_app()

    @second.workflow(name="six")
    async def six() -> list[int]:
        return []

    async with second:
        with pytest.raises(tether.WorkflowFailedError, match="returned first"):
            await second.retrieve("short").result(timeout=10)


async def test_replay__recorded_step_error__raised_again_as_same_type(make_app: MakeApp):
    calls: Counter[str] = Counter()
    first = make_app()
    gate = asyncio.Event()

    def define_flaky(app: tether.App, block: asyncio.Event | None):
        @app.step(name="boom", retry=None)
        async def boom() -> int:
            calls["boom"] += 1
            raise KeyError("missing")

        @app.step(name="block")
        async def block_step() -> int:
            calls["block"] += 1
            if block is not None:
                await block.wait()
            return 1

        @app.workflow(name="handles")
        async def handles() -> str:
            caught = "nothing"
            try:
                await boom()
            except KeyError as exc:
                caught = f"caught {exc!r}"
            await block_step()
            return caught

    define_flaky(first, gate)
    async with first:
        await first.start("handles", id="err")
        await wait_for_steps(first, "err", 1)
    second = make_app()
    define_flaky(second, None)
    async with second:
        assert await second.retrieve("err").result(timeout=10) == "caught KeyError('missing')"
    assert calls == Counter({"boom": 1, "block": 2})


async def test_step_error__recorded_with_type_message_traceback(app: tether.App):
    @app.step(retry=None)
    async def fails() -> None:
        raise ValueError("bad value 42")

    @app.workflow()
    async def wf() -> None:
        await fails()

    async with app:
        handle = await app.start(wf, id="f")
        with pytest.raises(tether.WorkflowFailedError, match="bad value 42") as info:
            await handle.result(timeout=10)
        [step] = await handle.steps()
    assert isinstance(info.value.cause, ValueError)
    assert (step.status, step.error_type, step.error_message) == (
        "error",
        "builtins.ValueError",
        "bad value 42",
    )
    record = app.store.load_steps("f")[0]
    assert record.error is not None
    assert b"Traceback" in record.error
    assert b"failed after 1 attempt" in record.error


async def test_step_error__unimportable_type__raised_as_step_error(app: tether.App):
    from tether.engine import failures

    error = failures.decode_error(
        b'{"type": "gone.module.Vanished", "message": "m", "args": ["m"], "traceback": "tb"}'
    )
    assert isinstance(error, tether.StepError)
    assert (error.type_name, error.remote_message, error.remote_traceback) == (
        "gone.module.Vanished",
        "m",
        "tb",
    )


async def test_lease_lost__worker_declared_dead__its_late_write_is_fenced(make_app: MakeApp):
    """A worker whose run was taken over writes nothing more for it."""
    ledger: Counter[str] = Counter()
    release = asyncio.Event()
    a, b = make_app(), make_app()
    define(a, ledger, release, stop_at=2)
    define(b, ledger, None)
    async with a:
        await a.start("six", id="fence")
        await wait_for_steps(a, "fence", 2)
        worker_a = a._worker
        assert worker_a is not None
        a.store.stop_workers([worker_a.id], worker_a.clock.now())
        async with b:
            assert await b.retrieve("fence").result(timeout=10) == [0, 10, 20, 30, 40, 50]
        release.set()  # A's step 2 finishes now; its checkpoint must be refused
        for _ in range(200):
            if "fence" not in worker_a.running:
                break
            await asyncio.sleep(0.01)
        assert "fence" not in worker_a.running
    steps = a.store.load_steps("fence")
    assert [s.seq for s in steps] == list(range(6))
    assert ledger["work-2"] == 2  # ran on both workers, recorded once
    row = a.store.get_run("fence")
    assert row is not None
    assert row.status == "SUCCEEDED"
    assert row.owner != worker_a.id


async def test_poison_pill__too_many_recoveries__run_failed(make_app: MakeApp):
    first = make_app()
    define(first, Counter(), asyncio.Event(), stop_at=0)
    async with first:
        await first.start("six", id="poison")
        await wait_for_steps(first, "poison", 0)
        await asyncio.sleep(0.05)
    for _ in range(2):
        app = make_app(max_recoveries=1)
        define(app, Counter(), asyncio.Event(), stop_at=0)
        async with app:
            await asyncio.sleep(0.1)
    final = make_app(max_recoveries=1)
    define(final, Counter(), None)
    async with final:
        with pytest.raises(tether.WorkflowFailedError) as info:
            await final.retrieve("poison").result(timeout=10)
    assert isinstance(info.value.cause, tether.RecoveryLimitError)
    assert [r.status for r in final.store.list_runs(RunFilter())] == ["FAILED"]


async def test_start__existing_run_claimed_here_meanwhile__not_run_from_scratch(
    make_app: MakeApp,
):
    """app.start of an id this worker has just claimed (and not launched yet) must not run it
    again with an empty journal: the claim launches it, with its journal."""
    ledger: Counter[str] = Counter()
    gate = asyncio.Event()
    a, b = make_app(), make_app(poll_interval=60.0)
    define(a, ledger, gate)
    define(b, ledger, None)
    async with a:
        await a.start("six", id="race")
        await wait_for_steps(a, "race", 3)
        worker_a = a._worker
        assert worker_a is not None
        async with b:
            worker_b = b._worker
            assert worker_b is not None
            b.store.stop_workers([worker_a.id], worker_b.clock.now())  # a "dies"
            [(lease, row)] = b.store.claim_runs(worker_b.id, ["six"], 10, worker_b.clock.now(), 2.0)
            await b.start("six", id="race")  # the claim loop has not launched it yet
            assert "race" not in worker_b.running
            worker_b._launch_claimed(lease, row)
            assert await b.retrieve("race").result(timeout=10) == [0, 10, 20, 30, 40, 50]
        gate.set()
    assert ledger["work-0"] == 1
    assert ledger["work-1"] == 1


async def test_declared_stopped__only_worker__resumes_its_own_abandoned_runs(make_app: MakeApp):
    """A worker declared stopped while it runs abandons its runs; they must not strand.

    (Found by the engine model in test_state_machine.py: the worker registered again under
    the same id, so the runs it had abandoned were owned by a live worker and nobody, itself
    included, ever claimed them.)"""
    ledger: Counter[str] = Counter()
    gate = asyncio.Event()
    app = make_app()
    define(app, ledger, gate, stop_at=2)
    async with app:
        handle = await app.start("six", id="alone")
        await wait_for_steps(app, "alone", 2)
        worker = app._worker
        assert worker is not None
        first_id = worker.id
        app.store.stop_workers([first_id], worker.clock.now())
        for _ in range(400):
            if worker.id != first_id:
                break
            await asyncio.sleep(0.01)
        gate.set()
        assert await handle.result(timeout=10) == [0, 10, 20, 30, 40, 50]
    assert ledger["work-0"] == ledger["work-1"] == 1
    assert [s.seq for s in app.store.load_steps("alone")] == list(range(6))
