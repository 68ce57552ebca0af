"""Tool errors: each failed tool call is reported; a run of them is an error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from tether.mission.monitors.base import Passive, Severity, Signal, View
from tether.mission.trace import Event

STREAK = 3  # consecutive failed calls that make an error rather than a warning


class ToolErrors(Passive):
    """Signals failed tool calls."""

    kind: ClassVar[str] = "tool_error"
    needs_spec: ClassVar[bool] = False

    def __init__(self) -> None:
        self._streak = 0

    def after(self, view: View, new: Sequence[Event]) -> list[Signal]:
        """Report the step's failed tool results."""
        found = []
        for event in new:
            if event.kind != "tool_result":
                continue
            if not event.error:
                self._streak = 0
                continue
            self._streak += 1
            severity: Severity = "error" if self._streak >= STREAK else "warning"
            evidence = {"tool": event.tool, "error": event.text[:300], "streak": self._streak}
            found.append(Signal(self.kind, event.step, severity, "failed", evidence))
        return found
