"""The agent crash test: one agent run of 21 model calls and 20 tool calls in a child process,
SIGKILLed at random points several times and restarted each time (both backends).

At the end: the run succeeded; every model call journaled before a kill was never received
by the provider again (the scripted model's fsynced ledger is the witness); a call answered
twice was answered first by a process killed before it journaled the answer; effectful tools
performed their effect once per idempotency key, and each journaled receipt is that effect's.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.crash.test_kill_storm import env_for, wait_ready
from tether.engine.context import Context
from tether.settings import Settings
from tether.store import open_store
from tether.store.base import STEP_OK, Store

pytestmark = pytest.mark.crash

APP = Path(__file__).parent / "apps" / "agent_run.py"
TURNS, KILLS = 21, 5  # 20 tool-calling turns and the final answer


def answered_turns(store: Store) -> int:
    """How many model calls the journal holds answers for (turns 0, 1, ... in order)."""
    return sum(
        1
        for st in store.load_steps("agent-1")
        if st.name.startswith("llm:") and st.status == STEP_OK
    )


def spawn(work: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(APP), str(work)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def ledger(work: Path) -> list[dict[str, Any]]:
    path = work / "model.ledger"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.timeout(300)
def test_agent_kills__no_model_call_paid_twice_no_effect_twice(settings: Settings, tmp_path: Path):
    env = env_for(settings)
    store = open_store(settings)
    store.migrate()
    rng = random.Random(int(os.environ.get("TETHER_CRASH_SEED", "0")) or None)
    snapshots: list[tuple[int, int]] = []  # (killed pid, answered turns in the journal)
    try:
        while len(snapshots) < KILLS:
            proc = spawn(tmp_path, env)
            wait_ready(proc)
            time.sleep(rng.uniform(0.05, 0.3))
            if proc.poll() is not None:
                proc.communicate()
                break
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            snapshots.append((proc.pid, answered_turns(store)))
        assert len(snapshots) >= KILLS, f"the run finished after only {len(snapshots)} kills"
        final = spawn(tmp_path, env)
        out, err = final.communicate(timeout=120)
        assert "DONE" in out, err[-3000:]

        run = store.get_run("agent-1")
        assert run is not None
        assert run.status == "SUCCEEDED"
        assert run.output is not None
        assert json.loads(run.output) == 20
        assert answered_turns(store) == TURNS

        calls = ledger(tmp_path)
        ok = [(c["turn"], c["pid"]) for c in calls if c["outcome"] == "ok"]
        answers = collections.Counter(turn for turn, _ in ok)
        assert set(answers) == set(range(TURNS))
        # A call journaled before a kill was never received again by a later process.
        pids = [pid for pid, _ in snapshots]
        for i, (_, journaled) in enumerate(snapshots):
            later = set(pids[i + 1 :]) | {final.pid}
            again = [(t, p) for t, p in ok if t < journaled and p in later]
            assert not again, f"journaled model calls were paid for again: {again}"
        # A call answered twice was first answered by a process killed before journaling it.
        for turn, count in answers.items():
            assert count <= 2, (turn, count)
            if count == 2:
                first_pid = next(p for t, p in ok if t == turn)
                assert first_pid in pids
        assert next(c["outcome"] for c in calls if c["turn"] == 3) == "rate_limited"

        # Effectful tools: one effect per idempotency key, the journal holds its receipt.
        # The effect is the marker's creation; a kill can land before effects.log records it.
        effects = sorted(p.name for p in (tmp_path / "effects").iterdir())
        assert len(effects) == 10
        logged = (tmp_path / "effects.log").read_text().splitlines()
        assert len(logged) == len(set(logged))
        assert set(logged) <= set(effects)
        charges = [st for st in store.load_steps("agent-1") if st.name == "tool:charge"]
        assert len(charges) == 10
        assert all(st.status == STEP_OK for st in charges)
        for st in charges:
            key = Context("agent-1", "agent_job", st.name, st.seq).idempotency_key
            assert st.output is not None
            assert json.loads(st.output) == (tmp_path / "effects" / key).read_text()
        executions = [
            line.split(",") for line in (tmp_path / "tools.ledger").read_text().splitlines()
        ]
        charge_runs = collections.Counter(key for name, key, _ in executions if name == "charge")
        assert set(charge_runs) == set(effects)
        print(
            f"\nkills={len(snapshots)} model calls answered={len(ok)} for {TURNS} turns "
            f"(answered twice: {sum(1 for c in answers.values() if c == 2)}), "
            f"charge executions={sum(charge_runs.values())} for {len(effects)} effects, "
            f"recoveries={run.recoveries}"
        )
    finally:
        store.close()
