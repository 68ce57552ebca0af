"""Hooks: how a layer above (the mission layer, your own monitors) steers a running agent.

The loop calls every hook at three points:

- `before_model(state)`: before each model call; may add messages to the conversation
  (a corrective instruction) or stop the run.
- `before_tool(state, call)`: before each tool call; may block it by answering it with a
  synthetic result (the tool does not run) or stop the run.
- `after_step(state, event)`: after each model answer (`ModelEvent`) and each tool answer
  (`ToolEvent`); may add messages or stop the run. Messages added after a final answer (one
  with no tool calls) refuse it: the agent goes back to work with them, which is how a
  claim of completion that fails verification is sent back.

Each point's decisions (all hooks, merged in order) are one journaled step (`hook:<point>`),
so a hook may read the world (the store, a clock, a model) and a replay still sees the
decisions it made the first time. A hook returns `None` for "carry on".

    class NoDeletes(AgentHooks):
        async def before_tool(self, state, call):
            if call.name == "delete_file":
                return HookDecision(result="refused: deleting files is not allowed here")
            return None

    Agent(..., hooks=[NoDeletes()])
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Sequence
from typing import Any, Literal

import pydantic

from tether.agent.types import Message, ModelResponse, ToolCall, Usage
from tether.engine import runtime


class _Frozen(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")


class HookDecision(_Frozen):
    """What a hook wants done.

    Attributes:
        messages: messages to add to the conversation (before the next model call).
        result: (before_tool) answer the tool call with this text instead of running it.
        stop: stop the run with `AgentStoppedError(stop)`.
    """

    messages: tuple[Message, ...] = ()
    result: str | None = None
    stop: str | None = None


class AgentState(_Frozen):
    """What a hook sees of the run.

    Attributes:
        run_id: the workflow run.
        agent: the agent's name.
        conversation: the messages so far.
        usage: tokens used so far.
        cost: cost so far (0 without prices).
        steps: model and tool calls so far.
        model_calls: model calls so far.
        tool_calls: tool calls so far.
    """

    run_id: str
    agent: str
    conversation: tuple[Message, ...]
    usage: Usage
    cost: float
    steps: int
    model_calls: int
    tool_calls: int


class ModelEvent(_Frozen):
    """A model answered."""

    kind: Literal["model"] = "model"
    model: str
    response: ModelResponse


class ToolEvent(_Frozen):
    """A tool call was answered (run, refused, blocked by a hook, or invalid)."""

    kind: Literal["tool"] = "tool"
    call: ToolCall
    content: str
    ok: bool
    blocked: bool = False


StepEvent = ModelEvent | ToolEvent


class AgentHooks:
    """Subclass and override the points you need; each may be `async def` or plain `def`."""

    def before_model(
        self, state: AgentState
    ) -> HookDecision | Awaitable[HookDecision | None] | None:
        """Called before each model call."""
        return None

    def before_tool(
        self, state: AgentState, call: ToolCall
    ) -> HookDecision | Awaitable[HookDecision | None] | None:
        """Called before each tool call."""
        return None

    def after_step(
        self, state: AgentState, event: StepEvent
    ) -> HookDecision | Awaitable[HookDecision | None] | None:
        """Called after each model answer and each tool answer."""
        return None


class HookRunner:
    """Calls the hooks at a point, as one journaled step whose result is the merged decision."""

    def __init__(self, hooks: Sequence[AgentHooks]) -> None:
        self.hooks = tuple(hooks)
        self._steps = {
            point: runtime.step(name=f"hook:{point}", retry=None)(_call_hooks)
            for point in ("before_model", "before_tool", "after_step")
        }

    async def call(self, point: str, *args: Any) -> HookDecision:
        """Run every hook's `point` with `args` (once; replays return the journaled decision)."""
        if not self.hooks:
            return HookDecision()
        decision: HookDecision = await self._steps[point](self.hooks, point, args)
        return decision


async def _call_hooks(
    hooks: tuple[AgentHooks, ...], point: str, args: tuple[Any, ...]
) -> HookDecision:
    messages: list[Message] = []
    result: str | None = None
    stop: str | None = None
    for hook in hooks:
        got = getattr(hook, point)(*args)
        if inspect.isawaitable(got):
            got = await got
        if got is None:
            continue
        if not isinstance(got, HookDecision):
            raise TypeError(
                f"hook {type(hook).__name__}.{point} returned {type(got).__name__}; return a "
                "HookDecision or None"
            )
        messages.extend(got.messages)
        result = result if result is not None else got.result
        stop = stop if stop is not None else got.stop
    return HookDecision(messages=tuple(messages), result=result, stop=stop)
