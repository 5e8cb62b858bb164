"""`kafka-autopilot explain`: each reason an object is (not) acted on, as the stored state and the vectors of
now give it. The reads are the cluster's and Prometheus' (`gather`); here `explain_pair` gets them made up.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from agent.actions.registry import CATALOG
from agent.adapters.files import load_rule_paths
from agent.adapters.kubernetes.approvals import Approval
from agent.adapters.kubernetes.statuscodec import LastAction, StoredStatus
from agent.core.approvals import Answer, Phase
from agent.core.loader import merge_results
from agent.core.matching import IGNORE_ANNOTATION, TargetObject, pvc_object
from agent.core.policy import ActionStart, AdmissionFacts, Policy, parse_policy_file
from agent.core.rules import Rule, TargetKind
from agent.core.samples import Sample
from agent.core.states import ObjectState, RuleState
from agent.runtime.explain import ExplainError, ObjectRef, explain_pair, parse_object, render_text

GI = 1024**3
NOW = 1_800_000_000.0
REPO = Path(__file__).resolve().parents[2]
USAGE = "100 * (px_volume_usage_bytes / px_volume_capacity_bytes)"
KEY = "kafka/data-kafka-0"
RESIZE = "openstorage.io.action.volume/resize"


def resize_rule() -> Rule:
    (rule,) = merge_results(load_rule_paths([REPO / "rules" / "kafka-resize.yaml"], catalog=CATALOG)).rules
    return rule


def claim(capacity_gib: int) -> TargetObject:
    return pvc_object(namespace="kafka", name="data-kafka-0", labels={"app": "kafka"}, capacity_bytes=capacity_gib * GI)


def usage(percent: float) -> dict[str, list[Sample]]:
    return {USAGE: [Sample(labels={"namespace": "kafka", "pvc": "data-kafka-0"}, value=percent)]}


def policy(text: str) -> Policy:
    header = "apiVersion: kafka-autopilot.io/v1alpha1\nkind: AutopilotPolicy\nmetadata: {name: p}\nspec:\n"
    (found,) = parse_policy_file(header + text, file="p.yaml", catalog=CATALOG).policies
    return found


@pytest.mark.parametrize(
    ("text", "kind", "key"),
    [
        ("pvc/kafka/data-kafka-0", TargetKind.PVC, "kafka/data-kafka-0"),
        ("node/worker-3", TargetKind.NODE, "worker-3"),
        ("pod/kafka/kafka-0", TargetKind.BROKER, "kafka/kafka-0"),
        ("pool/worker-1/pool-a", TargetKind.STORAGE_POOL, "worker-1/pool-a"),
    ],
)
def test_objects_are_named_by_kind_and_key(text: str, kind: TargetKind, key: str) -> None:
    assert parse_object(text) == ObjectRef(kind=kind, key=key)


@pytest.mark.parametrize("text", ["data-kafka-0", "pvc/data-kafka-0", "node/a/b", "secret/kafka/x", "pvc/kafka/"])
def test_a_bad_object_reference_says_how_to_write_one(text: str) -> None:
    with pytest.raises(ExplainError, match="pvc/NAMESPACE/NAME"):
        parse_object(text)


def test_a_pvc_in_cooldown_shows_the_time_left_and_the_last_action() -> None:
    stored = StoredStatus(
        state=ObjectState(
            state=RuleState.ACTIVE_ACTIONS_TAKEN, since=NOW - 60, cooldown_until=NOW + 240, reason="action verified"
        ),
        last_action=LastAction(
            name=RESIZE, before="400Gi", after="800Gi", started_at=NOW - 62, finished_at=NOW - 60, outcome="verified"
        ),
    )
    found = explain_pair(rule=resize_rule(), target=claim(800), stored=stored, vectors=usage(85.0), now=NOW)
    assert found.cooldown_left_seconds == 240
    assert found.state == "ActiveActionsTaken"
    assert found.last_action is not None
    assert (found.last_action["after"], found.last_action["outcome"]) == ("800Gi", "verified")
    assert found.next_cycle == ("nothing: stays ActiveActionsTaken (action verified)",)
    text = render_text([found])
    assert "cooldown:  240s left" in text
    assert f"last:      {RESIZE} 400Gi -> 800Gi: verified" in text


def test_a_pvc_at_maxsize_would_be_declined_and_says_so() -> None:
    stored = StoredStatus(state=ObjectState(state=RuleState.NORMAL, since=NOW - 600, reason="conditions clear"))
    found = explain_pair(rule=resize_rule(), target=claim(1024), stored=stored, vectors=usage(85.0), now=NOW)
    (condition,) = found.conditions
    assert (condition.value, condition.operator, condition.threshold, condition.holds) == (85.0, "Gt", ("80",), True)
    assert any(line.startswith(f"decline {RESIZE}: AtMaxSize") for line in found.next_cycle)
    assert found.cooldown_left_seconds is None


def test_an_ignored_pvc_says_no_rule_acts_on_it_even_over_the_threshold() -> None:
    stored = StoredStatus(state=ObjectState(state=RuleState.NORMAL, since=NOW - 600, reason="conditions clear"))
    ignored = replace(claim(400), annotations={IGNORE_ANNOTATION: "true"})
    for vectors in (usage(95.0), None):
        found = explain_pair(rule=resize_rule(), target=ignored, stored=stored, vectors=vectors, now=NOW)
        assert found.next_cycle == ('nothing: annotated kafka-autopilot.io/ignore: "true": no rule acts on it',)
    assert any(
        line.startswith("start ")
        for line in explain_pair(
            rule=resize_rule(), target=claim(400), stored=stored, vectors=usage(95.0), now=NOW
        ).next_cycle
    ), "the same claim without the annotation would be resized"


def test_a_pvc_held_by_the_policy_shows_the_limit_and_when_it_lifts() -> None:
    rate_limited = policy("  rateLimits:\n    perObject: {count: 1, period: 1h}\n")
    facts = AdmissionFacts(starts=(ActionStart(rule="kafka-resize", object=KEY, action=RESIZE, at=NOW - 600),))
    stored = StoredStatus(state=ObjectState(state=RuleState.NORMAL, since=NOW - 300, reason="conditions clear"))
    found = explain_pair(
        rule=resize_rule(),
        target=claim(400),
        stored=stored,
        vectors=usage(85.0),
        now=NOW,
        policy=rate_limited,
        facts=facts,
    )
    (held,) = [line for line in found.next_cycle if line.startswith("hold")]
    assert "RateLimitPerObject" in held
    assert "allows 1 per 1h" in held
    assert "next at 2027-01-15T08:50:00Z" in held
    # Once held, the state itself says so.
    throttled = StoredStatus(state=ObjectState(state=RuleState.ACTIONS_THROTTLED, since=NOW, reason=held[5:]))
    again = explain_pair(rule=resize_rule(), target=claim(400), stored=throttled, vectors=usage(85.0), now=NOW)
    assert again.hold is not None
    assert "next at 2027-01-15T08:50:00Z" in again.hold
    assert "held:" in render_text([again])


def test_a_pending_approval_of_this_rule_and_object_is_shown() -> None:
    def approval(name: str, *, object_key: str, phase: Phase | None) -> Approval:
        return Approval(
            name=name,
            namespace="kafka",
            rule="kafka-resize",
            object_kind="PersistentVolumeClaim",
            object_key=object_key,
            answer=Answer.PENDING,
            phase=phase,
            message="",
            actions=(),
            why="",
            created_at=NOW - 30,
            answered_by="",
            answer_reason="",
            resource_version="1",
        )

    approvals = [
        approval("mine", object_key=KEY, phase=Phase.PENDING),
        approval("used", object_key=KEY, phase=Phase.USED),
        approval("other", object_key="kafka/data-kafka-1", phase=Phase.PENDING),
    ]
    stored = StoredStatus(state=ObjectState(state=RuleState.ACTION_AWAITING_APPROVAL, since=NOW - 30, reason="asked"))
    found = explain_pair(
        rule=resize_rule(), target=claim(400), stored=stored, vectors=usage(85.0), now=NOW, approvals=approvals
    )
    assert [item["name"] for item in found.approvals] == ["mine"]
    assert "kafka-autopilot approve mine -n kafka" in render_text([found])


def test_without_prometheus_the_values_and_the_next_cycle_are_not_guessed() -> None:
    found = explain_pair(rule=resize_rule(), target=claim(400), stored=StoredStatus(), vectors=None, now=NOW)
    assert found.conditions == ()
    assert found.state is None
    assert found.next_cycle == ("not known: give --prometheus URL to evaluate the conditions",)


def test_missing_data_is_named_as_such() -> None:
    stored = StoredStatus(state=ObjectState(state=RuleState.NORMAL, since=NOW - 60, reason="conditions clear"))
    found = explain_pair(rule=resize_rule(), target=claim(400), stored=stored, vectors={USAGE: []}, now=NOW)
    (condition,) = found.conditions
    assert (condition.value, condition.holds) == (None, None)
    assert "no data" in render_text([found])
    assert found.as_dict()["conditions"][0]["value"] is None


def test_the_objects_own_annotations_are_shown_and_no_others() -> None:
    annotations = {"kafka-autopilot.io/ignore": "true", "kubectl.kubernetes.io/last-applied-configuration": "{}"}
    found = explain_pair(
        rule=resize_rule(),
        target=claim(400),
        stored=StoredStatus(),
        vectors=usage(50.0),
        now=NOW,
        annotations=annotations,
    )
    assert found.annotations == {"kafka-autopilot.io/ignore": "true"}
    assert "annotated: kafka-autopilot.io/ignore=true" in render_text([found])
