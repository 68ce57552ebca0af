"""Durable model calls: every attempt is a journaled step, every decision replays the same.

Each attempt to call a model is one step named `llm:<provider>:<model>` with a single try:
its `ModelResponse` is journaled, or its `ProviderError` is. What happens next is decided in
workflow code from that journaled outcome alone, by the error's kind:

- rate_limited: wait the provider's retry-after (else back off) and retry; fail over when
  the retries are spent (or at once when the retry-after is over `max_delay`).
- overloaded, server_error, timeout: back off and retry; fail over when the retries are spent.
- connection, context_too_long: fail over to the next model at once.
- authentication, bad_request, content_filtered: fail fast with `ModelCallError`.
- the service's fleet-wide circuit breaker is open: fail over at once; on the last model of
  the chain, wait for the breaker and retry.

A replay therefore returns the journaled responses without calling a provider, and walks the
same retries and failovers to the same model. Backoff waits are `tether.sleep`s: durable (a
restart keeps the original wake-up time) and, when long, they evict the run, so a waiting run
holds no worker slot.

Service awareness is a seam: given a `ServiceGate` (the fleet-shared breakers and rate
budgets), each attempt acquires a permit for the model's service before calling and releases
it after, reporting whether the service failed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

from tether.agent import services
from tether.agent.errors import ModelCallError, ModelsExhaustedError, ServiceCircuitOpenError
from tether.agent.models import Model
from tether.agent.types import ErrorKind, ModelRequest, ModelResponse, OnToken, ProviderError
from tether.engine import runtime, timers
from tether.engine.retry import Retry

DEFAULT_MODEL_RETRY = Retry(attempts=4, initial_delay=1.0, backoff=2.0, max_delay=60.0)
"""Per model: up to four attempts, 1 s, 2 s, 4 s apart; a retry-after replaces the delay."""

_FAIL_FAST = frozenset(
    {ErrorKind.AUTHENTICATION, ErrorKind.BAD_REQUEST, ErrorKind.CONTENT_FILTERED}
)
_FAIL_OVER = frozenset({ErrorKind.CONNECTION, ErrorKind.CONTEXT_TOO_LONG})
_UNHEALTHY = frozenset(
    {ErrorKind.OVERLOADED, ErrorKind.SERVER_ERROR, ErrorKind.TIMEOUT, ErrorKind.CONNECTION}
)


class ServiceGate(Protocol):
    """Fleet-shared service awareness: circuit breakers and rate budgets per service.

    `tether.agent.services.Services` implements it. `acquire` raises an error with `service`
    and `retry_at` attributes (`CircuitOpenError`) when the service's breaker is open, and
    waits for the fleet-wide rate budget otherwise.
    """

    async def acquire(self, service: str, *, tokens: int = 0, max_wait: float = 60.0) -> Any:
        """Take a permit to call `service` (waiting for its rate budget)."""
        ...

    async def release(
        self, permit: Any, *, ok: bool, failure: bool = False, tokens_used: int = 0
    ) -> None:
        """Return the permit; `failure=True` counts toward the service's breaker."""
        ...


Action = Literal["retry", "failover", "fail"]


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """What to do after a failed attempt: retry (after `delay` seconds), fail over, fail."""

    action: Action
    delay: float = 0.0


def decide(error: ProviderError, attempt: int, retry: Retry, has_fallback: bool) -> Decision:
    """The policy for a failed attempt, from the journaled error alone (so replay agrees)."""
    kind = ErrorKind(error.kind)
    if kind in _FAIL_FAST:
        return Decision("fail")
    if kind in _FAIL_OVER:
        return Decision("failover")
    if getattr(error, "circuit_open", False) and has_fallback:
        return Decision("failover")
    delay = retry.delay(attempt, error)
    if delay is None:
        return Decision("failover")
    if delay > retry.max_delay and has_fallback:
        return Decision("failover")  # a long retry-after: another model answers sooner
    return Decision("retry", delay)


@dataclasses.dataclass(frozen=True, slots=True)
class Attempt:
    """What one attempt's step body needs; passed as its argument (arguments are not stored)."""

    model: Model
    request: ModelRequest
    gate: ServiceGate | None
    on_token: OnToken | None
    check: Callable[[], None]


