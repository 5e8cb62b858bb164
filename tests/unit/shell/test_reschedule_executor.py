"""NodeRescheduleExecutor on a fake cluster, a fake Kafka and a fake clock: the destructive action,
each guardrail, and a restart at each step.

The world: node worker-1 failed (Ready Unknown, its Lease last renewed 120 s ago) and runs broker
pod kafka/kafka-1 (10.0.0.11, which Kafka lists as broker 1's address), a neighbour of another app
with its own claim and VolumeAttachment (csi-3), and a DaemonSet pod; worker-2 is Ready.
VolumeAttachment csi-1 (kafka-1's volume) is on worker-1, csi-2 on worker-2. Kafka has fenced
broker 1: brokers 0 and 2 are registered and hold the ISR. The StatefulSet brings a deleted pod back
on worker-2, Pending, Running 2 sleeps later, when its broker registers again.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest
from fakes import (
    CrashingApplier,
    FakeClock,
    FakeCluster,
    FakeEvents,
    FakeKafka,
    FakeNode,
    FakePod,
    FakePvc,
    FakeStateStore,
    RecordingApplier,
    SimulatedCrash,
)
from shell_support import WALL_BUDGET_SECONDS, load_rule, params, plan, wall_time

from agent.actions.base import Outcome, OutcomeKind
from agent.actions.mutations import Applier, CordonNode, DeleteVolumeAttachment, ForceDeletePod, LiveApplier
from agent.actions.node_reschedule.executor import CORDONED_BY, OUT_OF_SERVICE_TAINT, NodeRescheduleExecutor
from agent.actions.registry import CATALOG
from agent.adapters.kubernetes import ConflictError, Taint
from agent.audit.trail import AuditRecord, AuditTrail
from agent.core.engine import PlannedAction
from agent.core.kafka_safety import ClusterView
from agent.core.matching import node_object
from agent.core.quantity import GIB
from agent.core.rules import Rule
from agent.runtime.recorder import Recorder
from agent.runtime.runner import ActionRunner
from agent.runtime.telemetry import Telemetry

RULE_TEXT = """\
apiVersion: kafka-autopilot.io/v1alpha1
kind: AutopilotRule
metadata:
  name: kafka-node-failure
spec:
  conditions:
    provider: kubernetes
    expressions:
      - key: NodeReady
        operator: Lt
        values: ["1"]
  actions:
    - name: kafka-autopilot.io.action.node/cordon-reschedule
      params:
        grace: "40"
        mode: MODE
        brokerlabel: app=kafka
