"""Storage pool expansion by the agent, end to end: the shipped rule `rules/kafka-pool-expand.yaml`
unchanged, the agent as a subprocess, pools served by the storage twin (a simulation of the storage
layer) through its OpenStorage-SDK-shaped API, their usage scraped by the real Prometheus.

State is per object, so each pool has its own cooldown: instead of walking one pool through three steps
(and waiting out the rule's 5-minute cooldown twice), three pools at different starting points, each on
its own node, cross 70% together and each takes one step of the rule:
- pool A, 4 x 3Ti (12Ti): +50% fits in maxdrives 8, so two drives are added (18Ti, add-disk);
- pool B, 9 x 2Ti (18Ti, already past maxdrives): +50% wants 27Ti, so `auto` resizes the 9 drives,
  and the growth is capped at maxsize 20Ti (to the whole GiB per drive that fits);
- pool C, 10 x 2Ti (20Ti, at maxsize): declined at maxsize, nothing sent to the storage layer;
- dry-run: the same decision is recorded, the pool is unchanged, the twin got no resize call and the
  agent mutated nothing in the cluster but its own objects.
Each step is checked as an AutopilotRuleObject state, an Event and a metric, and each pool's capacity
through the twin's API. The time from the threshold crossing to the expanded pool is printed (pytest -s).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from e2e_support import AGENTS_OWN_RESOURCES, RULES, AgentProcess, agent_mutations, audit_log_entries
from helpers import eventually

from sandbox.environment import Sandbox
from sandbox.kube import KubeApi

pytestmark = pytest.mark.sandbox

GI = 1024**3
TI = 1024**4
RULE = "kafka-pool-expand"
RULE_FILES = [RULES / "kafka-pool-expand.yaml"]
STATE_OBJECTS = "/apis/kafka-autopilot.io/v1alpha1/autopilotruleobjects"
LABELS = {"kafka-autopilot.io/pool": "kafka"}
COOLDOWN = 300


@pytest.fixture(scope="module")
def api(sandbox: Sandbox) -> KubeApi:
    return sandbox.kube.api()


@pytest.fixture(scope="module")
def nodes(api: KubeApi) -> list[str]:
    return sorted(node["metadata"]["name"] for node in api.get("/api/v1/nodes")["items"])


@pytest.fixture(scope="module")
def agent(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    with AgentProcess(
        sandbox=sandbox, rules=RULE_FILES, audit_path=tmp_path_factory.mktemp("agent") / "audit.jsonl"
    ) as process:
        yield process


def twin_pool(sandbox: Sandbox, node: str, name: str) -> dict[str, Any]:
    (pool,) = [p for p in sandbox.twin_client().pools() if p["node"] == node and p["name"] == name]
    return pool


def fill(sandbox: Sandbox, node: str, name: str, fraction: float) -> float:
    """Set the pool's usage to `fraction` of its total; returns the moment."""
    total = twin_pool(sandbox, node, name)["total_size"]
    moment = time.time()
    sandbox.twin_client().set_pool_used(node=node, pool=name, used_bytes=int(total * fraction))
    return moment


def state_of(api: KubeApi, key: str) -> str | None:
    for item in api.get(STATE_OBJECTS)["items"]:
        spec = item.get("spec", {})
        if spec.get("rule") == RULE and spec.get("objectKey") == key:
            state = item.get("status", {}).get("state")
            return None if state is None else str(state)
    return None


def events_about(api: KubeApi, name: str) -> list[dict[str, Any]]:
    found = []
    for namespace in ("default", "kube-system"):
        for event in api.get(f"/apis/events.k8s.io/v1/namespaces/{namespace}/events")["items"]:
            if event.get("regarding", {}).get("name") == name:
                found.append(event)
    return found


def records(agent: AgentProcess, event: str, key: str) -> list[dict[str, Any]]:
    return [r for r in agent.records() if r["event"] == event and r["object"] == key]


def action_count(agent: AgentProcess, outcome: str) -> float:
    """kafka_autopilot_actions_total of the pool rule for one outcome, from the agent's /metrics."""
    for line in agent.metrics().splitlines():
        if (
            line.startswith("kafka_autopilot_actions_total{")
            and f'rule="{RULE}"' in line
            and f'outcome="{outcome}"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def finished_at(pool: dict[str, Any]) -> float:
    stamp = pool["last_operation"]["finished_at"]
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True, kw_only=True)
class PoolCase:
    """One pool of the module: where it lives and the drives it starts with (half full)."""

    node: str
    name: str
    drives: int
    drive_size: int

    @property
    def key(self) -> str:
        return f"{self.node}/{self.name}"


