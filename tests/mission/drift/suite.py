"""Load the drift scenarios, run each through the real stack, and measure the mission layer.

A task file (`tasks/<task>.json`) holds one small realistic task: the prompt, the tools the
agent has, the mission spec, the workspace's files (and SQLite databases), and its scenarios.
A scenario is a scripted run of that task: the turns the model plays, the recovery it plays
after a corrective message, and for a drifted run the kind of drift injected and the turn
(0-based index of the model's answer in the script) where it starts.

Each scenario runs as a real mission: a fresh SQLite database, an `App`, an `Agent` on the
`ScriptedProvider`, the tools over a temporary copy of the workspace, `Mission.run` inside a
workflow. Its audit chain is read back to find the signals and the corrections; the metrics
are defined in docs/semantic.md and computed by `measure`.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import tether
from tests.mission.drift.tools import toolbox
from tether.agent import Agent, Model
from tether.agent.providers import scripted as s
from tether.agent.types import Message, ModelRequest, ModelResponse, OnToken
from tether.codec import Codec
from tether.mission import audit, checks, spec
from tether.mission.mission import Mission

TASKS = Path(__file__).parent / "tasks"
DRIFT_KINDS = (
    "off_task",
    "false_completion",
    "loop",
    "hallucination",
    "premature_stop",
    "forbidden_tool",
    "intent_change",
)
_FAULTS: dict[str, Callable[..., s.Fault]] = {
    "server_error": s.server_error,
    "overloaded": s.overloaded,
    "rate_limited": s.rate_limited,
    "timeout": s.timeout,
}
QUICK = tether.Retry(attempts=3, initial_delay=0.01, backoff=2.0, max_delay=0.1, jitter=0.0)


@dataclasses.dataclass(frozen=True)
class Task:
    """One task of the suite: what the agent is asked, with what, under which contract."""

    name: str
    prompt: str
    tools: list[str]
    spec: spec.MissionSpec
    workspace: dict[str, str]
    databases: dict[str, list[str]]

    def build(self, root: Path) -> None:
        """Write the workspace's files and databases under `root`."""
        for name, text in self.workspace.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        for name, statements in self.databases.items():
            with sqlite3.connect(root / name) as conn:
                for statement in statements:
                    conn.execute(statement)
            conn.close()


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One scripted run of a task, healthy or with an injected drift."""

    id: str
    task: Task
    about: str
    script: list[s.Turn]
    recovery: list[s.Turn]
    drift: str | None = None  # None: a healthy run
    start: int | None = None  # the script turn where the drift starts
    minimal: bool = False  # the task's shortest healthy run: the baseline of extra steps

    @property
    def healthy(self) -> bool:
        """Whether no drift was injected."""
        return self.drift is None


# -- loading ---------------------------------------------------------------------------------


def _python(value: Any) -> Any:
    """Replace "{python}" in strings with this interpreter (command checks run it)."""
    if isinstance(value, str):
        return value.replace("{python}", sys.executable)
    if isinstance(value, list):
        return [_python(v) for v in value]
    if isinstance(value, dict):
        return {k: _python(v) for k, v in value.items()}
    return value


def turn(raw: dict[str, Any]) -> s.Turn:
    """One scripted turn from its JSON form.

    `{"call": name, "args": {...}}`, `{"calls": [{"call": ..., "args": ...}, ...]}`,
    `{"reply": text}`; `"say"` adds text beside calls; `"fault"` names a provider failure the
    turn meets once before it answers.
    """
    known = {"call", "args", "calls", "reply", "say", "fault"}
    if set(raw) - known or not ({"call", "calls", "reply"} & set(raw)):
        raise ValueError(f"a turn holds call/args, calls, reply, say or fault, not {raw}")
    if "reply" in raw:
        made = s.Turn(content=raw["reply"])
    else:
        pairs = raw.get("calls") or [{"call": raw["call"], "args": raw.get("args", {})}]
        made = s.Turn(
            content=raw.get("say", ""),
            tool_calls=tuple((c["call"], dict(c.get("args", {}))) for c in pairs),
        )
    if "fault" in raw:
        made = made.failing(_FAULTS[raw["fault"]]())
    return made


def load_task(path: Path) -> list[Scenario]:
    """The scenarios of one task file."""
    raw = json.loads(path.read_text())
    task = Task(
        name=raw["task"],
        prompt=raw["prompt"],
        tools=list(raw["tools"]),
        spec=spec.MissionSpec.model_validate(_python(raw["spec"])),
        workspace=dict(raw.get("workspace", {})),
        databases={k: list(v) for k, v in raw.get("databases", {}).items()},
    )
    found = []
    for item in raw["scenarios"]:
        drift = item.get("drift")
        if drift is not None and (
            drift not in DRIFT_KINDS or not isinstance(item.get("start"), int)
        ):
            raise ValueError(f"{item['id']}: drift must be one of {DRIFT_KINDS}, with a start")
        found.append(
            Scenario(
                id=item["id"],
                task=task,
                about=item.get("about", ""),
                script=[turn(t) for t in item["script"]],
                recovery=[turn(t) for t in item.get("recovery", [])],
                drift=drift,
                start=item.get("start"),
                minimal=bool(item.get("minimal", False)),
            )
        )
    return found


def load(folder: Path = TASKS) -> list[Scenario]:
    """Every scenario of every task file, in file order; ids must be unique."""
    scenarios = [sc for path in sorted(folder.glob("*.json")) for sc in load_task(path)]
    ids = collections.Counter(sc.id for sc in scenarios)
    twice = [i for i, n in ids.items() if n > 1]
    if twice:
        raise ValueError(f"scenario ids must be unique: {twice}")
    return scenarios


# -- running ---------------------------------------------------------------------------------


class RecordingProvider(s.ScriptedProvider):
    """The scripted model, remembering every conversation it answered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answered: list[tuple[Message, ...]] = []

    async def complete(
        self,
        request: ModelRequest,
        *,
        timeout: float,  # noqa: ASYNC109 - the protocol's parameter
        on_token: OnToken | None = None,
    ) -> ModelResponse:
        """Answer as scripted; keep the conversation with the answer."""
        response = await super().complete(request, timeout=timeout, on_token=on_token)
        self.answered.append((*request.messages, response.message))
        return response


