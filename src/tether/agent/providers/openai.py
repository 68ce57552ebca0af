"""OpenAI chat completions, through the official `openai` SDK (`pip install 'tether[openai]'`).

`OpenAIProvider` speaks to OpenAI, or to any server that implements the chat-completions API
(vLLM, llama.cpp's server, Ollama, LiteLLM ...) when given its `base_url`:

```python
provider = OpenAIProvider(base_url="http://127.0.0.1:8000/v1", api_key="unused")
reply = await provider.complete(ModelRequest(model="qwen2.5", messages=msgs), timeout=60)
```

The SDK's own retries are off (`max_retries=0`): tether's retry and failover policies decide
what happens after a failure, and they need to see every one of them.

Wire format, both ways: system, user and assistant messages map one to one (with `name`); an
assistant's tool calls are `tool_calls` with JSON-string arguments; a tool message carries its
`tool_call_id` (the wire has no tool name: reading a conversation back takes it from the call
it answers). A `ModelRequest.output_schema` becomes `response_format` of type `json_schema`
(not strict, so schemas that strict mode rejects, such as pydantic's, still work; validate the
answer). `max_tokens` is sent as `max_completion_tokens` to api.openai.com (its reasoning
models accept nothing else) and as `max_tokens` to other servers (which may not know the new
name).
"""

from __future__ import annotations

import asyncio
import json
import re
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
    import openai

__all__ = ["OpenAIProvider", "from_wire", "to_wire"]

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


class OpenAIProvider(_common.OwnedClient):
    """A `Provider` for OpenAI's chat-completions API and OpenAI-compatible servers.

    Args:
        client: an `openai.AsyncOpenAI` to use as it is (its retries are turned off through
            `with_options(max_retries=0)`); by default one is made from `base_url` and
            `api_key` (or the SDK's environment variables, `OPENAI_API_KEY` ...).
        base_url: the server's URL, for example "http://127.0.0.1:8000/v1"; ignored with
            `client`.
        api_key: the key; ignored with `client`.
        name: the provider's name in responses, errors and the journal.

    Raises:
        ConfigError: the `openai` package is not installed, or the SDK refused the settings
            (no API key found, for instance).
    """

    def __init__(
        self,
        client: openai.AsyncOpenAI | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        name: str = "openai",
    ) -> None:
        sdk = _common.load_sdk("openai", "openai", "OpenAIProvider")
        self.name = name
        self._sdk = sdk
        self._owns_client = client is None
        if client is None:
            try:
                client = sdk.AsyncOpenAI(api_key=api_key, base_url=base_url, max_retries=0)
            except sdk.OpenAIError as exc:
                raise ConfigError(
                    f"cannot create the OpenAI client for provider {name!r}: {exc}; pass "
                    "api_key=... or set OPENAI_API_KEY (any non-empty value for a local "
                    "server that checks no key)"
                ) from exc
        else:
            client = client.with_options(max_retries=0)
        self.client: openai.AsyncOpenAI = cast("openai.AsyncOpenAI", client)
        official = "api.openai.com" in str(self.client.base_url)
        self._max_tokens_field = "max_completion_tokens" if official else "max_tokens"

    async def complete(
        self,
        request: ModelRequest,
        *,
        timeout: float,  # noqa: ASYNC109 - the SDK enforces it on the wire, asyncio on the whole
        on_token: OnToken | None = None,
    ) -> ModelResponse:
        """Send `request` as a chat completion and return the answer.

        Args:
            request: the call.
            timeout: seconds for the whole call, streamed or not, before `ErrorKind.TIMEOUT`.
            on_token: when given, the answer is streamed (`stream=True`, with usage) and each
                text fragment passed to it; an exception it raises propagates unchanged.

        Raises:
            ProviderError: every failure, classified by `kind`.
        """
        call = _classify.Call(self.name, request.model, self.client.api_key)
        _common.check_timeout(call, timeout)
        params = self._params(request)
        create: Any = self.client.chat.completions.create
        try:
            async with asyncio.timeout(timeout):
                if on_token is None:
                    completion = await create(**params, timeout=timeout)
                    return _response(call, _common.as_dict(completion))
                stream = await create(
                    **params,
                    stream=True,
                    stream_options={"include_usage": True},
                    timeout=timeout,
                )
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
        params: dict[str, Any] = {"model": request.model, "messages": to_wire(request.messages)}
        if request.tools:
            params["tools"] = [_tool(t) for t in request.tools]
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.max_tokens is not None:
            params[self._max_tokens_field] = request.max_tokens
        if request.output_schema is not None:
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": _schema_name(request.output_schema),
                    "schema": request.output_schema,
                    "strict": False,
                },
            }
        return params

    def _classify(self, call: _classify.Call, exc: Exception, timeout: float) -> ProviderError:
        sdk = self._sdk
        if isinstance(exc, sdk.APITimeoutError):
            return _classify.timeout_error(call, timeout)
        if isinstance(exc, sdk.APIConnectionError):
            return _classify.connection_error(call, f"{type(exc).__name__}: {exc}")
        if isinstance(exc, sdk.APIStatusError | sdk.APIError):
            body = exc.body if isinstance(exc.body, Mapping) else {}
            error = body.get("error", body)
            error = error if isinstance(error, Mapping) else {}
            response = getattr(exc, "response", None)
            return _classify.status_error(
                call,
                status=getattr(exc, "status_code", None),
                headers=dict(response.headers) if response is not None else None,
                error_type=_str(error.get("type")),
                error_code=_str(error.get("code")),
                message=_str(error.get("message")) or str(exc),
            )
        return _classify.malformed(call, f"{type(exc).__name__}: {exc}")


