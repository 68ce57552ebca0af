"""Ordering rules over the event log: "A before B", "never C after D", "never E"."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence

from tether.mission import spec
from tether.mission.trace import Event

Rule = spec.BeforeRule | spec.NeverAfterRule | spec.NeverRule


def matches(action: spec.Action, event: Event) -> bool:
    """Whether the tool call `event` is an instance of `action`."""
    if event.kind != "tool_call" or event.tool is None:
        return False
    if not fnmatch.fnmatchcase(event.tool, action.tool):
        return False
    return all(
        name in event.args and re.search(pattern, str(event.args[name])) is not None
        for name, pattern in action.args.items()
    )


def broken_by(rule: Rule, history: Sequence[Event], call: Event) -> bool:
    """Whether the tool call `call`, made after `history`, breaks `rule`."""
    if isinstance(rule, spec.NeverRule):
        return matches(rule.action, call)
    if isinstance(rule, spec.NeverAfterRule):
        return matches(rule.action, call) and any(matches(rule.after, e) for e in history)
    return matches(rule.then, call) and not any(matches(rule.first, e) for e in history)


def violations(rule: Rule, events: Sequence[Event]) -> list[Event]:
    """The tool calls in `events` that break `rule`, in order."""
    calls = [e for e in events if e.kind == "tool_call"]
    return [call for i, call in enumerate(calls) if broken_by(rule, calls[:i], call)]


def describe(rule: Rule) -> str:
    """The rule in words, for evidence and corrective messages."""
    if rule.name:
        return rule.name
    if isinstance(rule, spec.NeverRule):
        return f"never {_action(rule.action)}"
    if isinstance(rule, spec.NeverAfterRule):
        return f"never {_action(rule.action)} after {_action(rule.after)}"
    return f"{_action(rule.first)} before {_action(rule.then)}"


def _action(action: spec.Action) -> str:
    if not action.args:
        return action.tool
    args = ", ".join(f"{k}~/{v}/" for k, v in action.args.items())
    return f"{action.tool}({args})"
