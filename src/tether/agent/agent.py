"""`Agent`: the tool-calling loop, with every model call and tool call a durable step.

    agent = Agent(model=["openai:gpt-4o", "anthropic:claude-sonnet-4"], providers=[...],
                  tools=[search, refund], instructions="You are a support agent.",
                  output=Resolution, budget=Budget(max_steps=30, max_cost=1.0))

    @app.workflow()
    async def support(ticket: str) -> Resolution:
        result = await agent.run(ticket)
        return result.output

The conversation is never stored as such: it is rebuilt, message by message, from the
journaled model answers, tool answers and hook decisions. So a run resumed after a crash
replays to the exact point it reached, paying for no model call and repeating no tool call
that had been recorded, and goes on from there.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pydantic

from tether.agent.budgets import Budget, Meter
from tether.agent.errors import (
    AgentStoppedError,
    BudgetExceededError,
    OutputValidationError,
    ToolUnavailableError,
)
from tether.agent.hooks import (
    AgentHooks,
    AgentState,
    HookDecision,
    HookRunner,
    ModelEvent,
    ToolEvent,
)
from tether.agent.llm import DEFAULT_MODEL_RETRY, ModelCaller, ServiceGate
from tether.agent.models import Model, ModelLike, Price, resolve_chain
from tether.agent.output import OutputSpec, OutputValidator
from tether.agent.tools import Tool
from tether.agent.types import (
    Message,
    ModelRequest,
    ModelResponse,
    OnToken,
    Provider,
    ToolCall,
    Usage,
)
from tether.engine import context as contexts
from tether.engine import messages, runtime
from tether.engine.retry import Retry
from tether.errors import (
    ConfigError,
    NonDeterminismError,
    NotInWorkflowError,
    StepError,
    StoreError,
)

log = logging.getLogger("tether.agent")

Observer = Callable[[str, str], None]
"""Called with (run id, text fragment) while any run of the agent streams an answer."""


class AgentResult(pydantic.BaseModel):
    """What an agent run produced.

    Attributes:
        output: the validated output (the text when the agent has no output type).
        text: the final answer's text.
        conversation: every message, the instructions and the task first.
        usage: tokens over all model calls.
        cost: cost over all model calls (0 without prices).
        steps: model calls plus tool calls.
        model_calls: model calls (answers received; retries not counted).
        tool_calls: tool calls.
        model: the model that gave the final answer ("provider:model").
    """

    model_config = pydantic.ConfigDict(frozen=True)

    output: Any
    text: str
    conversation: tuple[Message, ...]
    usage: Usage
    cost: float
    steps: int
    model_calls: int
    tool_calls: int
    model: str


@dataclasses.dataclass(kw_only=True, eq=False)
class Agent:
    """A model with tools, instructions, an output type and budgets, run durably.

    Attributes:
        model: the model chain: a `Model`, a "provider:model" string, or a list of them
            (primary first, then fallbacks).
        tools: tools declared with `@app.tool`.
        instructions: the system message.
        output: a type (pydantic model, dataclass, `list[int]` ...) or a callable that
            validates the final answer; None keeps the text.
        budget: limits on steps, tokens, cost and wall time.
        name: the agent's name (shown to hooks).
        providers: providers that "provider:model" strings name.
        prices: prices by "provider:model" (or model name), for models without one.
        retry: retries per model before failing over (see `tether.agent.llm`).
        hooks: steering hooks (see `AgentHooks`).
        services: fleet-shared circuit breakers and rate budgets (`ServiceGate`), for the
            models' services and for the tools that declare one (which otherwise use the
            app's `app.services`).
        output_retries: corrections allowed when the answer does not validate.
        temperature: sampling temperature, or the provider's default.
    """

    model: ModelLike | Sequence[ModelLike]
    tools: Sequence[Tool[..., Any]] = ()
    instructions: str = ""
    output: OutputSpec | None = None
    budget: Budget = dataclasses.field(default_factory=Budget)
    name: str = "agent"
    providers: Sequence[Provider] = ()
    prices: Mapping[str, Price] = dataclasses.field(default_factory=dict)
    retry: Retry = DEFAULT_MODEL_RETRY
    hooks: Sequence[AgentHooks] = ()
    services: ServiceGate | None = None
    output_retries: int = 2
    temperature: float | None = None

    def __post_init__(self) -> None:
        self.chain: tuple[Model, ...] = resolve_chain(self.model, self.providers, self.prices)
        self.budget.check_prices(self.chain)
        if self.output_retries < 0:
            raise ConfigError(f"output_retries={self.output_retries} must not be negative")
        self.tool_map: dict[str, Tool[..., Any]] = {}
        for tool in self.tools:
            if not isinstance(tool, Tool):
                raise ConfigError(
                    f"{getattr(tool, '__name__', tool)!r} is not a tool; declare it with "
                    "@app.tool(...) before giving it to an agent"
                )
            if tool.name in self.tool_map:
                raise ConfigError(f"the agent has two tools named {tool.name!r}")
            self.tool_map[tool.name] = tool
        self.validator = OutputValidator(self.output)
        self.caller = ModelCaller(self.chain, self.retry, self.services)
        self.hook_runner = HookRunner(self.hooks)
        self._start = runtime.step(name="agent:start", retry=None)(_now)
        self._observers: list[Observer] = []

    async def run(
        self, task: str | Sequence[Message], *, on_token: OnToken | None = None
    ) -> AgentResult:
        """Run the agent on `task` to its final answer, durably; call it in workflow code.

        Args:
            task: the user's request, or a conversation to continue.
            on_token: called with each text fragment while an answer streams in (recorded
                answers replayed after a restart are not streamed again).

        Raises:
            BudgetExceededError: a budget ran out.
            ModelCallError: a model refused the call in a way retries cannot fix.
            ModelsExhaustedError: every model in the chain failed.
            OutputValidationError: the answer did not validate, corrections included.
            AgentStoppedError: a hook stopped the run.
            NotInWorkflowError: called outside workflow code.
        """
        ctx = contexts.context()
        if ctx.step_name is not None:
            raise NotInWorkflowError(
                "agent.run() belongs in workflow code, not inside a step: its model and tool "
                "calls are steps of their own"
            )
        return await _Loop(self, ctx.workflow_id, self._stream(ctx.workflow_id, on_token)).run(task)

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Pass every streamed fragment of this agent's runs in this process to `observer`.

        Returns a function that ends the subscription.
        """
        self._observers.append(observer)
        return lambda: self._observers.remove(observer)

    def _stream(self, run_id: str, on_token: OnToken | None) -> OnToken | None:
        if on_token is None and not self._observers:
            return None
        observers = self._observers

        def emit(fragment: str) -> None:
            for fn in [on_token] if on_token is not None else []:
                fn(fragment)
            for observer in list(observers):
                try:
                    observer(run_id, fragment)
                except Exception:
                    log.exception("an agent observer failed; it is skipped for this fragment")

        return emit