@pytest.fixture(scope="module")
def pools(nodes: list[str]) -> dict[str, PoolCase]:
    return {
        "A": PoolCase(node=nodes[0], name="adds-drives", drives=4, drive_size=3 * TI),
        "B": PoolCase(node=nodes[1], name="resizes-drives", drives=9, drive_size=2 * TI),
        "C": PoolCase(node=nodes[2], name="at-maxsize", drives=10, drive_size=2 * TI),
    }


@pytest.fixture(scope="module")
def crossed(sandbox: Sandbox, api: KubeApi, pools: dict[str, PoolCase], agent: AgentProcess) -> dict[str, float]:
    """The three pools, seen as Normal, then filled past 70% together; the moment each crossed."""
    for pool in pools.values():
        sandbox.twin_client().define_pool(
            node=pool.node,
            pool=pool.name,
            drives=pool.drives,
            drive_size=pool.drive_size,
            used=pool.drives * pool.drive_size // 2,
            labels=LABELS,
        )
    eventually(
        lambda: all(state_of(api, pool.key) == "Normal" for pool in pools.values()),
        timeout=90,
        what="the three pools seen as Normal",
        interval=1,
    )
    return {letter: fill(sandbox, pool.node, pool.name, 0.75) for letter, pool in pools.items()}


def resize_calls_for(sandbox: Sandbox, pool: PoolCase) -> list[dict[str, Any]]:
    uuid = twin_pool(sandbox, pool.node, pool.name)["uuid"]
    return [c for c in sandbox.twin_client().state()["resize_calls"] if uuid in c["path"]]


def expanded(sandbox: Sandbox, pool: PoolCase, *, letter: str, past: int) -> dict[str, Any]:
    """The pool once the twin finished growing it past `past` bytes."""
    grown: dict[str, Any] = eventually(
        lambda: (
            (found := twin_pool(sandbox, pool.node, pool.name))["total_size"] > past
            and found["last_operation"]["status"] == "OPERATION_SUCCESSFUL"
            and found
        ),
        timeout=180,
        what=f"pool {letter} grown past {past // GI}Gi",
        interval=1,
    )
    return grown


def test_pool_a_is_expanded_by_adding_drives(
    sandbox: Sandbox, api: KubeApi, pools: dict[str, PoolCase], crossed: dict[str, float], agent: AgentProcess
) -> None:
    pool = pools["A"]
    grown = expanded(sandbox, pool, letter="A", past=12 * TI)
    print(f"\nLATENCY pool A threshold crossing -> expanded (rule for: 30s): {finished_at(grown) - crossed['A']:.1f}s")
    assert (grown["total_size"], grown["drive_count"], grown["drive_size"]) == (18 * TI, 6, 3 * TI)
    eventually(lambda: state_of(api, pool.key) == "ActiveActionsTaken", timeout=60, what="A ActiveActionsTaken")
    verified = eventually(lambda: records(agent, "action-verified", pool.key), timeout=30, what="A verified record")
    assert [(r["before"], r["after"]) for r in verified] == [("12Ti", "18Ti by add-disk")]
    assert any("adding 2 drive(s)" in m and "RESIZE_TYPE_ADD_DISK" in m for m in verified[0]["mutations"])
    assert any(e["reason"] == "ActionVerified" for e in events_about(api, pool.node))
    assert 'action="openstorage.io.action.storagepool/expand"' in agent.metrics()
    assert action_count(agent, "verified") >= 1
    calls = resize_calls_for(sandbox, pool)
    assert [c["query"] for c in calls] == [{"size": str(18 * 1024), "operation_type": "RESIZE_TYPE_ADD_DISK"}]