"""
FORCE_DELETE = load_rule(RULE_TEXT.replace("MODE", "force-delete"))
TAINT = load_rule(RULE_TEXT.replace("MODE", "out-of-service-taint"))
TARGET = node_object(name="worker-1", labels={})
BROKER = "kafka/kafka-1"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cluster(clock: FakeClock) -> FakeCluster:
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
    cluster.add_pod(
        FakePod(
            namespace="kafka",
            name="exporter-0",
            node="worker-1",
            labels={"app": "exporter"},
            ips=("10.0.0.12",),
            claims=("cache-exporter-0",),
        )
    )
    cluster.add_pod(FakePod(namespace="kube-system", name="node-agent-x1", node="worker-1", labels={"app": "agent"}))
    cluster.add_pvc(FakePvc(namespace="kafka", name="data-kafka-1", requested_bytes=GIB))
    cluster.add_pvc(FakePvc(namespace="kafka", name="cache-exporter-0", requested_bytes=GIB))
    cluster.add_attachment("csi-1", node="worker-1", pv="pv-data-kafka-1")
    cluster.add_attachment("csi-2", node="worker-2", pv="pv-data-kafka-2")
    cluster.add_attachment("csi-3", node="worker-1", pv="pv-cache-exporter-0")
    cluster.reschedule_to = "worker-2"
    cluster.running_after_sleeps = 2
    return cluster


@pytest.fixture
def kafka(clock: FakeClock) -> FakeKafka:
    kafka = FakeKafka(clock=clock)
    kafka.registered = {0, 2}
    kafka.hosts = {0: "10.0.0.10", 1: "10.0.0.11", 2: "10.0.0.13"}
    kafka.add_partition("orders", 0, replicas=[1, 0, 2], leader=0, isr=[0, 2], min_insync=2)
    kafka.add_partition("orders", 1, replicas=[0, 2, 1], leader=2, isr=[0, 2], min_insync=2)
    return kafka


@pytest.fixture(autouse=True)
def brokers_register_when_running(cluster: FakeCluster, kafka: FakeKafka) -> None:
    def registered(pod: FakePod) -> None:
        kafka.registered.update(broker for broker, host in kafka.hosts.items() if host in pod.ips)

    cluster.on_running = registered


def planned(rule: Rule, clock: FakeClock) -> PlannedAction:
    return plan(rule, TARGET, now=clock.now())


async def execute(
    cluster: FakeCluster,
    kafka: FakeKafka | None,
    clock: FakeClock,
    *,
    rule: Rule = FORCE_DELETE,
    applier: Applier | None = None,
    action: PlannedAction | None = None,
) -> Outcome:
    executor = NodeRescheduleExecutor(
        reader=cluster, kafka=kafka, applier=applier or LiveApplier(writer=cluster), clock=clock
    )
    return await executor.run(planned=action or planned(rule, clock), target=TARGET, params=params(rule), rule=rule)


def force_delete_of(cluster: FakeCluster) -> str:
    pod = cluster.pods[BROKER]
    return ForceDeletePod(namespace=pod.namespace, name=pod.name, uid=pod.uid).describe()


async def test_force_delete_mode_cordons_moves_the_broker_and_frees_its_volume(
    cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock
) -> None:
    old_uid = cluster.pods[BROKER].uid
    deleted = force_delete_of(cluster)

    outcome = await execute(cluster, kafka, clock)

    assert outcome == Outcome(
        kind=OutcomeKind.VERIFIED,
        reason="kafka-1 Running on healthy nodes, broker 1 registered",
        mutations=("cordon Node worker-1", deleted, "delete VolumeAttachment csi-1"),
    )
    assert cluster.writes == [
        ("cordon_node", "worker-1"),
        ("force_delete_pod", BROKER),
        ("delete_volume_attachment", "csi-1"),
    ]
    moved = cluster.pods[BROKER]
    assert (moved.node, moved.phase) == ("worker-2", "Running")
    assert moved.uid != old_uid
    assert cluster.nodes["worker-1"].unschedulable
    assert cluster.nodes["worker-1"].annotations[CORDONED_BY] == "kafka-node-failure"
    assert set(cluster.attachments) == {"csi-2", "csi-3"}  # the neighbour's volume stays attached
    assert cluster.pods["kafka/exporter-0"].node == "worker-1"  # not a broker: left alone
    assert cluster.pods["kube-system/node-agent-x1"].node == "worker-1"
    assert clock.sleeps == [1.0, 1.0]


async def test_out_of_service_taint_mode_taints_once_instead_of_deleting_pods(
    cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock
) -> None:
    outcome = await execute(cluster, kafka, clock, rule=TAINT)

    assert outcome == Outcome(
        kind=OutcomeKind.VERIFIED,
        reason="kafka-1 Running on healthy nodes, broker 1 registered",
        mutations=(
            "cordon Node worker-1",
            f"taint Node worker-1 with {OUT_OF_SERVICE_TAINT}=nodeshutdown:NoExecute",
            "delete VolumeAttachment csi-1",
        ),
    )
    assert cluster.count("force_delete_pod") == 0
    assert cluster.nodes["worker-1"].taints == [
        Taint(key=OUT_OF_SERVICE_TAINT, value="nodeshutdown", effect="NoExecute")
    ]
    assert (cluster.pods[BROKER].node, cluster.pods[BROKER].phase) == ("worker-2", "Running")


async def test_dry_run_records_every_step_and_changes_nothing(
    cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock
) -> None:
    applier = RecordingApplier()
    pod = cluster.pods[BROKER]

    outcome = await execute(cluster, kafka, clock, applier=applier)

    assert outcome.kind is OutcomeKind.DRY_RUN
    assert applier.recorded == [
        CordonNode(name="worker-1", annotations=applier.recorded[0].annotations),  # type: ignore[union-attr]
        ForceDeletePod(namespace="kafka", name="kafka-1", uid=pod.uid),
        DeleteVolumeAttachment(name="csi-1"),
    ]
    assert outcome.mutations == tuple(mutation.describe() for mutation in applier.recorded)
    assert cluster.writes == []
    assert not cluster.nodes["worker-1"].unschedulable
    assert cluster.pods[BROKER] is pod
    assert set(cluster.attachments) == {"csi-1", "csi-2", "csi-3"}


def node_ready_again(cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock) -> None:
    cluster.nodes["worker-1"].ready = "True"


def lease_renewed_lately(cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock) -> None:
    cluster.leases["worker-1"] = clock.now() - 10


def node_deleted(cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock) -> None:
    del cluster.nodes["worker-1"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (node_ready_again, "nothing done: node worker-1 is Ready again"),
        (lease_renewed_lately, "nothing done: node worker-1's Lease was renewed 10s ago (grace 40s)"),
        (node_deleted, "nothing done: node worker-1 no longer exists"),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
async def test_held_before_any_step_while_the_node_is_not_gone(
    cluster: FakeCluster,
    kafka: FakeKafka,
    clock: FakeClock,
    change: Callable[[FakeCluster, FakeKafka, FakeClock], None],
    reason: str,
) -> None:
    change(cluster, kafka, clock)

    outcome = await execute(cluster, kafka, clock)

    assert outcome == Outcome(kind=OutcomeKind.HELD, reason=reason)
    assert cluster.writes == []


def still_registered(cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock) -> None:
    kafka.registered.add(1)
    kafka.partitions[("orders", 0)] = replace(kafka.partitions[("orders", 0)], isr=(1, 0, 2))


def leads_a_partition(cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock) -> None:
    kafka.partitions[("orders", 0)] = replace(kafka.partitions[("orders", 0)], leader=1, isr=(1, 0, 2))


@pytest.mark.parametrize(
    ("change", "alive"),
    [
        (still_registered, "broker 1: registered in cluster metadata, in the ISR of 1 partition"),
        (leads_a_partition, "broker 1: leads 1 partition, in the ISR of 1 partition"),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
async def test_held_before_any_change_while_kafka_still_sees_the_broker_alive(
    cluster: FakeCluster,
    kafka: FakeKafka,
    clock: FakeClock,
    change: Callable[[FakeCluster, FakeKafka, FakeClock], None],
    alive: str,
) -> None:
    change(cluster, kafka, clock)

    outcome = await execute(cluster, kafka, clock)

    assert outcome.kind is OutcomeKind.HELD
    assert outcome.reason.startswith(f"Kafka still sees the node's brokers alive ({alive}): a control-plane partition")
    assert outcome.mutations == ()
    assert cluster.writes == []
    assert not cluster.nodes["worker-1"].unschedulable


async def test_held_without_a_kafka_connection_nothing_is_force_deleted(cluster: FakeCluster, clock: FakeClock) -> None:
    outcome = await execute(cluster, None, clock)

    assert outcome == Outcome(
        kind=OutcomeKind.HELD,
        reason="no Kafka connection: cannot identify the node's brokers or confirm they are fenced",
    )
    assert cluster.writes == []


class NodeReturnsWhileKafkaIsAsked(FakeKafka):
    """The node's kubelet reports Ready again between the Kafka check and the pod deletion."""

    def __init__(self, *, clock: FakeClock, cluster: FakeCluster) -> None:
        super().__init__(clock=clock)
        self.cluster = cluster

    async def cluster_view(self, *, topics: Sequence[str] | None = None) -> ClusterView:
        self.cluster.nodes["worker-1"].ready = "True"
        return await super().cluster_view(topics=topics)


