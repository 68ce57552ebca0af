"""A TCP fault proxy between tether and PostgreSQL, controlled by the test at run time.

    with FaultProxy(("127.0.0.1", 5432)) as proxy:
        url = proxy.url("postgresql://postgres@127.0.0.1:5432/db")   # same URL, the proxy's port
        proxy.delay(0.2)          # every chunk, either way, 200 ms late
        proxy.blackhole()         # nothing flows; new connections hang; bytes are held
        proxy.pass_through()      # held bytes flow again, in order (a healed partition)
        proxy.reset()             # RST every current connection (SO_LINGER 0)
        done = proxy.lose_next_commit()      # the next COMMIT commits, its reply never comes
        done = proxy.lose_next_commit(b"INSERT INTO")   # the next autocommit statement like it

One asyncio loop in a thread of its own carries every connection; the control methods are
thread-safe and return once the loop has applied them.

Lost acknowledgements follow the wire protocol. psycopg 3 sends `COMMIT` (and `BEGIN`) as a
simple query (a 'Q' message) outside pipeline mode, and as an unnamed Parse/Bind/Execute
followed by Sync inside a pipeline; an autocommit statement commits when the server reaches
the Sync after its Execute. The proxy parses both directions into messages and counts what
the server owes the client: every StartupMessage, Query, Sync and FunctionCall is answered by
exactly one ReadyForQuery ('Z'). At a commit point it notes the number of that answer,
forwards the messages before it, swallows the rest of the reply up to and including that 'Z'
(so the server has committed before anything is cut), then resets both sides. A connection
that negotiates TLS is forwarded opaquely and never matched.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

_SSL_REQUEST, _GSS_REQUEST, _CANCEL_REQUEST = 80877103, 80877104, 80877102
_ANSWERED = frozenset((b"Q", b"S", b"F"))  # client messages each answered by one ReadyForQuery
_COMMIT_WORDS = (b"COMMIT", b"END", b"COMMIT TRANSACTION", b"COMMIT WORK")


def _rst(transport: asyncio.BaseTransport | None) -> None:
    """Close a transport with SO_LINGER 0, so the peer gets a RST rather than a FIN."""
    if transport is None or transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert isinstance(transport, asyncio.Transport)
    transport.abort()


def _is_commit(query: bytes) -> bool:
    text = query.rstrip(b"\x00").strip().rstrip(b";").strip().upper()
    return text in _COMMIT_WORDS


def _matches(statement: bytes, armed: _Armed) -> bool:
    if armed.match is None:
        return _is_commit(statement)
    return armed.match in statement and not _is_commit(statement)


@dataclasses.dataclass
class _Armed:
    """A lost acknowledgement to inflict: on an explicit COMMIT, or a statement like `match`."""

    match: bytes | None
    done: threading.Event


class _ClientParser:
    """Splits what the client sends into messages; finds commit points."""

    def __init__(self) -> None:
        self.buffer = b""
        self.startup = True  # the next message has no type byte
        self.opaque = False
        self.answers = 0  # ReadyForQuery messages the client's messages have asked for
        self.statements: dict[bytes, bytes] = {}  # prepared statement name -> its text
        self.pending: list[bytes] = []  # statements parsed or bound since the last Sync
        self.single_byte_answers = 0  # SSLRequest/GSSENCRequest answered by one byte

    def feed(self, data: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Yield (type, whole message bytes); type b"" for a startup-phase message."""
        if self.opaque:
            yield b"", data
            return
        self.buffer += data
        while True:
            msg = self._startup() if self.startup else self._typed()
            if msg is None:
                return
            yield msg

    def _startup(self) -> tuple[bytes, bytes] | None:
        if len(self.buffer) < 8:
            return None
        (size,) = struct.unpack("!i", self.buffer[:4])
        if len(self.buffer) < size:
            return None
        msg, self.buffer = self.buffer[:size], self.buffer[size:]
        (code,) = struct.unpack("!i", msg[4:8])
        if code in (_SSL_REQUEST, _GSS_REQUEST):
            self.single_byte_answers += 1
        elif code != _CANCEL_REQUEST:
            self.startup = False
            self.answers += 1
        return b"", msg

    def _typed(self) -> tuple[bytes, bytes] | None:
        if len(self.buffer) < 5:
            return None
        (size,) = struct.unpack("!i", self.buffer[1:5])
        if len(self.buffer) < size + 1:
            return None
        msg, self.buffer = self.buffer[: size + 1], self.buffer[size + 1 :]
        if msg[:1] in _ANSWERED:
            self.answers += 1
        return msg[:1], msg

    def commit_point(self, kind: bytes, msg: bytes, armed: _Armed | None) -> bool:
        """Whether this message is where the armed commit happens (tracks statements)."""
        body = msg[5:]
        if kind == b"Q":
            return armed is not None and _matches(body, armed)
        if kind == b"P":
            name, _, rest = body.partition(b"\x00")
            text = rest.partition(b"\x00")[0]
            self.statements[name] = text
            self.pending.append(text)
        elif kind == b"B":
            _portal, _, rest = body.partition(b"\x00")
            known = self.statements.get(rest.partition(b"\x00")[0])
            if known is not None:
                self.pending.append(known)
        elif kind == b"S":
            bound, self.pending = self.pending, []
            return armed is not None and any(_matches(text, armed) for text in bound)
        return False


