"""Broker objects from identity, never from pod names: the inventory on a fake API and a fake Kafka, and
the engine holding every action planned on a broker whose id is unknown.

The world: pods kafka/kafka-0 (10.0.0.5) and kafka/kafka-1 (10.0.0.6), labelled app=kafka, and
kafka/exporter-0 (app=exporter). Kafka says broker 100 advertises 10.0.0.5 and broker 101 (fenced)
10.0.0.6: the names' ordinals 0 and 1 are not the ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from fakes import FakeCluster, FakePod, FakePrometheus
from shell_support import load_rule

from agent.actions.registry import CATALOG
from agent.adapters.kafka import KafkaUnavailableError
from agent.core.broker_identity import BrokerEndpoint
from agent.core.engine import run_cycle
from agent.core.matching import TargetObject, broker_object
from agent.core.policy import HoldCode
from agent.core.rules import Rule
from agent.core.samples import Sample
from agent.core.states import RuleState
from agent.runtime.inventory import Inventory

RULE_TEXT = """\
apiVersion: kafka-autopilot.io/v1alpha1
kind: AutopilotRule
metadata:
  name: kafka-leader-rebalance
spec:
  selector:
    SELECTOR
IDENTITY  conditions:
    expressions:
      - key: "imbalance"
        operator: Gt
        values: ["0"]
  actions:
    - name: kafka-autopilot.io.action.kafka/rebalance-leaders
      params:
        batchsize: "10"
        timeout: "30"
