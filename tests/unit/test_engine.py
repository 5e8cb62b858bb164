"""One evaluation cycle end to end: the reference rule reproduces the acceptance table of the vendor papers (README).

| step | usage reaches | PVC before | result                                |
|------|---------------|------------|---------------------------------------|
| 1    | 80% of 400    | 400        | resized by 100% to 800                |
| 2    | 80% of 800    | 800        | resized, but capped at maxsize (1 TB) |
| 3    | 80% of 1 TB   | 1 TB       | resize declined: at maxsize           |

The executor is simulated with the state machine's own events (ActionStarted, ActionFinished) and
by giving each PVC the size that was planned for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers import REFERENCE_RULE as REFERENCE

from agent.actions.registry import CATALOG
from agent.actions.volume_resize.spec import ResizePlan
from agent.core.engine import (
    CycleOutcome,
    ExpressionResult,
    distinct_queries,
    evaluation_of,
    plan_actions,
    run_cycle,
    verdicts_by_object,
    verdicts_not_clear,
)
from agent.core.loader import parse_rules
from agent.core.matching import TargetObject, pvc_object
from agent.core.operators import Answers
from agent.core.rules import Rule
from agent.core.samples import Sample
from agent.core.states import (
    ActionFinished,
    ActionStarted,
    ApprovalAnswered,
    ObjectState,
    RuleState,
    Verdict,
    decide,
)

GIB = 1024**3
TIB = 1024 * GIB
NAMESPACE = "kafka"
PVC_NAMES = [f"data-kafka-{n}" for n in range(4)]
KEYS = [f"{NAMESPACE}/{name}" for name in PVC_NAMES]
T0 = datetime(2024, 6, 3, 12, 0, tzinfo=UTC).timestamp()  # a Monday, noon UTC
RULES_DIR = Path(__file__).resolve().parents[2] / "rules"


def load(text: str) -> Rule:
    result = parse_rules(text, file="rule.yaml", catalog=CATALOG)
    assert [str(problem) for problem in result.problems] == []
    (rule,) = result.rules
    return rule


RULE = load(REFERENCE)
QUERY = RULE.conditions.expressions[0].query
COOLDOWN = RULE.cooldown_seconds


def pvcs(capacity: int | None = 400 * GIB, *, count: int = 4) -> list[TargetObject]:
    return [
        pvc_object(namespace=NAMESPACE, name=name, labels={"app": "kafka"}, capacity_bytes=capacity)
        for name in PVC_NAMES[:count]
    ]


def usage(values: Mapping[str, float], *, query: str = QUERY) -> dict[str, list[Sample]]:
    """The px_volume_* vector for `query`: PVC name -> usage percent."""
    return {query: [Sample(labels={"namespace": NAMESPACE, "pvc": name}, value=v) for name, v in values.items()]}


def percent(used: float, capacity: float) -> float:
    """What the reference query computes: 100 * used / capacity, with IEEE division as PromQL does it."""
    if capacity == 0:
        return math.nan if used == 0 else math.copysign(math.inf, used)
    return 100 * used / capacity


def execute(outcome: CycleOutcome, objects: list[TargetObject], *, now: float) -> tuple[dict, list[TargetObject]]:
    """The executor: start and verify every planned action, and give each PVC its planned size."""
    states = dict(outcome.states)
    sizes = {}
    for action in outcome.planned:
        assert isinstance(action.detail, ResizePlan)
        sizes[action.object] = action.detail.target_bytes
        for event in (ActionStarted(), ActionFinished(succeeded=True, reason=f"resized to {action.after}")):
            step = decide(
                rule=RULE.name,
                object_key=action.object,
                state=states[action.object],
                event=event,
                now=now,
                cooldown_seconds=COOLDOWN,
                for_seconds=RULE.conditions.for_seconds,
            )
            states[action.object] = step.state
    resized = [replace(pvc, capacity_bytes=sizes.get(pvc.key, pvc.capacity_bytes)) for pvc in objects]
    return states, resized


# --- the acceptance table ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TableStep:
    step: int
    before: int
    after: int | None
    """The planned size; None when the resize is declined."""
    capped: bool = False
    before_text: str = ""
    after_text: str = ""


TABLE = [
    TableStep(step=1, before=400 * GIB, after=800 * GIB, before_text="400Gi", after_text="800Gi"),
    TableStep(
        step=2, before=800 * GIB, after=TIB, capped=True, before_text="800Gi", after_text="1Ti (capped at maxsize)"
    ),
    TableStep(step=3, before=TIB, after=None),
]


def test_reference_table_step_by_step() -> None:
    objects = pvcs()
    states: Mapping[str, ObjectState] = {}
    now = T0
    for row in TABLE:
        assert [pvc.capacity_bytes for pvc in objects] == [row.before] * 4, f"step {row.step}"
        # usage passes 80% of the current size: 85% of it
        vector = usage({name: percent(0.85 * row.before, row.before) for name in PVC_NAMES})
        outcome = run_cycle(rule=RULE, objects=objects, vectors=vector, states=states, now=now, catalog=CATALOG)

        assert [evaluation.verdict for evaluation in outcome.evaluations] == [Verdict.HOLDS] * 4
        if row.after is not None:
            assert outcome.declined == ()
            assert [(action.object, action.before, action.after) for action in outcome.planned] == [
                (key, row.before_text, row.after_text) for key in KEYS
            ]
            for action in outcome.planned:
                assert action.detail == ResizePlan(current_bytes=row.before, target_bytes=row.after, capped=row.capped)
                assert (action.rule, action.action, action.at) == (RULE.name, RULE.actions[0].name, now)
            assert {state.state for state in outcome.states.values()} == {RuleState.ACTIVE_ACTIONS_PENDING}
            states, objects = execute(outcome, objects, now=now + 30)
            assert {state.state for state in states.values()} == {RuleState.ACTIVE_ACTIONS_TAKEN}
        else:
            assert outcome.planned == ()
            assert [(declined.object, declined.code) for declined in outcome.declined] == [
                (key, "AtMaxSize") for key in KEYS
            ]
            assert all("maxsize 1Ti" in declined.reason for declined in outcome.declined)
            assert {state.state for state in outcome.states.values()} == {RuleState.ACTIONS_DECLINED}
        # the next step: ingest continues, past the cooldown of the last resize
        now += 30 + COOLDOWN


def test_only_the_volume_past_80_percent_is_resized() -> None:
    vector = usage({"data-kafka-0": 50.0, "data-kafka-1": 80.5, "data-kafka-2": 80.0, "data-kafka-3": 12.0})
    outcome = run_cycle(rule=RULE, objects=pvcs(), vectors=vector, states={}, now=T0, catalog=CATALOG)
    assert [action.object for action in outcome.planned] == ["kafka/data-kafka-1"]
    assert {key: state.state for key, state in outcome.states.items()} == {
        "kafka/data-kafka-0": RuleState.NORMAL,
        "kafka/data-kafka-1": RuleState.ACTIVE_ACTIONS_PENDING,
        "kafka/data-kafka-2": RuleState.NORMAL,  # Gt: exactly 80 is not past 80
        "kafka/data-kafka-3": RuleState.NORMAL,
    }


def test_cycle_records_transitions_and_evaluations() -> None:
    outcome = run_cycle(
        rule=RULE, objects=pvcs(count=1), vectors=usage({"data-kafka-0": 85.0}), states={}, now=T0, catalog=CATALOG
    )
    # no stored state is Normal with no history (UNTOUCHED): no Initializing -> Normal first
    assert [(t.from_state, t.to_state) for t in outcome.transitions] == [
        (RuleState.NORMAL, RuleState.TRIGGERED),
        (RuleState.TRIGGERED, RuleState.ACTIVE_ACTIONS_PENDING),
    ]
    assert all((t.rule, t.object, t.at) == (RULE.name, KEYS[0], T0) for t in outcome.transitions)
    (evaluation,) = outcome.evaluations
    assert evaluation.results == (ExpressionResult(expression=QUERY, value=85.0, holds=True),)
    assert (evaluation.rule, evaluation.object, evaluation.at) == (RULE.name, KEYS[0], T0)


# --- when the agent must not act -------------------------------------------------------------

ACTING = {RuleState.ACTIVE_ACTIONS_PENDING, RuleState.ACTIVE_ACTIONS_IN_PROGRESS, RuleState.ACTIVE_ACTIONS_TAKEN}


@dataclass(frozen=True, kw_only=True)
class Quiet:
    id: str
    vector: dict[str, list[Sample]]
    capacity: int | None = 400 * GIB
    labels: Mapping[str, str] | None = None
    state: ObjectState | None = None
    verdict: Verdict | None = Verdict.NO_DATA
    """None: the object is not evaluated at all."""
    end: RuleState | None = RuleState.NORMAL
    declined_code: str | None = None
    note: str = ""


def px(value: float, **labels: str) -> dict[str, list[Sample]]:
    return {QUERY: [Sample(labels={"namespace": NAMESPACE, "pvc": PVC_NAMES[0], **labels}, value=value)]}


QUIET = [
    Quiet(id="no sample", vector={}, note="no data"),
    Quiet(id="empty vector", vector={QUERY: []}, note="no data"),
    Quiet(id="NaN value", vector=px(math.nan), note="no data"),
    Quiet(id="capacity metric 0, usage 0: 0/0 is NaN", vector=px(percent(0, 0)), note="no data"),
    Quiet(id="capacity metric 0, usage > 0: x/0 is +Inf", vector=px(percent(5 * GIB, 0)), note="no data"),
    Quiet(id="-Inf", vector=px(-math.inf), note="no data"),
    Quiet(
        id="series of another namespace",
        vector={QUERY: [Sample(labels={"namespace": "other", "pvc": PVC_NAMES[0]}, value=99.0)]},
        note="no data",
    ),
    Quiet(
        id="two series for one PVC",
        vector={QUERY: [*px(90.0, instance="a")[QUERY], *px(95.0, instance="b")[QUERY]]},
        note="no data",
    ),
    Quiet(id="exactly 80 is not past 80", vector=px(80.0), verdict=Verdict.CLEAR),
    Quiet(
        id="object size unknown (capacity_bytes None)",
        vector=px(85.0),
        capacity=None,
        verdict=Verdict.HOLDS,
        end=RuleState.TRIGGERED,
        note="no data",
    ),
    Quiet(
        id="object size 0",
        vector=px(85.0),
        capacity=0,
        verdict=Verdict.HOLDS,
        end=RuleState.TRIGGERED,
        note="no data",
    ),
    Quiet(
        id="at maxsize",
        vector=px(85.0),
        capacity=TIB,
        verdict=Verdict.HOLDS,
        end=RuleState.ACTIONS_DECLINED,
        declined_code="AtMaxSize",
    ),
    Quiet(
        id="above maxsize: never a shrink",
        vector=px(85.0),
        capacity=2 * TIB,
        verdict=Verdict.HOLDS,
        end=RuleState.ACTIONS_DECLINED,
        declined_code="AtMaxSize",
    ),
    Quiet(
        id="in cooldown after a resize",
        vector=px(85.0),
        state=ObjectState(state=RuleState.ACTIVE_ACTIONS_TAKEN, since=T0 - 60, cooldown_until=T0 + 240),
        verdict=Verdict.HOLDS,
        end=RuleState.ACTIVE_ACTIONS_TAKEN,
        note="in cooldown",
    ),
    Quiet(
        id="in cooldown after a failed resize",
        vector=px(85.0),
        state=ObjectState(state=RuleState.NORMAL, since=T0 - 60, cooldown_until=T0 + 240),
        verdict=Verdict.HOLDS,
        end=RuleState.TRIGGERED,
        note="in cooldown",
    ),
    Quiet(
        id="declined, and the retry backoff is not over",
        vector=px(85.0),
        state=ObjectState(state=RuleState.ACTIONS_DECLINED, since=T0 - 1, reason="AtMaxSize: at maxsize 1Ti"),
        verdict=Verdict.HOLDS,
        end=RuleState.ACTIONS_DECLINED,
        note="declined",
    ),
    Quiet(
        id="not selected (another app)",
        vector=px(99.0),
        labels={"app": "zookeeper"},
        verdict=None,
        end=None,
    ),
]


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in QUIET])
def test_agent_does_not_act(case: Quiet) -> None:
    target = pvcs(case.capacity, count=1)[0]
    if case.labels is not None:
        target = replace(target, labels=case.labels)
    states = {} if case.state is None else {KEYS[0]: case.state}
    outcome = run_cycle(rule=RULE, objects=[target], vectors=case.vector, states=states, now=T0, catalog=CATALOG)

    assert outcome.planned == ()
    assert outcome.previews == ()
    assert [evaluation.verdict for evaluation in outcome.evaluations] == (
        [] if case.verdict is None else [case.verdict]
    )
    if case.end is None:
        assert dict(outcome.states) == {}
        return
    assert outcome.states[KEYS[0]].state is case.end
    # never advanced into acting: an acting state can only be one the object was already in
    assert case.end not in ACTING or (case.state is not None and case.state.state is case.end)
    assert [declined.code for declined in outcome.declined] == (
        [] if case.declined_code is None else [case.declined_code]
    )
    if case.note:
        assert case.note in outcome.notes[KEYS[0]]


def test_no_data_after_a_trigger_keeps_waiting() -> None:
    """A no-data cycle within 2 x pollInterval keeps `for`; a longer gap restarts it (pollInterval: 2)."""
    rule = load(REFERENCE.replace("    expressions:", "    for: 3\n    expressions:"))
    objects = pvcs(count=1)
    first = run_cycle(
        rule=rule, objects=objects, vectors=usage({PVC_NAMES[0]: 85.0}), states={}, now=T0, catalog=CATALOG
    )
    gap = run_cycle(rule=rule, objects=objects, vectors={}, states=first.states, now=T0 + 2, catalog=CATALOG)
    back = run_cycle(
        rule=rule, objects=objects, vectors=usage({PVC_NAMES[0]: 85.0}), states=gap.states, now=T0 + 4, catalog=CATALOG
    )
    assert [outcome.states[KEYS[0]].state for outcome in (first, gap, back)] == [
        RuleState.TRIGGERED,
        RuleState.TRIGGERED,
        RuleState.ACTIVE_ACTIONS_PENDING,
    ]
    assert (first.planned, gap.planned) == ((), ())
    assert gap.transitions == ()
    assert [action.after for action in back.planned] == ["800Gi"]

    late = run_cycle(
        rule=rule, objects=objects, vectors=usage({PVC_NAMES[0]: 85.0}), states=gap.states, now=T0 + 60, catalog=CATALOG
    )
    assert late.states[KEYS[0]].state is RuleState.TRIGGERED
    assert late.states[KEYS[0]].active_at == T0 + 60


def test_unmatched_series_are_counted_in_the_outcome() -> None:
    vector = {
        QUERY: [
            Sample(labels={"namespace": NAMESPACE, "pvc": PVC_NAMES[0]}, value=10.0),
            Sample(labels={"namespace": NAMESPACE, "pvc": "data-zookeeper-0"}, value=10.0),
            Sample(labels={"namespace": "monitoring", "pvc": "prometheus"}, value=10.0),
        ]
    }
    outcome = run_cycle(rule=RULE, objects=pvcs(), vectors=vector, states={}, now=T0, catalog=CATALOG)
    assert outcome.unmatched_series == 2


# --- approval, dry-run, windows -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "approval_needed"),
    [
        pytest.param(REFERENCE, True, id="asked by the caller"),
        pytest.param(REFERENCE + "  enforcement: approvalRequired\n", None, id="enforcement approvalRequired"),
    ],
)
def test_approval_needed_gives_a_preview_and_waits(text: str, approval_needed: bool | None) -> None:
    rule = load(text)
    objects = pvcs(count=1)
    outcome = run_cycle(
        rule=rule,
        objects=objects,
        vectors=usage({PVC_NAMES[0]: 85.0}),
        states={},
        now=T0,
        approval_needed=approval_needed,
        catalog=CATALOG,
    )
    assert outcome.planned == ()
    assert [(p.object, p.before, p.after) for p in outcome.previews] == [(KEYS[0], "400Gi", "800Gi")]
    state = outcome.states[KEYS[0]]
    assert state.state is RuleState.ACTION_AWAITING_APPROVAL

    again = run_cycle(
        rule=rule,
        objects=objects,
        vectors=usage({PVC_NAMES[0]: 86.0}),
        states=outcome.states,
        now=T0 + 2,
        catalog=CATALOG,
    )
    assert (again.planned, again.previews) == ((), ())
    assert again.states[KEYS[0]].state is RuleState.ACTION_AWAITING_APPROVAL

    approved = decide(
        rule=rule.name,
        object_key=KEYS[0],
        state=again.states[KEYS[0]],
        event=ApprovalAnswered(approved=True, by="sre"),
        now=T0 + 5,
        cooldown_seconds=rule.cooldown_seconds,
        for_seconds=0,
    )
    assert not approved.plan_now  # the actions start at the next evaluation
    after = run_cycle(
        rule=rule,
        objects=objects,
        vectors=usage({PVC_NAMES[0]: 86.0}),
        states={KEYS[0]: approved.state},
        now=T0 + 6,
        approval_needed=approval_needed,
        catalog=CATALOG,
    )
    assert [(p.object, p.before, p.after) for p in after.planned] == [(KEYS[0], "400Gi", "800Gi")]
    assert after.states[KEYS[0]].state is RuleState.ACTIVE_ACTIONS_PENDING


def test_approval_preview_comes_from_the_planner() -> None:
    plans = plan_actions(rule=RULE, target=pvcs(800 * GIB, count=1)[0], now=T0)
    assert isinstance(plans, tuple)
    assert [(p.before, p.after) for p in plans] == [("800Gi", "1Ti (capped at maxsize)")]


def test_approval_not_needed_overrides_enforcement() -> None:
    rule = load(REFERENCE + "  enforcement: approvalRequired\n")
    outcome = run_cycle(
        rule=rule,
        objects=pvcs(count=1),
        vectors=usage({PVC_NAMES[0]: 85.0}),
        states={},
        now=T0,
        approval_needed=False,
        catalog=CATALOG,
    )
    assert [p.after for p in outcome.planned] == ["800Gi"]


def test_dry_run_takes_the_same_path() -> None:
    dry = load(REFERENCE + "  enforcement: dryRun\n")
    vectors = usage({name: 85.0 for name in PVC_NAMES})
    real = run_cycle(rule=RULE, objects=pvcs(), vectors=vectors, states={}, now=T0, catalog=CATALOG)
    audit = run_cycle(rule=dry, objects=pvcs(), vectors=vectors, states={}, now=T0, catalog=CATALOG)
    assert [(p.object, p.before, p.after) for p in audit.planned] == [
        (p.object, p.before, p.after) for p in real.planned
    ]
    assert len(audit.planned) == 4


@pytest.mark.parametrize(
    ("hour", "minute", "end", "planned"),
    [
        (12, 0, RuleState.ACTION_AWAITING_WINDOW, 0),
        (1, 59, RuleState.ACTION_AWAITING_WINDOW, 0),
        (2, 0, RuleState.ACTIVE_ACTIONS_PENDING, 1),
        (4, 59, RuleState.ACTIVE_ACTIONS_PENDING, 1),
        (5, 0, RuleState.ACTION_AWAITING_WINDOW, 0),
    ],
)
def test_action_window_in_utc(hour: int, minute: int, end: RuleState, planned: int) -> None:
    rule = load(REFERENCE + '  actionWindow:\n    start: "02:00"\n    end: "05:00"\n')
    now = datetime(2024, 6, 3, hour, minute, tzinfo=UTC).timestamp()
    outcome = run_cycle(
        rule=rule, objects=pvcs(count=1), vectors=usage({PVC_NAMES[0]: 85.0}), states={}, now=now, catalog=CATALOG
    )
    assert outcome.states[KEYS[0]].state is end
    assert len(outcome.planned) == planned


# --- distinct queries --------------------------------------------------------------------------

VARIANT = """\
apiVersion: kafka-autopilot.io/v1alpha1
kind: AutopilotRule
metadata:
  name: {name}
