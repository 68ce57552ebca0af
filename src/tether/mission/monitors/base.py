"""What every monitor shares: the signal it emits and the view of the run it reads."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal, Protocol

from tether.mission.checks import CheckResult
from tether.mission.spec import MissionSpec, Phase
from tether.mission.trace import Event

Severity = Literal["info", "warning", "error", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "error", "critical")


@dataclasses.dataclass(frozen=True)
class Signal:
    """A monitor's finding, with the evidence that shows it.

    Attributes:
        kind: the monitor (boundary, budget, loop, advancement, intent, completion, grounding,
            tool_error).
        step: the event log position (message index offline) that triggered it.
        severity: info, warning, error or critical (critical halts at once).
        rule: what exactly was found, e.g. "tool_not_allowed" or "repeated_action".
        evidence: the facts, as JSON-compatible values.
    """

    kind: str
    step: int
    severity: Severity
    rule: str
    evidence: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The signal as a JSON object."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class View:
    """What monitors see of a run.

    Attributes:
        spec: the mission contract, or None when judging a trajectory without one.
        objective: the objective in words (the spec's, or one given for evaluation).
        phase: the current phase, if there is a spec.
        events: the event log so far, the newest last.
        passed: names of the acceptance checks that have passed at least once.
        tokens: tokens used so far; cost: money spent so far; elapsed: seconds since launch.
        verify: runs the final acceptance checks against the current state (None: cannot).
    """

    spec: MissionSpec | None = None
    objective: str | None = None
    phase: Phase | None = None
    events: list[Event] = dataclasses.field(default_factory=list)
    passed: set[str] = dataclasses.field(default_factory=set)
    tokens: int = 0
    cost: float = 0.0
    elapsed: float = 0.0
    verify: Callable[[str | None], list[CheckResult]] | None = None

    @property
    def calls(self) -> list[Event]:
        """The tool calls so far."""
        return [e for e in self.events if e.kind == "tool_call"]


class Monitor(Protocol):
    """One deterministic monitor; an instance watches one run."""

    kind: ClassVar[str]
    needs_spec: ClassVar[bool]

    def before_tool(self, view: View, call: Event) -> list[Signal]:
        """Judge a tool call before it runs (a blocking signal stops it)."""
        ...

    def after(self, view: View, new: Sequence[Event]) -> list[Signal]:
        """Judge the events a step added to the log."""
        ...


class Passive:
    """Base for monitors with nothing to say before a tool runs, or after a step."""

    def before_tool(self, view: View, call: Event) -> list[Signal]:
        """Nothing to judge before the call."""
        return []

    def after(self, view: View, new: Sequence[Event]) -> list[Signal]:
        """Nothing to judge after the step."""
        return []
