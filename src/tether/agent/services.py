"""Service awareness: each provider's and tool's health and rate budget, shared by the fleet.

A `Services` guards calls to named services (a model provider, a tool's API). Before a call,
`acquire` asks the store, which every worker process shares, for a `Permit`:

- the service's **circuit breaker** refuses at once with `CircuitOpenError` while the service
  is known to be failing (so no request goes to it and nobody waits out its timeouts); once
  the cooldown has passed it lets exactly one call through, fleet-wide, as a probe, whose
  success closes the breaker and whose failure opens it for another cooldown;
- the service's **rate budget** (requests and tokens per minute) admits the call if it fits
  the sliding window shared by all processes, or `acquire` waits (a plain `asyncio.sleep`,
  not a durable wait) until it does, up to `max_wait`, then raises `RateBudgetError`.

After the call, `release` reports how it went: `failure=True` for errors that say the
service is unwell (timeouts, 5xx, overloaded, connection failures: see `counts_as_failure`),
never for the caller's own mistakes (4xx); `ok=True` for a success; `tokens_used` replaces the
token estimate reserved at `acquire`.

Time is the database's: on PostgreSQL the server's clock, so machines whose clocks disagree
still measure cooldowns and windows alike; on SQLite the machine's. `Permit.admitted_at` and
`CircuitOpenError.retry_at` are on that clock; `retry_after` is the same moment as seconds
from the decision.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import math
import random
import time
import types
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from tether.agent.types import ErrorKind, ProviderError
from tether.clock import Clock
from tether.engine import journal
from tether.errors import ConfigError, StepTimeoutError, TetherError
from tether.store import base

log = logging.getLogger("tether.agent.services")
T = TypeVar("T")

STORE_RETRY_TIMEOUT = 30.0
"""Seconds a service's store call is retried while the database is unavailable."""

OUTAGE_KINDS = frozenset(
    {ErrorKind.OVERLOADED, ErrorKind.TIMEOUT, ErrorKind.SERVER_ERROR, ErrorKind.CONNECTION}
)
"""Provider failures that say the provider is unwell, and so count toward opening its breaker.

Not rate limiting (the provider is up; the budget is the cure), nor authentication, bad
requests, context length or content filtering (the caller's request, not the service, is at
fault).
"""


@dataclasses.dataclass(frozen=True)
class ServicePolicy:
    """How one service is guarded.

    Attributes:
        failure_threshold: failures within `window` seconds that open the circuit breaker.
        window: seconds over which failures are counted (a sliding window).
        cooldown: seconds an open breaker refuses every call before it lets one probe through.
        requests_per_minute: most calls admitted in any `rate_window` seconds, fleet-wide;
            None for no limit.
        tokens_per_minute: most tokens (estimated at `acquire`, corrected at `release`) in any
            `rate_window` seconds, fleet-wide; None for no limit.
        probe_timeout: seconds after which a probe that has not reported (its process died) is
            given up and another call may probe. Keep it above the calls' own timeout.
        rate_window: the budgets' window in seconds: 60 for per-minute quotas. A shorter window
            counts the same numbers over less time (for tests, or quotas given per second).

    Raises:
        ConfigError: a value out of range; the message names the field.
    """

    failure_threshold: int = 5
    window: float = 30.0
    cooldown: float = 30.0
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    probe_timeout: float = 60.0
    rate_window: float = 60.0

    def __post_init__(self) -> None:
        _positive_int("failure_threshold", self.failure_threshold)
        for name in ("window", "cooldown", "probe_timeout", "rate_window"):
            _positive_seconds(name, getattr(self, name))
        for name in ("requests_per_minute", "tokens_per_minute"):
            if getattr(self, name) is not None:
                _positive_int(name, getattr(self, name), "or None for no limit")

    def limits(self) -> base.ServiceLimits:
        """This policy as the store's `ServiceLimits`."""
        return base.ServiceLimits(
            failure_threshold=self.failure_threshold,
            failure_window=self.window,
            cooldown=self.cooldown,
            probe_timeout=self.probe_timeout,
            requests=self.requests_per_minute,
            tokens=self.tokens_per_minute,
            rate_window=self.rate_window,
        )


