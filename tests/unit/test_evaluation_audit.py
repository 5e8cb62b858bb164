"""`--audit-evaluations`: parsing the flag, choosing a cycle's evaluation records, and when a summary is due."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agent.audit.evaluations import (
    SUMMARY_HEARTBEAT_SECONDS,
    EvaluationAudit,
    EvaluationAuditing,
    EvaluationMode,
)
from agent.cli import build_parser
from agent.core.engine import ExpressionResult, ObjectEvaluation
from agent.core.states import ObjectState, RuleState, Verdict

RUN = ["run", "--rules", "rules/kafka-resize.yaml", "--prometheus", "http://127.0.0.1:1"]


def evaluation(obj: str, *holds: bool | None) -> ObjectEvaluation:
    """An object's evaluation over one expression per `holds` (None: no data); the verdict follows them."""
    verdict = Verdict.NO_DATA if None in holds else Verdict.HOLDS if all(holds) else Verdict.CLEAR
    results = tuple(
        ExpressionResult(expression=f"e{index}", value=None if held is None else float(index), holds=held)
        for index, held in enumerate(holds)
    )
    return ObjectEvaluation(rule="r", object=obj, at=0.0, results=results, verdict=verdict)


def written(audit: EvaluationAudit, *evaluations: ObjectEvaluation) -> list[str]:
    return [chosen.object for chosen in audit.to_write("r", evaluations, {})]


@pytest.mark.parametrize(
    ("text", "mode", "every"),
    [("changes", EvaluationMode.CHANGES, 0), ("all", EvaluationMode.ALL, 0), ("sample:10", EvaluationMode.SAMPLE, 10)],
)
def test_the_flag_values_parse_and_print_back(text: str, mode: EvaluationMode, every: int) -> None:
    auditing = EvaluationAuditing.parse(text)
    assert (auditing.mode, auditing.every, str(auditing)) == (mode, every, text)


def test_run_defaults_to_changes_and_takes_a_sample() -> None:
    assert build_parser().parse_args(RUN).audit_evaluations == EvaluationAuditing()
    assert str(build_parser().parse_args([*RUN, "--audit-evaluations", "sample:5"]).audit_evaluations) == "sample:5"


@pytest.mark.parametrize("text", ["sample:0", "sample:", "sample:-1", "some", "ALL", "sample:2x"])
def test_a_bad_value_is_refused_naming_the_flag_and_the_choices(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([*RUN, "--audit-evaluations", text])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "--audit-evaluations" in error and "expected changes, all or sample:N" in error


def test_changes_writes_an_object_first_then_only_when_its_verdict_or_an_expressions_changes() -> None:
    audit = EvaluationAudit()

    assert written(audit, evaluation("a", True, False), evaluation("b", False)) == ["a", "b"]
    assert written(audit, evaluation("a", True, False), evaluation("b", False)) == []
    # the verdict stays clear, but the other expression now holds
    assert written(audit, evaluation("a", False, True), evaluation("b", False)) == ["a"]
    assert written(audit, evaluation("a", False, True), evaluation("b", None)) == ["b"]


def test_an_object_gone_is_forgotten_and_written_again_when_it_comes_back() -> None:
    audit = EvaluationAudit()
    written(audit, evaluation("a", True), evaluation("b", True))

    assert written(audit, evaluation("a", True)) == []
    assert written(audit, evaluation("a", True), evaluation("b", True)) == ["b"]


def test_rules_are_remembered_apart() -> None:
    audit = EvaluationAudit()
    audit.to_write("r", [evaluation("a", True)], {})

    assert [chosen.object for chosen in audit.to_write("other", [evaluation("a", True)], {})] == ["a"]


def test_a_summary_is_due_first_on_changed_counts_and_once_a_heartbeat_else() -> None:
    audit = EvaluationAudit()
    steady = {"counts": {"holds": 0, "clear": 1, "no-data": 0}, "selected": 1}
    changed = {"counts": {"holds": 1, "clear": 0, "no-data": 0}, "selected": 1}
    due = []
    for at, counts in [
        (0.0, steady),
        (2.0, steady),
        (SUMMARY_HEARTBEAT_SECONDS - 1, steady),
        (SUMMARY_HEARTBEAT_SECONDS, steady),
        (SUMMARY_HEARTBEAT_SECONDS + 2, changed),
        (SUMMARY_HEARTBEAT_SECONDS + 4, changed),
    ]:
        audit.to_write("r", [evaluation("a", True)], {})
        due.append(audit.summary_due("r", counts, at=at))

    assert due == [True, False, False, True, True, False]


def test_with_all_a_summary_is_due_every_cycle() -> None:
    audit = EvaluationAudit(auditing=EvaluationAuditing.parse("all"))
    counts = {"counts": {"holds": 1}}
    due = []
    for at in (0.0, 1.0, 2.0):
        audit.to_write("r", [evaluation("a", True)], {})
        due.append(audit.summary_due("r", counts, at=at))

    assert due == [True, True, True]


def test_changes_writes_an_object_whose_state_moved_but_not_for_its_last_holding_time() -> None:
    audit = EvaluationAudit()
    triggered = ObjectState(state=RuleState.TRIGGERED, since=0.0, active_at=0.0, last_holding_at=0.0)
    holding = evaluation("a", True)
    audit.to_write("r", [holding], {"a": triggered})

    assert audit.to_write("r", [holding], {"a": replace(triggered, last_holding_at=2.0)}) == []
    restarted = replace(triggered, active_at=10.0, last_holding_at=10.0)  # `for` restarted after a gap
    assert audit.to_write("r", [holding], {"a": restarted}) == [holding]
