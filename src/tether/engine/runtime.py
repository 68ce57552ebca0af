"""The engine's API for libraries built on it: steps without an `App`, and the current run.

The agent layer (and your own libraries) use it the way workflows use `@app.step`:

    @runtime.step(name="mylib.fetch")
    async def fetch(url: str) -> str: ...

A step declared here behaves exactly like one declared with `app.step`: a step is bound to
the run that calls it, never to an app, so a library can declare its steps once at import
time and every app's workflows can call them.

`services()` gives a step (or workflow code) the store and payload codec of the worker
executing its run, for data that does not belong in the journal (large, shared, or
content-addressed). `recorded_ahead(name)` tells workflow code whether replay will still pass
a successful entry of step `name`: a library whose steps change local state (files) uses it
to put that state back once, at the last recorded step, instead of at every one.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from tether.codec import Codec
from tether.engine import step as steps
from tether.engine.context import Execution, StepFrame, current
from tether.engine.retry import DEFAULT_RETRY, Retry
from tether.errors import ConfigError, NotInWorkflowError
from tether.store.base import STEP_OK, Store

P = ParamSpec("P")
R = TypeVar("R")


def step(
    *, name: str, retry: Retry | None = DEFAULT_RETRY, timeout: float | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Declare a durable step that belongs to no `App` (see `App.step` for the options).

    Args:
        name: the name recorded in the journal; give it a prefix of your library's, since
            replay compares names.
        retry: the retry policy; None for a single attempt.
        timeout: seconds an attempt may run before it fails with `StepTimeoutError`.
    """
    if not name:
        raise ConfigError("a step needs a non-empty name")
    if timeout is not None and timeout <= 0:
        raise ConfigError(f"timeout={timeout} must be a positive number of seconds")

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        spec = steps.StepSpec(
            name, fn, inspect.iscoroutinefunction(fn), retry or Retry.never(), timeout
        )
        return steps.make_wrapper(spec)

    return decorate


@dataclasses.dataclass(frozen=True, slots=True)
class Services:
    """What the worker executing a run offers the code of that run.

    Attributes:
        store: the app's store (blocking calls: run them off the event loop).
        codec: the app's payload codec (its codecs compress or encrypt data at rest).
        run_id: the run's id.
    """

    store: Store
    codec: Codec
    run_id: str


def services(what: str) -> Services:
    """Return the `Services` of the run whose workflow or step code calls `what`.

    Raises:
        NotInWorkflowError: called outside a workflow.
    """
    cur = current.get()
    ex = cur.execution if isinstance(cur, StepFrame) else cur
    if ex is None:
        raise NotInWorkflowError(f"{what} is available only inside a workflow or its steps")
    return Services(ex.worker.store, ex.worker.codec, ex.run_id)


def recorded_ahead(name: str) -> bool:
    """Whether the journal holds a successful entry of step `name` that replay has yet to reach.

    False on a first execution (the journal is empty) and once replay has passed the last one.
    Call it from workflow code.

    Raises:
        NotInWorkflowError: called outside workflow code.
    """
    cur = current.get()
    if not isinstance(cur, Execution):
        raise NotInWorkflowError("recorded_ahead() belongs in workflow code, not in a step")
    after = cur.peek_seq()
    return any(
        r.seq >= after and r.name == name and r.status == STEP_OK for r in cur.journal.values()
    )
