"""Service awareness: circuit breakers and rate budgets shared by every process (both backends)."""

from __future__ import annotations

import asyncio
import bisect
import collections
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tether.agent.services import (
    CircuitOpenError,
    Permit,
    RateBudgetError,
    ServicePolicy,
    Services,
    counts_as_failure,
)
from tether.agent.types import ErrorKind, ProviderError
from tether.clock import FakeClock
from tether.errors import ConfigError, StepTimeoutError
from tether.settings import Settings
from tether.store import open_store
from tether.store.base import Store

from . import hammer

BREAKER = ServicePolicy(failure_threshold=3, window=10.0, cooldown=30.0, probe_timeout=20.0)


def services(store: Store, clock: FakeClock | None = None, **policies: ServicePolicy) -> Services:
    return Services(store, policies or {"llm": BREAKER}, clock=clock)


async def fail_times(s: Services, n: int, service: str = "llm") -> None:
    for _ in range(n):
        permit = await s.acquire(service)
        await s.release(permit, ok=False, failure=True)


# -- policy and errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("failure_threshold", 0),
        ("failure_threshold", 2.5),
        ("failure_threshold", True),
        ("window", 0),
        ("cooldown", -1.0),
        ("cooldown", math.inf),
        ("requests_per_minute", 0),
        ("tokens_per_minute", -10),
        ("probe_timeout", math.nan),
        ("rate_window", "60"),
    ],
)
def test_policy__bad_values_are_refused_by_name(field: str, value: object):
    with pytest.raises(ConfigError, match=f"ServicePolicy.{field} is"):
        ServicePolicy(**{field: value})  # type: ignore[arg-type]


def test_policy__defaults_and_limits():
    p = ServicePolicy()
    assert (p.failure_threshold, p.window, p.cooldown) == (5, 30.0, 30.0)
    assert (p.requests_per_minute, p.tokens_per_minute) == (None, None)
    limits = ServicePolicy(requests_per_minute=10, tokens_per_minute=500).limits()
    assert (limits.requests, limits.tokens, limits.rate_window) == (10, 500, 60.0)


def test_services__bad_policies_and_names_are_refused(store: Store):
    with pytest.raises(ConfigError, match="the policy of 'llm'"):
        Services(store, {"llm": {"cooldown": 3}})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="the default policy"):
        Services(store, default=None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="service name"):
        Services(store, {"": ServicePolicy()})


async def test_acquire_and_release__bad_arguments_are_refused(store: Store):
    s = services(store)
    with pytest.raises(ConfigError, match="service name"):
        await s.acquire("")
    with pytest.raises(ConfigError, match="tokens is -1"):
        await s.acquire("llm", tokens=-1)
    with pytest.raises(ConfigError, match="max_wait"):
        await s.acquire("llm", max_wait=-1)
    permit = await s.acquire("llm")
    with pytest.raises(ConfigError, match="both succeed and fail"):
        await s.release(permit, ok=True, failure=True)
    with pytest.raises(ConfigError, match="tokens_used"):
        await s.release(permit, ok=True, tokens_used=-3)


def test_counts_as_failure__outages_only():
    def provider(kind: ErrorKind) -> ProviderError:
        return ProviderError("x", kind=kind, provider="p")

    counted = {kind for kind in ErrorKind if counts_as_failure(provider(kind))}
    assert counted == {
        ErrorKind.OVERLOADED,
        ErrorKind.TIMEOUT,
        ErrorKind.SERVER_ERROR,
        ErrorKind.CONNECTION,
    }
    assert counts_as_failure(TimeoutError())
    assert counts_as_failure(ConnectionResetError())
    assert counts_as_failure(StepTimeoutError("slow"))
    assert not counts_as_failure(ValueError("bad input"))


# -- the breaker ---------------------------------------------------------------------------------


