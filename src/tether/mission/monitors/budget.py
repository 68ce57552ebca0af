"""Budget: steps, tokens, cost and wall time against the mission's and the phase's limits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from tether.mission import spec
from tether.mission.monitors.base import Passive, Signal, View
from tether.mission.trace import Event


class BudgetMonitor(Passive):
    """Signals once per limit when the run goes over it."""

    kind: ClassVar[str] = "budget"
    needs_spec: ClassVar[bool] = True

    def __init__(self) -> None:
        self._fired: set[str] = set()

    def after(self, view: View, new: Sequence[Event]) -> list[Signal]:
        """Compare what the run has used with each limit."""
        if view.spec is None or not new:
            return []
        steps = len([e for e in view.events if e.kind in ("tool_call", "answer")])
        used = {"steps": steps, "tokens": view.tokens, "cost": view.cost, "seconds": view.elapsed}
        budgets: list[tuple[str, spec.Budget]] = [("mission", view.spec.budget)]
        if view.phase is not None:
            budgets.append((f"phase {view.phase.name}", view.phase.budget))
        found = []
        for scope, budget in budgets:
            for name, value in used.items():
                limit = getattr(budget, name)
                key = f"{scope}:{name}"
                if limit is not None and value > limit and key not in self._fired:
                    self._fired.add(key)
                    evidence = {"scope": scope, "budget": name, "limit": limit, "used": value}
                    found.append(Signal(self.kind, new[-1].step, "critical", "exceeded", evidence))
        return found
