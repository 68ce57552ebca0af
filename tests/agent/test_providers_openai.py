"""OpenAIProvider: the chat-completions wire format, the SDK client, OpenAI-only failures."""

from __future__ import annotations

import sys
from typing import Any

import openai
import pytest

from tests.agent.servers import OpenAIServer, Reply
from tether.agent.providers.openai import OpenAIProvider, from_wire, to_wire
from tether.agent.types import ErrorKind, Message, ModelRequest, ProviderError, ToolCall
from tether.errors import ConfigError

CONVERSATION = (
    Message(role="system", content="Be brief.", name="policy"),
    Message(role="user", content="Weather in Oslo and Lima?", name="ada"),
    Message(
        role="assistant",
        tool_calls=(
            ToolCall(id="call_1", name="weather", arguments={"city": "Oslo"}),
            ToolCall(id="call_2", name="weather", arguments={"city": "Lima", "days": [1, 2]}),
        ),
    ),
    Message(role="tool", content="-3 C", tool_call_id="call_1", name="weather"),
    Message(role="tool", content="19 C", tool_call_id="call_2", name="weather"),
    Message(role="assistant", content="Oslo -3 C, Lima 19 C.", name="bot"),
    Message(role="user", content="Thanks; anything else?"),
    Message(
        role="assistant",
        content="Checking one more.",
        tool_calls=(ToolCall(id="call_3", name="noop"),),
    ),
    Message(role="tool", content="", tool_call_id="call_3", name="noop"),
)


def test_wire__round_trips_exactly():
    wire = to_wire(CONVERSATION)
    assert from_wire(wire) == CONVERSATION


def test_wire__shape():
    wire = to_wire(CONVERSATION)
    assert wire[0] == {"role": "system", "content": "Be brief.", "name": "policy"}
    assert wire[2]["content"] is None  # tool calls only
    assert wire[2]["tool_calls"][1] == {
        "id": "call_2",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city": "Lima", "days": [1, 2]}'},
    }
    assert wire[3] == {"role": "tool", "tool_call_id": "call_1", "content": "-3 C"}
    assert wire[7]["content"] == "Checking one more."


def test_wire__content_parts_and_missing_arguments_read_as_text_and_empty_object():
    wire: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "x", "function": {"name": "f", "arguments": ""}}],
        },
    ]
    assert from_wire(wire) == (
        Message(role="user", content="ab"),
        Message(role="assistant", tool_calls=(ToolCall(id="x", name="f"),)),
    )


async def test_request__sent_as_built(openai_server: OpenAIServer):
    request = ModelRequest(model="gpt-test", messages=CONVERSATION, temperature=0.2, max_tokens=64)
    async with OpenAIProvider(base_url=openai_server.base_url, api_key="k") as provider:
        await provider.complete(request, timeout=5)
    (sent,) = openai_server.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer k"
    assert sent.body["messages"] == to_wire(CONVERSATION)
    assert sent.body["temperature"] == 0.2
    assert sent.body["max_tokens"] == 64  # other servers: the name they all know
    assert "response_format" not in sent.body
    assert "tools" not in sent.body


async def test_max_tokens__sent_as_max_completion_tokens_to_openai():
    provider = OpenAIProvider(api_key="k")
    request = ModelRequest(model="o-model", messages=CONVERSATION[:2], max_tokens=64)
    try:
        params = provider._params(request)
    finally:
        await provider.aclose()
    assert params["max_completion_tokens"] == 64
    assert "max_tokens" not in params


async def test_client_given__its_retries_are_turned_off_and_it_stays_open(
    openai_server: OpenAIServer,
):
    client = openai.AsyncOpenAI(base_url=openai_server.base_url, api_key="k", max_retries=5)
    provider = OpenAIProvider(client)
    assert provider.client.max_retries == 0
    openai_server.fail("server_error", times=3)
    with pytest.raises(ProviderError) as info:
        await provider.complete(ModelRequest(model="m", messages=CONVERSATION[:2]), timeout=5)
    assert info.value.kind is ErrorKind.SERVER_ERROR
    assert len(openai_server.requests) == 1
    await provider.aclose()
    assert not client.is_closed()
    await client.close()


async def test_tool_calls_with_finish_stop__read_as_tool_calls(openai_server: OpenAIServer):
    # llama.cpp and Ollama answer tool calls with finish_reason "stop"
    call = ToolCall(id="c", name="weather", arguments={"city": "Oslo"})
    openai_server.script(Reply(tool_calls=[call], finish="stop"))
    async with OpenAIProvider(base_url=openai_server.base_url, api_key="k") as provider:
        reply = await provider.complete(
            ModelRequest(model="m", messages=CONVERSATION[:2]), timeout=5
        )
    assert reply.finish_reason == "tool_calls"
    assert reply.message.tool_calls == (call,)


async def test_length__finish_reason_length(openai_server: OpenAIServer):
    openai_server.script(Reply(text="cut sh", finish="length"))
    async with OpenAIProvider(base_url=openai_server.base_url, api_key="k") as provider:
        reply = await provider.complete(
            ModelRequest(model="m", messages=CONVERSATION[:2]), timeout=5
        )
    assert reply.finish_reason == "length"
    assert reply.message.content == "cut sh"


@pytest.mark.parametrize("stream", [False, True])
async def test_content_filtered__policy_violation_and_refusal(openai_server: OpenAIServer, stream):
    openai_server.fail("content_policy")
    openai_server.script(Reply(refusal="I can't help with that."))
    request = ModelRequest(model="m", messages=CONVERSATION[:2])
    on_token = (lambda _: None) if stream else None
    async with OpenAIProvider(base_url=openai_server.base_url, api_key="k") as provider:
        for expected in ("HTTP 400", "I can't help with that."):
            with pytest.raises(ProviderError) as info:
                await provider.complete(request, timeout=5, on_token=on_token)
            assert info.value.kind is ErrorKind.CONTENT_FILTERED
            assert expected in str(info.value)


def test_missing_sdk__config_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(ConfigError, match=r"pip install 'tether\[openai\]'"):
        OpenAIProvider(api_key="k")


def test_no_key__config_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIProvider()
