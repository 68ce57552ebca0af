"""Structured output: the model's final answer validated against a type or a callable.

A type (a pydantic model, a dataclass, `list[int]` ...) gives the model a JSON schema and
validates the answer as JSON (code fences around it are tolerated). A callable takes the
answer's text and returns the value, or raises to reject it; it must be a pure function of the
text (it runs in workflow code, so a replay must reach the same verdict). A rejected answer
goes back to the model with the error, within the agent's bound of corrections.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pydantic

_FENCE = re.compile(r"^\s*```[a-zA-Z0-9_-]*\s*\n(.*?)\n?```\s*$", re.DOTALL)

OutputSpec = type[Any] | Callable[[str], Any] | Any


class OutputValidator:
    """Validates final answers for one agent."""

    def __init__(self, output: OutputSpec | None) -> None:
        self.output = output
        self._adapter: pydantic.TypeAdapter[Any] | None = None
        self._call: Callable[[str], Any] | None = None
        if output is None:
            return
        spec: Any = output
        if _is_type(spec) or not callable(spec):
            self._adapter = pydantic.TypeAdapter(spec)
        else:
            self._call = spec

    @property
    def schema(self) -> dict[str, Any] | None:
        """The JSON schema the answer must follow, for a typed output."""
        return None if self._adapter is None else self._adapter.json_schema()

    def validate(self, text: str) -> tuple[bool, Any, str]:
        """Return (True, value, "") for a valid answer, else (False, None, the error)."""
        if self._adapter is not None:
            try:
                return True, self._adapter.validate_json(_unfence(text)), ""
            except pydantic.ValidationError as exc:
                return False, None, _describe(exc)
        if self._call is not None:
            try:
                return True, self._call(text), ""
            except Exception as exc:
                return False, None, f"{type(exc).__name__}: {exc}"
        return True, text, ""

    def correction(self, error: str) -> str:
        """The message that sends a rejected answer back to the model."""
        wanted = "JSON that follows the required schema" if self._adapter else "a valid answer"
        return (
            f"Your final answer was rejected: {error}\n"
            f"Reply again with only the corrected answer, as {wanted}."
        )


def _is_type(output: Any) -> bool:
    if isinstance(output, type):
        return True
    return getattr(output, "__origin__", None) is not None  # list[int], dict[str, X] ...


def _unfence(text: str) -> str:
    match = _FENCE.match(text)
    return match.group(1) if match else text


def _describe(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "the answer"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
