"""Completion: a claim of done runs the final acceptance checks; failing ones are a signal.

The agent's answer only asks for verification. A premature stop (an answer while work
remains) and a false claim of completion look the same here: checks that do not pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from tether.mission.monitors.base import Passive, Signal, View
from tether.mission.trace import Event


class Completion(Passive):
    """Verifies every claim of completion against the final checks."""

    kind: ClassVar[str] = "completion"
    needs_spec: ClassVar[bool] = True

    def __init__(self) -> None:
        self.last: list[tuple[str, bool, str]] = []

    def after(self, view: View, new: Sequence[Event]) -> list[Signal]:
        """Run the final checks for each answer of the step."""
        if view.spec is None or view.verify is None:
            return []
        found = []
        for event in new:
            if event.kind != "answer":
                continue
            results = view.verify(event.text)
            self.last = [(r.name, r.passed, r.detail) for r in results]
            failed = [r for r in results if not r.passed]
            if failed:
                evidence = {
                    "failed": [{"check": r.name, "detail": r.detail[:500]} for r in failed],
                    "passed": [r.name for r in results if r.passed],
                }
                found.append(Signal(self.kind, event.step, "error", "unverified_claim", evidence))
        return found
