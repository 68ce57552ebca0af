"""Anthropic's messages API, through the official SDK (`pip install 'tether[anthropic]'`).

```python
provider = AnthropicProvider()          # the key from ANTHROPIC_API_KEY
reply = await provider.complete(ModelRequest(model="claude-sonnet-4-5", messages=msgs), timeout=60)
```

The SDK's own retries are off (`max_retries=0`): tether's retry and failover policies decide
what happens after a failure, and they need to see every one of them.

Wire format, both ways:

- The system messages that open a conversation become the `system` parameter, one text block
  each. A system message later in the conversation (a correction injected mid-run) is sent in
  its place as a user text block, since the API has no system turn; it reads back as a user
  message.
- A user message is one text block; an assistant message is a text block (when it has text)
  followed by one `tool_use` block per tool call; a tool message is a `tool_result` block.
  Consecutive messages of the same wire role share one turn, so the results of parallel tool
  calls travel in one user turn, as the API requires. Reading back, each text block of a user
  turn is one user message, each `tool_result` one tool message (named after the call it
  answers), and the text blocks of an assistant turn join into one message.
- The API has no speaker names: `Message.name` of user and assistant messages is not sent.
- `max_tokens` is required by the API: a request without it gets the provider's default.
- A `ModelRequest.output_schema` is served by a tool named `final_output` whose input schema
  is the output schema, which the model is made to call (`tool_choice`); its input becomes the
  answer's text, as JSON. This works on every model and SDK version.
- `stop_reason` "refusal" raises `ProviderError(CONTENT_FILTERED)`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from tether.agent.providers import _classify, _common
from tether.agent.types import (
    FinishReason,
    Message,
    ModelRequest,
    ModelResponse,
    OnToken,
    ProviderError,
    ToolCall,
    ToolSpec,
    Usage,
)
from tether.errors import ConfigError

if TYPE_CHECKING:
    import anthropic

__all__ = ["OUTPUT_TOOL", "AnthropicProvider", "from_wire", "to_wire"]

OUTPUT_TOOL = "final_output"
"""The tool through which a structured answer (`ModelRequest.output_schema`) is returned."""

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
}


class AnthropicProvider(_common.OwnedClient):
    """A `Provider` for Anthropic's messages API.

    Args:
        client: an `anthropic.AsyncAnthropic` to use as it is (its retries are turned off
            through `with_options(max_retries=0)`); by default one is made from `base_url` and
            `api_key` (or the SDK's environment variables, `ANTHROPIC_API_KEY` ...).
        base_url: the API's URL; ignored with `client`.
        api_key: the key; ignored with `client`.
        name: the provider's name in responses, errors and the journal.
        max_tokens: the output limit sent when a request sets none (the API requires one);
            4096 suits every current model.

    Raises:
        ConfigError: the `anthropic` package is not installed, or the SDK refused the settings.
    """

    def __init__(
        self,
        client: anthropic.AsyncAnthropic | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        name: str = "anthropic",
        max_tokens: int = 4096,
    ) -> None:
        sdk = _common.load_sdk("anthropic", "anthropic", "AnthropicProvider")
        if max_tokens < 1:
            raise ConfigError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        self.name = name
        self.max_tokens = max_tokens
        self._sdk = sdk
        self._owns_client = client is None
        if client is None:
            try:
                client = sdk.AsyncAnthropic(api_key=api_key, base_url=base_url, max_retries=0)
            except sdk.AnthropicError as exc:
                raise ConfigError(
                    f"cannot create the Anthropic client for provider {name!r}: {exc}; pass "
                    "api_key=... or set ANTHROPIC_API_KEY"
                ) from exc
        else:
            client = client.with_options(max_retries=0)
        self.client: anthropic.AsyncAnthropic = cast("anthropic.AsyncAnthropic", client)

    async def complete(
        self,
        request: ModelRequest,
        *,
        timeout: float,  # noqa: ASYNC109 - the SDK enforces it on the wire, asyncio on the whole
        on_token: OnToken | None = None,
    ) -> ModelResponse:
        """Send `request` to the messages API and return the answer.

        Args:
            request: the call.
            timeout: seconds for the whole call, streamed or not, before `ErrorKind.TIMEOUT`.
            on_token: when given, the answer is streamed (server-sent events) and each text
                fragment passed to it (for a structured answer, the fragments of its JSON);
                an exception it raises propagates unchanged.

        Raises:
            ProviderError: every failure, classified by `kind`.
        """
        call = _classify.Call(self.name, request.model, self.client.api_key)
        _common.check_timeout(call, timeout)
        params = self._params(request)
        create: Any = self.client.messages.create
        try:
            async with asyncio.timeout(timeout):
                if on_token is None:
                    message = await create(**params, timeout=timeout)
                    return _response(call, _common.as_dict(message))
                stream = await create(**params, stream=True, timeout=timeout)
                try:
                    return await _assemble(call, stream, on_token)
                finally:
                    await stream.close()
        except _common.CallbackError as exc:
            raise exc.error from None
        except ProviderError:
            raise
        except TimeoutError as exc:
            raise _classify.timeout_error(call, timeout) from exc
        except Exception as exc:
            raise self._classify(call, exc, timeout) from exc

    def _params(self, request: ModelRequest) -> dict[str, Any]:
        system, messages = to_wire(request.messages)
        params: dict[str, Any] = {
            "model": request.model,
            "messages": messages,
            "max_tokens": request.max_tokens or self.max_tokens,
        }
        if system:
            params["system"] = system
        tools = [_tool(t) for t in request.tools]
        if request.output_schema is not None:
            tools.append(
                {
                    "name": OUTPUT_TOOL,
                    "description": "Give the final answer, as the arguments of this tool.",
                    "input_schema": request.output_schema,
                }
            )
            params["tool_choice"] = (
                {"type": "any"} if request.tools else {"type": "tool", "name": OUTPUT_TOOL}
            )
        if tools:
            params["tools"] = tools
        if request.temperature is not None:
            # Recent SDKs no longer take sampling parameters as arguments; the API still
            # reads them from the body (models that reject one answer 400, BAD_REQUEST).
            params["extra_body"] = {"temperature": request.temperature}
        return params

    def _classify(self, call: _classify.Call, exc: Exception, timeout: float) -> ProviderError:
        sdk = self._sdk
        if isinstance(exc, sdk.APITimeoutError):
            return _classify.timeout_error(call, timeout)
        if isinstance(exc, sdk.APIConnectionError):
            return _classify.connection_error(call, f"{type(exc).__name__}: {exc}")
        if isinstance(exc, sdk.APIError):
            body = exc.body if isinstance(exc.body, Mapping) else {}
            error = body.get("error", body)
            error = error if isinstance(error, Mapping) else {}
            details = error.get("details")
            code = details.get("error_code") if isinstance(details, Mapping) else None
            response = getattr(exc, "response", None)
            return _classify.status_error(
                call,
                status=getattr(exc, "status_code", None),
                headers=dict(response.headers) if response is not None else None,
                error_type=_str(error.get("type")),
                error_code=_str(code),
                message=_str(error.get("message")) or str(exc),
            )
        if isinstance(exc, sdk.AnthropicError | TypeError) and "auth" in str(exc).lower():
            # No key could be found: the SDK fails before it sends anything.
            return _classify.status_error(
                call,
                status=401,
                headers=None,
                error_type="authentication_error",
                error_code=None,
                message=str(exc),
            )
        return _classify.malformed(call, f"{type(exc).__name__}: {exc}")


def to_wire(messages: Iterable[Message]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Tether messages as the messages API's `system` blocks and `messages` turns."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system" and not turns:
            system.append({"type": "text", "text": message.content})
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _blocks(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [
            {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id or "",
                "content": message.content,
            }
        ]
    if message.role != "assistant":
        return [{"type": "text", "text": message.content}]
    blocks: list[dict[str, Any]] = []
    if message.content or not message.tool_calls:
        blocks.append({"type": "text", "text": message.content})
    blocks += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
        for c in message.tool_calls
    ]
    return blocks


def from_wire(
    system: str | Sequence[Mapping[str, Any]] | None,
    messages: Iterable[Mapping[str, Any]],
) -> tuple[Message, ...]:
    """The messages API's `system` and `messages` (requests' or responses') as tether messages."""
    out: list[Message] = []
    if isinstance(system, str):
        out.append(Message(role="system", content=system))
    else:
        out += [Message(role="system", content=b.get("text") or "") for b in system or ()]
    names: dict[str, str] = {}
    call = _classify.Call("anthropic", "")
    for turn in messages:
        content = turn.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        if turn.get("role") == "assistant":
            message = _assistant(call, blocks)
            names.update({c.id: c.name for c in message.tool_calls})
            out.append(message)
        else:
            out += _user(blocks, names)
    return tuple(out)


def _user(blocks: Iterable[Mapping[str, Any]], names: Mapping[str, str]) -> list[Message]:
    out = []
    for block in blocks:
        if block.get("type") == "text":
            out.append(Message(role="user", content=block.get("text") or ""))
        elif block.get("type") == "tool_result":
            call_id = block.get("tool_use_id") or ""
            out.append(
                Message(
                    role="tool",
                    content=_text(block.get("content")),
                    tool_call_id=call_id,
                    name=names.get(call_id),
                )
            )
    return out


def _assistant(call: _classify.Call, blocks: Iterable[Mapping[str, Any]]) -> Message:
    text = []
    calls = []
    for block in blocks:
        if block.get("type") == "text":
            text.append(block.get("text") or "")
        elif block.get("type") == "tool_use":
            name = block.get("name") or ""
            calls.append(
                ToolCall(
                    id=block.get("id") or "",
                    name=name,
                    arguments=_common.parse_arguments(call, block.get("input"), name),
                )
            )
    return Message(role="assistant", content="".join(text), tool_calls=tuple(calls))


def _response(call: _classify.Call, message: Mapping[str, Any]) -> ModelResponse:
    reason = message.get("stop_reason")
    if reason == "refusal":
        raise _classify.content_filtered(call, "the model stopped with stop_reason 'refusal'")
    parsed = _assistant(call, message.get("content") or [])
    finish = _FINISH.get(reason, "stop") if isinstance(reason, str) else "stop"
    output = [c for c in parsed.tool_calls if c.name == OUTPUT_TOOL]
    if output:
        # The structured answer, returned through the output tool: it is the answer's text.
        others = tuple(c for c in parsed.tool_calls if c.name != OUTPUT_TOOL)
        parsed = Message(
            role="assistant",
            content=json.dumps(output[0].arguments, ensure_ascii=False),
            tool_calls=others,
        )
        finish = "tool_calls" if others else "stop"
    return ModelResponse(
        provider=call.provider,
        model=message.get("model") or call.model,
        message=parsed,
        finish_reason=finish,
        usage=_usage(message.get("usage")),
    )


async def _assemble(call: _classify.Call, stream: Any, on_token: OnToken) -> ModelResponse:
    """Read a messages stream into one message, passing text fragments to `on_token`."""
    message: dict[str, Any] = {"content": [], "usage": {}}
    blocks: dict[int, dict[str, Any]] = {}
    async for event_obj in stream:
        event = _common.as_dict(event_obj)
        kind = event.get("type")
        if kind == "message_start":
            start = event.get("message") or {}
            message["model"] = start.get("model")
            message["usage"].update(_present(start.get("usage")))
        elif kind == "content_block_start":
            block = dict(event.get("content_block") or {})
            if block.get("type") == "tool_use":
                block["input"] = ""
            blocks[event.get("index", len(blocks))] = block
        elif kind == "content_block_delta":
            _delta(blocks[event.get("index", 0)], event.get("delta") or {}, on_token)
        elif kind == "message_delta":
            message["stop_reason"] = (event.get("delta") or {}).get("stop_reason")
            message["usage"].update(_present(event.get("usage")))
    message["content"] = [blocks[i] for i in sorted(blocks)]
    return _response(call, message)


def _delta(block: dict[str, Any], delta: Mapping[str, Any], on_token: OnToken) -> None:
    if delta.get("type") == "text_delta":
        piece = delta.get("text") or ""
        block["text"] = (block.get("text") or "") + piece
        _common.emit(on_token, piece)
    elif delta.get("type") == "input_json_delta":
        piece = delta.get("partial_json") or ""
        block["input"] += piece
        if block.get("name") == OUTPUT_TOOL:
            _common.emit(on_token, piece)


def _present(usage: object) -> dict[str, Any]:
    if not isinstance(usage, Mapping):
        return {}
    return {k: v for k, v in usage.items() if v is not None}


def _usage(raw: object) -> Usage:
    if not isinstance(raw, Mapping):
        return Usage()
    cached = (raw.get("cache_creation_input_tokens") or 0) + (
        raw.get("cache_read_input_tokens") or 0
    )
    return Usage(
        input_tokens=int(raw.get("input_tokens") or 0) + int(cached),
        output_tokens=int(raw.get("output_tokens") or 0),
    )


def _tool(spec: ToolSpec) -> dict[str, Any]:
    tool: dict[str, Any] = {"name": spec.name, "input_schema": spec.parameters}
    if spec.description:
        tool["description"] = spec.description
    return tool


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(
            b.get("text") or "" for b in content if isinstance(b, Mapping) and b.get("text")
        )
    return ""


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
