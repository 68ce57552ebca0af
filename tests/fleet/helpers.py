"""Launching `tether worker` and `tether supervise` as real processes, and watching them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import tether
from tether.settings import Settings

ROOT = Path(__file__).parents[2]
APP = "tests.fleet.apps.ledger:app"


def env_for(settings: Settings, ledger: Path, **extra: str) -> dict[str, str]:
    """The environment of a worker process on the test's database."""
    env = dict(os.environ)
    env.update(
        TETHER_DATABASE_URL=settings.database_url or "",
        TETHER_PG_SCHEMA=settings.pg_schema,
        TETHER_POLL_INTERVAL="0.05",
        TETHER_HEARTBEAT_INTERVAL="0.5",
        TETHER_LEASE_TTL="5",
        FLEET_LEDGER=str(ledger),
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
    )
    env.update(extra)
    return env


def tether_process(
    command: str, args: list[str], env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    """Start `tether COMMAND ARGS` with this interpreter, in the repository's root."""
    out = log.open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "tether.cli.main", command, *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    finally:
        out.close()


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    """SIGTERM a process and return its exit code."""
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout)


def kill_quietly(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)


def ledger_lines(path: Path) -> list[tuple[str, str, str, int]]:
    """The ledger's (step, event, run, pid) lines."""
    if not path.exists():
        return []
    rows = [line.split(",") for line in path.read_text().splitlines() if line]
    return [(a, b, c, int(d)) for a, b, c, d in rows]


def client(settings: Settings) -> tether.App:
    """A client app of the test's database that knows the `job` workflow (version 1)."""
    app = tether.App(settings=settings)

    @app.workflow(name="job", version="1")
    async def job(n: int) -> int:
        raise AssertionError("clients do not run workflows")

    return app


def start_runs(app: tether.App, ids: list[str]) -> None:
    async def go() -> None:
        for i, run_id in enumerate(ids):
            await app.start("job", i, id=run_id)

    asyncio.run(go())


def results(app: tether.App, ids: list[str], timeout: float = 60.0) -> list[Any]:
    async def go() -> list[Any]:
        return [await app.retrieve(i).result(timeout=timeout) for i in ids]

    return asyncio.run(go())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str) -> tuple[int, Any]:
    """GET `url`; return (status, decoded JSON body), or (0, None) if nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, None


class Proxy:
    """A TCP forwarder to the PostgreSQL server, which a test can cut and restore.

    Cut, it drops every connection and closes new ones as soon as they come.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.open = True
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def restore(self) -> None:
        self.open = True

    def cut(self) -> None:
        with self._lock:
            self.open = False
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            self._sockets.clear()

    def close(self) -> None:
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if not self.open:
                    conn.close()
                    continue
                upstream = socket.create_connection(self.target)
                self._sockets += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def cleanup(*procs: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    finally:
        for p in procs:
            kill_quietly(p)
