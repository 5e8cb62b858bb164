"""VolumeResizeExecutor on a fake cluster and a fake clock: plan, apply, verify, and every way out.

The world: PVC kafka/data-kafka-0 of 400Gi in an expandable StorageClass; the reference rule
(scalepercentage 100, maxsize 1Ti) plans 400Gi -> 800Gi.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fakes import (
    CrashingApplier,
    FakeClock,
    FakeCluster,
    FakePvc,
    RecordingApplier,
    SimulatedCrash,
)
from helpers import REFERENCE_RULE
from shell_support import WALL_BUDGET_SECONDS, load_rule, params, plan, wall_time

from agent.actions.base import Outcome, OutcomeKind
from agent.actions.mutations import Applier, LiveApplier, ResizePvc
from agent.actions.volume_resize.executor import IN_FLIGHT_ANNOTATION, VolumeResizeExecutor
from agent.adapters.errors import KubeError
from agent.adapters.kubernetes import OwnerReference
from agent.core.engine import DeclinedAction, PlannedAction, plan_actions
from agent.core.matching import TargetObject, pvc_object
from agent.core.quantity import GIB

RULE = load_rule(REFERENCE_RULE)
KEY = "kafka/data-kafka-0"
PATCH = "patch PersistentVolumeClaim kafka/data-kafka-0: request 800Gi"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cluster(clock: FakeClock) -> FakeCluster:
    cluster = FakeCluster(clock=clock)
    cluster.add_storage_class("expandable", expandable=True)
    cluster.add_storage_class("fixed", expandable=False)
    cluster.add_pvc(FakePvc(namespace="kafka", name="data-kafka-0", requested_bytes=400 * GIB, labels={"app": "kafka"}))
    return cluster


def target_of(cluster: FakeCluster) -> TargetObject:
    """The PVC as the agent's inventory makes it a TargetObject."""
    pvc = cluster.pvcs[KEY]
    return pvc_object(
        namespace=pvc.namespace,
        name=pvc.name,
        labels=pvc.labels,
        capacity_bytes=pvc.capacity_bytes or pvc.requested_bytes,
    )


def planned_for(cluster: FakeCluster, clock: FakeClock) -> PlannedAction:
    return plan(RULE, target_of(cluster), now=clock.now())


async def run(cluster: FakeCluster, clock: FakeClock, *, applier: Applier | None = None) -> Outcome:
    planned = planned_for(cluster, clock)
    return await execute(cluster, clock, planned, applier=applier)


async def execute(
    cluster: FakeCluster, clock: FakeClock, planned: PlannedAction, *, applier: Applier | None = None
) -> Outcome:
    executor = VolumeResizeExecutor(reader=cluster, applier=applier or LiveApplier(writer=cluster), clock=clock)
    target = pvc_object(namespace="kafka", name="data-kafka-0", labels={"app": "kafka"}, capacity_bytes=400 * GIB)
    return await executor.run(planned=planned, target=target, params=params(RULE), rule=RULE)


async def test_resize_is_applied_once_and_verified_when_the_capacity_follows(
    cluster: FakeCluster, clock: FakeClock
) -> None:
    cluster.pvcs[KEY].grows_after_sleeps = 3

    outcome = await run(cluster, clock)

    assert outcome == Outcome(kind=OutcomeKind.VERIFIED, reason="capacity reached 800Gi", mutations=(PATCH,))
    pvc = cluster.pvcs[KEY]
    assert (pvc.requested_bytes, pvc.capacity_bytes) == (800 * GIB, 800 * GIB)
    assert pvc.annotations[IN_FLIGHT_ANNOTATION] == "800Gi"
    assert cluster.writes == [("resize_pvc", KEY)]
    assert clock.sleeps == [1.0, 1.0, 1.0]


async def test_a_claim_already_at_the_target_is_only_verified(cluster: FakeCluster, clock: FakeClock) -> None:
    planned = planned_for(cluster, clock)
    cluster.pvcs[KEY].requested_bytes = cluster.pvcs[KEY].capacity_bytes = 800 * GIB  # someone else resized it

    outcome = await execute(cluster, clock, planned)

    assert (outcome.kind, outcome.mutations) == (OutcomeKind.VERIFIED, ())
    assert cluster.writes == []


async def test_dry_run_records_the_patch_and_changes_nothing(cluster: FakeCluster, clock: FakeClock) -> None:
    applier = RecordingApplier()

    outcome = await run(cluster, clock, applier=applier)

    assert outcome == Outcome(kind=OutcomeKind.DRY_RUN, reason="dry-run: recorded, nothing changed", mutations=(PATCH,))
    assert applier.recorded == [
        ResizePvc(
            namespace="kafka", name="data-kafka-0", new_bytes=800 * GIB, annotations={IN_FLIGHT_ANNOTATION: "800Gi"}
        )
    ]
    assert cluster.writes == []
    assert (cluster.pvcs[KEY].requested_bytes, cluster.pvcs[KEY].annotations) == (400 * GIB, {})
    assert clock.sleeps == []


def without_expansion(pvc: FakePvc) -> None:
    pvc.storage_class = "fixed"


def class_missing(pvc: FakePvc) -> None:
    pvc.storage_class = "missing"


