"""The mission state machine: one transition table, one guard, nothing else moves a mission.

```
created -> planning -> waiting_approval -> approved -> pending_execution -> in_progress
in_progress -> executed -> verifying -> closed            (closed only if the final checks pass)
in_progress | verifying -> correcting -> in_progress     (a correction, then back to work)
in_progress | verifying | correcting -> escalated -> in_progress | halted   (a human decides)
any state that is not final -> halted | cancelled
```

The agent never moves the mission: its claim of completion is recorded as the transition
in_progress -> executed, which only asks for verification. The runtime runs the final checks
(executed -> verifying) and closes the mission only on their evidence.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

from tether.errors import InvalidTransitionError


class MissionState(enum.StrEnum):
    """Where a mission stands."""

    CREATED = "created"  # the spec is recorded, nothing has run
    PLANNING = "planning"  # the plan for the phases is being drawn up
    WAITING_APPROVAL = "waiting_approval"  # the plan waits for a human's approval
    APPROVED = "approved"  # the plan was approved (by a human, or by policy when none is asked)
    PENDING_EXECUTION = "pending_execution"  # approved and queued to start
    IN_PROGRESS = "in_progress"  # the agent works on the phases
    EXECUTED = "executed"  # the agent claims the work is done; verification is asked
    VERIFYING = "verifying"  # the final acceptance checks run
    CLOSED = "closed"  # final: every final check passed
    CORRECTING = "correcting"  # a correction is being applied after a monitor's signal
    ESCALATED = "escalated"  # a human is asked to decide, with a deadline
    HALTED = "halted"  # final: stopped by a hard rule, an exhausted ladder or a human
    CANCELLED = "cancelled"  # final: cancelled from outside

    @property
    def final(self) -> bool:
        """Whether no transition leaves this state."""
        return self in FINAL


S = MissionState
FINAL = frozenset({S.CLOSED, S.HALTED, S.CANCELLED})
_ANYTIME = frozenset({S.HALTED, S.CANCELLED})
TRANSITIONS: Mapping[MissionState, frozenset[MissionState]] = {
    S.CREATED: frozenset({S.PLANNING}),
    S.PLANNING: frozenset({S.WAITING_APPROVAL, S.APPROVED}),
    S.WAITING_APPROVAL: frozenset({S.APPROVED}),
    S.APPROVED: frozenset({S.PENDING_EXECUTION}),
    S.PENDING_EXECUTION: frozenset({S.IN_PROGRESS}),
    S.IN_PROGRESS: frozenset({S.EXECUTED, S.CORRECTING, S.ESCALATED}),
    S.EXECUTED: frozenset({S.VERIFYING}),
    S.VERIFYING: frozenset({S.CLOSED, S.CORRECTING, S.ESCALATED}),
    S.CORRECTING: frozenset({S.IN_PROGRESS, S.ESCALATED}),
    S.ESCALATED: frozenset({S.IN_PROGRESS}),
    S.CLOSED: frozenset(),
    S.HALTED: frozenset(),
    S.CANCELLED: frozenset(),
}
"""Allowed targets per state; halted and cancelled are also reachable from any state that is
not final."""


def allowed(source: MissionState) -> frozenset[MissionState]:
    """The states `source` may move to."""
    return TRANSITIONS[source] | (frozenset() if source.final else _ANYTIME)


def check_transition(
    source: MissionState, target: MissionState, evidence: Mapping[str, Any]
) -> None:
    """Raise `InvalidTransitionError` unless `source -> target` is allowed with this evidence.

    The one guard: verifying -> closed needs `evidence["checks"]`, the final checks' results,
    every one passed (a list of objects with `passed`, or mappings with a "passed" key).
    """
    if target not in allowed(source):
        raise InvalidTransitionError(
            f"a mission cannot move from {source} to {target}; from {source} it may move to "
            f"{', '.join(sorted(allowed(source))) or 'nothing (the state is final)'}",
            source=source,
            target=target,
        )
    if target is S.CLOSED:
        checks: Sequence[Any] = evidence.get("checks", ())
        failed = [c for c in checks if not _passed(c)]
        if not checks or failed:
            raise InvalidTransitionError(
                "a mission closes only when its final acceptance checks pass: "
                + ("no check results were given" if not checks else f"{len(failed)} failed"),
                source=source,
                target=target,
            )


def _passed(result: Any) -> bool:
    if isinstance(result, Mapping):
        return bool(result.get("passed"))
    return bool(getattr(result, "passed", False))


class Machine:
    """A mission's current state and the path that led there; moves only by `move`."""

    def __init__(self, state: MissionState = S.CREATED) -> None:
        self._state = state
        self.history: list[tuple[MissionState, MissionState]] = []

    @property
    def state(self) -> MissionState:
        """The current state."""
        return self._state

    def move(self, target: MissionState, evidence: Mapping[str, Any] | None = None) -> None:
        """Move to `target`, or raise `InvalidTransitionError` and stay."""
        check_transition(self._state, target, evidence or {})
        self.history.append((self._state, target))
        self._state = target
