"""What the SDK-backed providers share: loading an SDK, the deadline, on_token errors, JSON."""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from types import ModuleType
from typing import Any, Self

from tether.agent.providers import _classify
from tether.agent.types import ErrorKind, OnToken, ProviderError
from tether.errors import ConfigError


def load_sdk(module: str, extra: str, provider: str) -> ModuleType:
    """Import an SDK, or raise `ConfigError` naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"{provider} needs the {module!r} package, which is not installed; install it with "
            f"pip install 'tether[{extra}]'"
        ) from exc


class CallbackError(Exception):
    """Carries an exception raised by the caller's `on_token`, so it is not classified."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def emit(on_token: OnToken, text: str) -> None:
    """Pass `text` to `on_token`; an error it raises propagates to the caller unchanged."""
    if not text:
        return
    try:
        on_token(text)
    except Exception as exc:
        raise CallbackError(exc) from exc


def as_dict(obj: Any) -> dict[str, Any]:
    """An SDK model (a pydantic model in every SDK version) or a mapping, as a plain dict."""
    if isinstance(obj, Mapping):
        return dict(obj)
    dumped: dict[str, Any] = obj.model_dump(mode="json")
    return dumped


def parse_arguments(call: _classify.Call, raw: object, tool: str) -> dict[str, Any]:
    """Tool-call arguments as a JSON object; empty arguments are `{}`."""
    if isinstance(raw, Mapping):
        return dict(raw)
    text = raw if isinstance(raw, str) else ""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _classify.malformed(
            call, f"the arguments of a call to tool {tool!r} are not JSON ({exc})"
        ) from exc
    if not isinstance(value, dict):
        raise _classify.malformed(
            call, f"the arguments of a call to tool {tool!r} are not a JSON object"
        )
    return value


def check_timeout(call: _classify.Call, timeout: float) -> None:
    """Reject a timeout that cannot be a deadline, as a bad request (nothing was sent)."""
    if not timeout > 0:
        raise ProviderError(
            f"{call.provider} model {call.model!r}: timeout must be a positive number of "
            f"seconds, got {timeout!r}; pass the seconds the call may take",
            kind=ErrorKind.BAD_REQUEST,
            provider=call.provider,
        )


class OwnedClient:
    """Closing for providers: the SDK client they made themselves, never one given to them.

    `async with provider:` closes it on exit; so does `await provider.aclose()`.
    """

    client: Any
    _owns_client: bool

    async def aclose(self) -> None:
        """Close the HTTP connections of the client this provider made (not of one given to it)."""
        if self._owns_client:
            await self.client.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
