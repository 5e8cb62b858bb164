"""The pure parts of storage pool expansion: the in-flight record a restarted agent resumes from, the
SDK's whole-GiB size, the mutation's description, and the scale type -> SDK operation mapping."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from agent.actions.mutations import ExpandPool
from agent.actions.pool_expand.spec import POOL_EXPAND, PoolExpandPlan
from agent.actions.registry import CATALOG
from agent.adapters.storagepools import ResizeOperation, StoragePool, size_in_gib
from agent.core.engine import PlannedAction
from agent.core.inflight import decode_in_flight, encode_in_flight
from agent.core.loader import parse_rules
from agent.core.matching import pool_object
from agent.core.pools import PoolShape, ScaleType
from agent.core.rules import TargetKind
from agent.runtime.inventory import Inventory, StorageApiNotConfiguredError

GI = 1024**3
TI = 1024**4

RULE = """\
apiVersion: autopilot.libopenstorage.org/v1alpha1
kind: AutopilotRule
metadata:
  name: pools
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
        maxsize: "20Ti"
"""


@pytest.mark.parametrize(
    "plan",
    [
        PoolExpandPlan(
            current_bytes=4 * TI,
            target_bytes=6 * TI,
            scale_type=ScaleType.ADD_DISK,
            drives_added=2,
            new_drive_size_bytes=TI,
            capped=False,
        ),
        PoolExpandPlan(
            current_bytes=18 * TI,
            target_bytes=20478 * GI,
            scale_type=ScaleType.RESIZE_DISK,
            drives_added=0,
            new_drive_size_bytes=3413 * GI,
            capped=True,
        ),
    ],
)
def test_a_pool_plan_survives_the_in_flight_record(plan: PoolExpandPlan) -> None:
    (rule,) = parse_rules(RULE, file="pools.yaml", catalog=CATALOG).rules
    target = pool_object(
        node="n1",
        pool="data",
        labels={},
        shape=PoolShape(total_bytes=plan.current_bytes, drive_count=4, drive_size_bytes=TI),
    )
    planned = PlannedAction(
        rule="pools", object=target.key, action=POOL_EXPAND, before="b", after="a", at=1.0, detail=plan
    )
    detail = encode_in_flight(planned)
    assert all(isinstance(value, str) for value in detail.values())
    resumed = decode_in_flight({"action": POOL_EXPAND, **detail}, rule=rule, target=target, now=2.0, catalog=CATALOG)
    assert resumed is not None
    assert resumed.detail == plan
    assert (resumed.action, resumed.before, resumed.after) == (POOL_EXPAND, "b", "a")


@pytest.mark.parametrize(
    ("size", "at_most", "gib"),
    [
        (6 * TI, None, 6144),
        (6 * TI + 1, None, 6145),
        (20478 * GI, 20 * TI, 20478),
        (20 * TI - 1, 20 * TI, 20480),
        (20 * TI + 1, 20 * TI, 20480),
    ],
)
def test_the_sdk_size_is_whole_gib_never_past_the_limit(size: int, at_most: int | None, gib: int) -> None:
    assert size_in_gib(size, at_most=at_most) == gib


def test_scale_types_map_to_sdk_operations() -> None:
    assert ResizeOperation.for_scale_type(ScaleType.ADD_DISK) == "RESIZE_TYPE_ADD_DISK"
    assert ResizeOperation.for_scale_type(ScaleType.RESIZE_DISK) == "RESIZE_TYPE_RESIZE_DISK"
    assert ResizeOperation.for_scale_type(ScaleType.AUTO) == "RESIZE_TYPE_AUTO"


def test_the_mutation_says_what_it_does() -> None:
    add = ExpandPool(
        uuid="u1",
        node="n1",
        pool="data",
        current_bytes=4 * TI,
        new_bytes=6 * TI,
        operation="RESIZE_TYPE_ADD_DISK",
        drives_added=2,
    )
    assert add.describe() == (
        "expand storage pool n1/data (uuid u1): 4Ti -> 6Ti by adding 2 drive(s) (RESIZE_TYPE_ADD_DISK)"
    )
    grow = ExpandPool(
        uuid="u1",
        node="n1",
        pool="data",
        current_bytes=4 * TI,
        new_bytes=6 * TI,
        operation="RESIZE_TYPE_RESIZE_DISK",
        new_drive_size_bytes=1536 * GI,
    )
    assert "resizing every drive to 1536Gi" in grow.describe()


def test_a_pool_without_drive_facts_has_no_shape() -> None:
    common = dict(uuid="u", node="n", name="0", pool_id=0, labels={}, total_bytes=TI, used_bytes=0)
    assert StoragePool(**common, drive_count=2, drive_size_bytes=TI // 2).shape == PoolShape(  # type: ignore[arg-type]
        total_bytes=TI, drive_count=2, drive_size_bytes=TI // 2
    )
    assert StoragePool(**common).shape is None  # type: ignore[arg-type]


def test_pool_rules_without_a_storage_api_say_what_is_missing() -> None:
    (rule,) = parse_rules(RULE, file="pools.yaml", catalog=CATALOG).rules
    assert rule.target is TargetKind.STORAGE_POOL
    inventory = Inventory(cluster=cast(Any, None), prometheus=cast(Any, None))
    with pytest.raises(StorageApiNotConfiguredError, match="--storage-api URL"):
        asyncio.run(inventory.objects(rule))
