"""The shipped node-failure rule through the runtime's cycle on the fakes: a failed node's broker is
moved, and when the node comes back the agent's own cordon is undone and recorded."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from fakes import (
    FakeClock,
    FakeCluster,
    FakeEvents,
    FakeKafka,
    FakeNode,
    FakePod,
    FakePrometheus,
    FakePvc,
    FakeStateStore,
)
from shell_support import load_rule

from agent.actions.mutations import LiveApplier
from agent.actions.node_reschedule.executor import CORDONED_BY, NodeRescheduleExecutor
from agent.actions.node_reschedule.spec import NODE_RESCHEDULE
from agent.actions.registry import CATALOG
from agent.audit.trail import AuditRecord, AuditTrail
from agent.core.quantity import GIB
from agent.runtime.cycle import RuleCycle
from agent.runtime.inventory import Inventory
from agent.runtime.recorder import Recorder
from agent.runtime.runner import ActionRunner
from agent.runtime.telemetry import Telemetry

RULE = load_rule((Path(__file__).resolve().parents[3] / "rules" / "kafka-node-failure.yaml").read_text())


async def test_a_failed_node_is_remedied_and_released_when_it_is_back() -> None:
    clock = FakeClock()
    cluster = FakeCluster(clock=clock)
    cluster.add_node(FakeNode(name="worker-1", ready="Unknown"), lease_renewed=clock.now() - 120)
    cluster.add_node(FakeNode(name="worker-2"), lease_renewed=clock.now())
    cluster.add_pod(
        FakePod(
            namespace="kafka",
            name="kafka-1",
            node="worker-1",
            labels={"app": "kafka"},
            ips=("10.0.0.11",),
            claims=("data-kafka-1",),
        )
    )
    cluster.add_pvc(FakePvc(namespace="kafka", name="data-kafka-1", requested_bytes=GIB))
    cluster.add_attachment("csi-1", node="worker-1", pv="pv-data-kafka-1")
    cluster.reschedule_to = "worker-2"
    kafka = FakeKafka(clock=clock)
    kafka.registered = {0, 2}
    kafka.hosts = {0: "10.0.0.10", 1: "10.0.0.11", 2: "10.0.0.13"}
    kafka.add_partition("orders", 0, replicas=[1, 0, 2], leader=0, isr=[0, 2], min_insync=2)
    cluster.on_running = lambda pod: kafka.registered.add(1)
    records: list[AuditRecord] = []
    recorder = Recorder(
        trail=AuditTrail(stream=io.StringIO(), listener=records.append),
        telemetry=Telemetry(),
        clock=clock,
        events=FakeEvents(),
    )
    executor = NodeRescheduleExecutor(reader=cluster, kafka=kafka, applier=LiveApplier(writer=cluster), clock=clock)
    store = FakeStateStore()
    runner = ActionRunner(
        store=store, recorder=recorder, clock=clock, catalog=CATALOG, executors={NODE_RESCHEDULE: executor}
    )
    cycle = RuleCycle(
        inventory=Inventory(cluster=cluster, prometheus=FakePrometheus()),
        store=store,
        runner=runner,
        recorder=recorder,
        clock=clock,
        catalog=CATALOG,
    )

    await cycle(RULE)
    await asyncio.gather(*runner.running.values())

    assert cluster.pods["kafka/kafka-1"].node == "worker-2"
    assert cluster.nodes["worker-1"].unschedulable
    assert cluster.nodes["worker-1"].annotations[CORDONED_BY] == RULE.name

    cluster.nodes["worker-1"].ready = "True"
    cluster.leases["worker-1"] = clock.now()
    await cycle(RULE)

    assert not cluster.nodes["worker-1"].unschedulable
    assert cluster.nodes["worker-1"].annotations == {}
    undone = [r for r in records if r["event"] == "action-verified" and r["after"] == "the agent's own marks undone"]
    assert [r["object"] for r in undone] == ["worker-1"]
    assert undone[0]["mutations"] == [
        f"uncordon on Node worker-1 (the agent's own, marked {CORDONED_BY}, kafka-autopilot.io/moving-brokers)"
    ]
