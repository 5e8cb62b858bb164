"""Guardrail policies: the loader (every field, every error at its place), the pure admission, and the
policy inside one evaluation cycle (windows, approvals, namespaces, holds as ActionsThrottled).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import REFERENCE_RULE
from test_schema import errors as schema_validator_errors

from agent.actions.broker_restart.spec import BROKER_RESTART
from agent.actions.node_reschedule.spec import NODE_RESCHEDULE
from agent.actions.pool_expand.spec import POOL_EXPAND
from agent.actions.registry import CATALOG
from agent.actions.volume_resize.spec import VOLUME_RESIZE
from agent.adapters.errors import StateDecodeError
from agent.adapters.kubernetes.statuscodec import (
    RECENT_ACTIONS,
    LastAction,
    RecentAction,
    StoredStatus,
    decode_status,
    encode_status,
    with_recent,
)
from agent.audit.timeline import Timeline
from agent.audit.trail import cycle_records
from agent.core.diagnostics import Location
from agent.core.engine import CycleOutcome, run_cycle
from agent.core.loader import parse_rules
from agent.core.matching import TargetObject, pvc_object
from agent.core.policy import (
    ActionStart,
    AdmissionFacts,
    Admitted,
    Held,
    HoldCode,
    Policy,
    RateLimit,
    RateLimits,
    admit,
    parse_policies,
    parse_policy_file,
)
from agent.core.policy_schema import policy_json_schema, render_policy_schema
from agent.core.rules import ActionWindow, Rule
from agent.core.samples import Sample
from agent.core.states import ObjectState, RuleState
from agent.runtime.main import dry_run_action_names

POLICIES_DIR = Path(__file__).resolve().parents[2] / "policies"
FILE = "policies/test.yaml"
RESIZE = VOLUME_RESIZE
RESCHEDULE = NODE_RESCHEDULE
HOUR = 3600
NOW = datetime(2024, 6, 3, 12, 0, tzinfo=UTC).timestamp()  # a Monday, noon UTC
GIB = 1024**3

FULL = """\
apiVersion: kafka-autopilot.io/v1alpha1
kind: AutopilotPolicy
metadata:
  name: full
spec:
  dryRun: false
  dryRunActions: [kafka-autopilot.io.action.node/cordon-reschedule]
  approvalRequired: [kafka-autopilot.io.action.broker/restart]
  maxConcurrentActions: 2
  rateLimits:
    perObject: {count: 1, period: 6h}
    perRule: {count: 4, period: 3600}
    overall: {count: 10, period: 1h30m}
  namespaces:
    allow: [kafka, kafka-test]
    deny: [kube-system]
  actionWindow:
    - days: [Mon, Fri]
      start: "08:00"
      end: "18:00"
  maxCordonedNodes: 0
  minResizeInterval: 30m
"""

HEADER = """\
apiVersion: kafka-autopilot.io/v1alpha1
kind: AutopilotPolicy
metadata:
  name: p