def _positive_int(name: str, value: object, extra: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"ServicePolicy.{name} is {value!r}; it must be a whole number of 1 or more"
            + (f" {extra}" if extra else "")
        )


def _positive_seconds(name: str, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(
            f"ServicePolicy.{name} is {value!r}; it must be a number of seconds above 0"
        )


DEFAULT_POLICY = ServicePolicy()
_NO_POLICIES: Mapping[str, ServicePolicy] = types.MappingProxyType({})


class CircuitOpenError(TetherError):
    """The service's circuit breaker is open: it is failing, and no call goes to it for now.

    Attributes:
        service: the service.
        retry_at: when a call may be tried again (the database's clock, Unix seconds).
        retry_after: the same moment, as seconds from when the breaker refused.
        probing: the breaker is half-open and its one probe call is out (`retry_at` is then
            when that probe is given up).
    """

    retryable = True

    def __init__(
        self, service: str, retry_at: float, *, retry_after: float, probing: bool = False
    ) -> None:
        when = _utc(retry_at)
        if probing:
            detail = (
                f"a probe call is testing it now; if it has not reported by {when} (in "
                f"{retry_after:.1f}s) another call may probe"
            )
        else:
            detail = (
                "it failed repeatedly and its circuit breaker is open; no call goes to it "
                f"until {when} (in {retry_after:.1f}s), when one probe call is let through"
            )
        super().__init__(
            f"service {service!r} is unavailable: {detail}. Fail over to another service, or "
            "try again after that time (`tether services list` shows every breaker)"
        )
        self.service = service
        self.retry_at = retry_at
        self.retry_after = retry_after
        self.probing = probing


class RateBudgetError(TetherError):
    """The service's rate budget has no room for the call within the time the caller allowed.

    Attributes:
        service: the service.
        retry_after: seconds until the budget has room (inf: the call alone exceeds it).
        max_wait: the wait the caller allowed.
    """

    retryable = True

    def __init__(self, service: str, retry_after: float, max_wait: float, detail: str) -> None:
        super().__init__(f"service {service!r}: {detail}")
        self.service = service
        self.retry_after = retry_after
        self.max_wait = max_wait


@dataclasses.dataclass(frozen=True)
class Permit:
    """Leave to make one call to a service; hand it back to `Services.release` afterwards.

    Attributes:
        service: the service.
        id: the call's id in the store.
        tokens: the tokens reserved for it (the estimate given to `acquire`).
        probe: the call is the half-open breaker's one probe: its outcome decides the breaker.
        admitted_at: when it was admitted (the database's clock).
    """

    service: str
    id: str
    tokens: int
    probe: bool
    admitted_at: float


@dataclasses.dataclass(frozen=True)
class ServiceState:
    """A service as every process sees it, for display.

    Attributes:
        service: the service.
        state: "closed" (calls go), "open" (calls refused) or "half_open" (one probe goes).
        failures: failures counted within the failure window (closed breaker).
        opened_until: when an open breaker lets a probe through; for a half-open one with a
            probe out, when that probe is given up. None when closed.
        probe_in_flight: a probe call is out.
        window_requests: calls admitted within the rate window ending `at`.
        window_tokens: tokens reserved or used within that window.
        requests_per_minute: the request budget (None: no limit).
        tokens_per_minute: the token budget (None: no limit).
        at: when this was read (the database's clock).
        rate_window: the budgets' window in seconds.
    """

    service: str
    state: str
    failures: int
    opened_until: float | None
    probe_in_flight: bool
    window_requests: int
    window_tokens: int
    requests_per_minute: int | None
    tokens_per_minute: int | None
    at: float
    rate_window: float = 60.0


def counts_as_failure(error: BaseException) -> bool:
    """Whether `error` says the service is unwell, and should count toward its breaker.

    True for provider errors of `OUTAGE_KINDS`, timeouts and connection errors; False for
    anything that is the caller's fault (4xx, bad requests, authentication) or rate limiting.
    """
    if isinstance(error, ProviderError):
        return error.kind in OUTAGE_KINDS
    return isinstance(error, TimeoutError | ConnectionError | StepTimeoutError)


class Services:
    """Circuit breakers and rate budgets for named services, shared through the store.

    Args:
        store: the database every process shares.
        policies: each service's policy, by name.
        default: the policy of services not in `policies`.
        clock: where to read the time; None (the default) lets the store read the database's
            clock, which is what a fleet should use. A `FakeClock` drives tests.

    Raises:
        ConfigError: a policy that is not a `ServicePolicy`, or an empty service name.
    """

    def __init__(
        self,
        store: base.Store,
        policies: Mapping[str, ServicePolicy] = _NO_POLICIES,
        default: ServicePolicy = DEFAULT_POLICY,
        *,
        clock: Clock | None = None,
    ) -> None:
        given: dict[str, object] = {**policies, "": default}
        for name, policy in given.items():
            if not isinstance(policy, ServicePolicy):
                which = f"the policy of {name!r}" if name else "the default policy"
                raise ConfigError(f"{which} is {policy!r}; give a tether.agent.ServicePolicy")
        for name in policies:
            _check_name(name)
        self.store = store
        self.policies = dict(policies)
        self.default = default
        self.clock = clock

    def policy(self, service: str) -> ServicePolicy:
        """The policy that guards `service`."""
        return self.policies.get(service, self.default)

    async def acquire(self, service: str, *, tokens: int = 0, max_wait: float = 60.0) -> Permit:
        """Wait for leave to call `service` once, reserving `tokens` of its token budget.

        Args:
            service: the service's name.
            tokens: the call's estimated tokens (prompt plus expected output).
            max_wait: the longest the caller accepts to wait for room in the rate budget.

        Raises:
            CircuitOpenError: the service's breaker is open, or its probe is out (at once,
                without waiting).
            RateBudgetError: the budget will not have room within `max_wait` seconds, or the
                call alone is larger than the whole budget.
            ConfigError: an empty service name, negative tokens or a negative `max_wait`.
        """
        _check_name(service)
        _check_count("tokens", tokens, "the call's estimate")
        if not math.isfinite(max_wait) or max_wait < 0:
            raise ConfigError(f"max_wait is {max_wait!r}; give seconds, 0 or more")
        call = base.ServiceCall(service, uuid.uuid4().hex, self.policy(service).limits(), 1, tokens)
        deadline = time.monotonic() + max_wait
        while True:
            admission = await self._db(self.store.admit_service_call, call, self._now())
            if admission.admitted:
                if admission.probe:
                    log.info("service %r: call %s goes as the breaker's probe", service, call.id)
                return Permit(service, call.id, tokens, admission.probe, admission.now)
            wait = self._refused(call, admission, max_wait)
            if time.monotonic() + wait > deadline:
                raise RateBudgetError(
                    service,
                    wait,
                    max_wait,
                    f"its rate budget ({_budget(call.limits)}) has no room for "
                    f"{_asked(call)} for another {wait:.2f}s, longer than the {max_wait:g}s "
                    "allowed; raise max_wait, spread the calls out, or raise the budget if "
                    "the provider's quota allows",
                )
            await asyncio.sleep(wait + random.uniform(0, min(wait * 0.05, 0.01)))

    def _refused(
        self, call: base.ServiceCall, admission: base.ServiceAdmission, max_wait: float
    ) -> float:
        """Raise for a breaker's refusal or a call that can never fit; else the wait."""
        if admission.retry_at is not None:
            raise CircuitOpenError(
                call.service,
                admission.retry_at,
                retry_after=max(admission.retry_at - admission.now, 0.0),
                probing=admission.service.probe_id is not None,
            )
        wait = admission.wait if admission.wait is not None else _whole_window(call)
        if math.isinf(wait):
            raise RateBudgetError(
                call.service,
                wait,
                max_wait,
                f"a call of {_asked(call)} is larger than its whole rate budget "
                f"({_budget(call.limits)}); split the call, or raise the budget",
            )
        return wait

    async def release(
        self, permit: Permit, *, ok: bool, failure: bool = False, tokens_used: int = 0
    ) -> None:
        """Report how the permitted call went.

        Args:
            permit: what `acquire` returned.
            ok: the call succeeded; a probe's success closes the breaker.
            failure: the call failed in a way that says the service is unwell (timeout, 5xx,
                overloaded, connection): it counts toward opening the breaker, and a probe's
                failure re-opens it. Leave both False for failures that are the caller's
                (4xx) or a call abandoned: the breaker is not moved.
            tokens_used: the tokens the call actually used; they replace the estimate
                reserved at `acquire` in the token budget.

        Raises:
            ConfigError: both `ok` and `failure`, or negative `tokens_used`.
        """
        if ok and failure:
            raise ConfigError("a call cannot both succeed and fail: give ok=True or failure=True")
        _check_count("tokens_used", tokens_used, "the tokens the call used")
        outcome = base.CALL_FAILURE if failure else base.CALL_OK if ok else base.CALL_NEUTRAL
        limits = self.policy(permit.service).limits()
        call = base.ServiceCall(permit.service, permit.id, limits, 1, permit.tokens)
        row = await self._db(
            self.store.finish_service_call, call, outcome, tokens_used, self._now()
        )
        _log_transition(permit, outcome, row)

    def state(self, service: str) -> ServiceState:
        """The service's breaker and budget use as every process sees them (a blocking read)."""
        _check_name(service)
        rows = self.store.list_services([service], self._now())
        policy = self.policy(service)
        if not rows:
            at = self._now()
            return ServiceState(
                service,
                base.BREAKER_CLOSED,
                0,
                None,
                False,
                0,
                0,
                policy.requests_per_minute,
                policy.tokens_per_minute,
                self.store.database_time() if at is None else at,
                policy.rate_window,
            )
        return state_of(rows[0])

    def _now(self) -> float | None:
        return None if self.clock is None else self.clock.now()

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        """Call a blocking store method on a thread, retrying while the database is down.

        Both calls are idempotent per call id, so a retry after a lost acknowledgement
        neither reserves nor counts twice.
        """
        return await asyncio.to_thread(
            journal.retrying, lambda: fn(*args), STORE_RETRY_TIMEOUT, fn.__name__
        )


def state_of(row: base.ServiceRow) -> ServiceState:
    """A store's `ServiceRow` as a `ServiceState`."""
    limits = row.limits
    return ServiceState(
        service=row.name,
        state=row.state,
        failures=row.failures,
        opened_until=None if row.state == base.BREAKER_CLOSED else row.retry_at,
        probe_in_flight=row.probe_id is not None,
        window_requests=row.window_requests,
        window_tokens=row.window_tokens,
        requests_per_minute=None if limits is None else limits.requests,
        tokens_per_minute=None if limits is None else limits.tokens,
        at=row.now,
        rate_window=(limits or base.ServiceLimits()).rate_window,
    )


def _whole_window(call: base.ServiceCall) -> float:
    """The wait when a store gave none: a whole window (never expected; kept safe)."""
    return call.limits.rate_window


def _log_transition(permit: Permit, outcome: str, row: base.ServiceRow) -> None:
    if outcome == base.CALL_FAILURE and row.state == base.BREAKER_OPEN and row.opened_at == row.now:
        log.warning(
            "service %r is failing: its circuit breaker opened; calls are refused until %s",
            permit.service,
            _utc(row.retry_at or row.now),
        )
    elif permit.probe and outcome == base.CALL_OK and row.state == base.BREAKER_CLOSED:
        log.info("service %r answered its probe: its circuit breaker closed", permit.service)


def _check_name(service: object) -> None:
    if not isinstance(service, str) or not service:
        raise ConfigError(f"service name {service!r} is not usable; give a non-empty string")


def _check_count(name: str, value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} is {value!r}; give {what}, 0 or more")


def _asked(call: base.ServiceCall) -> str:
    return f"1 request and {call.tokens} tokens" if call.tokens else "1 request"


def _budget(limits: base.ServiceLimits) -> str:
    parts = []
    if limits.requests is not None:
        parts.append(f"{limits.requests} requests")
    if limits.tokens is not None:
        parts.append(f"{limits.tokens} tokens")
    return " and ".join(parts) + f" per {limits.rate_window:g}s"


def _utc(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
