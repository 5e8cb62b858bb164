"""The fakes keep the promises of the adapters they stand for (and of their own docstrings)."""

from __future__ import annotations

import asyncio

import pytest
from fakes import (
    FakeApprovals,
    FakeClock,
    FakeCluster,
    FakeKafka,
    FakeNode,
    FakePod,
    FakePrometheus,
    FakePvc,
    FakeStateStore,
    FakeStoragePools,
)

from agent.actions.mutations import LiveApplier, ResizePvc
from agent.adapters.errors import (
    ActionInFlightError,
    ConflictError,
    KubeError,
    NotFoundError,
    PoolBusyError,
    PrometheusQueryError,
    StateConflictError,
)
from agent.adapters.kubernetes.statuscodec import LastAction
from agent.core.approvals import ActionPreview, Answer, ApprovalRequest, Phase
from agent.core.elections import ELECTION_NOT_NEEDED, NONE, PREFERRED_LEADER_NOT_AVAILABLE
from agent.core.quantity import GIB
from agent.core.samples import Sample
from agent.core.states import ObjectState, RuleState

# --- FakeClock -----------------------------------------------------------------------------------------


async def test_sleep_moves_both_clocks_records_and_runs_what_is_due() -> None:
    clock = FakeClock(start=1000.0)
    fired: list[float] = []
    clock.after_sleeps(2, lambda: fired.append(clock.now()))

    await clock.sleep(1.5)
    await clock.sleep(3)

    assert (clock.now(), clock.monotonic()) == (1004.5, 4.5)
    assert clock.sleeps == [1.5, 3]
    assert fired == [1004.5]


async def test_wait_returns_at_once_for_a_set_event_and_lets_a_ready_task_set_it() -> None:
    clock = FakeClock(start=0.0)
    event = asyncio.Event()
    event.set()
    assert await clock.wait(event, timeout=10) is True

    event.clear()
    setter = asyncio.get_running_loop().call_soon(event.set)
    assert await clock.wait(event, timeout=10) is True
    assert (clock.now(), clock.waits) == (0.0, [])
    setter.cancel()


async def test_wait_times_out_in_virtual_time_only() -> None:
    clock = FakeClock(start=0.0)

    assert await clock.wait(asyncio.Event(), timeout=30) is False

    assert (clock.now(), clock.waits) == (30.0, [30])


# --- FakeCluster ---------------------------------------------------------------------------------------


async def test_a_live_applier_changes_the_fake_cluster_and_the_claim_grows_after_the_scripted_sleeps() -> None:
    clock = FakeClock()
    cluster = FakeCluster(clock=clock)
    cluster.add_pvc(FakePvc(namespace="kafka", name="data-0", requested_bytes=10 * GIB, grows_after_sleeps=2))

    await LiveApplier(writer=cluster).apply(
        ResizePvc(namespace="kafka", name="data-0", new_bytes=20 * GIB, annotations={"a": "b"})
    )
    (claim,) = await cluster.list_pvcs()
    assert (claim.requested_bytes, claim.capacity_bytes, dict(claim.annotations)) == (20 * GIB, 10 * GIB, {"a": "b"})
    await clock.sleep(1)
    await clock.sleep(1)

    (claim,) = await cluster.list_pvcs()
    assert claim.capacity_bytes == 20 * GIB


async def test_the_cluster_refuses_what_the_apiserver_refuses() -> None:
    cluster = FakeCluster()
    cluster.add_pvc(FakePvc(namespace="kafka", name="data-0", requested_bytes=10 * GIB))
    pod = cluster.add_pod(FakePod(namespace="kafka", name="kafka-0", node="worker-1"))

    with pytest.raises(KubeError) as shrink:
        await cluster.resize_pvc(namespace="kafka", name="data-0", new_bytes=5 * GIB, annotations={})
    with pytest.raises(NotFoundError):
        await cluster.resize_pvc(namespace="kafka", name="gone", new_bytes=5 * GIB, annotations={})
    with pytest.raises(NotFoundError):
        await cluster.storage_class("none")
    with pytest.raises(ConflictError):
        await cluster.force_delete_pod(namespace="kafka", name="kafka-0", uid="another-uid")

    assert shrink.value.status == 422
    assert await cluster.force_delete_pod(namespace="kafka", name="kafka-0", uid=pod.uid) is True
    assert await cluster.force_delete_pod(namespace="kafka", name="kafka-0", uid=pod.uid) is False
    assert await cluster.delete_volume_attachment("csi-none") is False


async def test_taints_are_idempotent_and_the_out_of_service_taint_evicts_the_node_s_pods() -> None:
    cluster = FakeCluster()
    cluster.add_node(FakeNode(name="worker-1", ready="Unknown"))
    cluster.add_pod(FakePod(namespace="kafka", name="kafka-0", node="worker-1"))
    cluster.reschedule_to = "worker-2"

    assert await cluster.taint_node(name="worker-1", key="k", value="v", effect="NoSchedule") is True
    assert await cluster.taint_node(name="worker-1", key="k", value="v", effect="NoSchedule") is False
    await cluster.taint_node(name="worker-1", key="node.kubernetes.io/out-of-service", value="x", effect="NoExecute")

    (pod,) = await cluster.list_pods(label_selector=None)
    assert (pod.node, pod.phase) == ("worker-2", "Running")


# --- FakeKafka and FakeStoragePools ----------------------------------------------------------------------


