"""Missions killed during a correction resume to the same verdicts and the same audit chain.

A reference run goes through without a kill. Other runs of the same mission are SIGKILLed
right after the rollback's audit records were appended (before the step that decided it was
journaled), when the rolled-back run restarts on the next model, and at random moments from
outside; each is then resumed by a new process. Their audit chains must equal the
reference's record for record (kind and data, the tags included): the same signals, the same
corrections, the same transitions, nothing recorded twice, every link intact.
"""

from __future__ import annotations

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

from tests.crash.test_kill_storm import env_for
from tether.codec import Codec
from tether.mission import audit
from tether.settings import Settings
from tether.store import open_store
from tether.store.base import Store

pytestmark = pytest.mark.crash

APP = Path(__file__).parent / "apps" / "mission_run.py"


def start(work: Path, run_id: str, mode: str, env: dict[str, str]) -> subprocess.Popen[str]:
    work.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, str(APP), str(work), run_id, mode],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(work: Path, run_id: str, env: dict[str, str]) -> dict[str, Any]:
    proc = start(work, run_id, "none", env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.splitlines()[-1])  # type: ignore[no-any-return]


def records(store: Store, run_id: str) -> list[tuple[str, Any]]:
    chain = f"mission/{run_id}"
    rows, head = store.load_audit(chain)
    verdict = audit.verify(chain, rows, head, Codec())
    assert verdict.ok, verdict.reason
    return [(r.kind, r.data) for r in audit.decode(rows, Codec())]


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    store = open_store(settings)
    store.migrate()
    store.close()
    return env_for(settings)


@pytest.mark.timeout(300)
def test_mission_killed_during_correction__same_verdicts_same_chain(
    settings: Settings, env: dict[str, str], tmp_path: Path
):
    reference = finish(tmp_path / "ref", "ref", env)
    assert reference["state"] == "closed"
    store = open_store(settings)
    try:
        expected = records(store, "ref")
        kinds = [kind for kind, _ in expected]
        assert kinds.count("correction") == 2  # a message, then the rollback
        for mode in ("after-audit", "restart"):
            work = tmp_path / mode
            dying = start(work, mode, mode, env)
            _, err = dying.communicate(timeout=120)
            assert dying.returncode == -signal.SIGKILL, f"{mode} did not die: {err[-2000:]}"
            outcome = finish(work, mode, env)
            assert {**outcome, "mission_id": ""} == {**reference, "mission_id": ""}, mode
            assert records(store, mode) == expected, mode
    finally:
        store.close()


@pytest.mark.timeout(300)
def test_mission_killed_at_random__same_verdicts_same_chain(
    settings: Settings, env: dict[str, str], tmp_path: Path
):
    reference = finish(tmp_path / "ref", "ref", env)
    rng = random.Random(int(os.environ.get("TETHER_CRASH_SEED", "0")) or None)
    store = open_store(settings)
    kills = 0
    try:
        work = tmp_path / "random"
        for _ in range(4):
            proc = start(work, "random", "none", env)
            assert proc.stdout is not None
            assert proc.stdout.readline().startswith("READY")
            time.sleep(rng.uniform(0.05, 0.6))
            if proc.poll() is not None:
                proc.communicate()
                break
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            kills += 1
        outcome = finish(work, "random", env)
        assert {**outcome, "mission_id": ""} == {**reference, "mission_id": ""}
        assert records(store, "random") == records(store, "ref")
        print(f"\nmission killed {kills} times at random; chain equal to the reference")
    finally:
        store.close()
