"""The states a workflow run moves through."""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    """The state of a workflow run, as stored in the database."""

    PENDING = "PENDING"
    """Created and waiting for a worker to claim it."""
    RUNNING = "RUNNING"
    """Owned by a worker, which is executing it (or will resume it after a crash)."""
    WAITING = "WAITING"
    """Suspended until a timer or a message wakes it; holds no worker."""
    SUCCEEDED = "SUCCEEDED"
    """Finished and returned a result."""
    FAILED = "FAILED"
    """Finished with an error."""
    CANCELLED = "CANCELLED"
    """Stopped on request before it finished."""

    @property
    def finished(self) -> bool:
        """Whether the run has reached a final state."""
        return self in _FINISHED


_FINISHED = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})
