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
from collections.abc import Callable
from typing import Any

from tether.codec import Codec, Text, run_place
from tether.errors import CorruptRowError, StepError

_SKIP_ATTRIBUTES = frozenset({"__traceback__", "__cause__", "__context__"})
_MAX_TEXT = 32 * 1024
"""The most characters of an error's message, and of its traceback, that are recorded."""
_MAX_RECORD = 256 * 1024
"""Past this many bytes, a record leaves out its error's `args` and attributes."""


def _text(text: Text) -> str:
    return text if isinstance(text, str) else text()


def encode_error(exc: BaseException) -> bytes:
    """Return the JSON record of `exc` (plain JSON; `seal_error` is what gets stored).

    Whatever the exception holds, the record is valid JSON of bounded size: a message or
    traceback longer than `_MAX_TEXT` characters is cut (its end kept: that is where the
    cause is), and `args` or attributes that do not fit are left out.
    """
    cls = type(exc)
    record = {
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "message": _cut(_safe_str(exc)),
        "args": list(exc.args) if _is_jsonable(list(exc.args)) else None,
        "attributes": {
            k: v for k, v in vars(exc).items() if k not in _SKIP_ATTRIBUTES and _is_jsonable(v)
        },
        "traceback": _cut(_safe_traceback(exc)),
    }
    data = _dumps(record)
    if len(data) > _MAX_RECORD:
        record["args"] = None
        record["attributes"] = {}
        data = _dumps(record)
    return data


def seal_error(codec: Codec, exc: BaseException, context: Text) -> bytes:
    """Return the stored form of `exc` at `context`: its record through the app's codecs."""
    return codec.reseal(encode_error(exc), "an error", "", _text(context))


def reason(codec: Codec, exc: BaseException) -> Callable[[str], bytes]:
    """`exc` as the stored error of any run it ends (a cancellation): sealed per run id."""
    record = encode_error(exc)
    return lambda run_id: codec.reseal(record, "an error", "", run_place(run_id, "error"))


def open_error(codec: Codec, data: bytes, context: Text) -> bytes:
    """Return the JSON record of an error stored at `context`."""
    return codec.open(data, "a recorded error", context)


def error_summary(data: bytes) -> tuple[str, str, str]:
    """Return (type, message, traceback) of a recorded error (JSON, opened), for display."""
    record = _load(data)
    return str(record.get("type")), str(record.get("message")), str(record.get("traceback", ""))


def decode_error(data: bytes) -> BaseException:
    """Rebuild the exception recorded in `data` (JSON, opened) or a `StepError` for it."""
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
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def _dumps(record: dict[str, Any]) -> bytes:
    # Lone surrogates and NaN cannot be stored as JSON text: escape them, never fail.
    text = json.dumps(record, default=str, allow_nan=False, ensure_ascii=True)
    return text.encode("ascii")


def _cut(text: str) -> str:
    if len(text) <= _MAX_TEXT:
        return text
    dropped = len(text) - _MAX_TEXT
    return f"[{dropped:,} characters cut] " + text[-_MAX_TEXT:]


def _safe_traceback(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(exc))
    except Exception:
        return f"<the traceback of a {type(exc).__name__} could not be formatted>"


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__} whose str() failed>"
