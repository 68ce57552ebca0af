"""Advancement: no new passing check and no new state for a window of steps.

A step advances the run when it passes an acceptance check not passed before, or when a tool
call brings something new: a call not made before whose result has not been seen before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from tether.mission.monitors.base import Passive, Signal, View
from tether.mission.trace import Event

WINDOW = 6  # steps without advancing before a signal


class Advancement(Passive):
    """Signals a run that has stopped making progress."""

    kind: ClassVar[str] = "advancement"
    needs_spec: ClassVar[bool] = False

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self.actions = 0
        self.advanced = 0
        self.last_advanced: int | None = None  # the step of the latest result that advanced
        self._stalled = 0
        self._seen_calls: set[str] = set()
        self._seen_results: set[str] = set()
        self._passed = 0
        self._pending: dict[str, bool] = {}

    def after(self, view: View, new: Sequence[Event]) -> list[Signal]:
        """Decide, for each finished call, whether it advanced the run."""
        found = []
        checks_now = len(view.passed)
        for event in new:
            if event.kind == "tool_call":
                self._pending[event.tool or ""] = event.signature not in self._seen_calls
                self._seen_calls.add(event.signature)
            elif event.kind == "tool_result":
                fresh_call = self._pending.pop(event.tool or "", True)
                text = " ".join(event.text.split())
                fresh = fresh_call and not event.error and text not in self._seen_results
                self._seen_results.add(text)
                found += self._count(event, fresh or checks_now > self._passed)
                self._passed = checks_now
        return found

    def _count(self, event: Event, advanced: bool) -> list[Signal]:
        self.actions += 1
        if advanced:
            self.advanced += 1
            self._stalled = 0
            self.last_advanced = event.step
            return []
        self._stalled += 1
        if self._stalled % self.window:
            return []
        evidence = {"steps_without_progress": self._stalled, "window": self.window}
        return [Signal(self.kind, event.step, "error", "stalled", evidence)]

    @property
    def share(self) -> float | None:
        """The share of actions that advanced the run (None before any action)."""
        return self.advanced / self.actions if self.actions else None