async def test_held_before_deleting_pods_when_the_node_returns_during_the_checks(
    cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock
) -> None:
    returning = NodeReturnsWhileKafkaIsAsked(clock=clock, cluster=cluster)
    returning.registered, returning.partitions, returning.hosts = kafka.registered, kafka.partitions, kafka.hosts

    outcome = await execute(cluster, returning, clock)

    assert outcome.kind is OutcomeKind.HELD
    assert outcome.reason == (
        "stopped before deleting pods: node worker-1 is Ready again; the agent's cordon and marks are undone"
    )
    assert outcome.mutations[0] == "cordon Node worker-1"
    assert outcome.mutations[1].startswith("uncordon on Node worker-1 (the agent's own, marked")
    assert cluster.count("force_delete_pod") == cluster.count("delete_volume_attachment") == 0
    assert not cluster.nodes["worker-1"].unschedulable
    assert cluster.nodes["worker-1"].annotations == {}


async def test_a_node_without_a_broker_is_left_as_it_is(
    cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock
) -> None:
    del cluster.pods[BROKER]

    outcome = await execute(cluster, kafka, clock)

    assert outcome == Outcome(kind=OutcomeKind.VERIFIED, reason="no Kafka broker pods on the node: nothing to do")
    assert cluster.writes == []


