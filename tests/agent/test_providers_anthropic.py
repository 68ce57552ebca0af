"""AnthropicProvider: the messages wire format, the SDK client, Anthropic-only failures."""

from __future__ import annotations

import json
import sys

import anthropic
import pytest

from tests.agent.servers import AnthropicServer, Reply
from tests.agent.servers.base import api_key
from tether.agent.providers import _classify
from tether.agent.providers.anthropic import (
    OUTPUT_TOOL,
    AnthropicProvider,
    _response,
    from_wire,
    to_wire,
)
from tether.agent.types import ErrorKind, Message, ModelRequest, ProviderError, ToolCall, ToolSpec
from tether.errors import ConfigError

CONVERSATION = (
    Message(role="system", content="Be brief."),
    Message(role="system", content="Answer in English."),
    Message(role="user", content="Weather in Oslo and Lima?"),
    Message(
        role="assistant",
        content="Looking.",
        tool_calls=(
            ToolCall(id="toolu_1", name="weather", arguments={"city": "Oslo"}),
            ToolCall(id="toolu_2", name="weather", arguments={"city": "Lima", "days": [1, 2]}),
        ),
    ),
    Message(role="tool", content="-3 C", tool_call_id="toolu_1", name="weather"),
    Message(role="tool", content="19 C", tool_call_id="toolu_2", name="weather"),
    Message(role="user", content="And tomorrow?"),
    Message(role="assistant", tool_calls=(ToolCall(id="toolu_3", name="noop"),)),
    Message(role="tool", content="done", tool_call_id="toolu_3", name="noop"),
    Message(role="assistant", content="Same."),
)


def test_wire__round_trips_exactly():
    system, turns = to_wire(CONVERSATION)
    assert from_wire(system, turns) == CONVERSATION


def test_wire__system_apart_and_tool_results_merged_into_one_user_turn():
    system, turns = to_wire(CONVERSATION)
    assert system == [
        {"type": "text", "text": "Be brief."},
        {"type": "text", "text": "Answer in English."},
    ]
    assert [t["role"] for t in turns] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert turns[1]["content"] == [
        {"type": "text", "text": "Looking."},
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}},
        {
            "type": "tool_use",
            "id": "toolu_2",
            "name": "weather",
            "input": {"city": "Lima", "days": [1, 2]},
        },
    ]
    assert turns[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "-3 C"},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "19 C"},
        {"type": "text", "text": "And tomorrow?"},
    ]
    assert turns[3]["content"] == [
        {"type": "tool_use", "id": "toolu_3", "name": "noop", "input": {}}
    ]


def test_wire__a_later_system_message_travels_as_user_text_in_place():
    system, turns = to_wire(
        [
            Message(role="user", content="go"),
            Message(role="assistant", content="going"),
            Message(role="system", content="Stay on the task."),
        ]
    )
    assert system == []
    assert turns[-1] == {"role": "user", "content": [{"type": "text", "text": "Stay on the task."}]}


def test_wire__string_system_and_content_read_back():
    assert from_wire("sys", [{"role": "user", "content": "hi"}]) == (
        Message(role="system", content="sys"),
        Message(role="user", content="hi"),
    )
    result = {
        "type": "tool_result",
        "tool_use_id": "t",
        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
    }
    assert from_wire(None, [{"role": "user", "content": [result]}]) == (
        Message(role="tool", content="ab", tool_call_id="t"),
    )


async def test_request__sent_as_built_with_the_default_max_tokens(
    anthropic_server: AnthropicServer,
):
    request = ModelRequest(model="claude-test", messages=CONVERSATION, temperature=0.3)
    async with AnthropicProvider(base_url=anthropic_server.base_url, api_key="k") as provider:
        await provider.complete(request, timeout=5)
        await provider.complete(request.model_copy(update={"max_tokens": 99}), timeout=5)
    first, second = anthropic_server.requests
    assert first.path == "/v1/messages"
    assert api_key(first.headers) == "k"  # x-api-key or a bearer token, by SDK version
    system, turns = to_wire(CONVERSATION)
    assert first.body["system"] == system
    assert first.body["messages"] == turns
    assert first.body["temperature"] == 0.3  # in the body, whether or not the SDK names it
    assert first.body["max_tokens"] == 4096
    assert second.body["max_tokens"] == 99
    assert "tools" not in first.body


