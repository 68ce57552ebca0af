"""What both fake model servers share: the script, the faults, the request log, the runner.

A server answers each request with the next action in its queue: a scripted `Reply`, or a
`Fault` (an HTTP error with the provider's error body and headers, an error event inside a
stream, or a delay). With nothing queued it answers `default` (a short text reply, or what a
`respond(fn)` responder computes from the request), unless a sticky fault is set
(`fail(..., times=None)`: an outage until `recover()`). A quota set with `limit(...)` answers
429 to the requests beyond it, as a provider enforcing a rate limit does.

With `log=path` every request received is appended to that file (one JSON line, fsynced
before the answer): its number, receipt time, the conversation's length, a digest of the
body, the client's `x-client-id` header and the status it was answered with. The log
outlives the server and its clients, so tests that kill processes count requests from it.

Servers run uvicorn on 127.0.0.1 on an ephemeral port, in a background thread of the test
process (`start()`), or in a process of their own (`python -m tests.agent.servers openai`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
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
    """A request the server received.

    Attributes:
        path: the URL path.
        headers: the request's headers (lower-case names).
        body: the JSON body.
        seq: the request's number at this server, from 1.
        at: when it was received (`time.time()`).
    """

    path: str
    headers: Mapping[str, str]
    body: Mapping[str, Any]
    seq: int = 0
    at: float = 0.0

    @property
    def stream(self) -> bool:
        """Whether the client asked for a stream."""
        return bool(self.body.get("stream"))


Action = Reply | Fault | Callable[[Mapping[str, Any]], Reply]
Responder = Callable[[Recorded], Reply | Fault]


@dataclass(frozen=True)
class Quota:
    """A provider's rate limit: at most `requests` and `tokens` in any `window` seconds.

    A request's tokens are the usage its answer reports (input plus output); requests
    answered 429 do not count.
    """

    requests: int | None = None
    tokens: int | None = None
    window: float = 60.0


@dataclass
class State:
    queue: deque[Action] = field(default_factory=deque)
    sticky: Fault | None = None
    default: Reply = field(default_factory=lambda: Reply(text="ok"))
    responder: Responder | None = None
    quota: Quota | None = None
    served: deque[tuple[float, int]] = field(default_factory=deque)  # (at, tokens) in quota
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self, recorded: Recorded) -> Reply | Fault:
        """The answer to `recorded` (under the lock: the quota sees requests in order)."""
        with self.lock:
            self.requests.append(recorded)
            answer: Reply | Fault
            if self.queue:
                action = self.queue.popleft()
                answer = action if isinstance(action, Reply | Fault) else action(recorded.body)
            elif self.sticky is not None:
                answer = self.sticky
            elif self.responder is not None:
                answer = self.responder(recorded)
            else:
                answer = self.default
            return self._within_quota(recorded, answer)

    def _within_quota(self, recorded: Recorded, answer: Reply | Fault) -> Reply | Fault:
        quota = self.quota
        if quota is None or not isinstance(answer, Reply):
            return answer
        while self.served and self.served[0][0] <= recorded.at - quota.window:
            self.served.popleft()
        tokens = answer.input_tokens + answer.output_tokens
        used_requests = len(self.served) + 1
        used_tokens = sum(t for _, t in self.served) + tokens
        if (quota.requests is not None and used_requests > quota.requests) or (
            quota.tokens is not None and used_tokens > quota.tokens
        ):
            wait = self.served[0][0] + quota.window - recorded.at if self.served else 0.0
            return Fault("rate_limited", retry_after=f"{max(wait, 0.001):.3f}")
        self.served.append((recorded.at, tokens))
        return answer


class FakeServer:
    """A fake model server; subclasses render replies and faults in one provider's format.

    Tests drive it with `script`, `fail`, `recover` and `reset`, and read `requests`.
    """

    path = "/"

    def __init__(self, *, log: Path | str | None = None) -> None:
        self.state = State()
        self.log = None if log is None else Path(log)
        self._seq = 0
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

    def respond(self, responder: Responder | None) -> None:
        """Answer requests with `responder(recorded)` when nothing is queued (None: `default`).

        A responder computes the answer from the request (the conversation so far), so a
        client that resumes a conversation in a new process gets the answer for its turn.
        """
        with self.state.lock:
            self.state.responder = responder

    def limit(
        self, *, requests: int | None = None, tokens: int | None = None, window: float = 60.0
    ) -> None:
        """Enforce a rate limit: answer 429 (with retry-after) to requests beyond it.

        At most `requests` requests and `tokens` tokens (input plus output, as the answers
        report) are served in any `window` seconds, counted by receipt time.
        """
        with self.state.lock:
            self.state.quota = Quota(requests, tokens, window)
            self.state.served.clear()

    def reset(self) -> None:
        """Forget the script, the faults and the request log."""
        with self.state.lock:
            self.state.queue.clear()
            self.state.sticky = None
            self.state.default = Reply(text="ok")
            self.state.responder = None
            self.state.quota = None
            self.state.served.clear()
            self.state.requests.clear()

    # --- serving --------------------------------------------------------------------------

    def app(self) -> Starlette:
        """The ASGI application."""
        return Starlette(routes=[Route(self.path, self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> Response:
        body = await request.json()
        with self.state.lock:
            self._seq += 1
            seq = self._seq
        headers = dict(request.headers)
        recorded = Recorded(request.url.path, headers, body, seq, time.time())
        action = self.state.next(recorded)
        if self.log is not None:
            _append(self.log, self.log_entry(recorded, action))
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

    def log_entry(self, recorded: Recorded, action: Reply | Fault) -> dict[str, Any]:
        """What the request log says about a request and the answer it got."""
        body = recorded.body
        messages = list(body.get("messages") or [])
        tokens = 0
        if isinstance(action, Fault) and action.kind != "slow":
            status, answer = self.error(action, recorded)[0], action.kind
        else:
            status, answer = 200, "reply"
            if isinstance(action, Reply):
                tokens = action.input_tokens + action.output_tokens
        return {
            "seq": recorded.seq,
            "at": recorded.at,
            "path": recorded.path,
            "model": body.get("model"),
            "messages": len(messages),
            "assistant": sum(1 for m in messages if m.get("role") == "assistant"),
            "digest": body_digest(body),
            "client": recorded.headers.get("x-client-id"),
            "stream": recorded.stream,
            "status": status,
            "answer": answer,
            "tokens": tokens,
        }

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


def body_digest(body: Mapping[str, Any]) -> str:
    """A digest of a request body (its canonical JSON): equal bodies, equal digests."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def prompt_tokens(body: Mapping[str, Any]) -> int:
    """A provider's count of a request's input tokens: a quarter of its prompt's characters.

    The prompt is everything the model reads: the system prompt, the messages (with tool calls
    and their arguments) and the tools' schemas, as compact JSON.
    """
    prompt = {k: body[k] for k in ("system", "messages", "tools", "response_format") if k in body}
    return len(json.dumps(prompt, separators=(",", ":"))) // 4


def read_log(path: Path | str) -> list[dict[str, Any]]:
    """The entries of a server's request log, oldest first (none if it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _append(path: Path, entry: Mapping[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


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