class _ServerParser:
    """Splits what the server sends into messages (after any one-byte TLS answers)."""

    def __init__(self, client: _ClientParser) -> None:
        self.client = client
        self.buffer = b""
        self.ready = 0  # ReadyForQuery messages seen

    def feed(self, data: bytes) -> Iterator[tuple[bytes, bytes]]:
        if self.client.opaque:
            yield b"", data
            return
        self.buffer += data
        while self.buffer:
            if self.client.single_byte_answers:
                self.client.single_byte_answers -= 1
                answer, self.buffer = self.buffer[:1], self.buffer[1:]
                if answer in (b"S", b"G"):  # TLS or GSS encryption: no more parsing
                    self.client.opaque = True
                    yield b"", answer + self.buffer
                    self.buffer = b""
                    return
                yield b"", answer
                continue
            if len(self.buffer) < 5:
                return
            (size,) = struct.unpack("!i", self.buffer[1:5])
            if len(self.buffer) < size + 1:
                return
            msg, self.buffer = self.buffer[: size + 1], self.buffer[size + 1 :]
            if msg[:1] == b"Z":
                self.ready += 1
            yield msg[:1], msg


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, proxy: FaultProxy, client: asyncio.Transport) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: asyncio.Transport | None = None
        self.to_server = _ClientParser()
        self.from_server = _ServerParser(self.to_server)
        self.held: list[tuple[bool, bytes]] = []  # (to the server?, bytes) while blackholed
        self.early: list[bytes] = []  # client bytes before the upstream connection exists
        self.doomed_at: int | None = None  # number of the ReadyForQuery never to deliver
        self.doomed: _Armed | None = None
        self.last_due = 0.0
        self.closed = False

    # -- client to server ----------------------------------------------------------------

    def from_client(self, data: bytes) -> None:
        if self.upstream is None:
            self.early.append(data)
            return
        for kind, msg in self.to_server.feed(data):
            armed = self.proxy.armed if self.doomed_at is None else None
            if kind and self.to_server.commit_point(kind, msg, armed):
                assert armed is not None
                self.proxy.armed = None
                self.doomed_at, self.doomed = self.to_server.answers, armed
            self.send(True, msg)

    # -- server to client ----------------------------------------------------------------

    def from_upstream(self, data: bytes) -> None:
        for kind, msg in self.from_server.feed(data):
            if self.doomed_at is not None and self.from_server.ready >= self.doomed_at - (
                kind != b"Z"
            ):
                # Part of the reply to the commit point: swallowed. Its ReadyForQuery means
                # the server has committed: now cut both sides.
                if kind == b"Z":
                    assert self.doomed is not None
                    self.abort()
                    self.doomed.done.set()
                    return
                continue
            self.send(False, msg)

    # -- plumbing --------------------------------------------------------------------------

    def send(self, to_server: bool, data: bytes) -> None:
        if self.proxy.blackholed:
            self.held.append((to_server, data))
            return
        if self.proxy.latency <= 0:
            self._write(to_server, data)
            return
        loop = self.proxy.loop
        due = max(loop.time() + self.proxy.latency, self.last_due + 1e-6)
        self.last_due = due
        loop.call_at(due, self._write_later, to_server, data)

    def _write_later(self, to_server: bool, data: bytes) -> None:
        if self.proxy.blackholed:
            self.held.append((to_server, data))
        else:
            self._write(to_server, data)

    def _write(self, to_server: bool, data: bytes) -> None:
        target = self.upstream if to_server else self.client
        if target is not None and not target.is_closing():
            target.write(data)

    def pause(self) -> None:
        for t in (self.client, self.upstream):
            if t is not None and not t.is_closing():
                t.pause_reading()

    def resume(self) -> None:
        held, self.held = self.held, []
        for to_server, data in held:
            self.send(to_server, data)
        for t in (self.client, self.upstream):
            if t is not None and not t.is_closing():
                t.resume_reading()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            _rst(self.client)
            _rst(self.upstream)
            self.proxy.links.discard(self)

    async def connect(self) -> None:
        loop = self.proxy.loop
        try:
            _, protocol = await loop.create_connection(
                lambda: _Upstream(self), *self.proxy.upstream
            )
        except OSError:
            self.abort()
            return
        del protocol
        early, self.early = self.early, []
        for data in early:
            self.from_client(data)
        if self.proxy.blackholed:
            self.pause()
        else:
            self.client.resume_reading()


