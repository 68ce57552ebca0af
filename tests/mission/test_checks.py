"""Every kind of acceptance check, passing and failing with a useful detail."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

from tether.mission import checks, spec
from tether.mission.checks import CheckContext
from tether.mission.trace import Event


def passes(check: spec.Check, ctx: CheckContext) -> bool:
    return checks.run_check(check, ctx).passed


def always_true(ctx: CheckContext) -> bool:
    return ctx.output == "yes"


def with_detail(ctx: CheckContext) -> tuple[bool, str]:
    return False, "three tests failed"


def raises(ctx: CheckContext) -> bool:
    raise RuntimeError("boom")


@pytest.fixture
def ws(tmp_path: Path) -> CheckContext:
    (tmp_path / "report.md").write_text("# Report\nRevenue: 1350\n")
    (tmp_path / "out.json").write_text('{"total": 3}')
    db = sqlite3.connect(tmp_path / "app.db")
    db.execute("CREATE TABLE t (n int)")
    db.execute("INSERT INTO t VALUES (3)")
    db.commit()
    db.close()
    return CheckContext(workspace=tmp_path, output="yes")


def test_callable(ws: CheckContext):
    assert passes(spec.CallableCheck(ref=f"{__name__}:always_true"), ws)
    result = checks.run_check(spec.CallableCheck(ref=f"{__name__}:with_detail"), ws)
    assert (result.passed, result.detail) == (False, "three tests failed")
    result = checks.run_check(spec.CallableCheck(ref=f"{__name__}:raises"), ws)
    assert (result.passed, result.detail) == (False, "RuntimeError: boom")
    assert not passes(spec.CallableCheck(ref="no_colon"), ws)


def test_command(ws: CheckContext):
    assert passes(spec.CommandCheck(argv=(sys.executable, "-c", "pass")), ws)
    result = checks.run_check(
        spec.CommandCheck(argv=(sys.executable, "-c", "print('2 failed'); raise SystemExit(3)")), ws
    )
    assert not result.passed
    assert "exit status 3: 2 failed" in result.detail
    slow = spec.CommandCheck(argv=(sys.executable, "-c", "import time; time.sleep(5)"), timeout=0.2)
    assert "timed out" in checks.run_check(slow, ws).detail


def test_files(ws: CheckContext):
    assert passes(spec.FileExistsCheck(path="report.md"), ws)
    assert not passes(spec.FileExistsCheck(path="nope.md"), ws)
    assert passes(spec.FileContainsCheck(path="report.md", pattern=r"Revenue: \d+"), ws)
    result = checks.run_check(spec.FileContainsCheck(path="report.md", pattern="Costs"), ws)
    assert not result.passed
    assert "Revenue: 1350" in result.detail


def test_json_schema(ws: CheckContext):
    schema = {"type": "object", "required": ["total"], "properties": {"total": {"type": "integer"}}}
    assert passes(spec.JsonSchemaCheck(json_schema=schema, path="out.json"), ws)
    bad = CheckContext(workspace=ws.workspace, output='{"total": "three"}')
    result = checks.run_check(spec.JsonSchemaCheck(json_schema=schema), bad)
    assert not result.passed
    assert "total: 'three' is not of type 'integer'" in result.detail


def test_regex_and_sql(ws: CheckContext):
    assert passes(spec.RegexCheck(pattern="^yes$"), ws)
    assert not passes(spec.RegexCheck(pattern="no"), ws)
    assert passes(spec.SqlCheck(database="app.db", query="SELECT count(*) = 1 FROM t"), ws)
    result = checks.run_check(spec.SqlCheck(database="app.db", query="SELECT n > 5 FROM t"), ws)
    assert (result.passed, result.detail) == (False, "the query returned (0,)")
    assert not passes(spec.SqlCheck(database="app.db", query="DELETE FROM t"), ws)  # read-only


def test_ordering_rules():
    def call(step: int, tool: str, **args: str) -> Event:
        return Event(step=step, kind="tool_call", tool=tool, args=args)

    events = [call(1, "run_tests"), call(2, "deploy", env="prod"), call(3, "edit_file")]
    ctx = CheckContext(events=events)
    before = spec.BeforeRule(first=spec.Action(tool="run_tests"), then=spec.Action(tool="deploy"))
    assert passes(before, ctx)
    backwards = spec.BeforeRule(
        first=spec.Action(tool="edit_file"), then=spec.Action(tool="deploy")
    )
    result = checks.run_check(backwards, ctx)
    assert (result.passed, result.detail) == (False, "broken at step 2 (deploy)")
    never_after = spec.NeverAfterRule(
        action=spec.Action(tool="edit_*"), after=spec.Action(tool="deploy", args={"env": "^prod$"})
    )
    assert not passes(never_after, ctx)
    assert passes(spec.NeverRule(action=spec.Action(tool="deploy", args={"env": "staging"})), ctx)
    assert checks.label(never_after) == "never edit_* after deploy(env~/^prod$/)"
