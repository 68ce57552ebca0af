"""Exceptions in the journal: recorded as JSON, rebuilt as the same type on replay.

A recorded error is `{"type", "message", "args", "attributes", "traceback"}`. On replay the
type is looked up among modules this process has already imported (nothing is imported by
name from the database) and rebuilt without calling its `__init__`: its `args` and JSON-able
attributes are restored. A type that cannot be found or rebuilt comes back as `StepError`.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

from tether.errors import CorruptRowError, StepError

_SKIP_ATTRIBUTES = frozenset({"__traceback__", "__cause__", "__context__"})


def encode_error(exc: BaseException) -> bytes:
    """Return the JSON record of `exc`."""
    cls = type(exc)
    record = {
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "message": _safe_str(exc),
        "args": list(exc.args) if _is_jsonable(list(exc.args)) else None,
        "attributes": {
            k: v for k, v in vars(exc).items() if k not in _SKIP_ATTRIBUTES and _is_jsonable(v)
        },
        "traceback": "".join(traceback.format_exception(exc)),
    }
    return json.dumps(record, default=str).encode()


def error_summary(data: bytes) -> tuple[str, str, str]:
    """Return (type, message, traceback) of a recorded error, for display."""
    record = _load(data)
    return str(record.get("type")), str(record.get("message")), str(record.get("traceback", ""))


def decode_error(data: bytes) -> BaseException:
    """Rebuild the exception recorded in `data` (or a `StepError` standing for it)."""
    record = _load(data)
    type_name = str(record.get("type", "Exception"))
    message = str(record.get("message", ""))
    cls = _find_type(type_name)
    if cls is None:
        return StepError(type_name, message, record.get("traceback"))
    try:
        exc = cls.__new__(cls)
        exc.args = tuple(record.get("args") or (message,))
        for key, value in (record.get("attributes") or {}).items():
            setattr(exc, key, value)
    except Exception:
        return StepError(type_name, message, record.get("traceback"))
    return exc


def _load(data: bytes) -> dict[str, Any]:
    try:
        record = json.loads(data)
    except ValueError:
        raise CorruptRowError("a recorded error is not valid JSON; the row is damaged") from None
    if not isinstance(record, dict):
        raise CorruptRowError("a recorded error is not a JSON object; the row is damaged")
    return record


def _find_type(type_name: str) -> type[BaseException] | None:
    module_name, _, qualname = type_name.rpartition(".")
    obj: Any = sys.modules.get(module_name)
    # Nested classes: "pkg.mod.Outer.Inner" is found by trying shorter module names.
    while obj is None and "." in module_name:
        module_name, _, head = module_name.rpartition(".")
        qualname = f"{head}.{qualname}"
        obj = sys.modules.get(module_name)
    if obj is None:
        return None
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if isinstance(obj, type) and issubclass(obj, BaseException):
        return obj
    return None


def _is_jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__} whose str() failed>"
