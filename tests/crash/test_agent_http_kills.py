"""The agent crash test over HTTP: one agent run of 21 model calls and 20 tool calls in a child
process, its model served by a fake OpenAI or Anthropic server in another process through the
unmodified SDK, SIGKILLed at random points five times and restarted each time (both backends,
both providers).

The server's request log (one fsynced line per request received, with the sending process's
pid) is the witness for model calls, and every answer names the request that produced it, so
each journaled model call is matched with exactly one request. At the end: the run succeeded;
every journaled call was received once and never again (no request of a turn after the
request whose answer the journal holds); every other request was in flight in a process that
was killed before it journaled the answer, at most one per kill; effectful tools performed
their effect once per idempotency key, and each journaled receipt is that effect's.
"""

from __future__ import annotations

import collections
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent.servers.base import read_log
from tests.crash.apps.agent_http_model import TURNS
from tests.crash.test_kill_storm import env_for, wait_ready
from tether.engine.context import Context
from tether.settings import Settings
from tether.store import open_store
from tether.store.base import STEP_OK, Store

pytestmark = pytest.mark.crash

ROOT = Path(__file__).parents[2]
APP = Path(__file__).parent / "apps" / "agent_http.py"
RESPONDER = "tests.crash.apps.agent_http_model:respond"
KILLS = 5
RUN = "agent-1"


@pytest.fixture(params=["openai", "anthropic"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """A fake model server in a process of its own: (kind, base URL, request log)."""
    kind: str = request.param
    log = tmp_path / "requests.log"
    args = [kind, "--log", str(log), "--respond", RESPONDER]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.agent.servers", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("URL "):
        proc.kill()
        raise AssertionError(f"the model server did not start: {line!r} {proc.communicate()}")
    try:
        yield kind, line.split()[1], log
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def spawn(work: Path, kind: str, url: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(APP), str(work), kind, url],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def receipt_of(step: Any) -> int:
    """The number of the server request whose answer (or error) this journal entry holds."""
    text = (step.output if step.status == STEP_OK else step.error).decode()
    found = re.search(r"call_\d+_r(\d+)|receipt(?:\\?\")?:?\s*(\d+)", text)
    assert found, f"journal entry {step.seq} names no server request: {text[:500]}"
    return int(found.group(1) or found.group(2))


def journaled_calls(store: Store) -> list[tuple[int, int, str]]:
    """The journaled model calls in order: (turn, server request number, status)."""
    calls, turn = [], 0
    for st in store.load_steps(RUN):
        if st.name.startswith("llm:"):
            calls.append((turn, receipt_of(st), st.status))
            turn += st.status == STEP_OK
    return calls


@pytest.mark.timeout(400)
def test_agent_http_kills__journaled_calls_never_resent_effects_once(
    settings: Settings, server: tuple[str, str, Path], tmp_path: Path
):
    kind, url, log = server
    env = env_for(settings)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env["PYTHONPATH"]])
    store = open_store(settings)
    store.migrate()
    rng = random.Random(int(os.environ.get("TETHER_CRASH_SEED", "0")) or None)
    kills: list[tuple[int, set[int]]] = []  # (killed pid, request numbers journaled by then)
    try:
        while len(kills) < KILLS:
            proc = spawn(tmp_path, kind, url, env)
            wait_ready(proc)
            time.sleep(rng.uniform(0.1, 0.6))
            if proc.poll() is not None:
                proc.communicate()
                break
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            kills.append((proc.pid, {seq for _, seq, _ in journaled_calls(store)}))
        assert len(kills) >= KILLS, f"the run finished after only {len(kills)} kills"
        final = spawn(tmp_path, kind, url, env)
        out, err = final.communicate(timeout=180)
        assert "DONE" in out, err[-3000:]

        run = store.get_run(RUN)
        assert run is not None
        assert run.status == "SUCCEEDED"
        assert run.output is not None
        calls = journaled_calls(store)
        assert json.loads(run.output) == {"turns": TURNS, "receipt": calls[-1][1]}
        resent = check_model_calls(read_log(log), calls, kills, final.pid)
        executions = check_effects(store, tmp_path)
        requests = read_log(log)
        print(
            f"\n{kind} kills={len(kills)} requests received={len(requests)} "
            f"journaled model calls={len(calls)} (ok {sum(s == STEP_OK for *_, s in calls)}, "
            f"errors {sum(s != STEP_OK for *_, s in calls)}), in flight at a kill and "
            f"re-sent={resent}, charge executions={executions} for 10 effects, "
            f"recoveries={run.recoveries}"
        )
    finally:
        store.close()


