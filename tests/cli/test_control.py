"""`tether workflows cancel|resume|fork` change the runs a worker sees (both backends)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

import tether
from tests.conftest import MakeApp
from tests.engine.helpers import eventually, journal_names, status
from tether.codec import ZlibCodec
from tether.store import open_store
from tether.store.base import RunFilter

from .helpers import ainvoke


def define_waiting(app: tether.App, ledger: Counter[str]) -> None:
    """`approval` prepares, then waits for a message on "go"; `parent` waits for its child."""

    @app.step(name="prepare")
    async def prepare() -> str:
        ledger["prepare"] += 1
        return "ready"

    @app.workflow(name="approval")
    async def approval() -> list[Any]:
        return [await prepare(), await tether.recv("go")]

    @app.workflow(name="parent")
    async def parent() -> list[Any]:
        return await approval()


def define_chain(app: tether.App, ledger: Counter[str]) -> None:
    @app.step(name="work")
    async def work(i: int) -> int:
        ledger[f"work-{i}"] += 1
        return i * 10

    @app.workflow(name="chain")
    async def chain() -> list[int]:
        return [await work(i) for i in range(4)]


async def test_cancel__waiting_run_and_its_child__cancelled_result_raises(make_app: MakeApp):
    app = make_app(wait_in_memory=0.05)
    define_waiting(app, Counter())
    async with app:
        handle = await app.start("parent", id="par")
        await eventually(lambda: status(app, "par:0") == "WAITING", what="child evicted")
        await eventually(lambda: status(app, "par") == "WAITING", what="parent evicted")

        result = await ainvoke(app, "workflows", "cancel", "par")

        assert result.exit_code == 0, result.output
        assert "cancelled 2 run(s)" in result.output
        assert status(app, "par") == "CANCELLED"
        assert status(app, "par:0") == "CANCELLED"
        with pytest.raises(tether.WorkflowCancelledError):
            await handle.result(timeout=10)


async def test_cancel__ended_run__says_so_and_changes_nothing(make_app: MakeApp):
    app = make_app()
    define_chain(app, Counter())
    async with app:
        await (await app.start("chain", id="done")).result(timeout=10)

    result = await ainvoke(app, "workflows", "cancel", "done", "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"id": "done", "status": "SUCCEEDED", "cancelled": []}
    assert status(app, "done") == "SUCCEEDED"
    text = await ainvoke(app, "workflows", "cancel", "done")
    assert "had already ended (SUCCEEDED)" in text.output


async def test_cancel__unknown_id__exit_1_with_message(app: tether.App):
    app.store.migrate()
    result = await ainvoke(app, "workflows", "cancel", "nope")
    assert result.exit_code == 1
    assert "no workflow run with id 'nope'" in result.output
    assert app.store.get_run("nope") is None


async def test_cancel__unmigrated_database__exit_1_and_schema_left_alone(app: tether.App):
    result = await ainvoke(app, "workflows", "cancel", "x")
    assert result.exit_code == 1
    assert "run `tether migrate`" in result.output
    store = open_store(app.settings)
    try:
        with pytest.raises(tether.SchemaVersionError):
            store.check_schema()
    finally:
        store.close()


async def test_resume__cancelled_run__worker_completes_it_with_a_cli_message(make_app: MakeApp):
    ledger: Counter[str] = Counter()
    first = make_app(wait_in_memory=0.05)
    define_waiting(first, ledger)
    async with first:
        await first.start("approval", id="r")
        await eventually(lambda: status(first, "r") == "WAITING", what="evicted")
        assert (await ainvoke(first, "workflows", "cancel", "r")).exit_code == 0
    assert status(first, "r") == "CANCELLED"

    resumed = await ainvoke(first, "workflows", "resume", "r")

    assert resumed.exit_code == 0, resumed.output
    assert "is PENDING" in resumed.output
    assert "will pick it up" in resumed.output
    assert status(first, "r") == "PENDING"
    sent = await ainvoke(first, "send", "r", "go", '{"approved": true}')
    assert sent.exit_code == 0, sent.output
    second = make_app()
    define_waiting(second, ledger)
    async with second:
        assert await second.retrieve("r").result(timeout=10) == ["ready", {"approved": True}]
    assert ledger["prepare"] == 1  # replayed from the journal, not run again


async def test_resume__run_not_cancelled_or_failed__exit_1_and_unchanged(make_app: MakeApp):
    app = make_app()
    define_chain(app, Counter())
    async with app:
        await (await app.start("chain", id="done")).result(timeout=10)
    await app.start("chain", id="queued")  # not entered: left PENDING

    for run_id, state in (("done", "SUCCEEDED"), ("queued", "PENDING")):
        result = await ainvoke(app, "workflows", "resume", run_id)
        assert result.exit_code == 1, result.output
        assert f"is {state}; only a CANCELLED or FAILED run can be resumed" in result.output
        assert status(app, run_id) == state
    unknown = await ainvoke(app, "workflows", "resume", "nope")
    assert unknown.exit_code == 1
    assert "no workflow run with id 'nope'" in unknown.output


async def test_fork__new_run_keeps_journal_prefix_and_a_worker_runs_the_rest(make_app: MakeApp):
    ledger: Counter[str] = Counter()
    app = make_app()
    define_chain(app, ledger)
    async with app:
        await (await app.start("chain", id="orig")).result(timeout=10)

    result = await ainvoke(
        app, "workflows", "fork", "orig", "--from-step", "2", "--new-id", "orig-2"
    )

    assert result.exit_code == 0, result.output
    assert result.stdout == "orig-2\n"
    row = app.store.get_run("orig-2")
    assert row is not None
    assert (row.name, row.status) == ("chain", "PENDING")
    original = app.store.load_steps("orig")
    kept = app.store.load_steps("orig-2")
    assert [(s.seq, s.name, s.output) for s in kept] == [
        (s.seq, s.name, s.output) for s in original[:2]
    ]
    async with app:
        assert await app.retrieve("orig-2").result(timeout=10) == [0, 10, 20, 30]
    assert ledger == Counter({"work-0": 1, "work-1": 1, "work-2": 2, "work-3": 2})


async def test_fork__default_id_and_json(make_app: MakeApp):
    app = make_app()
    define_chain(app, Counter())
    async with app:
        await (await app.start("chain", id="orig")).result(timeout=10)

    result = await ainvoke(app, "workflows", "fork", "orig", "--from-step", "0", "--json")

    assert result.exit_code == 0, result.output
    forked = json.loads(result.output)
    assert forked["id"].startswith("orig-fork-")
    assert forked["from_step"] == 0
    assert status(app, forked["id"]) == "PENDING"
    assert journal_names(app, forked["id"]) == []


async def test_fork__bad_step_unknown_run_or_taken_id__refused(make_app: MakeApp):
    app = make_app()
    define_chain(app, Counter())
    async with app:
        await (await app.start("chain", id="orig")).result(timeout=10)
    await app.fork("orig", 1, new_id="taken")

    negative = await ainvoke(app, "workflows", "fork", "orig", "--from-step", "-1")
    assert negative.exit_code == 2
    beyond = await ainvoke(app, "workflows", "fork", "orig", "--from-step", "5")
    assert beyond.exit_code == 1
    assert "--from-step must be at most 4" in beyond.output
    unknown = await ainvoke(app, "workflows", "fork", "nope", "--from-step", "0")
    assert unknown.exit_code == 1
    assert "no workflow run with id 'nope'" in unknown.output
    taken = await ainvoke(app, "workflows", "fork", "orig", "--from-step", "0", "--new-id", "taken")
    assert taken.exit_code == 1
    assert "'taken' already exists" in taken.output
    assert sorted(r.id for r in app.store.list_runs(RunFilter())) == ["orig", "taken"]
    assert len(journal_names(app, "taken")) == 1


async def test_fork_and_send__app_with_payload_codecs__the_cli_needs_none(make_app: MakeApp):
    settings = make_app(wait_in_memory=0.05).settings
    app = tether.App(settings=settings, codecs=[ZlibCodec(threshold=0)])
    ledger: Counter[str] = Counter()
    define_waiting(app, ledger)
    try:
        async with app:
            await app.start("approval", id="zipped")
            await eventually(lambda: status(app, "zipped") == "WAITING", what="evicted")

            forked = await ainvoke(
                app, "workflows", "fork", "zipped", "--from-step", "1", "--new-id", "copy"
            )
            sent = [
                await ainvoke(app, "send", run_id, "go", '"yes"') for run_id in ("zipped", "copy")
            ]

            assert forked.exit_code == 0, forked.output
            assert [r.exit_code for r in sent] == [0, 0], [r.output for r in sent]
            for run_id in ("zipped", "copy"):
                assert await app.retrieve(run_id).result(timeout=10) == ["ready", "yes"]
        assert ledger["prepare"] == 1  # the copy replayed the compressed entry
    finally:
        app.close()
