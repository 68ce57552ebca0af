"""Turn a provider's failure into a `ProviderError` with an `ErrorKind`.

The providers' SDKs raise their own exception classes; each provider module reads the facts out
of them (HTTP status, headers, the error body's type and code, the message) and hands them to
`status_error`, or calls `timeout_error` / `connection_error` / `content_filtered`. Nothing here
imports an SDK, so one table serves every provider and the OpenAI-compatible servers alike.

Order of evidence: the error body's type or code first (a 200 stream can carry an
`overloaded_error` event, and a 400 can say the context is too long), then the HTTP status.
Messages name the provider, the model, the status and what to do; a key that appears in the
provider's text is masked before it reaches a message.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tether.agent.types import ErrorKind, ProviderError

_ADVICE = {
    ErrorKind.RATE_LIMITED: "wait for the provider's retry-after, or lower the request rate",
    ErrorKind.OVERLOADED: "retry with backoff, or fail over to another model",
    ErrorKind.TIMEOUT: "retry, raise the timeout, or fail over to another model",
    ErrorKind.SERVER_ERROR: "retry with backoff, or fail over to another model",
    ErrorKind.CONNECTION: "check the base URL and the network, or fail over to another model",
    ErrorKind.CONTEXT_TOO_LONG: "shorten the conversation or fail over to a model with a "
    "larger context window",
    ErrorKind.AUTHENTICATION: "check the API key, its permissions for this model and the "
    "account's credit",
    ErrorKind.BAD_REQUEST: "fix the request (model name, parameters, tools, schema)",
    ErrorKind.CONTENT_FILTERED: "change the prompt; the provider refused this content",
}

# Error types and codes in the providers' error bodies (OpenAI `error.code` / `error.type`,
# Anthropic `error.type`), checked before the HTTP status.
_BY_CODE = {
    "context_length_exceeded": ErrorKind.CONTEXT_TOO_LONG,
    "string_above_max_length": ErrorKind.CONTEXT_TOO_LONG,
    "content_policy_violation": ErrorKind.CONTENT_FILTERED,
    "content_filter": ErrorKind.CONTENT_FILTERED,
    "overloaded_error": ErrorKind.OVERLOADED,
    "rate_limit_error": ErrorKind.RATE_LIMITED,
    "rate_limit_exceeded": ErrorKind.RATE_LIMITED,
    "authentication_error": ErrorKind.AUTHENTICATION,
    "permission_error": ErrorKind.AUTHENTICATION,
    "invalid_api_key": ErrorKind.AUTHENTICATION,
    # a 429 that retrying cannot cure: the account has no credit left
    "insufficient_quota": ErrorKind.AUTHENTICATION,
    "api_error": ErrorKind.SERVER_ERROR,
    "server_error": ErrorKind.SERVER_ERROR,
    "timeout_error": ErrorKind.TIMEOUT,
}

# Kinds an error body names more precisely than its status does (a 400 that is a context
# overflow, a 500 that is an overload, a 429 that is an empty account); for the rest the
# status decides (an OpenAI 503 whose type is `server_error` is an overload).
_SPECIFIC = frozenset(
    {
        ErrorKind.CONTEXT_TOO_LONG,
        ErrorKind.CONTENT_FILTERED,
        ErrorKind.OVERLOADED,
        ErrorKind.AUTHENTICATION,
    }
)

# Phrases that mean "the prompt does not fit", from servers that send no code for it:
# Anthropic ("prompt is too long"), vLLM and llama.cpp ("maximum context length",
# "exceeds the available context size"), older OpenAI-compatible servers.
_CONTEXT_PHRASES = re.compile(
    r"prompt is too long|context length|context window|context size|"
    r"maximum context|too many tokens|input is too long",
    re.IGNORECASE,
)

_KEY_PATTERN = re.compile(r"\b(sk-[A-Za-z0-9_\-]{3})[A-Za-z0-9_\-*]{6,}")


@dataclass(frozen=True)
class Call:
    """What a failed call was: the provider's name, the model, and the key to keep secret."""

    provider: str
    model: str
    api_key: str | None = None

    def mask(self, text: str) -> str:
        """Return `text` with the API key (and anything shaped like a key) masked."""
        if self.api_key and len(self.api_key) >= 4:
            text = text.replace(self.api_key, "***")
        return _KEY_PATTERN.sub(r"\1***", text)


def parse_retry_after(
    headers: Mapping[str, str] | None, now: Callable[[], float] = time.time
) -> float | None:
    """Seconds to wait before retrying, from `retry-after-ms` or `retry-after` (seconds or date).

    Returns None when neither header is present or parses; never a negative number.
    """
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = lowered.get(name)
        if raw is None:
            continue
        try:
            value = float(raw.strip())
        except ValueError:
            continue
        if math.isfinite(value):
            return max(0.0, value / divisor)
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now())


