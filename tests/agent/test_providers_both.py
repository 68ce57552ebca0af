"""Both SDK providers against their fake servers: every ErrorKind, streaming, timeouts.

The unmodified `openai` and `anthropic` SDKs talk HTTP to the servers in tests/agent/servers.
"""

from __future__ import annotations

import email.utils
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from tests.agent.servers import AnthropicServer, FakeServer, OpenAIServer, Reply
from tether.agent.providers.anthropic import AnthropicProvider
from tether.agent.providers.openai import OpenAIProvider
from tether.agent.types import (
    ErrorKind,
    Message,
    ModelRequest,
    ModelResponse,
    Provider,
    ProviderError,
    ToolCall,
    ToolSpec,
)

KEY = "sk-test-0123456789abcdefghij"

WEATHER = ToolSpec(
    name="weather",
    description="The weather in a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)
REQUEST = ModelRequest(
    model="test-model",
    messages=(
        Message(role="system", content="You are brief."),
        Message(role="user", content="Weather in Oslo and Lima?"),
    ),
    tools=(WEATHER,),
)


@dataclass
class Harness:
    kind: str
    server: FakeServer
    provider: Provider

    async def call(self, request: ModelRequest = REQUEST, **kwargs) -> ModelResponse:
        kwargs.setdefault("timeout", 10.0)
        return await self.provider.complete(request, **kwargs)

    async def failure(self, request: ModelRequest = REQUEST, **kwargs) -> ProviderError:
        with pytest.raises(ProviderError) as info:
            await self.call(request, **kwargs)
        return info.value


def make_provider(kind: str, base_url: str) -> OpenAIProvider | AnthropicProvider:
    if kind == "openai":
        return OpenAIProvider(base_url=base_url, api_key=KEY)
    return AnthropicProvider(base_url=base_url, api_key=KEY)


@pytest.fixture(params=["openai", "anthropic"])
async def harness(
    request, openai_server: OpenAIServer, anthropic_server: AnthropicServer
) -> AsyncIterator[Harness]:
    server: FakeServer = openai_server if request.param == "openai" else anthropic_server
    provider = make_provider(request.param, server.base_url)
    async with provider:
        yield Harness(request.param, server, provider)


STREAMED = [False, True]


# --- answers -------------------------------------------------------------------------------


async def test_text_answer__message_usage_finish_and_model(harness: Harness):
    harness.server.script(Reply(text="Sunny.", input_tokens=20, output_tokens=3, model="m-1"))
    reply = await harness.call()
    assert reply.provider == harness.kind
    assert reply.model == "m-1"
    assert reply.message == Message(role="assistant", content="Sunny.")
    assert reply.finish_reason == "stop"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (20, 3)


async def test_streaming__tokens_reach_on_token_and_the_answer_equals_the_unstreamed_one(
    harness: Harness,
):
    calls = [
        ToolCall(id="call_1", name="weather", arguments={"city": "Oslo"}),
        ToolCall(id="call_2", name="weather", arguments={"city": "Lima", "units": ["c", "f"]}),
    ]
    script = Reply(text="Let me look that up for you.", tool_calls=calls, output_tokens=31)
    harness.server.script(script, script)
    plain = await harness.call()
    tokens: list[str] = []
    streamed = await harness.call(on_token=tokens.append)
    assert streamed == plain
    assert plain.message.tool_calls == tuple(calls)
    assert plain.finish_reason == "tool_calls"
    assert len(tokens) > 1
    assert "".join(tokens) == plain.message.content
    assert [r.stream for r in harness.server.requests] == [False, True]


async def test_streaming__usage_is_reported(harness: Harness):
    harness.server.script(Reply(text="Hi.", input_tokens=40, output_tokens=2))
    reply = await harness.call(on_token=lambda _: None)
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (40, 2)


@pytest.mark.parametrize("stream", STREAMED)
async def test_structured_output__the_answer_is_the_json_object(harness: Harness, stream):
    schema = {
        "title": "Forecast",
        "type": "object",
        "properties": {"city": {"type": "string"}, "celsius": {"type": "number"}},
        "required": ["city", "celsius"],
    }
    answer = {"city": "Oslo", "celsius": -3.5}
    harness.server.script(Reply(output=answer))
    request = REQUEST.model_copy(update={"output_schema": schema, "tools": ()})
    tokens: list[str] = []
    reply = await harness.call(request, on_token=tokens.append if stream else None)
    assert json.loads(reply.message.content) == answer
    assert reply.message.tool_calls == ()
    assert reply.finish_reason == "stop"
    if stream:
        assert json.loads("".join(tokens)) == answer
    body = harness.server.requests[-1].body
    if harness.kind == "openai":
        assert body["response_format"]["type"] == "json_schema"
        assert body["response_format"]["json_schema"]["schema"] == schema
        assert body["response_format"]["json_schema"]["name"] == "Forecast"
    else:
        assert body["tools"][-1]["input_schema"] == schema
        assert body["tool_choice"] == {"type": "tool", "name": body["tools"][-1]["name"]}


async def test_conversation_with_tool_calls__round_trips_through_the_server(harness: Harness):
    calls = (
        ToolCall(id="call_a", name="weather", arguments={"city": "Oslo"}),
        ToolCall(id="call_b", name="weather", arguments={"city": "Lima"}),
    )
    harness.server.script(Reply(tool_calls=calls), Reply(text="Oslo -3, Lima 19."))
    first = await harness.call()
    assert first.message == Message(role="assistant", tool_calls=calls)
    conversation = (
        *REQUEST.messages,
        first.message,
        Message(role="tool", content="-3 C", tool_call_id="call_a", name="weather"),
        Message(role="tool", content="19 C", tool_call_id="call_b", name="weather"),
    )
    second = await harness.call(REQUEST.model_copy(update={"messages": conversation}))
    assert second.message.content == "Oslo -3, Lima 19."
    sent = harness.server.requests[-1].body
    if harness.kind == "openai":
        from tether.agent.providers.openai import from_wire

        assert from_wire(sent["messages"]) == conversation
    else:
        from tether.agent.providers.anthropic import from_wire as from_anthropic

        assert from_anthropic(sent.get("system"), sent["messages"]) == conversation
        # the two results travel in one user turn
        assert [t["role"] for t in sent["messages"]] == ["user", "assistant", "user"]
        assert [b["type"] for b in sent["messages"][2]["content"]] == ["tool_result"] * 2


async def test_on_token_errors__propagate_unchanged(harness: Harness):
    harness.server.script(Reply(text="a long enough answer"))

    def boom(_: str) -> None:
        raise KeyError("from the callback")

    with pytest.raises(KeyError, match="from the callback"):
        await harness.call(on_token=boom)


# --- failures: every ErrorKind ---------------------------------------------------------------


@pytest.mark.parametrize("stream", STREAMED)
@pytest.mark.parametrize(
    ("fault", "kind", "status"),
    [
        ("rate_limited", ErrorKind.RATE_LIMITED, 429),
        ("overloaded", ErrorKind.OVERLOADED, 529),
        ("unavailable", ErrorKind.OVERLOADED, 503),
        ("server_error", ErrorKind.SERVER_ERROR, 500),
        ("context_too_long", ErrorKind.CONTEXT_TOO_LONG, 400),
        ("unauthorized", ErrorKind.AUTHENTICATION, 401),
        ("forbidden", ErrorKind.AUTHENTICATION, 403),
        ("bad_request", ErrorKind.BAD_REQUEST, 400),
        ("not_found", ErrorKind.BAD_REQUEST, 404),
        ("unprocessable", ErrorKind.BAD_REQUEST, 422),
    ],
)
async def test_http_errors__classified_by_kind_and_sent_once(
    harness: Harness, fault, kind, status, stream
):
    harness.server.fail(fault)
    error = await harness.failure(on_token=(lambda _: None) if stream else None)
    assert error.kind is kind
    assert error.status == status
    assert error.provider == harness.kind
    assert error.retryable == (
        kind in {ErrorKind.RATE_LIMITED, ErrorKind.OVERLOADED, ErrorKind.SERVER_ERROR}
    )
    assert f"HTTP {status}" in str(error)
    assert "'test-model'" in str(error)
    assert len(harness.server.requests) == 1  # the SDK's own retries are off


async def test_rate_limited__retry_after_in_seconds(harness: Harness):
    harness.server.fail("rate_limited", retry_after=12)
    error = await harness.failure()
    assert error.retry_after == 12.0


async def test_rate_limited__retry_after_ms_wins(harness: Harness):
    harness.server.fail("rate_limited", retry_after_ms=1500, retry_after=2)
    error = await harness.failure()
    assert error.retry_after == 1.5


async def test_rate_limited__retry_after_as_http_date(harness: Harness):
    harness.server.fail("rate_limited", retry_after=email.utils.formatdate(time.time() + 60))
    error = await harness.failure()
    assert error.retry_after is not None
    assert 50 < error.retry_after <= 60


async def test_rate_limited__without_header_has_no_retry_after(harness: Harness):
    harness.server.fail("rate_limited")
    assert (await harness.failure()).retry_after is None


async def test_authentication__the_key_never_appears_in_the_message(harness: Harness):
    harness.server.fail("unauthorized")  # the server echoes the key it got
    error = await harness.failure()
    assert error.kind is ErrorKind.AUTHENTICATION
    assert KEY not in str(error)
    assert KEY[8:] not in str(error)
    assert KEY not in repr(error.args)


@pytest.mark.parametrize("stream", STREAMED)
async def test_timeout__a_slow_answer_fails_with_timeout(harness: Harness, stream):
    harness.server.fail("slow", delay=5.0)
    error = await harness.failure(timeout=0.3, on_token=(lambda _: None) if stream else None)
    assert error.kind is ErrorKind.TIMEOUT
    assert "0.3 s" in str(error)
    assert error.retryable


async def test_timeout__covers_the_whole_stream_not_each_read(harness: Harness):
    # Each event comes well within the timeout; the whole answer does not.
    harness.server.script(Reply(text="x" * 80, chunk_delay=0.1))
    tokens: list[str] = []
    error = await harness.failure(timeout=0.5, on_token=tokens.append)
    assert error.kind is ErrorKind.TIMEOUT
    assert tokens  # it had begun to answer


async def test_timeout__must_be_positive(harness: Harness):
    error = await harness.failure(timeout=0)
    assert error.kind is ErrorKind.BAD_REQUEST
    assert harness.server.requests == []


async def test_connection__nobody_listening(harness: Harness):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    suffix = "/v1" if harness.kind == "openai" else ""
    provider = make_provider(harness.kind, f"http://127.0.0.1:{port}{suffix}")
    async with provider:
        with pytest.raises(ProviderError) as info:
            await provider.complete(REQUEST, timeout=5)
    assert info.value.kind is ErrorKind.CONNECTION
    assert info.value.status is None
    assert info.value.retryable


async def test_server_error__an_error_event_inside_the_stream(harness: Harness):
    harness.server.fail("server_error", in_stream=True)
    error = await harness.failure(on_token=lambda _: None)
    assert error.kind is ErrorKind.SERVER_ERROR
    assert error.status is None


async def test_server_error__tool_arguments_that_are_not_json(harness: Harness):
    if harness.kind == "openai":
        from tether.agent.providers.openai import from_wire

        bad = {"id": "c", "type": "function", "function": {"name": "w", "arguments": "{oops"}}
        with pytest.raises(ProviderError) as info:
            from_wire([{"role": "assistant", "content": None, "tool_calls": [bad]}])
    else:
        from tether.agent.providers.anthropic import from_wire as from_anthropic

        bad = {"type": "tool_use", "id": "c", "name": "w", "input": "[1, 2]"}
        with pytest.raises(ProviderError) as info:
            from_anthropic(None, [{"role": "assistant", "content": [bad]}])
    assert info.value.kind is ErrorKind.SERVER_ERROR


@pytest.mark.parametrize("stream", STREAMED)
async def test_content_filtered__by_finish_or_stop_reason(harness: Harness, stream):
    finish = "content_filter" if harness.kind == "openai" else "refusal"
    harness.server.script(Reply(text="I can", finish=finish))
    error = await harness.failure(on_token=(lambda _: None) if stream else None)
    assert error.kind is ErrorKind.CONTENT_FILTERED
    assert not error.retryable


async def test_overloaded__outage_until_recovered(harness: Harness):
    harness.server.fail("overloaded", times=None)
    for _ in range(3):
        assert (await harness.failure()).kind is ErrorKind.OVERLOADED
    harness.server.recover()
    assert (await harness.call()).message.content == "ok"
    assert len(harness.server.requests) == 4
