"""Driving a fleet of worker processes, and reading what they did from the ledger.

`start_worker` is the one place where a worker process is started; a supervisor can take its
place without changing the tests. The ledger (see apps/worker.py) is written outside the
journal, with fsync, so it survives SIGKILL and witnesses every execution and commit.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import tether
from tether.settings import Settings
from tether.store.base import STEP_OK, Store

APP = Path(__file__).parent / "apps" / "worker.py"
ROOT = Path(__file__).parents[2]


def worker_env(
    settings: Settings, options: Mapping[str, object] | None = None, url: str | None = None
) -> dict[str, str]:
    """The environment of a worker process: the test's database, `TETHER_*` options."""
    env = dict(os.environ)
    env["TETHER_DATABASE_URL"] = url or settings.database_url or ""
    env["TETHER_PG_SCHEMA"] = settings.pg_schema
    for name, value in (options or {}).items():
        env[f"TETHER_{name.upper()}"] = str(value)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), *sys.path])
    return env


def start_worker(ledger: Path, env: Mapping[str, str]) -> subprocess.Popen[str]:
    """Start one worker process and wait until its worker is up."""
    proc = subprocess.Popen(
        [sys.executable, str(APP), str(ledger)],
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"worker did not start: {line!r}\n{err[-3000:]}")
    return proc


def stop_worker(proc: subprocess.Popen[str]) -> str:
    """Stop a worker (SIGTERM, then SIGKILL); return the end of its stderr."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err[-5000:]


def client(settings: Settings) -> tether.App:
    """An App that is never entered: it starts runs for the workers to claim."""
    app = tether.App(settings=settings)

    @app.workflow(name="chain")
    async def chain(steps: int, pause: float) -> list[str]:
        raise AssertionError("clients do not execute")

    @app.workflow(name="chain_sync")
    def chain_sync(steps: int, pause: float) -> list[str]:
        raise AssertionError("clients do not execute")

    @app.workflow(name="nap")
    async def nap(seconds: float, pause: float) -> str:
        raise AssertionError("clients do not execute")

    return app


def start_runs(
    app: tether.App, count: int, steps: float, pause: float, name: str = "chain", prefix: str = "r"
) -> list[str]:
    """Start `count` runs of workflow `name` (PENDING until a worker claims them).

    The arguments are (steps, pause), or (seconds, pause) for `nap`.
    """

    async def go() -> list[str]:
        return [
            (await app.start(name, steps, pause, id=f"{prefix}-{i:04d}")).id for i in range(count)
        ]

    return asyncio.run(go())


def wait_finished(store: Store, ids: list[str], within: float) -> dict[str, str]:
    """Poll until every run has ended (or `within` passed); return run id -> status."""
    deadline = time.monotonic() + within
    while True:
        statuses = store.run_statuses(ids)
        if all(s in ("SUCCEEDED", "FAILED", "CANCELLED") for s in statuses.values()):
            return statuses
        if time.monotonic() > deadline:
            return statuses
        time.sleep(0.2)


@dataclasses.dataclass
class Ledger:
    """What the worker processes wrote outside the journal."""

    executed: list[tuple[str, int, int, float, str]]  # run, seq, pid, time, value
    committed: list[tuple[str, int, int, float]]  # run, seq, pid, time
    fenced: list[tuple[str, int, int, float]]  # run, seq, pid, time
    done: list[tuple[str, int, float]]  # run, pid, time
    woke: list[tuple[str, int, float, float]] = dataclasses.field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> Ledger:
        out = cls([], [], [], [])
        if not path.exists():
            return out
        for line in path.read_text().splitlines():
            kind, *f = line.split(",")
            if kind == "E":
                out.executed.append((f[0], int(f[1]), int(f[2]), float(f[3]), f[4]))
            elif kind == "C":
                out.committed.append((f[0], int(f[1]), int(f[2]), float(f[3])))
            elif kind == "F":
                out.fenced.append((f[0], int(f[1]), int(f[2]), float(f[3])))
            elif kind == "W":
                out.woke.append((f[0], int(f[1]), float(f[2]), float(f[3])))
            elif kind == "D":
                out.done.append((f[0], int(f[1]), float(f[2])))
        return out


def journal(store: Store, ids: list[str]) -> dict[tuple[str, int], str]:
    """Committed step results: (run, seq) -> the value recorded."""
    out = {}
    for run_id in ids:
        for rec in store.load_steps(run_id):
            if rec.status == STEP_OK and rec.output is not None:
                out[(rec.run_id, rec.seq)] = json.loads(rec.output)
    return out


def interleaved(store: Store, ids: list[str], before: int, after: int) -> list[str]:
    """Runs whose journal has an outcome of pid `before` after one of pid `after`.

    After a takeover the journal must be the old owner's up to some position and the new
    owner's from there on.
    """
    out = []
    recorded = journal(store, ids)
    for run_id in ids:
        pids = [
            int(recorded[(run_id, s)].split(":")[0])
            for s in sorted(s for r, s in recorded if r == run_id)
        ]
        old = [i for i, p in enumerate(pids) if p == before]
        new = [i for i, p in enumerate(pids) if p == after]
        if old and new and max(old) > min(new):
            out.append(run_id)
    return out


@dataclasses.dataclass
class Verdict:
    """What the ledger and the journal say together."""

    lost: list[str]  # runs that did not succeed
    recorded_twice: list[tuple[str, int]]  # two commits noted for one position
    completed_rerun: list[tuple[str, int, int]]  # a body run after its outcome was committed
    not_from_ledger: list[tuple[str, int]]  # a recorded value no execution produced
    reexecuted: int  # unfinished steps run again (allowed: the process died mid-step)
    executions: int


def verdict(store: Store, ids: list[str], steps: int, ledger: Ledger) -> Verdict:
    """Check the fleet's work: nothing lost, nothing recorded twice, nothing completed re-run."""
    statuses = store.run_statuses(ids)
    lost = sorted(r for r in ids if statuses.get(r) != "SUCCEEDED")
    recorded = journal(store, ids)
    lost += sorted(
        r for r in ids if r not in lost and any((r, s) not in recorded for s in range(steps))
    )
    commits = collections.Counter((r, s) for r, s, _, _ in ledger.committed)
    twice = sorted(k for k, n in commits.items() if n > 1)
    # When was each recorded outcome committed? Its executor noted it right after.
    by_value = {v: (r, s, p) for r, s, p, _, v in ledger.executed}
    noted = {(r, s, p): t for r, s, p, t in ledger.committed}
    committed_at = {}
    not_from_ledger = []
    for key, value in recorded.items():
        origin = by_value.get(value)
        if origin is None or origin[:2] != key:
            not_from_ledger.append(key)
        elif origin in noted:
            committed_at[key] = noted[origin]
    rerun = [
        (r, s, p)
        for r, s, p, t, _ in ledger.executed
        if (r, s) in committed_at and t > committed_at[(r, s)]
    ]
    runs = collections.Counter((r, s) for r, s, _, _, _ in ledger.executed)
    return Verdict(
        lost=lost,
        recorded_twice=twice,
        completed_rerun=rerun,
        not_from_ledger=sorted(not_from_ledger),
        reexecuted=sum(n - 1 for n in runs.values() if n > 1),
        executions=len(ledger.executed),
    )


