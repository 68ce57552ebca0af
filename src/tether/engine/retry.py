"""Retry policies for steps."""

from __future__ import annotations

import dataclasses
import random

from tether.errors import ConfigError, NonRetryableError, TetherError


@dataclasses.dataclass(frozen=True, slots=True)
class Retry:
    """How often, and how patiently, a failing step is tried again.

    The delay before attempt n+1 is `initial_delay * backoff ** (n - 1)`, capped at
    `max_delay`, spread by ±`jitter` (a fraction) so that many runs failing together do not
    retry in lockstep. An exception with a numeric `retry_after` attribute (seconds, as a
    provider's 429 carries) replaces the computed delay. Attempts are journaled before each
    backoff, so a crash while waiting neither resets the count nor shortens the wait.

        @app.step(retry=tether.Retry(attempts=5, backoff=2.0, max_delay=60.0))
        async def fetch(url: str) -> str: ...

    Attributes:
        attempts: the most attempts in all, the first included (1 = never retry).
        initial_delay: seconds before the second attempt.
        backoff: the factor by which each delay grows.
        max_delay: the longest computed delay.
        jitter: the fraction by which a delay is randomly lengthened or shortened.
        non_retryable: exception types that fail the step at once. `NonRetryableError`,
            and errors whose `retryable` attribute is False, always do.
    """

    attempts: int = 3
    initial_delay: float = 1.0
    backoff: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.1
    non_retryable: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError(f"Retry(attempts={self.attempts}) must be at least 1")
        if self.initial_delay < 0 or self.max_delay < 0:
            raise ConfigError("Retry delays must not be negative")
        if self.backoff < 1:
            raise ConfigError(f"Retry(backoff={self.backoff}) must be at least 1")
        if not 0 <= self.jitter < 1:
            raise ConfigError(f"Retry(jitter={self.jitter}) must be in [0, 1)")

    @classmethod
    def never(cls) -> Retry:
        """A policy of one attempt only."""
        return cls(attempts=1)

    def delay(self, attempt: int, error: BaseException) -> float | None:
        """Seconds to wait before the attempt after `attempt` failed with `error`, or None to stop.

        Args:
            attempt: the number of the attempt that failed (1 for the first).
            error: what it raised.
        """
        if attempt >= self.attempts or not self.is_retryable(error):
            return None
        hint = getattr(error, "retry_after", None)
        if isinstance(hint, int | float) and not isinstance(hint, bool) and hint >= 0:
            return float(hint)
        base = min(self.max_delay, self.initial_delay * self.backoff ** (attempt - 1))
        spread = base * self.jitter
        return max(0.0, base + random.uniform(-spread, spread))

    def is_retryable(self, error: BaseException) -> bool:
        """Whether `error` may be retried at all under this policy."""
        if isinstance(error, (NonRetryableError, *self.non_retryable)):
            return False
        flag = getattr(type(error), "retryable", None)
        if isinstance(error, TetherError):
            return bool(flag)
        return flag is not False


DEFAULT_RETRY = Retry()
"""The policy of steps that do not name one: three attempts, 1 s then 2 s apart."""
