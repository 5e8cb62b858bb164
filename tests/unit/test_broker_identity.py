"""Broker identity: from Kafka's advertised addresses or a rule's statement, never from a pod's name."""

from __future__ import annotations

import pytest

from agent.actions.registry import CATALOG
from agent.core.broker_identity import (
    POD_INDEX_LABEL,
    BrokerEndpoint,
    Identified,
    PodAddress,
    StatedIdentity,
    Unknown,
    identify_brokers,
)
from agent.core.loader import parse_rules


def pod(name: str, *, ip: str | None = None, namespace: str = "kafka", **extra: object) -> PodAddress:
    return PodAddress(namespace=namespace, name=name, ips=(ip,) if ip else (), **extra)  # type: ignore[arg-type]


def endpoint(broker_id: int, host: str, *, fenced: bool = False) -> BrokerEndpoint:
    return BrokerEndpoint(broker_id=broker_id, host=host, port=9092, fenced=fenced)


def test_the_id_is_the_broker_that_advertises_the_pods_ip_not_the_names_ordinal() -> None:
    found = identify_brokers([pod("kafka-broker-0", ip="127.0.1.5")], endpoints=[endpoint(100, "127.0.1.5")])
    assert found == {
        ("kafka", "kafka-broker-0"): Identified(broker_id=100, how="Kafka advertises broker 100 at 127.0.1.5:9092")
    }


@pytest.mark.parametrize(
    "host",
    [
        "my-cluster-brokers-10.my-cluster-kafka-brokers.kafka.svc",
        "my-cluster-brokers-10.my-cluster-kafka-brokers.kafka.svc.cluster.local",
        "MY-CLUSTER-BROKERS-10.my-cluster-kafka-brokers.kafka.svc.cluster.local.",
        "my-cluster-brokers-10",
    ],
)
def test_a_hostname_or_fqdn_names_the_pod(host: str) -> None:
    strimzi = pod("my-cluster-brokers-10", hostname="my-cluster-brokers-10", subdomain="my-cluster-kafka-brokers")
    found = identify_brokers([strimzi], endpoints=[endpoint(10, host)])
    assert isinstance(found[strimzi.key], Identified) and found[strimzi.key].broker_id == 10  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "host",
    [
        "my-cluster-brokers-10.my-cluster-kafka-brokers.other.svc",  # another namespace
        "my-cluster-brokers-1.my-cluster-kafka-brokers.kafka.svc",  # a prefix of the name
        "my-cluster-brokers-10.my-cluster-kafka-brokers.kafka.svcx",
        "127.0.1.50",
        "",
    ],
)
def test_an_address_of_something_else_names_nothing(host: str) -> None:
    strimzi = pod("my-cluster-brokers-10", ip="127.0.1.5", subdomain="my-cluster-kafka-brokers")
    found = identify_brokers([strimzi], endpoints=[endpoint(10, host)])
    assert isinstance(found[strimzi.key], Unknown)
    assert "no broker Kafka knows advertises this pod's address" in found[strimzi.key].reason  # type: ignore[union-attr]


def test_without_kafka_a_kafka_only_identity_is_unknown() -> None:
    found = identify_brokers([pod("kafka-0", ip="127.0.1.5")], endpoints=None)
    assert found[("kafka", "kafka-0")] == Unknown(reason="Kafka could not be asked which broker runs here")


def test_two_brokers_at_one_address_leave_the_pod_unknown() -> None:
    found = identify_brokers(
        [pod("kafka-0", ip="127.0.1.5")], endpoints=[endpoint(0, "127.0.1.5", fenced=True), endpoint(3, "127.0.1.5")]
    )
    assert found[("kafka", "kafka-0")] == Unknown(reason="Kafka lists brokers 0, 3 at this pod's address: ambiguous")


def test_one_broker_matching_two_pods_leaves_both_unknown() -> None:
    """A short hostname is the same in two namespaces: never last-wins."""
    pods = [pod("kafka-0", namespace="a"), pod("kafka-0", namespace="b")]
    found = identify_brokers(pods, endpoints=[endpoint(0, "kafka-0")])
    for each in pods:
        assert found[each.key] == Unknown(reason="broker 0's address matches pods a/kafka-0, b/kafka-0: ambiguous")


def test_a_fenced_broker_keeps_its_registered_address_and_says_so() -> None:
    found = identify_brokers([pod("kafka-2", ip="127.0.1.7")], endpoints=[endpoint(2, "127.0.1.7", fenced=True)])
    assert found[("kafka", "kafka-2")] == Identified(
        broker_id=2, how="Kafka advertises broker 2 (fenced) at 127.0.1.7:9092"
    )


