"""One message and tool-call model across providers, and the protocol a provider implements.

Every provider (OpenAI, Anthropic, any OpenAI-compatible server, the scripted model) turns a
`ModelRequest` into its own wire format and its answer back into a `ModelResponse`; the agent
loop, the journal and the monitors above see only these types. They are frozen pydantic models,
so a response journaled by one worker decodes identically on the worker that replays it.

A provider signals failure only by raising `ProviderError` with an `ErrorKind`; the agent
layer's policies (retry, fail over, fail fast) are chosen by kind, never by parsing messages.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Literal, Protocol

import pydantic

from tether.errors import TetherError

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "tool_calls", "length", "content_filter"]


class _Frozen(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")


class ToolCall(_Frozen):
    """A model's request to call a tool; `id` pairs it with the tool message that answers."""

    id: str
    name: str
    arguments: dict[str, Any] = pydantic.Field(default_factory=dict)


class Message(_Frozen):
    """One message of a conversation.

    Attributes:
        role: system, user, assistant or tool.
        content: the text (empty for an assistant turn that only calls tools).
        tool_calls: the assistant's tool calls.
        tool_call_id: on a tool message, the call it answers.
        name: the speaker's name in a multi-agent conversation, or the tool's name.
    """

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


class Usage(_Frozen):
    """Tokens a call consumed, as the provider reported them."""

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


class ToolSpec(_Frozen):
    """A tool as a model sees it: a name, a description and a JSON schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = pydantic.Field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )


class ModelRequest(_Frozen):
    """One call to a model.

    Attributes:
        model: the provider's model name (for example "gpt-4o-mini").
        messages: the conversation, system message first if any.
        tools: the tools the model may call.
        temperature: sampling temperature, or the provider's default.
        max_tokens: the most output tokens.
        output_schema: a JSON schema the answer must follow (structured output), if any.
    """

    model: str
    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...] = ()
    temperature: float | None = None
    max_tokens: int | None = None
    output_schema: dict[str, Any] | None = None


class ModelResponse(_Frozen):
    """A model's answer: the assistant message, why it stopped, and what it cost."""

    provider: str
    model: str
    message: Message
    finish_reason: FinishReason = "stop"
    usage: Usage = Usage()


class ErrorKind(enum.StrEnum):
    """Why a provider call failed; the agent's policies are chosen by kind."""

    RATE_LIMITED = "rate_limited"  # 429: retry after the provider's retry-after
    OVERLOADED = "overloaded"  # 529 / 503: retry with backoff, then fail over
    TIMEOUT = "timeout"  # no answer in time: retry, then fail over
    SERVER_ERROR = "server_error"  # 5xx: retry with backoff, then fail over
    CONNECTION = "connection"  # cannot reach the provider: fail over
    CONTEXT_TOO_LONG = "context_too_long"  # the request does not fit: fail over to a larger model
    AUTHENTICATION = "authentication"  # 401 / 403: fail fast, fix the key
    BAD_REQUEST = "bad_request"  # 400 / 404 / 422: fail fast, fix the request
    CONTENT_FILTERED = "content_filtered"  # the provider refused the content: fail fast


class ProviderError(TetherError):
    """A model provider call failed.

    Attributes:
        kind: the class of failure.
        provider: the provider's name.
        status: the HTTP status, if the provider answered.
        retry_after: seconds the provider asked to wait, if it said.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: ErrorKind,
        provider: str,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = ErrorKind(kind)
        self.provider = provider
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        """Whether the same call may succeed if tried again later."""
        return self.kind in _RETRYABLE


_RETRYABLE = frozenset(
    {
        ErrorKind.RATE_LIMITED,
        ErrorKind.OVERLOADED,
        ErrorKind.TIMEOUT,
        ErrorKind.SERVER_ERROR,
        ErrorKind.CONNECTION,
    }
)

OnToken = Callable[[str], None]
"""Called with each text fragment while a streamed answer arrives."""


class Provider(Protocol):
    """A model provider: turns requests into responses, or raises `ProviderError`."""

    name: str

    async def complete(
        self,
        request: ModelRequest,
        *,
        timeout: float,  # noqa: ASYNC109 - passed to the SDK client, which enforces it
        on_token: OnToken | None = None,
    ) -> ModelResponse:
        """Send `request` and return the answer.

        Args:
            request: the call.
            timeout: seconds before the call fails with `ErrorKind.TIMEOUT`.
            on_token: when given, the answer is streamed and each text fragment passed to it;
                the returned response is the complete answer either way.

        Raises:
            ProviderError: classified by `kind`; nothing else escapes.
        """
        ...