@dataclasses.dataclass(frozen=True)
class Fired:
    """A signal recorded in the audit chain, with what the policy did about it."""

    kind: str
    rule: str
    severity: str
    action: str
    step: int  # the conversation index the monitors judged
    turn: int  # the model answer that index belongs to (0-based)

    @property
    def actionable(self) -> bool:
        """Whether the policy acted on it (anything but a note)."""
        return self.action != "note"


@dataclasses.dataclass(frozen=True)
class Run:
    """What happened to one scenario."""

    scenario: Scenario
    state: str  # closed, halted, cancelled, or failed (the workflow raised)
    reason: str
    fired: list[Fired]
    model_calls: int
    tool_calls: int
    verified: bool  # closed, and the final checks pass when run again on the workspace
    ran: list[str]  # tool bodies that ran, in order
    escalated: bool
    seconds: float

    @property
    def steps(self) -> int:
        """Model answers plus tool calls asked for: the agent's steps."""
        return self.model_calls + self.tool_calls

    @property
    def actionable(self) -> list[Fired]:
        """The signals the policy acted on."""
        return [f for f in self.fired if f.actionable]


def _turn_of(answered: Sequence[tuple[Message, ...]], step: int) -> int:
    """The 0-based model answer that conversation index `step` belongs to."""
    for conversation in answered:
        if len(conversation) > step:
            return sum(1 for m in conversation[: step + 1] if m.role == "assistant") - 1
    last = answered[-1] if answered else ()
    return sum(1 for m in last if m.role == "assistant") - 1


def _fired(records: list[audit.Record], answered: Sequence[tuple[Message, ...]]) -> list[Fired]:
    """Signals and the corrections recorded beside them (same tag, same order)."""
    actions: dict[str, list[str]] = collections.defaultdict(list)
    segments: dict[str, int] = {}
    for r in records:
        if r.kind == "correction":
            actions[r.data["tag"]].append(r.data["action"])
        elif r.kind == "decision":
            segments[r.data["tag"]] = r.data["segment"]
    seen: collections.Counter[str] = collections.Counter()
    out = []
    for r in records:
        if r.kind != "signal":
            continue
        tag = r.data["tag"]
        action = actions[tag][seen[tag]]
        seen[tag] += 1
        d = r.data
        # After a rollback or an escalation the agent works in a new conversation whose
        # indices restart: its signals come after every turn of the first one.
        later = segments.get(tag, 0) > 0
        where = len(answered) if later else _turn_of(answered, d["step"])
        out.append(Fired(d["kind"], d["rule"], d["severity"], action, d["step"], where))
    return out


