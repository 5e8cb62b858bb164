"""Preferred-leader election against a real KRaft cluster (controller + brokers 0-3, no Kubernetes).

The brokers run with auto.leader.rebalance.enable=false, so a broker stopped and started again
leads nothing until someone elects. Each test makes that imbalance for real, then elects through
`KafkaAdmin.elect_preferred_leaders` (once per ElectLeaders version the brokers accept, forced) or
through the executor, and reads the outcome from Kafka's metadata. The tests run in file order on
one cluster and leave every partition of the topic led by its preferred replica.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import cast

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from elect_metrics import elect_requests

from agent.actions.base import OutcomeKind
from agent.actions.leader_rebalance.executor import LeaderRebalanceExecutor
from agent.actions.leader_rebalance.spec import LEADER_REBALANCE, LeaderRebalanceParams
from agent.actions.mutations import ClusterWriter, DryRunApplier, ElectPreferredLeaders, LiveApplier, Mutation
from agent.actions.registry import CATALOG
from agent.adapters.clock import WallClock
from agent.adapters.kafka import KafkaAdmin, KafkaResponseError, KafkaSettings, KafkaUnavailableError
from agent.adapters.kafka.elect import ElectLeadersRequest
from agent.core.elections import ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE
from agent.core.engine import PlannedAction
from agent.core.kafka_safety import ClusterView, PartitionState, preferred_leader_candidates
from agent.core.loader import parse_rules
from agent.core.matching import TargetObject, broker_object
from sandbox.kafka import KafkaCluster

TOPIC = "elect-me"
PARTITIONS = 8
# Partition n prefers broker n % 4: each broker is the preferred leader of two partitions.
ASSIGNMENT = {n: [n % 4, (n + 1) % 4, (n + 2) % 4] for n in range(PARTITIONS)}

REBALANCE_RULE_FILE = Path(__file__).resolve().parents[2] / "rules" / "kafka-leader-rebalance.yaml"
(REBALANCE_RULE,) = parse_rules(REBALANCE_RULE_FILE.read_text(), file=str(REBALANCE_RULE_FILE), catalog=CATALOG).rules


@pytest.fixture
async def kafka(kafka_cluster: KafkaCluster) -> AsyncIterator[KafkaAdmin]:
    async with KafkaAdmin(settings=KafkaSettings(bootstrap_servers=kafka_cluster.bootstrap_servers)) as admin:
        yield admin


def of_topic(view: ClusterView) -> list[PartitionState]:
    return [p for p in view.partitions if p.topic == TOPIC]


def balanced(view: ClusterView) -> bool:
    partitions = of_topic(view)
    return len(partitions) == PARTITIONS and all(p.leader == p.preferred_leader for p in partitions)


def in_sync(view: ClusterView) -> bool:
    partitions = of_topic(view)
    return len(partitions) == PARTITIONS and all(set(p.isr) == set(p.replicas) for p in partitions)


async def wait_for_view(
    kafka: KafkaAdmin, condition: Callable[[ClusterView], bool], *, what: str, timeout_seconds: float = 90.0
) -> ClusterView:
    started = time.monotonic()
    view: ClusterView | None = None
    while True:
        try:
            view = await kafka.cluster_view()
        except (KafkaUnavailableError, KafkaResponseError):  # a broker just went or came back: ask again
            view = None
        if view is not None and condition(view):
            return view
        assert time.monotonic() - started < timeout_seconds, f"not {what} after {timeout_seconds:.0f}s: {view}"
        await asyncio.sleep(0.5)


async def restart_for_imbalance(kafka: KafkaAdmin, cluster: KafkaCluster, broker: int) -> ClusterView:
    """Stop and start `broker`; return the view once it is back in every ISR but leads nothing it prefers."""
    await asyncio.to_thread(cluster.stop_broker, broker)
    await wait_for_view(
        kafka, lambda v: all(p.leader != broker for p in of_topic(v)), what=f"leadership off broker {broker}"
    )
    await asyncio.to_thread(cluster.start_broker, broker)
    view = await wait_for_view(kafka, in_sync, what=f"broker {broker} back in every ISR")
    away = [p.name for p in of_topic(view) if p.preferred_leader == broker and p.leader != broker]
    assert len(away) == 2, f"expected broker {broker}'s two preferred partitions led elsewhere: {of_topic(view)}"
    return view


async def test_the_topic_is_created_with_known_preferred_replicas(kafka_cluster: KafkaCluster) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_cluster.bootstrap_servers, request_timeout_ms=10000)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name=TOPIC, num_partitions=-1, replication_factor=-1, replica_assignments=ASSIGNMENT)]
        )
    finally:
        await admin.close()
    async with KafkaAdmin(settings=KafkaSettings(bootstrap_servers=kafka_cluster.bootstrap_servers)) as kafka:
        view = await wait_for_view(kafka, lambda v: balanced(v) and in_sync(v), what="the new topic led and in sync")
    assert {p.partition: list(p.replicas) for p in of_topic(view)} == ASSIGNMENT


async def test_the_brokers_accept_every_implemented_version(kafka: KafkaAdmin) -> None:
    versions = await kafka.elect_leaders_versions()
    print(f"ElectLeaders versions offered by the broker and spoken by the agent: {versions}")
    assert versions == (0, 1, 2)


@pytest.mark.parametrize(("version", "broker"), [(0, 1), (1, 2), (2, 3)])
async def test_each_version_elects_the_preferred_leaders(
    kafka: KafkaAdmin, kafka_cluster: KafkaCluster, version: int, broker: int
) -> None:
    view = await restart_for_imbalance(kafka, kafka_cluster, broker)
    candidates = [key for key in preferred_leader_candidates(view) if key[0] == TOPIC]
    assert candidates == [(TOPIC, broker), (TOPIC, broker + 4)]
    already_led = (TOPIC, (broker + 1) % 4)

    results = await kafka.elect_preferred_leaders([*candidates, already_led], version=version)

    assert kafka.last_election_version == version
    assert [(r.topic, r.partition) for r in results] == [*candidates, already_led]
    assert [r.error_code for r in results] == [0, 0, ELECTION_NOT_NEEDED], [r.describe() for r in results]
    assert all(r.done for r in results)
    after = await wait_for_view(kafka, balanced, what="every partition led by its first replica")
    assert {p.partition: p.leader for p in of_topic(after)} == {n: n % 4 for n in range(PARTITIONS)}


async def test_a_preferred_replica_out_of_the_isr_is_not_elected(
    kafka: KafkaAdmin, kafka_cluster: KafkaCluster
) -> None:
    stopped = 3
    await asyncio.to_thread(kafka_cluster.stop_broker, stopped)
    try:
        view = await wait_for_view(
            kafka,
            lambda v: stopped not in v.brokers_registered and all(stopped not in p.isr for p in of_topic(v)),
            what=f"broker {stopped} fenced and out of every ISR",
        )
        assert preferred_leader_candidates(view, broker_id=stopped) == []
        asked = [(TOPIC, 3), (TOPIC, 7), (TOPIC, 0)]

        results = await kafka.elect_preferred_leaders(asked)

        codes = {(r.topic, r.partition): r.error_code for r in results}
        assert codes == {
            (TOPIC, 3): PREFERRED_LEADER_NOT_AVAILABLE,
            (TOPIC, 7): PREFERRED_LEADER_NOT_AVAILABLE,
            (TOPIC, 0): ELECTION_NOT_NEEDED,
        }, [r.describe() for r in results]
        assert [r.done for r in results] == [False, False, True]
        after = await kafka.cluster_view(topics=[TOPIC])
        leaders = {p.partition: p.leader for p in of_topic(view)}
        assert {p.partition: p.leader for p in after.partitions} == leaders
        assert all(p.leader != stopped for p in after.partitions)

        planned, target = planned_for(stopped)
        executor = LeaderRebalanceExecutor(
            kafka=kafka, applier=LiveApplier(writer=cast(ClusterWriter, None), kafka=kafka), clock=WallClock()
        )
        held = await executor.run(planned=planned, target=target, params=LeaderRebalanceParams(), rule=REBALANCE_RULE)
        assert held.kind is OutcomeKind.HELD and held.mutations == (), held
        assert f"{TOPIC}-3, {TOPIC}-7" in held.reason, held.reason
    finally:
        await asyncio.to_thread(kafka_cluster.start_broker, stopped)
    await wait_for_view(kafka, in_sync, what=f"broker {stopped} back in every ISR")
    await kafka.elect_preferred_leaders([(TOPIC, 3), (TOPIC, 7)])
    await wait_for_view(kafka, balanced, what="balanced again")


async def test_an_unknown_partition_is_reported_alone(kafka: KafkaAdmin) -> None:
    results = await kafka.elect_preferred_leaders([("no-such-topic", 0), (TOPIC, 1)])
    assert [r.describe().split(" (")[0] for r in results] == [
        "no-such-topic-0: UNKNOWN_TOPIC_OR_PARTITION",
        f"{TOPIC}-1: ELECTION_NOT_NEEDED",
    ]


def test_a_version_outside_the_specs_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(ValueError, match="ElectLeaders v3 is not implemented"):
        ElectLeadersRequest(partitions=[(TOPIC, 0)], timeout_ms=1000, version=3)


def planned_for(broker: int) -> tuple[PlannedAction, TargetObject]:
    target = broker_object(namespace="kafka", pod=f"kafka-{broker}", broker_id=broker, labels={})
    planned = PlannedAction(
        rule="kafka-leader-rebalance",
        object=target.key,
        action=LEADER_REBALANCE,
        before="leads fewer partitions than it is preferred for",
        after="preferred leadership restored",
        at=time.time(),
    )
    return planned, target


async def test_the_executor_plans_in_dry_run_and_elects_in_batches_live(
    kafka: KafkaAdmin, kafka_cluster: KafkaCluster
) -> None:
    broker = 0
    before = await restart_for_imbalance(kafka, kafka_cluster, broker)
    planned, target = planned_for(broker)
    params = LeaderRebalanceParams(batch_size=1, timeout_seconds=60)
    recorded: list[Mutation] = []

    dry = LeaderRebalanceExecutor(kafka=kafka, applier=DryRunApplier(record=recorded.append), clock=WallClock())
    outcome = await dry.run(planned=planned, target=target, params=params, rule=REBALANCE_RULE)

    assert outcome.kind is OutcomeKind.DRY_RUN, outcome
    # __consumer_offsets may exist too; only partitions preferring broker 0 are planned, one per batch.
    elected = [m.partitions for m in recorded if isinstance(m, ElectPreferredLeaders)]
    assert all(len(batch) == 1 for batch in elected)
    assert [batch[0] for batch in elected] == preferred_leader_candidates(before, broker_id=broker)
    assert {(TOPIC, 0), (TOPIC, 4)} <= {batch[0] for batch in elected}
    unchanged = await kafka.cluster_view(topics=[TOPIC])
    assert {p.partition: p.leader for p in unchanged.partitions} == {p.partition: p.leader for p in of_topic(before)}

    # No Kubernetes in this module: an ElectPreferredLeaders mutation never reaches the cluster writer.
    live_applier = LiveApplier(writer=cast(ClusterWriter, None), kafka=kafka)
    live = LeaderRebalanceExecutor(kafka=kafka, applier=live_applier, clock=WallClock())
    outcome = await live.run(planned=planned, target=target, params=params, rule=REBALANCE_RULE)

    assert outcome.kind is OutcomeKind.VERIFIED, outcome
    assert len(outcome.mutations) == len(elected)
    # The executor verified on one broker's metadata; the next view may come from another broker,
    # a moment behind: balanced within seconds, and the failure message names the partition that is not.
    await wait_for_view(kafka, balanced, what="every partition led by its first replica", timeout_seconds=15)

    again = await live.run(planned=planned, target=target, params=params, rule=REBALANCE_RULE)
    assert again.kind is OutcomeKind.VERIFIED and again.mutations == ()
    assert again.reason.startswith("nothing to elect: broker 0 leads every partition")


def test_the_brokers_exporters_count_the_elect_leaders_requests(kafka_cluster: KafkaCluster) -> None:
    # The last test sent one request per batch, at the version negotiated (v2), after broker 0's restart.
    counts = elect_requests(kafka_cluster)
    print(f"ElectLeaders requests per (broker, version): {counts}")
    assert sum(value for (_, version), value in counts.items() if version == "2") >= 2
