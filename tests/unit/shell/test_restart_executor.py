"""BrokerRestartExecutor on a fake cluster, a fake Kafka and a fake clock: each check, the graceful delete
by uid, the verify, dry-run, and a restart of the agent at each step.

The world: broker pod kafka/kafka-1 (IP 10.0.0.11, where Kafka advertises broker 1) Running on worker-1;
brokers 0, 1 and 2 registered; orders-0 and orders-1 replicated on all three, fully in sync, with
min.insync.replicas 2. A deleted pod comes back on worker-1 (new uid), Running 2 sleeps later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from fakes import (
    CrashingApplier,
    FakeClock,
    FakeCluster,
    FakeKafka,
    FakePod,
    RecordingApplier,
    SimulatedCrash,
)
from shell_support import load_rule, params, plan

from agent.actions.base import Outcome, OutcomeKind
from agent.actions.broker_restart.executor import BrokerRestartExecutor
from agent.actions.broker_restart.spec import BrokerRestartParams, RestartDecision
from agent.actions.mutations import Applier, DeletePod, LiveApplier
from agent.actions.registry import CATALOG
from agent.core.engine import PlannedAction
from agent.core.inflight import decode_in_flight, encode_in_flight
from agent.core.matching import TargetObject, broker_object
from agent.core.rules import Rule

RULE = load_rule("""\
apiVersion: kafka-autopilot.io/v1alpha1
kind: AutopilotRule
metadata:
  name: kafka-under-replicated
spec:
  conditions:
    expressions:
      - keyAlias: UnderReplicatedPartitions
        operator: Gt
        values: ["0"]
  actions:
    - name: kafka-autopilot.io.action.broker/restart
      params:
        minisrmargin: "1"
        verifytimeout: "60"
""")
RULE_TEXT_WITH_MARGIN = """\
apiVersion: kafka-autopilot.io/v1alpha1
kind: AutopilotRule
metadata:
  name: kafka-under-replicated
spec:
  conditions:
    expressions:
      - keyAlias: UnderReplicatedPartitions
        operator: Gt
        values: ["0"]
  actions:
    - name: kafka-autopilot.io.action.broker/restart
      params:
        minisrmargin: "2"
"""
TARGET = broker_object(namespace="kafka", pod="kafka-1", broker_id=1, labels={"app": "kafka"})
POD = "kafka/kafka-1"
VERIFIED = "broker 1 restarted (kafka/kafka-1 Running again), registered and back in every ISR"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def kafka(clock: FakeClock) -> FakeKafka:
    kafka = FakeKafka(clock=clock)
    kafka.registered = {0, 1, 2}
    kafka.hosts = {b: f"10.0.0.1{b}" for b in (0, 1, 2)}
    kafka.add_partition("orders", 0, replicas=[0, 1, 2], leader=0, min_insync=2)
    kafka.add_partition("orders", 1, replicas=[1, 2, 0], leader=1, min_insync=2)
    return kafka


@pytest.fixture
def cluster(clock: FakeClock) -> FakeCluster:
    cluster = FakeCluster(clock=clock)
    cluster.add_pod(
        FakePod(namespace="kafka", name="kafka-1", node="worker-1", labels={"app": "kafka"}, ips=("10.0.0.11",))
    )
    cluster.reschedule_to = "worker-1"
    cluster.running_after_sleeps = 2
    return cluster


async def execute(
    cluster: FakeCluster,
    kafka: FakeKafka,
    clock: FakeClock,
    *,
    applier: Applier | None = None,
    action: PlannedAction | None = None,
    target: TargetObject | None = None,
    rule: Rule = RULE,
) -> Outcome:
    target = target or seen(cluster)
    executor = BrokerRestartExecutor(
        reader=cluster, kafka=kafka, applier=applier or LiveApplier(writer=cluster), clock=clock
    )
    return await executor.run(
        planned=action or plan(rule, target, now=clock.now()), target=target, params=params(rule), rule=rule
    )


def seen(cluster: FakeCluster) -> TargetObject:
    """The broker object as the inventory sees it now: with its pod's uid, which the plan keeps."""
    return replace(TARGET, uid=cluster.pods[POD].uid)