spec:
  conditions:
    requiredMatches: 1
    expressions:
{expressions}
  actions:
    - name: openstorage.io.action.volume/resize
"""


def variant(name: str, *keys: str) -> Rule:
    expressions = "".join(f'      - {key}\n        operator: Gt\n        values: ["1"]\n' for key in keys)
    return load(VARIANT.format(name=name, expressions=expressions.rstrip("\n")))


def test_distinct_queries_once_each_in_first_seen_order() -> None:
    rules = [
        RULE,
        variant("same-key", f'key: "{QUERY}"', 'key: "kubelet_volume_stats_used_bytes"'),
        variant("alias-of-the-same", "keyAlias: PxVolumeUsagePercentage"),
        variant("kubelet", "keyAlias: VolumeUsagePercentage", 'key: "kubelet_volume_stats_used_bytes"'),
    ]
    assert distinct_queries(rules) == [
        QUERY,
        "kubelet_volume_stats_used_bytes",
        "100 * (kubelet_volume_stats_used_bytes / kubelet_volume_stats_capacity_bytes)",
    ]


def test_distinct_queries_of_no_rules() -> None:
    assert distinct_queries([]) == []


def shipped_rules() -> list[Rule]:
    rules = []
    for path in sorted(RULES_DIR.glob("*.yaml")):
        result = parse_rules(path.read_text(encoding="utf-8"), file=str(path), catalog=CATALOG)
        rules.extend(result.rules)
    return rules


def test_distinct_queries_are_promql_only() -> None:
    queries = distinct_queries(shipped_rules())
    assert "NodeReady" not in queries
    assert "NodeLeaseAgeSeconds" not in queries


# --- verdicts and requiredMatches ------------------------------------------------------------


H, C, N = True, False, None


@pytest.mark.parametrize(
    ("held", "needed", "verdict"),
    [
        ((H,), 1, Verdict.HOLDS),
        ((C,), 1, Verdict.CLEAR),
        ((N,), 1, Verdict.NO_DATA),
        # every expression needed (requiredMatches unset)
        ((H, H), 2, Verdict.HOLDS),
        ((H, C), 2, Verdict.CLEAR),
        ((H, N), 2, Verdict.NO_DATA),
        ((C, N), 2, Verdict.CLEAR),
        ((N, N), 2, Verdict.NO_DATA),
        # requiredMatches 1 of 2
        ((H, N), 1, Verdict.HOLDS),
        ((N, H), 1, Verdict.HOLDS),
        ((H, C), 1, Verdict.HOLDS),
        ((C, C), 1, Verdict.CLEAR),
        ((C, N), 1, Verdict.NO_DATA),
        ((N, N), 1, Verdict.NO_DATA),
        # requiredMatches 2 of 3
        ((H, H, N), 2, Verdict.HOLDS),
        ((H, N, C), 2, Verdict.NO_DATA),
        ((H, C, C), 2, Verdict.CLEAR),
        ((N, N, C), 2, Verdict.NO_DATA),
        ((N, C, C), 2, Verdict.CLEAR),
    ],
)
def test_verdicts_not_clear(held: tuple[bool | None, ...], needed: int, verdict: Verdict) -> None:
    """Each condition's answer for one object ("o") as sets; the quiet objects are left out."""
    answers = [
        Answers(holding=frozenset({"o"} if one is H else ()), unknown=frozenset({"o"} if one is N else ()))
        for one in held
    ]
    assert verdicts_not_clear(answers, needed=needed, members={"o", "quiet"}) == (
        {} if verdict is Verdict.CLEAR else {"o": verdict}
    )


