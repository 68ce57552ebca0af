"""A private PostgreSQL cluster for tests that restart the server (never the shared one).

initdb into a temporary directory (as the `postgres` OS user when running as root), on a free
port, trust authentication, its unix socket in the same directory; started, restarted and
stopped with pg_ctl.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

BIN_DIRS = [Path(os.environ.get("TETHER_PG_BIN", "/usr/lib/postgresql/15/bin"))]


class ClusterUnavailable(Exception):
    """initdb cannot run here (no binaries, no `postgres` user...)."""


def _bin(name: str) -> str:
    for d in BIN_DIRS:
        if (d / name).exists():
            return str(d / name)
    found = shutil.which(name)
    if found is None:
        raise ClusterUnavailable(f"{name} not found in {BIN_DIRS} or on PATH (set TETHER_PG_BIN)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PrivateCluster:
    """A throwaway PostgreSQL server of this test's own."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tether-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.restarts = 0
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise ClusterUnavailable("running as root without runuser to become postgres")
            self._as_postgres = ["runuser", "-u", "postgres", "--"]
            try:
                shutil.chown(self.root, "postgres", "postgres")
            except (LookupError, OSError) as exc:
                raise ClusterUnavailable(f"no usable postgres OS user: {exc}") from exc

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str, timeout: float = 120) -> None:
        proc = subprocess.run(
            [*self._as_postgres, *args], capture_output=True, text=True, timeout=timeout
        )
        if proc.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {proc.stderr[-2000:]}\n{tail}")

    def init(self) -> PrivateCluster:
        try:
            self._run(
                _bin("initdb"),
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            )
        except (RuntimeError, OSError, ClusterUnavailable) as exc:
            shutil.rmtree(self.root, ignore_errors=True)
            raise ClusterUnavailable(str(exc)) from exc
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\nfsync = off\n"
                "max_connections = 200\nshared_buffers = 32MB\n"
            )
        return self

    def pg_ctl(self, *args: str) -> None:
        self._run(
            _bin("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            *args,
        )

    def start(self) -> None:
        self.pg_ctl("start")

    def restart(self, mode: str = "fast") -> None:
        """Restart the server; `immediate` is a crash (recovery from the WAL on start)."""
        self.pg_ctl("restart", "-m", mode)
        self.restarts += 1

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(self.root, ignore_errors=True)
