"""Grounding: numbers, identifiers and URLs in an answer must appear in some tool output.

An agent that cites a figure no tool returned, a ticket id nobody looked up or a URL it never
fetched is reporting a result it does not have. The task messages and the mission's inputs
count as sources too: quoting the question is not a hallucination.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
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


def _normal(fact: str) -> str:
    return fact.replace(",", "") if _NUMBER.fullmatch(fact) else fact.lower()


class Grounding(Passive):
    """Signals answers that state facts no source holds."""

    kind: ClassVar[str] = "grounding"
    needs_spec: ClassVar[bool] = False

    def __init__(self) -> None:
        self._sources: list[str] = []
        self._primed = False

    def after(self, view: View, new: Sequence[Event]) -> list[Signal]:
        """Learn the step's sources; check its answers against them."""
        if not self._primed:
            self._primed = True
            if view.spec is not None:
                self._sources.append(canonical_json(view.spec.inputs).decode())
        found = []
        for event in new:
            if event.kind in ("task", "tool_result"):
                self._sources.append(event.text.replace(",", "").lower())
            elif event.kind == "tool_call":
                self._sources.append(canonical_json(event.args).decode().replace(",", "").lower())
            elif event.kind == "answer":
                found += self._judge(event)
        return found

    def _judge(self, event: Event) -> list[Signal]:
        corpus = "\n".join(self._sources)
        missing = [fact for fact in claims(event.text) if _normal(fact) not in corpus]
        if not missing:
            return []
        evidence = {"ungrounded": missing[:20], "answer": event.text[:300]}
        return [Signal(self.kind, event.step, "error", "ungrounded", evidence)]
