"""Acting on runs from outside: messages, events, cancel, resume, fork.

These are the bodies of the `App` methods of the same names; they work from any process,
entered or not. A process that executes the run is told at once; others learn it from the
store (a cancelled run's next journal write is refused, and its worker checks its runs'
statuses with every heartbeat).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

from tether.codec import codec_names, event_place, message_place
from tether.crypto import NAME as ENCRYPTING_CODEC
from tether.engine import checks, failures
from tether.engine.handle import WorkflowHandle
from tether.errors import ConfigError, TetherError, WorkflowCancelledError, WorkflowNotFoundError
from tether.store.base import NewMessage

if TYPE_CHECKING:
    from tether.engine.app import App

_POLL_FIRST = 0.01
_POLL_MAX = 0.5


async def send(app: App, workflow_id: str, topic: str, payload: Any, key: str | None) -> bool:
    """Deliver a message; False if one with the same key was delivered before."""
    checks.text(topic, "a topic")
    if key is not None:
        checks.text(key, "a message key", most=1000)
    # Every message has an identity, bound to its payload at rest: the sender's key, or a
    # fresh one (which no other send can repeat, so it changes nothing about delivery).
    key = key if key is not None else f"tether:{uuid.uuid4().hex}"
    what = f"a message on {topic!r} to {workflow_id!r}"
    data = app.codec.encode(payload, what, message_place(workflow_id, topic, key))
    message = NewMessage(workflow_id, topic, data, app._now(), key)
    delivered = await app._db(app.store.send_message, message)
    if app._worker is not None:
        app._worker.notify(workflow_id)
    return bool(delivered)


async def get_event(
    app: App,
    workflow_id: str,
    key: str,
    timeout: float | None,  # noqa: ASYNC109
) -> Any:
    """The event's value; wait up to `timeout` seconds for it to be set (None if it is not)."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    delay = _POLL_FIRST
    app.retrieve(workflow_id)  # WorkflowNotFoundError for an unknown id
    while True:
        value = await app._db(app.store.get_event, workflow_id, key)
        if value is not None:
            what = f"event {key!r} of {workflow_id!r}"
            return app.codec.decode(value, Any, what, event_place(workflow_id, key))
        if deadline is not None and loop.time() >= deadline:
            return None
        pause = delay if deadline is None else min(delay, max(0.0, deadline - loop.time()))
        await asyncio.sleep(pause)
        delay = min(delay * 2, _POLL_MAX)


async def cancel(app: App, workflow_id: str) -> list[str]:
    """Cancel a run and its unfinished descendants; return the ids cancelled."""
    reason = failures.reason(app.codec, WorkflowCancelledError(workflow_id))
    cancelled = await app._db(app.store.cancel_run, workflow_id, reason, app._now())
    if app._worker is not None:
        app._worker.cancel_local(cancelled)
    return list(cancelled)


async def resume(app: App, workflow_id: str) -> WorkflowHandle[Any]:
    """Make a cancelled or failed run continue from its journal."""
    before = await app._db(app.store.get_run, workflow_id)
    if before is None:
        raise WorkflowNotFoundError(workflow_id)
    if before.status not in ("CANCELLED", "FAILED"):
        raise TetherError(
            f"workflow {workflow_id!r} is {before.status}; only a CANCELLED or FAILED run can "
            "be resumed"
        )
    row = await app._db(app.store.resume_run, workflow_id, app._now())
    if app._worker is not None:
        app._worker.wake_claims()
    return WorkflowHandle(app, workflow_id, row.name)


async def fork(
    app: App, workflow_id: str, from_step: int, new_id: str | None
) -> WorkflowHandle[Any]:
    """Start a new run that keeps `workflow_id`'s journal before `from_step`."""
    checks.count(from_step, "from_step (a journal position)", least=0)
    fork_id = new_id or f"{workflow_id}-fork-{uuid.uuid4().hex[:8]}"

    # Every copied payload is re-sealed for its new row. One this app cannot open is copied
    # as is if its codecs do not bind rows (compression: a CLI without codecs can fork), and
    # makes the fork fail whole if it is encrypted, instead of copying it where it could
    # never be read.
    def reseal(data: bytes, source: str, target: str) -> bytes:
        try:
            return app.codec.reseal(data, f"a payload of {workflow_id!r}", source, target)
        except ConfigError:
            if ENCRYPTING_CODEC in codec_names(data):
                raise
            return data

    row = await app._db(app.store.fork_run, workflow_id, fork_id, from_step, app._now(), reseal)
    if app._worker is not None:
        app._worker.wake_claims()
    return WorkflowHandle(app, fork_id, row.name)
