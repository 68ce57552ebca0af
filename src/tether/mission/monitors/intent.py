"""Intent: actions whose words have nothing to do with the objective or what the run has seen.

The lexical measure: the share of an action's terms (its arguments, or what the agent says it
will do) found in the run's vocabulary, which is the objective, the phase goals, the mission's
inputs, the task messages and every tool result so far. Reading a file that a listing showed
stays on intent; searching the web for something no input or result mentions does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from tether.mission import text
from tether.mission.monitors.base import Passive, Signal, View
from tether.mission.trace import Event

THRESHOLD = 0.25  # an action with a smaller share of known terms is off intent
MIN_TERMS = 2  # actions with fewer terms say too little to judge


class Intent(Passive):
    """Signals actions that drift away from the objective."""

    kind: ClassVar[str] = "intent"
    needs_spec: ClassVar[bool] = False

    def __init__(self) -> None:
        self.vocabulary: set[str] = set()
        self.similarities: list[float] = []
        self._primed = False

    def _prime(self, view: View) -> None:
        self._primed = True
        if view.objective:
            self.vocabulary |= text.terms(view.objective)
        if view.spec is not None:
            self.vocabulary |= text.union(p.goal for p in view.spec.phases)
            self.vocabulary |= text.value_terms(view.spec.inputs)
            self.vocabulary |= text.union(t for p in view.spec.phases for t in p.tools or ())

    def after(self, view: View, new: Sequence[Event]) -> list[Signal]:
        """Judge the step's actions, then learn the words of its results."""
        if not self._primed:
            self._prime(view)
        found = []
        for event in new:
            if event.kind in ("task", "tool_result"):
                self.vocabulary |= text.terms(event.text)
            elif event.kind == "tool_call":
                self.vocabulary |= text.terms(event.tool or "")
                found += self._judge(event, text.value_terms(event.args))
        return found

    def _judge(self, event: Event, words: set[str]) -> list[Signal]:
        if len(words) < MIN_TERMS:
            return []
        known = words & self.vocabulary
        similarity = len(known) / len(words)
        self.similarities.append(similarity)
        if similarity >= THRESHOLD:
            return []
        evidence = {
            "tool": event.tool,
            "similarity": round(similarity, 3),
            "unknown_terms": sorted(words - known)[:20],
        }
        return [Signal(self.kind, event.step, "warning", "off_intent", evidence)]

    @property
    def drift(self) -> float | None:
        """Mean distance of the actions from the objective (0 on intent, 1 unrelated)."""
        if not self.similarities:
            return None
        return 1 - sum(self.similarities) / len(self.similarities)