def no_class(pvc: FakePvc) -> None:
    pvc.storage_class = None


def owned_by_a_node_pool_without_labels(pvc: FakePvc) -> None:
    pvc.owner_references = (OwnerReference(kind="KafkaNodePool", name="brokers", controller=True),)


def labelled_by_strimzi_but_not_named_by_it(pvc: FakePvc) -> None:
    pvc.labels["strimzi.io/cluster"] = "my-cluster"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (without_expansion, "StorageClass fixed does not allow volume expansion"),
        (class_missing, "StorageClass missing does not allow volume expansion"),
        (no_class, "StorageClass (none) does not allow volume expansion"),
        (
            owned_by_a_node_pool_without_labels,
            "owned by KafkaNodePool/brokers but has no strimzi.io/cluster label: its cluster is unknown",
        ),
        (
            labelled_by_strimzi_but_not_named_by_it,
            "a Strimzi claim of cluster my-cluster whose name is not Strimzi's",
        ),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
async def test_declined_without_touching_the_claim(
    cluster: FakeCluster, clock: FakeClock, change: Callable[[FakePvc], None], reason: str
) -> None:
    pvc = cluster.pvcs[KEY]
    change(pvc)

    outcome = await run(cluster, clock)

    assert outcome.kind is OutcomeKind.DECLINED
    assert outcome.reason.startswith(reason), outcome.reason
    assert (outcome.mutations, cluster.writes, pvc.requested_bytes) == ((), [], 400 * GIB)


def test_at_maxsize_the_planner_declines_so_no_executor_runs(cluster: FakeCluster, clock: FakeClock) -> None:
    cluster.pvcs[KEY].requested_bytes = cluster.pvcs[KEY].capacity_bytes = 1024 * GIB

    declined = plan_actions(rule=RULE, target=target_of(cluster), now=clock.now())

    assert isinstance(declined, DeclinedAction)
    assert (declined.code, declined.reason) == ("AtMaxSize", "at maxsize 1Ti (current 1Ti)")


async def test_held_when_the_request_changed_since_planning(cluster: FakeCluster, clock: FakeClock) -> None:
    planned = planned_for(cluster, clock)
    cluster.pvcs[KEY].requested_bytes = 600 * GIB  # grown by someone else, still short of the plan

    outcome = await execute(cluster, clock, planned)

    assert outcome.kind is OutcomeKind.HELD
    assert outcome.reason == "the request changed since planning (600Gi); planning again next cycle"
    assert cluster.writes == []


async def test_failed_when_the_capacity_never_follows_within_the_verify_timeout(
    cluster: FakeCluster, clock: FakeClock
) -> None:
    cluster.pvcs[KEY].grows_after_sleeps = None
    started = clock.now()

    with wall_time() as took:
        outcome = await run(cluster, clock)

    assert outcome == Outcome(
        kind=OutcomeKind.FAILED,
        reason="not verified within 300s: status capacity 400Gi, waiting for 800Gi",
        mutations=(PATCH,),
    )
    assert clock.now() - started == 300.0
    assert took.seconds < WALL_BUDGET_SECONDS
    assert cluster.writes == [("resize_pvc", KEY)]


async def test_a_failing_patch_raises_and_leaves_the_claim_as_it_was(cluster: FakeCluster, clock: FakeClock) -> None:
    refused = KubeError(
        "503",
        temporary=True,
        retry_after=1,
        server="fake",
        verb="PATCH",
        resource="persistentvolumeclaims",
        status=503,
    )
    cluster.failures.fail("resize_pvc", refused)

    with pytest.raises(KubeError):
        await run(cluster, clock)

    assert cluster.pvcs[KEY].requested_bytes == 400 * GIB
    assert clock.sleeps == []


async def test_failed_when_the_claim_is_gone(cluster: FakeCluster, clock: FakeClock) -> None:
    planned = planned_for(cluster, clock)
    del cluster.pvcs[KEY]

    outcome = await execute(cluster, clock, planned)

    assert outcome == Outcome(
        kind=OutcomeKind.FAILED, reason="PersistentVolumeClaim kafka/data-kafka-0 no longer exists"
    )
    assert cluster.writes == []


@pytest.mark.parametrize("grown_before_restart", [False, True], ids=["still-growing", "already-grown"])
async def test_resumed_after_a_crash_right_after_the_patch_it_verifies_without_patching_again(
    cluster: FakeCluster, clock: FakeClock, grown_before_restart: bool
) -> None:
    cluster.pvcs[KEY].grows_after_sleeps = 0 if grown_before_restart else 2
    planned = planned_for(cluster, clock)
    with pytest.raises(SimulatedCrash):
        await execute(
            cluster, clock, planned, applier=CrashingApplier(applier=LiveApplier(writer=cluster), crash_after=1)
        )
    assert cluster.pvcs[KEY].capacity_bytes == (800 * GIB if grown_before_restart else 400 * GIB)

    outcome = await execute(cluster, clock, planned)

    assert outcome == Outcome(kind=OutcomeKind.VERIFIED, reason="capacity reached 800Gi", mutations=())
    assert cluster.count("resize_pvc") == 1
    assert clock.sleeps == ([] if grown_before_restart else [1.0, 1.0])
