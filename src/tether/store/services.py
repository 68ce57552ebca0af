"""The circuit breaker and rate budget rules both stores apply to a service's row.

A store opens a transaction, hands `admit_call` or `finish_call` a `Txn` (its primitive
reads and writes on that transaction's connection), and commits what they did. The rules and
the order of operations live here once, so SQLite and PostgreSQL decide alike; no function
here reads the clock or touches a database itself.

Order within a transaction: the service's row is locked (created if missing) and only then is
the clock read, so decisions on one service are taken in the order of the clock; every read
of its calls follows the lock, so it sees every earlier decision on that service.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from typing import Protocol

from tether.errors import ConfigError, CorruptRowError
from tether.store.base import (
    BREAKER_CLOSED,
    BREAKER_HALF_OPEN,
    BREAKER_OPEN,
    CALL_FAILURE,
    CALL_NEUTRAL,
    CALL_OK,
    ServiceAdmission,
    ServiceCall,
    ServiceLimits,
    ServiceRow,
)

OUTCOMES = (CALL_OK, CALL_FAILURE, CALL_NEUTRAL)

MIN_WAIT = 0.001
"""The shortest wait a refused reservation is told to make (clock rounding aside)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Breaker:
    """A service's breaker as stored: `failures` are the times of the recent failures."""

    state: str = BREAKER_CLOSED
    failures: tuple[float, ...] = ()
    opened_at: float | None = None
    retry_at: float | None = None
    probe_id: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """The breaker's answer to a call: go (perhaps as the probe), or not before `retry_at`."""

    admit: bool
    probe: bool = False
    retry_at: float | None = None


def admit(b: Breaker, now: float) -> Verdict:
    """May a call go through `b` at `now`?

    Closed: yes. Open: not before its cooldown ends; then, as the probe. Half-open: as the
    probe if none is out or the one out has timed out; otherwise not before it times out.
    """
    if b.state == BREAKER_CLOSED:
        return Verdict(admit=True)
    due = b.retry_at is None or now >= b.retry_at
    if b.state == BREAKER_OPEN and not due:
        return Verdict(admit=False, retry_at=b.retry_at)
    if b.state == BREAKER_HALF_OPEN and b.probe_id is not None and not due:
        return Verdict(admit=False, retry_at=b.retry_at)
    return Verdict(admit=True, probe=True)


def take_probe(b: Breaker, now: float, call_id: str, limits: ServiceLimits) -> Breaker:
    """`b` once call `call_id` has gone out as its probe."""
    return dataclasses.replace(
        b, state=BREAKER_HALF_OPEN, probe_id=call_id, retry_at=now + limits.probe_timeout
    )


def finish(b: Breaker, now: float, call_id: str, outcome: str, limits: ServiceLimits) -> Breaker:
    """`b` once call `call_id` has ended with `outcome` (see `Store.finish_service_call`)."""
    is_probe = b.state == BREAKER_HALF_OPEN and b.probe_id == call_id
    if is_probe:
        if outcome == CALL_OK:
            return Breaker()
        if outcome == CALL_FAILURE:
            return _opened(b, now, limits)
        return dataclasses.replace(b, probe_id=None)  # neutral: the next call probes
    if b.state != BREAKER_CLOSED or outcome != CALL_FAILURE:
        return b
    failures = (*recent(b, now, limits), now)[-limits.failure_threshold :]
    if len(failures) >= limits.failure_threshold:
        return _opened(b, now, limits)
    return dataclasses.replace(b, failures=failures)


def _opened(b: Breaker, now: float, limits: ServiceLimits) -> Breaker:
    return Breaker(BREAKER_OPEN, (), now, now + limits.cooldown, None)


def recent(b: Breaker, now: float, limits: ServiceLimits | None) -> tuple[float, ...]:
    """The failures still within the failure window at `now`."""
    window = (limits or ServiceLimits()).failure_window
    return tuple(t for t in b.failures if t > now - window)


