"""Provider outages and rate limits across a fleet: 8 agent runs in 2 worker processes share
one `Services` gate through the database (both backends).

The model chain is [primary, fallback]: the OpenAI SDK provider against a fake OpenAI server
and the Anthropic SDK provider against a fake Anthropic server, both in this process, each
logging every request it receives to a file.

- Outage: once the runs are working, the primary answers every request 529 for
  TETHER_OUTAGE_SECONDS (15 by default), then recovers. The primary's breaker (3 failures in
  10 s; cooldown TETHER_OUTAGE_COOLDOWN, 5 s by default) opens, the runs fail over to the
  fallback and all complete; after the breaker first opened only its probes (one per cooldown)
  and the calls already in flight reach the failing primary. After the outage a probe closes
  the breaker and the primary serves again.
- Rate budget: the primary enforces a quota (requests and tokens per second) and answers 429
  beyond it; the fleet's budget for "primary" is that quota. No request is answered 429 and
  all runs complete.

Each test prints its figures (counts and durations); docs/agents.md ("Proofs") records them.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.agent.servers import AnthropicServer, FakeServer, OpenAIServer, Recorded, Reply
from tests.agent.servers.base import prompt_tokens, read_log
from tests.crash.test_kill_storm import env_for
from tether.agent.types import ToolCall
from tether.settings import Settings
from tether.store import open_store
from tether.store.base import STEP_OK, RunFilter, Store

pytestmark = pytest.mark.crash

ROOT = Path(__file__).parents[2]
APP = Path(__file__).parent / "apps" / "agent_fleet.py"
WORKERS, RUNS = 2, 8
OUTAGE = float(os.environ.get("TETHER_OUTAGE_SECONDS", "15"))
COOLDOWN = float(os.environ.get("TETHER_OUTAGE_COOLDOWN", "5"))
WARMUP = 2.0
REPLY_DELAY = 0.15


@dataclass
class Model:
    """The model both servers play: each turn calls `work`, until `finished` says done."""

    min_turns: int
    finished: threading.Event = field(default_factory=threading.Event)

    def __call__(self, recorded: Recorded) -> Reply:
        messages = recorded.body.get("messages") or []
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        tokens = prompt_tokens(recorded.body)
        if turn >= self.min_turns and self.finished.is_set():
            return Reply(text=f"done after {turn} items", input_tokens=tokens, delay=REPLY_DELAY)
        call = ToolCall(id=f"call_{turn}_{recorded.seq}", name="work", arguments={"n": turn})
        return Reply(tool_calls=[call], input_tokens=tokens, delay=REPLY_DELAY)


@dataclass
class Fleet:
    primary: FakeServer
    fallback: FakeServer
    model: Model
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def done(self) -> bool:
        return all(p.poll() is not None for p in self.procs)

    def finish(self) -> None:
        """Wait for the workers; fail with their output if one did not complete."""
        for proc in self.procs:
            out, err = proc.communicate(timeout=600)
            assert "DONE" in out, err[-3000:]


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[FakeServer, FakeServer]]:
    primary = OpenAIServer(log=tmp_path / "primary.log").start()
    fallback = AnthropicServer(log=tmp_path / "fallback.log").start()
    try:
        yield primary, fallback
    finally:
        primary.stop()
        fallback.stop()


def start_fleet(
    settings: Settings,
    servers: tuple[FakeServer, FakeServer],
    policy: dict[str, Any],
    model: Model,
) -> Fleet:
    primary, fallback = servers
    primary.respond(model)
    fallback.respond(model)
    env = env_for(settings)
    env["TETHER_MAX_CONCURRENCY"] = "8"
    env["TETHER_TEST_POLICY"] = json.dumps(policy)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env["PYTHONPATH"]])
    fleet = Fleet(primary, fallback, model)
    for index in range(WORKERS):
        fleet.procs.append(
            subprocess.Popen(
                [sys.executable, str(APP), str(index), primary.base_url, fallback.base_url],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in fleet.procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY"):
            for p in fleet.procs:
                p.kill()
            raise AssertionError(f"a worker did not start: {line!r}\n{proc.communicate()[1]}")
    return fleet


def log_of(server: FakeServer) -> list[dict[str, Any]]:
    assert server.log is not None
    return read_log(server.log)


def check_runs(store: Store) -> list[Any]:
    runs = store.list_runs(RunFilter(limit=100))
    assert len(runs) == RUNS
    assert {r.status for r in runs} == {"SUCCEEDED"}, [(r.id, r.status) for r in runs]
    return runs


def llm_steps(store: Store, runs: list[Any]) -> list[Any]:
    return [st for r in runs for st in store.load_steps(r.id) if st.name.startswith("llm:")]


def refusals(steps: list[Any]) -> int:
    """Journaled attempts the open breaker refused without calling the provider."""
    return sum(
        1
        for st in steps
        if st.status != STEP_OK
        and st.error is not None
        and "ServiceCircuitOpenError" in json.loads(st.error)["type"]
    )


@pytest.mark.timeout(600)
def test_outage__breaker_spares_the_failing_provider_and_runs_fail_over(
    settings: Settings, servers: tuple[FakeServer, FakeServer]
):
    policy = {"failure_threshold": 3, "window": 10.0, "cooldown": COOLDOWN}
    store = open_store(settings)
    store.migrate()
    began = time.time()
    fleet = start_fleet(settings, servers, policy, Model(min_turns=10))
    primary, fallback = servers
    try:
        opened: list[float] = []  # every opened_at seen: the first is when it first opened
        phase_end = time.monotonic() + WARMUP
        outage_at = recovered_at = 0.0
        while not fleet.done():
            row = next(iter(store.list_services(["primary"])), None)
            if row is not None and row.opened_at is not None and row.opened_at not in opened:
                opened.append(row.opened_at)
            if not outage_at and time.monotonic() >= phase_end:
                primary.fail("overloaded", times=None)
                outage_at, phase_end = time.time(), time.monotonic() + OUTAGE
            elif outage_at and not recovered_at and time.monotonic() >= phase_end:
                primary.recover()
                recovered_at = time.time()
                # Let the runs work on until a probe has had time to close the breaker.
                threading.Timer(COOLDOWN + 2.0, fleet.model.finished.set).start()
            time.sleep(0.05)
        fleet.finish()
        runs = check_runs(store)
        assert outage_at, "the runs ended before the outage began"
        assert recovered_at, "the runs ended before the outage did"
        requests, backup = log_of(primary), log_of(fallback)
        failed = [r for r in requests if r["status"] == 529]
        assert failed, "the outage reached no request"
        assert opened, "the primary's breaker never opened"
        first_open = min(opened)
        after_open = [r for r in failed if r["at"] >= first_open]
        probes_possible = math.ceil(OUTAGE / COOLDOWN) + 1
        assert len(after_open) <= probes_possible + RUNS, after_open
        during = [r for r in backup if outage_at <= r["at"] < recovered_at]
        assert during, "no run failed over to the fallback during the outage"
        served_after = [r for r in requests if r["at"] >= recovered_at and r["status"] == 200]
        assert served_after, "the primary's breaker did not close after the outage"
        steps = llm_steps(store, runs)
        print(
            f"\n{settings.database_url.split(':')[0] if settings.database_url else '?'}: "
            f"outage {recovered_at - outage_at:.1f}s, cooldown {COOLDOWN:g}s; "
            f"primary requests during the outage={len(failed)} "
            f"(before the breaker first opened {len(failed) - len(after_open)}, "
            f"after {len(after_open)}; breaker opened {len(opened)} times), "
            f"breaker opened {first_open - outage_at:.2f}s into the outage; "
            f"refused by the breaker without a request={refusals(steps)}; "
            f"fallback requests during the outage={len(during)}; "
            f"primary 200s after recovery={len(served_after)}; "
            f"model calls={len(requests) + len(backup)}; "
            f"all {len(runs)} runs done in {time.time() - began:.1f}s"
        )
    finally:
        for proc in fleet.procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        store.close()


RATE_REQUESTS, RATE_TOKENS, RATE_WINDOW = 12, 4000, 1.0
RATE_TURNS = 8


@pytest.mark.timeout(600)
def test_rate_budget__the_fleet_never_exceeds_the_providers_quota(
    settings: Settings, servers: tuple[FakeServer, FakeServer]
):
    primary, fallback = servers
    primary.limit(requests=RATE_REQUESTS, tokens=RATE_TOKENS, window=RATE_WINDOW)
    policy = {
        "requests_per_minute": RATE_REQUESTS,
        "tokens_per_minute": RATE_TOKENS,
        "rate_window": RATE_WINDOW,
    }
    model = Model(min_turns=RATE_TURNS)
    model.finished.set()
    store = open_store(settings)
    store.migrate()
    began = time.time()
    fleet = start_fleet(settings, servers, policy, model)
    try:
        fleet.finish()
        elapsed = time.time() - began
        runs = check_runs(store)
        requests, backup = log_of(primary), log_of(fallback)
        limited = [r for r in requests if r["status"] == 429]
        busiest, most_tokens = busiest_window(requests, RATE_WINDOW)
        print(
            f"\n{settings.database_url.split(':')[0] if settings.database_url else '?'}: "
            f"quota {RATE_REQUESTS} requests and {RATE_TOKENS} tokens per {RATE_WINDOW:g}s; "
            f"primary requests={len(requests)} (429: {len(limited)}), fallback={len(backup)}; "
            f"busiest window at the server: {busiest} requests, {most_tokens} tokens; "
            f"all {len(runs)} runs done in {elapsed:.1f}s"
        )
        assert not limited, f"{len(limited)} requests were answered 429: {limited[:3]}"
        assert len(requests) == RUNS * (RATE_TURNS + 1)
    finally:
        for proc in fleet.procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        store.close()


def busiest_window(requests: list[dict[str, Any]], window: float) -> tuple[int, int]:
    """The most requests and tokens the server served in any `window` seconds."""
    served = [(r["at"], r["tokens"]) for r in requests if r["status"] == 200]
    most = most_tokens = 0
    for i, (start, _) in enumerate(served):
        inside = [t for at, t in served[i:] if at < start + window]
        most, most_tokens = max(most, len(inside)), max(most_tokens, sum(inside))
    return most, most_tokens
