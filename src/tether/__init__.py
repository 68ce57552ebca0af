"""tether: durable execution for AI agents.

import tether

app = tether.App()

@app.step()
async def fetch(url: str) -> str: ...

@app.workflow()
async def digest(urls: list[str]) -> str: ...
"""

from tether.clock import Clock, FakeClock, SystemClock
from tether.codec import Codec, PayloadCodec, ZlibCodec
from tether.engine.app import App, run
from tether.engine.context import Context, context
from tether.engine.handle import StepInfo, WorkflowHandle
from tether.engine.retry import Retry
from tether.errors import (
    ConfigError,
    CorruptRowError,
    LeaseLostError,
    NonDeterminismError,
    NonRetryableError,
    NotInWorkflowError,
    PayloadTooLargeError,
    RecoveryLimitError,
    ResultTimeoutError,
    SchemaVersionError,
    SerializationError,
    StepError,
    StepTimeoutError,
    StoreError,
    StoreUnavailableError,
    TetherError,
    WorkflowArgumentError,
    WorkflowCancelledError,
    WorkflowConflictError,
    WorkflowFailedError,
    WorkflowNotFoundError,
)
from tether.settings import Settings
from tether.status import Status

__all__ = [
    "App",
    "Clock",
    "Codec",
    "ConfigError",
    "Context",
    "CorruptRowError",
    "FakeClock",
    "LeaseLostError",
    "NonDeterminismError",
    "NonRetryableError",
    "NotInWorkflowError",
    "PayloadCodec",
    "PayloadTooLargeError",
    "RecoveryLimitError",
    "ResultTimeoutError",
    "Retry",
    "SchemaVersionError",
    "SerializationError",
    "Settings",
    "Status",
    "StepError",
    "StepInfo",
    "StepTimeoutError",
    "StoreError",
    "StoreUnavailableError",
    "SystemClock",
    "TetherError",
    "WorkflowArgumentError",
    "WorkflowCancelledError",
    "WorkflowConflictError",
    "WorkflowFailedError",
    "WorkflowHandle",
    "WorkflowNotFoundError",
    "ZlibCodec",
    "context",
    "run",
]
