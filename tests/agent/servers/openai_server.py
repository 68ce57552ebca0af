"""A fake OpenAI chat-completions server: POST /v1/chat/completions, JSON or SSE."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from tests.agent.servers.base import FakeServer, Fault, Recorded, Reply, api_key, pieces, sse

_IDS = itertools.count(1)

# (status, type, code, message) per fault, as OpenAI words them.
_ERRORS: dict[str, tuple[int, str, str | None, str]] = {
    "rate_limited": (
        429,
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1.",
    ),
    "server_error": (500, "server_error", None, "The server had an error while processing."),
    "unavailable": (503, "server_error", None, "The engine is currently overloaded."),
    "overloaded": (529, "server_error", None, "The server is overloaded."),
    "context_too_long": (
        400,
        "invalid_request_error",
        "context_length_exceeded",
        "This model's maximum context length is 128000 tokens. However, your messages "
        "resulted in 130512 tokens. Please reduce the length of the messages.",
    ),
    "unauthorized": (401, "invalid_request_error", "invalid_api_key", "Incorrect API key"),
    "forbidden": (403, "invalid_request_error", "unsupported_country_region_territory", "No."),
    "bad_request": (400, "invalid_request_error", None, "Invalid value for 'temperature'."),
    "not_found": (404, "invalid_request_error", "model_not_found", "The model does not exist."),
    "unprocessable": (422, "invalid_request_error", None, "Unprocessable entity."),
    "content_policy": (
        400,
        "invalid_request_error",
        "content_policy_violation",
        "Your request was rejected as a result of our safety system.",
    ),
}


class OpenAIServer(FakeServer):
    """Speaks OpenAI's chat-completions wire format; give the SDK `base_url` (…/v1)."""

    path = "/v1/chat/completions"

    @property
    def base_url(self) -> str:
        """The URL to give `openai.AsyncOpenAI(base_url=...)`."""
        return f"{self.url}/v1"

    def render(self, reply: Reply, body: Mapping[str, Any]) -> dict[str, Any]:
        text = json.dumps(reply.output) if reply.output is not None else reply.text
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text if text or not reply.tool_calls else None,
            "refusal": reply.refusal,
        }
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                }
                for c in reply.tool_calls
            ]
        return {
            **_head(reply, body, "chat.completion"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": _finish(reply),
                    "logprobs": None,
                }
            ],
            "usage": _usage(reply),
        }

    async def stream(self, reply: Reply, body: Mapping[str, Any]) -> AsyncIterator[str]:
        head = _head(reply, body, "chat.completion.chunk")

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return sse({**head, "choices": [choice]})

        yield chunk({"role": "assistant", "content": ""})
        text = json.dumps(reply.output) if reply.output is not None else reply.text
        for piece in pieces(text):
            yield chunk({"content": piece})
        if reply.refusal:
            yield chunk({"refusal": reply.refusal})
        for index, call in enumerate(reply.tool_calls):
            first = {"index": index, "id": call.id, "type": "function"}
            yield chunk(
                {"tool_calls": [{**first, "function": {"name": call.name, "arguments": ""}}]}
            )
            for piece in pieces(json.dumps(call.arguments), 7):
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        yield chunk({}, _finish(reply))
        if (body.get("stream_options") or {}).get("include_usage"):
            yield sse({**head, "choices": [], "usage": _usage(reply)})
        yield sse("[DONE]")

    async def stream_error(self, fault: Fault, body: Mapping[str, Any]) -> AsyncIterator[str]:
        head = _head(Reply(), body, "chat.completion.chunk")
        delta = {"role": "assistant", "content": "Hel"}
        yield sse({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        _, payload = self.error(fault, Recorded("", {}, body))
        yield sse(payload)

    def error(self, fault: Fault, recorded: Recorded) -> tuple[int, dict[str, Any]]:
        status, kind, code, message = _ERRORS[fault.kind]
        if fault.kind == "unauthorized":
            message = f"Incorrect API key provided: {api_key(recorded.headers)}."
        error = {"message": fault.message or message, "type": kind, "param": None, "code": code}
        return status, {"error": error}


def _head(reply: Reply, body: Mapping[str, Any], obj: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{next(_IDS)}",
        "object": obj,
        "created": int(time.time()),
        "model": reply.model or body.get("model") or "unknown",
        "system_fingerprint": "fp_test",
    }


def _finish(reply: Reply) -> str:
    return reply.finish or ("tool_calls" if reply.tool_calls else "stop")


def _usage(reply: Reply) -> dict[str, int]:
    return {
        "prompt_tokens": reply.input_tokens,
        "completion_tokens": reply.output_tokens,
        "total_tokens": reply.input_tokens + reply.output_tokens,
    }