@pytest.mark.parametrize(
    ("comes_back", "gap"),
    [
        ((None, 0), "kafka-1 (not recreated yet)"),
        (("worker-2", None), "kafka-1 (on worker-2, Pending)"),
    ],
    ids=["never-recreated", "never-running"],
)
async def test_failed_when_the_broker_does_not_come_back_within_the_verify_timeout(
    cluster: FakeCluster,
    kafka: FakeKafka,
    clock: FakeClock,
    comes_back: tuple[str | None, int | None],
    gap: str,
) -> None:
    cluster.reschedule_to, cluster.running_after_sleeps = comes_back
    started = clock.now()

    with wall_time() as took:
        outcome = await execute(cluster, kafka, clock)

    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.reason == f"not verified within 180s: {gap}"
    assert len(outcome.mutations) == 3
    assert clock.now() - started == 180.0
    assert took.seconds < WALL_BUDGET_SECONDS


async def test_a_pod_recreated_under_the_same_name_is_not_deleted(
    cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock
) -> None:
    cluster.failures.fail(
        "force_delete_pod",
        ConflictError("uid precondition", server="fake", verb="DELETE", resource="pods", status=409),
    )

    with pytest.raises(ConflictError):
        await execute(cluster, kafka, clock)

    assert cluster.pods[BROKER].node == "worker-1"
    assert cluster.count("delete_volume_attachment") == 0


@pytest.mark.parametrize(
    "crash_after",
    [
        pytest.param(1, id="after-cordon"),
        pytest.param(2, id="after-force-delete"),
        pytest.param(3, id="after-volume-attachments"),
    ],
)
async def test_resumed_after_a_crash_it_finishes_the_steps_left_once_and_verifies(
    cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock, crash_after: int
) -> None:
    action = planned(FORCE_DELETE, clock)
    crashing = CrashingApplier(applier=LiveApplier(writer=cluster), crash_after=crash_after)
    with pytest.raises(SimulatedCrash):
        await execute(cluster, kafka, clock, applier=crashing, action=action)

    outcome = await execute(cluster, kafka, clock, action=action)

    assert set(cluster.attachments) == {"csi-2", "csi-3"}
    assert (cluster.pods[BROKER].node, cluster.pods[BROKER].phase) == ("worker-2", "Running")
    assert outcome.kind is OutcomeKind.VERIFIED
    assert outcome.reason == "kafka-1 Running on healthy nodes, broker 1 registered"
    assert cluster.count("cordon_node") == 1
    assert cluster.count("force_delete_pod") == 1
    assert cluster.count("delete_volume_attachment") == 1


# --- identity, the guard over every failing node, and the node's return ----------------------------------


async def test_a_broker_pod_whose_id_kafka_does_not_give_is_held_before_anything(
    cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock
) -> None:
    kafka.hosts[1] = "10.0.0.99"  # broker 1 advertises another address: this pod is not known to be it

    outcome = await execute(cluster, kafka, clock)

    assert outcome.kind is OutcomeKind.HELD
    assert outcome.reason == (
        "broker identity unknown, nothing done: kafka/kafka-1: no broker Kafka knows advertises this pod's"
        " address (10.0.0.11, kafka-1)"
    )
    assert cluster.writes == []


async def test_a_broker_pod_annotated_to_be_ignored_holds_the_whole_node(
    cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock
) -> None:
    cluster.pods[BROKER].annotations["kafka-autopilot.io/ignore"] = "true"

    outcome = await execute(cluster, kafka, clock)

    assert outcome.kind is OutcomeKind.HELD
    assert outcome.reason == 'kafka/kafka-1 annotated kafka-autopilot.io/ignore: "true": nothing done on the node'
    assert cluster.writes == []


async def test_a_rule_stated_id_that_kafka_contradicts_is_held(
    cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock
) -> None:
    stated = load_rule(
        RULE_TEXT.replace("MODE", "force-delete").replace("spec:\n", "spec:\n  brokerIdentity: {label: broker}\n", 1)
    )
    cluster.pods[BROKER].labels["broker"] = "5"

    outcome = await execute(cluster, kafka, clock, rule=stated)

    assert outcome.kind is OutcomeKind.HELD
    assert "label broker says broker 5, but Kafka advertises broker 1 (fenced) at 10.0.0.11:9092" in outcome.reason
    assert cluster.writes == []