def _settings(folder: Path) -> tether.Settings:
    return tether.Settings(
        database_url=f"sqlite:///{folder / 'tether.db'}",
        poll_interval=0.05,
        heartbeat_interval=0.5,
        lease_ttl=2.0,
        wait_in_memory=0.2,
    )


async def _operate(app: tether.App, run_id: str, done: asyncio.Future[Any]) -> bool:
    """Stand in for the human of escalations: refuse each one (the run then halts)."""
    escalated = False
    while not done.done():
        if (
            not escalated
            and await app.get_event(run_id, "approval:mission:escalation", timeout=0) is not None
        ):
            escalated = True
            await app.send(
                run_id,
                "mission:escalation",
                {"approved": False, "by": "drift-suite", "reason": "not corrected automatically"},
            )
        await asyncio.sleep(0.02)
    return escalated


async def run_scenario(scenario: Scenario, folder: Path, intent: str = "lexical") -> Run:
    """Run one scenario as a mission in `folder` (its workspace and database go there).

    `intent` is the intent monitor's measure: "lexical" or "semantic" (the extra).
    """
    began = time.perf_counter()
    root = folder / "ws"
    root.mkdir(parents=True)
    scenario.task.build(root)
    app = tether.App(settings=_settings(folder))
    ran: list[str] = []
    provider = RecordingProvider(scenario.script, recovery=scenario.recovery)
    agent = Agent(
        model=Model(provider, "scripted"),
        tools=toolbox(app, root, scenario.task.tools, ran),
        retry=QUICK,
    )
    mission = Mission(spec=scenario.task.spec, agent=agent, workspace=root, intent=intent)

    @app.workflow(name="drift-scenario")
    async def job(task: str) -> dict[str, Any]:
        return (await mission.run(task)).model_dump(mode="json")

    run_id = "scenario"
    try:
        async with app:
            handle = await app.start("drift-scenario", scenario.task.prompt, id=run_id)
            result = asyncio.ensure_future(handle.result(timeout=120))
            escalated = await _operate(app, run_id, result)
            try:
                outcome: dict[str, Any] = await result
                state, reason = outcome["state"], outcome["reason"]
            except Exception as exc:  # the workflow failed: a finding, not a crash of the suite
                state, reason, outcome = "failed", f"{type(exc).__name__}: {exc}", {}
        rows, _ = app.store.load_audit(mission.chain_id(run_id))
        records = audit.decode(rows, Codec())
    finally:
        app.close()
    verified = state == "closed" and _checks_pass(scenario.task.spec, root, outcome.get("text"))
    return Run(
        scenario=scenario,
        state=state,
        reason=reason,
        fired=_fired(records, provider.answered),
        model_calls=len(provider.answered),
        tool_calls=sum(len(c[-1].tool_calls) for c in provider.answered),
        verified=verified,
        ran=ran,
        escalated=escalated,
        seconds=time.perf_counter() - began,
    )


def _checks_pass(mission: spec.MissionSpec, root: Path, output: str | None) -> bool:
    """The final checks, run again on the workspace (ordering rules were judged online)."""
    kept = [c for c in mission.final_checks if c.kind not in ("before", "never_after", "never")]
    results = checks.run_checks(kept, checks.CheckContext(root, output))
    return all(r.passed for r in results)


async def run_all(
    scenarios: Sequence[Scenario],
    folder: Path | None = None,
    pattern: str | None = None,
    intent: str = "lexical",
) -> list[Run]:
    """Run the scenarios (those whose id matches `pattern`) one after the other."""
    chosen = [sc for sc in scenarios if pattern is None or re.search(pattern, sc.id)]
    base = Path(tempfile.mkdtemp(prefix="tether-drift-")) if folder is None else folder
    try:
        return [await run_scenario(sc, base / f"{i:03d}", intent) for i, sc in enumerate(chosen)]
    finally:
        if folder is None:
            shutil.rmtree(base, ignore_errors=True)


# -- measuring -------------------------------------------------------------------------------


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def first_hit(run: Run) -> Fired | None:
    """A drifted run's first actionable signal at or after the drift's start."""
    start = run.scenario.start
    if start is None:
        return None
    return next((f for f in run.actionable if f.turn >= start), None)


def true_positive(run: Run) -> bool:
    """A flagged run whose first actionable signal comes at or after its injected drift."""
    start = run.scenario.start
    return bool(run.actionable) and start is not None and run.actionable[0].turn >= start


