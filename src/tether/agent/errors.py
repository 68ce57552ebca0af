"""The errors an agent run ends with, each naming what happened and what to do.

```
TetherError
├── ProviderError (types.py)        one classified provider failure
│   └── ServiceCircuitOpenError     the fleet's circuit breaker for a service is open
├── ServiceUnavailableError         a tool says its service is unwell (counts toward its breaker)
├── ToolUnavailableError            a tool was not run: its service's breaker or budget refused
├── ModelCallError                  a failure no retry or other model can fix (auth, bad request)
├── ModelsExhaustedError            every model in the chain failed
├── BudgetExceededError             a run's steps, tokens, cost or wall time ran out
├── OutputValidationError           the answer did not validate, corrections included
└── AgentStoppedError               a hook stopped the run
```

Their attributes are JSON values, so a run that failed with one fails with the same type and
figures when it is read back from the journal by another process.
"""

from __future__ import annotations

from typing import Any

from tether.agent.types import ErrorKind, ProviderError
from tether.errors import TetherError

_WHAT_TO_DO = {
    ErrorKind.AUTHENTICATION: "check the API key and the account's access to this model",
    ErrorKind.BAD_REQUEST: "fix the request (model name, parameters, tool schemas)",
    ErrorKind.CONTENT_FILTERED: "change the task or instructions the provider refused",
}


class ServiceCircuitOpenError(ProviderError):
    """The fleet-wide circuit breaker of a model's service is open: it was not called.

    Attributes:
        service: the service whose breaker is open.
        retry_at: when the breaker lets a trial call through (UNIX seconds).
    """

    circuit_open = True

    def __init__(self, service: str, retry_at: float, *, provider: str, now: float) -> None:
        wait = max(0.0, retry_at - now)
        super().__init__(
            f"service {service!r} is marked down across the fleet (circuit breaker open for "
            f"{wait:.1f}s more); the call was not made",
            kind=ErrorKind.OVERLOADED,
            provider=provider,
            retry_after=wait,
        )
        self.service = service
        self.retry_at = retry_at


class ServiceUnavailableError(TetherError):
    """Raise from a tool to say the service it calls is unwell (a 503, an outage page).

    With `@app.tool(service=...)` and a service gate, it counts toward the service's circuit
    breaker, like a timeout or a connection error; the caller's own mistakes (a 404, a
    refused argument) should raise anything else. It is retried per the tool's retry policy.

    Attributes:
        service: the service, when the raiser names it (else None).
        retry_after: seconds the service asked callers to wait, if it said (a retry-after
            header); a step's retry waits that long instead of its own backoff.
    """

    retryable = True

    def __init__(
        self, message: str, *, service: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.service = service
        self.retry_after = retry_after


class ToolUnavailableError(TetherError):
    """A tool was not run: its service's circuit breaker is open, or its rate budget is full.

    An agent's model receives the message as the tool's answer, at once (its step is not
    retried); a tool called from workflow code raises it, and a step retry policy waits
    `retry_after` before the next attempt.

    Attributes:
        tool: the tool.
        service: the service it calls.
        reason: "circuit_open" (the service is failing) or "rate_budget" (no room in time).
        retry_at: when a call may be tried again (Unix seconds, the database's clock), or
            None when the refusal did not say.
        retry_after: seconds from the refusal until then, or None when it did not say.
    """

    retryable = True

    def __init__(
        self,
        tool: str,
        service: str,
        reason: str,
        *,
        retry_at: float | None,
        retry_after: float | None,
        detail: str,
    ) -> None:
        super().__init__(f"tool {tool!r} was not run: service {service!r} {detail}")
        self.tool = tool
        self.service = service
        self.reason = reason
        self.retry_at = retry_at
        self.retry_after = retry_after


class ModelCallError(TetherError):
    """A model call failed in a way that no retry and no other model fixes.

    Attributes:
        provider: the provider's name.
        model: the model's name.
        kind: the `ErrorKind` value.
        status: the HTTP status, if any.
    """

    def __init__(self, provider: str, model: str, error: ProviderError) -> None:
        kind = ErrorKind(error.kind)
        todo = _WHAT_TO_DO.get(kind, "fix the cause named above")
        status = f" (HTTP {error.status})" if error.status is not None else ""
        super().__init__(
            f"model {provider}:{model} refused the call: {kind.value}{status}: {error}; "
            f"retrying cannot help, {todo}"
        )
        self.provider = provider
        self.model = model
        self.kind = kind.value
        self.status = error.status


class ModelsExhaustedError(TetherError):
    """Every model in the chain failed (retries and failovers spent).

    Attributes:
        failures: one `{"model", "kind", "message"}` per failed attempt, in order.
    """

    def __init__(self, failures: list[dict[str, Any]]) -> None:
        tried = sorted({f["model"] for f in failures})
        last = failures[-1] if failures else {"model": "?", "kind": "?", "message": "?"}
        super().__init__(
            f"every model in the chain failed ({', '.join(tried)}; {len(failures)} attempts); "
            f"the last: {last['model']}: {last['kind']}: {last['message']}; add a fallback "
            "model, raise the retry budget, or resume the run once the providers recover"
        )
        self.failures = failures


class BudgetExceededError(TetherError):
    """A run used up one of its budgets and was stopped.

    Attributes:
        budget: which budget: "steps", "tokens", "cost" or "time".
        limit: the budget's limit (a count, tokens, the currency of the price table, seconds).
        used: how much was used when the run stopped.
    """

    def __init__(self, budget: str, limit: float, used: float) -> None:
        super().__init__(
            f"the agent's {budget} budget is spent: used {_figure(used)} of {_figure(limit)}; "
            f"raise Budget(max_{budget}=...) or give the agent a smaller task"
        )
        self.budget = budget
        self.limit = limit
        self.used = used


class OutputValidationError(TetherError):
    """The model's final answer failed validation, also after the corrections allowed.

    Attributes:
        attempts: answers that were validated.
        error: the last validation error.
    """

    def __init__(self, attempts: int, error: str) -> None:
        super().__init__(
            f"the agent's answer did not validate after {attempts} attempt(s): {error}; "
            "allow more corrections (Agent(output_retries=...)), loosen the output type, or "
            "say more about the expected format in the instructions"
        )
        self.attempts = attempts
        self.error = error


class AgentStoppedError(TetherError):
    """A hook stopped the run (for example a monitor that found the agent off course).

    Attributes:
        reason: the hook's reason.
        state: the run as it stood when it stopped (its conversation, usage and cost), so the
            caller can continue it, or start again from part of it, with `agent.run(messages)`.
    """

    def __init__(self, reason: str, state: Any = None) -> None:
        super().__init__(f"the agent run was stopped by a hook: {reason}")
        self.reason = reason
        self.state = state


def _figure(value: float) -> str:
    return f"{value:g}"