async def test_elections_answer_per_partition_as_kafka_does() -> None:
    kafka = FakeKafka()
    kafka.registered = {0, 1}
    kafka.add_partition("t", 0, replicas=[1, 0], leader=0)
    kafka.add_partition("t", 1, replicas=[1, 0], leader=1)
    kafka.add_partition("t", 2, replicas=[1, 0], leader=0, isr=[0])

    results = await kafka.elect_preferred_leaders([("t", 0), ("t", 1), ("t", 2), ("u", 0)])

    assert [result.error_code for result in results] == [NONE, ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE, 3]
    assert kafka.leaders() == {("t", 0): 1, ("t", 1): 1, ("t", 2): 0}
    assert [p.topic for p in (await kafka.cluster_view(topics=["u"])).partitions] == []


async def test_a_pool_resizing_is_busy_until_it_completes() -> None:
    clock = FakeClock()
    pools = FakeStoragePools(clock=clock)
    pools.add_pool(uuid="p", node="n", name="0", total_bytes=10 * GIB, drive_count=1, drive_size_bytes=10 * GIB)
    pools.completes_after_sleeps = 1

    await pools.resize_pool(uuid="p", size_bytes=15 * GIB + 1)
    with pytest.raises(PoolBusyError):
        await pools.resize_pool(uuid="p", size_bytes=20 * GIB)
    await clock.sleep(1)

    (pool,) = await pools.list_pools()
    assert (pool.total_bytes, pool.resizing) == (16 * GIB, False)


# --- FakeStateStore --------------------------------------------------------------------------------------

RULE, KEY, KIND = "kafka-resize", "kafka/data-0", "PersistentVolumeClaim"
PENDING = ObjectState(state=RuleState.ACTIVE_ACTIONS_PENDING)
IN_PROGRESS = ObjectState(state=RuleState.ACTIVE_ACTIONS_IN_PROGRESS)


async def test_a_write_based_on_a_stale_read_conflicts_as_with_two_replicas() -> None:
    first = FakeStateStore()
    second = first.replica()
    await first.load(RULE)
    await second.load(RULE)

    await first.save(rule=RULE, object_key=KEY, object_kind=KIND, state=PENDING)
    with pytest.raises(StateConflictError):
        await second.save(rule=RULE, object_key=KEY, object_kind=KIND, state=PENDING)

    assert await second.load(RULE) == {KEY: PENDING}
    assert first.resource_version(RULE, KEY) == 1


async def test_in_flight_is_recorded_once_then_cleared_with_the_outcome() -> None:
    store = FakeStateStore()
    await store.status(RULE, KEY)
    await store.record_in_flight(
        rule=RULE, object_key=KEY, object_kind=KIND, action="resize", requested_at=10.0, state=IN_PROGRESS
    )
    with pytest.raises(ActionInFlightError):
        await store.record_in_flight(rule=RULE, object_key=KEY, object_kind=KIND, action="resize", requested_at=11.0)
    assert (await store.in_flight(RULE, KEY)) is not None

    finished = LastAction(name="resize", started_at=10.0, finished_at=20.0, outcome="verified")
    await store.clear_in_flight(rule=RULE, object_key=KEY, object_kind=KIND, state=ObjectState(), last_action=finished)

    stored = store.stored(RULE, KEY)
    assert (stored.in_flight, stored.last_action, stored.state) == (None, finished, ObjectState())
    assert [action.started_at for action in stored.recent_actions] == [10.0]
    assert (await store.action_history()).starts[0].at == 10.0


async def test_a_scripted_conflict_hits_the_next_write_of_that_pair_only() -> None:
    store = FakeStateStore()
    await store.load(RULE)
    store.conflict_on_next_write(RULE, KEY)

    with pytest.raises(StateConflictError):
        await store.save(rule=RULE, object_key=KEY, object_kind=KIND, state=PENDING)
    await store.save(rule=RULE, object_key=KEY, object_kind=KIND, state=PENDING)
    await store.save(rule=RULE, object_key=KEY, object_kind=KIND, state=PENDING)  # unchanged: not sent

    assert store.writes == [("save", RULE, KEY)]


# --- FakePrometheus and FakeApprovals -----------------------------------------------------------------


async def test_prometheus_answers_scripted_vectors_an_empty_one_for_the_unknown_and_can_fail() -> None:
    prometheus = FakePrometheus()
    sample = Sample(labels={"pvc": "data-0"}, value=91.0)
    prometheus.set("usage", [sample])

    assert await prometheus.query("usage", at=5.0) == (sample,)
    assert await prometheus.query("unknown") == ()
    prometheus.fail("usage")
    with pytest.raises(PrometheusQueryError):
        await prometheus.query("usage")
    assert prometheus.queries == [("usage", 5.0), ("unknown", None), ("usage", None)]


async def test_an_approval_is_created_once_answered_by_a_person_and_marked_by_the_agent() -> None:
    approvals = FakeApprovals()
    request = ApprovalRequest(
        name="kafka-resize-data-0-abc",
        namespace="kafka",
        rule=RULE,
        object_kind=KIND,
        object_key=KEY,
        object_namespace="kafka",
        object_name="data-0",
        episode=100.0,
        actions=(ActionPreview(action="resize", before="1Gi", after="2Gi"),),
        why="usage 91 > 80",
    )

    created, new = await approvals.ensure(request, now=100.0)
    again, new_again = await approvals.ensure(request, now=110.0)
    approvals.answer(namespace="kafka", name=request.name, answer=Answer.APPROVED, by="alice")
    used = await approvals.set_phase(namespace="kafka", name=request.name, phase=Phase.USED, message="used", now=120.0)

    assert (new, new_again, again) == (True, False, created)
    assert used is not None and (used.answer, used.answered_by, used.phase) == (Answer.APPROVED, "alice", Phase.USED)
    assert await approvals.set_phase(namespace="kafka", name="none", phase=Phase.USED, message="", now=0) is None
    approvals.fail_next()
    with pytest.raises(KubeError):
        await approvals.get(namespace="kafka", name=request.name)
