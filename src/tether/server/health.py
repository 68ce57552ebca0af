"""Health endpoints for orchestrators: `/healthz`, `/readyz` and `/status`, over HTTP.

- `/healthz` (liveness) answers 200 from the process's event loop: if it answers, the loop
  runs. It checks nothing else, so an orchestrator restarts only a process that is stuck.
- `/readyz` (readiness) answers 200 when the process can do its work: its database answers
  and its schema is current, and it is not leaving. Otherwise 503, with a JSON body whose
  `reason` names why: `starting`, `draining`, `stopped`, `database_unreachable`, `schema`,
  or (a supervisor) `no_workers`.
- `/status` returns what the process knows of itself as JSON (for a supervisor, its
  workers' pids).

The server runs in the event loop of the process it reports on (uvicorn, without signal
handlers of its own: the process's owner handles signals).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
from collections.abc import Callable, Generator
from typing import Any, Protocol

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tether.engine.app import App
from tether.errors import ConfigError, SchemaVersionError, TetherError
from tether.store.base import Store

log = logging.getLogger("tether.health")

DATABASE_TIMEOUT = 3.0
"""Seconds a readiness probe waits for the database before it calls it unreachable."""


@dataclasses.dataclass(frozen=True, slots=True)
class Readiness:
    """A readiness verdict: `reason` (None when ready) and a human `detail`."""

    reason: str | None = None
    detail: str = ""

    @property
    def ready(self) -> bool:
        """Whether the process is ready."""
        return self.reason is None


class Probe(Protocol):
    """What the health server asks the process it reports on."""

    async def readiness(self) -> Readiness:
        """Say whether the process is ready, and if not, why."""
        ...

    def status(self) -> dict[str, Any]:
        """Return what the process knows of itself, as JSON-compatible values."""
        ...


class DatabaseCheck:
    """Whether a store's database answers and its schema is current, one look at a time.

    Looks run in a thread with a deadline; a look still running when the next probe comes
    is shared, not repeated, so a hanging database never piles up threads.

    Args:
        store: returns the store to check (opened lazily by the caller).
        timeout: seconds to wait for an answer.
    """

    def __init__(self, store: Callable[[], Store], timeout: float = DATABASE_TIMEOUT) -> None:
        self._store = store
        self._timeout = timeout
        self._look: asyncio.Future[Readiness] | None = None

    async def __call__(self) -> Readiness:
        """Return the database's readiness."""
        if self._look is None or self._look.done():
            self._look = asyncio.ensure_future(asyncio.to_thread(self._check))
        try:
            return await asyncio.wait_for(asyncio.shield(self._look), self._timeout)
        except TimeoutError:
            return Readiness(
                "database_unreachable", f"the database did not answer within {self._timeout}s"
            )

    def _check(self) -> Readiness:
        try:
            self._store().check_schema()
        except SchemaVersionError as exc:
            return Readiness("schema", str(exc))
        except TetherError as exc:
            return Readiness("database_unreachable", str(exc))
        return Readiness()


class WorkerProbe:
    """The readiness of a worker process: entered, not leaving, and its database ready.

    Args:
        app: the worker's app.
        timeout: seconds a probe waits for the database.
    """

    def __init__(self, app: App, timeout: float = DATABASE_TIMEOUT) -> None:
        self.app = app
        self._database = DatabaseCheck(lambda: app.store, timeout)
        self._started = False

    async def readiness(self) -> Readiness:
        """Ready when the worker runs, is not draining, and its database is ready."""
        if self.app.draining:
            return Readiness("draining", "the worker is shutting down; it claims no new work")
        if self.app.worker_id is None:
            if self._started:
                return Readiness("stopped", "the worker has stopped")
            return Readiness("starting", "the worker has not started yet")
        self._started = True
        return await self._database()

    def status(self) -> dict[str, Any]:
        """The worker's id, pid and state."""
        return {
            "pid": os.getpid(),
            "worker_id": self.app.worker_id,
            "draining": self.app.draining,
        }


def health_app(probe: Probe) -> Starlette:
    """Return the ASGI application serving `/healthz`, `/readyz` and `/status` for `probe`."""

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        verdict = await probe.readiness()
        if verdict.ready:
            return JSONResponse({"status": "ready"})
        body = {"status": "unavailable", "reason": verdict.reason, "detail": verdict.detail}
        return JSONResponse(body, status_code=503)

    async def status(request: Request) -> JSONResponse:
        return JSONResponse(probe.status())

    routes = [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route("/status", status, methods=["GET"]),
    ]
    return Starlette(routes=routes)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the process's owner decides on shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HealthServer:
    """Serves a probe's endpoints in the running event loop.

        server = HealthServer(WorkerProbe(app), port=8081)
        await server.start()          # bound and serving
        ...
        await server.stop()

    Args:
        probe: what to report.
        port: the TCP port (0: any free port; see `port` once started).
        host: the address to bind (default all interfaces, for orchestrators' probes).
    """

    def __init__(self, probe: Probe, port: int, host: str = "0.0.0.0") -> None:
        self.probe = probe
        self.host = host
        self.port = port
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind the port and start serving.

        Raises:
            ConfigError: the port cannot be bound (in use, or not allowed).
        """
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            health_app(self.probe), log_level="warning", lifespan="off", access_log=False
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="tether-health")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise ConfigError(f"the health server on port {self.port} did not start")
            await asyncio.sleep(0.01)
        log.info("health endpoints on http://%s:%d (/healthz, /readyz)", self.host, self.port)

    async def stop(self) -> None:
        """Stop serving (open connections are closed)."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._server = self._task = None


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot serve health endpoints on {host}:{port} ({exc.strerror}); choose another "
            "--health-port"
        ) from None
    sock.set_inheritable(False)
    return sock
