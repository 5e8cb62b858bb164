"""Storage pool expansion end to end below the agent loop: the SDK-shaped client and the executor against
the real storage twin process (a simulation of the storage layer) next to a real control plane.

Each test defines its own pool on the twin, plans with the real planner from the pool the client read,
and runs the executor with the live applier: the twin must end with the planned drives and total, and
must have received exactly the SDK request the plan calls for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from agent.actions.base import Outcome, OutcomeKind
from agent.actions.mutations import ClusterWriter, DryRunApplier, LiveApplier, Mutation
from agent.actions.pool_expand.executor import PoolExpandExecutor
from agent.actions.registry import CATALOG
from agent.adapters.clock import WallClock
from agent.adapters.errors import PoolBusyError, StoragePoolError
from agent.adapters.storagepools import StoragePoolClient, find_pool
from agent.core.engine import DeclinedAction, PlannedAction, plan_actions
from agent.core.loader import parse_rules
from agent.core.matching import TargetObject, pool_object
from agent.core.rules import Rule
from sandbox.kube import KubeControlPlane, ensure_binaries
from sandbox.process import free_port
from sandbox.storage_twin import StorageTwinClient, start_storage_twin, stop_storage_twin, storage_twin_url

pytestmark = pytest.mark.sandbox

GI = 1024**3
TI = 1024**4
LABELS = {"kafka-autopilot.io/pool": "kafka"}


def rule(**params: str) -> Rule:
    lines = "\n".join(f'        {key}: "{value}"' for key, value in params.items())
    text = f"""\
