"""Contract: services' circuit breakers and rate budgets (both backends)."""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Callable

import pytest

from tether.errors import ConfigError
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
    Store,
)

from .helpers import NOW

BREAKER = ServiceLimits(failure_threshold=3, failure_window=10.0, cooldown=30.0, probe_timeout=20.0)


def call(
    limits: ServiceLimits = BREAKER, *, service: str = "llm", tokens: int = 0, requests: int = 1
) -> ServiceCall:
    return ServiceCall(service, uuid.uuid4().hex, limits, requests=requests, tokens=tokens)


def admitted(store: Store, c: ServiceCall, now: float | None) -> ServiceAdmission:
    a = store.admit_service_call(c, now)
    assert a.admitted, a
    return a


def fail(store: Store, now: float, limits: ServiceLimits = BREAKER, service: str = "llm") -> None:
    c = call(limits, service=service)
    admitted(store, c, now)
    store.finish_service_call(c, CALL_FAILURE, now=now)


def open_breaker(store: Store, at: float = NOW) -> None:
    for i in range(BREAKER.failure_threshold):
        fail(store, at + i * 0.1)


def state(store: Store, now: float, service: str = "llm"):
    [row] = store.list_services([service], now)
    return row


# -- the breaker ---------------------------------------------------------------------------------


def test_first_call__creates_a_closed_service_and_counts_it(store: Store):
    assert store.list_services() == []
    a = admitted(store, call(), NOW)
    assert not a.probe
    assert a.now == NOW
    row = state(store, NOW)
    assert (row.name, row.state, row.failures, row.window_requests) == ("llm", "closed", 0, 1)
    assert row.limits == BREAKER


def test_failures__open_the_breaker_at_the_threshold(store: Store):
    fail(store, NOW)
    fail(store, NOW + 1)
    assert state(store, NOW + 1).failures == 2
    assert state(store, NOW + 1).state == BREAKER_CLOSED
    fail(store, NOW + 2)
    row = state(store, NOW + 2)
    assert (row.state, row.opened_at, row.retry_at) == (BREAKER_OPEN, NOW + 2, NOW + 32)


def test_failures__outside_the_window_do_not_count(store: Store):
    fail(store, NOW)
    fail(store, NOW + 5)
    fail(store, NOW + 10.5)  # the first left the 10-second window
    assert state(store, NOW + 10.5).state == BREAKER_CLOSED
    assert state(store, NOW + 10.5).failures == 2
    fail(store, NOW + 11)
    assert state(store, NOW + 11).state == BREAKER_OPEN


def test_success_and_neutral__do_not_count_as_failures(store: Store):
    for i, outcome in enumerate([CALL_FAILURE, CALL_OK, CALL_NEUTRAL, CALL_FAILURE, CALL_OK]):
        c = call()
        admitted(store, c, NOW + i)
        store.finish_service_call(c, outcome, now=NOW + i)
    assert state(store, NOW + 5).state == BREAKER_CLOSED
    assert state(store, NOW + 5).failures == 2


def test_open__refuses_until_the_cooldown_with_the_time_to_retry(store: Store):
    open_breaker(store)
    opened = NOW + 0.2
    refused = store.admit_service_call(call(), NOW + 10)
    assert not refused.admitted
    assert refused.retry_at == pytest.approx(opened + 30)
    assert refused.wait is None
    assert refused.service.state == BREAKER_OPEN
    assert state(store, NOW + 10).window_requests == 3  # refusals reserve nothing


def test_half_open__admits_one_probe_and_refuses_the_others(store: Store):
    open_breaker(store)
    after = NOW + 40
    assert state(store, after).state == BREAKER_HALF_OPEN  # due: the next call probes
    probe = call()
    first = admitted(store, probe, after)
    assert first.probe
    second = store.admit_service_call(call(), after + 1)
    assert not second.admitted
    assert second.retry_at == after + BREAKER.probe_timeout
    row = state(store, after + 1)
    assert (row.state, row.probe_id) == (BREAKER_HALF_OPEN, probe.id)


def test_probe_success__closes_the_breaker(store: Store):
    open_breaker(store)
    probe = call()
    admitted(store, probe, NOW + 40)
    row = store.finish_service_call(probe, CALL_OK, now=NOW + 41)
    assert (row.state, row.failures, row.probe_id) == (BREAKER_CLOSED, 0, None)
    assert not admitted(store, call(), NOW + 42).probe


def test_probe_failure__reopens_for_another_cooldown(store: Store):
    open_breaker(store)
    probe = call()
    admitted(store, probe, NOW + 40)
    row = store.finish_service_call(probe, CALL_FAILURE, now=NOW + 41)
    assert (row.state, row.opened_at, row.retry_at) == (BREAKER_OPEN, NOW + 41, NOW + 71)
    assert store.admit_service_call(call(), NOW + 70).retry_at == NOW + 71
    assert admitted(store, call(), NOW + 71).probe


