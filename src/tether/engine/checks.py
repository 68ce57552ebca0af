"""Checks of arguments users pass to tether, each raising `ConfigError` that says what fits.

They take `object` so that they also catch what a type checker would not (untyped callers).
"""

from __future__ import annotations

import datetime

from tether.errors import ConfigError


def text(value: object, what: str, *, most: int = 200) -> str:
    """A non-empty string of at most `most` characters."""
    if not isinstance(value, str) or not value or len(value) > most:
        raise ConfigError(f"{what} must be a string of 1 to {most} characters, not {value!r}")
    if not storable(value):
        raise ConfigError(
            f"{what} holds a NUL character or a lone surrogate, which databases cannot store "
            f"as text: {value!r}; use printable characters"
        )
    return value


def storable(value: str) -> bool:
    """Whether `value` can be stored as text by both databases (no NUL, valid UTF-8)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def seconds(value: object, what: str, *, positive: bool = False) -> float:
    """A number of seconds or a `timedelta` (negative durations count as 0)."""
    if isinstance(value, datetime.timedelta):
        number = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    else:
        raise ConfigError(f"{what} must be seconds (a number) or a timedelta, not {value!r}")
    if positive and number <= 0:
        raise ConfigError(f"{what} must be a positive number of seconds, not {value!r}")
    return max(0.0, number)


def count(value: object, what: str, *, least: int = 1) -> int:
    """An integer of at least `least`."""
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ConfigError(f"{what} must be an integer of at least {least}, not {value!r}")
    return value


def aware(value: object, what: str) -> datetime.datetime:
    """A timezone-aware datetime."""
    if not isinstance(value, datetime.datetime) or value.tzinfo is None:
        raise ConfigError(
            f"{what} must be a timezone-aware datetime, not {value!r}; for example "
            "datetime.datetime(2026, 12, 1, 9, 0, tzinfo=datetime.UTC)"
        )
    return value
