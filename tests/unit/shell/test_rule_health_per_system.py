"""Each external system fails alone, visibly: while Kafka does not answer, a broker rule and a node rule
(whose reschedule needs Kafka) are unhealthy with a reason naming Kafka, and a PVC rule beside them
(which needs no Kafka) keeps running and stays healthy. (Prometheus: test_agent_on_fakes; the storage
API: a StoragePool rule's cycle error names it.)"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from fakes import FakeClock, FakeCluster, FakeEvents, FakePod, FakePrometheus, FakePvc, FakeStateStore
from helpers import REFERENCE_RULE
from shell_support import load_rule

from agent.actions.registry import CATALOG
from agent.adapters.kafka import KafkaUnavailableError
from agent.audit.trail import AuditTrail
from agent.core.broker_identity import BrokerEndpoint
from agent.core.quantity import GIB
from agent.core.samples import Sample
from agent.runtime.cycle import RuleCycle
from agent.runtime.inventory import Inventory
from agent.runtime.recorder import Recorder
from agent.runtime.runner import ActionRunner
from agent.runtime.scheduler import Scheduler, Triggers
from agent.runtime.telemetry import Telemetry

BROKER_RULE = load_rule("""\
apiVersion: kafka-autopilot.io/v1alpha1
kind: AutopilotRule
metadata:
  name: kafka-leader-rebalance
spec:
  selector:
    matchLabels:
      app: kafka
  conditions:
    expressions:
      - key: "imbalance"
        operator: Gt
        values: ["0"]
  actions:
    - name: kafka-autopilot.io.action.kafka/rebalance-leaders
      params:
        batchsize: "10"
        timeout: "30"
""")
PVC_RULE = load_rule(REFERENCE_RULE)
NODE_RULE = load_rule((Path(__file__).resolve().parents[3] / "rules" / "kafka-node-failure.yaml").read_text())


class SwitchableKafka:
    def __init__(self) -> None:
        self.away = True

    async def broker_endpoints(self) -> Sequence[BrokerEndpoint]:
        if self.away:
            raise KafkaUnavailableError(bootstrap_servers="kafka:9092", reason="no answer within 20s")
        return (BrokerEndpoint(broker_id=100, host="10.0.0.5", port=9092),)


def scheduler(kafka: SwitchableKafka) -> Scheduler:
    clock = FakeClock()
    cluster = FakeCluster(clock=clock)
    cluster.add_pod(FakePod(namespace="kafka", name="kafka-0", node="w1", labels={"app": "kafka"}, ips=("10.0.0.5",)))
    cluster.add_pvc(FakePvc(namespace="kafka", name="data-kafka-0", requested_bytes=400 * GIB, labels={"app": "kafka"}))
    prometheus = FakePrometheus()
    prometheus.set(
        PVC_RULE.conditions.expressions[0].query,
        [Sample(labels={"namespace": "kafka", "persistentvolumeclaim": "data-kafka-0"}, value=10.0)],
    )
    store = FakeStateStore()
    recorder = Recorder(trail=AuditTrail(stream=io.StringIO()), telemetry=Telemetry(), clock=clock, events=FakeEvents())
    runner = ActionRunner(store=store, recorder=recorder, clock=clock, catalog=CATALOG, executors={})
    cycle = RuleCycle(
        inventory=Inventory(cluster=cluster, prometheus=prometheus, kafka=kafka),
        store=store,
        runner=runner,
        recorder=recorder,
        clock=clock,
        catalog=CATALOG,
    )
    rules = [BROKER_RULE, PVC_RULE, NODE_RULE]
    return Scheduler(
        rules=rules,
        cycle=cycle,
        resume=cycle.resume,
        clock=clock,
        recorder=recorder,
        telemetry=recorder.telemetry,
        triggers=Triggers(rules),
    )


async def test_while_kafka_is_away_only_the_broker_rule_is_unhealthy_and_says_kafka() -> None:
    kafka = SwitchableKafka()
    agent = scheduler(kafka)

    for rule in (BROKER_RULE, PVC_RULE, NODE_RULE):
        await agent.cycle_safely(rule)

    assert agent.health[BROKER_RULE.name].startswith("Kafka unreachable")
    # The node rule's reschedule confirms fencing with Kafka: it says so before any node fails.
    assert agent.health[NODE_RULE.name].startswith("Kafka unreachable"), agent.health
    assert "kafka kafka:9092: no answer within 20s" in agent.health[BROKER_RULE.name]
    assert agent.health[PVC_RULE.name] == "ok"
    metrics = agent.telemetry.render()
    assert f'kafka_autopilot_rule_healthy{{rule="{BROKER_RULE.name}"}} 0' in metrics.splitlines()
    assert f'kafka_autopilot_rule_healthy{{rule="{PVC_RULE.name}"}} 1' in metrics.splitlines()

    kafka.away = False
    for rule in (BROKER_RULE, NODE_RULE):
        await agent.cycle_safely(rule)
    assert "Kafka" not in agent.health[BROKER_RULE.name]
    assert "Kafka" not in agent.health[NODE_RULE.name]
