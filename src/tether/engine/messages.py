"""Messages and events: durable conversation between a run and the world.

A message goes to a run's inbox (`app.send`); the run takes messages from a topic in order
with `tether.recv`, each exactly once: taking the message and journaling it are one
transaction. A run waiting on `recv` longer than `Settings.wait_in_memory` is evicted and
woken when a message comes. `tether.set_event` publishes a value (progress, a partial result)
that anyone can read with `app.get_event`.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Awaitable
from typing import Any

from tether.codec import Codec, event_place
from tether.engine import checks
from tether.engine.context import Execution, Wait
from tether.engine.waiting import Position, execution, wait_async, wait_sync
from tether.errors import LeaseLostError, TetherError
from tether.store.base import Reseal, StepRecord

RECV = "tether.recv"
SET_EVENT = "tether.set_event"


def recv(topic: str, *, timeout: float | datetime.timedelta | None = None) -> Awaitable[Any]:
    """Take the next message on `topic` sent to this run; None if `timeout` passes first.

        reply = await tether.recv("approval", timeout=3600)

    The deadline is journaled: after a restart the wait ends at the original deadline.
    Without a timeout the run waits as long as it takes (evicted, holding no memory).
    """
    pos = _position("tether.recv()", topic, blocking=False)
    return _recv(pos, topic, _deadline(pos, timeout))


def recv_blocking(topic: str, *, timeout: float | datetime.timedelta | None = None) -> Any:
    """`recv` for plain `def` workflows."""
    pos = _position("tether.sync.recv()", topic, blocking=True)
    return _recv_blocking(pos, topic, _deadline(pos, timeout))


async def _recv(pos: Position, topic: str, deadline: float | None) -> Any:
    ex = pos.ex
    prior = pos.replay()
    if pos.final(prior):
        assert prior is not None
        return _payload(pos, prior)
    if prior is not None:
        deadline = prior.retry_at
    got = await ex.worker.db(_take, pos, topic)
    if got is None and not _expired(ex, deadline):
        if prior is None:
            await pos.acommit(pos.entry(None, waiting=True, waiting_until=deadline))

        async def ready() -> tuple[bool, StepRecord | None]:
            record = await ex.worker.db(_take, pos, topic)
            return record is not None, record

        _, got = await wait_async(pos, Wait(deadline=deadline, topic=topic), ready)
    if got is None:
        got = await pos.acommit(pos.entry(b"null"))  # timed out
    return _payload(pos, got)


def _recv_blocking(pos: Position, topic: str, deadline: float | None) -> Any:
    ex = pos.ex
    prior = pos.replay()
    if pos.final(prior):
        assert prior is not None
        return _payload(pos, prior)
    if prior is not None:
        deadline = prior.retry_at
    got = _take(pos, topic)
    if got is None and not _expired(ex, deadline):
        if prior is None:
            pos.commit(pos.entry(None, waiting=True, waiting_until=deadline))

        def ready() -> tuple[bool, StepRecord | None]:
            record = _take(pos, topic)
            return record is not None, record

        _, got = wait_sync(pos, Wait(deadline=deadline, topic=topic), ready)
    if got is None:
        got = pos.commit(pos.entry(b"null"))
    return _payload(pos, got)


def _take(pos: Position, topic: str) -> StepRecord | None:
    """Take the oldest message on `topic` into this position's journal entry, if one is there."""
    ex = pos.ex
    now = ex.worker.clock.now()
    got = ex.worker.store.consume_message(
        ex.lease, pos.seq, RECV, topic, now, resealer(ex.worker.codec)
    )
    if isinstance(got, LeaseLostError):
        raise ex.fail(got)
    return got


def set_event(key: str, value: Any) -> Awaitable[None]:
    """Publish `value` under `key` for anyone to read with `app.get_event` (latest wins).

    await tether.set_event("progress", {"done": 3, "of": 10})
    """
    pos = _position("tether.set_event()", key, blocking=False, name=SET_EVENT)
    return _set_event(pos, key, value)