def test_probe_neutral__lets_the_next_call_probe(store: Store):
    open_breaker(store)
    probe = call()
    admitted(store, probe, NOW + 40)
    row = store.finish_service_call(probe, CALL_NEUTRAL, now=NOW + 41)
    assert (row.state, row.probe_id) == (BREAKER_HALF_OPEN, None)
    assert admitted(store, call(), NOW + 41).probe


def test_lost_probe__another_goes_after_the_probe_timeout_and_the_late_one_is_ignored(
    store: Store,
):
    open_breaker(store)
    lost = call()
    admitted(store, lost, NOW + 40)
    assert not store.admit_service_call(call(), NOW + 59).admitted
    probe = call()
    assert admitted(store, probe, NOW + 60).probe  # 40 + probe_timeout
    late = store.finish_service_call(lost, CALL_OK, now=NOW + 61)
    assert (late.state, late.probe_id) == (BREAKER_HALF_OPEN, probe.id)
    assert store.finish_service_call(probe, CALL_OK, now=NOW + 62).state == BREAKER_CLOSED


def test_outcomes_of_calls_admitted_before_the_breaker_opened__move_nothing(store: Store):
    early_ok, early_failure = call(), call()
    admitted(store, early_ok, NOW)
    admitted(store, early_failure, NOW)
    open_breaker(store, NOW + 1)
    assert store.finish_service_call(early_ok, CALL_OK, now=NOW + 2).state == BREAKER_OPEN
    probe = call()
    admitted(store, probe, NOW + 40)
    row = store.finish_service_call(early_failure, CALL_FAILURE, now=NOW + 41)
    assert (row.state, row.probe_id) == (BREAKER_HALF_OPEN, probe.id)


def test_services__are_independent(store: Store):
    open_breaker(store)
    admitted(store, call(service="tool"), NOW + 1)
    assert [r.name for r in store.list_services()] == ["llm", "tool"]
    assert [r.name for r in store.list_services(["tool", "nope"], NOW + 1)] == ["tool"]


# -- the budget ----------------------------------------------------------------------------------


def test_requests_budget__admits_up_to_the_limit_then_says_how_long_to_wait(store: Store):
    limits = ServiceLimits(requests=3, rate_window=10.0)
    for t in (0.0, 1.0, 2.0):
        admitted(store, call(limits), NOW + t)
    refused = store.admit_service_call(call(limits), NOW + 5)
    assert not refused.admitted
    assert refused.retry_at is None
    assert refused.wait == pytest.approx(5.0)  # the call at NOW leaves the window at NOW + 10
    assert refused.service.window_requests == 3
    assert not store.admit_service_call(call(limits), NOW + 9.99).admitted
    admitted(store, call(limits), NOW + 10)
    assert store.admit_service_call(call(limits), NOW + 10.5).wait == pytest.approx(0.5)


def test_requests_budget__several_requests_at_once(store: Store):
    limits = ServiceLimits(requests=5, rate_window=10.0)
    admitted(store, call(limits, requests=2), NOW)
    admitted(store, call(limits, requests=2), NOW + 1)
    refused = store.admit_service_call(call(limits, requests=3), NOW + 2)
    assert refused.wait == pytest.approx(8.0)  # 2 must leave: the first call's
    huge = store.admit_service_call(call(limits, requests=6), NOW + 2)
    assert huge.wait == math.inf


def test_tokens_budget__reserves_estimates_and_corrects_them(store: Store):
    limits = ServiceLimits(tokens=1000, rate_window=60.0)
    first, second = call(limits, tokens=600), call(limits, tokens=300)
    admitted(store, first, NOW)
    admitted(store, second, NOW + 1)
    refused = store.admit_service_call(call(limits, tokens=200), NOW + 2)
    assert refused.wait == pytest.approx(58.0)
    row = store.finish_service_call(first, CALL_OK, tokens_used=100, now=NOW + 3)
    assert row.window_tokens == 400
    admitted(store, call(limits, tokens=200), NOW + 4)  # room freed by the correction
    store.finish_service_call(second, CALL_OK, tokens_used=900, now=NOW + 5)  # overshot
    overshot = store.admit_service_call(call(limits, tokens=0), NOW + 6)
    # 1200 in the window, 200 must leave: the first call (100, counted from its finish at
    # NOW + 3) and the third (200, unfinished, from its admission at NOW + 4), at NOW + 64.
    assert overshot.wait == pytest.approx(58.0)
    assert store.admit_service_call(call(limits, tokens=1001), NOW + 6).wait == math.inf


def test_finished_calls__count_in_the_window_from_their_finish(store: Store):
    # The provider receives a call some time between its admission and its finish: counting
    # a finished call from its finish keeps any window the provider measures within budget.
    limits = ServiceLimits(requests=1, rate_window=10.0)
    slow = call(limits)
    admitted(store, slow, NOW)
    assert store.admit_service_call(call(limits), NOW + 4).wait == pytest.approx(6.0)
    store.finish_service_call(slow, CALL_OK, now=NOW + 4)
    refused = store.admit_service_call(call(limits), NOW + 12)
    assert refused.wait == pytest.approx(2.0)  # until NOW + 14, ten seconds after its finish
    assert state(store, NOW + 13.9).window_requests == 1
    admitted(store, call(limits), NOW + 14)