async def test_breaker__opens_after_the_threshold_and_refuses_at_once(store: Store):
    clock = FakeClock()
    s = services(store, clock)
    await fail_times(s, 2)
    assert s.state("llm").state == "closed"
    assert s.state("llm").failures == 2
    await fail_times(s, 1)
    clock.advance(5)
    with pytest.raises(CircuitOpenError) as refused:
        await s.acquire("llm")
    err = refused.value
    assert err.service == "llm"
    assert err.retry_at == pytest.approx(clock.now() - 5 + 30)
    assert err.retry_after == pytest.approx(25)
    assert "breaker is open" in str(err)
    assert "in 25.0s" in str(err)
    state = s.state("llm")
    assert (state.state, state.opened_until, state.probe_in_flight) == ("open", err.retry_at, False)


async def test_breaker__success_and_caller_errors_do_not_open_it(store: Store):
    s = services(store, FakeClock())
    for ok in (True, False, True, False, False):
        permit = await s.acquire("llm")
        await s.release(permit, ok=ok)  # a 4xx: neither ok nor a failure
    assert s.state("llm").failures == 0
    assert s.state("llm").state == "closed"


async def test_breaker__half_open_admits_exactly_one_probe_among_concurrent_acquirers(
    store: Store, make_store
):
    clock = FakeClock()
    await fail_times(services(store, clock), 3)
    clock.advance(31)
    fleet = [services(make_store(), clock) for _ in range(6)]  # each its own connection

    outcomes = await asyncio.gather(
        *(s.acquire("llm") for s in fleet for _ in range(2)), return_exceptions=True
    )

    permits = [o for o in outcomes if isinstance(o, Permit)]
    refused = [o for o in outcomes if isinstance(o, CircuitOpenError)]
    assert len(permits) == 1, outcomes
    assert len(refused) == 11, outcomes
    assert permits[0].probe
    assert all("a probe call is testing it" in str(e) for e in refused)
    assert fleet[0].state("llm").state == "half_open"
    assert fleet[0].state("llm").probe_in_flight


async def test_breaker__probe_success_closes_it(store: Store):
    clock = FakeClock()
    s = services(store, clock)
    await fail_times(s, 3)
    clock.advance(31)
    probe = await s.acquire("llm")
    assert probe.probe
    await s.release(probe, ok=True)
    assert s.state("llm").state == "closed"
    assert not (await s.acquire("llm")).probe


async def test_breaker__probe_failure_reopens_it(store: Store):
    clock = FakeClock()
    s = services(store, clock)
    await fail_times(s, 3)
    clock.advance(31)
    probe = await s.acquire("llm")
    await s.release(probe, ok=False, failure=True)
    with pytest.raises(CircuitOpenError) as refused:
        await s.acquire("llm")
    assert refused.value.retry_after == pytest.approx(30)
    clock.advance(30)
    assert (await s.acquire("llm")).probe


async def test_breaker__one_worker_discovers_the_outage_for_all(store: Store, make_store):
    clock = FakeClock()
    discoverer = services(store, clock)
    other = services(make_store(), clock)
    await fail_times(discoverer, 3)
    with pytest.raises(CircuitOpenError):
        await other.acquire("llm")


async def test_breaker__services_have_their_own_breakers_and_policies(store: Store):
    s = Services(store, {"flaky": ServicePolicy(failure_threshold=1)}, clock=FakeClock())
    await fail_times(s, 1, "flaky")
    with pytest.raises(CircuitOpenError):
        await s.acquire("flaky")
    await fail_times(s, 4, "other")  # the default policy: 5 failures
    assert s.state("other").state == "closed"


def test_state__of_an_unused_service(store: Store):
    s = Services(store, {"llm": ServicePolicy(requests_per_minute=7)})
    state = s.state("llm")
    assert (state.state, state.failures, state.window_requests) == ("closed", 0, 0)
    assert state.requests_per_minute == 7
    assert state.at > 0


# -- the budget ----------------------------------------------------------------------------------


async def test_budget__waits_for_room_then_admits(store: Store):
    s = Services(store, {"llm": ServicePolicy(requests_per_minute=2, rate_window=0.3)})
    first = await s.acquire("llm")
    await s.acquire("llm")
    third = await s.acquire("llm", max_wait=5)
    assert third.admitted_at >= first.admitted_at + 0.3
    print(f"waited {third.admitted_at - first.admitted_at:.3f}s for a 0.3s window")


