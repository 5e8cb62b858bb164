"""VolumeResizeExecutor on a Strimzi-owned PVC, on a fake cluster: the owner's storage grows, never the PVC.

The world: Kafka my-cluster with KafkaNodePool brokers (node ids 10-13, JBOD volume 0 of 400Gi) in
namespace kafka, and its four claims `data-0-my-cluster-brokers-<id>`, labelled and owned as Strimzi
makes them. A stand-in of the operator (`operator_follows`) grows every claim of the pool when the
pool's volume size grows, as Strimzi does; the reference rule (scalepercentage 100, maxsize 1Ti).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fakes import FakeClock, FakeCluster, FakePvc, RecordingApplier
from helpers import REFERENCE_RULE
from shell_support import load_rule, params, plan

from agent.actions.base import Outcome, OutcomeKind
from agent.actions.mutations import Applier, GrowOwnerStorage, LiveApplier
from agent.actions.volume_resize.executor import VolumeResizeExecutor
from agent.adapters.errors import ConflictError
from agent.adapters.kubernetes import OwnerReference
from agent.core.engine import DeclinedAction, plan_actions
from agent.core.matching import pvc_object
from agent.core.quantity import GIB, parse_bytes
from agent.runtime.inventory import grown_through

RULE = load_rule(REFERENCE_RULE)
NODE_IDS = (10, 11, 12, 13)
LABELS = {"strimzi.io/cluster": "my-cluster", "strimzi.io/pool-name": "brokers", "strimzi.io/kind": "Kafka"}
KAFKA_OWNER = (OwnerReference(kind="Kafka", name="my-cluster", controller=False),)
GROWS = "grows pool `brokers` volume 0 for 4 brokers"
PATCH_800 = f"patch KafkaNodePool kafka/brokers: volume 0 size 400Gi -> 800Gi ({GROWS})"


def claim_name(node_id: int, *, volume_id: int = 0) -> str:
    return f"data-{volume_id}-my-cluster-brokers-{node_id}"


def node_pool(*, size: str = "400Gi", volume_type: str = "persistent-claim") -> dict[str, Any]:
    return {
        "apiVersion": "kafka.strimzi.io/v1beta2",
        "kind": "KafkaNodePool",
        "metadata": {"name": "brokers", "namespace": "kafka", "labels": {"strimzi.io/cluster": "my-cluster"}},
        "spec": {
            "replicas": 4,
            "roles": ["broker"],
            "storage": {
                "type": "jbod",
                "volumes": [
                    {"id": 0, "type": volume_type, "size": size, "deleteClaim": True, "kraftMetadata": "shared"}
                ],
            },
        },
        "status": {"nodeIds": list(NODE_IDS)},
    }


def operator_follows(cluster: FakeCluster, clock: FakeClock, *, after_sleeps: int = 2) -> None:
    """Strimzi's part: a grown pool volume grows each claim's request, and its capacity `after_sleeps` later."""

    def follow(plural: str, obj: dict[str, Any]) -> None:
        if plural != "kafkanodepools":
            return
        for volume in obj["spec"]["storage"]["volumes"]:
            size = parse_bytes(volume["size"])
            for node_id in obj["status"]["nodeIds"]:
                pvc = cluster.pvcs[f"kafka/{claim_name(node_id, volume_id=volume['id'])}"]
                pvc.requested_bytes = max(pvc.requested_bytes or 0, size)

                def grown(pvc: FakePvc = pvc, size: int = size) -> None:
                    pvc.capacity_bytes = max(pvc.capacity_bytes or 0, size)

                clock.after_sleeps(after_sleeps, grown)

    cluster.on_custom_patch = follow


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cluster(clock: FakeClock) -> FakeCluster:
    cluster = FakeCluster(clock=clock)
    cluster.add_storage_class("expandable", expandable=True)
    for node_id in NODE_IDS:
        cluster.add_pvc(
            FakePvc(
                namespace="kafka",
                name=claim_name(node_id),
                requested_bytes=400 * GIB,
                labels=dict(LABELS),
                owner_references=KAFKA_OWNER,
            )
        )
    cluster.add_custom_object("kafkanodepools", node_pool())
    operator_follows(cluster, clock)
    return cluster


def target(cluster: FakeCluster, node_id: int = 10) -> Any:
    pvc = cluster.pvcs[f"kafka/{claim_name(node_id)}"]
    return pvc_object(
        namespace="kafka",
        name=pvc.name,
        labels=pvc.labels,
        capacity_bytes=pvc.capacity_bytes,
        annotations=pvc.annotations,
        grown_through=grown_through([c.info() for c in cluster.pvcs.values()]).get(("kafka", pvc.name)),
    )


async def run(cluster: FakeCluster, clock: FakeClock, *, node_id: int = 10, applier: Applier | None = None) -> Outcome:
    executor = VolumeResizeExecutor(
        reader=cluster, applier=applier or LiveApplier(writer=cluster), clock=clock, owners=cluster
    )
    claim = target(cluster, node_id)
    planned = plan(RULE, claim, now=clock.now())
    return await executor.run(planned=planned, target=claim, params=params(RULE), rule=RULE)


def pool_volume(cluster: FakeCluster) -> dict[str, Any]:
    volume: dict[str, Any] = cluster.custom_objects[("kafkanodepools", "kafka", "brokers")]["spec"]["storage"][
        "volumes"
    ][0]
    return volume


def test_the_preview_says_what_grows() -> None:
    cluster = FakeCluster()
    for node_id in NODE_IDS:
        cluster.add_pvc(FakePvc(namespace="kafka", name=claim_name(node_id), requested_bytes=400 * GIB, labels=LABELS))

    planned = plan(RULE, target(cluster), now=0.0)

    assert (planned.before, planned.after) == ("400Gi", f"800Gi, {GROWS}")


async def test_the_pool_grows_and_every_claim_of_it_is_verified_with_no_claim_patched(
    cluster: FakeCluster, clock: FakeClock
) -> None:
    outcome = await run(cluster, clock)

    assert outcome == Outcome(
        kind=OutcomeKind.VERIFIED, reason=f"capacity reached 800Gi on every claim: {GROWS}", mutations=(PATCH_800,)
    )
    assert cluster.writes == [("patch kafkanodepools", "kafka/brokers")]
    assert pool_volume(cluster) == {
        "id": 0,
        "type": "persistent-claim",
        "size": "800Gi",
        "deleteClaim": True,
        "kraftMetadata": "shared",
    }
    assert {pvc.capacity_bytes for pvc in cluster.pvcs.values()} == {800 * GIB}
    assert clock.sleeps == [1.0, 1.0]


async def test_a_second_claim_grows_the_pool_to_the_cap_then_a_third_is_at_maxsize(
    cluster: FakeCluster, clock: FakeClock
) -> None:
    await run(cluster, clock, node_id=10)

    outcome = await run(cluster, clock, node_id=11)

    assert outcome.kind is OutcomeKind.VERIFIED
    assert outcome.mutations == (f"patch KafkaNodePool kafka/brokers: volume 0 size 800Gi -> 1Ti ({GROWS})",)
    assert pool_volume(cluster)["size"] == "1Ti"
    assert {pvc.capacity_bytes for pvc in cluster.pvcs.values()} == {1024 * GIB}
    third = plan_actions(rule=RULE, target=target(cluster, 12), now=clock.now())
    assert isinstance(third, DeclinedAction)
    assert (third.code, third.reason) == ("AtMaxSize", "at maxsize 1Ti (current 1Ti)")


async def test_a_pool_already_larger_is_never_shrunk_only_verified(cluster: FakeCluster, clock: FakeClock) -> None:
    claim = target(cluster)
    planned = plan(RULE, claim, now=clock.now())
    pool_volume(cluster)["size"] = "1Ti"  # another claim's plan grew the pool further meanwhile
    for pvc in cluster.pvcs.values():
        pvc.requested_bytes = pvc.capacity_bytes = 1024 * GIB
    executor = VolumeResizeExecutor(reader=cluster, applier=LiveApplier(writer=cluster), clock=clock, owners=cluster)

    outcome = await executor.run(planned=planned, target=claim, params=params(RULE), rule=RULE)

    assert (outcome.kind, outcome.mutations, cluster.writes) == (OutcomeKind.VERIFIED, (), [])
    assert pool_volume(cluster)["size"] == "1Ti"


async def test_dry_run_records_the_owner_patch_and_changes_nothing(cluster: FakeCluster, clock: FakeClock) -> None:
    before = copy.deepcopy(cluster.custom_objects)
    applier = RecordingApplier()

    outcome = await run(cluster, clock, applier=applier)

    assert outcome == Outcome(
        kind=OutcomeKind.DRY_RUN, reason="dry-run: recorded, nothing changed", mutations=(PATCH_800,)
    )
    (recorded,) = applier.recorded
    assert isinstance(recorded, GrowOwnerStorage)
    assert (recorded.plural, recorded.namespace, recorded.name) == ("kafkanodepools", "kafka", "brokers")
    assert recorded.patch["metadata"] == {"resourceVersion": "1"}
    assert recorded.patch["spec"]["storage"]["volumes"][0]["size"] == "800Gi"
    assert (cluster.writes, cluster.custom_objects) == ([], before)
    assert {pvc.requested_bytes for pvc in cluster.pvcs.values()} == {400 * GIB}
    assert clock.sleeps == []


async def test_the_patch_is_refused_when_the_pool_changed_since_it_was_read(
    cluster: FakeCluster, clock: FakeClock
) -> None:
    pool = cluster.custom_objects[("kafkanodepools", "kafka", "brokers")]
    read = copy.deepcopy(pool)
    pool["metadata"]["resourceVersion"] = "7"  # someone wrote the pool after the executor read it

    class StaleOwners:
        async def get_custom_object(self, **_: Any) -> dict[str, Any]:
            return copy.deepcopy(read)

    executor = VolumeResizeExecutor(
        reader=cluster, applier=LiveApplier(writer=cluster), clock=clock, owners=StaleOwners()
    )
    claim = target(cluster)

    with pytest.raises(ConflictError, match="modified"):
        await executor.run(planned=plan(RULE, claim, now=clock.now()), target=claim, params=params(RULE), rule=RULE)

    assert pool_volume(cluster)["size"] == "400Gi"


def ephemeral(cluster: FakeCluster) -> None:
    cluster.custom_objects[("kafkanodepools", "kafka", "brokers")] = node_pool(volume_type="ephemeral")
    cluster.custom_objects[("kafkanodepools", "kafka", "brokers")]["metadata"]["resourceVersion"] = "1"


def volume_id_not_found(cluster: FakeCluster) -> None:
    pool_volume(cluster)["id"] = 1


def pool_missing(cluster: FakeCluster) -> None:
    del cluster.custom_objects[("kafkanodepools", "kafka", "brokers")]


def pool_ignored(cluster: FakeCluster) -> None:
    metadata = cluster.custom_objects[("kafkanodepools", "kafka", "brokers")]["metadata"]
    metadata["annotations"] = {"kafka-autopilot.io/ignore": "true"}


def pool_of_another_cluster(cluster: FakeCluster) -> None:
    metadata = cluster.custom_objects[("kafkanodepools", "kafka", "brokers")]["metadata"]
    metadata["labels"] = {"strimzi.io/cluster": "other"}


def owned_by_another_kafka(cluster: FakeCluster) -> None:
    cluster.pvcs[f"kafka/{claim_name(10)}"].owner_references = (
        OwnerReference(kind="Kafka", name="other", controller=False),
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (ephemeral, "KafkaNodePool kafka/brokers volume 0 is type: ephemeral: only persistent-claim volumes grow"),
        (volume_id_not_found, "JBOD volume id 0 is not found in KafkaNodePool kafka/brokers"),
        (pool_missing, "its owner KafkaNodePool kafka/brokers is not found: its size is unknown"),
        (pool_ignored, 'KafkaNodePool kafka/brokers is annotated kafka-autopilot.io/ignore: "true"'),
        (pool_of_another_cluster, "KafkaNodePool kafka/brokers is labelled strimzi.io/cluster=other, not my-cluster"),
        (owned_by_another_kafka, "owned by Kafka/other but labelled strimzi.io/cluster=my-cluster"),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
async def test_declined_with_the_reason_and_nothing_patched(
    cluster: FakeCluster, clock: FakeClock, change: Any, reason: str
) -> None:
    change(cluster)

    outcome = await run(cluster, clock)

    assert outcome.kind is OutcomeKind.DECLINED
    assert outcome.reason.startswith(reason), outcome.reason
    assert (outcome.mutations, cluster.writes) == ((), [])
    assert {pvc.requested_bytes for pvc in cluster.pvcs.values()} == {400 * GIB}


async def test_an_older_cluster_grows_the_kafka_resources_storage(clock: FakeClock) -> None:
    cluster = FakeCluster(clock=clock)
    cluster.add_storage_class("expandable", expandable=True)
    for n in range(3):
        cluster.add_pvc(
            FakePvc(
                namespace="kafka",
                name=f"data-my-cluster-kafka-{n}",
                requested_bytes=400 * GIB,
                labels={"strimzi.io/cluster": "my-cluster", "strimzi.io/name": "my-cluster-kafka"},
                owner_references=KAFKA_OWNER,
            )
        )
    kafka: dict[str, Any] = {
        "metadata": {"name": "my-cluster", "namespace": "kafka"},
        "spec": {"kafka": {"replicas": 3, "storage": {"type": "persistent-claim", "size": "400Gi"}}},
    }
    cluster.add_custom_object("kafkas", kafka)
    executor = VolumeResizeExecutor(reader=cluster, applier=RecordingApplier(), clock=clock, owners=cluster)
    pvc = cluster.pvcs["kafka/data-my-cluster-kafka-0"]
    claim = pvc_object(
        namespace="kafka",
        name=pvc.name,
        labels=pvc.labels,
        capacity_bytes=400 * GIB,
        grown_through=grown_through([c.info() for c in cluster.pvcs.values()]).get(("kafka", pvc.name)),
    )
    planned = plan(RULE, claim, now=clock.now())

    outcome = await executor.run(planned=planned, target=claim, params=params(RULE), rule=RULE)

    assert planned.after == "800Gi, grows Kafka `my-cluster` volume for 3 brokers"
    assert outcome.mutations == (
        "patch Kafka kafka/my-cluster: volume size 400Gi -> 800Gi (grows Kafka `my-cluster` volume for 3 brokers)",
    )
    (recorded,) = executor.applier.recorded  # type: ignore[attr-defined]
    assert recorded.patch["spec"] == {"kafka": {"storage": {"type": "persistent-claim", "size": "800Gi"}}}


async def test_an_older_cluster_with_node_pools_enabled_but_no_pool_label_is_declined(clock: FakeClock) -> None:
    cluster = FakeCluster(clock=clock)
    cluster.add_storage_class("expandable", expandable=True)
    cluster.add_pvc(
        FakePvc(
            namespace="kafka",
            name="data-my-cluster-kafka-0",
            requested_bytes=400 * GIB,
            labels={"strimzi.io/cluster": "my-cluster"},
        )
    )
    cluster.add_custom_object(
        "kafkas",
        {
            "metadata": {
                "name": "my-cluster",
                "namespace": "kafka",
                "annotations": {"strimzi.io/node-pools": "enabled"},
            },
            "spec": {"kafka": {"storage": {"type": "persistent-claim", "size": "400Gi"}}},
        },
    )
    executor = VolumeResizeExecutor(reader=cluster, applier=LiveApplier(writer=cluster), clock=clock, owners=cluster)
    claim = pvc_object(namespace="kafka", name="data-my-cluster-kafka-0", labels={}, capacity_bytes=400 * GIB)

    outcome = await executor.run(
        planned=plan(RULE, claim, now=clock.now()), target=claim, params=params(RULE), rule=RULE
    )

    assert outcome.kind is OutcomeKind.DECLINED
    assert "uses node pools but the claim has no strimzi.io/pool-name label" in outcome.reason
    assert cluster.writes == []