def state_at(b: Breaker, now: float) -> str:
    """The state as a caller would meet it: an open breaker past its cooldown is half-open."""
    if b.state == BREAKER_OPEN and b.retry_at is not None and now >= b.retry_at:
        return BREAKER_HALF_OPEN
    return b.state


def shortfall(used: int, asked: int, limit: int | None) -> float:
    """How much must leave the window before `asked` more fits (0: it fits; inf: never)."""
    if limit is None or used + asked <= limit:
        return 0
    if asked > limit:
        return math.inf
    return used + asked - limit


def wait_until(freed_at: float | None, now: float, limits: ServiceLimits) -> float:
    """Seconds to wait for a reservation made at `freed_at` to leave the window."""
    if freed_at is None:  # the window's own reservations do not free enough: actual use
        return limits.rate_window  # overshot the budget, wait a whole window
    return max(freed_at + limits.rate_window - now, MIN_WAIT)


def row(
    name: str,
    b: Breaker,
    usage: tuple[int, int],
    limits: ServiceLimits | None,
    now: float,
) -> ServiceRow:
    """The `ServiceRow` for display and answers."""
    return ServiceRow(
        name=name,
        state=state_at(b, now),
        failures=len(recent(b, now, limits)) if b.state == BREAKER_CLOSED else 0,
        opened_at=b.opened_at,
        retry_at=b.retry_at,
        probe_id=b.probe_id,
        window_requests=usage[0],
        window_tokens=usage[1],
        limits=limits,
        now=now,
    )


def window_start(limits: ServiceLimits | None, now: float) -> float:
    """The budget's window is the times after this one, up to `now`."""
    return now - (limits or ServiceLimits()).rate_window


def encode_limits(limits: ServiceLimits) -> str:
    """Limits as stored: JSON."""
    return json.dumps(dataclasses.asdict(limits), sort_keys=True)


def decode_limits(text: str | None) -> ServiceLimits | None:
    """Limits from their stored JSON."""
    if text is None:
        return None
    try:
        return ServiceLimits(**json.loads(text))
    except (TypeError, ValueError) as exc:
        raise CorruptRowError(f"a service's stored limits cannot be read: {exc}") from None


def validate(call: ServiceCall) -> None:
    """Refuse a call whose counts are negative (the budget would grow)."""
    if call.requests < 0 or call.tokens < 0:
        raise ConfigError(
            f"a call to {call.service!r} asks for {call.requests} requests and {call.tokens} "
            "tokens; both must be zero or more"
        )


def failures_of(values: Sequence[float] | None) -> tuple[float, ...]:
    """Stored failure times as a tuple."""
    return tuple(float(v) for v in values or ())


# -- the transactions ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Locked:
    """A service's row, locked for the rest of the transaction, and the clock read after."""

    breaker: Breaker
    limits: ServiceLimits | None
    now: float


class Txn(Protocol):
    """A store's primitive operations on services, inside one transaction."""

    def lock(self, name: str, now: float | None) -> Locked:
        """Create the service's row if missing, lock it, then read the clock (unless `now`)."""
        ...

    def call_at(self, call_id: str) -> float | None:
        """When the call with this id was admitted, if it is still recorded."""
        ...

    def prune(self, name: str, before: float) -> None:
        """Forget the service's calls admitted at or before `before`."""
        ...

    def usage(self, name: str, since: float) -> tuple[int, int]:
        """(requests, tokens) of the service's calls admitted after `since`."""
        ...

    def freed_at(self, name: str, since: float, column: str, need: float) -> float | None:
        """When the earliest calls after `since` add up to `need` of `column` (oldest first)."""
        ...

    def add_call(self, call: ServiceCall, at: float) -> None:
        """Record an admitted call."""
        ...

    def end_call(self, call_id: str, outcome: str, tokens: int | None, now: float) -> str:
        """Mark the call finished, to count in the window from `now` on.

        Returns 'ended', 'ended before' (nothing done) or 'unknown'.
        """
        ...

    def save(self, name: str, b: Breaker, limits: ServiceLimits, now: float) -> None:
        """Write the service's breaker and limits."""
        ...


