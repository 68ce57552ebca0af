"""Budgets: the most steps, tokens, cost and wall time an agent run may use.

Steps, tokens and cost are counted from journaled responses, so a replay counts the same
figures at the same points. Wall time is measured from the run's start, journaled by the
agent's first step, and checked inside each model and tool step before it works: a check's
outcome is part of that step's journaled outcome, so a replay stops (or goes on) at exactly
the same point, and a restart does not reset the clock.
"""

from __future__ import annotations

import dataclasses
import time

from tether.agent.errors import BudgetExceededError
from tether.agent.models import Model
from tether.agent.types import Usage
from tether.errors import ConfigError


@dataclasses.dataclass(frozen=True, slots=True)
class Budget:
    """Limits for one agent run; None means no limit.

        Agent(..., budget=Budget(max_steps=40, max_tokens=200_000, max_cost=2.0,
                                 max_time=900))

    Attributes:
        max_steps: model calls plus tool calls.
        max_tokens: input plus output tokens over all model calls.
        max_cost: cost over all model calls, from the models' prices (every model in the
            chain then needs a price).
        max_time: seconds of wall time from the run's start.
    """

    max_steps: int | None = None
    max_tokens: int | None = None
    max_cost: float | None = None
    max_time: float | None = None

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None and value <= 0:
                raise ConfigError(f"Budget({field.name}={value}) must be positive (or None)")

    def check_prices(self, chain: tuple[Model, ...]) -> None:
        """Refuse a cost budget over models without a price."""
        if self.max_cost is None:
            return
        missing = [m.label for m in chain if m.price is None]
        if missing:
            raise ConfigError(
                f"a cost budget needs a price for every model in the chain; {missing} have none: "
                "pass Model(..., price=Price(input, output)) or Agent(prices={...})"
            )


@dataclasses.dataclass(slots=True)
class Tally:
    """What a run has used so far."""

    steps: int = 0
    model_calls: int = 0
    tool_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0

    @property
    def usage(self) -> Usage:
        """Tokens so far, as a `Usage`."""
        return Usage(input_tokens=self.input_tokens, output_tokens=self.output_tokens)

    def add_response(self, model: Model, usage: Usage) -> None:
        """Count a model call's answer."""
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        if model.price is not None:
            self.cost += model.price.cost(usage)


class Meter:
    """Checks a `Tally` against a `Budget`."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.tally = Tally()
        self.started_at = 0.0

    def before_step(self) -> None:
        """Before a model or tool call: is there a step left, and tokens and money?"""
        budget, tally = self.budget, self.tally
        if budget.max_steps is not None and tally.steps + 1 > budget.max_steps:
            raise BudgetExceededError("steps", budget.max_steps, tally.steps)
        self._spend(left_over=True)

    def after_model(self) -> None:
        """After an answer was counted: did it go over the token or cost budget?"""
        self._spend(left_over=False)

    def _spend(self, *, left_over: bool) -> None:
        # Before a call the budget must have something left; after one it must not be over.
        budget, tally = self.budget, self.tally
        tokens = tally.input_tokens + tally.output_tokens
        if budget.max_tokens is not None and _over(tokens, budget.max_tokens, left_over):
            raise BudgetExceededError("tokens", budget.max_tokens, tokens)
        if budget.max_cost is not None and _over(tally.cost, budget.max_cost, left_over):
            raise BudgetExceededError("cost", budget.max_cost, round(tally.cost, 9))

    def check_time(self) -> None:
        """Inside a step: raise if the run's wall time ran out (journaled as the step's error)."""
        limit = self.budget.max_time
        if limit is None:
            return
        elapsed = time.time() - self.started_at
        if elapsed > limit:
            raise BudgetExceededError("time", limit, round(elapsed, 3))


def _over(used: float, limit: float, left_over: bool) -> bool:
    return used >= limit if left_over else used > limit
