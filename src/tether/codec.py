"""Payloads: values to JSON bytes and back, then through optional codecs at rest.

Values are encoded by their runtime type (JSON types, dataclasses, pydantic models, and what
pydantic serializes: datetimes, UUIDs, enums, sets, tuples ...) and decoded by the type the
code declares: a step's return annotation, a workflow parameter's annotation. That is how a
dataclass comes back as that dataclass after a restart, with no class names stored and no
code imported by name. Nothing is pickled.

A `PayloadCodec` transforms the JSON bytes before they are stored (compression, encryption);
codecs are named in a short header so a payload says how to read it back.
"""

from __future__ import annotations

import functools
import json
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import pydantic
import pydantic_core

from tether.errors import ConfigError, CorruptRowError, PayloadTooLargeError, SerializationError

_ANY: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(Any)
# NaN and the infinities are written as JSON's common extension (NaN, Infinity) and read back
# as themselves, instead of pydantic's default of silently storing null.
_DUMP: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(
    Any, config=pydantic.ConfigDict(ser_json_inf_nan="constants")
)

Text = str | Callable[[], str]
"""A description, or a function that builds it: the hot path only pays for it on error."""
_HEADER = 0  # first byte of a codec-wrapped payload; JSON text never starts with NUL


class PayloadCodec(Protocol):
    """A reversible transformation of payload bytes at rest (compression, encryption).

    `context` identifies the payload's place (run, position, field); an encrypting codec binds
    it as associated data so a ciphertext cannot be moved to another row.
    """

    name: str

    def encode(self, data: bytes, context: str) -> bytes:
        """Transform `data` for storage."""
        ...

    def decode(self, data: bytes, context: str) -> bytes:
        """Undo `encode`."""
        ...


class ZlibCodec:
    """Compresses payloads of at least `threshold` bytes with zlib."""

    name = "zlib"

    def __init__(self, level: int = 6, threshold: int = 512) -> None:
        self.level = level
        self.threshold = threshold

    def encode(self, data: bytes, context: str) -> bytes:
        """Compress `data` (prefixed with one byte saying whether it was worth it)."""
        if len(data) < self.threshold:
            return b"0" + data
        return b"1" + zlib.compress(data, self.level)

    def decode(self, data: bytes, context: str) -> bytes:
        """Decompress what `encode` produced."""
        return zlib.decompress(data[1:]) if data[:1] == b"1" else data[1:]


@functools.lru_cache(maxsize=4096)
def adapter(annotation: Any) -> pydantic.TypeAdapter[Any]:
    """Return the (cached) pydantic adapter that decodes payloads into `annotation`."""
    if annotation is Any:
        return _ANY
    try:
        return pydantic.TypeAdapter(annotation)
    except (pydantic.PydanticSchemaGenerationError, TypeError) as exc:
        raise SerializationError(
            f"tether cannot store values of type {annotation!r}: {exc}. Use JSON types, "
            "dataclasses or pydantic models in annotations of workflows and steps"
        ) from exc