async def test_without_brokerlabel_or_selector_only_the_pods_kafka_identifies_are_moved(
    cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock
) -> None:
    no_label = load_rule(RULE_TEXT.replace("MODE", "force-delete").replace("        brokerlabel: app=kafka\n", ""))

    outcome = await execute(cluster, kafka, clock, rule=no_label)

    assert outcome.kind is OutcomeKind.VERIFIED, outcome.reason
    assert [write for write in cluster.writes if write[0] == "force_delete_pod"] == [("force_delete_pod", BROKER)]
    assert cluster.pods["kafka/exporter-0"].node == "worker-1"
    assert cluster.pods["kube-system/node-agent-x1"].node == "worker-1"
    assert set(cluster.attachments) == {"csi-2", "csi-3"}


async def test_without_brokerlabel_or_selector_an_ambiguous_pod_on_the_node_holds(
    cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock
) -> None:
    no_label = load_rule(RULE_TEXT.replace("MODE", "force-delete").replace("        brokerlabel: app=kafka\n", ""))
    kafka.hosts[3] = "10.0.0.12"
    kafka.hosts[4] = "10.0.0.12"  # two brokers at the exporter's address: it may be a broker, so hold

    outcome = await execute(cluster, kafka, clock, rule=no_label)

    assert outcome.kind is OutcomeKind.HELD
    assert outcome.reason.startswith(
        "broker identity unknown, nothing done: kafka/exporter-0: Kafka lists brokers 3, 4"
    )
    assert cluster.writes == []


async def test_a_resumed_run_checks_a_recorded_broker_kafka_no_longer_lists_before_deleting_it(
    cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock
) -> None:
    action = planned(FORCE_DELETE, clock)
    with pytest.raises(SimulatedCrash):
        await execute(
            cluster,
            kafka,
            clock,
            applier=CrashingApplier(applier=LiveApplier(writer=cluster), crash_after=1),
            action=action,
        )
    assert cluster.nodes["worker-1"].unschedulable
    del kafka.hosts[1]  # Kafka no longer lists broker 1's address...
    kafka.registered.add(1)  # ...and sees it alive again: the recorded id must still be checked

    outcome = await execute(cluster, kafka, clock, action=action)

    assert outcome.kind is OutcomeKind.HELD
    assert outcome.reason.startswith("Kafka still sees the node's brokers alive (broker 1:")
    assert cluster.count("force_delete_pod") == 0


async def test_the_min_isr_guard_holds_when_a_second_node_fails_at_the_same_time(
    cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock
) -> None:
    cluster.add_node(FakeNode(name="worker-3", ready="Unknown"), lease_renewed=clock.now() - 120)
    cluster.add_pod(
        FakePod(namespace="kafka", name="kafka-2", node="worker-3", labels={"app": "kafka"}, ips=("10.0.0.13",))
    )
    # broker 2 still heartbeats from its failing node: registered and in the ISR, about to stop serving

    outcome = await execute(cluster, kafka, clock)

    assert outcome.kind is OutcomeKind.HELD
    assert outcome.reason == (
        "would act while partitions are below min.insync.replicas, counting every failing node: "
        "orders-0: with brokers [1,2] on failing nodes, 1 live in-sync replica [0] < min.insync.replicas 2; "
        "orders-1: with brokers [1,2] on failing nodes, 1 live in-sync replica [0] < min.insync.replicas 2"
    )
    assert cluster.writes == []


async def test_the_min_isr_guard_passes_a_single_node_failure(
    cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock
) -> None:
    cluster.add_node(FakeNode(name="worker-3"), lease_renewed=clock.now())
    cluster.add_pod(
        FakePod(namespace="kafka", name="kafka-2", node="worker-3", labels={"app": "kafka"}, ips=("10.0.0.13",))
    )

    outcome = await execute(cluster, kafka, clock)

    assert outcome.kind is OutcomeKind.VERIFIED, outcome.reason


def executor(
    cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock, applier: Applier | None = None
) -> NodeRescheduleExecutor:
    return NodeRescheduleExecutor(
        reader=cluster, kafka=kafka, applier=applier or LiveApplier(writer=cluster), clock=clock
    )


