"""Every exception tether raises.

```
TetherError                     base; the message says what happened and what to do
├── ConfigError                 a bad option: names it and the accepted values
├── SerializationError          a value that cannot be stored as JSON: names the type and where
│   └── PayloadTooLargeError    an encoded payload over the configured limit
├── WorkflowNotFoundError       no run with this id
├── WorkflowConflictError       the id exists with different input
├── WorkflowFinishedError       the run has ended (it takes no more messages)
├── DeduplicatedError           a queue holds an unfinished run with this deduplication id
├── WorkflowArgumentError       arguments that do not fit the workflow's signature
├── WorkflowFailedError         the run ended with an error; .cause is that error
├── WorkflowCancelledError      the run was cancelled (.reason says why, if known)
├── DeadlineExceededError       the reason recorded when a run's deadline passes
├── ResultTimeoutError          waiting for a result took longer than the caller allowed
├── NonDeterminismError         replay met a different step than the journal holds
├── StepError                   a journaled step error whose type cannot be imported here
├── StepTimeoutError            a step attempt ran longer than its timeout
├── NotInWorkflowError          a workflow-only call made outside a workflow or step
├── NonRetryableError           raise it from a step to stop its retries
├── RecoveryLimitError          a run crashed its workers too often and was failed
├── StoreError                  the database
│   ├── StoreUnavailableError   cannot reach it or it failed transiently (retryable)
│   │   └── StoreFullError      the disk (or the database's quota) is full
│   ├── SchemaVersionError      the schema is newer than this code, or not migrated
│   ├── LeaseLostError          another worker owns the run now; this worker must stop it
│   ├── CorruptRowError         a row that cannot be decoded
│   └── BackupError             a backup file that cannot be restored
└── MissionError                (tether.mission) a mission cannot go on as asked
    ├── InvalidTransitionError  a state change the transition table or its guard refuses
    ├── MissionSpecChangedError a resumed mission's spec differs from the launched one
    └── AuditChainError         the audit chain has a broken link (.chain_id, .seq)
```

Errors carry structured attributes (`workflow_id`, `seq`, ...) beside their message, so
code can react without parsing text.
"""

from __future__ import annotations

from typing import ClassVar


class TetherError(Exception):
    """Base class of every error tether raises."""

    retryable: ClassVar[bool] = False


class ConfigError(TetherError):
    """An option has a value tether cannot use."""


class SerializationError(TetherError):
    """A value cannot be encoded to, or decoded from, a stored JSON payload."""


class PayloadTooLargeError(SerializationError):
    """An encoded payload is larger than `Settings.max_payload_bytes`."""

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class WorkflowNotFoundError(TetherError, LookupError):
    """No workflow run has the given id."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(
            f"no workflow run with id {workflow_id!r}; check the id "
            "(`tether workflows list` shows the runs in this database)"
        )
        self.workflow_id = workflow_id


class WorkflowConflictError(TetherError):
    """A run with this id exists with different input."""

    def __init__(self, workflow_id: str, detail: str) -> None:
        super().__init__(
            f"workflow {workflow_id!r} already exists with {detail}; start it under a new id "
            f"or call app.retrieve({workflow_id!r}) to follow the existing run"
        )
        self.workflow_id = workflow_id


class WorkflowFinishedError(TetherError):
    """The run has ended; it can take no more messages."""

    def __init__(self, workflow_id: str, status: str) -> None:
        super().__init__(
            f"workflow {workflow_id!r} has ended ({status}) and takes no more messages; send "
            "to a run that is still going, or start a new one"
        )
        self.workflow_id = workflow_id
        self.status = status


class DeduplicatedError(TetherError):
    """A queue already holds an unfinished run with this deduplication id."""

    def __init__(self, queue: str, dedup_id: str, existing_id: str) -> None:
        super().__init__(
            f"queue {queue!r} already holds run {existing_id!r} with deduplication id "
            f"{dedup_id!r}, not finished yet; follow it with app.retrieve({existing_id!r}), or "
            "enqueue again once it has ended"
        )
        self.queue = queue
        self.dedup_id = dedup_id
        self.existing_id = existing_id


class WorkflowArgumentError(TetherError, TypeError):
    """The arguments given do not fit the workflow function's signature."""