class _Client(asyncio.Protocol):
    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.link: _Link | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.link = link = _Link(self.proxy, transport)
        self.proxy.links.add(link)
        transport.pause_reading()  # until the upstream connection exists
        if self.proxy.blackholed:
            self.proxy.waiting.append(link)  # connects when the partition heals
        else:
            self.proxy.loop.create_task(link.connect())

    def data_received(self, data: bytes) -> None:
        assert self.link is not None
        self.link.from_client(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.link is not None and not self.link.closed:
            self.link.closed = True
            self.proxy.links.discard(self.link)
            if self.link.upstream is not None:
                self.link.upstream.close()


class _Upstream(asyncio.Protocol):
    def __init__(self, link: _Link) -> None:
        self.link = link

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.link.upstream = transport
        if self.link.closed:
            transport.abort()

    def data_received(self, data: bytes) -> None:
        self.link.from_upstream(data)

    def connection_lost(self, exc: Exception | None) -> None:
        link = self.link
        if not link.closed:
            link.closed = True
            link.proxy.links.discard(link)
            link.client.close()


class FaultProxy:
    """A TCP proxy to PostgreSQL whose faults a test switches at run time.

    Args:
        upstream: (host, port) of the server.
        host: where to listen; the port is chosen by the system.
    """

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5432), host: str = "127.0.0.1"):
        self.upstream = upstream
        self.host = host
        self.port = 0
        self.links: set[_Link] = set()
        self.waiting: list[_Link] = []  # accepted while blackholed, not yet connected
        self.blackholed = False
        self.latency = 0.0
        self.armed: _Armed | None = None
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, name="fault-proxy")

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Start listening; return self."""
        self._thread.start()
        self._server = self._call(self._listen)
        return self

    async def _listen(self) -> asyncio.Server:
        server = await self.loop.create_server(lambda: _Client(self), self.host, 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    def close(self) -> None:
        """Reset every connection, stop listening and stop the loop."""
        if not self._thread.is_alive():
            return

        async def stop() -> None:
            self.blackholed = False
            for link in list(self.links):
                link.abort()
            if self._server is not None:
                self._server.close()

        self._call(stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, url: str) -> str:
        """`url` (postgresql://...) with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")
        auth = netloc[0] + netloc[1]
        return urlunsplit(parts._replace(netloc=f"{auth}{self.host}:{self.port}"))

    # -- faults -------------------------------------------------------------------------------

    def pass_through(self) -> None:
        """Forward everything at once; bytes held by a blackhole flow again, in order."""

        async def apply() -> None:
            self.latency = 0.0
            self._heal()

        self._call(apply)

    def delay(self, seconds: float) -> None:
        """Forward every chunk, in either direction, `seconds` late."""

        async def apply() -> None:
            self.latency = seconds
            self._heal()

        self._call(apply)

    def blackhole(self) -> None:
        """Let no byte through either way; connections stay open; new ones hang."""

        async def apply() -> None:
            self.blackholed = True
            for link in self.links:
                link.pause()

        self._call(apply)

    def reset(self) -> int:
        """Reset (RST) every current connection; return how many there were."""

        async def apply() -> int:
            links = list(self.links)
            for link in links:
                link.abort()
            self.waiting.clear()
            return len(links)

        count: int = self._call(apply)
        return count

    def lose_next_commit(self, statement: bytes | None = None) -> threading.Event:
        """Let the next commit happen but lose its reply, then reset that connection.

        Without `statement`: the next explicit COMMIT. With it: the next autocommit statement
        whose text contains `statement` (it commits when the server reaches its Sync).
        Returns an event set once the commit happened and the connection was cut.
        """
        done = threading.Event()

        async def apply() -> None:
            self.armed = _Armed(statement, done)

        self._call(apply)
        return done

    @property
    def connections(self) -> int:
        """How many client connections are open through the proxy."""
        count: int = self._call(self._count)
        return count

    async def _count(self) -> int:
        return len(self.links)

    def _heal(self) -> None:
        if not self.blackholed:
            return
        self.blackholed = False
        for link in list(self.links):
            if link.upstream is not None:
                link.resume()
        waiting, self.waiting = self.waiting, []
        for link in waiting:
            if not link.closed:
                self.loop.create_task(link.connect())

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run coroutine function `fn` on the proxy's loop; wait for its result."""
        return asyncio.run_coroutine_threadsafe(fn(), self.loop).result(10)