"""
BY_LABEL = "matchLabels:\n      app: kafka"
BY_EXPRESSION = "matchExpressions:\n      - {key: app, operator: In, values: [kafka, broker]}"


def rule(*, selector: str = BY_LABEL, identity: str = "") -> Rule:
    return load_rule(RULE_TEXT.replace("SELECTOR", selector).replace("IDENTITY", identity))


ENDPOINTS = (
    BrokerEndpoint(broker_id=100, host="10.0.0.5", port=9092),
    BrokerEndpoint(broker_id=101, host="10.0.0.6", port=9092, fenced=True),
)


class StubKafka:
    def __init__(self, endpoints: Sequence[BrokerEndpoint] | None) -> None:
        self.endpoints = endpoints
        self.asked = 0

    async def broker_endpoints(self) -> Sequence[BrokerEndpoint]:
        self.asked += 1
        if self.endpoints is None:
            raise KafkaUnavailableError(bootstrap_servers="kafka:9092", reason="no answer within 20s")
        return self.endpoints


class SelectorRecordingCluster(FakeCluster):
    def __init__(self) -> None:
        super().__init__()
        self.selectors: list[str | None] = []

    async def list_pods(
        self, *, namespace: str | None = None, label_selector: str | None = None, field_selector: str | None = None
    ) -> list:  # type: ignore[type-arg]
        self.selectors.append(label_selector)
        return await super().list_pods(
            namespace=namespace, label_selector=label_selector, field_selector=field_selector
        )


@pytest.fixture
def cluster() -> SelectorRecordingCluster:
    cluster = SelectorRecordingCluster()
    cluster.add_pod(FakePod(namespace="kafka", name="kafka-0", node="w1", labels={"app": "kafka"}, ips=("10.0.0.5",)))
    cluster.add_pod(
        FakePod(
            namespace="kafka",
            name="kafka-1",
            node="w2",
            labels={"app": "kafka", "apps.kubernetes.io/pod-index": "1"},
            ips=("10.0.0.6",),
        )
    )
    cluster.add_pod(FakePod(namespace="kafka", name="exporter-0", node="w1", labels={"app": "exporter"}, ips=("10.9",)))
    return cluster


def inventory(cluster: FakeCluster, kafka: StubKafka | None) -> Inventory:
    return Inventory(cluster=cluster, prometheus=FakePrometheus(), kafka=kafka)


def by_key(objects: list[TargetObject]) -> dict[str, tuple[dict[str, str], str | None]]:
    return {target.key: (dict(target.identity), target.identity_problem) for target in objects}


@pytest.mark.parametrize(
    ("selector", "sent"),
    [(BY_LABEL, "app=kafka"), (BY_EXPRESSION, "app in (kafka,broker)")],
    ids=["matchLabels", "matchExpressions"],
)
async def test_the_selected_pods_are_identified_by_the_address_kafka_advertises(
    cluster: SelectorRecordingCluster, selector: str, sent: str
) -> None:
    objects = await inventory(cluster, StubKafka(ENDPOINTS)).objects(rule(selector=selector))

    assert cluster.selectors == [sent]  # selected by the API, not after listing every pod
    assert by_key(objects) == {
        "kafka/kafka-0": ({"namespace": "kafka", "pod": "kafka-0", "broker": "100"}, None),
        "kafka/kafka-1": ({"namespace": "kafka", "pod": "kafka-1", "broker": "101"}, None),
    }


async def test_a_pod_no_broker_advertises_is_an_object_without_a_broker_identity(cluster: FakeCluster) -> None:
    objects = await inventory(cluster, StubKafka(ENDPOINTS[:1])).objects(rule())

    assert by_key(objects)["kafka/kafka-1"] == (
        {"namespace": "kafka", "pod": "kafka-1"},
        "no broker Kafka knows advertises this pod's address (10.0.0.6, kafka-1)",
    )


@pytest.mark.parametrize(
    ("kafka", "why"),
    [
        (None, "the agent was started without --kafka"),
        (StubKafka(None), "kafka:9092: no answer within 20s"),
    ],
    ids=["no --kafka", "Kafka unreachable"],
)
async def test_without_kafka_a_kafka_only_rule_knows_no_broker(
    cluster: FakeCluster, kafka: StubKafka | None, why: str
) -> None:
    objects = await inventory(cluster, kafka).objects(rule())

    assert [target.identity.get("broker") for target in objects] == [None, None]
    for target in objects:
        assert target.identity_problem is not None
        assert target.identity_problem.startswith("Kafka could not be asked which broker runs here: ")
        assert why in target.identity_problem


async def test_without_kafka_an_identity_the_rule_states_is_used(cluster: FakeCluster) -> None:
    objects = await inventory(cluster, None).objects(rule(identity="  brokerIdentity:\n    ordinalOffset: 100\n"))

    assert by_key(objects) == {
        "kafka/kafka-0": (
            {"namespace": "kafka", "pod": "kafka-0"},
            "the pod has no label apps.kubernetes.io/pod-index",
        ),
        "kafka/kafka-1": ({"namespace": "kafka", "pod": "kafka-1", "broker": "101"}, None),
    }


# --- the engine holds what is planned on an unknown broker -------------------------------------------


def cycle(target: TargetObject) -> tuple[list[str], list[tuple[str, str]], RuleState, str]:
    loaded = rule()
    vectors = {
        expression.query: [Sample(labels={"namespace": "kafka", "pod": target.name}, value=3)]
        for expression in loaded.conditions.expressions
    }
    outcome = run_cycle(rule=loaded, objects=[target], vectors=vectors, states={}, now=1000.0, catalog=CATALOG)
    return (
        [plan.object for plan in outcome.planned],
        [(held.code, held.reason) for held in outcome.held],
        outcome.states[target.key].state,
        outcome.notes.get(target.key, ""),
    )


def test_an_action_planned_on_a_broker_of_unknown_identity_is_held_with_the_reason() -> None:
    unknown = broker_object(
        namespace="kafka", pod="kafka-1", broker_id=None, labels={"app": "kafka"}, identity_problem="why not"
    )

    planned, held, state, note = cycle(unknown)

    assert planned == []
    assert held == [(HoldCode.IDENTITY_UNKNOWN, "why not")]
    assert state is RuleState.ACTIONS_THROTTLED
    assert note == "held by an unknown identity: IdentityUnknown: why not"


def test_an_identified_broker_is_planned() -> None:
    known = broker_object(namespace="kafka", pod="kafka-1", broker_id=101, labels={"app": "kafka"})

    planned, held, state, _ = cycle(known)

    assert planned == ["kafka/kafka-1"]
    assert held == []
    assert state is RuleState.ACTIVE_ACTIONS_PENDING