def check_model_calls(
    requests: list[dict[str, Any]],
    calls: list[tuple[int, int, str]],
    kills: list[tuple[int, set[int]]],
    final_pid: int,
) -> int:
    """Check the server's log against the journal; return how many requests were re-sent."""
    # The log is complete: requests 1..n, each from one of the worker processes.
    assert [r["seq"] for r in requests] == list(range(1, len(requests) + 1))
    pids = [pid for pid, _ in kills] + [final_pid]
    assert {int(r["client"]) for r in requests} <= set(pids)
    by_seq = {r["seq"]: r for r in requests}
    # Every journaled call was received once, for the turn the journal places it at, and was
    # answered as journaled (a 200 for an answer, an error status for an error).
    journaled = [seq for _, seq, _ in calls]
    assert len(journaled) == len(set(journaled))
    assert [t for t, _, s in calls if s == STEP_OK] == list(range(TURNS + 1))
    for turn, seq, status in calls:
        assert by_seq[seq]["assistant"] == turn, (turn, by_seq[seq])
        assert (by_seq[seq]["status"] == 200) == (status == STEP_OK), by_seq[seq]
    # No journaled call was sent again: nothing for a turn after the journaled answer's request.
    answered = {turn: seq for turn, seq, status in calls if status == STEP_OK}
    for r in requests:
        assert r["seq"] <= answered[r["assistant"]], f"turn {r['assistant']} re-sent: {r}"
    # After each kill, no later process sent a request whose answer was journaled by then,
    # nor another request for a turn the journal had answered.
    for i, (_, seen) in enumerate(kills):
        later = {str(pid) for pid in pids[i + 1 :]}
        done = {turn for turn, seq, status in calls if seq in seen and status == STEP_OK}
        again = [r for r in requests if r["client"] in later and r["assistant"] in done]
        assert not again, f"journaled model calls were sent again after kill {i + 1}: {again}"
    # Every other request was in flight in a process killed before it journaled the outcome,
    # and was sent again by the next process: at most one per kill (the run is sequential).
    unjournaled = [r for r in requests if r["seq"] not in set(journaled)]
    per_process = collections.Counter(r["client"] for r in unjournaled)
    assert set(per_process) <= {str(pid) for pid, _ in kills}, unjournaled
    assert all(n == 1 for n in per_process.values()), unjournaled
    for r in unjournaled:
        assert any(
            o["seq"] > r["seq"] and o["assistant"] == r["assistant"] and o["client"] != r["client"]
            for o in requests
        ), r
    return len(unjournaled)


def check_effects(store: Store, work: Path) -> int:
    """Effectful tools: one effect per idempotency key, the journal holds its receipt."""
    effects = sorted(p.name for p in (work / "effects").iterdir())
    assert len(effects) == TURNS // 2
    charges = [st for st in store.load_steps(RUN) if st.name == "tool:charge"]
    assert len(charges) == TURNS // 2
    assert all(st.status == STEP_OK for st in charges)
    keys = {Context(RUN, "agent_job", st.name, st.seq).idempotency_key for st in charges}
    assert keys == set(effects)
    for st in charges:
        key = Context(RUN, "agent_job", st.name, st.seq).idempotency_key
        assert st.output is not None
        assert json.loads(st.output) == (work / "effects" / key).read_text()
    executions = [line.split(",") for line in (work / "tools.ledger").read_text().splitlines()]
    charge_runs = collections.Counter(key for name, key, _ in executions if name == "charge")
    assert set(charge_runs) == set(effects)
    return sum(charge_runs.values())