def test_max_tokens__must_be_positive():
    with pytest.raises(ConfigError, match="max_tokens"):
        AnthropicProvider(api_key="k", max_tokens=0)


@pytest.mark.parametrize("stream", [False, True])
async def test_structured_output_beside_tools__model_must_call_a_tool(
    anthropic_server: AnthropicServer, stream
):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    tool = ToolSpec(name="weather")
    call = ToolCall(id="toolu_w", name="weather", arguments={"city": "Oslo"})
    anthropic_server.script(Reply(tool_calls=[call]), Reply(output={"ok": True}))
    request = ModelRequest(
        model="m", messages=CONVERSATION[:3], tools=(tool,), output_schema=schema
    )
    on_token = (lambda _: None) if stream else None
    async with AnthropicProvider(base_url=anthropic_server.base_url, api_key="k") as provider:
        first = await provider.complete(request, timeout=5, on_token=on_token)
        second = await provider.complete(request, timeout=5, on_token=on_token)
    assert first.message.tool_calls == (call,)
    assert first.finish_reason == "tool_calls"
    assert json.loads(second.message.content) == {"ok": True}
    assert second.finish_reason == "stop"
    body = anthropic_server.requests[0].body
    assert body["tool_choice"] == {"type": "any"}
    assert [t["name"] for t in body["tools"]] == ["weather", OUTPUT_TOOL]


async def test_overloaded__an_error_event_inside_the_stream(anthropic_server: AnthropicServer):
    anthropic_server.fail("overloaded", in_stream=True)
    async with AnthropicProvider(base_url=anthropic_server.base_url, api_key="k") as provider:
        with pytest.raises(ProviderError) as info:
            await provider.complete(
                ModelRequest(model="m", messages=CONVERSATION[:3]),
                timeout=5,
                on_token=lambda _: None,
            )
    assert info.value.kind is ErrorKind.OVERLOADED
    assert info.value.status is None
    assert "overloaded_error" in str(info.value)


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [("end_turn", "stop"), ("max_tokens", "length"), ("stop_sequence", "stop")],
)
async def test_stop_reasons(anthropic_server: AnthropicServer, stop_reason, finish):
    anthropic_server.script(Reply(text="x", finish=stop_reason))
    async with AnthropicProvider(base_url=anthropic_server.base_url, api_key="k") as provider:
        reply = await provider.complete(
            ModelRequest(model="m", messages=CONVERSATION[:3]), timeout=5
        )
    assert reply.finish_reason == finish


def test_usage__cache_reads_and_writes_count_as_input():
    message = {
        "model": "m",
        "content": [{"type": "text", "text": "hi"}],
        "stop_reason": "end_turn",
        "usage": {
            "input_tokens": 5,
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 1000,
            "output_tokens": 2,
        },
    }
    reply = _response(_classify.Call("anthropic", "m"), message)
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (1105, 2)


async def test_client_given__its_retries_are_turned_off(anthropic_server: AnthropicServer):
    client = anthropic.AsyncAnthropic(
        base_url=anthropic_server.base_url, api_key="k", max_retries=4
    )
    provider = AnthropicProvider(client, name="claude-primary")
    assert provider.client.max_retries == 0
    anthropic_server.fail("overloaded", times=3)
    with pytest.raises(ProviderError) as info:
        await provider.complete(ModelRequest(model="m", messages=CONVERSATION[:3]), timeout=5)
    assert info.value.kind is ErrorKind.OVERLOADED
    assert info.value.provider == "claude-primary"
    assert len(anthropic_server.requests) == 1
    await client.close()


def test_missing_sdk__config_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "anthropic", None)
    with pytest.raises(ConfigError, match=r"pip install 'tether\[anthropic\]'"):
        AnthropicProvider(api_key="k")