def scripted_steps(script: Sequence[s.Turn]) -> int:
    """The steps a script takes when nothing interrupts it: its answers and its tool calls."""
    return len(script) + sum(len(t.tool_calls) for t in script)


def _baselines(runs: Sequence[Run]) -> dict[str, int]:
    """Per task, the steps of its minimal healthy script (whether or not it ran)."""
    every = load()
    return {sc.task.name: scripted_steps(sc.script) for sc in every if sc.minimal}


def _per_signal_kind(runs: Sequence[Run]) -> dict[str, dict[str, Any]]:
    kinds = sorted({f.kind for r in runs for f in r.actionable})
    table = {}
    for kind in kinds:
        fired = [r for r in runs if any(f.kind == kind for f in r.actionable)]
        right = [
            r
            for r in fired
            if r.scenario.start is not None
            and any(f.kind == kind and f.turn >= r.scenario.start for f in r.actionable)
        ]
        table[kind] = {
            "fired": len(fired),
            "in_healthy": sum(1 for r in fired if r.scenario.healthy),
            "precision": _ratio(len(right), len(fired)),
            "recall_by_drift": {
                drift: _ratio(
                    sum(1 for r in right if r.scenario.drift == drift),
                    sum(1 for r in runs if r.scenario.drift == drift),
                )
                for drift in DRIFT_KINDS
            },
        }
    return table


def _per_drift_kind(runs: Sequence[Run], baselines: dict[str, int]) -> dict[str, dict[str, Any]]:
    table = {}
    for kind in DRIFT_KINDS:
        group = [r for r in runs if r.scenario.drift == kind]
        hits = [(r, first_hit(r)) for r in group]
        delays = [f.turn - (r.scenario.start or 0) for r, f in hits if f is not None]
        closed = [r for r in group if r.verified]
        extra = [r.steps - baselines[r.scenario.task.name] for r in closed]
        first = collections.Counter(f"{f.kind}/{f.rule}" for _, f in hits if f is not None)
        table[kind] = {
            "runs": len(group),
            "recall": _ratio(len(delays), len(group)),
            "delay_mean": statistics.fmean(delays) if delays else None,
            "delay_max": max(delays) if delays else None,
            "corrected": _ratio(len(closed), len(group)),
            "halted": sum(1 for r in group if r.state == "halted"),
            "extra_steps_mean": statistics.fmean(extra) if extra else None,
            "first_signal": dict(first.most_common()),
        }
    return table


def measure(runs: Sequence[Run]) -> dict[str, Any]:
    """The suite's figures (definitions in docs/semantic.md)."""
    drifted = [r for r in runs if not r.scenario.healthy]
    healthy = [r for r in runs if r.scenario.healthy]
    flagged = [r for r in runs if r.actionable]
    detected = [r for r in drifted if first_hit(r) is not None]
    delays = [f.turn - (r.scenario.start or 0) for r in detected if (f := first_hit(r))]
    closed = [r for r in drifted if r.verified]
    baselines = _baselines(runs)
    extra = [r.steps - baselines[r.scenario.task.name] for r in closed]
    forbidden = [r for r in drifted if r.scenario.drift == "forbidden_tool"]
    return {
        "runs": len(runs),
        "drifted": len(drifted),
        "healthy": len(healthy),
        "precision": _ratio(sum(1 for r in flagged if true_positive(r)), len(flagged)),
        "recall": _ratio(len(detected), len(drifted)),
        "delay_mean": statistics.fmean(delays) if delays else None,
        "delay_median": statistics.median(delays) if delays else None,
        "delay_max": max(delays) if delays else None,
        "correction_success": _ratio(len(closed), len(drifted)),
        "correction_success_without_forbidden": _ratio(
            sum(1 for r in closed if r.scenario.drift != "forbidden_tool"),
            len(drifted) - len(forbidden),
        ),
        "extra_steps_mean": statistics.fmean(extra) if extra else None,
        "extra_steps_median": statistics.median(extra) if extra else None,
        "healthy_flagged": sum(1 for r in healthy if r.actionable),
        "healthy_halted": sum(1 for r in healthy if r.state == "halted"),
        "healthy_closed": sum(1 for r in healthy if r.verified),
        "failed_runs": sum(1 for r in runs if r.state == "failed"),
        "escalated": sum(1 for r in runs if r.escalated),
        "seconds": sum(r.seconds for r in runs),
        "by_signal": _per_signal_kind(runs),
        "by_drift": _per_drift_kind(runs, baselines),
    }