def admit_call(txn: Txn, call: ServiceCall, now: float | None) -> ServiceAdmission:
    """`Store.admit_service_call` on a store's transaction."""
    validate(call)
    locked = txn.lock(call.service, now)
    b, t, limits = locked.breaker, locked.now, call.limits
    since = window_start(limits, t)
    if txn.call_at(call.id) is not None:  # admitted before: the acknowledgement was lost
        state = row(call.service, b, txn.usage(call.service, since), limits, t)
        return ServiceAdmission(True, t, state, probe=b.probe_id == call.id)
    txn.prune(call.service, since)
    used = txn.usage(call.service, since)
    verdict = admit(b, t)
    wait = _budget_wait(txn, call, used, t) if verdict.admit else 0.0
    if verdict.admit and not wait:
        txn.add_call(call, t)
        used = (used[0] + call.requests, used[1] + call.tokens)
        if verdict.probe:
            b = take_probe(b, t, call.id, limits)
    if b != locked.breaker or limits != locked.limits:
        txn.save(call.service, b, limits, t)
    state = row(call.service, b, used, limits, t)
    if not verdict.admit:
        return ServiceAdmission(False, t, state, retry_at=verdict.retry_at)
    if wait:
        return ServiceAdmission(False, t, state, wait=wait)
    return ServiceAdmission(True, t, state, probe=verdict.probe)


def early_refusal(current: ServiceRow, call_id: str) -> ServiceAdmission | None:
    """The breaker's refusal, read without the lock, or None if only the lock can decide.

    During an outage every call is refused; answering from a plain read spares each refusal a
    write and a commit. It is only ever as stale as a call made a moment earlier: a breaker
    leaves these states only when `retry_at` passes or under the lock, by the probe's report.
    """
    if current.probe_id == call_id:  # this call's own probe (admitted, its answer lost)
        return None
    probe_out = current.state == BREAKER_HALF_OPEN and current.probe_id is not None
    blocked = current.state == BREAKER_OPEN or probe_out
    if blocked and current.retry_at is not None and current.now < current.retry_at:
        return ServiceAdmission(False, current.now, current, retry_at=current.retry_at)
    return None


def _budget_wait(txn: Txn, call: ServiceCall, used: tuple[int, int], now: float) -> float:
    """Seconds until `call` fits the budget beside `used`: 0 if it fits now, inf if never."""
    limits = call.limits
    since = window_start(limits, now)
    wait = 0.0
    for column, in_use, asked, limit in (
        ("requests", used[0], call.requests, limits.requests),
        ("tokens", used[1], call.tokens, limits.tokens),
    ):
        need = shortfall(in_use, asked, limit)
        if need == math.inf:
            return math.inf
        if need:
            freed = txn.freed_at(call.service, since, column, need)
            wait = max(wait, wait_until(freed, now, limits))
    return wait


def finish_call(
    txn: Txn, call: ServiceCall, outcome: str, tokens_used: int | None, now: float | None
) -> ServiceRow:
    """`Store.finish_service_call` on a store's transaction."""
    if outcome not in OUTCOMES:
        raise ConfigError(f"outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
    if tokens_used is not None and tokens_used < 0:
        raise ConfigError(f"tokens_used is {tokens_used}; it must be zero or more")
    locked = txn.lock(call.service, now)
    b, t = locked.breaker, locked.now
    # A call that left the rate window was forgotten: its outcome still counts, once.
    if txn.end_call(call.id, outcome, tokens_used, t) != "ended before":
        b = finish(b, t, call.id, outcome, call.limits)
    if b != locked.breaker or call.limits != locked.limits:
        txn.save(call.service, b, call.limits, t)
    usage = txn.usage(call.service, window_start(call.limits, t))
    return row(call.service, b, usage, call.limits, t)
