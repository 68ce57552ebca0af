"""The failure classification both SDK providers share: retry-after, kinds, masked keys."""

from __future__ import annotations

import email.utils

import pytest

from tether.agent.providers import _classify
from tether.agent.types import ErrorKind

NOW = 1_800_000_000.0


def at_now() -> float:
    return NOW


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # milliseconds win
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
        ({"retry-after": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"retry-after": email.utils.formatdate(NOW - 30, usegmt=True)}, 0.0),  # past: at once
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after": "whenever"}, None),
        ({"retry-after": "inf"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_parse_retry_after__seconds_milliseconds_or_http_date(headers, expected):
    assert _classify.parse_retry_after(headers, now=at_now) == expected


@pytest.mark.parametrize(
    ("status", "error_type", "error_code", "message", "kind"),
    [
        (429, "requests", "rate_limit_exceeded", "", ErrorKind.RATE_LIMITED),
        (429, "rate_limit_error", None, "", ErrorKind.RATE_LIMITED),
        (429, "insufficient_quota", "insufficient_quota", "", ErrorKind.AUTHENTICATION),
        (529, "overloaded_error", None, "Overloaded", ErrorKind.OVERLOADED),
        (503, "server_error", None, "", ErrorKind.OVERLOADED),
        (500, "overloaded_error", None, "", ErrorKind.OVERLOADED),
        (200, "overloaded_error", None, "", ErrorKind.OVERLOADED),  # an event in a stream
        (None, "rate_limit_error", None, "", ErrorKind.RATE_LIMITED),
        (None, None, None, "", ErrorKind.SERVER_ERROR),
        (500, "api_error", None, "", ErrorKind.SERVER_ERROR),
        (502, None, None, "", ErrorKind.SERVER_ERROR),
        (504, None, None, "", ErrorKind.TIMEOUT),
        (401, "authentication_error", None, "", ErrorKind.AUTHENTICATION),
        (403, "permission_error", None, "", ErrorKind.AUTHENTICATION),
        (400, "invalid_request_error", "context_length_exceeded", "", ErrorKind.CONTEXT_TOO_LONG),
        (
            400,
            "invalid_request_error",
            None,
            "prompt is too long: 2 > 1",
            ErrorKind.CONTEXT_TOO_LONG,
        ),
        (
            400,
            None,
            None,
            "This model's maximum context length is 4096 tokens",
            ErrorKind.CONTEXT_TOO_LONG,
        ),
        (400, "invalid_request_error", "content_policy_violation", "", ErrorKind.CONTENT_FILTERED),
        (400, "invalid_request_error", None, "bad temperature", ErrorKind.BAD_REQUEST),
        (404, "not_found_error", None, "", ErrorKind.BAD_REQUEST),
        (422, None, None, "", ErrorKind.BAD_REQUEST),
    ],
)
def test_kind_for__body_type_first_then_status(status, error_type, error_code, message, kind):
    assert _classify.kind_for(status, error_type, error_code, message) == kind


def test_status_error__message_names_provider_model_status_and_advice():
    call = _classify.Call("openai", "gpt-x", api_key="sk-live-0123456789abcdef")
    error = _classify.status_error(
        call,
        status=429,
        headers={"retry-after": "3"},
        error_type="requests",
        error_code="rate_limit_exceeded",
        message="slow down, sk-live-0123456789abcdef",
    )
    assert error.kind is ErrorKind.RATE_LIMITED
    assert error.status == 429
    assert error.retry_after == 3.0
    assert error.provider == "openai"
    assert error.retryable
    text = str(error)
    assert "openai" in text
    assert "'gpt-x'" in text
    assert "HTTP 429" in text
    assert "retry after 3 s" in text
    assert "lower the request rate" in text
    assert "0123456789abcdef" not in text


def test_mask__hides_the_configured_key_and_anything_shaped_like_a_key():
    call = _classify.Call("p", "m", api_key="my-secret-key-value")
    masked = call.mask("got my-secret-key-value and sk-proj-AAAABBBBCCCCDDDD")
    assert "my-secret-key-value" not in masked
    assert "AAAABBBBCCCCDDDD" not in masked
    assert "sk-pro***" in masked


def test_errors_outside_http__timeout_connection_filtered_malformed():
    call = _classify.Call("anthropic", "claude-x")
    assert _classify.timeout_error(call, 2.5).kind is ErrorKind.TIMEOUT
    assert "2.5 s" in str(_classify.timeout_error(call, 2.5))
    assert _classify.connection_error(call, "refused").kind is ErrorKind.CONNECTION
    assert _classify.content_filtered(call, "no").kind is ErrorKind.CONTENT_FILTERED
    assert not _classify.content_filtered(call, "no").retryable
    assert _classify.malformed(call, "not JSON").kind is ErrorKind.SERVER_ERROR