def to_wire(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """Tether messages as chat-completions `messages`."""
    return [_message_to_wire(m) for m in messages]


def _message_to_wire(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        return {
            "role": "tool",
            "tool_call_id": message.tool_call_id or "",
            "content": message.content,
        }
    wire: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name is not None:
        wire["name"] = message.name
    if message.tool_calls:
        wire["content"] = message.content or None
        wire["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in message.tool_calls
        ]
    return wire


def from_wire(
    messages: Iterable[Mapping[str, Any]], *, provider: str = "openai", model: str = ""
) -> tuple[Message, ...]:
    """Chat-completions `messages` (requests' or responses') as tether messages.

    A tool message's `name` is the name of the call it answers.

    Raises:
        ProviderError: a tool call's arguments are not a JSON object (`SERVER_ERROR`).
    """
    call = _classify.Call(provider, model)
    names: dict[str, str] = {}
    out = []
    for wire in messages:
        message = _message_from_wire(call, wire, names)
        names.update({c.id: c.name for c in message.tool_calls})
        out.append(message)
    return tuple(out)


def _message_from_wire(
    call: _classify.Call, wire: Mapping[str, Any], names: Mapping[str, str] | None = None
) -> Message:
    role = wire.get("role") or "assistant"
    if role == "tool":
        call_id = _str(wire.get("tool_call_id"))
        return Message(
            role="tool",
            content=_text(wire.get("content")),
            tool_call_id=call_id,
            name=(names or {}).get(call_id or ""),
        )
    calls = tuple(
        ToolCall(
            id=_str(c.get("id")) or "",
            name=(fn := c.get("function") or {}).get("name") or "",
            arguments=_common.parse_arguments(call, fn.get("arguments"), fn.get("name") or ""),
        )
        for c in wire.get("tool_calls") or ()
    )
    return Message(
        role=role, content=_text(wire.get("content")), tool_calls=calls, name=wire.get("name")
    )


def _response(call: _classify.Call, completion: Mapping[str, Any]) -> ModelResponse:
    choices = completion.get("choices") or []
    if not choices:
        raise _classify.malformed(call, "the completion has no choices")
    choice = choices[0]
    wire = choice.get("message") or {}
    reason = choice.get("finish_reason")
    _check_filtered(call, reason, wire.get("refusal"))
    message = _message_from_wire(call, {**wire, "role": "assistant"})
    return ModelResponse(
        provider=call.provider,
        model=completion.get("model") or call.model,
        message=message,
        finish_reason=_finish(reason, message),
        usage=_usage(completion.get("usage")),
    )


async def _assemble(call: _classify.Call, stream: Any, on_token: OnToken) -> ModelResponse:
    """Read a chat-completions stream into one response, passing text fragments to `on_token`."""
    text: list[str] = []
    refusal: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    reason: str | None = None
    model = call.model
    usage: Any = None
    async for chunk_obj in stream:
        chunk = _common.as_dict(chunk_obj)
        model = chunk.get("model") or model
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            piece = delta.get("content")
            if piece:
                text.append(piece)
                _common.emit(on_token, piece)
            refusal.append(delta.get("refusal") or "")
            for part in delta.get("tool_calls") or ():
                _merge_call(calls, part)
            reason = choice.get("finish_reason") or reason
    wire = {
        "role": "assistant",
        "content": "".join(text),
        "tool_calls": [calls[i] for i in sorted(calls)],
        "refusal": "".join(refusal),
    }
    return _response(
        call,
        {
            "model": model,
            "usage": usage,
            "choices": [{"message": wire, "finish_reason": reason}],
        },
    )


def _merge_call(calls: dict[int, dict[str, Any]], part: Mapping[str, Any]) -> None:
    entry = calls.setdefault(
        part.get("index", 0), {"id": "", "function": {"name": "", "arguments": ""}}
    )
    entry["id"] = part.get("id") or entry["id"]
    fn = part.get("function") or {}
    entry["function"]["name"] += fn.get("name") or ""
    entry["function"]["arguments"] += fn.get("arguments") or ""


def _check_filtered(call: _classify.Call, reason: object, refusal: object) -> None:
    if reason == "content_filter":
        raise _classify.content_filtered(
            call, "the answer was withheld by the provider's content filter"
        )
    if isinstance(refusal, str) and refusal:
        raise _classify.content_filtered(call, f"the model refused: {refusal}")


def _finish(reason: object, message: Message) -> FinishReason:
    finish = _FINISH.get(reason, "stop") if isinstance(reason, str) else "stop"
    # Some OpenAI-compatible servers answer tool calls with finish_reason "stop".
    if message.tool_calls and finish == "stop":
        return "tool_calls"
    return finish


def _usage(raw: object) -> Usage:
    if not isinstance(raw, Mapping):
        return Usage()
    return Usage(
        input_tokens=int(raw.get("prompt_tokens") or 0),
        output_tokens=int(raw.get("completion_tokens") or 0),
    )


def _tool(spec: ToolSpec) -> dict[str, Any]:
    function: dict[str, Any] = {"name": spec.name, "parameters": spec.parameters}
    if spec.description:
        function["description"] = spec.description
    return {"type": "function", "function": function}


def _schema_name(schema: Mapping[str, Any]) -> str:
    title = schema.get("title")
    name = re.sub(r"[^A-Za-z0-9_-]", "_", title)[:64] if isinstance(title, str) else ""
    return name or "output"


def _text(content: object) -> str:
    """Message content as text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(
            p.get("text") or "" for p in content if isinstance(p, Mapping) and p.get("text")
        )
    return ""


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
