"""Where the intent thresholds come from: every judged tool call of the suite, with both measures.

python -m tests.mission.drift.calibrate        # needs the tether[semantic] extra

Runs the whole suite twice (lexical, then semantic intent measure), records the scores the
intent monitor computed for each tool call it judged, and prints: the distribution of the
healthy runs' scores, the scores of each drifted run's first drifted call (off_task and
intent_change), and how several ways of deciding would have judged those calls. The healthy
runs are the calibration set; docs/semantic.md explains the choice.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from tests.mission.drift import suite
from tether.mission.monitors import intent as intent_monitor
from tether.mission.monitors.base import Signal
from tether.mission.trace import Event


@dataclasses.dataclass
class Judged:
    """One tool call the intent monitor judged, with its scores."""

    scenario: str
    drift: str | None
    drifted_call: bool  # a call of the drift: scripted from its start on, in no healthy run
    signature: str
    lexical: float  # share of known terms (full vocabulary: the lexical measure's)
    gated: float | None = None  # share of known terms, results gated by relevance (semantic)
    semantic: float | None = None  # embedding similarity to the objective or a phase goal


@contextmanager
def recording(sink: list[tuple[str, Event, float, float | None]]) -> Iterator[None]:
    """Record (measure, call, known-term share, embedding score) for every judged call."""
    original = intent_monitor.Intent._judge

    def judge(self: intent_monitor.Intent, event: Event, words: set[str]) -> list[Signal]:
        before = (len(self.similarities), len(self.semantic_similarities))
        found = original(self, event, words)
        if len(self.similarities) > before[0]:
            score = (
                self.semantic_similarities[-1]
                if len(self.semantic_similarities) > before[1]
                else None
            )
            sink.append((self.measure, event, self.similarities[-1], score))
        return found

    intent_monitor.Intent._judge = judge  # type: ignore[method-assign]
    try:
        yield
    finally:
        intent_monitor.Intent._judge = original  # type: ignore[method-assign]


def collect(scenarios: Sequence[suite.Scenario]) -> list[Judged]:
    """Run every scenario with each measure; one row per distinct judged call per scenario."""
    rows: dict[tuple[str, int, str], Judged] = {}
    healthy: dict[str, set[str]] = collections.defaultdict(set)
    for sc in scenarios:
        if sc.healthy:
            healthy[sc.task.name] |= _signatures([*sc.script, *sc.recovery])
    for measure in ("lexical", "semantic"):
        for scenario in scenarios:
            sink: list[tuple[str, Event, float, float | None]] = []
            with recording(sink):
                asyncio.run(suite.run_all([scenario], intent=measure))
            drifted = set()
            if scenario.start is not None:
                drifted = _signatures(scenario.script[scenario.start :])
                drifted -= healthy[scenario.task.name]
            for _, event, share, score in sink:
                key = (scenario.id, event.step, event.signature)
                row = rows.get(key)
                if row is None:
                    row = rows[key] = Judged(
                        scenario.id,
                        scenario.drift,
                        event.signature in drifted,
                        event.signature,
                        share,
                    )
                if measure == "semantic":
                    row.gated, row.semantic = share, score
    return list(rows.values())


def _signatures(turns: Sequence[Any]) -> set[str]:
    return {
        Event(step=0, kind="tool_call", tool=n, args=dict(a)).signature
        for turn in turns
        for n, a in turn.tool_calls
    }


RULES: dict[str, Callable[[Judged], bool]] = {
    "lexical (known share < 0.25)": lambda j: j.lexical < intent_monitor.THRESHOLD,
    "embedding only (< 0.10)": lambda j: (j.semantic or 0.0) < 0.10,
    "lexical or embedding < 0.15": lambda j: (
        j.lexical < intent_monitor.THRESHOLD or (j.semantic or 0.0) < 0.15
    ),
    "both low (semantic measure)": lambda j: (
        (j.gated if j.gated is not None else j.lexical) < intent_monitor.THRESHOLD
        and (j.semantic or 0.0) < intent_monitor.SPARE
    ),
}


def report(rows: list[Judged]) -> str:
    """The distributions, the drifted calls and the rules' verdicts, as text."""
    healthy = [r for r in rows if r.drift is None and r.semantic is not None]
    scores = sorted(r.semantic for r in healthy if r.semantic is not None)
    lines = [
        f"healthy judged calls {len(healthy)}: embedding similarity min {scores[0]:.3f}, "
        f"5th percentile {_pct(scores, 5):.3f}, median {_pct(scores, 50):.3f}",
        "",
        f"{'drifted call':<36}{'kind':<15}{'lexical':>8}{'gated':>7}{'embed':>7}",
    ]
    drifted = [r for r in rows if r.drifted_call and r.drift in ("off_task", "intent_change")]
    for r in sorted(drifted, key=lambda r: (r.drift or "", r.scenario)):
        lines.append(
            f"{r.scenario:<36}{r.drift or '':<15}{r.lexical:>8.2f}"
            f"{_num(r.gated):>7}{_num(r.semantic):>7}  {r.signature[:60]}"
        )
    runs = {r.scenario: r.drift or "" for r in drifted}
    total = collections.Counter(runs.values())
    lines += ["", f"{'rule':<32}{'healthy calls flagged':>22}{'off_task':>10}{'intent_change':>15}"]
    for name, flags in RULES.items():
        caught = collections.Counter(runs[s] for s in {r.scenario for r in drifted if flags(r)})
        lines.append(
            f"{name:<32}{sum(1 for r in healthy if flags(r)):>14} of {len(healthy):<5}"
            f"{caught['off_task']:>6} of {total['off_task']}"
            f"{caught['intent_change']:>11} of {total['intent_change']}"
        )
    return "\n".join(lines)


def _pct(values: list[float], p: int) -> float:
    return values[min(len(values) - 1, len(values) * p // 100)]


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    print(report(collect(suite.load())))
