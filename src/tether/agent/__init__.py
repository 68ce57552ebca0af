"""tether.agent: durable LLM and tool calls, failure-aware providers, validation, budgets.

The model and message types every provider shares live in `tether.agent.types`; service
awareness (circuit breakers and rate budgets shared by the fleet) in `tether.agent.services`.
"""

from __future__ import annotations

from tether.agent.services import (
    CircuitOpenError,
    Permit,
    RateBudgetError,
    ServicePolicy,
    Services,
    ServiceState,
    counts_as_failure,
)
from tether.agent.types import (
    ErrorKind,
    Message,
    ModelRequest,
    ModelResponse,
    Provider,
    ProviderError,
    ToolCall,
    ToolSpec,
    Usage,
)

__all__ = [
    "CircuitOpenError",
    "ErrorKind",
    "Message",
    "ModelRequest",
    "ModelResponse",
    "Permit",
    "Provider",
    "ProviderError",
    "RateBudgetError",
    "ServicePolicy",
    "ServiceState",
    "Services",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "counts_as_failure",
]
