"""What both fake model servers share: the script, the faults, the request log, the runner.

A server answers each request with the next action in its queue: a scripted `Reply`, or a
`Fault` (an HTTP error with the provider's error body and headers, an error event inside a
stream, or a delay). With nothing queued it answers `default` (a short text reply), unless a
sticky fault is set (`fail(..., times=None)`: an outage until `recover()`).

Servers run uvicorn on 127.0.0.1 on an ephemeral port, in a background thread of the test
process (`start()`), or in a process of their own (`python -m tests.agent.servers openai`).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tether.agent.types import ToolCall

FAULTS = (
    "rate_limited",  # 429, with retry-after / retry-after-ms when given
    "server_error",  # 500
    "unavailable",  # 503
    "overloaded",  # 529 (Anthropic's overloaded_error body)
    "context_too_long",  # 400 saying the prompt does not fit
    "unauthorized",  # 401, echoing the key it was sent
    "forbidden",  # 403
    "bad_request",  # 400
    "not_found",  # 404 (unknown model)
    "unprocessable",  # 422
    "content_policy",  # 400 content_policy_violation (OpenAI's shape)
    "slow",  # no error: the reply after `delay` seconds
)


@dataclass(frozen=True)
class Reply:
    """One scripted answer, rendered in the server's wire format.

    Attributes:
        text: the answer's text.
        tool_calls: tool calls, ids as given.
        output: a structured answer: sent as the text (JSON) by the OpenAI server, and as a
            call of the `final_output` tool by the Anthropic server.
        input_tokens: reported input tokens.
        output_tokens: reported output tokens.
        finish: the wire's finish / stop reason, when not the natural one ("content_filter",
            "length", "refusal" ...).
        refusal: OpenAI's `message.refusal`.
        model: the model named in the answer (default: the requested one).
        delay: seconds before the answer starts.
        chunk_delay: seconds between streamed events.
    """

    text: str = ""
    tool_calls: Sequence[ToolCall] = ()
    output: Mapping[str, Any] | None = None
    input_tokens: int = 11
    output_tokens: int = 7
    finish: str | None = None
    refusal: str | None = None
    model: str | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0


@dataclass(frozen=True)
class Fault:
    """A failure to answer one request with: see `FAULTS` for the kinds."""

    kind: str
    retry_after: str | None = None
    retry_after_ms: str | None = None
    message: str | None = None
    delay: float = 0.0
    in_stream: bool = False


@dataclass(frozen=True)
class Recorded:
    """A request the server received."""

    path: str
    headers: Mapping[str, str]
    body: Mapping[str, Any]

    @property
    def stream(self) -> bool:
        """Whether the client asked for a stream."""
        return bool(self.body.get("stream"))


Action = Reply | Fault | Callable[[Mapping[str, Any]], Reply]


@dataclass
class State:
    queue: deque[Action] = field(default_factory=deque)
    sticky: Fault | None = None
    default: Reply = field(default_factory=lambda: Reply(text="ok"))
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self, recorded: Recorded) -> Reply | Fault:
        with self.lock:
            self.requests.append(recorded)
            if self.queue:
                action = self.queue.popleft()
            elif self.sticky is not None:
                action = self.sticky
            else:
                action = self.default
        return action if isinstance(action, Reply | Fault) else action(recorded.body)


class FakeServer:
    """A fake model server; subclasses render replies and faults in one provider's format.

    Tests drive it with `script`, `fail`, `recover` and `reset`, and read `requests`.
    """

    path = "/"

    def __init__(self) -> None:
        self.state = State()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- what tests use -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server's root URL, e.g. http://127.0.0.1:54321."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The URL to give the provider's SDK as `base_url`."""
        return self.url

    @property
    def requests(self) -> list[Recorded]:
        """The requests received so far, oldest first."""
        with self.state.lock:
            return list(self.state.requests)

    def script(self, *replies: Reply | Callable[[Mapping[str, Any]], Reply]) -> None:
        """Answer the next requests with `replies`, in order (a callable gets the body)."""
        with self.state.lock:
            self.state.queue.extend(replies)

    def fail(
        self,
        kind: str,
        *,
        times: int | None = 1,
        retry_after: float | str | None = None,
        retry_after_ms: float | str | None = None,
        message: str | None = None,
        delay: float = 0.0,
        in_stream: bool = False,
    ) -> None:
        """Fail the next `times` requests with `kind` (one of `FAULTS`).

        `times=None` fails every request from now on (after those already queued) until
        `recover()`. `in_stream` (Anthropic) answers a streamed request with 200 and an error
        event after the stream began.
        """
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; one of {', '.join(FAULTS)}")
        fault = Fault(
            kind=kind,
            retry_after=None if retry_after is None else str(retry_after),
            retry_after_ms=None if retry_after_ms is None else str(retry_after_ms),
            message=message,
            delay=delay,
            in_stream=in_stream,
        )
        with self.state.lock:
            if times is None:
                self.state.sticky = fault
            else:
                self.state.queue.extend([fault] * times)

    def recover(self) -> None:
        """End a sticky fault."""
        with self.state.lock:
            self.state.sticky = None

    def reset(self) -> None:
        """Forget the script, the faults and the request log."""
        with self.state.lock:
            self.state.queue.clear()
            self.state.sticky = None
            self.state.default = Reply(text="ok")
            self.state.requests.clear()

    # --- serving --------------------------------------------------------------------------

    def app(self) -> Starlette:
        """The ASGI application."""
        return Starlette(routes=[Route(self.path, self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> Response:
        body = await request.json()
        recorded = Recorded(path=request.url.path, headers=dict(request.headers), body=body)
        action = self.state.next(recorded)
        if action.delay:
            await asyncio.sleep(action.delay)
        if isinstance(action, Fault) and action.kind != "slow":
            if action.in_stream and recorded.stream:
                return self._sse(self.stream_error(action, body))
            status, payload = self.error(action, recorded)
            return JSONResponse(payload, status_code=status, headers=_retry_headers(action))
        reply = action if isinstance(action, Reply) else self.state.default
        if recorded.stream:
            return self._sse(self._paced(self.stream(reply, body), reply.chunk_delay))
        return JSONResponse(self.render(reply, body))

    @staticmethod
    def _sse(events: AsyncIterator[str]) -> StreamingResponse:
        return StreamingResponse(events, media_type="text/event-stream")

    @staticmethod
    async def _paced(events: AsyncIterator[str], pause: float) -> AsyncIterator[str]:
        async for event in events:
            yield event
            if pause:
                await asyncio.sleep(pause)

    def render(self, reply: Reply, body: Mapping[str, Any]) -> dict[str, Any]:
        """The non-streamed answer."""
        raise NotImplementedError

    def stream(self, reply: Reply, body: Mapping[str, Any]) -> AsyncIterator[str]:
        """The streamed answer, as server-sent event strings."""
        raise NotImplementedError

    def stream_error(self, fault: Fault, body: Mapping[str, Any]) -> AsyncIterator[str]:
        """A stream that begins and then fails with `fault`."""
        raise NotImplementedError

    def error(self, fault: Fault, recorded: Recorded) -> tuple[int, dict[str, Any]]:
        """The status and the error body for `fault`."""
        raise NotImplementedError

    def start(self) -> FakeServer:
        """Serve in a background thread on an ephemeral port; return self once it listens."""
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
        # and without it every answer on a kept-alive connection waits for a delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app(),
            log_level="warning",
            lifespan="off",
            ws="none",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake model server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)


def _retry_headers(fault: Fault) -> dict[str, str]:
    headers = {}
    if fault.retry_after is not None:
        headers["retry-after"] = fault.retry_after
    if fault.retry_after_ms is not None:
        headers["retry-after-ms"] = fault.retry_after_ms
    return headers


def pieces(text: str, size: int = 4) -> list[str]:
    """`text` cut into fragments of `size` characters, as a model streams it."""
    return [text[i : i + size] for i in range(0, len(text), size)]


def sse(data: Mapping[str, Any] | str, event: str | None = None) -> str:
    """One server-sent event."""
    payload = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"


def api_key(headers: Mapping[str, str]) -> str:
    """The key a request carried (Authorization: Bearer, or x-api-key)."""
    auth = headers.get("authorization", "")
    return auth.removeprefix("Bearer ").strip() or headers.get("x-api-key", "")
