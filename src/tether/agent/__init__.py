"""tether.agent: durable LLM and tool calls, failure-aware providers, validation, budgets.

The model and message types every provider shares live in `tether.agent.types`. An agent's
working directory is a `Workspace` (checkpointed with the run, restored on any worker), and
its commands run in a sandbox (`tether.agent.sandbox`).
"""

from __future__ import annotations

from tether.agent import sandbox
from tether.agent.sandbox import (
    SandboxError,
    SandboxOptions,
    SandboxResult,
    SandboxUnavailableError,
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
from tether.agent.workspace import (
    Entry,
    Restored,
    Snapshot,
    Workspace,
    WorkspaceChangedError,
    WorkspaceError,
)

__all__ = [
    "Entry",
    "ErrorKind",
    "Message",
    "ModelRequest",
    "ModelResponse",
    "Provider",
    "ProviderError",
    "Restored",
    "SandboxError",
    "SandboxOptions",
    "SandboxResult",
    "SandboxUnavailableError",
    "Snapshot",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "Workspace",
    "WorkspaceChangedError",
    "WorkspaceError",
    "sandbox",
]
