"""A fake Anthropic messages server: POST /v1/messages, JSON or SSE events."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from tests.agent.servers.base import FakeServer, Fault, Recorded, Reply, api_key, pieces, sse
from tether.agent.providers.anthropic import OUTPUT_TOOL

_IDS = itertools.count(1)

# (status, error type, message) per fault, as Anthropic words them.
_ERRORS: dict[str, tuple[int, str, str]] = {
    "rate_limited": (429, "rate_limit_error", "Number of request tokens has exceeded your rate."),
    "server_error": (500, "api_error", "Internal server error"),
    "unavailable": (503, "api_error", "Service unavailable"),
    "overloaded": (529, "overloaded_error", "Overloaded"),
    "context_too_long": (
        400,
        "invalid_request_error",
        "prompt is too long: 208310 tokens > 200000 maximum",
    ),
    "unauthorized": (401, "authentication_error", "invalid x-api-key"),
    "forbidden": (403, "permission_error", "Your API key does not have permission."),
    "bad_request": (400, "invalid_request_error", "max_tokens: Field required"),
    "not_found": (404, "not_found_error", "model: claude-nonexistent"),
    "unprocessable": (422, "invalid_request_error", "Unprocessable entity."),
}


class AnthropicServer(FakeServer):
    """Speaks Anthropic's messages wire format; give the SDK `base_url` (the root URL)."""

    path = "/v1/messages"

    def render(self, reply: Reply, body: Mapping[str, Any]) -> dict[str, Any]:
        return {
            **_head(reply, body),
            "content": _blocks(reply),
            "stop_reason": _stop(reply),
            "stop_sequence": None,
            "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens},
        }

    async def stream(self, reply: Reply, body: Mapping[str, Any]) -> AsyncIterator[str]:
        yield _start(reply, body)
        yield sse({"type": "ping"}, "ping")
        for index, block in enumerate(_blocks(reply)):
            start: dict[str, Any]
            if block["type"] == "text":
                start = {"type": "text", "text": ""}
                deltas = [{"type": "text_delta", "text": p} for p in pieces(block["text"])]
            else:
                start = {**block, "input": {}}
                deltas = [
                    {"type": "input_json_delta", "partial_json": p}
                    for p in pieces(json.dumps(block["input"]), 7)
                ]
            event = {"type": "content_block_start", "index": index, "content_block": start}
            yield sse(event, "content_block_start")
            for delta in deltas:
                event = {"type": "content_block_delta", "index": index, "delta": delta}
                yield sse(event, "content_block_delta")
            yield sse({"type": "content_block_stop", "index": index}, "content_block_stop")
        end = {"stop_reason": _stop(reply), "stop_sequence": None}
        usage = {"output_tokens": reply.output_tokens}
        yield sse({"type": "message_delta", "delta": end, "usage": usage}, "message_delta")
        yield sse({"type": "message_stop"}, "message_stop")

    async def stream_error(self, fault: Fault, body: Mapping[str, Any]) -> AsyncIterator[str]:
        yield _start(Reply(), body)
        _, payload = self.error(fault, Recorded("", {}, body))
        yield sse(payload, "error")

    def error(self, fault: Fault, recorded: Recorded) -> tuple[int, dict[str, Any]]:
        if fault.kind not in _ERRORS:
            raise ValueError(
                f"the Anthropic API has no {fault.kind!r} error; refusals are "
                "Reply(finish='refusal')"
            )
        status, kind, message = _ERRORS[fault.kind]
        if fault.kind == "unauthorized":
            message = f"invalid x-api-key: {api_key(recorded.headers)}"
        return status, {
            "type": "error",
            "error": {"type": kind, "message": fault.message or message},
        }


def _head(reply: Reply, body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": f"msg_{next(_IDS):012d}",
        "type": "message",
        "role": "assistant",
        "model": reply.model or body.get("model") or "unknown",
    }


def _start(reply: Reply, body: Mapping[str, Any]) -> str:
    message = {
        **_head(reply, body),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": reply.input_tokens, "output_tokens": 1},
    }
    return sse({"type": "message_start", "message": message}, "message_start")


def _blocks(reply: Reply) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if reply.text:
        blocks.append({"type": "text", "text": reply.text})
    calls = [(c.id, c.name, dict(c.arguments)) for c in reply.tool_calls]
    if reply.output is not None:
        calls.append((f"toolu_out{next(_IDS)}", OUTPUT_TOOL, dict(reply.output)))
    blocks += [{"type": "tool_use", "id": i, "name": n, "input": a} for i, n, a in calls]
    return blocks


def _stop(reply: Reply) -> str:
    if reply.finish:
        return reply.finish
    return "tool_use" if reply.tool_calls or reply.output is not None else "end_turn"
