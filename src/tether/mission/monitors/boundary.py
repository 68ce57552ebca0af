"""Boundary: a tool not allowed in this phase, an argument rule broken, a forbidden ordering.

It judges a call before the tool runs, so the runtime can block it: the tool never executes.
Breaking one of the mission's `forbidden` rules is critical (it halts the mission); the
phase's own rules are errors (the call is blocked and explained).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from typing import ClassVar

from tether.mission import rules
from tether.mission.monitors.base import Passive, Severity, Signal, View
from tether.mission.trace import Event


class Boundary(Passive):
    """Blocks calls outside the phase's tools, argument rules and ordering rules."""

    kind: ClassVar[str] = "boundary"
    needs_spec: ClassVar[bool] = True

    def before_tool(self, view: View, call: Event) -> list[Signal]:
        """Judge `call` against the spec's forbidden rules and the phase's rules."""
        if view.spec is None:
            return []
        history = view.calls
        found = [
            self._signal(call, "critical", "forbidden", {"rule": rules.describe(rule)})
            for rule in view.spec.forbidden
            if rules.broken_by(rule, history, call)
        ]
        phase = view.phase
        if phase is None:
            return found
        if phase.tools is not None and call.tool not in phase.tools:
            found.append(
                self._signal(
                    call,
                    "error",
                    "tool_not_allowed",
                    {"phase": phase.name, "allowed": list(phase.tools)},
                )
            )
        for rule in phase.arg_rules:
            if not fnmatch.fnmatchcase(call.tool or "", rule.tool) or rule.arg not in call.args:
                continue
            value = str(call.args[rule.arg])
            why = _arg_broken(rule.pattern, rule.forbid, value)
            if why:
                evidence = {"arg": rule.arg, "value": value[:200], "rule": why}
                found.append(self._signal(call, "error", "argument_rule", evidence))
        found += [
            self._signal(
                call, "error", "ordering", {"phase": phase.name, "rule": rules.describe(rule)}
            )
            for rule in phase.order
            if rules.broken_by(rule, history, call)
        ]
        return found

    def _signal(
        self, call: Event, severity: Severity, rule: str, evidence: Mapping[str, object]
    ) -> Signal:
        return Signal(
            self.kind, call.step, severity, rule, {"tool": call.tool, "args": call.args, **evidence}
        )


def _arg_broken(pattern: str | None, forbid: str | None, value: str) -> str:
    if pattern is not None and re.search(pattern, value) is None:
        return f"must match /{pattern}/"
    if forbid is not None and re.search(forbid, value) is not None:
        return f"must not match /{forbid}/"
    return ""
