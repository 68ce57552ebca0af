"""Bounded waits on the network: how a PostgreSQL store notices a dead or silent connection.

Three layers, each bounded by `Settings`:

- Connecting: libpq's `connect_timeout` (whole seconds) and the pool's wait for a connection
  are `connect_timeout`.
- A statement: the server cancels one that runs longer than `statement_timeout`.
- The link: libpq TCP keepalives probe an idle connection after `connect_timeout` seconds
  (three probes a second apart), and `tcp_user_timeout` drops one whose sent data stays
  unacknowledged for twice `connect_timeout`; a peer that vanished is found either way. A
  path that still acknowledges bytes but never answers (a stuck proxy or load balancer, a
  half-open partition) is caught by the `Watchdog`: a call on a connection that has had no
  reply after `statement_timeout + connect_timeout` has its socket shut down, so the waiting
  thread gets a connection error (retried by the caller) instead of waiting forever.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg

from tether.settings import Settings

# libpq keepalive probes: how many, and the seconds between them.
_PROBES, _PROBE_INTERVAL = 3, 1


def connect_kwargs(params: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Connection options: autocommit, the timeouts, keepalives, and a name DBAs can see.

    Options given in the URL take precedence over the keepalive defaults.
    """
    timeout_ms = max(1, round(settings.statement_timeout * 1000))
    connect = max(1, math.ceil(settings.connect_timeout))
    link = {
        "keepalives": 1,
        "keepalives_idle": connect,
        "keepalives_interval": _PROBE_INTERVAL,
        "keepalives_count": _PROBES,
        "tcp_user_timeout": 2 * connect * 1000,
    }
    kwargs: dict[str, Any] = {k: v for k, v in link.items() if k not in params}
    kwargs.update(
        autocommit=True,
        connect_timeout=connect,
        options=f"{params.get('options') or ''} -c statement_timeout={timeout_ms}".strip(),
        application_name=params.get("application_name") or "tether",
    )
    return kwargs


def reply_deadline(settings: Settings) -> float:
    """Seconds a call may wait for the server's reply before its connection is cut."""
    return settings.statement_timeout + settings.connect_timeout


class Watchdog:
    """Cuts connections whose call has waited past its deadline for a reply.

    One daemon thread per store, started on first use, looking at most every quarter of the
    deadline (and at least every half second); watching a call costs a lock and a dict entry.

    Args:
        deadline: seconds a call may take.
        name: the thread's name.
    """

    def __init__(self, deadline: float, name: str) -> None:
        self.deadline = deadline
        self.cut = 0  # connections shut down so far
        self._name = name
        self._tick = min(0.5, deadline / 4)
        self._calls: dict[int, tuple[float, psycopg.Connection[Any]]] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watch(self, conn: psycopg.Connection[Any]) -> Iterator[None]:
        """Bound the calls made on `conn` inside the block by the deadline."""
        key = next(self._ids)
        with self._lock:
            self._calls[key] = (time.monotonic() + self.deadline, conn)
            if self._thread is None and not self._closed.is_set():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                del self._calls[key]

    def close(self) -> None:
        """Stop the thread."""
        self._closed.set()

    def _run(self) -> None:
        while not self._closed.wait(self._tick):
            now = time.monotonic()
            with self._lock:  # held while cutting: a call that has ended is never cut
                for due, conn in self._calls.values():
                    if due <= now:
                        self._cut(conn)

    def _cut(self, conn: psycopg.Connection[Any]) -> None:
        """Shut the connection's socket down: its waiting call fails at once."""
        try:
            fd = conn.pgconn.socket
        except psycopg.Error:
            return  # closed meanwhile
        with contextlib.suppress(OSError):
            sock = socket.socket(fileno=os.dup(fd))
            try:
                sock.shutdown(socket.SHUT_RDWR)
                self.cut += 1
            finally:
                sock.close()
