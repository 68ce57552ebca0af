"""tether.agent: durable LLM and tool calls, failure-aware providers, validation, budgets.

The model and message types every provider shares live in `tether.agent.types`.
"""

from __future__ import annotations

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
    "ErrorKind",
    "Message",
    "ModelRequest",
    "ModelResponse",
    "Provider",
    "ProviderError",
    "ToolCall",
    "ToolSpec",
    "Usage",
]
