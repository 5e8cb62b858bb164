"""The state store's codec, pure: ObjectState <-> AutopilotRuleObject status, exactly.

A restarted agent must resume from precisely the state it left, or a `for` period, a cooldown or an
approval could be cut short or stretched: every time must come back as the same float, every field
as it was. Also the names and labels derived from (rule, object), and the rule status's condition.
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import fields

import pytest

from agent.actions.registry import CATALOG
from agent.adapters.errors import StateDecodeError
from agent.adapters.kubernetes.clusterrules import cluster_rule_file, cluster_rule_text, rule_status
from agent.adapters.kubernetes.crds import crd_manifests
from agent.adapters.kubernetes.statuscodec import (
    InFlight,
    LastAction,
    StoredStatus,
    decode_state,
    decode_status,
    encode_state,
    encode_status,
    format_time,
    label_value,
    object_manifest,
    object_name,
    parse_time,
    split_object_key,
    with_recent,
)
from agent.core.diagnostics import Location, Problem, Severity
from agent.core.loader import parse_rules
from agent.core.states import ObjectState, RuleState

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


# --- times ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, "1970-01-01T00:00:00Z"),
        (1.5, "1970-01-01T00:00:01.5Z"),
        (1000.0, "1970-01-01T00:16:40Z"),
        (1_700_000_000.0, "2023-11-14T22:13:20Z"),
        (1_700_000_000.123456, "2023-11-14T22:13:20.123456Z"),
        (1_700_000_000.1234567, "2023-11-14T22:13:20.1234567Z"),
        (-0.5, "1969-12-31T23:59:59.5Z"),
        (1e-20, "1970-01-01T00:00:00.00000000000000000001Z"),
    ],
)
def test_format_time_writes_rfc3339_utc_with_every_digit(value: float, text: str) -> None:
    assert format_time(value) == text
    assert parse_time(text) == value


def _sample_times() -> list[float]:
    generator = random.Random(20240601)
    samples = [
        0.1,
        0.3,
        1 / 3,
        math.pi,
        2**-40,
        1_699_999_999.9999998,
        math.nextafter(1_700_000_000.0, math.inf),
        math.nextafter(1_700_000_000.0, -math.inf),
        253_402_300_799.999,  # 9999-12-31T23:59:59.999
        -62_135_596_800.0,  # 0001-01-01T00:00:00
    ]
    samples += [generator.uniform(0, 4_102_444_800) for _ in range(2000)]
    samples += [generator.uniform(0, 10_000) for _ in range(500)]
    samples += [round(generator.uniform(1.6e9, 1.8e9), digits) for digits in range(10) for _ in range(50)]
    samples += [generator.uniform(-1e9, 0) for _ in range(200)]
    return samples


def test_parse_time_inverts_format_time_exactly() -> None:
    mismatches = [value for value in _sample_times() if parse_time(format_time(value)) != value]
    assert mismatches == []


def test_formatted_times_sort_as_text_like_the_times_they_stand_for() -> None:
    values = sorted(value for value in _sample_times() if 0 <= value < 4_102_444_800)
    texts = [format_time(value).removesuffix("Z") for value in values]
    # Equal whole seconds compare by their fraction digits; text order must agree with time order.
    assert texts == sorted(texts)


def test_parse_time_accepts_offsets_and_missing_fraction() -> None:
    assert parse_time("2023-11-14T23:13:20+01:00") == 1_700_000_000.0
    assert parse_time("2023-11-14T21:13:20.25-01:00") == 1_700_000_000.25


@pytest.mark.parametrize(
    "text",
    ["", "yesterday", "2023-11-14 22:13:20Z", "2023-11-14T22:13:20", "2023-13-01T00:00:00Z", "2023-11-14T22:13:20.Z"],
)
def test_parse_time_rejects_what_is_not_rfc3339(text: str) -> None:
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_time(text)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 1e13])
def test_format_time_rejects_what_cannot_be_a_time(value: float) -> None:
    with pytest.raises(ValueError, match="time"):
        format_time(value)


# --- ObjectState and the whole status ---------------------------------------------------------------

FULL = ObjectState(
    state=RuleState.ACTIVE_ACTIONS_TAKEN,
    since=1_700_000_123.456789,
    active_at=1_700_000_000.1,
    cooldown_until=1_700_000_423.456789,
    approved_at=1_700_000_100.000001,
    approval_declined_at=1_699_999_000.5,
    reason="actions verified: 10Gi -> 15Gi",
    last_holding_at=1_700_000_120.0,
    attempts_not_acted=2,
    entered_at={
        "Normal": 1_699_990_000.0,
        "Triggered": 1_700_000_000.1,
        "ActiveActionsPending": 1_700_000_120.25,
        "ActiveActionsTaken": 1_700_000_123.456789,
    },
)


@pytest.mark.parametrize(
    "state",
    [
        ObjectState(),
        ObjectState(state=RuleState.NORMAL, since=1000.0, reason="first evaluation", entered_at={"Normal": 1000.0}),
        ObjectState(state=RuleState.TRIGGERED, since=0.1, active_at=0.1, reason="conditions hold"),
        FULL,
        *(ObjectState(state=state, since=12.5, reason=f"in {state}") for state in RuleState),
    ],
)
def test_object_state_round_trips_through_json_exactly(state: ObjectState) -> None:
    # JSON stands in for the API server, which stores and returns the status as JSON.
    encoded = json.loads(json.dumps(encode_state(state)))
    decoded = decode_state(encoded)
    assert decoded == state
    assert dict(decoded.entered_at) == dict(state.entered_at)


def test_encoded_state_uses_the_crd_field_names_and_leaves_out_absent_times() -> None:
    assert encode_state(ObjectState(state=RuleState.NORMAL, since=1.0)) == {
        "state": "Normal",
        "since": "1970-01-01T00:00:01Z",
        "reason": "",
    }
    assert set(encode_state(FULL)) == {
        "state",
        "since",
        "activeAt",
        "cooldownUntil",
        "approvedAt",
        "approvalDeclinedAt",
        "reason",
        "enteredAt",
        "lastHoldingAt",
        "attemptsNotActed",
    }


def test_a_status_stored_before_last_holding_at_reads_as_no_gap_known() -> None:
    old = decode_state({"state": "Triggered", "activeAt": "1970-01-01T00:00:01Z", "reason": "conditions hold"})
    assert (old.last_holding_at, old.attempts_not_acted, old.active_at) == (None, 0, 1.0)


def test_held_and_declined_outcomes_are_not_starts_for_rate_limits() -> None:
    def last(outcome: str) -> LastAction:
        return LastAction(name="a", started_at=5.0, finished_at=6.0, outcome=outcome)

    assert with_recent((), last("held")) == ()
    assert with_recent((), last("declined")) == ()
    assert [action.started_at for action in with_recent((), last("failed"))] == [5.0]
    assert [action.started_at for action in with_recent((), last("dry-run"))] == [5.0]


def test_every_object_state_field_is_stored() -> None:
    """A field added to ObjectState without a place in the status would be lost at every restart."""
    every_field_set = {field.name for field in fields(ObjectState)}
    assert every_field_set == {
        "state",
        "since",
        "active_at",
        "cooldown_until",
        "approved_at",
        "approval_declined_at",
        "reason",
        "entered_at",
        "last_holding_at",
        "attempts_not_acted",
    }
    assert all(getattr(FULL, name) != getattr(ObjectState(), name) for name in every_field_set)
    assert decode_state(encode_state(FULL)) == FULL


def test_whole_status_round_trips_with_last_action_and_in_flight() -> None:
    stored = StoredStatus(
        state=FULL,
        last_action=LastAction(
            name="openstorage.io.action.volume/resize",
            before="10Gi",
            after="15Gi",
            started_at=1_700_000_120.25,
            finished_at=1_700_000_123.456789,
            outcome="succeeded",
        ),
        in_flight=InFlight(
            action="openstorage.io.action.volume/resize",
            requested_at=1_700_000_120.2,
            detail={"from": "10Gi", "to": "15Gi"},
        ),
    )
    encoded = json.loads(
        json.dumps(encode_status(state=stored.state, last_action=stored.last_action, in_flight=stored.in_flight))
    )
    assert encoded["inFlight"] == {
        "action": "openstorage.io.action.volume/resize",
        "requestedAt": "2023-11-14T22:15:20.2Z",
        "detail": {"from": "10Gi", "to": "15Gi"},
    }
    assert decode_status(encoded) == stored


def test_an_empty_status_is_no_state_not_initializing() -> None:
    assert decode_status(None) == StoredStatus()
    assert decode_status({}).state is None
    only_in_flight = decode_status({"inFlight": {"action": "x", "requestedAt": "1970-01-01T00:00:02Z"}})
    assert only_in_flight.state is None
    assert only_in_flight.in_flight == InFlight(action="x", requested_at=2.0)


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ({"state": "Sleeping"}, "status.state: unknown state 'Sleeping'"),
        ({"state": "Normal", "since": "noon"}, "status.since"),
        ({"state": "Normal", "reason": 7}, "status.reason: must be a string"),
        ({"state": "Normal", "enteredAt": ["Normal"]}, "status.enteredAt: must be a mapping"),
        ({"state": "Normal", "enteredAt": {"Normal": "soon"}}, "status.enteredAt.Normal"),
        ({"inFlight": {"action": "x"}}, "status.inFlight.requestedAt: missing"),
        ({"inFlight": "x"}, "status.inFlight: must be a mapping"),
        ({"lastAction": {"name": "x", "startedAt": 5}}, "status.lastAction.startedAt"),
    ],
)
def test_a_status_the_agent_did_not_write_is_an_error_never_a_default(status: dict[str, object], message: str) -> None:
    with pytest.raises(StateDecodeError) as caught:
        decode_status(status)
    assert message in str(caught.value)


# --- names and labels -------------------------------------------------------------------------------


def test_object_names_are_deterministic_dns_names_one_per_pair() -> None:
    name = object_name(rule="kafka-resize", object_key="kafka/data-kafka-0")
    assert name == object_name(rule="kafka-resize", object_key="kafka/data-kafka-0")
    assert re.fullmatch(r"kafka-resize-[0-9a-f]{10}", name)
    keys = [f"kafka/data-kafka-{index}" for index in range(200)] + ["node-1/pool-0", "node-1"]
    names = {object_name(rule="kafka-resize", object_key=key) for key in keys}
    assert len(names) == len(keys)
    assert object_name(rule="other", object_key="kafka/data-kafka-0") != name


@pytest.mark.parametrize(
    "rule", ["r", "a.b.c", "x" * 253, ("a" * 60 + ".") * 4 + "b", "a" * 243 + "." + "b" * 9, "a" * 242 + "-b"]
)
def test_object_names_stay_valid_for_any_valid_rule_name(rule: str) -> None:
    name = object_name(rule=rule, object_key="kafka/data-kafka-0")
    assert len(name) <= 253
    assert DNS_SUBDOMAIN.fullmatch(name), name


def test_long_rule_names_with_one_prefix_still_get_distinct_object_names() -> None:
    first = object_name(rule="a" * 250 + "x", object_key="k")
    second = object_name(rule="a" * 250 + "y", object_key="k")
    assert first != second


@pytest.mark.parametrize(
    ("text", "kept"),
    [("kafka-resize", True), ("data-kafka-0", True), ("node-1/pool-0", False), ("x" * 64, False), ("-a", False)],
)
def test_label_values_are_the_text_when_valid_else_a_stable_stand_in(text: str, kept: bool) -> None:
    value = label_value(text)
    assert (value == text) is kept
    assert len(value) <= 63
    assert LABEL_VALUE.fullmatch(value), value
    assert label_value(text) == value


def test_object_manifest_names_the_pair_in_spec_and_labels() -> None:
    manifest = object_manifest(
        rule="kafka-resize", object_key="kafka/data-kafka-0", object_kind="PersistentVolumeClaim"
    )
    assert manifest["spec"] == {
        "rule": "kafka-resize",
        "objectKind": "PersistentVolumeClaim",
        "objectKey": "kafka/data-kafka-0",
        "objectNamespace": "kafka",
        "objectName": "data-kafka-0",
    }
    assert manifest["metadata"]["labels"] == {
        "kafka-autopilot.io/rule": "kafka-resize",
        "kafka-autopilot.io/object-kind": "PersistentVolumeClaim",
        "kafka-autopilot.io/object-name": "data-kafka-0",
        "kafka-autopilot.io/object-namespace": "kafka",
    }
    assert "status" not in manifest


def test_cluster_scoped_keys_keep_their_slash_in_the_name() -> None:
    assert split_object_key(object_kind="StoragePool", object_key="node-1/pool-0") == ("", "node-1/pool-0")
    assert split_object_key(object_kind="Node", object_key="node-1") == ("", "node-1")
    assert split_object_key(object_kind="KafkaBroker", object_key="kafka/kafka-1") == ("kafka", "kafka-1")


# --- CRDs and AutopilotRules ------------------------------------------------------------------------


def _columns(manifest: dict[str, object]) -> list[str]:
    spec = manifest["spec"]
    assert isinstance(spec, dict)
    return [column["name"] for column in spec["versions"][0]["additionalPrinterColumns"]]


def test_shipped_crds_are_the_three_kinds_with_status_and_columns() -> None:
    manifests = {manifest["spec"]["names"]["kind"]: manifest for manifest in crd_manifests()}
    assert set(manifests) == {"AutopilotRule", "AutopilotRuleObject", "ActionApproval"}
    assert manifests["AutopilotRule"]["spec"]["scope"] == "Cluster"
    assert manifests["AutopilotRuleObject"]["spec"]["scope"] == "Cluster"
    assert manifests["ActionApproval"]["spec"]["scope"] == "Namespaced"
    assert manifests["AutopilotRule"]["spec"]["names"]["shortNames"] == ["kar"]
    assert manifests["AutopilotRuleObject"]["spec"]["names"]["shortNames"] == ["karo"]
    for manifest in manifests.values():
        assert manifest["spec"]["versions"][0]["subresources"] == {"status": {}}
    assert _columns(manifests["AutopilotRuleObject"])[:4] == ["Rule", "Object", "State", "Age"]
    states = manifests["AutopilotRuleObject"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "status"
    ]["properties"]["state"]["enum"]
    assert states == [state.value for state in RuleState]


def test_cluster_rule_text_parses_with_the_loader_and_drops_server_fields() -> None:
    obj = {
        "apiVersion": "kafka-autopilot.io/v1alpha1",
        "kind": "AutopilotRule",
        "metadata": {
            "name": "kafka-resize",
            "uid": "1234",
            "resourceVersion": "99",
            "generation": 3,
            "creationTimestamp": "2024-01-01T00:00:00Z",
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": {
            "selector": {"matchLabels": {"app": "kafka"}},
            "conditions": {
                "for": "1m",
                "expressions": [
                    {
                        "key": "100 * (px_volume_usage_bytes / px_volume_capacity_bytes)",
                        "operator": "Gt",
                        "values": ["80"],
                    }
                ],
            },
            "actions": [{"name": "openstorage.io.action.volume/resize", "params": {"scalepercentage": "50"}}],
            "actionsCoolDownPeriod": 600,
        },
        "status": {"objects": 3},
    }
    result = parse_rules(cluster_rule_text(obj), file=cluster_rule_file("kafka-resize"), catalog=CATALOG)
    assert [str(problem) for problem in result.problems] == []
    assert [rule.name for rule in result.rules] == ["kafka-resize"]
    assert result.rules[0].cooldown_seconds == 600
    assert result.rules[0].source.file == "cluster:autopilotrule/kafka-resize"


def _problem(message: str, severity: Severity = Severity.ERROR) -> Problem:
    location = Location(file="cluster:autopilotrule/r", line=7, column=5)
    return Problem(location=location, rule="r", field="spec.actions[0].name", message=message, severity=severity)


def test_rule_status_says_why_a_rule_is_invalid_and_keeps_the_transition_time() -> None:
    invalid = rule_status(current=None, problems=[_problem('unknown action "x"')], generation=2, now=100.7)
    condition = invalid["conditions"][0]
    assert condition["type"] == "Valid"
    assert condition["status"] == "False"
    assert condition["reason"] == "InvalidRule"
    assert 'cluster:autopilotrule/r:7:5: r: spec.actions[0].name: unknown action "x"' in condition["message"]
    assert condition["lastTransitionTime"] == "1970-01-01T00:01:40Z"
    assert invalid["observedGeneration"] == 2
    still = rule_status(current=invalid, problems=[_problem("other")], generation=3, now=500.0)
    assert still["conditions"][0]["lastTransitionTime"] == "1970-01-01T00:01:40Z"
    fixed = rule_status(
        current=still, problems=[_problem("just a hint", Severity.WARNING)], generation=4, now=900.0, objects=3
    )
    assert fixed["conditions"][0]["status"] == "True"
    assert fixed["conditions"][0]["lastTransitionTime"] == "1970-01-01T00:15:00Z"
    assert "just a hint" in fixed["conditions"][0]["message"]
    assert fixed["objects"] == 3
    assert len(fixed["conditions"]) == 1