@pytest.mark.parametrize(
    ("first", "second", "verdict"),
    [
        (85.0, None, Verdict.HOLDS),
        (None, 85.0, Verdict.HOLDS),
        (0.0, 0.0, Verdict.CLEAR),
        (0.0, None, Verdict.NO_DATA),
        (None, None, Verdict.NO_DATA),
    ],
)
def test_required_matches_in_a_cycle(first: float | None, second: float | None, verdict: Verdict) -> None:
    rule = variant("one-of-two", 'key: "first_metric"', 'key: "second_metric"')
    assert rule.conditions.needed == 1
    vectors: dict[str, Sequence[Sample]] = {}
    for query, value in (("first_metric", first), ("second_metric", second)):
        if value is not None:
            vectors[query] = [
                Sample(labels={"namespace": NAMESPACE, "persistentvolumeclaim": PVC_NAMES[0]}, value=value)
            ]
    outcome = run_cycle(rule=rule, objects=pvcs(count=1), vectors=vectors, states={}, now=T0, catalog=CATALOG)
    (evaluation,) = outcome.evaluations
    assert evaluation.verdict is verdict
    assert [result.value for result in evaluation.results] == [first, second]


def test_declined_approval_never_becomes_an_action() -> None:
    rule = load(REFERENCE + "  enforcement: approvalRequired\n")
    objects = pvcs(count=1)
    first = run_cycle(
        rule=rule, objects=objects, vectors=usage({PVC_NAMES[0]: 85.0}), states={}, now=T0, catalog=CATALOG
    )
    refused = decide(
        rule=rule.name,
        object_key=KEYS[0],
        state=first.states[KEYS[0]],
        event=ApprovalAnswered(approved=False, by="sre"),
        now=T0 + 5,
        cooldown_seconds=rule.cooldown_seconds,
        for_seconds=0,
    )
    assert refused.state.state is RuleState.ACTIONS_DECLINED
    later = run_cycle(
        rule=rule,
        objects=objects,
        vectors=usage({PVC_NAMES[0]: 85.0}),
        states={KEYS[0]: refused.state},
        now=T0 + 5 + rule.cooldown_seconds,
        catalog=CATALOG,
    )
    assert later.planned == ()
    assert later.states[KEYS[0]].state is not RuleState.ACTIVE_ACTIONS_PENDING


def test_evaluation_records_are_built_when_read_and_are_the_same_each_time() -> None:
    values = {"data-kafka-0": 85.0, "data-kafka-1": 10.0, "data-kafka-2": math.nan}
    outcome = run_cycle(rule=RULE, objects=pvcs(count=4), vectors=usage(values), states={}, now=T0, catalog=CATALOG)
    evaluations = outcome.evaluations

    records = tuple(evaluations)
    assert [(record.object, record.verdict) for record in records] == [
        (KEYS[0], Verdict.HOLDS),
        (KEYS[1], Verdict.CLEAR),
        (KEYS[2], Verdict.NO_DATA),
        (KEYS[3], Verdict.NO_DATA),
    ]
    assert records[0].results == (ExpressionResult(expression=QUERY, value=85.0, holds=True),)
    assert evaluations == records and evaluations[1:3] == records[1:3] and evaluations[-1] == records[3]
    assert evaluation_of(evaluations, KEYS[1]) == records[1] == evaluation_of(records, KEYS[1])
    assert evaluation_of(evaluations, "kafka/elsewhere") is None
    assert list(verdicts_by_object(evaluations)) == [(record.object, record.verdict) for record in records]
