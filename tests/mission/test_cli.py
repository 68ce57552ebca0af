"""`tether evaluate` and `tether audit verify` as users run them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

import tether
from tests.cli.helpers import invoke
from tether.cli.main import app as cli
from tether.codec import Codec
from tether.mission import audit

from .helpers import answer, exchange, user
from .test_monitors import MISSION, OBJECTIVE, healthy


def write_jsonl(path: Path, messages: list[dict[str, Any]]) -> Path:
    path.write_text("\n".join(json.dumps(m) for m in messages) + "\n")
    return path


def test_evaluate__jsonl_and_object_files__one_json_object_each(tmp_path: Path):
    write_jsonl(tmp_path / "a.jsonl", healthy())
    looping = [user(OBJECTIVE)] + 3 * exchange("read_file", "same", path="data/sales.csv")
    (tmp_path / "b.json").write_text(
        json.dumps(
            {
                "messages": looping,
                "objective": OBJECTIVE,
                "mission": MISSION.model_dump(mode="json"),
            }
        )
    )
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    reports = [json.loads(line) for line in result.output.splitlines()]
    assert [Path(r["file"]).name for r in reports] == ["a.jsonl", "b.json"]
    assert reports[0]["signals"] == []
    assert reports[0]["skipped"] == ["boundary", "budget", "completion"]
    signal = next(s for s in reports[1]["signals"] if s["kind"] == "loop")
    assert set(signal) >= {"kind", "step", "severity", "evidence"}
    assert signal["step"] == 5
    assert reports[1]["skipped"] == []
    assert set(reports[1]["scores"]) == {
        "flow_conformance",
        "intent_drift",
        "action_advancement",
        "action_completion",
    }


def test_evaluate__table_output_names_signals_and_skipped_monitors(tmp_path: Path):
    messages = [*healthy()[:-1], answer("Revenue was 9999 in Q3.")]
    result = CliRunner().invoke(cli, ["evaluate", str(write_jsonl(tmp_path / "t.jsonl", messages))])
    assert result.exit_code == 0, result.output
    assert "grounding/ungrounded" in result.output
    assert "skipped (no mission spec): boundary, budget, completion" in result.output


def test_evaluate__malformed_file__named_error_exit_1(tmp_path: Path):
    (tmp_path / "bad.jsonl").write_text('{"role": "user", "content": "x"}\nnot json\n')
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "bad.jsonl")])
    assert result.exit_code == 1
    assert "bad.jsonl:2: not a JSON message" in result.output


def test_evaluate__missing_path__clear_error(tmp_path: Path):
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "no such file or folder" in result.output


def test_evaluate__hundreds_of_trajectories_in_one_process(tmp_path: Path):
    for i in range(300):
        write_jsonl(tmp_path / f"t{i:03}.jsonl", healthy() if i % 2 else healthy()[:3] * 3)
    started = time.perf_counter()
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path), "--json"])
    elapsed = time.perf_counter() - started
    assert result.exit_code == 0
    assert len(result.output.splitlines()) == 300
    print(f"judged 300 trajectories in {elapsed:.2f} s")  # a figure for the docs, not a test


def test_audit_verify__intact_then_broken(app: tether.App):
    chain = audit.Chain("mission/cli", Codec())
    app.store.append_audit([chain.append("transition", {"to": str(i)}, 1.0) for i in range(3)], 1.0)
    ok = invoke(app, "audit", "verify", "--json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)[0]["ok"] is True
    # Delete the tail through the store's own tables: the head no longer matches.
    _delete_last(app)
    broken = invoke(app, "audit", "verify")
    assert broken.exit_code == 1
    assert "broken at 2" in broken.output


def _delete_last(app: tether.App) -> None:
    from .test_audit_tamper import q, raw

    with raw(app.settings) as conn:
        conn.execute(q(app.settings, "DELETE FROM audit WHERE seq = 2"))


async def test_missions_list_and_show(make_app, tmp_path: Path):
    from tests.mission.test_mission import DONE, READ, WRITE, run, setup
    from tether.agent.providers import scripted as s

    app = setup(make_app, tmp_path, [READ, s.claim_done()], recovery=[WRITE, DONE])
    await run(app, "m-cli")
    listing = invoke(app, "missions", "list", "--json")
    assert listing.exit_code == 0, listing.output
    [row] = json.loads(listing.output)
    assert (row["id"], row["state"], row["audit"], row["corrections"]) == (
        "m-cli",
        "closed",
        "intact",
        1,
    )
    assert row["scores"]["action_completion"] == 1.0
    shown = invoke(app, "missions", "show", "m-cli")
    assert shown.exit_code == 0, shown.output
    assert "state closed" in shown.output
    assert "intact" in shown.output
    detail = json.loads(invoke(app, "missions", "show", "m-cli", "--json").output)
    timeline = [entry["data"] for entry in detail["timeline"]]
    for text in ("in_progress -> executed", "error completion/unverified_claim at step 3"):
        assert any(line.startswith(text) for line in timeline), timeline
    assert "message for completion/unverified_claim" in timeline
    missing = invoke(app, "missions", "show", "nope")
    assert missing.exit_code == 1
    assert "no mission 'nope'" in missing.output