class Codec:
    """Encodes values into stored payloads and decodes them back.

    Args:
        codecs: applied in order on encode and in reverse on decode.
        max_bytes: the largest stored payload accepted.
    """

    def __init__(self, codecs: Sequence[PayloadCodec] = (), max_bytes: int = 2 * 1024 * 1024):
        names = [c.name for c in codecs]
        for name in names:
            if not name.isascii() or not name.isidentifier():
                raise ConfigError(f"codec name {name!r} must be a short ASCII identifier")
        if len(set(names)) != len(names):
            raise ConfigError(f"codec names must be unique, got {names}")
        self.codecs = tuple(codecs)
        self.max_bytes = max_bytes
        self._by_name = {c.name: c for c in codecs}
        self._header = bytes([_HEADER]) + ",".join(names).encode() + bytes([_HEADER])

    def to_json(self, value: Any, what: Text) -> bytes:
        """Encode `value` as JSON bytes by its runtime type, or raise `SerializationError`."""
        try:
            return _DUMP.dump_json(value)
        except pydantic_core.PydanticSerializationError as exc:
            if "depth exceeded" in str(exc):
                raise SerializationError(
                    f"{_text(what)} cannot be stored: a {type(value).__name__} value is nested "
                    "too deeply (more than about 250 levels of lists, dicts or objects); "
                    "flatten it, or store it outside the journal and pass a reference"
                ) from None
            raise SerializationError(
                f"{_text(what)} cannot be stored: a {type(value).__name__} value holds something "
                f"that is not JSON-serializable ({_first_line(exc)}). Pass JSON types, "
                "dataclasses or pydantic models, or keep the object outside the workflow and "
                "pass an id"
            ) from None

    def seal(self, data: bytes, what: Text, context: Text) -> bytes:
        """Apply the codecs to JSON bytes and enforce the size limit."""
        if self.codecs:
            where = _text(context)
            for codec in self.codecs:
                data = codec.encode(data, where)
            data = self._header + data
        if len(data) > self.max_bytes:
            raise PayloadTooLargeError(
                f"{_text(what)} is {len(data):,} bytes encoded, over the limit of "
                f"{self.max_bytes:,}; store large data outside the journal (a file, an object "
                "store) and pass a reference, or raise Settings.max_payload_bytes",
                size=len(data),
                limit=self.max_bytes,
            )
        return data

    @property
    def active(self) -> bool:
        """Whether payloads are transformed at rest (any codec configured)."""
        return bool(self.codecs)

    def reseal(self, data: bytes, what: Text, source: str, target: str) -> bytes:
        """Move a stored payload to another place: open it at `source`, seal it for `target`.

        A payload stored before the codecs were configured is sealed as it is. No size check:
        the payload was accepted where it was.
        """
        raw = self.open(data, what, source)
        if not self.codecs:
            return raw
        for codec in self.codecs:
            raw = codec.encode(raw, target)
        return self._header + raw

    def encode(self, value: Any, what: Text, context: Text = "") -> bytes:
        """Encode `value` for storage: JSON, then codecs, then the size check."""
        return self.seal(self.to_json(value, what), what, context)

    def open(self, data: bytes, what: Text, context: Text = "") -> bytes:
        """Undo the codecs of a stored payload, returning its JSON bytes."""
        if not data or data[0] != _HEADER:
            return data
        what, context = _text(what), _text(context)
        end = data.find(_HEADER, 1)
        if end < 0:
            raise CorruptRowError(f"{what}: the payload's codec header is damaged")
        names = data[1:end].decode("ascii", "replace").split(",")
        body = data[end + 1 :]
        for name in reversed(names):
            codec = self._by_name.get(name)
            if codec is None:
                raise ConfigError(
                    f"{what} was stored through codec {name!r}, which this app does not have; "
                    "configure the same codecs (and keys) as the app that wrote it"
                )
            try:
                body = codec.decode(body, context)
            except CorruptRowError as exc:
                raise CorruptRowError(f"{what}: {exc}") from None
            except Exception as exc:
                raise CorruptRowError(
                    f"{what}: codec {name!r} cannot read the payload ({type(exc).__name__})"
                ) from None
        return body

    def decode(
        self, data: bytes, annotation: Any = Any, what: Text = "payload", context: Text = ""
    ) -> Any:
        """Decode a stored payload into `annotation`'s type."""
        raw = self.open(data, what, context)
        try:
            return adapter(annotation).validate_json(raw)
        except pydantic.ValidationError as exc:
            try:
                json.loads(raw)
            except ValueError:
                raise CorruptRowError(
                    f"{_text(what)} is not valid JSON; the row is damaged"
                ) from None
            raise SerializationError(
                f"{_text(what)} does not fit its declared type {_type_name(annotation)}: "
                f"{_first_line(exc)}. Fix the annotation or the value returned"
            ) from None


def codec_names(data: bytes) -> list[str]:
    """The names of the codecs a stored payload went through (none for plain JSON)."""
    if not data or data[0] != _HEADER:
        return []
    end = data.find(_HEADER, 1)
    return [] if end < 0 else data[1:end].decode("ascii", "replace").split(",")


def place(table: str, *identity: str | int | None) -> str:
    """A payload's row identity: the `context` its codecs bind (unambiguous, ASCII JSON).

    An encrypting codec binds it as associated data, so a payload copied into another row
    does not decode there. The helpers below name every place a payload is stored.
    """
    return json.dumps([table, *identity], separators=(",", ":"))


def run_place(run_id: str, field: str) -> str:
    """The place of a run's `input`, `output` or `error`."""
    return place("runs", run_id, field)


def step_place(run_id: str, seq: int, field: str) -> str:
    """The place of a journal entry's `output` or `error`."""
    return place("steps", run_id, seq, field)


def event_place(run_id: str, key: str) -> str:
    """The place of a run's event `key`."""
    return place("events", run_id, key)


def message_place(run_id: str, topic: str, key: str | None) -> str:
    """The place of a message to `run_id` on `topic`, identified by its `key`."""
    return place("messages", run_id, topic, key)


def canonical_json(value: Any) -> bytes:
    """JSON of `value` (already JSON-compatible) with sorted keys, for hashing."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


def _text(text: Text) -> str:
    return text if isinstance(text, str) else text()


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or repr(annotation)


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return " ".join(lines[:3])
