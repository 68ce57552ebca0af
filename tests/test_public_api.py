"""The public surface is pinned: changing it is a deliberate act (update this list)."""

from __future__ import annotations

import tether

PUBLIC = [
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


def test_all__is_sorted_and_pinned():
    assert tether.__all__ == sorted(tether.__all__)
    assert tether.__all__ == PUBLIC


def test_every_public_name_resolves():
    for name in tether.__all__:
        assert getattr(tether, name) is not None


def test_every_error_is_a_tether_error_with_a_docstring():
    errors = [getattr(tether, n) for n in tether.__all__ if n.endswith("Error")]
    for error in errors:
        assert issubclass(error, tether.TetherError), error
        assert error.__doc__, error


def test_status__members_as_designed():
    assert [s.value for s in tether.Status] == [
        "PENDING",
        "RUNNING",
        "WAITING",
        "SUCCEEDED",
        "FAILED",
        "CANCELLED",
    ]
