"""Retry policies, timeouts and idempotency keys (both backends)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

import tether
from tests.conftest import MakeApp
from tether.engine.retry import Retry

FAST = Retry(attempts=3, initial_delay=0.01, backoff=2.0, jitter=0.0)


class Throttled(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"retry after {retry_after}s")
        self.retry_after = retry_after


async def test_retry__transient_failures__attempts_recorded(app: tether.App):
    calls: list[int] = []

    @app.step(retry=FAST)
    async def flaky() -> str:
        calls.append(tether.context().attempt or 0)
        if len(calls) < 3:
            raise ConnectionError("try again")
        return "ok"

    @app.workflow()
    async def wf() -> str:
        return await flaky()

    async with app:
        handle = await app.start(wf)
        assert await handle.result(timeout=10) == "ok"
        [step] = await handle.steps()
    assert calls == [1, 2, 3]
    assert (step.status, step.attempts) == ("ok", 3)


async def test_retry__exhausted__raises_last_error_with_note(app: tether.App):
    @app.step(retry=FAST)
    def always() -> None:
        raise ConnectionError("down")

    @app.workflow()
    def wf() -> None:
        always()

    async with app:
        handle = await app.start(wf)
        with pytest.raises(tether.WorkflowFailedError) as info:
            await handle.result(timeout=10)
        [step] = await handle.steps()
    assert isinstance(info.value.cause, ConnectionError)
    assert "failed after 3 attempt(s)" in " ".join(getattr(info.value.cause, "__notes__", []))
    assert (step.status, step.attempts) == ("error", 3)


@pytest.mark.parametrize(
    "error",
    [tether.NonRetryableError("no"), ValueError("listed"), tether.SerializationError("bad")],
)
async def test_retry__non_retryable__single_attempt(app: tether.App, error: Exception):
    calls = Counter[str]()

    @app.step(retry=Retry(attempts=5, initial_delay=0.01, non_retryable=(ValueError,)))
    async def fails() -> None:
        calls["n"] += 1
        raise error

    @app.workflow()
    async def wf() -> None:
        await fails()

    async with app:
        with pytest.raises(tether.WorkflowFailedError):
            await (await app.start(wf)).result(timeout=10)
    assert calls["n"] == 1


async def test_retry__retry_after_hint__replaces_computed_delay(app: tether.App):
    stamps: list[float] = []

    @app.step(retry=Retry(attempts=2, initial_delay=30.0))
    async def limited() -> int:
        stamps.append(time.monotonic())
        if len(stamps) == 1:
            raise Throttled(0.3)
        return 1

    @app.workflow()
    async def wf() -> int:
        return await limited()

    async with app:
        assert await (await app.start(wf)).result(timeout=10) == 1
    assert 0.25 <= stamps[1] - stamps[0] < 5


async def test_retry__crash_during_backoff__count_and_deadline_survive(make_app: MakeApp):
    """Attempts are journaled before the backoff: a restart neither resets the count nor
    restarts the wait."""
    attempts: list[int] = []
    stamps: list[float] = []

    def define(app: tether.App) -> None:
        @app.step(name="limited", retry=Retry(attempts=3, initial_delay=0.01))
        async def limited() -> int:
            attempts.append(tether.context().attempt or 0)
            stamps.append(time.time())
            if len(attempts) == 1:
                raise Throttled(1.0)
            return len(attempts)

        @app.workflow(name="wf")
        async def wf() -> int:
            return await limited()

    first = make_app()
    define(first)
    async with first:
        await first.start("wf", id="backoff")
        for _ in range(200):
            steps = first.store.load_steps("backoff")
            if steps:
                break
            await asyncio.sleep(0.01)
    [pending] = first.store.load_steps("backoff")
    assert (pending.status, pending.attempts) == ("retry", 1)
    assert pending.retry_at is not None
    second = make_app()
    define(second)
    async with second:
        assert await second.retrieve("backoff").result(timeout=10) == 2
    [done] = second.store.load_steps("backoff")
    assert (done.status, done.attempts) == ("ok", 2)
    assert stamps[1] >= pending.retry_at - 0.05  # waited for the original deadline
    assert done.started_at == pending.started_at  # the step's first start is kept
    assert attempts == [1, 2]


async def test_timeout__async_step__raises_step_timeout_then_retries(app: tether.App):
    calls = Counter[str]()

    @app.step(timeout=0.05, retry=Retry(attempts=2, initial_delay=0.01))
    async def slow() -> int:
        calls["n"] += 1
        await asyncio.sleep(10)
        return 1

    @app.workflow()
    async def wf() -> int:
        return await slow()

    async with app:
        with pytest.raises(tether.WorkflowFailedError) as info:
            await (await app.start(wf)).result(timeout=10)
    assert isinstance(info.value.cause, tether.StepTimeoutError)
    assert "longer than its timeout of 0.05s" in str(info.value.cause)
    assert calls["n"] == 2


async def test_timeout__sync_step__raises_step_timeout(app: tether.App):
    @app.step(timeout=0.05, retry=None)
    def slow() -> int:
        time.sleep(0.3)
        return 1

    @app.workflow()
    def wf() -> int:
        return slow()

    async with app:
        with pytest.raises(tether.WorkflowFailedError) as info:
            await (await app.start(wf)).result(timeout=10)
    assert isinstance(info.value.cause, tether.StepTimeoutError)


async def test_timeout__user_timeout_error__is_not_mistaken_for_step_timeout(app: tether.App):
    @app.step(timeout=5.0, retry=None)
    async def raises_own() -> int:
        raise TimeoutError("the remote side timed out")

    @app.workflow()
    async def wf() -> int:
        return await raises_own()

    async with app:
        with pytest.raises(tether.WorkflowFailedError) as info:
            await (await app.start(wf)).result(timeout=10)
    assert type(info.value.cause) is TimeoutError


async def test_idempotency_key__same_on_every_attempt_and_replay(make_app: MakeApp):
    keys: list[str] = []
    gate = asyncio.Event()

    def define(app: tether.App, block: bool) -> None:
        @app.step(name="charge", retry=FAST)
        async def charge() -> str:
            keys.append(tether.context().idempotency_key)
            if len(keys) == 1:
                raise ConnectionError("flaky")
            if block:
                await gate.wait()
            return "charged"

        @app.step(name="other")
        async def other() -> str:
            return tether.context().idempotency_key

        @app.workflow(name="pay")
        async def pay() -> list[str]:
            return [await other(), await charge()]

    first = make_app()
    define(first, block=True)
    async with first:
        await first.start("pay", id="pay-1")
        for _ in range(300):
            if len(keys) >= 2:
                break
            await asyncio.sleep(0.01)
    second = make_app()
    define(second, block=False)
    async with second:
        other_key, _ = await second.retrieve("pay-1").result(timeout=10)
    assert len(keys) == 3
    assert len(set(keys)) == 1
    assert other_key != keys[0]
    assert len(keys[0]) == 36  # a UUID


def test_retry_policy__validation_and_delays():
    with pytest.raises(tether.ConfigError):
        Retry(attempts=0)
    with pytest.raises(tether.ConfigError):
        Retry(backoff=0.5)
    policy = Retry(attempts=5, initial_delay=1.0, backoff=2.0, max_delay=3.0, jitter=0.0)
    error = ConnectionError()
    assert [policy.delay(n, error) for n in range(1, 6)] == [1.0, 2.0, 3.0, 3.0, None]
    assert Retry.never().delay(1, error) is None
    assert policy.delay(1, Throttled(7.5)) == 7.5
    assert policy.delay(1, tether.StoreUnavailableError("x")) == 1.0
    assert policy.delay(1, tether.WorkflowNotFoundError("x")) is None
