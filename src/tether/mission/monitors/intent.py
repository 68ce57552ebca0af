"""Intent: actions whose words have nothing to do with the objective or what the run has seen.

Two measures, chosen per run (`Intent(measure=...)`, `Watcher(intent=...)`,
`Mission(intent=...)`, `tether evaluate --intent`):

- **lexical** (the default): the share of an action's terms (its arguments) found in the run's
  vocabulary, which is the objective, the phase goals, the mission's inputs, the task messages
  and every tool result so far. Reading a file that a listing showed stays on intent; searching
  the web for something no input or result mentions does not.
- **semantic** (the optional extra `tether[semantic]`, see `tether.mission.semantic`): the
  lexical test over a vocabulary that trusts a tool result's words only when the result is
  itself related to the mission (its embedding's cosine similarity to the objective or a phase
  goal is at least `RELEVANT`), and an embedding test of the action: an action is off intent
  when its known-term share is below `THRESHOLD` *and* its embedding is less similar than
  `SPARE` to the objective and every phase goal. So a note the agent wanders into no longer
  vouches for a write built from its words, and an action that says the objective's meaning
  in other words (synonyms the vocabulary lacks) is not flagged. Both scores go into the
  signal's evidence. docs/semantic.md gives the measurements these thresholds come from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

from tether.errors import ConfigError
from tether.mission import text
from tether.mission.monitors.base import Passive, Signal, View
from tether.mission.trace import Event

if TYPE_CHECKING:
    from tether.mission.semantic import Embedder

THRESHOLD = 0.25  # an action with a smaller share of known terms is off intent
MIN_TERMS = 2  # actions with fewer terms say too little to judge
# Semantic measure (all-MiniLM-L6-v2 cosine similarities), calibrated on the healthy runs of the
# drift suite: healthy actions' similarity to the objective has a median of 0.57; the least
# related healthy tool result scored 0.18, a note unrelated to the task -0.02.
SPARE = 0.55  # an action at least this close to the objective or a phase goal is on intent
RELEVANT = 0.10  # a tool result less similar than this teaches the vocabulary nothing

IntentMeasure = Literal["lexical", "semantic"]
MEASURES: tuple[str, ...] = get_args(IntentMeasure)


def check_measure(name: str) -> IntentMeasure:
    """Validate an intent measure's name; for "semantic", check that the extra is installed.

    Raises:
        ConfigError: an unknown name, or "semantic" without the `tether[semantic]` extra.
    """
    if name not in MEASURES:
        raise ConfigError(f"intent measure {name!r} is not one of {', '.join(MEASURES)}")
    if name == "semantic":
        from tether.mission import semantic

        semantic.require()
    return "semantic" if name == "semantic" else "lexical"


class Intent(Passive):
    """Signals actions that drift away from the objective.

    Args:
        measure: "lexical" (default) or "semantic" (needs the `tether[semantic]` extra).
        embedder: the embedder of the semantic measure (default: the process-wide one).
    """

    kind: ClassVar[str] = "intent"
    needs_spec: ClassVar[bool] = False

    def __init__(self, measure: str = "lexical", embedder: Embedder | None = None) -> None:
        self.measure = check_measure(measure)
        self.vocabulary: set[str] = set()
        self.similarities: list[float] = []
        self.semantic_similarities: list[float] = []
        self.anchors: list[tuple[str, str]] = []  # (what, text): objective and phase goals
        self._primed = False
        self._embedder = embedder
        if self.measure == "semantic" and embedder is None:
            from tether.mission import semantic

            self._embedder = semantic.embedder()

    def _prime(self, view: View) -> None:
        self._primed = True
        if view.objective:
            self.vocabulary |= text.terms(view.objective)
            self.anchors.append(("objective", view.objective))
        if view.spec is not None:
            self.vocabulary |= text.union(p.goal for p in view.spec.phases)
            self.vocabulary |= text.value_terms(view.spec.inputs)
            self.vocabulary |= text.union(t for p in view.spec.phases for t in p.tools or ())
            self.anchors += [(f"phase {p.name}", p.goal) for p in view.spec.phases if p.goal]

    def warm(self, view: View, new: Sequence[Event]) -> None:
        """Embed now what judging `new` will embed (the semantic measure; lexical: nothing).

        Blocking work that a caller on an event loop runs in a thread before `after`, which
        then finds every vector in the cache.
        """
        if self._embedder is None:
            return
        if not self._primed:
            self._prime(view)
        texts = [t for _, t in self.anchors]
        for event in new:
            if event.kind == "tool_call":
                texts.append(action_text(event))
            elif event.kind == "tool_result" or (event.kind == "task" and _from_tasks(view)):
                texts.append(event.text)
        self._embedder.embed([t for t in texts if t.strip()])

    def after(self, view: View, new: Sequence[Event]) -> list[Signal]:
        """Judge the step's actions, then learn the words of its results."""
        if not self._primed:
            self._prime(view)
        found = []
        for event in new:
            if event.kind == "task":
                self.vocabulary |= text.terms(event.text)
                if _from_tasks(view):
                    self.anchors.append(("task", event.text))
            elif event.kind == "tool_result":
                if self._relevant(event.text):
                    self.vocabulary |= text.terms(event.text)
            elif event.kind == "tool_call":
                self.vocabulary |= text.terms(event.tool or "")
                found += self._judge(event, text.value_terms(event.args))
        return found

    def _relevant(self, result: str) -> bool:
        """Whether a tool result may teach the vocabulary (always, for the lexical measure)."""
        if self._embedder is None or not self.anchors or not result.strip():
            return True
        score, _ = self._embedder.best(result, [t for _, t in self.anchors])
        return score >= RELEVANT

    def _judge(self, event: Event, words: set[str]) -> list[Signal]:
        if len(words) < MIN_TERMS:
            return []
        known = words & self.vocabulary
        similarity = len(known) / len(words)
        self.similarities.append(similarity)
        if self._embedder is not None and self.anchors:
            return self._judge_semantic(event, words, known, similarity)
        if similarity >= THRESHOLD:
            return []
        return [self._signal(event, words, known, similarity, {})]

    def _judge_semantic(
        self, event: Event, words: set[str], known: set[str], similarity: float
    ) -> list[Signal]:
        assert self._embedder is not None
        score, index = self._embedder.best(action_text(event), [t for _, t in self.anchors])
        self.semantic_similarities.append(score)
        if similarity >= THRESHOLD or score >= SPARE:
            return []
        extra = {"measure": "semantic", "semantic": score, "nearest": self.anchors[index][0]}
        return [self._signal(event, words, known, similarity, extra)]

    def _signal(
        self,
        event: Event,
        words: set[str],
        known: set[str],
        similarity: float,
        extra: dict[str, Any],
    ) -> Signal:
        evidence = {
            "tool": event.tool,
            "similarity": round(similarity, 3),
            "unknown_terms": sorted(words - known)[:20],
            **extra,
        }
        return Signal(self.kind, event.step, "warning", "off_intent", evidence)

    @property
    def drift(self) -> float | None:
        """Mean distance of the actions from the objective (0 on intent, 1 unrelated).

        Measured lexically with either measure, so the score compares across runs.
        """
        if not self.similarities:
            return None
        return 1 - sum(self.similarities) / len(self.similarities)


def _from_tasks(view: View) -> bool:
    """Whether the task messages stand for the objective (none given, no phase goals)."""
    return not view.objective and not (view.spec and any(p.goal for p in view.spec.phases))


def action_text(event: Event) -> str:
    """A tool call in words, for embedding: the tool's name and its argument values."""
    values = " ".join(_strings(event.args))
    return f"{(event.tool or '').replace('_', ' ')}: {values}".strip()


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    if value is None or isinstance(value, bool):
        return []
    return [str(value)]
