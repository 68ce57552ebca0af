"""Where tether reads the time.

Store and engine code never call `time.time()` themselves: they take `now` from a `Clock`, so
leases, retries and deadlines can be driven by a `FakeClock` in tests, on both databases.
Times are Unix seconds as floats.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """A source of wall-clock time in Unix seconds."""

    def now(self) -> float:
        """Return the current time."""
        ...


class SystemClock:
    """The machine's clock, optionally corrected by an offset (for example to the database's)."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def now(self) -> float:
        """Return `time.time()` plus the offset."""
        return time.time() + self.offset


class FakeClock:
    """A clock that moves only when told to; thread-safe."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        """Return the current fake time."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by `seconds` and return the new time."""
        with self._lock:
            self._now += seconds
            return self._now
