"""Storage pool expansion by the agent, end to end: the shipped rule `rules/kafka-pool-expand.yaml`
unchanged, the agent as a subprocess, pools served by the storage twin (a simulation of the storage
layer) through its OpenStorage-SDK-shaped API, their usage scraped by the real Prometheus.

One sandbox for the module; the tests run in order:
- a pool of 4 x 3Ti filling past 70% is grown by 50% (two drives more, 18Ti) after the rule's `for: 30`;
- after the 5-minute cooldown, filling again past 70% wants 27Ti: adding drives would pass maxdrives 8,
  so `auto` resizes the drives, and the growth is capped at maxsize 20Ti;
- after another cooldown, filling again is declined at maxsize (no whole GiB per drive is left);
- dry-run: the same decision is recorded, the pool is unchanged, the twin got no resize call and the
  agent mutated nothing in the cluster but its own objects.
Each step is checked as an AutopilotRuleObject state, an Event and a metric. The time from the
threshold crossing to the expanded pool is printed (pytest -s shows it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from e2e_support import RULES, AgentProcess, agent_mutations, audit_log_entries
from helpers import eventually

from agent.sandbox.environment import Sandbox
from agent.sandbox.kube import KubeApi

pytestmark = pytest.mark.sandbox

GI = 1024**3
TI = 1024**4
RULE = "kafka-pool-expand"
RULE_FILES = [RULES / "kafka-pool-expand.yaml"]
STATE_OBJECTS = "/apis/kafka-autopilot.io/v1alpha1/autopilotruleobjects"
LABELS = {"kafka-autopilot.io/pool": "kafka"}
COOLDOWN = 300
OWN_OBJECTS = {"autopilotruleobjects", "events", "customresourcedefinitions", "leases", "actionapprovals"}


@pytest.fixture(scope="module")
def api(sandbox: Sandbox) -> KubeApi:
    return sandbox.kube.api()


@pytest.fixture(scope="module")
def nodes(api: KubeApi) -> list[str]:
    return sorted(node["metadata"]["name"] for node in api.get("/api/v1/nodes")["items"])


@pytest.fixture(scope="module")
def agent(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    process = AgentProcess(
        sandbox=sandbox, rules=RULE_FILES, audit_path=tmp_path_factory.mktemp("agent") / "audit.jsonl"
    )
    try:
        process.start()
        yield process
    finally:
        process.stop()


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


def test_a_filling_pool_is_expanded_by_adding_drives(
    sandbox: Sandbox, api: KubeApi, nodes: list[str], agent: AgentProcess
) -> None:
    node = nodes[0]
    key = f"{node}/data"
    sandbox.twin_client().define_pool(node=node, pool="data", drives=4, drive_size=3 * TI, used=6 * TI, labels=LABELS)
    eventually(lambda: state_of(api, key) == "Normal", timeout=90, what="the pool seen as Normal", interval=1)
    crossed = fill(sandbox, node, "data", 0.75)
    grown = eventually(
        lambda: (
            (pool := twin_pool(sandbox, node, "data"))["total_size"] == 18 * TI
            and pool["last_operation"]["status"] == "OPERATION_SUCCESSFUL"
            and pool
        ),
        timeout=180,
        what="the pool grown to 18Ti",
        interval=1,
    )
    print(f"\nLATENCY pool threshold crossing -> pool expanded (rule for: 30s): {finished_at(grown) - crossed:.1f}s")
    assert (grown["drive_count"], grown["drive_size"]) == (6, 3 * TI)
    eventually(lambda: state_of(api, key) == "ActiveActionsTaken", timeout=60, what="state ActiveActionsTaken")
    verified = eventually(lambda: records(agent, "action-verified", key), timeout=30, what="verified record")
    assert [(r["before"], r["after"]) for r in verified] == [("12Ti", "18Ti by add-disk")]
    assert any("adding 2 drive(s)" in m and "RESIZE_TYPE_ADD_DISK" in m for m in verified[0]["mutations"])
    assert any(e["reason"] == "ActionVerified" for e in events_about(api, node))
    assert 'action="openstorage.io.action.storagepool/expand"' in agent.metrics()
    assert action_count(agent, "verified") == 1
    calls = sandbox.twin_client().state()["resize_calls"]
    assert [c["query"] for c in calls] == [{"size": str(18 * 1024), "operation_type": "RESIZE_TYPE_ADD_DISK"}]


def test_the_next_step_is_capped_at_maxsize(
    sandbox: Sandbox, api: KubeApi, nodes: list[str], agent: AgentProcess
) -> None:
    node = nodes[0]
    key = f"{node}/data"
    fill(sandbox, node, "data", 0.75)
    eventually(
        lambda: state_of(api, key) != "ActiveActionsTaken", timeout=COOLDOWN + 60, what="the cooldown", interval=2
    )
    capped = eventually(
        lambda: (
            (pool := twin_pool(sandbox, node, "data"))["total_size"] > 18 * TI
            and pool["last_operation"]["status"] == "OPERATION_SUCCESSFUL"
            and pool
        ),
        timeout=180,
        what="the pool grown a second time",
        interval=1,
    )
    # 18Ti + 50% = 27Ti; 3 more drives would pass maxdrives 8, so auto resizes the 6 drives, as far as 20Ti lets.
    assert capped["drive_count"] == 6
    assert capped["total_size"] <= 20 * TI
    assert capped["total_size"] > 20 * TI - 6 * GI
    eventually(lambda: state_of(api, key) == "ActiveActionsTaken", timeout=60, what="state ActiveActionsTaken")
    verified = eventually(
        lambda: len(found := records(agent, "action-verified", key)) >= 2 and found, timeout=30, what="verified"
    )
    assert verified[1]["before"] == "18Ti" and verified[1]["after"].endswith("by resize-disk")
    assert "capped at maxsize" in verified[1]["reason"]
    assert sum(e["reason"] == "ActionVerified" for e in events_about(api, node)) >= 2
    assert action_count(agent, "verified") == 2
    assert sandbox.twin_client().state()["resize_calls"][-1]["query"]["operation_type"] == "RESIZE_TYPE_RESIZE_DISK"


def test_then_it_is_declined_at_maxsize(sandbox: Sandbox, api: KubeApi, nodes: list[str], agent: AgentProcess) -> None:
    node = nodes[0]
    key = f"{node}/data"
    calls = len(sandbox.twin_client().state()["resize_calls"])
    total = twin_pool(sandbox, node, "data")["total_size"]
    fill(sandbox, node, "data", 0.75)
    eventually(
        lambda: state_of(api, key) != "ActiveActionsTaken", timeout=COOLDOWN + 60, what="the cooldown", interval=2
    )
    eventually(lambda: state_of(api, key) == "ActionsDeclined", timeout=180, what="state ActionsDeclined", interval=1)
    declined = records(agent, "action-declined", key)
    assert declined and declined[-1]["reason"].startswith("AtMaxSize"), declined
    assert any(e["reason"] == "ActionDeclined" and e["type"] == "Warning" for e in events_about(api, node))
    assert action_count(agent, "declined-at-maxsize") >= 1
    assert twin_pool(sandbox, node, "data")["total_size"] == total
    assert len(sandbox.twin_client().state()["resize_calls"]) == calls


def test_dry_run_records_the_expansion_and_changes_nothing(
    sandbox: Sandbox, api: KubeApi, nodes: list[str], agent: AgentProcess, tmp_path: Path
) -> None:
    agent.stop()
    for item in api.get(STATE_OBJECTS)["items"]:
        api.delete(f"{STATE_OBJECTS}/{item['metadata']['name']}")
    node = nodes[1]
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
        assert touched <= OWN_OBJECTS, touched
        assert 'outcome="dry-run"' in dry.metrics()
    finally:
        dry.stop()
