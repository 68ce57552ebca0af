"""tether: durable execution for AI agents.

import tether

app = tether.App()

@app.step()
async def fetch(url: str) -> str: ...

@app.workflow()
async def digest(urls: list[str]) -> str: ...
"""

from tether import sync
from tether.agent.app import App
from tether.clock import Clock, FakeClock, SystemClock
from tether.codec import Codec, PayloadCodec, ZlibCodec
from tether.crypto import AesGcmCodec
from tether.engine.app import run
from tether.engine.children import gather
from tether.engine.context import Context, context
from tether.engine.handle import StepInfo, WorkflowHandle
from tether.engine.messages import Approval, recv, request_approval, set_event
from tether.engine.queues import Queue
from tether.engine.retry import Retry
from tether.engine.starting import Starter, StartOptions
from tether.engine.timers import sleep, sleep_until
from tether.engine.versioning import patched
from tether.errors import (
    BackupError,
    ConfigError,
    CorruptRowError,
    DeadlineExceededError,
    DeduplicatedError,
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
    StoreFullError,
    StoreUnavailableError,
    TetherError,
    WorkflowArgumentError,
    WorkflowCancelledError,
    WorkflowConflictError,
    WorkflowFailedError,
    WorkflowFinishedError,
    WorkflowNotFoundError,
)
from tether.settings import Settings
from tether.status import Status

__all__ = [
    "AesGcmCodec",
    "App",
    "Approval",
    "BackupError",
    "Clock",
    "Codec",
    "ConfigError",
    "Context",
    "CorruptRowError",
    "DeadlineExceededError",
    "DeduplicatedError",
    "FakeClock",
    "LeaseLostError",
    "NonDeterminismError",
    "NonRetryableError",
    "NotInWorkflowError",
    "PayloadCodec",
    "PayloadTooLargeError",
    "Queue",
    "RecoveryLimitError",
    "ResultTimeoutError",
    "Retry",
    "SchemaVersionError",
    "SerializationError",
    "Settings",
    "StartOptions",
    "Starter",
    "Status",
    "StepError",
    "StepInfo",
    "StepTimeoutError",
    "StoreError",
    "StoreFullError",
    "StoreUnavailableError",
    "SystemClock",
    "TetherError",
    "WorkflowArgumentError",
    "WorkflowCancelledError",
    "WorkflowConflictError",
    "WorkflowFailedError",
    "WorkflowFinishedError",
    "WorkflowHandle",
    "WorkflowNotFoundError",
    "ZlibCodec",
    "context",
    "gather",
    "patched",
    "recv",
    "request_approval",
    "run",
    "set_event",
    "sleep",
    "sleep_until",
    "sync",
]
