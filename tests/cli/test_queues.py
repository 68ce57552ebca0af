"""`tether queues list`, and queue, priority, deadline and wake-up in `workflows list|show`."""

from __future__ import annotations

import json

import tether
from tests.conftest import MakeApp
from tests.engine.helpers import eventually, status

from .helpers import ainvoke

STATUSES = ["PENDING", "RUNNING", "WAITING", "SUCCEEDED", "FAILED", "CANCELLED"]


def counts(**given: int) -> dict[str, int]:
    return {s: given.get(s.lower(), 0) for s in STATUSES}


def define_jobs(app: tether.App) -> tether.Queue:
    llm = app.register_queue(tether.Queue("llm", priority=True, partition_key="user"))
    app.register_queue(tether.Queue("mail"))

    @app.workflow(name="job")
    async def job(user: str) -> str:
        return user.upper()

    return llm


async def test_queues_list__counts_every_status_per_queue(make_app: MakeApp):
    app = make_app()
    llm = define_jobs(app)
    for user in ("ana", "bo", "cy"):  # not entered: the runs stay PENDING
        await app.options(priority=2).enqueue(llm, "job", user, id=f"job-{user}")
    await app.enqueue("mail", "job", "dee", id="mail-dee")
    await app.start("job", "eve", id="unqueued")
    await app.cancel("job-cy")

    pending = await ainvoke(app, "queues", "list", "--json")

    assert pending.exit_code == 0, pending.output
    assert json.loads(pending.output) == [
        {"queue": "llm", "counts": counts(pending=2, cancelled=1), "total": 3},
        {"queue": "mail", "counts": counts(pending=1), "total": 1},
    ]
    async with app:
        for run_id in ("job-ana", "job-bo", "mail-dee"):
            await app.retrieve(run_id).result(timeout=10)
    assert sorted(app.store.queue_counts()) == [
        ("llm", "CANCELLED", 1),
        ("llm", "SUCCEEDED", 2),
        ("mail", "SUCCEEDED", 1),
    ]
    table = await ainvoke(app, "queues", "list")
    assert table.exit_code == 0, table.output
    rows = [line.split() for line in table.output.splitlines()]
    assert rows == [
        ["QUEUE", *STATUSES],
        ["llm", "0", "0", "0", "2", "0", "1"],
        ["mail", "0", "0", "0", "1", "0", "0"],
    ]


async def test_queues_list__no_queued_runs__says_so(app: tether.App):
    app.store.migrate()
    result = await ainvoke(app, "queues", "list", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == []
    assert "no queued runs" in (await ainvoke(app, "queues", "list")).output


async def test_workflows_list_and_show__queue_partition_priority_deadline_wake_up(
    make_app: MakeApp,
):
    worker = make_app(wait_in_memory=0.05)

    @worker.workflow(name="nap")
    async def nap() -> None:
        await tether.sleep(3600)

    async with worker:
        await worker.options(timeout=7200).start(nap, id="napper")
        await eventually(lambda: status(worker, "napper") == "WAITING", what="evicted")
    client = make_app()
    llm = define_jobs(client)
    await client.options(priority=3).enqueue(llm, "job", "ana", id="queued")
    napper, queued = client.store.get_run("napper"), client.store.get_run("queued")
    assert napper is not None
    assert queued is not None

    listed = await ainvoke(client, "workflows", "list", "--json")

    assert listed.exit_code == 0, listed.output
    by_id = {r["id"]: r for r in json.loads(listed.output)}
    assert {k: by_id["queued"][k] for k in ("queue", "partition", "priority", "wake_at")} == {
        "queue": "llm",
        "partition": "ana",
        "priority": 3,
        "wake_at": None,
    }
    assert by_id["napper"]["status"] == "WAITING"
    assert by_id["napper"]["deadline_at"] == napper.deadline_at
    assert by_id["napper"]["wake_at"] == napper.wake_at
    assert napper.wake_at is not None
    assert napper.wake_at > napper.created_at + 3000
    assert by_id["napper"]["queue"] is None
    table = await ainvoke(client, "workflows", "list")
    assert table.exit_code == 0, table.output
    assert "QUEUE" in table.output
    assert "llm" in table.output
    shown = await ainvoke(client, "workflows", "show", "queued")
    assert "queue llm  partition ana  priority 3" in shown.output
    nap_shown = await ainvoke(client, "workflows", "show", "napper")
    assert "deadline " in nap_shown.output
    assert "wakes " in nap_shown.output
    assert "queue " not in nap_shown.output
    detail = json.loads((await ainvoke(client, "workflows", "show", "napper", "--json")).output)
    assert detail["wake_at"] == napper.wake_at
    assert detail["deadline_at"] == napper.deadline_at
