"""Correction: a declared table from a signal and how often its kind was corrected to an action.

```
signal kind    1st        2nd        3rd and later
boundary       block      block      escalate      (judged before the tool runs)
budget         halt
others         message    rollback   escalate      (loop, advancement, intent, completion,
                                                    grounding, tool_error streaks)
any critical   halt at once (a forbidden trace rule, a budget spent)
tool_error warnings and info signals are noted, not acted on
```

A corrective message is built from a template, never written by a model: the objective, the
phase goal, the failed checks with their actual output, and what to avoid. A rollback returns
the conversation to the point of best progress and retries with the next `Strategy`.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tether.mission import spec
from tether.mission.monitors.base import Signal

MARKER = "[mission]"
"""How every message the mission writes into the conversation starts."""


class Action(enum.StrEnum):
    """What a correction does, weakest first."""

    NOTE = "note"  # record the signal, do nothing else
    BLOCK = "block"  # the tool does not run; the model reads why instead of its result
    MESSAGE = "message"  # a corrective message goes into the conversation
    ROLLBACK = "rollback"  # back to the point of best progress, with another strategy
    ESCALATE = "escalate"  # a human decides, within the escalation deadline
    HALT = "halt"  # the mission stops

    @property
    def rank(self) -> int:
        """Strength, for choosing one action among several signals."""
        return list(Action).index(self)


LADDER = (Action.MESSAGE, Action.ROLLBACK, Action.ESCALATE)
DEFAULT_TABLE: Mapping[str, tuple[Action, ...]] = {
    "boundary": (Action.BLOCK, Action.BLOCK, Action.ESCALATE),
    "budget": (Action.HALT,),
}


@dataclasses.dataclass(frozen=True)
class Strategy:
    """A different way to try again after a rollback; recorded, so a replay takes the same one.

    Attributes:
        name: shown in the audit chain.
        note: added to the message that restarts the agent.
        temperature: the sampling temperature to use (None: unchanged).
        rotate_models: move the model chain's first this many models to its end.
    """

    name: str
    note: str
    temperature: float | None = None
    rotate_models: int = 0


DEFAULT_STRATEGIES = (
    Strategy(
        "re-plan",
        "Take a different approach from before: re-read the objective and the phase goal, "
        "list the steps left, and do only the next one.",
    ),
    Strategy("deterministic", "Work step by step and check each result.", temperature=0.0),
    Strategy("next model", "A different model takes over from here.", rotate_models=1),
)


@dataclasses.dataclass(frozen=True)
class Policy:
    """The correction table.

    Attributes:
        table: per signal kind, the action for its 1st, 2nd, ... correction (the last repeats).
        default: the ladder for kinds not in the table.
        strategies: tried in turn, one per rollback.
    """

    table: Mapping[str, tuple[Action, ...]] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_TABLE)
    )
    default: tuple[Action, ...] = LADDER
    strategies: Sequence[Strategy] = DEFAULT_STRATEGIES

    def action(self, signal: Signal, corrected: int) -> Action:
        """The action for `signal`, its kind having been corrected `corrected` times."""
        if signal.severity == "critical":
            return Action.HALT
        if signal.severity == "info" or (
            signal.kind == "tool_error" and signal.severity == "warning"
        ):
            return Action.NOTE
        ladder = self.table.get(signal.kind, self.default)
        return ladder[min(corrected, len(ladder) - 1)]

    def strategy(self, rollbacks: int) -> Strategy:
        """The strategy for the rollback after `rollbacks` earlier ones."""
        return self.strategies[rollbacks % len(self.strategies)]


def corrective_message(
    mission: spec.MissionSpec, phase: spec.Phase | None, signals: Sequence[Signal]
) -> str:
    """The corrective message for `signals`, from the template."""
    lines = [f"{MARKER} Correction: the mission's monitors stopped this course of action."]
    lines.append(f"Objective: {mission.objective}")
    if phase is not None:
        lines.append(f"Current phase: {phase.name}" + (f" - {phase.goal}" if phase.goal else ""))
    lines.append("What was found:")
    lines += [f"- {_finding(s)}" for s in signals]
    avoid = [a for a in (_avoid(s) for s in signals) if a]
    if avoid:
        lines.append("Avoid: " + "; ".join(dict.fromkeys(avoid)) + ".")
    lines.append("Continue with the objective; say you are done only when the work is complete.")
    return "\n".join(lines)


def block_explanation(signals: Sequence[Signal]) -> str:
    """The text the model reads instead of a blocked tool's result."""
    reasons = "; ".join(_finding(s) for s in signals)
    return f"blocked by the mission: {reasons}. The tool did not run; choose an allowed action."


def restart_message(
    mission: spec.MissionSpec,
    phase: spec.Phase | None,
    strategy: Strategy,
    signals: Sequence[Signal],
) -> str:
    """The message that restarts the agent after a rollback."""
    text = corrective_message(mission, phase, signals).split("\n", 1)[1]
    head = f"{MARKER} Rolled back to the last point of progress. Strategy: {strategy.name}."
    return f"{head} {strategy.note}\n{text}"


def _finding(signal: Signal) -> str:
    e = signal.evidence
    describe = _FINDINGS.get(signal.kind)
    return describe(signal, e) if describe else f"{signal.kind}/{signal.rule}: {_short(e)}"


def _failed_checks(signal: Signal, e: Mapping[str, Any]) -> str:
    failed = "; ".join(f"{f['check']} (got: {f['detail'][:200]})" for f in e.get("failed", []))
    return f"the work is not done: these checks fail: {failed}"


def _ungrounded(signal: Signal, e: Mapping[str, Any]) -> str:
    facts = ", ".join(map(str, e.get("ungrounded", [])))
    return f"the answer states facts no tool returned: {facts}"


def _off_intent(signal: Signal, e: Mapping[str, Any]) -> str:
    unrelated = ", ".join(e.get("unknown_terms", [])[:6])
    return f"{e.get('tool')} does not serve the objective (unrelated: {unrelated})"


_FINDINGS: Mapping[str, Callable[[Signal, Mapping[str, Any]], str]] = {
    "completion": _failed_checks,
    "boundary": lambda s, e: f"{e.get('tool')} is not allowed here ({s.rule}: {_short(e)})",
    "grounding": _ungrounded,
    "loop": lambda s, e: f"the same actions repeat ({s.rule}: {_short(e)})",
    "advancement": lambda s, e: f"no progress for {e.get('steps_without_progress')} steps",
    "intent": _off_intent,
}


def _avoid(signal: Signal) -> str:
    e = signal.evidence
    if signal.kind == "loop" and signal.rule == "repeated_action":
        return f"calling {e.get('tool')} with the same arguments again"
    if signal.kind == "loop":
        return "repeating the same sequence of calls"
    if signal.kind == "completion":
        return "claiming completion before the checks pass"
    if signal.kind == "grounding":
        return "citing figures, ids or links that no tool returned"
    if signal.kind == "intent":
        return "actions unrelated to the objective"
    return ""


def _short(evidence: Mapping[str, Any]) -> str:
    return json.dumps({k: v for k, v in evidence.items() if k not in ("args",)}, default=str)[:200]