async def _now() -> float:
    return time.time()


class _Loop:
    """One run of an agent: the conversation and the tally, rebuilt identically on replay."""

    def __init__(self, agent: Agent, run_id: str, on_token: OnToken | None) -> None:
        self.agent = agent
        self.run_id = run_id
        self.on_token = on_token
        self.meter = Meter(agent.budget)
        self.conversation: list[Message] = []
        self.pending: list[Message] = []  # injected messages, added before the next model call
        self.specs = tuple(t.spec for t in agent.tools)

    async def run(self, task: str | Sequence[Message]) -> AgentResult:
        self.meter.started_at = await self.agent._start()
        if self.agent.instructions:
            self.conversation.append(Message(role="system", content=self.agent.instructions))
        if isinstance(task, str):
            self.conversation.append(Message(role="user", content=task))
        else:
            self.conversation.extend(task)
        corrections = 0
        while True:
            model, response = await self.model_turn()
            if response.message.tool_calls:
                for call in response.message.tool_calls:
                    await self.tool_turn(call)
                continue
            if self.pending:
                continue  # a hook answered the final answer with messages: not done yet
            ok, value, error = self.agent.validator.validate(response.message.content)
            if ok:
                return self.result(value, response, model)
            corrections += 1
            if corrections > self.agent.output_retries:
                raise OutputValidationError(corrections, error)
            self.pending.append(
                Message(role="user", content=self.agent.validator.correction(error))
            )

    async def model_turn(self) -> tuple[Model, ModelResponse]:
        self.meter.before_step()
        self.apply(await self.hook("before_model"))
        self.conversation.extend(self.pending)
        self.pending.clear()
        tally = self.meter.tally
        tally.steps += 1
        tally.model_calls += 1
        model, response = await self.agent.caller.complete(
            self.request_for, on_token=self.on_token, check=self.meter.check_time
        )
        tally.add_response(model, response.usage)
        self.conversation.append(response.message)
        self.meter.after_model()
        self.apply(await self.hook("after_step", ModelEvent(model=model.label, response=response)))
        return model, response

    async def tool_turn(self, call: ToolCall) -> None:
        self.meter.before_step()
        tally = self.meter.tally
        tally.steps += 1
        tally.tool_calls += 1
        decision = await self.hook("before_tool", call)
        self.apply(decision)
        if decision.result is not None:
            content, ok, blocked = decision.result, False, True
        else:
            (content, ok), blocked = await self.call_tool(call), False
        self.conversation.append(
            Message(role="tool", content=content, tool_call_id=call.id, name=call.name)
        )
        event = ToolEvent(call=call, content=content, ok=ok, blocked=blocked)
        self.apply(await self.hook("after_step", event))

    async def call_tool(self, call: ToolCall) -> tuple[str, bool]:
        tool = self.agent.tool_map.get(call.name)
        if tool is None:
            known = ", ".join(sorted(self.agent.tool_map)) or "none"
            return f"error: there is no tool named {call.name!r}; the tools are: {known}", False
        try:
            kwargs = tool.parse(call.arguments)
        except pydantic.ValidationError as exc:
            return f"error: invalid arguments for {call.name}: {_validation_text(exc)}", False
        approval = tool.options.approval
        if approval is not None:
            topic = approval.topic or f"approve:{tool.name}"
            request = {"tool": tool.name, "arguments": call.arguments, "call_id": call.id}
            answer = await messages.request_approval(topic, request, timeout=approval.timeout)
            if not answer.approved:
                why = "no answer in time" if answer.timed_out else (answer.reason or "refused")
                by = f" by {answer.by}" if answer.by else ""
                return f"error: the call to {tool.name} was not approved{by}: {why}", False
        try:
            return await tool.run_for_agent(
                kwargs, self.meter.check_time, self.agent.services
            ), True
        except (BudgetExceededError, NonDeterminismError, StoreError):
            raise
        except ToolUnavailableError as exc:
            return f"error: {exc}", False
        except Exception as exc:
            return f"error: {call.name} failed: {_error_text(exc)}", False

    async def hook(self, point: str, *args: Any) -> HookDecision:
        if not self.agent.hook_runner.hooks:
            return HookDecision()
        return await self.agent.hook_runner.call(point, self.state(), *args)

    def apply(self, decision: HookDecision) -> None:
        if decision.stop is not None:
            raise AgentStoppedError(decision.stop, self.state())
        self.pending.extend(decision.messages)

    def request_for(self, model: Model) -> ModelRequest:
        return ModelRequest(
            model=model.name,
            messages=tuple(self.conversation),
            tools=self.specs,
            temperature=self.agent.temperature,
            max_tokens=model.max_tokens,
            output_schema=self.agent.validator.schema,
        )

    def state(self) -> AgentState:
        tally = self.meter.tally
        return AgentState(
            run_id=self.run_id,
            agent=self.agent.name,
            conversation=tuple(self.conversation),
            usage=tally.usage,
            cost=tally.cost,
            steps=tally.steps,
            model_calls=tally.model_calls,
            tool_calls=tally.tool_calls,
        )

    def result(self, value: Any, response: ModelResponse, model: Model) -> AgentResult:
        tally = self.meter.tally
        return AgentResult(
            output=value,
            text=response.message.content,
            conversation=tuple(self.conversation),
            usage=tally.usage,
            cost=tally.cost,
            steps=tally.steps,
            model_calls=tally.model_calls,
            tool_calls=tally.tool_calls,
            model=model.label,
        )


def _error_text(exc: BaseException) -> str:
    """The same text on the first run and on replay (where the type may be a `StepError`)."""
    if isinstance(exc, StepError):
        return f"{exc.type_name.rpartition('.')[2]}: {exc.remote_message}"
    return f"{type(exc).__name__}: {exc}"


def _validation_text(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