async def test_a_graceful_delete_by_uid_then_verified_when_back_registered_and_in_sync(
    cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock
) -> None:
    old_uid = cluster.pods[POD].uid
    action = plan(RULE, seen(cluster), now=clock.now())
    assert action.detail == RestartDecision(pod_uid=old_uid)

    outcome = await execute(cluster, kafka, clock, action=action)

    assert outcome == Outcome(
        kind=OutcomeKind.VERIFIED,
        reason=VERIFIED,
        mutations=(DeletePod(namespace="kafka", name="kafka-1", uid=old_uid).describe(),),
    )
    assert cluster.writes == [("delete_pod", POD)]
    assert cluster.count("force_delete_pod") == 0
    assert cluster.pods[POD].uid != old_uid and cluster.pods[POD].phase == "Running"
    assert params(RULE) == BrokerRestartParams(min_isr_margin=1, verify_timeout_seconds=60)


async def test_dry_run_records_the_delete_and_changes_nothing(
    cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock
) -> None:
    applier = RecordingApplier()
    pod = cluster.pods[POD]

    outcome = await execute(cluster, kafka, clock, applier=applier)

    assert outcome.kind is OutcomeKind.DRY_RUN
    assert applier.recorded == [DeletePod(namespace="kafka", name="kafka-1", uid=pod.uid)]
    assert outcome.mutations == (applier.recorded[0].describe(),)
    assert cluster.writes == []
    assert cluster.pods[POD] is pod


def pod_missing(cluster: FakeCluster, kafka: FakeKafka) -> None:
    del cluster.pods[POD]


async def test_a_pod_gone_before_the_run_is_waited_for_and_nothing_is_deleted(
    cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock
) -> None:
    """The plan names the pod by uid; a run that finds no pod cannot tell its own earlier delete (a
    resume) from someone else's, so it only waits for the broker to come back, and deletes nothing."""
    planned_on = seen(cluster)
    pod_missing(cluster, kafka)

    outcome = await execute(cluster, kafka, clock, target=planned_on)

    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.reason == "not verified within 60s: pod kafka/kafka-1 not recreated yet"
    assert cluster.writes == []


def pod_pending(cluster: FakeCluster, kafka: FakeKafka) -> None:
    cluster.pods[POD].phase = "Pending"


def pod_is_another_broker(cluster: FakeCluster, kafka: FakeKafka) -> None:
    cluster.pods[POD].ips = ("10.0.0.12",)


def pod_unknown_to_kafka(cluster: FakeCluster, kafka: FakeKafka) -> None:
    cluster.pods[POD].ips = ("10.9.9.9",)


def broker_fenced(cluster: FakeCluster, kafka: FakeKafka) -> None:
    kafka.registered.discard(1)


def a_partition_already_short(cluster: FakeCluster, kafka: FakeKafka) -> None:
    kafka.partitions[("orders", 1)] = replace(kafka.partitions[("orders", 1)], isr=(1, 2))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (pod_pending, "nothing restarted: pod is Pending, not Running"),
        (
            pod_is_another_broker,
            "nothing restarted: the pod is broker 2 (Kafka advertises broker 2 at 10.0.0.12:9092), not broker 1",
        ),
        (pod_unknown_to_kafka, "nothing restarted: cannot confirm the pod is broker 1: no broker Kafka knows"),
        (broker_fenced, "nothing restarted: Kafka does not list broker 1 as registered (fenced or gone)"),
        (
            a_partition_already_short,
            "nothing restarted: would leave partitions below min.insync.replicas: orders-1: ISR [1,2] minus [1] "
            "leaves 1 < min.insync.replicas 2",
        ),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
async def test_held_by_each_check_before_anything_changes(
    cluster: FakeCluster,
    kafka: FakeKafka,
    clock: FakeClock,
    change: Callable[[FakeCluster, FakeKafka], None],
    reason: str,
) -> None:
    planned_on = seen(cluster)  # the inventory saw the pod when the action was planned
    change(cluster, kafka)

    outcome = await execute(cluster, kafka, clock, target=planned_on)

    assert outcome.kind is OutcomeKind.HELD
    assert outcome.reason.startswith(reason), outcome.reason
    assert outcome.mutations == ()
    assert cluster.writes == []


