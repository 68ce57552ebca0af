"""Each monitor on small trajectories: what it flags, and what it leaves alone."""

from __future__ import annotations

from typing import Any

from tether.mission import evaluate, spec
from tether.mission.evaluate import Trajectory

from .helpers import answer, exchange, user

OBJECTIVE = "Summarize the quarterly sales figures in data/sales.csv into report.md"


def judge(
    messages: list[dict[str, Any]],
    mission: spec.MissionSpec | None = None,
    objective: str | None = OBJECTIVE,
):
    return evaluate.judge(Trajectory("t", messages, objective, mission))


def kinds(report: dict[str, Any]) -> list[tuple[str, str, int]]:
    return [(s["kind"], s["rule"], s["step"]) for s in report["signals"]]


def healthy() -> list[dict[str, Any]]:
    return [
        user(OBJECTIVE),
        *exchange("list_files", "data/sales.csv\nREADME.md", path="data"),
        *exchange("read_file", "quarter,revenue\nQ1,1200\nQ2,1350", path="data/sales.csv"),
        *exchange(
            "write_file",
            "ok",
            path="report.md",
            content="Quarterly sales: Q1 revenue 1200, Q2 1350",
        ),
        answer("The report is in report.md: revenue rose from 1200 in Q1 to 1350 in Q2."),
    ]


def test_healthy_trajectory__no_signals():
    report = judge(healthy())
    assert report["signals"] == []
    assert report["scores"]["action_advancement"] == 1.0
    assert report["scores"]["intent_drift"] is not None
    assert report["skipped"] == ["boundary", "budget", "completion"]


def test_repeated_call__loop_signal_at_the_third():
    messages = [user(OBJECTIVE)]
    for _ in range(3):
        messages += exchange("read_file", "quarter,revenue\nQ1,1200", path="data/sales.csv")
    report = judge(messages)
    assert ("loop", "repeated_action", 5) in kinds(report)
    assert ("loop", "same_observation", 6) in kinds(report)


def test_cycle_of_two_calls__loop_signal():
    messages = [user(OBJECTIVE)]
    for i in range(2):
        messages += exchange("list_files", f"data/sales.csv {i}", path="data")
        messages += exchange("read_file", f"quarter,revenue {i}", path="data/sales.csv")
    assert ("loop", "cycle", 7) in kinds(judge(messages))


def test_off_task_action__intent_signal():
    messages = [
        user(OBJECTIVE),
        *exchange("read_file", "quarter,revenue\nQ1,1200", path="data/sales.csv"),
        *exchange("web_search", "Cheap flights ...", query="cheap flights to Lisbon in December"),
    ]
    signals = [s for s in judge(messages)["signals"] if s["kind"] == "intent"]
    assert [s["step"] for s in signals] == [3]
    assert "lisbon" in signals[0]["evidence"]["unknown_terms"]


def test_answer_citing_a_number_no_tool_returned__grounding_signal():
    messages = [
        *healthy()[:-1],
        answer("Revenue rose to 1350 in Q2, up 12.5% on the 1,200 of Q1, 14% over plan; INV-2041."),
    ]
    signals = [s for s in judge(messages)["signals"] if s["kind"] == "grounding"]
    assert len(signals) == 1
    # 12.5% is (1350 - 1200) / 1200: worked out from the sources, so grounded.
    assert set(signals[0]["evidence"]["ungrounded"]) == {"14", "INV-2041"}


def test_figures_worked_out_in_one_step__grounded():
    table = "region,q1,q2\nnorth,1180,1240\nsouth,905,980"
    messages = [
        user(OBJECTIVE),
        *exchange("read_file", table, path="data/sales.csv"),
        answer("Q1 totals 2,085 (north 1180 + south 905); north's Q2 is 60 above Q1, +5.1%."),
    ]
    assert [s for s in judge(messages)["signals"] if s["kind"] == "grounding"] == []
    invented = [*messages[:-1], answer("Q1 totals 2,085 and Q3 will reach 2,300.")]
    signals = [s for s in judge(invented)["signals"] if s["kind"] == "grounding"]
    assert signals[0]["evidence"]["ungrounded"] == ["2,300"]


def test_failed_tool_calls__warning_then_error_on_a_streak():
    messages = [user(OBJECTIVE)]
    for i in range(3):
        messages += exchange(
            "read_file", f"Error: no such file data/q{i}.csv", path=f"data/q{i}.csv"
        )
    severities = [s["severity"] for s in judge(messages)["signals"] if s["kind"] == "tool_error"]
    assert severities == ["warning", "warning", "error"]


def test_no_progress_for_a_window__advancement_signal():
    messages = [user(OBJECTIVE)]
    messages += exchange("read_file", "quarter,revenue", path="data/sales.csv")
    for i in range(6):
        messages += exchange("read_file", "quarter,revenue", path=f"data/sales.csv#{i}")
    assert [s["rule"] for s in judge(messages)["signals"] if s["kind"] == "advancement"] == [
        "stalled"
    ]


MISSION = spec.MissionSpec(
    objective=OBJECTIVE,
    phases=(
        spec.Phase(name="read", goal="read the sales data", tools=("list_files", "read_file")),
    ),
    forbidden=(spec.NeverRule(action=spec.Action(tool="delete_file")),),
    final_checks=(spec.RegexCheck(pattern=r"report\.md"),),
)


def test_with_a_spec__boundary_and_completion_monitors_run():
    messages = [
        user(OBJECTIVE),
        *exchange("read_file", "quarter,revenue\nQ1,1200", path="data/sales.csv"),
        *exchange("write_file", "ok", path="notes.txt", content="Q1 1200"),
        *exchange("delete_file", "ok", path="data/sales.csv"),
        answer("All done."),
    ]
    report = judge(messages, MISSION)
    found = kinds(report)
    assert ("boundary", "tool_not_allowed", 3) in found
    assert ("boundary", "forbidden", 5) in found
    assert ("completion", "unverified_claim", 7) in found
    assert report["skipped"] == []
    assert report["scores"]["action_completion"] == 0.0
    assert report["scores"]["flow_conformance"] == round(1 - 2 / 3, 4)


def test_spec_digest__stable_and_sensitive():
    same = spec.MissionSpec.model_validate(MISSION.model_dump(mode="json"))
    assert same.digest == MISSION.digest
    assert MISSION.model_copy(update={"objective": "x"}).digest != MISSION.digest