apiVersion: autopilot.libopenstorage.org/v1alpha1
kind: AutopilotRule
metadata:
  name: pool-test
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
{lines}
"""
    result = parse_rules(text, file="pool-test.yaml", catalog=CATALOG)
    assert not result.problems, result.problems
    (parsed,) = result.rules
    return parsed


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeControlPlane]:
    control_plane = KubeControlPlane(
        work_dir=tmp_path_factory.mktemp("kube"), node_count=1, binaries=ensure_binaries(), ttl_seconds=1800
    )
    control_plane.start()
    try:
        yield control_plane
    finally:
        control_plane.stop()


@pytest.fixture(scope="module")
def twin_url(plane: KubeControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    run_dir = tmp_path_factory.mktemp("twin")
    start_storage_twin(kubeconfig=plane.kubeconfig_path, run_dir=run_dir, resize_delay=1.0, ttl_seconds=1800)
    try:
        yield storage_twin_url(run_dir=run_dir)
    finally:
        stop_storage_twin(run_dir=run_dir)


@pytest.fixture(scope="module")
def twin(twin_url: str) -> StorageTwinClient:
    return StorageTwinClient(twin_url)


@pytest.fixture(scope="module")
def client(twin_url: str) -> StoragePoolClient:
    return StoragePoolClient(url=twin_url)


def target_of(client: StoragePoolClient, *, node: str, pool: str) -> TargetObject:
    found = asyncio.run(find_pool(client, node=node, name=pool))
    return pool_object(node=found.node, pool=found.name, labels=found.labels, shape=found.shape)


def plan(client: StoragePoolClient, the_rule: Rule, *, node: str, pool: str) -> tuple[PlannedAction, TargetObject]:
    target = target_of(client, node=node, pool=pool)
    planned = plan_actions(rule=the_rule, target=target, now=time.time())
    assert isinstance(planned, tuple), planned
    return planned[0], target


def execute(
    client: StoragePoolClient, the_rule: Rule, planned: PlannedAction, target: TargetObject, *, dry_run: bool = False
) -> Outcome:
    recorded: list[Mutation] = []
    applier = (
        DryRunApplier(record=recorded.append)
        if dry_run
        else LiveApplier(writer=cast(ClusterWriter, None), pools=client)  # only pool mutations reach it
    )
    executor = PoolExpandExecutor(pools=client, applier=applier, clock=WallClock(), verify_timeout_seconds=60)
    return asyncio.run(executor.run(planned=planned, target=target, params=the_rule.actions[0].params, rule=the_rule))


def resize_calls(twin: StorageTwinClient) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = twin.state()["resize_calls"]
    return calls


def test_the_client_reads_pools_in_the_sdk_shape(plane: KubeControlPlane, twin: StorageTwinClient) -> None:
    node = plane.node_names[0]
    twin.define_pool(node=node, pool="listing", drives=3, drive_size=TI, used=TI, labels=LABELS)
    pools = asyncio.run(StoragePoolClient(url=twin.base_url).list_pools())
    (pool,) = [p for p in pools if p.name == "listing"]
    assert (pool.node, pool.total_bytes, pool.used_bytes) == (node, 3 * TI, TI)
    assert (pool.drive_count, pool.drive_size_bytes) == (3, TI)
    assert pool.labels["kafka-autopilot.io/pool"] == "kafka"
    assert not pool.resizing


def test_add_disk_adds_drives_of_the_pool_size(
    plane: KubeControlPlane, twin: StorageTwinClient, client: StoragePoolClient
) -> None:
    node = plane.node_names[0]
    twin.define_pool(node=node, pool="add", drives=4, drive_size=TI, used=3 * TI, labels=LABELS)
    the_rule = rule(scalepercentage="50", scaletype="add-disk", maxsize="20Ti")
    planned, target = plan(client, the_rule, node=node, pool="add")
    assert (planned.before, planned.after) == ("4Ti", "6Ti by add-disk")
    outcome = execute(client, the_rule, planned, target)
    assert outcome.kind is OutcomeKind.VERIFIED, outcome
    assert "adding 2 drive(s)" in outcome.mutations[0]
    pool = asyncio.run(find_pool(client, node=node, name="add"))
    assert (pool.total_bytes, pool.drive_count, pool.drive_size_bytes) == (6 * TI, 6, TI)
    last = resize_calls(twin)[-1]
    assert last["path"].startswith("/v1/storagepools/resize/")
    assert last["query"] == {"size": str(6 * 1024), "operation_type": "RESIZE_TYPE_ADD_DISK"}
    # Run again with the same plan (a restarted agent): the pool is there already, nothing is sent.
    calls = len(resize_calls(twin))
    again = execute(client, the_rule, planned, target)
    assert again.kind is OutcomeKind.VERIFIED and again.mutations == ()
    assert len(resize_calls(twin)) == calls


def test_resize_disk_grows_every_drive(
    plane: KubeControlPlane, twin: StorageTwinClient, client: StoragePoolClient
) -> None:
    node = plane.node_names[0]
    twin.define_pool(node=node, pool="grow", drives=4, drive_size=100 * GI, used=300 * GI, labels=LABELS)
    the_rule = rule(scalepercentage="50", scaletype="resize-disk")
    planned, target = plan(client, the_rule, node=node, pool="grow")
    assert planned.after == "600Gi by resize-disk"
    outcome = execute(client, the_rule, planned, target)
    assert outcome.kind is OutcomeKind.VERIFIED, outcome
    pool = asyncio.run(find_pool(client, node=node, name="grow"))
    assert (pool.total_bytes, pool.drive_count, pool.drive_size_bytes) == (600 * GI, 4, 150 * GI)
    assert resize_calls(twin)[-1]["query"]["operation_type"] == "RESIZE_TYPE_RESIZE_DISK"


def test_auto_resizes_drives_when_adding_would_pass_maxdrives(
    plane: KubeControlPlane, twin: StorageTwinClient, client: StoragePoolClient
) -> None:
    node = plane.node_names[0]
    twin.define_pool(node=node, pool="auto", drives=8, drive_size=TI, used=6 * TI, labels=LABELS)
    the_rule = rule(scalepercentage="50", scaletype="auto", maxdrives="8", maxsize="20Ti")
    planned, target = plan(client, the_rule, node=node, pool="auto")
    assert planned.after == "12Ti by resize-disk"
    outcome = execute(client, the_rule, planned, target)
    assert outcome.kind is OutcomeKind.VERIFIED, outcome
    pool = asyncio.run(find_pool(client, node=node, name="auto"))
    assert (pool.total_bytes, pool.drive_count) == (12 * TI, 8)


def test_growth_is_capped_at_maxsize_then_declined_there(
    plane: KubeControlPlane, twin: StorageTwinClient, client: StoragePoolClient
) -> None:
    node = plane.node_names[0]
    twin.define_pool(node=node, pool="capped", drives=4, drive_size=TI, used=3 * TI, labels=LABELS)
    the_rule = rule(scalepercentage="50", scaletype="add-disk", maxsize="5Ti")
    planned, target = plan(client, the_rule, node=node, pool="capped")
    assert planned.after == "5Ti by add-disk"
    outcome = execute(client, the_rule, planned, target)
    assert outcome.kind is OutcomeKind.VERIFIED and "capped at maxsize" in outcome.reason, outcome
    pool = asyncio.run(find_pool(client, node=node, name="capped"))
    assert (pool.total_bytes, pool.drive_count) == (5 * TI, 5)
    calls = len(resize_calls(twin))
    declined = plan_actions(rule=the_rule, target=target_of(client, node=node, pool="capped"), now=time.time())
    assert isinstance(declined, DeclinedAction)
    assert declined.code == "AtMaxSize" and "at maxsize 5Ti" in declined.reason
    assert len(resize_calls(twin)) == calls


def test_dry_run_sends_nothing(plane: KubeControlPlane, twin: StorageTwinClient, client: StoragePoolClient) -> None:
    node = plane.node_names[0]
    twin.define_pool(node=node, pool="dry", drives=2, drive_size=TI, used=TI + TI // 2, labels=LABELS)
    the_rule = rule(scalepercentage="50", scaletype="add-disk")
    planned, target = plan(client, the_rule, node=node, pool="dry")
    calls = len(resize_calls(twin))
    outcome = execute(client, the_rule, planned, target, dry_run=True)
    assert outcome.kind is OutcomeKind.DRY_RUN
    assert outcome.mutations and "expand storage pool" in outcome.mutations[0]
    assert len(resize_calls(twin)) == calls
    assert asyncio.run(find_pool(client, node=node, name="dry")).total_bytes == 2 * TI


def test_a_refused_resize_names_the_server_and_its_reason(
    plane: KubeControlPlane, twin: StorageTwinClient, client: StoragePoolClient
) -> None:
    node = plane.node_names[0]
    # The storage layer allows 5 drives; the rule would add 2 to 4.
    twin.define_pool(node=node, pool="refused", drives=4, drive_size=TI, used=3 * TI, max_drives=5, labels=LABELS)
    the_rule = rule(scalepercentage="50", scaletype="add-disk")
    planned, target = plan(client, the_rule, node=node, pool="refused")
    with pytest.raises(StoragePoolError) as refused:
        execute(client, the_rule, planned, target)
    message = str(refused.value)
    assert client.server in message and "resize pool" in message
    assert "HTTP 400" in message and "max_drives 5" in message
    assert not refused.value.temporary


def test_a_busy_pool_is_reported_as_busy(
    plane: KubeControlPlane, twin: StorageTwinClient, client: StoragePoolClient
) -> None:
    node = plane.node_names[0]
    pool = twin.define_pool(node=node, pool="busy", drives=2, drive_size=TI, labels=LABELS)
    asyncio.run(client.resize_pool(uuid=pool["uuid"], percentage=50, operation="RESIZE_TYPE_ADD_DISK"))
    with pytest.raises(PoolBusyError) as busy:
        asyncio.run(client.resize_pool(uuid=pool["uuid"], percentage=50))
    assert "HTTP 409" in str(busy.value) and "already being resized" in str(busy.value)


def test_an_unreachable_server_is_named(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(StoragePoolError) as unreachable:
        asyncio.run(StoragePoolClient(url=url, timeout_seconds=2).list_pools())
    assert url in str(unreachable.value) and "enumerate nodes" in str(unreachable.value)
    assert "unreachable" in str(unreachable.value) and unreachable.value.temporary