spec:
"""


def where(text: str, needle: str) -> tuple[int, int]:
    offset = text.index(needle)
    return text.count("\n", 0, offset) + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1


def one_policy(text: str) -> Policy:
    result = parse_policies(text, file=FILE, catalog=CATALOG)
    assert [str(problem) for problem in result.problems] == []
    (policy,) = result.policies
    return policy


# --- the loader --------------------------------------------------------------------------------------


def test_every_field_is_read() -> None:
    policy = one_policy(FULL)
    assert policy == Policy(
        name="full",
        source=Location(file=FILE, line=1, column=1),
        dry_run=False,
        dry_run_actions=frozenset({RESCHEDULE}),
        approval_required_actions=frozenset({BROKER_RESTART}),
        max_concurrent_actions=2,
        rate_limits=RateLimits(
            per_object=RateLimit(count=1, period_seconds=6 * HOUR),
            per_rule=RateLimit(count=4, period_seconds=HOUR),
            overall=RateLimit(count=10, period_seconds=HOUR + 1800),
        ),
        namespaces_allowed=frozenset({"kafka", "kafka-test"}),
        namespaces_denied=frozenset({"kube-system"}),
        action_windows=(ActionWindow(days=frozenset({1, 5}), start_minute=8 * 60, end_minute=18 * 60),),
        max_cordoned_nodes=0,
        min_resize_interval_seconds=1800,
    )
    assert policy.history_seconds == 6 * HOUR


def test_an_empty_spec_allows_everything() -> None:
    policy = one_policy(HEADER + "  {}\n")
    assert policy == Policy(name="p", source=policy.source)
    assert policy.history_seconds == 0
    assert one_policy(HEADER.removesuffix("spec:\n")) == policy


@pytest.mark.parametrize("path", sorted(POLICIES_DIR.glob("*.yaml")), ids=lambda path: path.name)
def test_shipped_policies_load(path: Path) -> None:
    result = parse_policy_file(path.read_text(), file=str(path), catalog=CATALOG)
    assert [str(problem) for problem in result.problems] == []
    assert result.policies[0].name == path.stem


def test_shipped_policies_say_what_they_promise() -> None:
    def load(name: str) -> Policy:
        return one_policy((POLICIES_DIR / f"{name}.yaml").read_text())

    assert {path.stem for path in POLICIES_DIR.glob("*.yaml")} == {"default", "conservative", "audit-only"}
    assert load("audit-only").dry_run
    conservative = load("conservative")
    assert conservative.min_resize_interval_seconds == 6 * HOUR
    assert conservative.max_cordoned_nodes == 1
    assert conservative.max_concurrent_actions == 1
    assert {RESCHEDULE, POOL_EXPAND} <= conservative.approval_required_actions
    assert not conservative.window_open(datetime(2024, 6, 8, 12, 0, tzinfo=UTC).timestamp())  # a Saturday
    assert conservative.window_open(NOW)
    default = load("default")
    assert not default.dry_run and default.max_concurrent_actions
    assert default.excluded_by_namespace("kube-system") is not None
    assert default.excluded_by_namespace("kafka") is None


BAD_CASES = [
    ("dryRun: yes-please", "yes-please", "spec.dryRun", "must be true or false, got the string 'yes-please'"),
    ('dryRun: "true"', '"true"', "spec.dryRun", "must be true or false"),
    ("maxConcurrentActions: 0", "0", "spec.maxConcurrentActions", "must be a whole number of at least 1, got"),
    ("maxConcurrentActions: 1.5", "1.5", "spec.maxConcurrentActions", "must be a whole number of at least 1"),
    ('maxConcurrentActions: "2"', '"2"', "spec.maxConcurrentActions", "got the string '2'"),
    ("maxCordonedNodes: -1", "-1", "spec.maxCordonedNodes", "must be a whole number of at least 0"),
    ("minResizeInterval: 6x", "6x", "spec.minResizeInterval", "must be whole seconds or a duration like 5m"),
    ("minResizeInterval: 1.5h", "1.5h", "spec.minResizeInterval", "must be whole seconds or a duration like 5m"),
    ('minResizeInterval: "0s"', '"0s"', "spec.minResizeInterval", "must be at least 1s, got 0s"),
    ("minResizeInterval: [6h]", "[6h]", "spec.minResizeInterval", "must be whole seconds or a duration"),
    ("rateLimits: {perObjekt: {count: 1, period: 1h}}", "perObjekt", "spec.rateLimits.perObjekt",
     'unknown field "perObjekt" (did you mean "perObject"?)'),
    ("rateLimits: {perRule: {count: 1}}", "{count: 1}", "spec.rateLimits.perRule.period",
     'missing required field "period"'),
    ('rateLimits: {overall: {count: 1, period: "1 hour"}}', '"1 hour"', "spec.rateLimits.overall.period",
     "must be whole seconds or a duration like 5m, got '1 hour'"),
    ("rateLimits: {overall: {count: 0, period: 1h}}", "0,", "spec.rateLimits.overall.count",
     "must be a whole number of at least 1"),
    ("rateLimits: {overall: {count: 1, period: 1h, burst: 2}}", "burst", "spec.rateLimits.overall.burst",
     'unknown field "burst"'),
    ("rateLimits: 5", "5", "spec.rateLimits", "must be a mapping, got a number"),
    ("approvalRequired: [openstorage.io.action.volume/resise]", "openstorage", "spec.approvalRequired[0]",
     'unknown action "openstorage.io.action.volume/resise" (did you mean "openstorage.io.action.volume/resize"?)'),
    ("dryRunActions: resize", "resize", "spec.dryRunActions", "must be a list, got a string"),
    ("namespaces: {allow: [a, b], deny: [b]}", "{allow", "spec.namespaces", "allowed and denied at once: b"),
    ("namespaces: {alow: [a]}", "alow", "spec.namespaces.alow", 'unknown field "alow" (did you mean "allow"?)'),
    ("namespaces: {deny: [7]}", "7", "spec.namespaces.deny[0]", "must be a string, got a number (quote it)"),
    ('actionWindow: {start: "25:00", end: "10:00"}', '"25:00"', "spec.actionWindow.start",
     'must be a UTC time "HH:MM"'),
    ('actionWindow: [{days: [Someday], start: "08:00", end: "10:00"}]', "Someday",
     "spec.actionWindow[0].days[0]", "must be a weekday"),
    ("maxConcurentActions: 1", "maxConcurentActions", "spec.maxConcurentActions",
     'unknown field "maxConcurentActions" (did you mean "maxConcurrentActions"?)'),
]  # fmt: skip


@pytest.mark.parametrize(("line", "needle", "field", "message"), BAD_CASES, ids=[case[2] for case in BAD_CASES])
def test_each_error_is_reported_at_its_place(line: str, needle: str, field: str, message: str) -> None:
    text = HEADER + f"  {line}\n"
    result = parse_policies(text, file=FILE, catalog=CATALOG)
    assert result.policies == ()
    (problem,) = result.problems
    row, column = where(text.split("spec:\n", 1)[1], needle)
    assert (problem.location.line, problem.location.column) == (row + 5, column)
    assert (problem.rule, problem.field) == ("p", field)
    assert message in problem.message
    assert str(problem).startswith(f"{FILE}:{row + 5}:{column}: p: {field}: ")


def test_every_error_of_a_policy_is_reported_at_once() -> None:
    text = HEADER + "  dryRun: 1\n  maxConcurrentActions: x\n  minResizeInterval: soon\n  unknown: 1\n"
    problems = sorted(
        parse_policies(text, file=FILE, catalog=CATALOG).problems, key=lambda problem: problem.location.line
    )
    assert [problem.field for problem in problems] == [
        "spec.dryRun",
        "spec.maxConcurrentActions",
        "spec.minResizeInterval",
        "spec.unknown",
    ]
    assert [problem.location.line for problem in problems] == [6, 7, 8, 9]


def test_header_errors() -> None:
    text = "apiVersion: autopilot.libopenstorage.org/v1alpha1\nkind: AutopilotPolicy\nmetadata: {name: Bad_Name}\n"
    problems = parse_policies(text, file=FILE, catalog=CATALOG).problems
    assert [(problem.field, problem.location.line) for problem in problems] == [
        ("apiVersion", 1),
        ("metadata.name", 3),
    ]
    assert "unsupported apiVersion" in problems[0].message


def test_rules_and_policies_share_a_file_and_each_loader_takes_its_kind() -> None:
    text = REFERENCE_RULE + "---\n" + FULL
    rules = parse_rules(text, file=FILE, catalog=CATALOG)
    policies = parse_policies(text, file=FILE, catalog=CATALOG)
    assert [rule.name for rule in rules.rules] == ["kafka-resize"] and rules.problems == ()
    assert [policy.name for policy in policies.policies] == ["full"] and policies.problems == ()
    assert policies.policies[0].source == Location(file=FILE, line=REFERENCE_RULE.count("\n") + 2, column=1)


def test_a_policy_file_holds_exactly_one_policy() -> None:
    mixed = parse_policy_file(REFERENCE_RULE + "---\n" + FULL, file=FILE, catalog=CATALOG)
    assert [problem.message for problem in mixed.problems] == [
        "a policy file holds AutopilotPolicy documents only, got 'AutopilotRule'"
    ]
    assert mixed.problems[0].location.line == 2
    two = parse_policy_file(FULL + "---\n" + FULL, file=FILE, catalog=CATALOG)
    assert [problem.message for problem in two.problems] == ["expected one policy, found 2"]
    empty = parse_policy_file("# nothing\n", file=FILE, catalog=CATALOG)
    assert [problem.message for problem in empty.problems] == ["expected one policy, found 0"]
    broken = parse_policy_file(HEADER + "  dryRun: [\n", file=FILE, catalog=CATALOG)
    assert broken.problems and "invalid YAML" in broken.problems[-1].message
    assert broken.problems[-1].location.file == FILE


# --- admission ---------------------------------------------------------------------------------------


def starts(*specs: tuple[str, str, str, float]) -> tuple[ActionStart, ...]:
    """(rule, object, action, seconds ago)."""
    return tuple(ActionStart(rule=rule, object=obj, action=action, at=NOW - ago) for rule, obj, action, ago in specs)


AdmissionCase = tuple[str, Policy, str, str, str, AdmissionFacts, HoldCode | None, float | None]
"""(case, policy, rule, object, action, facts, expected hold code or None, expected `until` offset or None)"""

LIMITED = Policy(
    name="limits",
    max_concurrent_actions=2,
    rate_limits=RateLimits(
        per_object=RateLimit(count=1, period_seconds=HOUR),
        per_rule=RateLimit(count=2, period_seconds=HOUR),
        overall=RateLimit(count=3, period_seconds=HOUR),
    ),
    max_cordoned_nodes=1,
    min_resize_interval_seconds=6 * HOUR,
)
OPEN = Policy(name="open")

ADMISSION_CASES: list[AdmissionCase] = [
    ("nothing happened yet", LIMITED, "r", "kafka/a", RESIZE, AdmissionFacts(), None, None),
    ("an open policy admits all", OPEN, "r", "kafka/a", RESIZE,
     AdmissionFacts(starts=starts(*[("r", "kafka/a", RESIZE, 1)] * 50), in_flight=99), None, None),
    ("resized 1h ago, 6h interval", LIMITED, "r", "kafka/a", RESIZE,
     AdmissionFacts(starts=starts(("r", "kafka/a", RESIZE, HOUR))), HoldCode.MIN_RESIZE_INTERVAL, 5 * HOUR),
    ("resize by another rule counts too", LIMITED, "r", "kafka/a", RESIZE,
     AdmissionFacts(starts=starts(("other", "kafka/a", RESIZE, 7200))), HoldCode.MIN_RESIZE_INTERVAL, 4 * HOUR),
    ("resized 6h ago: interval over", replace(LIMITED, rate_limits=RateLimits()), "r", "kafka/a", RESIZE,
     AdmissionFacts(starts=starts(("r", "kafka/a", RESIZE, 6 * HOUR))), None, None),
    ("another volume's resize does not count", LIMITED, "r", "kafka/a", RESIZE,
     AdmissionFacts(starts=starts(("r", "kafka/b", RESIZE, 60))), None, None),
    ("the interval is for resizes only", replace(LIMITED, rate_limits=RateLimits()), "r", "node-1", RESCHEDULE,
     AdmissionFacts(starts=starts(("r", "node-1", RESCHEDULE, 60))), None, None),
    ("per object: 1 per hour", LIMITED, "r", "node-1", RESCHEDULE,
     AdmissionFacts(starts=starts(("x", "node-1", RESCHEDULE, 600))), HoldCode.RATE_LIMIT_OBJECT, HOUR - 600),
    ("per object: older than the period", LIMITED, "r", "node-1", RESCHEDULE,
     AdmissionFacts(starts=starts(("x", "node-1", RESCHEDULE, HOUR))), None, None),
    ("per rule: 2 per hour", LIMITED, "r", "node-3", RESCHEDULE,
     AdmissionFacts(starts=starts(("r", "node-1", RESCHEDULE, 900), ("r", "node-2", RESCHEDULE, 300))),
     HoldCode.RATE_LIMIT_RULE, HOUR - 900),
    ("per rule: other rules do not count", LIMITED, "r", "node-3", RESCHEDULE,
     AdmissionFacts(starts=starts(("q", "node-1", RESCHEDULE, 900), ("r", "node-2", RESCHEDULE, 300))), None, None),
    ("overall: 3 per hour", LIMITED, "r", "node-4", RESCHEDULE,
     AdmissionFacts(starts=starts(
         ("q", "node-1", RESCHEDULE, 1200), ("r", "node-2", RESCHEDULE, 600), ("s", "node-3", RESCHEDULE, 60)
     )), HoldCode.RATE_LIMIT_OVERALL, HOUR - 1200),
    ("overall: lifts when the oldest of the last `count` ages out",
     replace(LIMITED, rate_limits=RateLimits(overall=RateLimit(count=2, period_seconds=HOUR))), "r", "n", RESCHEDULE,
     AdmissionFacts(starts=starts(("q", "a", RESCHEDULE, 1800), ("q", "b", RESCHEDULE, 1200),
                                  ("q", "c", RESCHEDULE, 600))),
     HoldCode.RATE_LIMIT_OVERALL, HOUR - 1200),
    ("max concurrent", LIMITED, "r", "kafka/a", RESIZE, AdmissionFacts(in_flight=2), HoldCode.MAX_CONCURRENT, None),
    ("max concurrent: one slot left", LIMITED, "r", "kafka/a", RESIZE, AdmissionFacts(in_flight=1), None, None),
    ("max cordoned: another node is", LIMITED, "r", "node-1", RESCHEDULE,
     AdmissionFacts(cordoned_nodes=frozenset({"node-2"})), HoldCode.MAX_CORDONED, None),
    ("max cordoned: the node itself is", LIMITED, "r", "node-1", RESCHEDULE,
     AdmissionFacts(cordoned_nodes=frozenset({"node-1"})), None, None),
    ("max cordoned: not a node action", LIMITED, "r", "kafka/a", RESIZE,
     AdmissionFacts(cordoned_nodes=frozenset({"node-2", "node-3"})), None, None),
    ("max cordoned 0", replace(OPEN, max_cordoned_nodes=0), "r", "node-1", RESCHEDULE,
     AdmissionFacts(cordoned_nodes=frozenset({"node-9"})), HoldCode.MAX_CORDONED, None),
    ("first hold wins: interval before rate and concurrency", LIMITED, "r", "kafka/a", RESIZE,
     AdmissionFacts(starts=starts(("r", "kafka/a", RESIZE, 60)), in_flight=5), HoldCode.MIN_RESIZE_INTERVAL,
     6 * HOUR - 60),
]  # fmt: skip


@pytest.mark.parametrize("case", ADMISSION_CASES, ids=[case[0] for case in ADMISSION_CASES])
def test_admission(case: AdmissionCase) -> None:
    _, policy, rule, obj, action, facts, code, until = case
    admission = admit(policy=policy, rule=rule, object_key=obj, action=action, facts=facts, now=NOW, catalog=CATALOG)
    if code is None:
        assert admission == Admitted()
        return
    assert isinstance(admission, Held)
    assert admission.code is code
    assert policy.name in admission.reason
    assert admission.until == (None if until is None else NOW + until)
    if until is not None:
        assert datetime.fromtimestamp(NOW + until, UTC).strftime("%H:%M:%S") in admission.reason


def test_admitted_facts_count_the_new_action() -> None:
    facts = AdmissionFacts().admitted(rule="r", object_key="node-1", action=RESCHEDULE, at=NOW, catalog=CATALOG)
    assert facts.in_flight == 1 and facts.cordoned_nodes == {"node-1"}
    assert facts.starts == (ActionStart(rule="r", object="node-1", action=RESCHEDULE, at=NOW),)
    assert (
        AdmissionFacts().admitted(rule="r", object_key="kafka/a", action=RESIZE, at=NOW, catalog=CATALOG).cordoned_nodes
        == set()
    )


def test_namespaces() -> None:
    policy = Policy(name="p", namespaces_allowed=frozenset({"kafka"}), namespaces_denied=frozenset({"kafka-old"}))
    assert policy.excluded_by_namespace("kafka") is None
    assert policy.excluded_by_namespace(None) is None
    assert "not among those policy p allows (kafka)" in str(policy.excluded_by_namespace("other"))
    assert "denied by policy p" in str(policy.excluded_by_namespace("kafka-old"))
    assert Policy(name="q", namespaces_denied=frozenset({"x"})).excluded_by_namespace("y") is None


def test_action_dry_run_and_approval() -> None:
    policy = one_policy(FULL)
    assert policy.action_dry_run(RESCHEDULE) and not policy.action_dry_run(RESIZE)
    assert replace(policy, dry_run=True).action_dry_run(RESIZE)
    assert policy.approval_required([RESIZE, BROKER_RESTART])
    assert not policy.approval_required([RESIZE])


def test_the_applier_choice_follows_the_flag_and_the_policy() -> None:
    every = frozenset(CATALOG)
    assert dry_run_action_names(dry_run=False, policy=None) == frozenset()
    assert dry_run_action_names(dry_run=True, policy=None) == every
    assert dry_run_action_names(dry_run=False, policy=one_policy(FULL)) == {RESCHEDULE}
    assert dry_run_action_names(dry_run=False, policy=replace(one_policy(FULL), dry_run=True)) == every
    audit_only = one_policy((POLICIES_DIR / "audit-only.yaml").read_text())
    assert dry_run_action_names(dry_run=False, policy=audit_only) == every


# --- the policy in a cycle ----------------------------------------------------------------------------

RULE: Rule = parse_rules(REFERENCE_RULE, file="rule.yaml", catalog=CATALOG).rules[0]
QUERY = RULE.conditions.expressions[0].query


def claims(*names: str, namespace: str = "kafka") -> list[TargetObject]:
    return [
        pvc_object(namespace=namespace, name=name, labels={"app": "kafka"}, capacity_bytes=400 * GIB) for name in names
    ]


def full(*objects: TargetObject, percent: float = 90.0) -> dict[str, list[Sample]]:
    return {
        QUERY: [Sample(labels={"namespace": str(o.namespace), "pvc": o.name}, value=percent) for o in objects],
    }


def cycle(
    objects: list[TargetObject],
    *,
    policy: Policy | None,
    facts: AdmissionFacts | None = None,
    states: dict[str, ObjectState] | None = None,
    now: float = NOW,
    percent: float = 90.0,
) -> CycleOutcome:
    return run_cycle(
        rule=RULE,
        objects=objects,
        vectors=full(*objects, percent=percent),
        states=states or {},
        now=now,
        policy=policy,
        facts=facts,
        catalog=CATALOG,
    )


def test_without_a_policy_nothing_changes() -> None:
    objects = claims("a", "b")
    assert cycle(objects, policy=None) == cycle(objects, policy=OPEN)
    assert len(cycle(objects, policy=None).planned) == 2


def test_max_concurrent_counts_actions_admitted_in_the_same_cycle() -> None:
    outcome = cycle(claims("a", "b", "c"), policy=Policy(name="one", max_concurrent_actions=1))
    assert [action.object for action in outcome.planned] == ["kafka/a"]
    assert {key: state.state for key, state in outcome.states.items()} == {
        "kafka/a": RuleState.ACTIVE_ACTIONS_PENDING,
        "kafka/b": RuleState.ACTIONS_THROTTLED,
        "kafka/c": RuleState.ACTIONS_THROTTLED,
    }
    assert outcome.states["kafka/b"].reason.startswith("MaxConcurrentActions: 1 actions in flight")
    assert [(t.object, t.from_state, t.to_state) for t in outcome.transitions if t.object == "kafka/b"] == [
        ("kafka/b", RuleState.NORMAL, RuleState.TRIGGERED),
        ("kafka/b", RuleState.TRIGGERED, RuleState.ACTIONS_THROTTLED),
    ]
    assert [(held.object, held.code) for held in outcome.held] == [
        ("kafka/b", HoldCode.MAX_CONCURRENT),
        ("kafka/c", HoldCode.MAX_CONCURRENT),
    ]
    records = [record for record in cycle_records(outcome, dry_run=False) if record["event"] == "action-throttled"]
    assert [(record["object"], record["code"], record["outcome"]) for record in records] == [
        ("kafka/b", "MaxConcurrentActions", "throttled"),
        ("kafka/c", "MaxConcurrentActions", "throttled"),
    ]


def test_a_held_action_reads_well_in_the_timeline() -> None:
    outcome = cycle(claims("a", "b"), policy=Policy(name="one", max_concurrent_actions=1))
    (record,) = [record for record in cycle_records(outcome, dry_run=False) if record["event"] == "action-throttled"]
    assert Timeline().line(record) == (
        "12:00:00  kafka/b                action-throttled: MaxConcurrentActions: 1 actions in flight; "
        "policy one allows 1 at once"
    )


def test_a_hold_is_rechecked_each_evaluation_and_lifts_when_it_passes() -> None:
    policy = Policy(name="rate", rate_limits=RateLimits(per_rule=RateLimit(count=1, period_seconds=HOUR)))
    objects = claims("a", "b")
    first = cycle(objects, policy=policy)
    assert [action.object for action in first.planned] == ["kafka/a"]
    history = AdmissionFacts(starts=starts(("kafka-resize", "kafka/a", RESIZE, 0)))
    states = {"kafka/b": first.states["kafka/b"]}
    again = cycle(claims("b"), policy=policy, facts=history, states=states, now=NOW + 60)
    assert again.states["kafka/b"].state is RuleState.ACTIONS_THROTTLED
    assert again.transitions == () and again.held == ()  # the same hold: no new record, no new Event
    assert "held by the policy" in again.notes["kafka/b"]
    later = cycle(claims("b"), policy=policy, facts=history, states=states, now=NOW + HOUR + 1)
    assert later.states["kafka/b"].state is RuleState.ACTIVE_ACTIONS_PENDING
    assert [(t.from_state, t.to_state) for t in later.transitions] == [
        (RuleState.ACTIONS_THROTTLED, RuleState.ACTIVE_ACTIONS_PENDING)
    ]
    cleared = cycle(claims("b"), policy=policy, facts=history, states=states, now=NOW + 60, percent=10)
    assert cleared.states["kafka/b"].state is RuleState.NORMAL


def test_a_new_reason_for_a_hold_is_recorded_without_a_transition() -> None:
    policy = replace(LIMITED, rate_limits=RateLimits(), min_resize_interval_seconds=None)
    first = cycle(claims("a"), policy=policy, facts=AdmissionFacts(in_flight=2))
    assert first.states["kafka/a"].state is RuleState.ACTIONS_THROTTLED
    policy = replace(policy, min_resize_interval_seconds=HOUR)
    facts = AdmissionFacts(starts=starts(("x", "kafka/a", RESIZE, 60)))
    second = cycle(claims("a"), policy=policy, facts=facts, states=dict(first.states), now=NOW + 1)
    assert second.transitions == ()
    assert [held.code for held in second.held] == [HoldCode.MIN_RESIZE_INTERVAL]
    assert second.states["kafka/a"].reason.startswith("MinResizeInterval: ")


def test_policy_windows_apply_on_top_of_the_rules() -> None:
    closed = Policy(name="nights", action_windows=(ActionWindow(start_minute=22 * 60, end_minute=23 * 60),))
    outcome = cycle(claims("a"), policy=closed)
    assert outcome.planned == ()
    assert outcome.states["kafka/a"].state is RuleState.ACTION_AWAITING_WINDOW
    open_now = replace(closed, action_windows=(ActionWindow(start_minute=11 * 60, end_minute=13 * 60),))
    assert len(cycle(claims("a"), policy=open_now).planned) == 1
    rule_closed = replace(RULE, action_windows=(ActionWindow(start_minute=0, end_minute=60),))
    both = run_cycle(
        rule=rule_closed,
        objects=claims("a"),
        vectors=full(*claims("a")),
        states={},
        now=NOW,
        policy=open_now,
        catalog=CATALOG,
    )
    assert both.states["kafka/a"].state is RuleState.ACTION_AWAITING_WINDOW


def test_policy_approval_list_feeds_the_approval_input() -> None:
    needs = Policy(name="careful", approval_required_actions=frozenset({RESIZE}))
    outcome = cycle(claims("a"), policy=needs)
    assert outcome.states["kafka/a"].state is RuleState.ACTION_AWAITING_APPROVAL
    assert outcome.planned == () and len(outcome.previews) == 1
    explicit = run_cycle(
        rule=RULE,
        objects=claims("a"),
        vectors=full(*claims("a")),
        states={},
        now=NOW,
        policy=needs,
        approval_needed=False,
        catalog=CATALOG,
    )
    assert len(explicit.planned) == 1


def test_objects_outside_the_namespaces_are_not_evaluated_and_say_why() -> None:
    policy = Policy(name="kafka-only", namespaces_allowed=frozenset({"kafka"}))
    objects = [*claims("a"), *claims("b", namespace="other")]
    outcome = cycle(objects, policy=policy)
    assert [action.object for action in outcome.planned] == ["kafka/a"]
    assert set(outcome.states) == {"kafka/a"}
    assert [evaluation.object for evaluation in outcome.evaluations] == ["kafka/a"]
    assert outcome.excluded == {"other/b": "namespace other is not among those policy kafka-only allows (kafka)"}


# --- the durable history behind the facts ----------------------------------------------------------------


def test_recent_actions_round_trip_and_stay_bounded() -> None:
    recent: tuple[RecentAction, ...] = ()
    for n in range(RECENT_ACTIONS + 5):
        recent = with_recent(recent, LastAction(name=RESIZE, started_at=1000.0 + n))
    assert len(recent) == RECENT_ACTIONS
    assert recent[0].started_at == 1005.0 and recent[-1].started_at == 1000.0 + RECENT_ACTIONS + 4
    assert with_recent(recent, LastAction(name=RESIZE, started_at=recent[-1].started_at)) == recent
    assert with_recent(recent, LastAction(name=RESIZE)) == recent
    assert with_recent(recent, None) == recent
    status = StoredStatus(state=ObjectState(state=RuleState.NORMAL), recent_actions=recent[:2])
    encoded = encode_status(state=status.state, recent_actions=status.recent_actions)
    assert encoded["recentActions"][0] == {"name": RESIZE, "startedAt": "1970-01-01T00:16:45Z"}
    assert decode_status(encoded) == status


def test_a_bad_recent_actions_list_is_a_decode_error() -> None:
    with pytest.raises(StateDecodeError, match=r"status.recentActions\[0\].startedAt"):
        decode_status({"state": "Normal", "recentActions": [{"name": RESIZE, "startedAt": "yesterday"}]})
    with pytest.raises(StateDecodeError, match="must be a list"):
        decode_status({"state": "Normal", "recentActions": "x"})


# --- the JSON Schema for editors ------------------------------------------------------------------------------


def policy_schema_errors(document: Any) -> list[str]:
    schema = policy_json_schema(catalog=CATALOG)
    return schema_validator_errors(document, schema, root=schema)


def test_committed_policy_schema_is_generated_output() -> None:
    committed = POLICIES_DIR.parent / "schema" / "autopilotpolicy.schema.json"
    assert committed.read_text() == render_policy_schema(catalog=CATALOG), (
        "stale: python -m agent.actions.registry policy-schema > schema/autopilotpolicy.schema.json"
    )


@pytest.mark.parametrize(
    "text", [FULL, HEADER + "  {}\n", *(path.read_text() for path in sorted(POLICIES_DIR.glob("*.yaml")))]
)
def test_valid_policies_pass_the_loader_and_the_schema(text: str) -> None:
    assert parse_policies(text, file=FILE, catalog=CATALOG).problems == ()
    assert policy_schema_errors(yaml.safe_load(text)) == []


@pytest.mark.parametrize(
    "line",
    [
        "dryRun: yes-please",
        "maxConcurrentActions: 0",
        'maxConcurrentActions: "2"',
        "minResizeInterval: 6x",
        "rateLimits: {perObjekt: {count: 1, period: 1h}}",
        "rateLimits: {perRule: {count: 1}}",
        "approvalRequired: [openstorage.io.action.volume/resise]",
        'actionWindow: {start: "25:00", end: "10:00"}',
        "maxConcurentActions: 1",
    ],
)
def test_invalid_policies_fail_the_loader_and_the_schema(line: str) -> None:
    text = HEADER + f"  {line}\n"
    assert parse_policies(text, file=FILE, catalog=CATALOG).problems
    assert policy_schema_errors(yaml.safe_load(text))
