"""PoolExpandExecutor on a fake storage API and a fake clock: plan, apply, verify, and every way out.

The world: storage pool worker-1/0 (uuid pool-1) of 4 drives of 256Gi, 1Ti in total. The rule
grows it by 50%: with maxdrives 8 the planner adds 2 drives (-> 1536Gi), with maxdrives 4 it
resizes every drive to 384Gi (-> 1536Gi).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from fakes import CrashingApplier, FakeClock, FakeCluster, FakeStoragePools, RecordingApplier, SimulatedCrash
from shell_support import WALL_BUDGET_SECONDS, load_rule, params, plan, wall_time

from agent.actions.base import Outcome, OutcomeKind
from agent.actions.mutations import Applier, ExpandPool, LiveApplier
from agent.actions.pool_expand.executor import PoolExpandExecutor
from agent.adapters.errors import StoragePoolError
from agent.core.engine import DeclinedAction, PlannedAction, plan_actions
from agent.core.matching import TargetObject, pool_object
from agent.core.quantity import GIB
from agent.core.rules import Rule

RULE_TEXT = """\
apiVersion: autopilot.libopenstorage.org/v1alpha1
kind: AutopilotRule
metadata:
  name: kafka-pool-expand
spec:
  selector:
    matchLabels:
      kafka-autopilot.io/pool: kafka
  conditions:
    expressions:
      - keyAlias: PoolUsagePercentage
        operator: Gt
        values: ["70"]
  actions:
    - name: openstorage.io.action.storagepool/expand
      params:
        scalepercentage: "50"
        scaletype: auto
        maxdrives: "MAXDRIVES"
        maxsize: "MAXSIZE"
"""


def rule(*, max_drives: int = 8, max_size: str = "20Ti") -> Rule:
    return load_rule(RULE_TEXT.replace("MAXDRIVES", str(max_drives)).replace("MAXSIZE", max_size))


ADD_DISK = rule()
RESIZE_DISK = rule(max_drives=4)
UUID = "pool-1"
ADD_TWO_DRIVES = ExpandPool(
    uuid=UUID,
    node="worker-1",
    pool="0",
    current_bytes=1024 * GIB,
    new_bytes=1536 * GIB,
    operation="RESIZE_TYPE_ADD_DISK",
    drives_added=2,
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def pools(clock: FakeClock) -> FakeStoragePools:
    pools = FakeStoragePools(clock=clock)
    pools.add_pool(
        uuid=UUID,
        node="worker-1",
        name="0",
        total_bytes=1024 * GIB,
        drive_count=4,
        drive_size_bytes=256 * GIB,
        labels={"pool": "0", "kafka-autopilot.io/pool": "kafka"},
    )
    return pools


def target_of(pools: FakeStoragePools) -> TargetObject:
    """The pool as the agent's inventory makes it a TargetObject."""
    pool = pools.pools[UUID]
    return pool_object(node=pool.node, pool=pool.name, labels=pool.labels, shape=pool.shape)


def planned(pools: FakeStoragePools, clock: FakeClock, rule: Rule = ADD_DISK) -> PlannedAction:
    return plan(rule, target_of(pools), now=clock.now())


async def execute(
    pools: FakeStoragePools,
    clock: FakeClock,
    *,
    rule: Rule = ADD_DISK,
    applier: Applier | None = None,
    action: PlannedAction | None = None,
) -> Outcome:
    executor = PoolExpandExecutor(
        pools=pools, applier=applier or LiveApplier(writer=FakeCluster(), pools=pools), clock=clock
    )
    target = pool_object(node="worker-1", pool="0", labels={}, shape=None)
    return await executor.run(
        planned=action or planned(pools, clock, rule), target=target, params=params(rule), rule=rule
    )


async def test_adds_two_drives_and_verifies_the_new_total(pools: FakeStoragePools, clock: FakeClock) -> None:
    pools.completes_after_sleeps = 3

    outcome = await execute(pools, clock)

    assert outcome == Outcome(
        kind=OutcomeKind.VERIFIED,
        reason="pool total reached 1536Gi by add-disk",
        mutations=(
            "expand storage pool worker-1/0 (uuid pool-1): 1Ti -> 1536Gi by adding 2 drive(s) (RESIZE_TYPE_ADD_DISK)",
        ),
    )
    assert pools.resizes == [(UUID, 1536 * GIB, None, "RESIZE_TYPE_ADD_DISK")]
    assert pools.pools[UUID].total_bytes == 1536 * GIB
    assert clock.sleeps == [1.0, 1.0, 1.0]


