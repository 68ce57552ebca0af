"""The CLI reads the same database as the app (both backends)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import tether
from tests.conftest import MakeApp
from tether.cli.main import app as cli
from tether.store import migrate

from .helpers import invoke


@pytest.fixture
async def populated(make_app: MakeApp) -> tether.App:
    app = make_app()

    @app.step(name="fetch")
    async def fetch(url: str) -> str:
        return url.upper()

    @app.step(name="boom", retry=tether.Retry(attempts=2, initial_delay=0.01))
    async def boom() -> None:
        raise ValueError("no luck")

    @app.workflow(name="good")
    async def good(urls: list[str]) -> list[str]:
        return [await fetch(u) for u in urls]

    @app.workflow(name="bad")
    async def bad() -> None:
        await fetch("x")
        await boom()

    async with app:
        await (await app.start(good, ["a", "b"], id="run-good")).result(timeout=10)
        with pytest.raises(tether.WorkflowFailedError):
            await (await app.start(bad, id="run-bad")).result(timeout=10)
    return app


def test_workflows_list__table_and_filters(populated: tether.App):
    result = invoke(populated, "workflows", "list")
    assert result.exit_code == 0, result.output
    assert "run-good" in result.output
    assert "run-bad" in result.output
    failed = invoke(populated, "workflows", "list", "--status", "failed")
    assert "run-bad" in failed.output
    assert "run-good" not in failed.output
    named = invoke(populated, "workflows", "list", "--name", "good", "--json")
    assert [r["id"] for r in json.loads(named.output)] == ["run-good"]


def test_workflows_list__unknown_status__usage_error(populated: tether.App):
    result = invoke(populated, "workflows", "list", "--status", "sleeping")
    assert result.exit_code == 2
    assert "unknown status SLEEPING" in result.output


def test_workflows_show__steps_attempts_and_error(populated: tether.App):
    result = invoke(populated, "workflows", "show", "run-bad", "--json")
    assert result.exit_code == 0, result.output
    detail = json.loads(result.output)
    assert detail["status"] == "FAILED"
    assert detail["error"]["type"] == "builtins.ValueError"
    assert "Traceback" in detail["error"]["traceback"]
    assert [(s["name"], s["status"], s["attempts"]) for s in detail["steps"]] == [
        ("fetch", "ok", 1),
        ("boom", "error", 2),
    ]
    text = invoke(populated, "workflows", "show", "run-good")
    assert "SUCCEEDED" in text.output
    assert "['A', 'B']" in text.output
    assert "2 steps" in text.output


def test_workflows_show__unknown_id__exit_1_with_advice(populated: tether.App):
    result = invoke(populated, "workflows", "show", "nope")
    assert result.exit_code == 1
    assert "no workflow run with id 'nope'" in result.output


def test_migrate__reports_version(app: tether.App):
    result = invoke(app, "migrate")
    assert result.exit_code == 0, result.output
    assert f"schema at version {migrate.latest(app.store.dialect)}" in result.output


def test_bad_database_url__clear_error():
    result = CliRunner().invoke(cli, ["workflows", "list", "--db", "mysql://nope"])
    assert result.exit_code == 1
    assert "not supported" in result.output
