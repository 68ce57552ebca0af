"""The monitors of one run, fed the same way online (the runtime) and offline (evaluate).

`Watcher.before_tool` judges a tool call before it runs; `Watcher.observe` judges what a step
added to the event log. The watcher also tracks the current phase (a phase is done when its
acceptance checks pass) and computes the run's scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tether.mission import checks, spec, trace
from tether.mission.monitors.advancement import Advancement
from tether.mission.monitors.base import Monitor, Signal, View
from tether.mission.monitors.boundary import Boundary
from tether.mission.monitors.budget import BudgetMonitor
from tether.mission.monitors.completion import Completion
from tether.mission.monitors.grounding import Grounding
from tether.mission.monitors.intent import Intent
from tether.mission.monitors.loop import Loop
from tether.mission.monitors.tool_errors import ToolErrors
from tether.mission.trace import Event

Checker = Callable[[Sequence[spec.Check], str | None], list[checks.CheckResult]]


class Watcher:
    """Runs every monitor over one run's events.

    Args:
        mission: the contract; None judges a trajectory with the monitors that need none.
        objective: the objective in words (defaults to the spec's).
        checker: runs checks against the current state of the world (workspace, output).
        intent: the intent monitor's measure, "lexical" (default) or "semantic" (needs the
            `tether[semantic]` extra; see `tether.mission.monitors.intent`).
    """

    def __init__(
        self,
        mission: spec.MissionSpec | None = None,
        objective: str | None = None,
        checker: Checker | None = None,
        intent: str = "lexical",
    ) -> None:
        self.spec = mission
        self.checker = checker
        self.advancement = Advancement()
        self.intent = Intent(intent)
        self.completion = Completion()
        every: list[Monitor] = [
            Boundary(),
            BudgetMonitor(),
            Loop(),
            self.advancement,
            self.intent,
            self.completion,
            Grounding(),
            ToolErrors(),
        ]
        self.monitors = [m for m in every if mission is not None or not m.needs_spec]
        self.skipped = sorted(m.kind for m in every if m not in self.monitors)
        self.phase_index = 0
        self.view = View(
            spec=mission,
            objective=objective or (mission.objective if mission else None),
            phase=mission.phases[0] if mission else None,
            verify=self._verify if mission and checker else None,
        )
        self.signals: list[Signal] = []
        self.blocked_calls = 0

    def before_tool(self, call: Event) -> list[Signal]:
        """Judge a tool call before it runs."""
        found = [s for m in self.monitors for s in m.before_tool(self.view, call)]
        if found:
            self.blocked_calls += 1
        self.signals += found
        return found

    def observe(self, new: Sequence[Event]) -> list[Signal]:
        """Add a step's events to the log and judge them."""
        self.view.events.extend(new)
        self._advance_phases(new)
        found = [s for m in self.monitors for s in m.after(self.view, new)]
        self.signals += found
        return found

    def _verify(self, output: str | None) -> list[checks.CheckResult]:
        assert self.spec is not None
        assert self.checker is not None
        results = self.checker(self.spec.final_checks, output)
        self.view.passed |= {r.name for r in results if r.passed}
        return results

    def set_phase(self, index: int) -> None:
        """Put the watcher in phase `index` (restoring a run's recorded progress)."""
        if self.spec is not None:
            self.phase_index = min(index, len(self.spec.phases) - 1)
            self.view.phase = self.spec.phases[self.phase_index]

    def _advance_phases(self, new: Sequence[Event]) -> None:
        """Move past the current phase if its acceptance checks now pass.

        One phase per step at most: a result can complete the phase the agent is working in,
        not the phases after it that it never entered (their checks may pass already, but the
        agent has yet to do, or re-check, their work with their tools).
        """
        if (
            self.spec is None
            or self.checker is None
            or not any(e.kind == "tool_result" for e in new)
            or self.phase_index >= len(self.spec.phases) - 1
        ):
            return
        phase = self.spec.phases[self.phase_index]
        if not phase.acceptance:
            return
        results = self.checker(phase.acceptance, None)
        self.view.passed |= {r.name for r in results if r.passed}
        if all(r.passed for r in results):
            self.phase_index += 1
            self.view.phase = self.spec.phases[self.phase_index]

    def scores(self) -> dict[str, float | None]:
        """Flow conformance, intent drift, action advancement and action completion."""
        calls = len(self.view.calls)
        conformance = None
        if self.spec is not None:
            conformance = 1.0 - (self.blocked_calls / calls) if calls else 1.0
        completion = None
        if self.completion.last:
            completion = sum(1 for _, ok, _ in self.completion.last if ok) / len(
                self.completion.last
            )
        return {
            "flow_conformance": _round(conformance),
            "intent_drift": _round(self.intent.drift),
            "action_advancement": _round(self.advancement.share),
            "action_completion": _round(completion),
        }


class Feeder:
    """Feeds a conversation to a watcher in the order things happen online.

    An assistant message's text is judged when it arrives; each of its tool calls is judged
    just before the call runs, that is before its result, so a conversation fed again from
    the start (after a restart) leaves the monitors exactly as the live run left them.
    """

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.fed = 0
        self.pending: dict[str, Event] = {}
        self._names: dict[str, str] = {}

    def messages(self, messages: Sequence[Any], upto: int | None = None) -> list[Signal]:
        """Feed messages up to `upto` (default: all) that were not fed yet."""
        end = len(messages) if upto is None else upto
        found: list[Signal] = []
        for step in range(self.fed, end):
            message = trace.parse(step, messages[step])
            events = trace.message_events(step, message, self._names)
            if message.role == "assistant":
                calls = [e for e in events if e.kind == "tool_call"]
                found += self.watcher.observe([e for e in events if e.kind != "tool_call"])
                self.pending.update(zip((c.id for c in message.tool_calls), calls, strict=True))
            elif message.role == "tool":
                if message.tool_call_id in self.pending:
                    found += self.judge(message.tool_call_id)
                found += self.watcher.observe(events)
            else:
                found += self.watcher.observe(events)
        self.fed = max(self.fed, end)
        return found

    def warm(self, messages: Sequence[Any]) -> None:
        """Do the slow work of judging the messages not fed yet (embeddings), without judging.

        Blocking; the mission runtime runs it in a thread so the event loop stays free.
        """
        names = dict(self._names)
        events = [
            e
            for step in range(self.fed, len(messages))
            for e in trace.message_events(step, trace.parse(step, messages[step]), names)
        ]
        self.watcher.intent.warm(self.watcher.view, [*events, *self.pending.values()])

    def judge(self, call_id: str) -> list[Signal]:
        """Judge a pending tool call before it runs, and add it to the log."""
        call = self.pending.pop(call_id, None)
        if call is None:
            return []
        return self.watcher.before_tool(call) + self.watcher.observe([call])

    def flush(self) -> list[Signal]:
        """Judge the calls that never got a result (the end of a recorded trajectory)."""
        found: list[Signal] = []
        for call_id in list(self.pending):
            found += self.judge(call_id)
        return found


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def summary(watcher: Watcher) -> dict[str, Any]:
    """The signals and scores of a watched run, as JSON."""
    return {
        "signals": [s.to_json() for s in watcher.signals],
        "scores": watcher.scores(),
        "skipped": watcher.skipped,
    }