async def test_a_margin_above_one_keeps_more_in_sync_replicas(
    cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock
) -> None:
    strict = load_rule(RULE_TEXT_WITH_MARGIN)

    outcome = await execute(cluster, kafka, clock, rule=strict)

    assert outcome.kind is OutcomeKind.HELD
    assert "orders-0: ISR [0,1,2] minus [1] leaves 2 < min.insync.replicas 2 + margin 1" in outcome.reason
    assert cluster.writes == []


async def test_held_for_a_broker_object_without_an_id(cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock) -> None:
    anonymous = replace(seen(cluster), identity={"namespace": "kafka", "pod": "kafka-1"})

    outcome = await execute(cluster, kafka, clock, target=anonymous)

    assert outcome == Outcome(kind=OutcomeKind.HELD, reason="kafka/kafka-1 carries no broker id: nothing restarted")
    assert cluster.writes == []


def never_recreated(cluster: FakeCluster, kafka: FakeKafka) -> None:
    cluster.reschedule_to = None


def never_running(cluster: FakeCluster, kafka: FakeKafka) -> None:
    cluster.running_after_sleeps = None


def never_registers(cluster: FakeCluster, kafka: FakeKafka) -> None:
    cluster.on_running = lambda pod: kafka.registered.discard(1)


def stays_out_of_an_isr(cluster: FakeCluster, kafka: FakeKafka) -> None:
    def out(pod: FakePod) -> None:
        kafka.partitions[("orders", 0)] = replace(kafka.partitions[("orders", 0)], isr=(0, 2))

    cluster.on_running = out


@pytest.mark.parametrize(
    ("change", "gap"),
    [
        (never_recreated, "pod kafka/kafka-1 not recreated yet"),
        (never_running, "pod kafka/kafka-1 is Pending"),
        (never_registers, "broker 1 not registered with Kafka yet"),
        (stays_out_of_an_isr, "broker 1 not yet back in the ISR of orders-0"),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
async def test_failed_when_the_broker_is_not_back_within_verifytimeout(
    cluster: FakeCluster,
    kafka: FakeKafka,
    clock: FakeClock,
    change: Callable[[FakeCluster, FakeKafka], None],
    gap: str,
) -> None:
    change(cluster, kafka)
    started = clock.now()

    outcome = await execute(cluster, kafka, clock)

    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.reason == f"not verified within 60s: {gap}"
    assert clock.now() - started == 60.0


def resumed_plan(action: PlannedAction, clock: FakeClock) -> PlannedAction:
    """The plan as a restarted agent reads it back from the in-flight record the runner stored."""
    record = {"action": action.action, **encode_in_flight(action)}
    resumed = decode_in_flight(record, rule=RULE, target=TARGET, now=clock.now(), catalog=CATALOG)
    assert resumed is not None
    return resumed


async def test_resumed_after_a_crash_after_the_delete_it_only_verifies(
    cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock
) -> None:
    action = plan(RULE, seen(cluster), now=clock.now())
    crashing = CrashingApplier(applier=LiveApplier(writer=cluster), crash_after=1)
    with pytest.raises(SimulatedCrash):
        await execute(cluster, kafka, clock, applier=crashing, action=action)
    resumed = resumed_plan(action, clock)
    assert isinstance(resumed.detail, RestartDecision)

    outcome = await execute(cluster, kafka, clock, action=resumed)

    assert outcome == Outcome(kind=OutcomeKind.VERIFIED, reason=VERIFIED)
    assert cluster.count("delete_pod") == 1


async def test_resumed_after_a_crash_before_the_delete_it_checks_and_deletes_once(
    cluster: FakeCluster, kafka: FakeKafka, clock: FakeClock
) -> None:
    action = plan(RULE, seen(cluster), now=clock.now())
    cluster.failures.fail("delete_pod", SimulatedCrash("crashed before the delete"))
    with pytest.raises(SimulatedCrash):
        await execute(cluster, kafka, clock, action=action)
    old_uid = cluster.pods[POD].uid

    outcome = await execute(cluster, kafka, clock, action=resumed_plan(action, clock))

    assert outcome.kind is OutcomeKind.VERIFIED
    assert cluster.writes == [("delete_pod", POD), ("delete_pod", POD)]  # the first one never got through
    assert cluster.pods[POD].uid != old_uid
