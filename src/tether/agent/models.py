"""Models and model chains: which provider serves which model, at what price.

A chain is declared once, primary first:

    agent = Agent(model=[Model(openai, "gpt-4o", price=Price(2.5, 10.0)),
                         Model(anthropic, "claude-sonnet-4")], ...)

or with "provider:model" strings resolved against the providers handed to the agent:

    agent = Agent(model=["openai:gpt-4o", "anthropic:claude-sonnet-4"],
                  providers=[openai, anthropic], prices={"openai:gpt-4o": Price(2.5, 10.0)})
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from tether.agent.types import Provider, Usage
from tether.errors import ConfigError


@dataclasses.dataclass(frozen=True, slots=True)
class Price:
    """What a model costs, per million input and output tokens (in any one currency)."""

    input: float
    output: float

    def __post_init__(self) -> None:
        if self.input < 0 or self.output < 0:
            raise ConfigError(f"{self!r}: prices must not be negative")

    def cost(self, usage: Usage) -> float:
        """The cost of `usage` at this price."""
        return (usage.input_tokens * self.input + usage.output_tokens * self.output) / 1e6


@dataclasses.dataclass(frozen=True, slots=True)
class Model:
    """A model served by a provider.

    Attributes:
        provider: the provider that serves it.
        name: the provider's name for the model.
        price: its price per million tokens (needed for a cost budget).
        timeout: seconds a call may take before it counts as `ErrorKind.TIMEOUT`.
        max_tokens: the most output tokens per call, or the provider's default.
        service: the name its health and rate budget are tracked under (default: the
            provider's name, so one provider's outage fails over every model it serves).
    """

    provider: Provider
    name: str
    price: Price | None = None
    timeout: float = 120.0
    max_tokens: int | None = None
    service: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("Model(name=...) must not be empty")
        if self.timeout <= 0:
            raise ConfigError(f"Model(timeout={self.timeout}) must be positive")

    @property
    def label(self) -> str:
        """`provider:model`, as journal step names and errors show it."""
        return f"{self.provider.name}:{self.name}"

    @property
    def service_name(self) -> str:
        """The service whose breaker and rate budget this model's calls go through."""
        return self.service or self.provider.name


ModelLike = Model | str
"""A `Model`, or "provider:model" resolved against the agent's providers."""


def resolve_chain(
    model: ModelLike | Sequence[ModelLike],
    providers: Sequence[Provider],
    prices: Mapping[str, Price],
) -> tuple[Model, ...]:
    """Turn the declared chain into `Model`s, primary first.

    Raises:
        ConfigError: an empty chain, an unknown provider, or a malformed name.
    """
    items = [model] if isinstance(model, Model | str) else list(model)
    if not items:
        raise ConfigError("an agent needs at least one model: Agent(model=...)")
    by_name = {p.name: p for p in providers}
    chain = tuple(_resolve(item, by_name, prices) for item in items)
    labels = [m.label for m in chain]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"the model chain names a model twice: {labels}")
    return chain


def _resolve(
    item: ModelLike, providers: Mapping[str, Provider], prices: Mapping[str, Price]
) -> Model:
    if isinstance(item, Model):
        price = item.price or prices.get(item.label) or prices.get(item.name)
        return dataclasses.replace(item, price=price)
    provider_name, sep, name = item.partition(":")
    if not sep or not provider_name or not name:
        raise ConfigError(
            f"model {item!r} must be written 'provider:model' (for example 'openai:gpt-4o'), "
            "or given as Model(provider, name)"
        )
    provider = providers.get(provider_name)
    if provider is None:
        known = ", ".join(sorted(providers)) or "none"
        raise ConfigError(
            f"model {item!r} names provider {provider_name!r}, which the agent was not given "
            f"(providers: {known}); pass it in Agent(providers=[...])"
        )
    return Model(provider, name, price=prices.get(item) or prices.get(name))
