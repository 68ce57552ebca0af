"""The event log the monitors read: a trajectory as a list of events.

Online, the mission runtime appends an event for each model turn and tool result as the agent
runs. Offline, `from_messages` turns a recorded conversation (OpenAI-style chat messages) into
the same events, so `tether evaluate` and the runtime share every monitor.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import pydantic

from tether.agent import types

EventKind = Literal["task", "say", "tool_call", "tool_result", "answer"]
_ERROR_TEXT = re.compile(r"^\s*(error|exception|traceback|failed)\b", re.IGNORECASE)


class Event(pydantic.BaseModel):
    """One thing that happened in a trajectory.

    Attributes:
        step: the index of the message (offline) or the agent step (online) it came from.
        kind: task (system or user text), say (assistant text beside tool calls), tool_call,
            tool_result, answer (assistant text with no tool call: a reply or a claim of done).
        text: the text, or the tool result's content.
        tool: the tool's name, for tool calls and results.
        args: a tool call's arguments.
        error: whether a tool result reports a failure.
        agent: the speaker's name in a multi-agent trajectory.
    """

    model_config = pydantic.ConfigDict(frozen=True)

    step: int
    kind: EventKind
    text: str = ""
    tool: str | None = None
    args: dict[str, Any] = pydantic.Field(default_factory=dict)
    error: bool = False
    agent: str | None = None

    @property
    def signature(self) -> str:
        """The action's identity for loop detection: tool and canonical arguments."""
        return f"{self.tool}:{json.dumps(self.args, sort_keys=True, default=str)}"


def from_messages(messages: Iterable[Mapping[str, Any] | types.Message]) -> list[Event]:
    """Turn chat messages (OpenAI style, or tether Messages) into events.

    Raises:
        ValueError: a message has no known role, or a tool call is malformed; the message
            names the index.
    """
    events: list[Event] = []
    names: dict[str, str] = {}
    for step, raw in enumerate(messages):
        message = raw if isinstance(raw, types.Message) else _parse(step, raw)
        events += _events(step, message, names)
    return events


def message_events(step: int, message: types.Message, names: dict[str, str]) -> list[Event]:
    """The events of one message at position `step`; `names` maps call ids to tool names."""
    return _events(step, message, names)


def parse(step: int, raw: Mapping[str, Any] | types.Message) -> types.Message:
    """One message, from an OpenAI-style mapping or as it is."""
    return raw if isinstance(raw, types.Message) else _parse(step, raw)


def _events(step: int, message: types.Message, names: dict[str, str]) -> list[Event]:
    if message.role in ("system", "user"):
        return [Event(step=step, kind="task", text=message.content, agent=message.name)]
    if message.role == "tool":
        tool = message.name or names.get(message.tool_call_id or "")
        return [
            Event(
                step=step,
                kind="tool_result",
                text=message.content,
                tool=tool,
                error=is_error_text(message.content),
            )
        ]
    out: list[Event] = []
    if message.content and message.tool_calls:
        out.append(Event(step=step, kind="say", text=message.content, agent=message.name))
    elif message.content or not message.tool_calls:
        out.append(Event(step=step, kind="answer", text=message.content, agent=message.name))
    for call in message.tool_calls:
        names[call.id] = call.name
        out.append(
            Event(
                step=step, kind="tool_call", tool=call.name, args=call.arguments, agent=message.name
            )
        )
    return out


def is_error_text(text: str) -> bool:
    """Whether a tool result's text reports a failure (offline, where no flag was recorded)."""
    if _ERROR_TEXT.match(text):
        return True
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return isinstance(value, dict) and ("error" in value or value.get("ok") is False)


def _parse(step: int, raw: Mapping[str, Any]) -> types.Message:
    role = raw.get("role")
    if role not in ("system", "user", "assistant", "tool"):
        raise ValueError(f"message {step}: role {role!r} is not system, user, assistant or tool")
    calls = []
    for i, call in enumerate(raw.get("tool_calls") or ()):
        function = call.get("function", call)
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError:
                arguments = {"_raw": arguments}
        if not isinstance(arguments, dict):
            arguments = {"_value": arguments}
        if "name" not in function:
            raise ValueError(f"message {step}: tool call {i} has no function name")
        calls.append(
            types.ToolCall(
                id=str(call.get("id", f"{step}.{i}")), name=function["name"], arguments=arguments
            )
        )
    return types.Message(
        role=role,
        content=_content(raw.get("content")),
        tool_calls=tuple(calls),
        tool_call_id=raw.get("tool_call_id"),
        name=raw.get("name"),
    )


def _content(content: Any) -> str:
    """Message content as text: a string, or the text parts of a list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", "")) if isinstance(part, dict) else str(part) for part in content
        )
    return str(content)