def test_pool_b_past_maxdrives_is_resized_and_capped_at_maxsize(
    sandbox: Sandbox, api: KubeApi, pools: dict[str, PoolCase], crossed: dict[str, float], agent: AgentProcess
) -> None:
    pool = pools["B"]
    capped = expanded(sandbox, pool, letter="B", past=18 * TI)
    print(f"\nLATENCY pool B threshold crossing -> expanded (rule for: 30s): {finished_at(capped) - crossed['B']:.1f}s")
    # 18Ti + 50% = 27Ti; 9 drives already pass maxdrives 8, so auto resizes them, as far as 20Ti lets:
    # each drive grows by floor((20Ti - 18Ti) / 9) to a whole GiB = 227Gi, to 2275Gi; 9 x 2275Gi = 20475Gi.
    assert capped["drive_count"] == 9
    assert capped["drive_size"] == 2275 * GI
    assert 20 * TI - 9 * GI < capped["total_size"] <= 20 * TI
    eventually(lambda: state_of(api, pool.key) == "ActiveActionsTaken", timeout=60, what="B ActiveActionsTaken")
    verified = eventually(lambda: records(agent, "action-verified", pool.key), timeout=30, what="B verified record")
    assert len(verified) == 1
    assert verified[0]["before"] == "18Ti" and verified[0]["after"].endswith("by resize-disk")
    assert "capped at maxsize" in verified[0]["reason"]
    assert any(e["reason"] == "ActionVerified" for e in events_about(api, pool.node))
    eventually(lambda: action_count(agent, "verified") == 2, timeout=30, what="verified counter at 2 (A and B)")
    calls = resize_calls_for(sandbox, pool)
    assert [c["query"] for c in calls] == [{"size": str(20475), "operation_type": "RESIZE_TYPE_RESIZE_DISK"}]
    # Each pool has its own cooldown: B grew while A, expanded moments before, was still cooling down.
    grown_a = twin_pool(sandbox, pools["A"].node, pools["A"].name)
    assert abs(finished_at(capped) - finished_at(grown_a)) < COOLDOWN


def test_pool_c_at_maxsize_is_declined(
    sandbox: Sandbox, api: KubeApi, pools: dict[str, PoolCase], crossed: dict[str, float], agent: AgentProcess
) -> None:
    pool = pools["C"]
    eventually(lambda: state_of(api, pool.key) == "ActionsDeclined", timeout=180, what="C ActionsDeclined", interval=1)
    declined = records(agent, "action-declined", pool.key)
    assert declined and declined[-1]["reason"].startswith("AtMaxSize"), declined
    assert any(e["reason"] == "ActionDeclined" and e["type"] == "Warning" for e in events_about(api, pool.node))
    assert action_count(agent, "declined-at-maxsize") >= 1
    found = twin_pool(sandbox, pool.node, pool.name)
    assert (found["total_size"], found["drive_count"], found["last_operation"]) == (20 * TI, 10, None)
    assert resize_calls_for(sandbox, pool) == []


def test_dry_run_records_the_expansion_and_changes_nothing(
    sandbox: Sandbox, api: KubeApi, nodes: list[str], agent: AgentProcess, tmp_path: Path
) -> None:
    agent.stop()
    for item in api.get(STATE_OBJECTS)["items"]:
        api.delete(f"{STATE_OBJECTS}/{item['metadata']['name']}")
    node = nodes[3]
    key = f"{node}/dry"
    sandbox.twin_client().define_pool(node=node, pool="dry", drives=4, drive_size=TI, used=TI, labels=LABELS)
    calls_before = len(sandbox.twin_client().state()["resize_calls"])
    since = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    dry = AgentProcess(sandbox=sandbox, rules=RULE_FILES, audit_path=tmp_path / "dry.jsonl", dry_run=True)
    dry.start()
    try:
        eventually(lambda: state_of(api, key) == "Normal", timeout=90, what="the pool seen as Normal", interval=1)
        fill(sandbox, node, "dry", 0.75)
        planned = eventually(
            lambda: records(dry, "action-dry-run", key), timeout=180, what="a dry-run expansion record", interval=1
        )
        assert (planned[0]["before"], planned[0]["after"]) == ("4Ti", "6Ti by add-disk")
        assert any("expand storage pool" in m for m in planned[0]["mutations"])
        recorded = [r for r in dry.records() if r["event"] == "mutation-recorded"]
        assert any("expand storage pool" in r["after"] for r in recorded)
        time.sleep(3)
        pool = twin_pool(sandbox, node, "dry")
        assert (pool["total_size"], pool["drive_count"]) == (4 * TI, 4)
        assert len(sandbox.twin_client().state()["resize_calls"]) == calls_before
        touched = {
            entry["objectRef"].get("resource") for entry in agent_mutations(audit_log_entries(sandbox), since=since)
        }
        assert touched <= AGENTS_OWN_RESOURCES, touched
        assert 'outcome="dry-run"' in dry.metrics()
    finally:
        dry.stop()
