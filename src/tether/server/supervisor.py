"""A supervisor of worker processes: keeps N `tether worker` children running.

Each child runs `python -m tether.cli.main worker MODULE:APP ...` with this interpreter, in
the supervisor's working directory and environment, in a session of its own (a terminal's
Ctrl-C reaches the supervisor only, which stops the children in order). A child that exits,
for whatever reason, is started again after a backoff that doubles from `initial_backoff`
up to `max_backoff` with each quick exit, and is reset once a child has stayed up
`stable_after` seconds.

SIGTERM or SIGINT stops the supervisor: it forwards SIGTERM to every child (each shuts down
gracefully within its `--grace`), waits for them up to the grace period plus `KILL_MARGIN`
seconds, then SIGKILLs the stragglers. A second signal forwards SIGTERM again (the children
then stop at once). Every start, exit and restart is logged with the child's pid and exit
code, and the children's pids are published in a status file and on `/status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tether.server.health import DatabaseCheck, Readiness

log = logging.getLogger("tether.supervisor")

KILL_MARGIN = 5.0
"""Seconds beyond the grace period the supervisor waits for its children before SIGKILL: the
time a child needs, after its grace period, to deregister and exit."""

STABLE_AFTER = 10.0
"""Seconds a child must stay up to count as healthy, by default (`Backoff.stable_after`)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """When to start again a child that exited.

    Attributes:
        initial: seconds before the first restart after a quick exit.
        maximum: the longest wait between restarts.
        stable_after: a child up this many seconds is healthy: its next restart is immediate
            and the backoff starts over.
    """

    initial: float = 0.5
    maximum: float = 30.0
    stable_after: float = STABLE_AFTER

    def delay(self, quick_exits: int) -> float:
        """The wait before a restart after `quick_exits` exits in a row (0: at once)."""
        if quick_exits <= 0:
            return 0.0
        return float(min(self.maximum, self.initial * 2 ** (quick_exits - 1)))


@dataclasses.dataclass(slots=True)
class Child:
    """One worker slot: the process in it now, and its history."""

    slot: int
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0  # time.time() of the current process's start
    starts: int = 0
    quick_exits: int = 0
    last_exit: int | None = None

    @property
    def pid(self) -> int | None:
        """The pid of the running process, or None."""
        running = self.process is not None and self.process.returncode is None
        return self.process.pid if running and self.process is not None else None

    def as_json(self) -> dict[str, Any]:
        """The slot as JSON-compatible values."""
        return {
            "slot": self.slot,
            "pid": self.pid,
            "running": self.pid is not None,
            "started_at": self.started_at or None,
            "starts": self.starts,
            "restarts": max(0, self.starts - 1),
            "last_exit": self.last_exit,
        }


