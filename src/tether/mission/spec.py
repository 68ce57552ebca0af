"""The mission contract: what the agent must do, may do, must never do, and how "done" is checked.

A `MissionSpec` is a frozen pydantic model. Its `digest` (SHA-256 over canonical JSON) is
recorded in the audit chain when the mission launches, and the runtime refuses to go on with a
spec whose digest differs: the contract cannot change under a running mission.

Every check is data, so a spec can be written as JSON, hashed, stored and shown. A Python
callable enters by reference (`"package.module:function"`), not by value, for the same reason.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

import pydantic

from tether.codec import canonical_json


class _Frozen(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")


class Action(_Frozen):
    """Matches actions in the event log: a tool call by name, optionally by arguments.

    Attributes:
        tool: the tool's name; shell-style wildcards allowed ("*" matches every tool).
        args: argument name -> regular expression the argument's text must match (search).
    """

    tool: str = "*"
    args: dict[str, str] = pydantic.Field(default_factory=dict)


class CallableCheck(_Frozen):
    """Passes when the Python callable `ref` ("module:function") returns a truthy value.

    The callable receives a `tether.mission.checks.CheckContext`; it may return a bool or a
    `(bool, detail)` pair whose detail is shown when the check fails.
    """

    kind: Literal["callable"] = "callable"
    name: str = ""
    ref: str


class CommandCheck(_Frozen):
    """Passes when the command exits with status 0 (for example a test suite)."""

    kind: Literal["command"] = "command"
    name: str = ""
    argv: tuple[str, ...]
    cwd: str | None = None  # relative to the workspace when given
    timeout: float = 120.0


class FileExistsCheck(_Frozen):
    """Passes when the file exists (relative paths are read from the workspace)."""

    kind: Literal["file_exists"] = "file_exists"
    name: str = ""
    path: str


class FileContainsCheck(_Frozen):
    """Passes when the file exists and the regular expression `pattern` matches its text."""

    kind: Literal["file_contains"] = "file_contains"
    name: str = ""
    path: str
    pattern: str


class JsonSchemaCheck(_Frozen):
    """Passes when the JSON in `path` (or the final output if `path` is None) fits the schema."""

    kind: Literal["json_schema"] = "json_schema"
    name: str = ""
    json_schema: dict[str, Any]
    path: str | None = None


class RegexCheck(_Frozen):
    """Passes when the regular expression matches the final output (search)."""

    kind: Literal["regex"] = "regex"
    name: str = ""
    pattern: str


class SqlCheck(_Frozen):
    """Passes when the query's first column of its first row is truthy.

    `database` is a SQLite file (relative paths are read from the workspace) or a
    `postgresql://` URL; the query runs read-only.
    """

    kind: Literal["sql"] = "sql"
    name: str = ""
    database: str
    query: str


class BeforeRule(_Frozen):
    """Every `then` action must come after some `first` action ("A before B")."""

    kind: Literal["before"] = "before"
    name: str = ""
    first: Action
    then: Action


class NeverAfterRule(_Frozen):
    """No `action` may come after an `after` action ("never C after D")."""

    kind: Literal["never_after"] = "never_after"
    name: str = ""
    action: Action
    after: Action


class NeverRule(_Frozen):
    """The `action` must never happen."""

    kind: Literal["never"] = "never"
    name: str = ""
    action: Action


OrderingRule = Annotated[
    BeforeRule | NeverAfterRule | NeverRule, pydantic.Field(discriminator="kind")
]
Check = Annotated[
    CallableCheck
    | CommandCheck
    | FileExistsCheck
    | FileContainsCheck
    | JsonSchemaCheck
    | RegexCheck
    | SqlCheck
    | BeforeRule
    | NeverAfterRule
    | NeverRule,
    pydantic.Field(discriminator="kind"),
]


class ArgRule(_Frozen):
    """A rule on one argument of a tool: it must match `pattern` and must not match `forbid`."""

    tool: str
    arg: str
    pattern: str | None = None
    forbid: str | None = None


class Budget(_Frozen):
    """Limits on a phase or a whole mission; None means no limit."""

    steps: int | None = None
    tokens: int | None = None
    cost: float | None = None
    seconds: float | None = None


class Phase(_Frozen):
    """One stage of the mission.

    Attributes:
        name: unique within the mission.
        goal: what the phase achieves, in words (feeds the intent monitor and corrections).
        tools: the tools allowed in this phase; None allows every tool of the agent.
        arg_rules: rules on tool arguments.
        order: ordering rules within the phase (steps required before others).
        acceptance: the checks that say the phase is done; the mission moves on when they pass.
        budget: the phase's own limits.
    """

    name: str
    goal: str = ""
    tools: tuple[str, ...] | None = None
    arg_rules: tuple[ArgRule, ...] = ()
    order: tuple[OrderingRule, ...] = ()
    acceptance: tuple[Check, ...] = ()
    budget: Budget = Budget()


class Escalation(_Frozen):
    """Who is asked when the mission cannot correct itself, and how long they have."""

    target: str = "operator"
    deadline: float = 3600.0


class MissionSpec(_Frozen):
    """The mission contract.

    Attributes:
        objective: what the mission is for, in words.
        inputs: the frozen inputs the agent works from.
        phases: the stages, in order; at least one.
        final_checks: the acceptance checks that must pass to close the mission.
        forbidden: trace rules that must never be broken; breaking one halts the mission.
        escalation: the human target of escalations and their deadline.
        budget: limits on the whole mission.
        approval: whether a human approves the plan before the work starts (within the
            escalation deadline).
    """

    objective: str
    inputs: dict[str, Any] = pydantic.Field(default_factory=dict)
    phases: tuple[Phase, ...] = (Phase(name="main"),)
    final_checks: tuple[Check, ...] = ()
    forbidden: tuple[OrderingRule, ...] = ()
    escalation: Escalation = Escalation()
    budget: Budget = Budget()
    approval: bool = False

    @pydantic.model_validator(mode="after")
    def _unique_phases(self) -> MissionSpec:
        names = [p.name for p in self.phases]
        if not names:
            raise ValueError("a mission needs at least one phase")
        if len(set(names)) != len(names):
            raise ValueError(f"phase names must be unique, got {names}")
        return self

    @property
    def digest(self) -> str:
        """SHA-256 of the spec's canonical JSON: recorded at launch, checked on every resume."""
        return hashlib.sha256(canonical_json(self.model_dump(mode="json"))).hexdigest()

    def phase(self, name: str) -> Phase:
        """Return the phase called `name`."""
        for phase in self.phases:
            if phase.name == name:
                return phase
        raise KeyError(name)