def set_event_blocking(key: str, value: Any) -> None:
    """`set_event` for plain `def` workflows."""
    pos = _position("tether.sync.set_event()", key, blocking=True, name=SET_EVENT)
    record, payload = _event_record(pos, key, value)
    if record is not None:
        _publish(pos, record, key, payload)


async def _set_event(pos: Position, key: str, value: Any) -> None:
    record, payload = _event_record(pos, key, value)
    if record is not None:
        await pos.ex.worker.db(_publish, pos, record, key, payload)


def _event_record(pos: Position, key: str, value: Any) -> tuple[StepRecord | None, bytes]:
    if pos.final(pos.replay()):
        return None, b""
    ex = pos.ex
    what = f"event {key!r} of {ex.run_id!r}"
    payload = ex.worker.codec.encode(value, what, event_place(ex.run_id, key))
    return pos.entry(b"null"), payload


def _publish(pos: Position, record: StepRecord, key: str, payload: bytes) -> None:
    ex = pos.ex
    out = ex.worker.store.set_event(ex.lease, record, key, payload)
    if isinstance(out, LeaseLostError):
        raise ex.fail(out)


@dataclasses.dataclass(frozen=True, slots=True)
class Approval:
    """A human's answer to `tether.request_approval`.

    Attributes:
        approved: True only for an explicit approval.
        timed_out: no answer came before the deadline.
        by: who answered, if they said.
        reason: why, if they said.
    """

    approved: bool
    timed_out: bool = False
    by: str | None = None
    reason: str | None = None


async def request_approval(
    topic: str,
    request: Any,
    *,
    timeout: float | datetime.timedelta,  # noqa: ASYNC109
) -> Approval:
    """Ask a human to approve something, and wait durably for the answer or the deadline.

    The request is published as the event `approval:<topic>` (for a UI or a chat bot to show);
    the answer is the next message on `topic` (`{"approved": true, "by": "ana"}`), sent with
    `app.send(run_id, topic, ...)` or `tether send`. While it waits the run holds no thread
    and no coroutine. No answer in time is a refusal with `timed_out=True`.

        answer = await tether.request_approval("refund", {"amount": 120}, timeout=3600)
        if answer.approved:
            await refund(order)
    """
    await set_event(f"approval:{topic}", request)
    reply = await recv(topic, timeout=timeout)
    if reply is None:
        return Approval(approved=False, timed_out=True)
    if not isinstance(reply, dict):
        return Approval(approved=reply is True)
    return Approval(
        approved=reply.get("approved") is True,
        by=_optional_str(reply.get("by")),
        reason=_optional_str(reply.get("reason")),
    )


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _position(what: str, key: str, *, blocking: bool, name: str = RECV) -> Position:
    checks.text(key, f"the name given to {what}")
    ex = execution(what)
    if ex.is_async == blocking:
        raise TetherError(
            f"{what} does not fit a {'async def' if ex.is_async else 'plain def'} workflow; "
            "async workflows use tether.recv / tether.set_event, plain def ones "
            "tether.sync.recv / tether.sync.set_event"
        )
    return Position(ex, name)


def _deadline(pos: Position, timeout: float | datetime.timedelta | None) -> float | None:
    return None if timeout is None else pos.started_at + checks.seconds(timeout, "timeout")


def _expired(ex: Execution, deadline: float | None) -> bool:
    return deadline is not None and ex.worker.clock.now() >= deadline


def _payload(pos: Position, record: StepRecord) -> Any:
    return pos.value(record, Any, f"a message to {pos.ex.run_id!r}")


def resealer(codec: Codec) -> Reseal | None:
    """How the store moves a payload between rows for `codec`: None if it stores JSON as is."""
    if not codec.active:
        return None
    return lambda data, source, target: codec.reseal(data, "a message", source, target)
