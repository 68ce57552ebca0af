"""Grounding: numbers, identifiers and URLs in an answer must appear in some tool output.

An agent that cites a figure no tool returned, a ticket id nobody looked up or a URL it never
fetched is reporting a result it does not have. The task messages and the mission's inputs
count as sources too: quoting the question is not a hallucination.

A number an agent worked out is grounded too when one step of arithmetic over the sources
gives it: the same value written otherwise (20.00 for 20.0), a total within one source (the
sum of consecutive numbers in it, or of a column of its lines), or the sum, difference,
product, ratio or percentage of two source numbers or column totals (of two digits or more,
to the precision the answer writes). Numbers are read both as prose ("4,830") and as table
cells ("2,2024-03-05,150" is three cells, not 22024). Anything further (a chain of
computations) is reported: the agent can write its working into a tool call (a file, a
note) and cite that.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from typing import ClassVar

from tether.codec import canonical_json
from tether.mission.monitors.base import Passive, Signal, View
from tether.mission.trace import Event

_URL = re.compile(r"https?://[^\s)>\]\"']+")
_NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?(?![\w])")
_IDENT = re.compile(
    r"\b(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z][A-Za-z0-9]*(?:[-_][A-Za-z0-9]+)+\b"
)


def claims(answer: str) -> list[str]:
    """The checkable facts in an answer: URLs, identifiers with digits, numbers of 2+ digits."""
    urls = [u.rstrip(".,;:") for u in _URL.findall(answer)]
    rest = _URL.sub(" ", answer)
    idents = _IDENT.findall(rest)
    rest = _IDENT.sub(" ", rest)
    numbers = [
        n.rstrip(".,")
        for n in _NUMBER.findall(rest)
        if len(n.replace(",", "").replace("-", "").replace(".", "")) >= 2
    ]
    return list(dict.fromkeys(urls + idents + numbers))


_MAX_OPERANDS = 300  # pairs of source numbers tried for a derived figure (the newest kept)
_MAX_RUN = 200  # numbers (and lines) of one source whose totals are counted


def _numbers(text: str) -> list[float]:
    """The numbers of two digits or more in a source's text (commas as thousands separators)."""
    found = []
    for raw in _NUMBER.findall(text):
        digits = raw.replace(",", "").replace("-", "").replace(".", "")
        if len(digits) >= 2:
            try:
                found.append(float(raw.replace(",", "")))
            except ValueError:
                continue
    return found


_CELL_SPLIT = re.compile(r"[,;|\t]\s*|\s+")
_CELL = re.compile(r"-?\d+(?:\.\d+)?")


def _cells(line: str) -> list[tuple[int, float]]:
    """The numeric cells of a line read as a table row: (column, value)."""
    return [
        (k, float(cell))
        for k, cell in enumerate(_CELL_SPLIT.split(line.strip()))
        if _CELL.fullmatch(cell)
    ]


def _columns(text: str) -> tuple[list[float], list[float]]:
    """A source's numeric cells, and the sum of each column of them down its lines."""
    cells: list[float] = []
    columns: dict[int, list[float]] = {}
    for line in text.splitlines()[:_MAX_RUN]:
        for k, value in _cells(line):
            cells.append(value)
            columns.setdefault(k, []).append(value)
    return cells, [sum(c) for c in columns.values() if len(c) > 1]


def _runs(numbers: list[float]) -> list[float]:
    """The sums of two or more consecutive numbers of a source."""
    return [sum(numbers[i:j]) for i in range(len(numbers)) for j in range(i + 2, len(numbers) + 1)]


def _precision(fact: str) -> float:
    """Half a unit of the last digit the fact writes: how close a computed value must be."""
    _, dot, decimals = fact.partition(".")
    return 0.5 * 10 ** -len(decimals) if dot else 0.5


def derived(value: float, tolerance: float, totals: Iterable[float], operands: list[float]) -> bool:
    """Whether one step of arithmetic over the sources gives `value` (within `tolerance`)."""
    if any(abs(t - value) <= tolerance for t in itertools.chain(totals, operands)):
        return True
    for a, b in itertools.permutations(operands, 2):
        candidates = [a + b, a - b, a * b]
        if b:
            candidates += [a / b, 100 * a / b, 100 * (a - b) / b]
        if any(abs(c - value) <= tolerance for c in candidates):
            return True
    return False


def _normal(fact: str) -> str:
    return fact.replace(",", "") if _NUMBER.fullmatch(fact) else fact.lower()


class Grounding(Passive):
    """Signals answers that state facts no source holds."""

    kind: ClassVar[str] = "grounding"
    needs_spec: ClassVar[bool] = False

    def __init__(self) -> None:
        self._sources: list[str] = []
        self._totals: list[float] = []
        self._operands: dict[float, None] = {}
        self._primed = False

    def _learn(self, text: str) -> None:
        self._sources.append(text.replace(",", "").lower())
        numbers = _numbers(text)
        cells, columns = _columns(text)
        self._totals += _runs(numbers[:_MAX_RUN]) + _runs(cells[:_MAX_RUN]) + columns
        large = [c for c in cells if abs(c) >= 10]  # two digits or more, as for numbers
        self._operands.update(dict.fromkeys(numbers + large + columns))

    def after(self, view: View, new: Sequence[Event]) -> list[Signal]:
        """Learn the step's sources; check its answers against them."""
        if not self._primed:
            self._primed = True
            if view.spec is not None:
                self._learn(canonical_json(view.spec.inputs).decode())
        found = []
        for event in new:
            if event.kind in ("task", "tool_result"):
                self._learn(event.text)
            elif event.kind == "tool_call":
                self._learn(" ".join(_strings(event.args)))
            elif event.kind == "answer":
                found += self._judge(event)
        return found

    def _judge(self, event: Event) -> list[Signal]:
        corpus = "\n".join(self._sources)
        operands = list(self._operands)[-_MAX_OPERANDS:]
        missing = [
            fact
            for fact in claims(event.text)
            if _normal(fact) not in corpus
            and not (
                _NUMBER.fullmatch(fact)
                and derived(float(fact.replace(",", "")), _precision(fact), self._totals, operands)
            )
        ]
        if not missing:
            return []
        evidence = {"ungrounded": missing[:20], "answer": event.text[:300]}
        return [Signal(self.kind, event.step, "error", "ungrounded", evidence)]


def _strings(value: object) -> list[str]:
    """Every string and number inside a JSON value (a tool call's arguments), as text."""
    if isinstance(value, dict):
        return [t for v in value.values() for t in _strings(v)]
    if isinstance(value, list | tuple):
        return [t for v in value for t in _strings(v)]
    return [] if value is None or isinstance(value, bool) else [str(value)]
