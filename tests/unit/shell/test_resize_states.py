"""What a PVC's status says of its resize (agent.core.resize_states), and the resize executor's verify
step acting on it: in progress with the storage's reason, done when the capacity arrives, failed at
once when the storage marks the resize infeasible."""

from __future__ import annotations

import pytest
import structlog
from fakes import FakeClock, FakeCluster, FakePvc
from helpers import REFERENCE_RULE
from shell_support import load_rule, params, plan

from agent.actions.base import Outcome, OutcomeKind
from agent.actions.mutations import LiveApplier
from agent.actions.volume_resize.executor import VolumeResizeExecutor
from agent.adapters.kubernetes import PvcCondition
from agent.core.matching import pvc_object
from agent.core.quantity import GIB
from agent.core.resize_states import ResizeState, storage_resize

RULE = load_rule(REFERENCE_RULE)
KEY = "kafka/data-kafka-0"
PATCH = "patch PersistentVolumeClaim kafka/data-kafka-0: request 800Gi"
FS_PENDING = PvcCondition(
    type="FileSystemResizePending",
    status="True",
    message="Waiting for user to (re-)start a pod to finish file system resize of volume on node.",
)
NODE_ERROR = PvcCondition(type="NodeResizeError", status="True", message="resize2fs: No space left on device")


@pytest.mark.parametrize(
    ("statuses", "conditions", "state"),
    [
        ({}, (), None),
        (
            {"storage": "ControllerResizeInProgress"},
            (),
            ResizeState(infeasible=False, reason="ControllerResizeInProgress"),
        ),
        ({"storage": "NodeResizePending"}, (), ResizeState(infeasible=False, reason="NodeResizePending")),
        ({"storage": "NodeResizeInProgress"}, (), ResizeState(infeasible=False, reason="NodeResizeInProgress")),
        ({}, (FS_PENDING,), ResizeState(infeasible=False, reason=f"FileSystemResizePending: {FS_PENDING.message}")),
        ({}, (PvcCondition(type="FileSystemResizePending", status="False"),), None),
        (
            {"storage": "NodeResizeInfeasible"},
            (NODE_ERROR,),
            ResizeState(infeasible=True, reason=f"NodeResizeInfeasible: {NODE_ERROR.message}"),
        ),
        (
            {"storage": "ControllerResizeInfeasible"},
            (),
            ResizeState(infeasible=True, reason="ControllerResizeInfeasible"),
        ),
    ],
)
def test_the_state_a_claims_status_reports(
    statuses: dict[str, str], conditions: tuple[PvcCondition, ...], state: ResizeState | None
) -> None:
    claim = FakePvc(
        namespace="kafka",
        name="data-kafka-0",
        requested_bytes=800 * GIB,
        capacity_bytes=400 * GIB,
        conditions=conditions,
        allocated_resource_statuses=statuses,
    )
    assert storage_resize(claim.info()) == state


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cluster(clock: FakeClock) -> FakeCluster:
    cluster = FakeCluster(clock=clock)
    cluster.add_storage_class("expandable", expandable=True)
    cluster.add_pvc(FakePvc(namespace="kafka", name="data-kafka-0", requested_bytes=400 * GIB, grows_after_sleeps=None))
    return cluster


async def run(cluster: FakeCluster, clock: FakeClock) -> Outcome:
    executor = VolumeResizeExecutor(
        reader=cluster, applier=LiveApplier(writer=cluster), clock=clock, verify_timeout_seconds=10
    )
    target = pvc_object(namespace="kafka", name="data-kafka-0", labels={}, capacity_bytes=400 * GIB)
    planned = plan(RULE, target, now=clock.now())
    return await executor.run(planned=planned, target=target, params=params(RULE), rule=RULE)


async def test_filesystem_resize_pending_is_in_progress_then_done_when_the_capacity_arrives(
    cluster: FakeCluster, clock: FakeClock
) -> None:
    pvc = cluster.pvcs[KEY]
    pvc.conditions = (FS_PENDING,)

    def filesystem_grown() -> None:
        pvc.conditions = ()
        pvc.capacity_bytes = 800 * GIB

    clock.after_sleeps(3, filesystem_grown)

    with structlog.testing.capture_logs() as logs:
        outcome = await run(cluster, clock)

    assert outcome == Outcome(kind=OutcomeKind.VERIFIED, reason="capacity reached 800Gi", mutations=(PATCH,))
    assert clock.sleeps == [1.0, 1.0, 1.0]
    assert [(line["event"], line["object"], line["waiting_for"]) for line in logs] == [
        (
            "resize in progress",
            KEY,
            f"status capacity 400Gi, waiting for 800Gi: in progress, FileSystemResizePending: {FS_PENDING.message}",
        )
    ]


async def test_still_pending_at_the_timeout_the_failure_names_the_storages_state(
    cluster: FakeCluster, clock: FakeClock
) -> None:
    cluster.pvcs[KEY].conditions = (FS_PENDING,)

    outcome = await run(cluster, clock)

    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.reason == (
        "not verified within 10s: status capacity 400Gi, waiting for 800Gi: in progress, "
        f"FileSystemResizePending: {FS_PENDING.message}"
    )


async def test_an_infeasible_resize_fails_at_once_with_the_storages_message(
    cluster: FakeCluster, clock: FakeClock
) -> None:
    pvc = cluster.pvcs[KEY]
    pvc.allocated_resource_statuses = {"storage": "NodeResizeInfeasible"}
    pvc.conditions = (NODE_ERROR,)

    outcome = await run(cluster, clock)

    assert outcome == Outcome(
        kind=OutcomeKind.FAILED,
        reason=f"the storage cannot resize data-kafka-0: NodeResizeInfeasible: {NODE_ERROR.message}",
        mutations=(PATCH,),
    )
    assert clock.sleeps == []
