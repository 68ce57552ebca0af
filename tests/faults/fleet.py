"""Driving a fleet of worker processes, and reading what they did from the ledger.

`start_worker` starts one worker process (tests that stage a fault on a given worker);
`SupervisedStorm` runs a fleet under `tether supervise` and SIGKILLs its children. The ledger
(see apps/worker.py) is written outside the journal, with fsync, so it survives SIGKILL and
witnesses every execution and commit.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

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
class Kill:
    """One SIGKILL sent to a supervised worker, and its replacement as the status file shows."""

    pid: int
    slot: int
    at: float  # time.time() just before the signal
    replacement: int | None = None
    replacement_started: float | None = None  # the status file's started_at of the new child


@dataclasses.dataclass
class Stopped:
    """How `tether supervise` ended after SIGTERM."""

    code: int | None  # None: it had to be SIGKILLed
    left: list[int]  # children still alive after the supervisor exited
    status: dict[str, Any]  # the status file's last content
    log: str  # the end of the supervisor's and its children's stderr


def supervise_env(
    settings: Settings, ledger: Path, options: Mapping[str, object] | None = None
) -> dict[str, str]:
    """The environment of `tether supervise worker:app`: `worker_env` and the ledger's path.

    The apps folder comes first on PYTHONPATH, so `worker:app` names tests/faults/apps/worker.py.
    """
    env = worker_env(settings, options)
    env["PYTHONPATH"] = os.pathsep.join([str(APP.parent), env["PYTHONPATH"]])
    env["FAULTS_LEDGER"] = str(ledger)
    return env


def _proc_stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a live process, or None if it is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), fields[19]


@dataclasses.dataclass
class SupervisedStorm:
    """`tether supervise worker:app --workers N --status-file F`, and a driver that reads the
    status file and SIGKILLs a random live child every `kill_every` seconds.

    The supervisor restarts each killed child (with its backoff); the driver notes every kill,
    and when the status file first shows the slot's next process, its start time.
    """

    folder: Path  # the supervisor's working directory; the status file and the log go there
    env: dict[str, str]
    workers: int = 3
    grace: float = 5.0
    stable_after: float = 2.0  # a child up this long restarts at once (see start)
    kill_every: tuple[float, float] = (0.5, 3.0)
    seed: int = 0
    kills: list[Kill] = dataclasses.field(default_factory=list)
    seen: dict[int, str] = dataclasses.field(default_factory=dict)  # child pid -> start time
    proc: subprocess.Popen[bytes] | None = None

    @property
    def status_file(self) -> Path:
        return self.folder / "supervisor.json"

    @property
    def log_file(self) -> Path:
        return self.folder / "supervisor.log"

    def start(self, store: Store, within: float = 120.0) -> None:
        """Start the supervisor and wait until each of its children has registered a worker."""
        command = [sys.executable, "-m", "tether.cli.main", "supervise", "worker:app"]
        command += ["--workers", str(self.workers), "--grace", str(self.grace)]
        command += ["--status-file", str(self.status_file)]
        # Each child lives about 5 s here; with the default (10 s) every kill would count as
        # a crash loop and the backoff would leave the slots empty for up to 30 s.
        command += ["--stable-after", str(self.stable_after)]
        with self.log_file.open("wb") as log:
            self.proc = subprocess.Popen(
                command, cwd=self.folder, env=self.env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"supervise exited: {self.log_tail()}"
            pids = {w["pid"] for w in self.observe()["workers"] if w["running"]}
            registered = {w.pid for w in store.list_workers()}
            if len(pids) == self.workers and pids <= registered:
                return
            time.sleep(0.2)
        raise AssertionError(f"the supervised workers did not come up: {self.log_tail()}")

    def observe(self) -> dict[str, Any]:
        """Read the status file; note new children and the replacements of killed ones."""
        try:
            status: dict[str, Any] = json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {"pid": None, "stopping": False, "workers": []}
        for w in status["workers"]:
            pid = w["pid"]
            if pid is None or pid in self.seen:
                continue
            stat = _proc_stat(pid)
            self.seen[pid] = stat[1] if stat else ""
            for kill in self.kills:
                if kill.slot == w["slot"] and kill.replacement is None and pid != kill.pid:
                    kill.replacement, kill.replacement_started = pid, w["started_at"]
        return status

    def rage(
        self,
        store: Store,
        ids: list[str],
        within: float,
        on_kill: Callable[[int], None] | None = None,
    ) -> None:
        """Every `kill_every` seconds SIGKILL a random live child, until every run ended.

        `on_kill(n)`, if given, is called right after the n-th kill (n from 1).
        """
        rng = random.Random(self.seed or None)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            pause = rng.uniform(*self.kill_every)
            end = time.monotonic() + pause
            while time.monotonic() < end:
                if _all_ended(store, ids):
                    return
                self.observe()
                time.sleep(min(0.2, pause))
            assert self.proc is not None
            assert self.proc.poll() is None, f"supervise exited: {self.log_tail()}"
            live = [
                (w["slot"], w["pid"])
                for w in self.observe()["workers"]
                if w["running"] and self._is_child(w["pid"])
            ]
            if not live:
                continue  # every slot is waiting out its backoff
            slot, pid = rng.choice(live)
            self.kills.append(Kill(pid, slot, time.time()))
            os.kill(pid, signal.SIGKILL)
            if on_kill is not None:
                on_kill(len(self.kills))

    def _is_child(self, pid: int) -> bool:
        """Whether `pid` is still the supervisor's child (not a pid reused since)."""
        stat = _proc_stat(pid)
        return stat is not None and self.proc is not None and stat[0] == self.proc.pid

    def replacement_times(self) -> list[float]:
        """For each kill whose slot got a new process, seconds from the kill to its start."""
        self.observe()
        return [
            k.replacement_started - k.at for k in self.kills if k.replacement_started is not None
        ]

    def restarts(self) -> int:
        """Restarts the supervisor reports (the status file's count, all slots)."""
        return sum(w["restarts"] for w in self.observe()["workers"])

    def exits(self) -> collections.Counter[str]:
        """Exit codes of children the supervisor logged (e.g. -9 for SIGKILL) and how often."""
        return collections.Counter(
            line.split("exited with code ")[1].split()[0]
            for line in self.log_file.read_text(errors="replace").splitlines()
            if "tether.supervisor" in line and "exited with code " in line
        )

    def stop(self, within: float | None = None) -> Stopped:
        """SIGTERM the supervisor and wait for it; SIGKILL it (and any child left) if it hangs."""
        assert self.proc is not None
        self.observe()
        code: int | None = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=within or self.grace + 30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        left = [p for p, start in self.seen.items() if (s := _proc_stat(p)) and s[1] == start]
        for pid in left:
            os.kill(pid, signal.SIGKILL)  # children of this test, identified by start time
        return Stopped(code, left, self.observe(), self.log_tail())

    def log_tail(self, chars: int = 5000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _all_ended(store: Store, ids: list[str]) -> bool:
    try:
        statuses = store.run_statuses(ids)
    except tether.StoreUnavailableError:
        return False
    return all(s in ("SUCCEEDED", "FAILED", "CANCELLED") for s in statuses.values())
