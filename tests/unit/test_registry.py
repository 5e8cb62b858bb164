"""The registry of actions: one folder per action, listed once, and everything else follows from it.

Also the two things every action shares through it: the in-flight record (the exact strings an older
agent wrote still resume) and the verify step, which only a live applier runs.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest
from helpers import REFERENCE_RULE

from agent.actions.base import RECORDED, Dependencies, MutationLog, Outcome, OutcomeKind, finished, verified
from agent.actions.broker_restart.spec import BROKER_RESTART
from agent.actions.leader_rebalance.spec import LEADER_REBALANCE
from agent.actions.mutations import ClusterWriter, CordonNode, DryRunApplier, LiveApplier, Mutation
from agent.actions.node_reschedule.spec import NODE_RESCHEDULE
from agent.actions.pool_expand.spec import POOL_EXPAND, PoolExpandPlan
from agent.actions.registry import ACTIONS, CATALOG, build_executors
from agent.actions.volume_resize.spec import VOLUME_RESIZE, ResizePlan
from agent.adapters.clock import WallClock
from agent.adapters.kafka import KafkaAdmin
from agent.adapters.kubernetes import KubeClient
from agent.adapters.storagepools import StoragePoolApi
from agent.core.engine import PlannedAction
from agent.core.inflight import decode_in_flight, encode_in_flight
from agent.core.loader import parse_rules
from agent.core.matching import pvc_object
from agent.core.pools import ScaleType

REPO = Path(__file__).resolve().parents[2]
ACTIONS_DIR = REPO / "agent" / "actions"
ACTION_NAME = re.compile(r"(?:openstorage\.io|kafka-autopilot\.io)\.action\.[\w./-]*\w")
GI = 1024**3


def test_each_action_folder_is_listed_once_and_holds_its_three_files() -> None:
    folders = sorted(path.parent.name for path in ACTIONS_DIR.glob("*/__init__.py"))
    listed = sorted(action.executor.__module__.split(".")[2] for action in ACTIONS)
    assert (
        folders
        == listed
        == [
            "broker_restart",
            "leader_rebalance",
            "node_reschedule",
            "pool_expand",
            "volume_resize",
        ]
    )
    for folder in folders:
        assert sorted(path.name for path in (ACTIONS_DIR / folder).glob("*.py")) == [
            "__init__.py",
            "executor.py",
            "spec.py",
        ]


def test_the_catalog_is_the_registry_in_order() -> None:
    assert list(CATALOG) == [action.spec.name for action in ACTIONS]
    assert list(CATALOG) == [VOLUME_RESIZE, POOL_EXPAND, LEADER_REBALANCE, NODE_RESCHEDULE, BROKER_RESTART]
    for action in ACTIONS:  # each spec is paired with the executor of its own folder
        folder = action.executor.__module__.rsplit(".", 1)[0]
        assert action.spec is importlib.import_module(f"{folder}.spec").SPEC


def test_the_pure_catalog_loads_no_executor_nor_client() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, agent.actions.specs; print(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout.split()
    assert [name for name in loaded if name.endswith(".executor")] == []
    assert [name for name in loaded if name.split(".")[0] in {"kubernetes_asyncio", "requests", "aiokafka"}] == []
    assert "agent.actions.volume_resize.spec" in loaded


def test_every_action_name_we_ship_is_in_the_registry() -> None:
    """Rules, policies, the chart, the schemas, the CRDs and the docs name only registered actions."""
    shipped = [
        *REPO.glob("rules/*.yaml"),
        *REPO.glob("policies/*.yaml"),
        *REPO.glob("schema/*.json"),
        *REPO.glob("agent/resources/crds/*.yaml"),
        *(path for path in (REPO / "helm").rglob("*") if path.is_file()),
        *REPO.glob("docs/*.md"),
        REPO / "README.md",
    ]
    named = {(path.relative_to(REPO), name) for path in shipped for name in ACTION_NAME.findall(path.read_text())}
    assert {name for _, name in named} == set(CATALOG)
    assert [(str(path), name) for path, name in sorted(named) if name not in CATALOG] == []


def dependencies(*, kafka: bool, pools: bool) -> Dependencies:
    """Factories only keep what they are given, so placeholders stand in for the clients."""
    return Dependencies(
        kube=cast(KubeClient, object()),
        inventory=object(),
        kafka=cast(KafkaAdmin, object()) if kafka else None,
        pools=cast(StoragePoolApi, object()) if pools else None,
        clock=WallClock(),
    )


@pytest.mark.parametrize(
    ("kafka", "pools", "expected"),
    [
        (False, False, [VOLUME_RESIZE, NODE_RESCHEDULE]),
        (True, False, [VOLUME_RESIZE, LEADER_REBALANCE, NODE_RESCHEDULE, BROKER_RESTART]),
        (False, True, [VOLUME_RESIZE, POOL_EXPAND, NODE_RESCHEDULE]),
        (True, True, [VOLUME_RESIZE, POOL_EXPAND, LEADER_REBALANCE, NODE_RESCHEDULE, BROKER_RESTART]),
    ],
)
def test_an_executor_is_built_only_with_its_dependencies(kafka: bool, pools: bool, expected: list[str]) -> None:
    dry = DryRunApplier(record=lambda _mutation: None)
    asked: list[str] = []

    def applier_for(action: str) -> DryRunApplier:
        asked.append(action)
        return dry

    executors = build_executors(dependencies=dependencies(kafka=kafka, pools=pools), applier_for=applier_for)
    assert list(executors) == expected
    assert all(executor.action == name for name, executor in executors.items())


# --- the in-flight record --------------------------------------------------------------------------------

RESIZE_RECORD = {
    "before": "400Gi",
    "after": "800Gi",
    "current_bytes": str(400 * GI),
    "target_bytes": str(800 * GI),
    "capped": "false",
}
POOL_RECORD = {
    "before": "4Ti",
    "after": "6Ti by add-disk",
    "pool_current_bytes": str(4096 * GI),
    "pool_target_bytes": str(6144 * GI),
    "scale_type": "add-disk",
    "drives_added": "2",
    "new_drive_size_bytes": str(1024 * GI),
    "capped": "true",
}


@pytest.mark.parametrize(
    ("action", "record", "plan"),
    [
        (VOLUME_RESIZE, RESIZE_RECORD, ResizePlan(current_bytes=400 * GI, target_bytes=800 * GI, capped=False)),
        (
            POOL_EXPAND,
            POOL_RECORD,
            PoolExpandPlan(
                current_bytes=4096 * GI,
                target_bytes=6144 * GI,
                scale_type=ScaleType.ADD_DISK,
                drives_added=2,
                new_drive_size_bytes=1024 * GI,
                capped=True,
            ),
        ),
        (LEADER_REBALANCE, {"before": "b", "after": "a"}, None),
    ],
)
def test_the_in_flight_record_keeps_the_strings_an_older_agent_wrote(
    action: str, record: dict[str, str], plan: ResizePlan | PoolExpandPlan | None
) -> None:
    (rule,) = parse_rules(REFERENCE_RULE, file="rule.yaml", catalog=CATALOG).rules
    target = pvc_object(namespace="kafka", name="data-kafka-0", labels={}, capacity_bytes=400 * GI)
    planned = PlannedAction(
        rule=rule.name,
        object=target.key,
        action=action,
        before=record["before"],
        after=record["after"],
        at=1.0,
        detail=plan,
    )
    assert encode_in_flight(planned) == record
    resumed = decode_in_flight({"action": action, **record}, rule=rule, target=target, now=1.0, catalog=CATALOG)
    assert resumed == planned


def test_an_action_the_catalog_does_not_know_resumes_without_detail() -> None:
    (rule,) = parse_rules(REFERENCE_RULE, file="rule.yaml", catalog=CATALOG).rules
    target = pvc_object(namespace="kafka", name="data-kafka-0", labels={}, capacity_bytes=400 * GI)
    resumed = decode_in_flight(
        {"action": "gone.io/action", **RESIZE_RECORD}, rule=rule, target=target, now=2.0, catalog=CATALOG
    )
    assert resumed is not None
    assert (resumed.action, resumed.before, resumed.detail) == ("gone.io/action", "400Gi", None)


# --- verify: only what the applier really applied ------------------------------------------------------------


class Writer:
    def __init__(self) -> None:
        self.cordoned: list[str] = []

    async def cordon_node(self, name: str, *, annotations: object = None) -> None:
        self.cordoned.append(name)


async def test_the_dry_run_applier_answers_for_the_verify_step() -> None:
    recorded: list[Mutation] = []
    log = MutationLog(applier=DryRunApplier(record=recorded.append))
    await log.apply(CordonNode(name="n1"))
    verifications: list[str] = []

    async def verify() -> Outcome:
        verifications.append("asked")
        return Outcome(kind=OutcomeKind.VERIFIED, reason="seen")

    outcome = await verified(log, verify)
    assert outcome == Outcome(kind=OutcomeKind.DRY_RUN, reason=RECORDED, mutations=("cordon Node n1",))
    assert verifications == [] and recorded == [CordonNode(name="n1")]
    assert (await finished(log, "nothing left")).kind is OutcomeKind.DRY_RUN


async def test_the_live_applier_runs_the_verify_step() -> None:
    writer = Writer()
    log = MutationLog(applier=LiveApplier(writer=cast(ClusterWriter, writer)))
    await log.apply(CordonNode(name="n1"))

    async def verify() -> Outcome:
        return Outcome(kind=OutcomeKind.VERIFIED, reason="seen", mutations=tuple(log.done))

    assert await verified(log, verify) == Outcome(
        kind=OutcomeKind.VERIFIED, reason="seen", mutations=("cordon Node n1",)
    )
    assert writer.cordoned == ["n1"]
    assert await finished(log, "nothing left") == Outcome(
        kind=OutcomeKind.VERIFIED, reason="nothing left", mutations=("cordon Node n1",)
    )