@pytest.mark.parametrize(
    ("stated", "labels", "annotations", "expected"),
    [
        (StatedIdentity(label="broker-id"), {"broker-id": "12"}, {}, 12),
        (StatedIdentity(annotation="kafka/id"), {}, {"kafka/id": " 7 "}, 7),
        (StatedIdentity(ordinal_offset=100), {POD_INDEX_LABEL: "2"}, {}, 102),
    ],
)
def test_a_rule_may_state_the_id(
    stated: StatedIdentity, labels: dict[str, str], annotations: dict[str, str], expected: int
) -> None:
    subject = pod("kafka-broker-2", labels=labels, annotations=annotations)
    found = identify_brokers([subject], endpoints=None, stated=stated)[subject.key]
    assert isinstance(found, Identified) and found.broker_id == expected


@pytest.mark.parametrize(
    ("stated", "labels", "reason"),
    [
        (StatedIdentity(label="broker-id"), {}, "the pod has no label broker-id"),
        (
            StatedIdentity(label="broker-id"),
            {"broker-id": "ten"},
            "the pod's label broker-id is 'ten', not a broker id",
        ),
        (StatedIdentity(ordinal_offset=100), {}, f"the pod has no label {POD_INDEX_LABEL}"),
        (StatedIdentity(label="broker-id"), {"broker-id": "-1"}, "the pod's label broker-id is '-1', not a broker id"),
    ],
)
def test_a_stated_id_that_is_missing_or_not_a_number_is_unknown(
    stated: StatedIdentity, labels: dict[str, str], reason: str
) -> None:
    subject = pod("kafka-0", labels=labels)
    assert identify_brokers([subject], endpoints=[], stated=stated)[subject.key] == Unknown(reason=reason)


def test_a_stated_id_that_kafka_contradicts_is_not_trusted() -> None:
    subject = pod("kafka-broker-0", ip="127.0.1.5", labels={POD_INDEX_LABEL: "0"})
    found = identify_brokers(
        [subject], endpoints=[endpoint(100, "127.0.1.5")], stated=StatedIdentity(ordinal_offset=10)
    )[subject.key]
    assert found == Unknown(
        reason=f"{POD_INDEX_LABEL} + 10 says broker 10, but Kafka advertises broker 100 at 127.0.1.5:9092"
    )


def test_a_stated_id_that_kafka_confirms_is_known() -> None:
    subject = pod("kafka-broker-0", ip="127.0.1.5", labels={POD_INDEX_LABEL: "0"})
    found = identify_brokers(
        [subject], endpoints=[endpoint(100, "127.0.1.5")], stated=StatedIdentity(ordinal_offset=100)
    )[subject.key]
    assert found == Identified(broker_id=100, how=f"label {POD_INDEX_LABEL} 0 + 100")


def test_only_one_way_may_be_stated() -> None:
    with pytest.raises(ValueError, match="one of label, annotation or ordinalOffset"):
        StatedIdentity(label="a", ordinal_offset=1)


def rule_text(broker_identity: str) -> str:
    return f"""apiVersion: kafka-autopilot.io/v1alpha1
kind: AutopilotRule
metadata: {{name: r}}
spec:
  brokerIdentity: {broker_identity}
  conditions:
    expressions: [{{key: "x", operator: Gt, values: ["0"]}}]
  actions: [{{name: kafka-autopilot.io.action.broker/restart}}]
"""


@pytest.mark.parametrize(
    ("text", "stated"),
    [
        ("{ordinalOffset: 100}", StatedIdentity(ordinal_offset=100)),
        ("{label: broker-id}", StatedIdentity(label="broker-id")),
        ("{annotation: kafka/id}", StatedIdentity(annotation="kafka/id")),
    ],
)
def test_a_rule_states_its_broker_identity(text: str, stated: StatedIdentity) -> None:
    loaded = parse_rules(rule_text(text), file="r.yaml", catalog=CATALOG)
    assert not loaded.problems and loaded.rules[0].broker_identity == stated


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("{label: a, ordinalOffset: 1}", 19, "must give exactly one of label, annotation or ordinalOffset, got 2"),
        ("{ordinalOffset: -1}", 35, "must be a whole number of at least 0, got '-1'"),
        ("{podName: true}", 20, 'unknown field "podName"'),
        ('{label: ""}', 27, "must name a label or annotation, got an empty string"),
    ],
)
def test_a_bad_broker_identity_is_an_error_at_its_place(text: str, column: int, message: str) -> None:
    loaded = parse_rules(rule_text(text), file="r.yaml", catalog=CATALOG)
    assert not loaded.rules
    assert [(p.location.line, p.location.column) for p in loaded.problems] == [(5, column)]
    assert message in loaded.problems[0].message


def test_an_empty_list_of_addresses_from_kafka_proves_no_pod_is_not_a_broker() -> None:
    pod = PodAddress(namespace="kafka", name="kafka-0", ips=("10.0.0.10",))

    (identity,) = identify_brokers([pod], endpoints=()).values()

    assert identity == Unknown(reason="Kafka listed no broker addresses")
    assert not identity.not_a_broker
