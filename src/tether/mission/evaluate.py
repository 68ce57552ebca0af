"""Judge trajectories recorded elsewhere: the offline twin of the mission runtime.

Each file is one trajectory: JSON lines of OpenAI-style chat messages, or a JSON object with
the messages under "messages" and optional "objective" and "mission" (a MissionSpec). The
monitors see the messages one at a time, as they would have online; each signal's `step` is
the index of the message that triggered it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tether.mission import checks, spec, trace
from tether.mission.watch import Feeder, Watcher


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """A recorded conversation, with what it was for."""

    source: str
    messages: list[dict[str, Any]]
    objective: str | None = None
    mission: spec.MissionSpec | None = None


def load(path: Path) -> Trajectory:
    """Read one trajectory file.

    Raises:
        ValueError: the file is neither JSON lines of messages nor an object with "messages";
            the message says which line or key is wrong.
    """
    raw = path.read_text()
    stripped = raw.lstrip()
    if stripped.startswith("{") and not _is_jsonl(stripped):
        document = json.loads(raw)
        if "messages" not in document:
            raise ValueError(f"{path}: a JSON object trajectory needs a 'messages' list")
        mission = document.get("mission")
        return Trajectory(
            str(path),
            list(document["messages"]),
            document.get("objective"),
            spec.MissionSpec.model_validate(mission) if mission is not None else None,
        )
    messages = []
    for number, line in enumerate(raw.splitlines(), 1):
        if line.strip():
            try:
                messages.append(json.loads(line))
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: not a JSON message ({exc})") from None
    return Trajectory(str(path), messages)


def _is_jsonl(text: str) -> bool:
    first = text.split("\n", 1)[0]
    try:
        value = json.loads(first)
    except ValueError:
        return False
    return isinstance(value, dict) and "role" in value


def files(paths: Sequence[Path]) -> Iterator[Path]:
    """The trajectory files named: files as given, folders by every file inside, sorted."""
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
            )
        else:
            yield path


def judge(
    trajectory: Trajectory, workspace: Path | None = None, intent: str = "lexical"
) -> dict[str, Any]:
    """Run the monitors over a trajectory; return its signals and scores as JSON.

    `intent` picks the intent monitor's measure: "lexical" or "semantic" (the extra).
    """
    messages = [trace.parse(i, m) for i, m in enumerate(trajectory.messages)]
    events = trace.from_messages(messages)
    output = next((e.text for e in reversed(events) if e.kind == "answer"), None)

    def checker(to_run: Sequence[spec.Check], answer: str | None) -> list[checks.CheckResult]:
        ctx = checks.CheckContext(
            workspace, answer if answer is not None else output, seen.view.events
        )
        return checks.run_checks(to_run, ctx)

    seen = Watcher(trajectory.mission, trajectory.objective, checker, intent)
    feeder = Feeder(seen)
    feeder.messages(messages)
    feeder.flush()
    return {
        "file": trajectory.source,
        "signals": [
            {
                "kind": s.kind,
                "step": s.step,
                "severity": s.severity,
                "rule": s.rule,
                "evidence": s.evidence,
            }
            for s in seen.signals
        ],
        "scores": seen.scores(),
        "skipped": seen.skipped,
    }