class ModelCaller:
    """Calls a chain of models durably, with the policy above."""

    def __init__(
        self, chain: Sequence[Model], retry: Retry, gate: ServiceGate | None = None
    ) -> None:
        self.chain = tuple(chain)
        self.retry = retry
        self.gate = gate
        self._steps = {
            m.label: runtime.step(name=f"llm:{m.label}", retry=None)(_attempt) for m in chain
        }

    async def complete(
        self,
        request_for: Callable[[Model], ModelRequest],
        *,
        on_token: OnToken | None = None,
        check: Callable[[], None] = lambda: None,
    ) -> tuple[Model, ModelResponse]:
        """Return the first answer along the chain, and the model that gave it.

        Args:
            request_for: builds the request for a model of the chain.
            on_token: passed each streamed text fragment while a call is in flight.
            check: called inside each attempt's step before the call (a budget check).

        Raises:
            ModelCallError: a failure that no retry or other model fixes.
            ModelsExhaustedError: every model failed.
        """
        failures: list[dict[str, Any]] = []
        for index, model in enumerate(self.chain):
            has_fallback = index + 1 < len(self.chain)
            attempt = 0
            while True:
                attempt += 1
                call = Attempt(model, request_for(model), self.gate, on_token, check)
                try:
                    response: ModelResponse = await self._steps[model.label](call)
                except ProviderError as exc:
                    failures.append(_failure(model, exc))
                    decision = decide(exc, attempt, self.retry, has_fallback)
                    if decision.action == "fail":
                        raise ModelCallError(model.provider.name, model.name, exc) from exc
                    if decision.action == "failover":
                        break
                    if decision.delay > 0:
                        await timers.sleep(decision.delay)
                    continue
                return model, response
        raise ModelsExhaustedError(failures)


def _failure(model: Model, exc: ProviderError) -> dict[str, Any]:
    return {"model": model.label, "kind": ErrorKind(exc.kind).value, "message": str(exc)}


async def _attempt(call: Attempt) -> ModelResponse:
    """One attempt (a step body): through the service gate, within the model's timeout."""
    call.check()
    model = call.model
    permit = await _acquire(call) if call.gate is not None else None
    ok, failure, used = False, False, 0
    try:
        try:
            async with asyncio.timeout(model.timeout):
                response = await model.provider.complete(
                    call.request, timeout=model.timeout, on_token=call.on_token
                )
        except TimeoutError:
            raise ProviderError(
                f"{model.label} did not answer within {model.timeout}s",
                kind=ErrorKind.TIMEOUT,
                provider=model.provider.name,
            ) from None
        ok, used = True, response.usage.total_tokens
        return response
    except ProviderError as exc:
        failure = ErrorKind(exc.kind) in _UNHEALTHY
        raise
    finally:
        if call.gate is not None:
            await call.gate.release(permit, ok=ok, failure=failure, tokens_used=used)


def estimate_tokens(request: ModelRequest, model: Model) -> int:
    """The tokens to reserve in a rate budget for `request`: what the model may read and write.

    A quarter of the characters of the whole request as JSON (the messages with their tool
    calls and arguments, the tools' schemas, the output schema: everything a provider counts
    as input), plus the most the model may write (`max_tokens` of the request or the model).
    It errs high, as a reservation should; the actual use replaces it when the call ends.
    """
    output = request.max_tokens or model.max_tokens or 0
    return len(request.model_dump_json()) // 4 + output


async def _acquire(call: Attempt) -> Any:
    assert call.gate is not None
    model = call.model
    tokens = estimate_tokens(call.request, model)
    try:
        return await call.gate.acquire(model.service_name, tokens=tokens, max_wait=model.timeout)
    except services.RateBudgetError as exc:
        # The fleet's budget is spent for longer than a call may wait: a rate limit that no
        # request paid for, handled by the same policy (a durable wait, or failover).
        raise ProviderError(
            str(exc),
            kind=ErrorKind.RATE_LIMITED,
            provider=model.provider.name,
            retry_after=exc.retry_after,
        ) from None
    except Exception as exc:
        retry_at = getattr(exc, "retry_at", None)
        if isinstance(retry_at, int | float) and hasattr(exc, "service"):
            raise ServiceCircuitOpenError(
                model.service_name, float(retry_at), provider=model.provider.name, now=time.time()
            ) from exc
        raise
