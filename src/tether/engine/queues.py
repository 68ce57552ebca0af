"""Queues: start runs within limits that hold across every worker sharing the database.

    llm = tether.Queue("llm", concurrency=8, rate_limit=(50, 60.0))
    app.register_queue(llm)
    handle = await app.enqueue(llm, summarize, doc_id)
    handle = await app.options(dedup_id=f"sum-{doc_id}", priority=1).enqueue(llm, summarize, doc_id)

A queued run is created PENDING and started by whichever worker (with the queue registered)
claims it first, as far as the limits allow: `concurrency` counts the queue's started,
unfinished runs (running or waiting), `worker_concurrency` a worker's running ones,
`rate_limit=(n, seconds)` the starts in any window of that length. With `priority=True`, runs
with a lower priority number start first; otherwise oldest first. With `partition_key`, at
most `partition_concurrency` (default 1) runs per key run at once: one conversation at a time.
A deduplication id (`app.options(dedup_id=...)`) is refused while an unfinished run of the
queue holds it.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

from tether.engine import checks
from tether.errors import ConfigError
from tether.store.base import QueueLimits


@dataclasses.dataclass(frozen=True)
class Queue:
    """A named queue and its limits (see the module docs).

    Args:
        name: the queue's name, shared by every process that uses it.
        concurrency: most started, unfinished runs across all workers.
        worker_concurrency: most runs of this queue one worker executes at once.
        rate_limit: (n, seconds): at most n starts in any window of that many seconds.
        priority: honour the `priority` given at enqueue (lower numbers first).
        partition_key: the name of a workflow parameter, or a function of the workflow's
            arguments, whose value is the run's partition.
        partition_concurrency: most started, unfinished runs per partition.
    """

    name: str
    concurrency: int | None = None
    worker_concurrency: int | None = None
    rate_limit: tuple[int, float] | None = None
    priority: bool = False
    partition_key: str | Callable[..., str] | None = None
    partition_concurrency: int = 1

    def __post_init__(self) -> None:
        checks.text(self.name, "a queue's name", most=100)
        for option in ("concurrency", "worker_concurrency", "partition_concurrency"):
            value = getattr(self, option)
            if value is not None:
                checks.count(value, f"Queue({option}=...)")
        if self.rate_limit is not None:
            n, per = self.rate_limit
            checks.count(n, "the starts of Queue(rate_limit=(starts, seconds))")
            checks.seconds(per, "the seconds of Queue(rate_limit=(starts, seconds))", positive=True)

    def limits(self) -> QueueLimits:
        """The limits the store enforces when claiming."""
        return QueueLimits(
            self.name,
            concurrency=self.concurrency,
            worker_concurrency=self.worker_concurrency,
            rate_limit=self.rate_limit,
            partition_concurrency=self.partition_concurrency if self.partition_key else None,
        )

    def partition_of(
        self, signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> str | None:
        """The partition of a run started with these arguments."""
        if self.partition_key is None:
            return None
        if callable(self.partition_key):
            return str(self.partition_key(*args, **kwargs))
        bound = signature.bind(*args, **kwargs)
        if self.partition_key not in bound.arguments:
            raise ConfigError(
                f"queue {self.name!r} partitions by parameter {self.partition_key!r}, which "
                "this call does not pass"
            )
        return str(bound.arguments[self.partition_key])