async def test_budget__refuses_a_wait_longer_than_max_wait_at_once(store: Store):
    s = Services(store, {"llm": ServicePolicy(requests_per_minute=1)})
    await s.acquire("llm")
    started = time.monotonic()
    with pytest.raises(RateBudgetError) as refused:
        await s.acquire("llm", max_wait=5)
    elapsed = time.monotonic() - started
    assert refused.value.retry_after == pytest.approx(60, abs=1)
    assert refused.value.max_wait == 5
    assert "no room" in str(refused.value)
    print(f"refused after {elapsed:.3f}s (no sleep)")


async def test_budget__a_call_larger_than_the_budget_is_refused(store: Store):
    s = Services(store, {"llm": ServicePolicy(tokens_per_minute=100)})
    with pytest.raises(RateBudgetError, match="larger than its whole rate budget") as refused:
        await s.acquire("llm", tokens=101)
    assert refused.value.retry_after == math.inf


async def test_budget__tokens_used_replace_the_estimate(store: Store):
    clock = FakeClock()
    s = Services(store, {"llm": ServicePolicy(tokens_per_minute=1000)}, clock=clock)
    permit = await s.acquire("llm", tokens=800)
    with pytest.raises(RateBudgetError):
        await s.acquire("llm", tokens=300, max_wait=0)
    await s.release(permit, ok=True, tokens_used=200)
    assert s.state("llm").window_tokens == 200
    await s.acquire("llm", tokens=300, max_wait=0)
    assert s.state("llm").window_tokens == 500


async def test_budget__the_breaker_refuses_before_the_budget_waits(store: Store):
    clock = FakeClock()
    s = Services(
        store,
        {"llm": ServicePolicy(failure_threshold=1, requests_per_minute=1)},
        clock=clock,
    )
    await fail_times(s, 1)
    with pytest.raises(CircuitOpenError):
        await s.acquire("llm", max_wait=0)


# -- the fleet: several OS processes on one database ---------------------------------------------


def most_in_any_window(times: list[float], weights: list[int], window: float) -> int:
    """The largest total weight of entries admitted within any `window` seconds."""
    order = sorted(range(len(times)), key=times.__getitem__)
    ts = [times[i] for i in order]
    ws = [weights[i] for i in order]
    best = 0
    for i, t in enumerate(ts):
        j = bisect.bisect_left(ts, t + window)  # entries in [t, t + window)
        best = max(best, sum(ws[i:j]))
    return best


@pytest.mark.timeout(120)
def test_fleet__rate_budgets_hold_across_processes(settings: Settings, tmp_path: Path):
    store = open_store(settings)
    store.migrate()
    log = tmp_path / "admitted.csv"
    env = dict(
        os.environ,
        TETHER_DATABASE_URL=settings.database_url or "",
        TETHER_PG_SCHEMA=settings.pg_schema,
        PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[2]), *sys.path]),
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.agent.hammer", str(log), "4"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parents[2],
        )
        for _ in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err[-2000:]
    rows = [line.split(",") for line in log.read_text().splitlines()]
    store.close()
    by_service: dict[str, list[tuple[float, int]]] = collections.defaultdict(list)
    for service, at, used, _pid in rows:
        by_service[service].append((float(at), int(used)))
    assert len({r[3] for r in rows}) == 4  # every process was admitted some calls
    req, tok = by_service["req"], by_service["tok"]
    most_requests = most_in_any_window([t for t, _ in req], [1] * len(req), hammer.WINDOW)
    most_tokens = most_in_any_window([t for t, _ in tok], [u for _, u in tok], hammer.WINDOW)
    assert most_requests <= hammer.REQUESTS
    assert most_tokens <= hammer.TOKENS
    span = max(t for t, _ in req) - min(t for t, _ in req)
    print(
        f"{settings.database_url and settings.database_url.split(':')[0]}: {len(req)} requests "
        f"over {span:.2f}s (budget {hammer.REQUESTS}/{hammer.WINDOW}s, busiest window "
        f"{most_requests}); {len(tok)} token calls, busiest window {most_tokens} tokens "
        f"(budget {hammer.TOKENS})"
    )