async def test_when_the_node_is_back_the_agent_undoes_only_its_own_cordon(
    cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock
) -> None:
    assert (await execute(cluster, kafka, clock)).kind is OutcomeKind.VERIFIED
    releasing = executor(cluster, kafka, clock)
    assert await releasing.release_recovered(rule=FORCE_DELETE, params=params(FORCE_DELETE)) == []
    cluster.nodes["worker-1"].ready = "True"
    cluster.leases["worker-1"] = clock.now()
    skipped = await releasing.release_recovered(rule=FORCE_DELETE, params=params(FORCE_DELETE), skip={"worker-1"})
    assert skipped == []
    [(node, released)] = await releasing.release_recovered(rule=FORCE_DELETE, params=params(FORCE_DELETE))

    assert node == "worker-1" and released.kind is OutcomeKind.VERIFIED
    assert released.reason == "node worker-1 is back: the agent's own cordon and marks undone"
    assert not cluster.nodes["worker-1"].unschedulable
    assert cluster.nodes["worker-1"].annotations == {}
    assert await releasing.release_recovered(rule=FORCE_DELETE, params=params(FORCE_DELETE)) == []


async def test_a_cordon_someone_else_made_is_never_undone(
    cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock
) -> None:
    cluster.nodes["worker-1"].unschedulable = True  # an admin cordoned it first

    assert (await execute(cluster, kafka, clock)).kind is OutcomeKind.VERIFIED
    assert ("cordon_node", "worker-1") not in cluster.writes
    cluster.nodes["worker-1"].ready = "True"
    cluster.leases["worker-1"] = clock.now()
    [(node, released)] = await executor(cluster, kafka, clock).release_recovered(
        rule=FORCE_DELETE,
        params=params(FORCE_DELETE),
    )

    assert node == "worker-1" and released.mutations[0].startswith("remove the agent's marks on Node worker-1")
    assert cluster.nodes["worker-1"].unschedulable  # the admin's cordon stays
    assert cluster.nodes["worker-1"].annotations == {}


async def test_the_taint_the_agent_added_goes_when_the_node_is_back(
    cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock
) -> None:
    assert (await execute(cluster, kafka, clock, rule=TAINT)).kind is OutcomeKind.VERIFIED
    cluster.nodes["worker-1"].ready = "True"
    cluster.leases["worker-1"] = clock.now()

    [(node, released)] = await executor(cluster, kafka, clock).release_recovered(
        rule=TAINT,
        params=params(TAINT),
    )

    assert node == "worker-1"
    assert released.mutations[0].startswith(f"uncordon and remove taint {OUT_OF_SERVICE_TAINT} on Node worker-1")
    assert cluster.nodes["worker-1"].taints == [] and not cluster.nodes["worker-1"].unschedulable


async def test_in_dry_run_the_release_is_recorded_and_nothing_changes(
    cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock
) -> None:
    assert (await execute(cluster, kafka, clock)).kind is OutcomeKind.VERIFIED
    cluster.nodes["worker-1"].ready = "True"
    cluster.leases["worker-1"] = clock.now()
    recording = RecordingApplier()

    [(node, released)] = await executor(cluster, kafka, clock, recording).release_recovered(
        rule=FORCE_DELETE,
        params=params(FORCE_DELETE),
    )

    assert node == "worker-1" and released.kind is OutcomeKind.DRY_RUN
    assert len(recording.recorded) == 1
    assert cluster.nodes["worker-1"].unschedulable


async def test_a_run_failing_partway_records_every_mutation_it_made(
    cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock
) -> None:
    """Cordon and force-delete done, then deleting the VolumeAttachment fails: the failed outcome the
    runner records still lists the cordon and the force-delete."""
    deleted = force_delete_of(cluster)
    cluster.failures.fail("delete_volume_attachment", ConnectionError("apiserver unreachable"))
    store = FakeStateStore()
    records: list[AuditRecord] = []
    recorder = Recorder(
        trail=AuditTrail(stream=io.StringIO(), listener=records.append),
        telemetry=Telemetry(),
        clock=clock,
        events=FakeEvents(),
    )
    executor = NodeRescheduleExecutor(reader=cluster, kafka=kafka, applier=LiveApplier(writer=cluster), clock=clock)
    runner = ActionRunner(
        store=store, recorder=recorder, clock=clock, catalog=CATALOG, executors={executor.action: executor}
    )

    await runner.execute(FORCE_DELETE, planned(FORCE_DELETE, clock), TARGET)

    (failed,) = [record for record in records if record["event"] == "action-failed"]
    assert failed["mutations"] == ["cordon Node worker-1", deleted]
    assert "ConnectionError: apiserver unreachable" in str(failed["reason"])
    stored = store.stored(FORCE_DELETE.name, TARGET.key).last_action
    assert stored is not None and stored.outcome == "failed"