async def test_resizes_every_drive_when_maxdrives_leaves_no_room(pools: FakeStoragePools, clock: FakeClock) -> None:
    outcome = await execute(pools, clock, rule=RESIZE_DISK)

    assert outcome.kind is OutcomeKind.VERIFIED
    assert outcome.reason == "pool total reached 1536Gi by resize-disk"
    assert outcome.mutations == (
        "expand storage pool worker-1/0 (uuid pool-1): 1Ti -> 1536Gi by resizing every drive to 384Gi "
        "(RESIZE_TYPE_RESIZE_DISK)",
    )
    assert pools.resizes == [(UUID, 1536 * GIB, None, "RESIZE_TYPE_RESIZE_DISK")]


async def test_dry_run_records_the_expansion_and_changes_nothing(pools: FakeStoragePools, clock: FakeClock) -> None:
    applier = RecordingApplier()
    before = dict(pools.pools)

    outcome = await execute(pools, clock, applier=applier)

    assert outcome == Outcome(
        kind=OutcomeKind.DRY_RUN, reason="dry-run: recorded, nothing changed", mutations=(ADD_TWO_DRIVES.describe(),)
    )
    assert applier.recorded == [ADD_TWO_DRIVES]
    assert (pools.resizes, pools.pools) == ([], before)


def test_at_maxsize_the_planner_declines_so_no_executor_runs(pools: FakeStoragePools, clock: FakeClock) -> None:
    declined = plan_actions(rule=rule(max_size="1Ti"), target=target_of(pools), now=clock.now())

    assert isinstance(declined, DeclinedAction)
    assert (declined.code, declined.reason) == ("AtMaxSize", "at maxsize 1Ti (current 1Ti)")


@pytest.mark.parametrize(
    ("edited", "reason"),
    [
        (rule(max_size="1200Gi"), "the plan 1536Gi passes maxsize 1200Gi"),
        (rule(max_drives=5), "adding 2 drive(s) to 4 passes maxdrives 5"),
    ],
    ids=["maxsize-lowered", "maxdrives-lowered"],
)
async def test_declined_when_the_rule_was_tightened_after_planning(
    pools: FakeStoragePools, clock: FakeClock, edited: Rule, reason: str
) -> None:
    action = planned(pools, clock)  # planned with maxsize 20Ti, maxdrives 8; resumed under the edited rule

    outcome = await execute(pools, clock, rule=edited, action=action)

    assert outcome == Outcome(kind=OutcomeKind.DECLINED, reason=reason)
    assert pools.resizes == []


async def test_held_when_the_pool_changed_since_planning(pools: FakeStoragePools, clock: FakeClock) -> None:
    action = planned(pools, clock)
    pools.pools[UUID] = replace(pools.pools[UUID], total_bytes=1100 * GIB)

    outcome = await execute(pools, clock, action=action)

    assert outcome == Outcome(
        kind=OutcomeKind.HELD,
        reason="the pool changed since planning (total 1100Gi, planned from 1Ti); planning again next cycle",
    )
    assert pools.resizes == []


async def test_failed_when_the_pool_never_grows_within_the_verify_timeout(
    pools: FakeStoragePools, clock: FakeClock
) -> None:
    pools.completes_after_sleeps = None
    started = clock.now()

    with wall_time() as took:
        outcome = await execute(pools, clock)

    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.reason == "not verified within 600s: total 1Ti, waiting for 1536Gi; OPERATION_IN_PROGRESS: resizing"
    assert outcome.mutations == (ADD_TWO_DRIVES.describe(),)
    assert clock.now() - started == 600.0
    assert took.seconds < WALL_BUDGET_SECONDS


async def test_failed_at_once_when_the_storage_layer_reports_the_resize_failed(
    pools: FakeStoragePools, clock: FakeClock
) -> None:
    pools.completes_after_sleeps, pools.fails_with = 2, "no free drives on worker-1"

    outcome = await execute(pools, clock)

    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.reason == "the storage layer reports the resize failed: no free drives on worker-1"
    assert clock.sleeps == [1.0, 1.0]


