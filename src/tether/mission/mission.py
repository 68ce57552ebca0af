"""`Mission`: an agent run held to a declared contract, verified, corrected and audited.

    mission = Mission(spec=contract, agent=agent, workspace="./work")

    @app.workflow()
    async def job(task: str) -> dict:
        outcome = await mission.run(task)   # closed (verified), halted or cancelled
        return outcome.model_dump()

The mission steers the agent through the agent layer's hooks: after every step and before
every tool call its monitors judge the run, and the correction policy answers (block, message,
rollback, escalate, halt). Blocks and messages go straight into the conversation; a rollback,
an escalation or a halt stops the agent's loop, and `run` restarts it from the right
conversation, with another strategy or a human's answer, or ends the mission.

Everything the mission decides is appended to its audit chain under the journal position of
the step that decided it (see `tether.mission.ledger`), which is what makes a resumed mission
reach the same verdicts as an uninterrupted one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydantic

from tether.agent.agent import Agent, AgentResult
from tether.agent.errors import AgentStoppedError, BudgetExceededError
from tether.agent.hooks import AgentHooks, AgentState, HookDecision, StepEvent
from tether.agent.types import Message, ToolCall
from tether.engine import context as contexts
from tether.engine import messages as engine_messages
from tether.engine import runtime
from tether.errors import ConfigError, MissionSpecChangedError
from tether.mission import checks, correction, semantic, spec, states
from tether.mission.correction import MARKER, Action, Policy, Strategy
from tether.mission.ledger import Item, Ledger, LedgerStore, transition
from tether.mission.monitors.base import Signal
from tether.mission.monitors.intent import check_measure
from tether.mission.states import MissionState
from tether.mission.watch import Feeder, Watcher
from tether.settings import Settings

S = MissionState
_DIRECTIVE = "mission:"


class MissionOutcome(pydantic.BaseModel):
    """How a mission ended.

    Attributes:
        mission_id: the audit chain's id (`tether missions show ID`).
        state: closed, halted or cancelled.
        output: the agent's validated output, when the mission closed.
        text: the agent's final answer, when the mission closed.
        reason: why it halted.
        signals: monitor signals over the mission.
        corrections: corrections applied (notes not counted).
        scores: flow conformance, intent drift, action advancement, action completion.
    """

    model_config = pydantic.ConfigDict(frozen=True)

    mission_id: str
    state: MissionState
    output: Any = None
    text: str = ""
    reason: str = ""
    signals: int = 0
    corrections: int = 0
    scores: dict[str, float | None] = pydantic.Field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class _Totals:
    """What earlier runs of the agent (before a rollback or an escalation) used."""

    tokens: int = 0
    cost: float = 0.0
    steps: int = 0

    def plus(self, state: AgentState) -> _Totals:
        return _Totals(
            self.tokens + state.usage.total_tokens, self.cost + state.cost, self.steps + state.steps
        )


@dataclasses.dataclass(kw_only=True, eq=False)
class Mission:
    """Runs an agent under a mission contract.

    Attributes:
        spec: the contract; it must declare final checks (a mission closes only on them).
        agent: the agent that does the work.
        policy: the correction table.
        workspace: the folder file and command checks read (the agent's working directory).
        name: tells apart several missions run by one workflow.
        audit_key: an HMAC key for the audit chain (see `tether.mission.audit`); by default
            `Settings.audit_key` (`TETHER_AUDIT_KEY`), if set.
        max_restarts: rollbacks and escalations allowed before the mission halts.
        intent: the intent monitor's measure: "lexical" (default) or "semantic", which needs
            the optional extra `tether[semantic]` (checked here; the model loads, once per
            process, in a thread when the first semantic mission runs).
    """

    spec: spec.MissionSpec
    agent: Agent
    policy: Policy = dataclasses.field(default_factory=Policy)
    workspace: str | Path | None = None
    name: str = ""
    audit_key: bytes | None = None
    max_restarts: int = 10
    intent: str = "lexical"

    def __post_init__(self) -> None:
        if not self.spec.final_checks:
            raise ConfigError(
                "a mission needs final_checks: it closes only when they pass; declare at least "
                "one (a file that must exist, a command that must succeed, ...)"
            )
        if self.max_restarts < 0:
            raise ConfigError(f"max_restarts={self.max_restarts} must not be negative")
        self.folder = Path(self.workspace) if self.workspace is not None else None
        if self.audit_key is None:
            configured = Settings.from_env().audit_key
            self.audit_key = configured.encode() if configured else None
        self.intent = check_measure(self.intent)
        self._record = runtime.step(name="mission:record", retry=None)(self._record_body)
        self._close = runtime.step(name="mission:close", retry=None)(self._close_body)

    @property
    def ledgers(self) -> LedgerStore:
        """The audit chains of the app running the current workflow."""
        found = runtime.services("a mission")
        return LedgerStore(found.store, found.codec, self.audit_key)

    def chain_id(self, run_id: str) -> str:
        """The audit chain of this mission in run `run_id`."""
        return f"mission/{run_id}" + (f"/{self.name}" if self.name else "")

    async def run(self, task: str) -> MissionOutcome:
        """Run the mission to its end: closed (verified), halted, or cancelled by a human."""
        chain = self.chain_id(contexts.context().workflow_id)
        if self.intent == "semantic":  # load the model off the event loop, once per process
            await asyncio.to_thread(semantic.embedder().load)
        launched = await self._launch(chain, task)
        if launched is not None:
            return launched
        return await self._work(chain, task)

    async def _launch(self, chain: str, task: str) -> MissionOutcome | None:
        launch: dict[str, Any] = {
            "objective": self.spec.objective,
            "digest": self.spec.digest,
            "task": task,
            "spec": self.spec.model_dump(mode="json"),
        }
        recorded = await self._record(
            chain, [("launch", launch), transition(S.CREATED, S.PLANNING)]
        )
        if recorded[0]["data"]["digest"] != self.spec.digest:
            raise MissionSpecChangedError(
                f"mission {chain!r} was launched with spec {recorded[0]['data']['digest'][:12]}, "
                f"this code declares {self.spec.digest[:12]}: a mission's contract cannot change "
                "while it runs; finish it with the old code or cancel it and launch a new one"
            )
        if not self.spec.approval:
            await self._record(chain, [transition(S.PLANNING, S.APPROVED, by="policy")])
        else:
            await self._record(chain, [transition(S.PLANNING, S.WAITING_APPROVAL)])
            plan = {"objective": self.spec.objective, "phases": [p.name for p in self.spec.phases]}
            answer = await engine_messages.request_approval(
                "mission:approval", plan, timeout=self.spec.escalation.deadline
            )
            if not answer.approved:
                why = "no answer in time" if answer.timed_out else (answer.reason or "refused")
                await self._record(
                    chain, [transition(S.WAITING_APPROVAL, S.HALTED, by=answer.by, reason=why)]
                )
                return MissionOutcome(
                    mission_id=chain, state=S.HALTED, reason=f"not approved: {why}"
                )
            await self._record(chain, [transition(S.WAITING_APPROVAL, S.APPROVED, by=answer.by)])
        await self._record(
            chain,
            [
                transition(S.APPROVED, S.PENDING_EXECUTION),
                transition(S.PENDING_EXECUTION, S.IN_PROGRESS),
            ],
        )
        return None

    async def _work(self, chain: str, task: str) -> MissionOutcome:
        conversation: str | list[Message] = task
        strategy: Strategy | None = None
        totals = _Totals()
        for segment in range(self.max_restarts + 1):
            steering = _Steering(self, chain, segment, totals)
            agent = self._agent(strategy, steering)
            try:
                result = await agent.run(conversation)
            except AgentStoppedError as stop:
                directive = _directive(stop.reason)
                if directive is None:
                    raise
                totals = totals.plus(stop.state)
                action = Action(directive["action"])
                if action is Action.HALT:
                    return await self._finish(chain, S.HALTED, directive["reason"])
                if action is Action.ESCALATE:
                    resumed = await self._escalate(chain, stop.state, directive)
                    if isinstance(resumed, MissionOutcome):
                        return resumed
                    conversation = resumed
                else:
                    strategy = self.policy.strategy(directive["rollbacks"])
                    cut = list(stop.state.conversation[: directive["to"]])
                    conversation = [*cut, Message(role="user", content=directive["message"])]
                    evidence = {"strategy": strategy.name, "to": directive["to"]}
                    await self._record(chain, [transition(S.CORRECTING, S.IN_PROGRESS, **evidence)])
                continue
            except BudgetExceededError as exc:
                await self._record(chain, [transition(S.IN_PROGRESS, S.HALTED, reason=str(exc))])
                return await self._finish(chain, S.HALTED, str(exc))
            return await self._closed(chain, result, steering)
        await self._record(chain, [transition(S.IN_PROGRESS, S.HALTED, reason="too many restarts")])
        return await self._finish(chain, S.HALTED, f"more than {self.max_restarts} restarts")

    def _agent(self, strategy: Strategy | None, steering: _Steering) -> Agent:
        changes: dict[str, Any] = {"hooks": [*self.agent.hooks, steering]}
        if strategy is not None and strategy.temperature is not None:
            changes["temperature"] = strategy.temperature
        if strategy is not None and strategy.rotate_models and len(self.agent.chain) > 1:
            k = strategy.rotate_models % len(self.agent.chain)
            changes["model"] = [*self.agent.chain[k:], *self.agent.chain[:k]]
        return dataclasses.replace(self.agent, **changes)

    async def _escalate(
        self, chain: str, state: AgentState, directive: dict[str, Any]
    ) -> MissionOutcome | list[Message]:
        answer = await engine_messages.request_approval(
            "mission:escalation",
            {"mission": chain, "findings": directive["reason"]},
            timeout=self.spec.escalation.deadline,
        )
        if not answer.approved:
            why = "no answer in time" if answer.timed_out else (answer.reason or "refused")
            await self._record(chain, [transition(S.ESCALATED, S.HALTED, by=answer.by, reason=why)])
            return await self._finish(chain, S.HALTED, f"escalated, then stopped: {why}")
        guidance = answer.reason or "continue, and keep to the objective"
        await self._record(
            chain,
            [
                ("escalation", {"by": answer.by, "guidance": guidance}),
                transition(S.ESCALATED, S.IN_PROGRESS, by=answer.by),
            ],
        )
        note = Message(role="user", content=f"{MARKER} A human reviewed the run: {guidance}")
        return [*state.conversation, note]

    async def _closed(self, chain: str, result: AgentResult, steering: _Steering) -> MissionOutcome:
        steering.catch_up(result.conversation)
        closed = await self._close(chain, steering.watcher_scores())
        return MissionOutcome(
            mission_id=chain,
            state=S.CLOSED,
            output=result.output,
            text=result.text,
            signals=closed["signals"],
            corrections=closed["corrections"],
            scores=closed["scores"],
        )

    async def _finish(self, chain: str, state: MissionState, reason: str) -> MissionOutcome:
        ledger = await self.ledgers.load(chain)
        return MissionOutcome(
            mission_id=chain,
            state=state,
            reason=reason,
            signals=len(ledger.of_kind("signal")),
            corrections=_acted(ledger),
        )

    async def _record_body(self, chain: str, items: list[Item]) -> list[dict[str, Any]]:
        tag = _tag()
        records = await self.ledgers.write(chain, tag, items)
        return [{"kind": r.kind, "data": r.data} for r in records]

    async def _close_body(self, chain: str, scores: dict[str, float | None]) -> dict[str, Any]:
        ledger = await self.ledgers.load(chain)
        verified = ledger.of_kind("verification")
        results = verified[-1].data["checks"] if verified else []
        states.check_transition(ledger.state, S.CLOSED, {"checks": results})
        tool_calls = sum(1 for r in ledger.of_kind("decision") if r.data.get("call"))
        blocked = sum(1 for r in ledger.of_kind("correction") if r.data.get("action") == "block")
        if tool_calls:
            scores = {**scores, "flow_conformance": round(1 - blocked / tool_calls, 4)}
        items = [transition(ledger.state, S.CLOSED, checks=results), ("scores", {"scores": scores})]
        await self.ledgers.write(chain, _tag(), items)
        return {
            "signals": len(ledger.of_kind("signal")),
            "corrections": _acted(ledger),
            "scores": scores,
        }


class _Steering(AgentHooks):
    """The mission's hook: judges each step and tool call, and answers with a correction."""

    def __init__(self, mission: Mission, chain: str, segment: int, totals: _Totals) -> None:
        self.mission = mission
        self.chain = chain
        self.segment = segment
        self.totals = totals
        self.feeder: Feeder | None = None
        self.launched_at = time.time()
        self.answer: str | None = None

    # -- the hook points ----------------------------------------------------------------------

    async def before_tool(self, state: AgentState, call: ToolCall) -> HookDecision | None:
        """Judge the call before it runs (boundary rules can block it)."""
        return await self._judge(state, call.id)

    async def after_step(self, state: AgentState, event: StepEvent) -> HookDecision | None:
        """Judge the step's answer or result."""
        return await self._judge(state, None)

    # -- judging ------------------------------------------------------------------------------

    async def _judge(self, state: AgentState, call_id: str | None) -> HookDecision | None:
        tag = _tag()
        ledger = await self.mission.ledgers.load(self.chain)
        decided = [r for r in ledger.tagged(tag) if r.kind == "decision"]
        if decided:
            return HookDecision.model_validate(decided[0].data["decision"])
        if self.mission.intent == "semantic":  # embed in a thread, not on the event loop
            await asyncio.to_thread(self._warm, ledger, state.conversation)
        feeder = self._resume(ledger, state.conversation)
        watcher = feeder.watcher
        self._meter(state)
        self.answer = None
        phase = watcher.phase_index
        actions = _actions(state.conversation, feeder.fed)
        watcher.view.verify = self._verifier(watcher)
        watcher.checker = self._check
        try:
            found = feeder.messages(state.conversation)
            if call_id is not None:
                found += feeder.judge(call_id)
        finally:
            watcher.view.verify = None
            watcher.checker = None
        decision, judged = self._decide(ledger, watcher, found, state, call_id)
        items = actions + judged
        if watcher.phase_index != phase:
            items.append(
                (
                    "phase",
                    {
                        "index": watcher.phase_index,
                        "name": watcher.view.phase.name if watcher.view.phase else "",
                    },
                )
            )
        upto = {"segment": self.segment, "upto": len(state.conversation), "call": call_id}
        items.append(("decision", {**upto, "decision": decision.model_dump(mode="json")}))
        written = await self.mission.ledgers.write(self.chain, tag, items)
        mine = [r for r in written if r.kind == "decision"]
        return HookDecision.model_validate(mine[0].data["decision"]) if mine else decision

    def _resume(self, ledger: Ledger, conversation: Sequence[Message]) -> Feeder:
        """The feeder, rebuilt after a restart to where the last decision left the monitors."""
        if self.feeder is not None:
            return self.feeder
        self.feeder = Feeder(self._watcher())
        last = ledger.last_decision(self.segment)
        if last is not None:  # verification and phase checks stay off: their results are recorded
            self.feeder.messages(conversation, last.data["upto"])
            if last.data.get("call"):
                self.feeder.judge(last.data["call"])
        phases = ledger.of_kind("phase")
        self.feeder.watcher.set_phase(phases[-1].data["index"] if phases else 0)
        return self.feeder

    def _warm(self, ledger: Ledger, conversation: Sequence[Message]) -> None:
        """Embed what the next judgement will need (a rebuilt feeder needs it all)."""
        fresh = self.feeder is None
        feeder = self.feeder or Feeder(self._watcher())
        feeder.warm(conversation)
        if fresh:
            self.feeder = None  # `_resume` rebuilds it from the ledger; the vectors stay cached

    def catch_up(self, conversation: Sequence[Message]) -> None:
        """Feed the whole conversation (verification off): the monitors for the scores."""
        feeder = self.feeder or Feeder(self._watcher())
        self.feeder = feeder
        feeder.messages(conversation)

    def watcher_scores(self) -> dict[str, float | None]:
        """The scores of the run's last stretch of work."""
        return self.feeder.watcher.scores() if self.feeder else {}

    def _watcher(self) -> Watcher:
        # No checker until a live judgement: feeding a conversation again must not re-run checks.
        return Watcher(self.mission.spec, intent=self.mission.intent)

    def _check(self, to_run: Sequence[spec.Check], output: str | None) -> list[checks.CheckResult]:
        assert self.feeder is not None
        ctx = checks.CheckContext(self.mission.folder, output, self.feeder.watcher.view.events)
        return checks.run_checks(to_run, ctx)

    def _verifier(self, watcher: Watcher) -> Any:
        def verify(output: str | None) -> list[checks.CheckResult]:
            self.answer = output
            return self._check(self.mission.spec.final_checks, output)

        return verify

    def _meter(self, state: AgentState) -> None:
        assert self.feeder is not None
        view = self.feeder.watcher.view
        view.tokens = self.totals.tokens + state.usage.total_tokens
        view.cost = self.totals.cost + state.cost
        view.elapsed = time.time() - self.launched_at

    # -- deciding -----------------------------------------------------------------------------

    def _decide(
        self,
        ledger: Ledger,
        watcher: Watcher,
        found: list[Signal],
        state: AgentState,
        call_id: str | None,
    ) -> tuple[HookDecision, list[Item]]:
        moves = _Moves(ledger.state)
        items = moves.items
        if moves.machine.state is S.VERIFYING:
            # A verified answer that the agent did not return (its output did not validate):
            # the agent is back at work.
            moves.to(S.CORRECTING, reason="the answer was not accepted as output")
            moves.to(S.IN_PROGRESS)
        items += [("signal", s.to_json()) for s in found]
        if self.answer is not None and call_id is None and _final(state):
            moves.to(S.EXECUTED, answer=self.answer[:500])
            moves.to(S.VERIFYING)
            results = [
                {"name": n, "passed": ok, "detail": d} for n, ok, d in watcher.completion.last
            ]
            items.append(("verification", {"checks": results}))
        acted = [(s, self._action(ledger, s, state)) for s in found]
        items += [
            ("correction", {"signal": s.kind, "rule": s.rule, "action": a.value}) for s, a in acted
        ]
        strongest = max((a for _, a in acted), key=lambda a: a.rank, default=Action.NOTE)
        drivers = [s for s, a in acted if a is not Action.NOTE]
        return self._apply(strongest, drivers, moves, ledger, watcher, state), items

    def _action(self, ledger: Ledger, signal: Signal, state: AgentState) -> Action:
        """The policy's action; a note while the agent has not yet answered the last one.

        A correction of a kind (a message, a rollback, an escalation) is answered by the model's
        next turn. The same drift showing again before that turn (a loop's repeated result
        right after the message about its repeated call) is the drift already corrected, not
        a new one: it is noted and does not climb the ladder.
        """
        action = self.mission.policy.action(signal, ledger.corrections(signal.kind))
        if action in (Action.NOTE, Action.BLOCK, Action.HALT):
            return action
        if _unanswered(ledger, signal.kind, self.segment, state.conversation):
            return Action.NOTE
        return action

    def _apply(
        self,
        action: Action,
        signals: list[Signal],
        moves: _Moves,
        ledger: Ledger,
        watcher: Watcher,
        state: AgentState,
    ) -> HookDecision:
        phase = watcher.view.phase
        if action is Action.NOTE:
            return HookDecision()
        if action is Action.BLOCK:
            return HookDecision(result=correction.block_explanation(signals))
        if action is Action.HALT:
            reason = "; ".join(f"{s.kind}/{s.rule}" for s in signals)
            moves.to(S.HALTED, reason=reason)
            return HookDecision(stop=_encode({"action": "halt", "reason": reason}))
        if action is Action.ESCALATE:
            reason = correction.corrective_message(self.mission.spec, phase, signals)
            moves.to(S.ESCALATED)
            return HookDecision(stop=_encode({"action": "escalate", "reason": reason}))
        moves.to(S.CORRECTING, signals=[f"{s.kind}/{s.rule}" for s in signals])
        if action is Action.ROLLBACK:
            rollbacks = ledger.rollbacks
            strategy = self.mission.policy.strategy(rollbacks)
            to = _rollback_point(state.conversation, watcher)
            message = correction.restart_message(self.mission.spec, phase, strategy, signals)
            directive = {"action": "rollback", "to": to, "rollbacks": rollbacks, "message": message}
            return HookDecision(stop=_encode(directive))
        moves.to(S.IN_PROGRESS)
        text = correction.corrective_message(self.mission.spec, phase, signals)
        return HookDecision(messages=(Message(role="user", content=text),))


class _Moves:
    """Transitions checked against the table as they are recorded."""

    def __init__(self, state: MissionState) -> None:
        self.machine = states.Machine(state)
        self.items: list[Item] = []

    def to(self, target: MissionState, **evidence: Any) -> None:
        source = self.machine.state
        self.machine.move(target, evidence)
        self.items.append(transition(source, target, **evidence))


def _actions(conversation: Sequence[Message], start: int) -> list[Item]:
    """The agent's decisions since `start`, as audit records: its tool calls and its answers."""
    found: list[Item] = []
    for step in range(start, len(conversation)):
        message = conversation[step]
        if message.role != "assistant":
            continue
        calls = [{"tool": c.name, "arguments": c.arguments} for c in message.tool_calls]
        found.append(("action", {"step": step, "text": message.content[:1000], "calls": calls}))
    return found


def _final(state: AgentState) -> bool:
    last = state.conversation[-1] if state.conversation else None
    return last is not None and last.role == "assistant" and not last.tool_calls


def _rollback_point(conversation: Sequence[Message], watcher: Watcher) -> int:
    """The conversation's length just after the last result that advanced the run.

    Never inside a turn's tool results (every call keeps its result), never before the task.
    """
    first = next((i + 1 for i, m in enumerate(conversation) if m.role == "user"), len(conversation))
    advanced = watcher.advancement.last_advanced
    to = first if advanced is None else max(first, advanced + 1)
    while to < len(conversation) and conversation[to].role == "tool":
        to += 1
    return min(to, len(conversation))


def _unanswered(ledger: Ledger, kind: str, segment: int, conversation: Sequence[Message]) -> bool:
    """Whether the last correction of `kind` in this segment has had no model turn since."""
    steering = ("message", "rollback", "escalate")
    last = [
        r
        for r in ledger.of_kind("correction")
        if r.data.get("signal") == kind and r.data.get("action") in steering
    ]
    if not last:
        return False
    tag = last[-1].data["tag"]
    decided = [r for r in ledger.tagged(tag) if r.kind == "decision"]
    if not decided or decided[0].data.get("segment") != segment:
        return False
    upto = decided[0].data["upto"]
    return not any(m.role == "assistant" for m in conversation[upto:])


def _acted(ledger: Ledger) -> int:
    return sum(1 for r in ledger.of_kind("correction") if r.data.get("action") != "note")


def _tag() -> str:
    ctx = contexts.context()
    return f"{ctx.step_seq}"


def _encode(directive: dict[str, Any]) -> str:
    return _DIRECTIVE + json.dumps(directive)


def _directive(reason: str) -> dict[str, Any] | None:
    if not reason.startswith(_DIRECTIVE):
        return None
    value = json.loads(reason[len(_DIRECTIVE) :])
    return value if isinstance(value, dict) else None