class WorkflowFailedError(TetherError):
    """The run ended with an error; the error itself is `.cause` (and `__cause__`)."""

    def __init__(self, workflow_id: str, cause: BaseException) -> None:
        super().__init__(
            f"workflow {workflow_id!r} failed: {type(cause).__name__}: {cause}; "
            f"`tether workflows show {workflow_id}` shows its steps and traceback"
        )
        self.workflow_id = workflow_id
        self.cause = cause
        self.__cause__ = cause


class WorkflowCancelledError(TetherError):
    """The run was cancelled before it finished."""

    def __init__(self, workflow_id: str, reason: str | None = None) -> None:
        super().__init__(
            f"workflow {workflow_id!r} was cancelled" + (f": {reason}" if reason else "")
        )
        self.workflow_id = workflow_id
        self.reason = reason


class DeadlineExceededError(TetherError):
    """Recorded as the reason of a run cancelled because its deadline passed."""


class ResultTimeoutError(TetherError, TimeoutError):
    """The run did not finish within the time the caller waited; it goes on running."""


class NonDeterminismError(TetherError):
    """Replay met a step that differs from the one journaled at the same position."""

    def __init__(self, workflow_id: str, seq: int, recorded: str, attempted: str) -> None:
        super().__init__(
            f"workflow {workflow_id!r} is not deterministic: journal position {seq} holds step "
            f"{recorded!r} but the code now calls {attempted!r} there; code that changes under "
            "running workflows must keep the recorded order (use a new workflow name or "
            "version for the new code, or fork the run from an earlier step)"
        )
        self.workflow_id = workflow_id
        self.seq = seq
        self.recorded = recorded
        self.attempted = attempted


class StepError(TetherError):
    """A step failed with an exception whose type cannot be rebuilt in this process."""

    def __init__(self, type_name: str, message: str, traceback: str | None = None) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.remote_message = message
        self.remote_traceback = traceback


class StepTimeoutError(TetherError, TimeoutError):
    """A step attempt ran longer than the step's `timeout`."""

    retryable = True


class NotInWorkflowError(TetherError):
    """A call that needs a running workflow (or step) was made outside one."""


class NonRetryableError(TetherError):
    """Raise from a step to fail it at once, without further attempts."""


class RecoveryLimitError(TetherError):
    """A run was resumed after crashes more often than `Settings.max_recoveries` allows."""


class StoreError(TetherError):
    """The database failed or holds something tether cannot use."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached or failed transiently; the operation can be retried."""

    retryable = True


class SchemaVersionError(StoreError):
    """The database schema does not match this version of tether."""


class LeaseLostError(StoreError):
    """This worker no longer owns the run: another worker took it over, or it ended."""

    def __init__(self, workflow_id: str, detail: str = "") -> None:
        super().__init__(
            f"this worker no longer owns workflow {workflow_id!r}"
            + (f" ({detail})" if detail else "")
            + "; another worker resumes it from its journal, nothing needs to be done"
        )
        self.workflow_id = workflow_id


class CorruptRowError(StoreError):
    """A stored row cannot be decoded."""


class StoreFullError(StoreUnavailableError):
    """The database cannot grow: its disk (or its quota) is full.

    Nothing partial was written. It is retryable (freeing space ends it): the runs involved
    stay resumable and go on once space is freed.
    """


class BackupError(StoreError):
    """A backup file is damaged, truncated, or of a format or schema this tether cannot read."""


class MissionError(TetherError):
    """A mission cannot go on as asked."""


class InvalidTransitionError(MissionError):
    """A mission state change that the transition table or its guard does not allow."""

    def __init__(self, message: str, *, source: str, target: str) -> None:
        super().__init__(message)
        self.source = source
        self.target = target


class MissionSpecChangedError(MissionError):
    """A resumed mission's spec differs from the one recorded at launch."""


class AuditChainError(MissionError):
    """An audit chain is broken: a record was edited, deleted, inserted or reordered.

    Attributes:
        chain_id: the chain.
        seq: the first record whose link does not hold.
    """

    def __init__(self, message: str, *, chain_id: str, seq: int) -> None:
        super().__init__(message)
        self.chain_id = chain_id
        self.seq = seq
