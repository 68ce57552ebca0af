"""tether.agent: durable LLM and tool calls, failure-aware providers, validation, budgets.

    from tether.agent import Agent, Budget, Model

The model and message types every provider shares live in `tether.agent.types`; service
awareness (circuit breakers and rate budgets shared by the fleet) in `tether.agent.services`.
An agent's working directory is a `Workspace` (checkpointed with the run, restored on any
worker), and its commands run in a sandbox (`tether.agent.sandbox`).
"""

from __future__ import annotations

from tether.agent import sandbox
from tether.agent.agent import Agent, AgentResult, Observer
from tether.agent.app import App
from tether.agent.budgets import Budget
from tether.agent.errors import (
    AgentStoppedError,
    BudgetExceededError,
    ModelCallError,
    ModelsExhaustedError,
    OutputValidationError,
    ServiceCircuitOpenError,
    ServiceUnavailableError,
    ToolUnavailableError,
)
from tether.agent.hooks import (
    AgentHooks,
    AgentState,
    HookDecision,
    ModelEvent,
    StepEvent,
    ToolEvent,
)
from tether.agent.llm import DEFAULT_MODEL_RETRY, ServiceGate
from tether.agent.models import Model, Price
from tether.agent.sandbox import (
    SandboxError,
    SandboxOptions,
    SandboxResult,
    SandboxUnavailableError,
)
from tether.agent.services import (
    CircuitOpenError,
    Permit,
    RateBudgetError,
    ServicePolicy,
    Services,
    ServiceState,
    counts_as_failure,
)
from tether.agent.tool_services import ToolService
from tether.agent.tools import RequireApproval, SideEffect, Tool
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
    "DEFAULT_MODEL_RETRY",
    "Agent",
    "AgentHooks",
    "AgentResult",
    "AgentState",
    "AgentStoppedError",
    "App",
    "Budget",
    "BudgetExceededError",
    "CircuitOpenError",
    "Entry",
    "ErrorKind",
    "HookDecision",
    "Message",
    "Model",
    "ModelCallError",
    "ModelEvent",
    "ModelRequest",
    "ModelResponse",
    "ModelsExhaustedError",
    "Observer",
    "OutputValidationError",
    "Permit",
    "Price",
    "Provider",
    "ProviderError",
    "RateBudgetError",
    "RequireApproval",
    "Restored",
    "SandboxError",
    "SandboxOptions",
    "SandboxResult",
    "SandboxUnavailableError",
    "ServiceCircuitOpenError",
    "ServiceGate",
    "ServicePolicy",
    "ServiceState",
    "ServiceUnavailableError",
    "Services",
    "SideEffect",
    "Snapshot",
    "StepEvent",
    "Tool",
    "ToolCall",
    "ToolEvent",
    "ToolService",
    "ToolSpec",
    "ToolUnavailableError",
    "Usage",
    "Workspace",
    "WorkspaceChangedError",
    "WorkspaceError",
    "counts_as_failure",
    "sandbox",
]