def takeover_times(ledger: Ledger, kills: list[tuple[int, float]]) -> list[float]:
    """For each kill, seconds until the first step committed elsewhere for a run it owned.

    The runs a killed worker owned are those whose latest ledger event before the kill was its
    own (and which had not finished). Kills that owned no run are left out.
    """
    events: dict[str, list[tuple[float, int]]] = collections.defaultdict(list)
    for r, _, p, t, _ in ledger.executed:
        events[r].append((t, p))
    for r, _, p, t in ledger.committed:
        events[r].append((t, p))
    finished = {r: t for r, _, t in ledger.done}
    for seq in events.values():
        seq.sort()
    commits: dict[str, list[tuple[float, int]]] = collections.defaultdict(list)
    for r, _, p, t in ledger.committed:
        commits[r].append((t, p))
    out = []
    for pid, at in kills:
        owned = [
            r
            for r, seq in events.items()
            if finished.get(r, float("inf")) > at
            and (before := [p for t, p in seq if t <= at])
            and before[-1] == pid
        ]
        firsts = [
            min((t for t, p in commits[r] if p != pid and t > at), default=None) for r in owned
        ]
        times = [t for t in firsts if t is not None]
        if times:
            out.append(min(times) - at)
    return out


@dataclasses.dataclass
class Storm:
    """A fleet of worker processes, one SIGKILLed every few seconds and replaced."""

    settings: Settings
    ledger: Path
    env: dict[str, str]
    workers: int
    kill_every: tuple[float, float] = (0.5, 3.0)
    seed: int = 0
    kills: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    procs: list[subprocess.Popen[str]] = dataclasses.field(default_factory=list)

    def start(self) -> None:
        self.procs = [start_worker(self.ledger, self.env) for _ in range(self.workers)]

    def rage(self, store: Store, ids: list[str], within: float, on_kill: object = None) -> None:
        """Kill a random worker every `kill_every` seconds, and replace it, until all ended.

        `on_kill(n)`, if given, is called after the n-th kill (n from 1).
        """
        import random

        rng = random.Random(self.seed or None)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            pause = rng.uniform(*self.kill_every)
            end = time.monotonic() + pause
            while time.monotonic() < end:
                if _all_ended(store, ids):
                    return
                time.sleep(min(0.2, pause))
            victim = rng.randrange(len(self.procs))
            proc = self.procs[victim]
            proc.send_signal(signal.SIGKILL)
            self.kills.append((proc.pid, time.time()))
            proc.communicate()
            self.procs[victim] = start_worker(self.ledger, self.env)
            if callable(on_kill):
                on_kill(len(self.kills))

    def stop(self) -> list[str]:
        """Stop every worker; return their stderr tails."""
        return [stop_worker(p) for p in self.procs]


def _all_ended(store: Store, ids: list[str]) -> bool:
    try:
        statuses = store.run_statuses(ids)
    except tether.StoreUnavailableError:
        return False
    return all(s in ("SUCCEEDED", "FAILED", "CANCELLED") for s in statuses.values())
