"""A scripted model: a deterministic `Provider` for demos and tests, with no keys or network.

    from tether.agent.providers import scripted as s

    model = s.ScriptedProvider([
        s.call("search", query="durable execution").failing(s.rate_limited(retry_after=0.1)),
        s.call("search", query="durable execution"),          # a loop: the same call again
        s.reply("Done!"),                                     # claims completion early
        s.answer({"title": "Report", "sources": 2}),          # structured output
    ])
    agent = Agent(model=Model(model, "scripted-1"), ...)

The script is a list of turns: turn n answers the request whose conversation holds n
assistant messages. The position is derived from the request, never from the provider's own
memory, so a run resumed after a crash (in a new process) gets the script's next turn. A turn
can first fail with faults (429 with retry-after, 529, 5xx, timeouts that take real time,
connection errors, context too long, authentication, bad request, content filter), each for a
number of attempts and optionally for one model only, which is how failover is exercised.

Attempts at a turn are counted per conversation, turn and model: in memory, or, given a
`ledger` file, from that file, which survives crashes. Every answered call (fault or answer)
is appended to the ledger as one JSON line and fsynced: the ledger is the witness of what the
provider received, outside tether's journal.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tether.agent.types import (
    ErrorKind,
    FinishReason,
    Message,
    ModelRequest,
    ModelResponse,
    OnToken,
    ProviderError,
    ToolCall,
    Usage,
)
from tether.errors import ConfigError

_STATUS = {
    ErrorKind.RATE_LIMITED: 429,
    ErrorKind.OVERLOADED: 529,
    ErrorKind.SERVER_ERROR: 500,
    ErrorKind.CONTEXT_TOO_LONG: 400,
    ErrorKind.AUTHENTICATION: 401,
    ErrorKind.BAD_REQUEST: 400,
    ErrorKind.CONTENT_FILTERED: 400,
}
_WORDS = re.compile(r"\S+\s*|\s+")


@dataclasses.dataclass(frozen=True, slots=True)
class Fault:
    """A failure the scripted model raises before answering a turn.

    Attributes:
        kind: the class of failure.
        retry_after: the retry-after the error carries.
        delay: real seconds to wait before failing (capped at the call's timeout).
        model: fail only calls to this model (None: any model).
        times: how many attempts fail this way (None: every attempt).
    """

    kind: ErrorKind
    retry_after: float | None = None
    delay: float = 0.0
    model: str | None = None
    times: int | None = 1

    def error(self, provider: str, turn: int, attempt: int) -> ProviderError:
        """The `ProviderError` this fault raises."""
        return ProviderError(
            f"scripted {self.kind.value} at turn {turn}, attempt {attempt}",
            kind=self.kind,
            provider=provider,
            status=_STATUS.get(self.kind),
            retry_after=self.retry_after,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Turn:
    """One scripted answer: text, tool calls, or both; optionally faults first, or slowly.

    Attributes:
        content: the answer's text.
        tool_calls: (tool name, arguments) pairs; call ids are `call_<turn>_<i>`.
        faults: failures before the answer (see `Fault`).
        delay: real seconds the answer takes (over the call's timeout: a timeout).
        usage: the usage to report (default: about four characters a token).
        finish_reason: the reason to report (default: "tool_calls" or "stop").
    """

    content: str = ""
    tool_calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    faults: tuple[Fault, ...] = ()
    delay: float = 0.0
    usage: Usage | None = None
    finish_reason: FinishReason | None = None

    def failing(self, *faults: Fault) -> Turn:
        """This turn, preceded by `faults`."""
        return dataclasses.replace(self, faults=self.faults + faults)

    def slow(self, delay: float) -> Turn:
        """This turn, taking `delay` real seconds to answer."""
        return dataclasses.replace(self, delay=delay)

    def fault_for(self, model: str, attempt: int) -> Fault | None:
        """The fault that attempt number `attempt` (1-based) at `model` meets, if any."""
        left = attempt
        for fault in self.faults:
            if fault.model not in (None, model):
                continue
            if fault.times is None or left <= fault.times:
                return fault
            left -= fault.times
        return None


def reply(text: str) -> Turn:
    """A final text answer."""
    return Turn(content=text)


def answer(value: Any) -> Turn:
    """A final answer of `value` as JSON (structured output)."""
    return Turn(content=json.dumps(value))


def malformed(text: str = '{"unterminated": ') -> Turn:
    """A final answer that is not valid JSON (structured output fails to parse)."""
    return Turn(content=text)


def claim_done(text: str = "All done: the task is complete.") -> Turn:
    """A premature claim of completion (misbehaviour for monitors to catch)."""
    return Turn(content=text)


def call(name: str, arguments: dict[str, Any] | None = None, /, **kwargs: Any) -> Turn:
    """A turn that calls one tool: `call("search", query="x")`."""
    return Turn(tool_calls=((name, {**(arguments or {}), **kwargs}),))


def calls(*pairs: tuple[str, dict[str, Any]], text: str = "") -> Turn:
    """A turn that calls several tools: `calls(("a", {...}), ("b", {...}))`."""
    return Turn(content=text, tool_calls=tuple(pairs))


def loop(turn: Turn, times: int) -> list[Turn]:
    """The same turn `times` times in a row (an agent stuck repeating a call)."""
    return [turn] * times


def rate_limited(retry_after: float | None = None, **options: Any) -> Fault:
    """A 429, with the provider's retry-after if given."""
    return Fault(ErrorKind.RATE_LIMITED, retry_after=retry_after, **options)


def overloaded(**options: Any) -> Fault:
    """A 529 overloaded."""
    return Fault(ErrorKind.OVERLOADED, **options)


def server_error(**options: Any) -> Fault:
    """A 500."""
    return Fault(ErrorKind.SERVER_ERROR, **options)


def timeout(delay: float = 0.0, **options: Any) -> Fault:
    """A timeout, after `delay` real seconds (capped at the call's timeout)."""
    return Fault(ErrorKind.TIMEOUT, delay=delay, **options)


def connection(**options: Any) -> Fault:
    """The provider cannot be reached."""
    return Fault(ErrorKind.CONNECTION, **options)


def context_too_long(**options: Any) -> Fault:
    """The request does not fit the model's context."""
    return Fault(ErrorKind.CONTEXT_TOO_LONG, **options)


def auth_failed(**options: Any) -> Fault:
    """A 401: a bad key."""
    return Fault(ErrorKind.AUTHENTICATION, **options)


def bad_request(**options: Any) -> Fault:
    """A 400: the request is wrong."""
    return Fault(ErrorKind.BAD_REQUEST, **options)


def content_filtered(**options: Any) -> Fault:
    """The provider refused the content."""
    return Fault(ErrorKind.CONTENT_FILTERED, **options)


@dataclasses.dataclass(frozen=True, slots=True)
class Received:
    """A call the scripted model answered (with an answer or a fault)."""

    conversation: str
    turn: int
    model: str
    attempt: int
    outcome: str  # "ok" or the fault's kind
    pid: int


class ScriptedProvider:
    """A deterministic `Provider` that plays a script (see the module docs).

    Args:
        script: the turns, in order; nested lists (from `loop`) are flattened.
        name: the provider's name.
        ledger: a file to append every answered call to (fsynced), which also makes attempt
            counts survive crashes.
        token_delay: real seconds between streamed fragments.
        recovery: the turns played after a correction: once the conversation holds a user
            message starting with `marker` (a corrective message), turn n answers the request
            with n assistant messages after the last such message. This is how a scripted
            agent that drifted is shown to follow a correction.
        marker: how a corrective message starts.
    """

    def __init__(
        self,
        script: Iterable[Turn | Sequence[Turn]],
        *,
        name: str = "scripted",
        ledger: str | Path | None = None,
        token_delay: float = 0.0,
        recovery: Iterable[Turn | Sequence[Turn]] = (),
        marker: str = "[mission]",
    ) -> None:
        self.name = name
        self.script: tuple[Turn, ...] = tuple(_flatten(script))
        self.recovery: tuple[Turn, ...] = tuple(_flatten(recovery))
        self.marker = marker
        self.ledger = Path(ledger) if ledger is not None else None
        self.token_delay = token_delay
        self.calls: list[Received] = []
        self._attempts: collections.Counter[tuple[str, int, str]] = collections.Counter()

    async def complete(
        self,
        request: ModelRequest,
        *,
        timeout: float,  # noqa: ASYNC109 - the protocol's parameter; enforced below
        on_token: OnToken | None = None,
    ) -> ModelResponse:
        """Answer `request` with the script's turn for its conversation (or its fault)."""
        script, number, label = self._position(request.messages)
        conversation = conversation_key(request.messages)
        if number >= len(script):
            raise ProviderError(
                f"the {label} has {len(script)} turns and the conversation asks for turn "
                f"{number}; add turns to it",
                kind=ErrorKind.BAD_REQUEST,
                provider=self.name,
                status=400,
            )
        turn = script[number]
        attempt = self._next_attempt(conversation, number, request.model)
        fault = turn.fault_for(request.model, attempt)
        if fault is not None:
            if fault.delay > 0:
                await asyncio.sleep(min(fault.delay, timeout))
            self._receive(Received(conversation, number, request.model, attempt, fault.kind, 0))
            raise fault.error(self.name, number, attempt)
        if turn.delay > 0:
            await asyncio.sleep(min(turn.delay, timeout))
            if turn.delay >= timeout:
                self._receive(Received(conversation, number, request.model, attempt, "timeout", 0))
                raise Fault(ErrorKind.TIMEOUT).error(self.name, number, attempt)
        response = self._response(request, turn, number)
        if on_token is not None:
            await self._stream(response.message.content, on_token)
        self._receive(Received(conversation, number, request.model, attempt, "ok", 0))
        return response

    def _position(self, messages: Sequence[Message]) -> tuple[tuple[Turn, ...], int, str]:
        """The script that applies to this conversation, and the turn it asks for."""
        corrected = [
            i
            for i, m in enumerate(messages)
            if m.role == "user" and m.content.startswith(self.marker)
        ]
        if self.recovery and corrected:
            after = messages[corrected[-1] :]
            return self.recovery, sum(1 for m in after if m.role == "assistant"), "recovery script"
        return self.script, sum(1 for m in messages if m.role == "assistant"), "script"

    def _response(self, request: ModelRequest, turn: Turn, number: int) -> ModelResponse:
        prefix = ""
        if self._position(request.messages)[0] is not self.script:
            prefix = f"r{len(request.messages)}_"  # unique when a recovery script restarts
        calls = tuple(
            ToolCall(id=f"call_{prefix}{number}_{i}", name=name, arguments=args)
            for i, (name, args) in enumerate(turn.tool_calls)
        )
        usage = turn.usage or Usage(
            input_tokens=sum(len(m.content) for m in request.messages) // 4 + 1,
            output_tokens=len(turn.content) // 4 + 8 * len(calls) + 1,
        )
        finish = turn.finish_reason or ("tool_calls" if calls else "stop")
        return ModelResponse(
            provider=self.name,
            model=request.model,
            message=Message(role="assistant", content=turn.content, tool_calls=calls),
            finish_reason=finish,
            usage=usage,
        )

    async def _stream(self, text: str, on_token: OnToken) -> None:
        for fragment in _WORDS.findall(text):
            on_token(fragment)
            await asyncio.sleep(self.token_delay)

    def _next_attempt(self, conversation: str, number: int, model: str) -> int:
        key = (conversation, number, model)
        if self.ledger is not None:
            return 1 + sum(
                1 for r in read_ledger(self.ledger) if (r.conversation, r.turn, r.model) == key
            )
        self._attempts[key] += 1
        return self._attempts[key]

    def _receive(self, received: Received) -> None:
        received = dataclasses.replace(received, pid=os.getpid())
        self.calls.append(received)
        if self.ledger is None:
            return
        line = json.dumps(dataclasses.asdict(received)) + "\n"
        fd = os.open(self.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())  # one O_APPEND write: a kill cannot split it
            os.fsync(fd)
        finally:
            os.close(fd)


def read_ledger(path: str | Path) -> list[Received]:
    """The calls a scripted model's ledger file holds, in order."""
    path = Path(path)
    if not path.exists():
        return []
    return [Received(**json.loads(line)) for line in path.read_text().splitlines() if line]


def conversation_key(messages: Sequence[Message]) -> str:
    """A short key for the conversation: a hash of the messages before the first answer."""
    opening = []
    for message in messages:
        if message.role == "assistant":
            break
        opening.append(message.model_dump(mode="json"))
    digest = hashlib.sha256(json.dumps(opening, sort_keys=True).encode()).hexdigest()
    return digest[:16]


def _flatten(script: Iterable[Any]) -> list[Turn]:
    turns: list[Turn] = []
    for item in script:
        if isinstance(item, Turn):
            turns.append(item)
        elif isinstance(item, Sequence) and all(isinstance(t, Turn) for t in item):
            turns.extend(item)
        else:
            raise ConfigError(f"a script holds Turns (or lists of them), not {item!r}")
    return turns