async def test_a_storage_api_that_stops_answering_while_verifying_is_waited_for(
    pools: FakeStoragePools, clock: FakeClock
) -> None:
    pools.completes_after_sleeps = 1
    unreachable = StoragePoolError(server=pools.server, what="enumerate nodes", reason="unreachable", temporary=True)
    pools.failures.fail("list_pools", unreachable, times=2, after=1)  # the executor's first read gets through

    outcome = await execute(pools, clock)

    assert outcome.kind is OutcomeKind.VERIFIED
    assert clock.sleeps == [1.0, 1.0]
    assert len(pools.resizes) == 1


async def test_a_failing_resize_call_raises_and_leaves_the_pool_as_it_was(
    pools: FakeStoragePools, clock: FakeClock
) -> None:
    pools.failures.fail(
        "resize_pool", StoragePoolError(server=pools.server, what="resize", reason="HTTP 500", temporary=True)
    )

    with pytest.raises(StoragePoolError):
        await execute(pools, clock)

    assert pools.pools[UUID].total_bytes == 1024 * GIB
    assert not pools.pools[UUID].resizing


async def test_failed_when_the_pool_is_no_longer_served(pools: FakeStoragePools, clock: FakeClock) -> None:
    action = planned(pools, clock)
    del pools.pools[UUID]

    outcome = await execute(pools, clock, action=action)

    assert outcome == Outcome(kind=OutcomeKind.FAILED, reason="storage pool worker-1/0 is no longer served")


@pytest.mark.parametrize("completes_after_sleeps", [0, 2], ids=["already-grown", "still-resizing"])
async def test_resumed_after_a_crash_right_after_the_request_it_verifies_without_asking_again(
    pools: FakeStoragePools, clock: FakeClock, completes_after_sleeps: int
) -> None:
    pools.completes_after_sleeps = completes_after_sleeps
    action = planned(pools, clock)
    crashing = CrashingApplier(applier=LiveApplier(writer=FakeCluster(), pools=pools), crash_after=1)
    with pytest.raises(SimulatedCrash):
        await execute(pools, clock, applier=crashing, action=action)

    outcome = await execute(pools, clock, action=action)

    assert outcome == Outcome(kind=OutcomeKind.VERIFIED, reason="pool total reached 1536Gi by add-disk")
    assert len(pools.resizes) == 1
    assert pools.pools[UUID].total_bytes == 1536 * GIB


@pytest.mark.parametrize("completes_after_sleeps", [0, 2], ids=["already-grown", "still-resizing"])
async def test_resumed_after_a_crash_it_verifies_the_size_that_was_requested(
    clock: FakeClock, completes_after_sleeps: int
) -> None:
    pools = FakeStoragePools(clock=clock)
    pools.completes_after_sleeps = completes_after_sleeps
    pools.add_pool(  # 3 drives of 205Gi, 0.7Gi of them not usable
        uuid=UUID,
        node="worker-1",
        name="0",
        total_bytes=615 * GIB - 7 * GIB // 10,
        drive_count=3,
        drive_size_bytes=205 * GIB,
    )
    decimal_maxsize = rule(max_size="1.1T")  # 1024.45Gi: the plan (1024.3Gi) is sent as 1024Gi, rounded down
    action = planned(pools, clock, decimal_maxsize)
    crashing = CrashingApplier(applier=LiveApplier(writer=FakeCluster(), pools=pools), crash_after=1)
    with pytest.raises(SimulatedCrash):
        await execute(pools, clock, rule=decimal_maxsize, applier=crashing, action=action)

    outcome = await execute(pools, clock, rule=decimal_maxsize, action=action)

    assert pools.pools[UUID].total_bytes == 1024 * GIB  # the storage layer did what was asked
    assert len(pools.resizes) == 1
    assert outcome.kind is OutcomeKind.VERIFIED, outcome.reason


async def test_without_a_crash_a_request_rounded_down_under_maxsize_is_verified(clock: FakeClock) -> None:
    """The contrast to the test above: the first run verifies against the whole GiB it sent."""
    pools = FakeStoragePools(clock=clock)
    pools.add_pool(
        uuid=UUID,
        node="worker-1",
        name="0",
        total_bytes=615 * GIB - 7 * GIB // 10,
        drive_count=3,
        drive_size_bytes=205 * GIB,
    )

    outcome = await execute(pools, clock, rule=rule(max_size="1.1T"))

    assert outcome.kind is OutcomeKind.VERIFIED
    assert outcome.reason == "pool total reached 1Ti by add-disk"
    assert pools.resizes == [(UUID, 1024 * GIB, None, "RESIZE_TYPE_ADD_DISK")]