def test_budget_refusal__does_not_take_the_probe(store: Store):
    limits = ServiceLimits(
        failure_threshold=1, cooldown=5.0, probe_timeout=100.0, requests=1, rate_window=60.0
    )
    c = call(limits)
    admitted(store, c, NOW)
    store.finish_service_call(c, CALL_FAILURE, now=NOW)
    refused = store.admit_service_call(call(limits), NOW + 10)
    assert refused.wait == pytest.approx(50.0)
    assert state(store, NOW + 10).probe_id is None
    assert admitted(store, call(limits), NOW + 60).probe


def test_calls_leave_the_window__and_its_usage(store: Store):
    limits = ServiceLimits(requests=10, tokens=100, rate_window=10.0)
    admitted(store, call(limits, tokens=30), NOW)
    admitted(store, call(limits, tokens=20), NOW + 5)
    row = state(store, NOW + 9)
    assert (row.window_requests, row.window_tokens) == (2, 50)
    row = state(store, NOW + 12)
    assert (row.window_requests, row.window_tokens) == (1, 20)


# -- idempotence and bad input -------------------------------------------------------------------


def test_admitting_the_same_call_twice__reserves_once(store: Store):
    limits = ServiceLimits(requests=2, rate_window=60.0)
    c = call(limits)
    admitted(store, c, NOW)
    again = admitted(store, c, NOW + 1)
    assert again.service.window_requests == 1
    admitted(store, call(limits), NOW + 2)


def test_recording_an_outcome_twice__counts_once(store: Store):
    c = call()
    admitted(store, c, NOW)
    store.finish_service_call(c, CALL_FAILURE, now=NOW)
    row = store.finish_service_call(c, CALL_FAILURE, now=NOW + 1)
    assert row.failures == 1


def test_bad_outcome_or_counts__are_refused(store: Store):
    c = call()
    admitted(store, c, NOW)
    with pytest.raises(ConfigError, match="outcome"):
        store.finish_service_call(c, "meh", now=NOW)
    with pytest.raises(ConfigError, match="tokens_used"):
        store.finish_service_call(c, CALL_OK, tokens_used=-1, now=NOW)
    with pytest.raises(ConfigError, match="zero or more"):
        store.admit_service_call(call(tokens=-5), NOW)
    assert state(store, NOW).window_requests == 1


# -- the clock -----------------------------------------------------------------------------------


def test_without_now__decisions_use_the_database_clock(store: Store):
    before = store.database_time()
    a = admitted(store, call(), None)
    after = store.database_time()
    # SQLite's database_time has millisecond precision; the admission reads the same clock.
    assert before - 0.002 <= a.now <= after + 0.002
    [row] = store.list_services(["llm"])
    assert row.now >= a.now - 0.002


# -- concurrency: several stores (connections, as other processes) ------------------------------


def race(make_store: Callable[[], Store], n: int, fn: Callable[[Store], bool]) -> int:
    """Run `fn` on `n` threads, each with its own store, released together; count the Trues."""
    stores = [make_store() for _ in range(n)]
    barrier = threading.Barrier(n)
    results: list[bool] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(s: Store) -> None:
        try:
            barrier.wait()
            outcome = fn(s)
            with lock:
                results.append(outcome)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == n
    return sum(results)


def test_half_open__exactly_one_probe_among_concurrent_callers(store: Store, make_store):
    open_breaker(store)
    probes = race(make_store, 8, lambda s: s.admit_service_call(call(), NOW + 40).admitted)
    assert probes == 1
    assert state(store, NOW + 40).probe_id is not None


def test_budget__concurrent_callers_never_exceed_it(store: Store, make_store):
    limits = ServiceLimits(requests=5, rate_window=60.0)
    store.admit_service_call(call(limits, requests=0))  # the row exists: contend on the lock

    def attempt(s: Store) -> bool:
        return sum(s.admit_service_call(call(limits)).admitted for _ in range(3)) > 0

    race(make_store, 6, attempt)
    [row] = store.list_services(["llm"])
    assert row.window_requests == 5


def test_failures__concurrent_reports_all_count(store: Store, make_store):
    limits = ServiceLimits(failure_threshold=100, failure_window=60.0)

    def report(s: Store) -> bool:
        for _ in range(5):
            c = call(limits)
            s.admit_service_call(c, NOW)
            s.finish_service_call(c, CALL_FAILURE, now=NOW + 1)
        return True

    race(make_store, 6, report)
    assert state(store, NOW + 1).failures == 30


def test_admitting_the_probe_again__returns_it_as_the_probe(store: Store):
    open_breaker(store)
    probe = call()
    admitted(store, probe, NOW + 40)
    again = admitted(store, probe, NOW + 41)  # its answer was lost: asked again
    assert again.probe
    assert not store.admit_service_call(call(), NOW + 41).admitted
