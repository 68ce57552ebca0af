"""`make demo` keeps working: the agent demo runs as a script, as the Makefile runs it.

The demo is run in a subprocess with a temporary work directory (its database, ledgers and
report), once on the scripted model and once on the OpenAI provider against the fake
OpenAI server. Each test checks the exit code, the key lines of the output, and then, apart
from what the demo prints about itself, the database and the ledgers it leaves behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.agent.servers import OpenAIServer, Reply
from tether.agent.types import ToolCall
from tether.settings import Settings
from tether.store import open_store
from tether.store.base import STEP_OK

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "agent_demo.py"
ANSWER = {
    "total_units": 1240,
    "most_valuable": {"sku": "D-405", "value": 3888.0},
    "below_reorder": ["A-115", "C-325"],
    "restock_first": "Linea Supply",
    "discontinued_in_stock": ["B-220", "D-410"],
    "report_file": "report.md",
}


def demo_env(**extra: str) -> dict[str, str]:
    """The environment without model keys or tether settings, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TETHER_", "OPENAI_", "ANTHROPIC_"))
    }
    return {**env, "NO_COLOR": "1", **extra}


def run_demo(workdir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEMO), "--workdir", str(workdir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )


def ledger(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def journal(workdir: Path) -> list[Any]:
    store = open_store(Settings(database_url=f"sqlite:///{workdir / 'demo.db'}"))
    try:
        run = store.get_run("inventory-report")
        assert run is not None
        assert run.status == "SUCCEEDED"
        assert run.recoveries >= 1
        return store.load_steps("inventory-report")
    finally:
        store.close()


@pytest.mark.timeout(180)
def test_agent_demo__scripted_model__shows_faults_kill_and_resume(tmp_path: Path):
    done = run_demo(tmp_path, demo_env())
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    for line in (
        "429 rate limited, retry-after 1.0s",
        "(a durable tether.sleep)",
        "529 overloaded -> 2 failures: the breaker of 'primary' opens",
        "not called: the circuit breaker of 'primary' is open -> fail over to fallback:model-b",
        "final answer rejected: total_units: Input should be a valid integer",
        "final answer rejected: discontinued_in_stock lists ['F-600']",
        "SIGKILL worker 1",
        "replays its 18 journal entries (#0-#17) without running them again",
        "final answer: accepted",
        "report.md against the data: 10 of 10 checks pass",
        "check: passed",
        "the providers received 9 model calls (worker 1: 6, worker 2: 3)",
        "list_files x1, read_file x3, write_report x1; worker 2 ran none of them again",
        "circuit breaker primary: open",
        "sent 'primary' 0 calls",
        "workflows show inventory-report --db sqlite:///",
        "services list --db sqlite:///",
    ):
        assert line in out, f"missing {line!r} in:\n{out}"
    assert "NOT OK" not in out
    assert "FAILED" not in out

    # Apart from what the demo says: the journal, the ledgers and the report.
    steps = journal(tmp_path)
    answered = [st for st in steps if st.name.startswith("llm:") and st.status == STEP_OK]
    assert [st.name for st in answered] == ["llm:primary:model-a"] * 2 + [
        "llm:fallback:model-b"
    ] * 4
    calls = ledger(tmp_path / "model-calls.jsonl")
    assert len({c["pid"] for c in calls}) == 2  # two workers
    ok = [(c["provider"], c["turn"]) for c in calls if c["outcome"] == "ok"]
    assert len(ok) == len(set(ok)) == len(answered)  # no answer paid for twice
    first, second = calls[0]["pid"], calls[-1]["pid"]
    assert {c["turn"] for c in calls if c["pid"] == second} == {3, 4, 5}
    assert all(c["provider"] == "fallback" for c in calls if c["pid"] == second)
    runs = ledger(tmp_path / "tool-runs.jsonl")
    assert [r["tool"] for r in runs] == ["list_files"] + ["read_file"] * 3 + ["write_report"]
    assert {r["pid"] for r in runs} == {first}  # the resumed worker re-ran no tool
    report = (tmp_path / "report.md").read_text()
    assert "1240" in report
    assert "Linea Supply" in report


@pytest.mark.timeout(180)
def test_agent_demo__openai_provider__runs_against_the_wire(tmp_path: Path):
    pytest.importorskip("openai")
    server = OpenAIServer().start()
    try:
        server.fail("rate_limited", retry_after=0.5)
        reads = [
            ToolCall(id=f"r{i}", name="read_file", arguments={"name": name})
            for i, name in enumerate(["inventory.csv", "suppliers.md", "notes.txt"])
        ]
        report = (
            "# Stock\n1240 units. D-405 holds the most value: 3888.00 EUR. Below reorder: "
            "A-115, C-325; restock first from Linea Supply. Discontinued in stock: B-220, D-410."
        )
        server.script(
            Reply(tool_calls=[ToolCall(id="l1", name="list_files", arguments={})]),
            Reply(tool_calls=reads),
            Reply(
                tool_calls=[ToolCall(id="w1", name="write_report", arguments={"markdown": report})]
            ),
            Reply(text=json.dumps(ANSWER)),
        )
        env = demo_env(
            OPENAI_API_KEY="test",
            OPENAI_BASE_URL=server.base_url,
            TETHER_DEMO_OPENAI_MODEL="fake-model",
        )
        done = run_demo(tmp_path, env)
        out = done.stdout
        assert done.returncode == 0, out + done.stderr
        for line in (
            "model chain: openai:fake-model (real models)",
            "openai:fake-model  429 rate limited, retry-after 0.5s",
            "SIGKILL worker 1",
            "final answer: accepted",
            "check: passed",
        ):
            assert line in out, f"missing {line!r} in:\n{out}"
        # The killed worker's call never reached the server; the resumed one sent it once.
        assert len(server.requests) == 5
        journal(tmp_path)
        runs = ledger(tmp_path / "tool-runs.jsonl")
        assert [r["tool"] for r in runs].count("write_report") == 1
    finally:
        server.stop()
