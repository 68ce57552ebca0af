"""Moving a live deployment: SQLite -> PostgreSQL -> SQLite with `tether backup` / `tether restore`.

Runs finished, waiting for a message, and not yet started are backed up from one database,
restored into the other kind, and go on there to their end; encrypted payloads stay
encrypted on the way and decrypt on the other side with the same key.
"""

from __future__ import annotations

import base64
import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

import tether
from tests.conftest import FAST
from tests.engine.helpers import eventually, status
from tether.cli.main import app as cli
from tether.settings import Settings

pytestmark = pytest.mark.timeout(180)

KEY = base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def apps() -> Iterator[list[tether.App]]:
    made: list[tether.App] = []
    yield made
    for app in made:
        app.close()


def make(apps: list[tether.App], settings: Settings) -> tether.App:
    app = tether.App(settings=dataclasses.replace(settings, encryption_key=KEY, **FAST))  # type: ignore[arg-type]
    define(app)
    apps.append(app)
    return app


def define(app: tether.App) -> None:
    @app.step(name="double")
    async def double(x: int) -> int:
        return 2 * x

    @app.workflow(name="chat")
    async def chat(x: int) -> dict[str, Any]:
        first = await double(x)
        reply = await tether.recv("in", timeout=3600)
        return {"first": first, "reply": reply, "last": await double(first)}


def cli_run(settings: Settings, *args: str) -> Result:
    env = {
        "TETHER_DATABASE_URL": settings.database_url or "",
        "TETHER_PG_SCHEMA": settings.pg_schema,
        "TETHER_ENCRYPTION_KEY": "",  # backup and restore never need the key
    }
    result = CliRunner().invoke(cli, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result


async def park(app: tether.App) -> None:
    """Start the runs that will cross over: done, waiting for a message, and pending."""
    async with app:
        done = await app.start("chat", 1, id="done")
        await app.send("done", "in", "hello")
        assert (await done.result(timeout=30))["last"] == 4
        await app.start("chat", 5, id="waiting")
        await eventually(lambda: status(app, "waiting") == "WAITING", what="the run to wait")
    await app.start("chat", 7, id="pending")  # not entered: a client, the run stays PENDING


@pytest.mark.postgres
async def test_sqlite_to_postgres_and_back__runs_go_on(
    apps: list[tether.App], pg_settings: Settings, tmp_path: Path
):
    sqlite_a = Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}")
    sqlite_b = Settings(database_url=f"sqlite:///{tmp_path / 'b.db'}")
    first = make(apps, sqlite_a)
    await park(first)
    assert status(first, "pending") == "PENDING"
    one = tmp_path / "one.tether-backup"
    cli_run(sqlite_a, "backup", str(one))
    restored = cli_run(pg_settings, "restore", str(one))
    assert "restored" in restored.output

    on_pg = make(apps, pg_settings)
    assert (await on_pg.retrieve("done").result())["reply"] == "hello"
    async with on_pg:
        await on_pg.send("waiting", "in", "from postgres")
        assert await on_pg.retrieve("waiting").result(timeout=30) == {
            "first": 10,
            "reply": "from postgres",
            "last": 20,
        }
        await eventually(lambda: status(on_pg, "pending") == "WAITING", what="pending to start")
        await on_pg.start("chat", 9, id="late")
        await eventually(lambda: status(on_pg, "late") == "WAITING", what="late to wait")

    two = tmp_path / "two.tether-backup"
    cli_run(pg_settings, "backup", str(two))
    cli_run(sqlite_b, "restore", str(two))
    back = make(apps, sqlite_b)
    async with back:
        await back.send("pending", "in", "p")
        await back.send("late", "in", "l")
        assert (await back.retrieve("pending").result(timeout=30))["last"] == 28
        assert (await back.retrieve("late").result(timeout=30))["reply"] == "l"
    assert (await back.retrieve("waiting").result())["reply"] == "from postgres"
    steps = await back.retrieve("waiting").steps()
    assert [s.name for s in steps] == ["double", "tether.recv", "double"]


async def test_restore_cli__refuses_a_non_empty_database(tmp_path: Path):
    db = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}")
    cli_run(db, "migrate")
    file = tmp_path / "x.tether-backup"
    cli_run(db, "backup", str(file))
    runner = CliRunner()
    env = {"TETHER_DATABASE_URL": db.database_url or ""}
    app = tether.App(settings=db)
    define(app)
    await app.start("chat", 1, id="one")  # a client: the run is PENDING in the database
    app.close()
    refused = runner.invoke(cli, ["restore", str(file)], env=env)
    assert refused.exit_code == 1
    assert "already holds tether data" in refused.output
    assert "--replace" in refused.output
    replaced = runner.invoke(cli, ["restore", str(file), "--replace", "--json"], env=env)
    assert replaced.exit_code == 0, replaced.output
    missing = runner.invoke(cli, ["restore", str(tmp_path / "nope")], env=env)
    assert missing.exit_code == 1
    assert "could not read" in missing.output
