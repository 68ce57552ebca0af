"""The mission state machine: the table in one place, every other move refused."""

from __future__ import annotations

import pytest

from tether.errors import InvalidTransitionError
from tether.mission.checks import CheckResult
from tether.mission.states import FINAL, TRANSITIONS, Machine, MissionState, allowed

S = MissionState
HAPPY = [
    S.PLANNING,
    S.WAITING_APPROVAL,
    S.APPROVED,
    S.PENDING_EXECUTION,
    S.IN_PROGRESS,
    S.EXECUTED,
    S.VERIFYING,
]


def test_happy_path__closes_only_with_passing_checks():
    machine = Machine()
    for state in HAPPY:
        machine.move(state)
    with pytest.raises(InvalidTransitionError, match="no check results"):
        machine.move(S.CLOSED)
    with pytest.raises(InvalidTransitionError, match="1 failed"):
        machine.move(S.CLOSED, {"checks": [CheckResult("a", True), CheckResult("b", False)]})
    assert machine.state is S.VERIFYING
    machine.move(S.CLOSED, {"checks": [CheckResult("a", True), {"passed": True}]})
    assert str(machine.state) == "closed"
    assert len(machine.history) == len(HAPPY) + 1


def test_claim_of_completion_cannot_skip_verification():
    machine = Machine(S.IN_PROGRESS)
    with pytest.raises(InvalidTransitionError, match="from in_progress to closed") as info:
        machine.move(S.CLOSED, {"checks": [{"passed": True}]})
    assert (info.value.source, info.value.target) == ("in_progress", "closed")
    machine.move(S.EXECUTED)
    with pytest.raises(InvalidTransitionError):
        machine.move(S.CLOSED, {"checks": [{"passed": True}]})


@pytest.mark.parametrize("source", list(S))
def test_every_state__only_table_moves_allowed(source: MissionState):
    for target in S:
        machine = Machine(source)
        evidence = {"checks": [{"passed": True}]}
        if target in allowed(source):
            machine.move(target, evidence)
            assert machine.state is target
        else:
            with pytest.raises(InvalidTransitionError):
                machine.move(target, evidence)
            assert machine.state is source


def test_final_states__nothing_leaves_them():
    for state in FINAL:
        assert allowed(state) == frozenset()
        assert state.final
    assert set(TRANSITIONS) == set(S)


def test_correction_loop_and_escalation():
    machine = Machine(S.IN_PROGRESS)
    for state in (
        S.CORRECTING,
        S.IN_PROGRESS,
        S.EXECUTED,
        S.VERIFYING,
        S.CORRECTING,
        S.ESCALATED,
        S.HALTED,
    ):
        machine.move(state)
    assert machine.state.final
