"""Acceptance checks: executable predicates over the workspace, the output and the event log.

A check never raises: whatever goes wrong (a missing file, a command that cannot start, a
callable that raises) is a failed check whose `detail` says what happened, because the detail
is what the corrective message shows the agent.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jsonschema

from tether.mission import rules, spec
from tether.mission.trace import Event
from tether.store import external

_DETAIL_LIMIT = 2000


@dataclasses.dataclass(frozen=True)
class CheckContext:
    """What a check can look at.

    Attributes:
        workspace: the agent's working directory; relative paths in checks are read from it.
        output: the agent's final output as text, if it gave one.
        events: the event log so far.
    """

    workspace: Path | None = None
    output: str | None = None
    events: Sequence[Event] = ()

    def path(self, name: str) -> Path:
        """Resolve a check's path against the workspace."""
        path = Path(name)
        if path.is_absolute() or self.workspace is None:
            return path
        return self.workspace / path


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The outcome of one check; `detail` holds its actual output when it failed."""

    name: str
    passed: bool
    detail: str = ""


_LABELS: dict[type[Any], Callable[[Any], str]] = {
    spec.CallableCheck: lambda c: f"{c.ref}()",
    spec.CommandCheck: lambda c: "$ " + " ".join(c.argv),
    spec.FileExistsCheck: lambda c: f"{c.path} exists",
    spec.FileContainsCheck: lambda c: f"{c.path} contains /{c.pattern}/",
    spec.JsonSchemaCheck: lambda c: f"{c.path or 'the output'} fits the JSON schema",
    spec.RegexCheck: lambda c: f"the output matches /{c.pattern}/",
    spec.SqlCheck: lambda c: f"sql: {c.query}",
    spec.BeforeRule: rules.describe,
    spec.NeverAfterRule: rules.describe,
    spec.NeverRule: rules.describe,
}


def label(check: spec.Check) -> str:
    """The check's name, or a description built from its fields."""
    return check.name or _LABELS[type(check)](check)


def run_check(check: spec.Check, ctx: CheckContext) -> CheckResult:
    """Evaluate one check."""
    try:
        passed, detail = _evaluate(check, ctx)
    except Exception as exc:  # a check that cannot run has failed; the detail says why
        passed, detail = False, f"{type(exc).__name__}: {exc}"
    return CheckResult(label(check), passed, "" if passed else detail[-_DETAIL_LIMIT:])


def run_checks(checks: Sequence[spec.Check], ctx: CheckContext) -> list[CheckResult]:
    """Evaluate every check, in order."""
    return [run_check(check, ctx) for check in checks]


def _evaluate(check: spec.Check, ctx: CheckContext) -> tuple[bool, str]:
    return _EVALUATORS[type(check)](check, ctx)


def _file_exists(check: spec.FileExistsCheck, ctx: CheckContext) -> tuple[bool, str]:
    return ctx.path(check.path).exists(), f"{check.path} does not exist"


def _file_contains(check: spec.FileContainsCheck, ctx: CheckContext) -> tuple[bool, str]:
    path = ctx.path(check.path)  # named in details as the spec names it, wherever it lives
    if not path.is_file():
        return False, f"{check.path} does not exist"
    text = path.read_text(errors="replace")
    return re.search(check.pattern, text) is not None, f"{check.path} holds: {text[:500]!r}"


def _regex(check: spec.RegexCheck, ctx: CheckContext) -> tuple[bool, str]:
    output = ctx.output or ""
    return re.search(check.pattern, output) is not None, f"the output is {output[:500]!r}"


def _ordering(check: rules.Rule, ctx: CheckContext) -> tuple[bool, str]:
    broken = rules.violations(check, ctx.events)
    where = ", ".join(f"step {e.step} ({e.tool})" for e in broken[:5])
    return not broken, f"broken at {where}"


def _call(check: spec.CallableCheck, ctx: CheckContext) -> tuple[bool, str]:
    result = resolve(check.ref)(ctx)
    if isinstance(result, tuple):
        return bool(result[0]), str(result[1])
    return bool(result), f"{check.ref} returned {result!r}"


def resolve(ref: str) -> Callable[[CheckContext], Any]:
    """Import the callable named "package.module:function"."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ValueError(f"callable check {ref!r} must be written 'package.module:function'")
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{ref} is not callable")
    return target  # type: ignore[no-any-return]


def _command(check: spec.CommandCheck, ctx: CheckContext) -> tuple[bool, str]:
    cwd = ctx.path(check.cwd) if check.cwd else ctx.workspace
    try:
        done = subprocess.run(
            check.argv, cwd=cwd, capture_output=True, text=True, timeout=check.timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return False, f"timed out after {check.timeout} s"
    output = (done.stdout + done.stderr).strip()
    return done.returncode == 0, f"exit status {done.returncode}: {output}"


def _json_schema(check: spec.JsonSchemaCheck, ctx: CheckContext) -> tuple[bool, str]:
    if check.path is None:
        source, text = "the output", ctx.output or ""
    else:
        path = ctx.path(check.path)
        if not path.is_file():
            return False, f"{check.path} does not exist"
        source, text = check.path, path.read_text(errors="replace")
    try:
        value = json.loads(text)
    except ValueError as exc:
        return False, f"{source} is not JSON ({exc})"
    errors = sorted(
        jsonschema.Draft202012Validator(check.json_schema).iter_errors(value), key=lambda e: e.path
    )
    detail = "; ".join(f"{'/'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in errors[:5])
    return not errors, detail


def _sql(check: spec.SqlCheck, ctx: CheckContext) -> tuple[bool, str]:
    database = check.database
    if "://" not in database:
        database = str(ctx.path(database))
    row = external.query_one(database, check.query)
    return bool(row and row[0]), f"the query returned {row!r}"


_EVALUATORS: dict[type[Any], Callable[[Any, CheckContext], tuple[bool, str]]] = {
    spec.CallableCheck: _call,
    spec.CommandCheck: _command,
    spec.FileExistsCheck: _file_exists,
    spec.FileContainsCheck: _file_contains,
    spec.JsonSchemaCheck: _json_schema,
    spec.RegexCheck: _regex,
    spec.SqlCheck: _sql,
    spec.BeforeRule: _ordering,
    spec.NeverAfterRule: _ordering,
    spec.NeverRule: _ordering,
}
