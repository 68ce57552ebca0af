"""Loop: the same tool call again and again, a cycle of calls, the same observation repeated.

Each pattern is reported once when it reaches its threshold and again each time it repeats
as often once more, so a loop that goes on keeps being reported without flooding the log.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import ClassVar

from tether.mission.monitors.base import Passive, Signal, View
from tether.mission.trace import Event

REPEATS = 3  # the same call this many times is a loop
CYCLE_ROUNDS = 2  # a cycle of 2-4 distinct calls repeated this many times in a row
SAME_OBSERVATION = 3  # the same non-empty tool result this many times


class Loop(Passive):
    """Finds repeated calls, cycles of calls and repeated observations."""

    kind: ClassVar[str] = "loop"
    needs_spec: ClassVar[bool] = False

    def __init__(self) -> None:
        self._calls: collections.Counter[str] = collections.Counter()
        self._results: collections.Counter[str] = collections.Counter()
        self._sequence: list[str] = []
        self._cycle_until = 0

    def after(self, view: View, new: Sequence[Event]) -> list[Signal]:
        """Count the step's calls and observations."""
        found = []
        for event in new:
            if event.kind == "tool_call":
                found += self._call(event)
            elif event.kind == "tool_result" and event.text.strip():
                text = " ".join(event.text.split())
                self._results[text] += 1
                n = self._results[text]
                if n >= SAME_OBSERVATION and n % SAME_OBSERVATION == 0:
                    evidence = {"tool": event.tool, "observation": text[:200], "times": n}
                    found.append(
                        Signal(self.kind, event.step, "warning", "same_observation", evidence)
                    )
        return found

    def _call(self, event: Event) -> list[Signal]:
        signature = event.signature
        self._calls[signature] += 1
        self._sequence.append(signature)
        n = self._calls[signature]
        if n >= REPEATS and n % REPEATS == 0:
            repeated = {"tool": event.tool, "args": event.args, "times": n}
            return [Signal(self.kind, event.step, "error", "repeated_action", repeated)]
        cycle = self._cycle()
        if cycle:
            looped = {"cycle": cycle, "rounds": CYCLE_ROUNDS}
            return [Signal(self.kind, event.step, "error", "cycle", looped)]
        return []

    def _cycle(self) -> list[str]:
        """The cycle the newest calls complete, if any (not one already reported)."""
        seq = self._sequence
        for period in (2, 3, 4):
            span = period * CYCLE_ROUNDS
            if len(seq) < span or len(seq) <= self._cycle_until:
                continue
            tail = seq[-span:]
            unit = tail[:period]
            if len(set(unit)) == period and tail == unit * CYCLE_ROUNDS:
                self._cycle_until = len(seq) + span - 1  # report the next one only after as many
                return unit
        return []