def kind_for(
    status: int | None, error_type: str | None, error_code: str | None, message: str
) -> ErrorKind:
    """The kind of a failure the provider reported with `status` and an error body."""
    named = next((_BY_CODE[k] for k in (error_code, error_type) if k and k in _BY_CODE), None)
    if status is None or status < 400:
        # An error event inside a stream: only the body says what went wrong; one that names
        # no known type means the provider failed after it began to answer.
        return named or ErrorKind.SERVER_ERROR
    if named in _SPECIFIC:
        return named
    if status in (400, 413) and _CONTEXT_PHRASES.search(message):
        return ErrorKind.CONTEXT_TOO_LONG
    return _by_status(status)


def _by_status(status: int) -> ErrorKind:
    if status == 429:
        return ErrorKind.RATE_LIMITED
    if status in (503, 529):
        return ErrorKind.OVERLOADED
    if status in (408, 504):
        return ErrorKind.TIMEOUT
    if status >= 500:
        return ErrorKind.SERVER_ERROR
    if status in (401, 402, 403):
        return ErrorKind.AUTHENTICATION
    return ErrorKind.BAD_REQUEST


def status_error(
    call: Call,
    *,
    status: int | None,
    headers: Mapping[str, str] | None,
    error_type: str | None,
    error_code: str | None,
    message: str,
) -> ProviderError:
    """A `ProviderError` for an error the provider answered with (an HTTP error or an error event).

    Args:
        call: the provider, model and key of the call.
        status: the HTTP status (None or 200 for an error event inside a stream).
        headers: the response headers, read for retry-after.
        error_type: the error body's type (Anthropic `overloaded_error`, OpenAI
            `invalid_request_error`), if any.
        error_code: the error body's code (OpenAI `context_length_exceeded`), if any.
        message: the provider's message.
    """
    kind = kind_for(status, error_type, error_code, message)
    retry_after = parse_retry_after(headers)
    shown = status if status is not None and status >= 400 else None
    what = f"HTTP {shown}" if shown is not None else "an error event in the stream"
    detail = ", ".join(x for x in (error_type, error_code) if x)
    text = (
        f"{call.provider} model {call.model!r} failed with {what}"
        + (f" ({detail})" if detail else "")
        + f": {kind.value}"
        + (f", retry after {retry_after:g} s" if retry_after is not None else "")
        + f": {_shorten(call.mask(message))}; {_ADVICE[kind]}"
    )
    return ProviderError(
        text, kind=kind, provider=call.provider, status=shown, retry_after=retry_after
    )


def timeout_error(call: Call, timeout: float) -> ProviderError:
    """A `ProviderError` for a call that did not finish within `timeout` seconds."""
    return ProviderError(
        f"{call.provider} model {call.model!r} did not answer within {timeout:g} s: "
        f"{ErrorKind.TIMEOUT.value}; {_ADVICE[ErrorKind.TIMEOUT]}",
        kind=ErrorKind.TIMEOUT,
        provider=call.provider,
    )


def connection_error(call: Call, detail: str) -> ProviderError:
    """A `ProviderError` for a call that could not reach the provider."""
    return ProviderError(
        f"{call.provider} model {call.model!r} could not be reached: "
        f"{ErrorKind.CONNECTION.value}: {_shorten(call.mask(detail))}; "
        f"{_ADVICE[ErrorKind.CONNECTION]}",
        kind=ErrorKind.CONNECTION,
        provider=call.provider,
    )


def content_filtered(call: Call, detail: str) -> ProviderError:
    """A `ProviderError` for an answer the provider withheld or refused for its content."""
    return ProviderError(
        f"{call.provider} model {call.model!r} refused the content: "
        f"{ErrorKind.CONTENT_FILTERED.value}: {_shorten(call.mask(detail))}; "
        f"{_ADVICE[ErrorKind.CONTENT_FILTERED]}",
        kind=ErrorKind.CONTENT_FILTERED,
        provider=call.provider,
    )


def malformed(call: Call, detail: str) -> ProviderError:
    """A `ProviderError` for an answer tether cannot read (not JSON, a missing field ...).

    Classified as a server error: the provider answered but not in its own format, and a retry
    or another model may do better.
    """
    return ProviderError(
        f"{call.provider} model {call.model!r} returned an answer tether cannot read: "
        f"{ErrorKind.SERVER_ERROR.value}: {_shorten(call.mask(detail))}; "
        f"{_ADVICE[ErrorKind.SERVER_ERROR]}",
        kind=ErrorKind.SERVER_ERROR,
        provider=call.provider,
    )


def _shorten(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