class Supervisor:
    """Runs `workers` copies of `command` and keeps them running until `stop` is called.

    Args:
        command: the child's argv (see `worker_command`).
        workers: how many children to keep running.
        grace: the children's grace period (they are given it with `--grace`).
        database: the readiness check of the workers' database; None to skip it.
        status_file: a file rewritten (atomically) with `status()` as JSON on every change.
        backoff: the restart policy.
    """

    def __init__(
        self,
        command: Sequence[str],
        workers: int,
        grace: float,
        *,
        database: DatabaseCheck | None = None,
        status_file: Path | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.command = list(command)
        self.grace = grace
        self.children = [Child(slot) for slot in range(workers)]
        self.status_file = status_file
        self.backoff = backoff or Backoff()
        self.stopping = False
        self._stop = asyncio.Event()
        self._database = database

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> int:
        """Start the children, keep them running until `stop`, then stop them; return 0.

        Returns 1 if a child had to be killed because it outlived the grace period.
        """
        log.info("supervisor pid %d starting %d worker(s)", os.getpid(), len(self.children))
        keepers = [
            asyncio.create_task(self._keep(c), name=f"tether-keep-{c.slot}") for c in self.children
        ]
        self._write_status()
        await self._stop.wait()
        killed = await self._stop_children()
        for task in keepers:
            task.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)
        self._write_status()
        log.info("supervisor stopped%s", f"; {killed} worker(s) killed" if killed else "")
        return 1 if killed else 0

    def stop(self) -> None:
        """Begin stopping; called again, tell the children to stop at once."""
        if self.stopping:
            log.warning("signalled again: telling the workers to stop at once")
            self._signal_children(signal.SIGTERM)
            return
        self.stopping = True
        self._stop.set()

    async def _keep(self, child: Child) -> None:
        """Start the child's process, and again each time it exits, until stopping."""
        while not self._stop.is_set():
            try:
                await self._start(child)
            except OSError as exc:
                child.quick_exits += 1
                delay = self.backoff.delay(child.quick_exits)
                log.error("worker[%d] could not start (%s); again in %.1fs", child.slot, exc, delay)
                await self._pause(delay)
                continue
            assert child.process is not None
            code = await child.process.wait()
            up = time.time() - child.started_at
            child.last_exit = code
            self._write_status()
            if self._stop.is_set():
                log.info(
                    "worker[%d] pid %d exited with code %d", child.slot, child.process.pid, code
                )
                return
            child.quick_exits = 0 if up >= self.backoff.stable_after else child.quick_exits + 1
            delay = self.backoff.delay(child.quick_exits)
            log.warning(
                "worker[%d] pid %d exited with code %d%s after %.1fs; restarting in %.1fs",
                child.slot,
                child.process.pid,
                code,
                _signal_name(code),
                up,
                delay,
            )
            await self._pause(delay)

    async def _pause(self, seconds: float) -> None:
        """Wait `seconds`, or less if the supervisor is told to stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()

    async def _start(self, child: Child) -> None:
        child.process = await asyncio.create_subprocess_exec(*self.command, start_new_session=True)
        child.started_at = time.time()
        child.starts += 1
        verb = "started" if child.starts == 1 else "restarted"
        log.info("worker[%d] %s: pid %d", child.slot, verb, child.process.pid)
        self._write_status()

    async def _stop_children(self) -> int:
        """SIGTERM every child, wait up to the grace period (plus margin), SIGKILL the rest."""
        self._signal_children(signal.SIGTERM)
        running = [c.process for c in self.children if c.pid is not None and c.process]
        if running:
            log.info("stopping %d worker(s), grace %.1fs", len(running), self.grace)
        waits = [asyncio.create_task(p.wait()) for p in running]
        killed = 0
        if waits:
            _, late = await asyncio.wait(waits, timeout=self.grace + KILL_MARGIN)
            for process in running:
                if process.returncode is None:
                    log.warning("worker pid %d outlived the grace period: killed", process.pid)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    killed += 1
            if late:
                await asyncio.wait(late)
        return killed

    def _signal_children(self, sig: signal.Signals) -> None:
        for child in self.children:
            if child.process is not None and child.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(sig)

    # -- reporting ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The supervisor's pid and state, and each worker slot's pid and history."""
        return {
            "pid": os.getpid(),
            "stopping": self.stopping,
            "workers": [c.as_json() for c in self.children],
        }

    async def readiness(self) -> Readiness:
        """Ready when not stopping, at least one worker runs, and the database is ready."""
        if self.stopping:
            return Readiness("draining", "the supervisor is stopping its workers")
        if not any(c.pid is not None for c in self.children):
            return Readiness("no_workers", "no worker process is running")
        if self._database is None:
            return Readiness()
        return await self._database()

    def _write_status(self) -> None:
        if self.status_file is None:
            return
        tmp = self.status_file.with_name(f".{self.status_file.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.status()), encoding="utf-8")
            tmp.replace(self.status_file)
        except OSError as exc:
            log.warning("cannot write the status file %s: %s", self.status_file, exc)


def worker_command(target: str, options: Sequence[str]) -> list[str]:
    """The argv of one `tether worker` child: this interpreter, the CLI's module, options."""
    return [sys.executable, "-m", "tether.cli.main", "worker", target, *options]


def _signal_name(code: int) -> str:
    if code >= 0:
        return ""
    try:
        return f" ({signal.Signals(-code).name})"
    except ValueError:
        return ""
