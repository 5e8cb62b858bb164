"""The agent at work against the sandbox, with the shipped rules unchanged.

One sandbox and one live agent for the module; the tests run in order and form one story:
- the reference table, step by step (its 5-minute cooldowns are waited out, as the rule says);
- a failed node's broker moves; a flapping node and a partitioned node are left alone;
- a restart in the middle of a resize does not resize twice;
- a stopped Prometheus leads to no action and shows in the rule's health;
- dry-run makes the same decisions and mutates nothing but the agent's own objects.
Latencies measured here are printed for the closing notes (pytest -s shows them).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from e2e_support import (
    PODS,
    PVCS,
    RULES,
    STATE_OBJECTS,
    AgentProcess,
    agent_mutations,
    audit_log_entries,
    broker_moves_off_failed_node,
    capacity,
    events_for,
    node_of,
    patch_times,
    pods_on,
    requested,
    schedulable_within,
    set_usage,
    state_of,
    verified_resizes,
)
from helpers import eventually

from sandbox import workload
from sandbox.environment import Sandbox
from sandbox.kube import KubeApi, node_condition

pytestmark = pytest.mark.sandbox

RULE_FILES = [RULES / "kafka-resize.yaml", RULES / "kafka-node-failure.yaml"]
COOLDOWN = 300


@pytest.fixture(scope="module")
def api(sandbox: Sandbox) -> KubeApi:
    return sandbox.kube.api()


@pytest.fixture(scope="module")
def agent(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    with AgentProcess(
        sandbox=sandbox, rules=RULE_FILES, audit_path=tmp_path_factory.mktemp("agent") / "audit.jsonl"
    ) as process:
        yield process


def seconds_since(moment: float, timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp() - moment


def wait_for_cooldown(api: KubeApi, rule: str, key: str) -> None:
    eventually(
        lambda: state_of(api, rule, key) != "ActiveActionsTaken", timeout=COOLDOWN + 60, what="the cooldown", interval=2
    )


# --- the reference table, step 1 ------------------------------------------------------------------


def test_step_1_resizes_400gi_to_800gi(sandbox: Sandbox, api: KubeApi, agent: AgentProcess) -> None:
    claim = workload.pvc_name(0)
    crossed = set_usage(sandbox, claim, 330)
    eventually(lambda: requested(api, claim) == "800Gi", timeout=60, what="the PVC request at 800Gi")
    eventually(lambda: capacity(api, claim) == "800Gi", timeout=60, what="capacity 800Gi")
    eventually(
        lambda: state_of(api, "kafka-resize", f"kafka/{claim}") == "ActiveActionsTaken", timeout=30, what="state Taken"
    )
    verified_once = eventually(lambda: verified_resizes(agent, claim), timeout=30, what="the resize verified")
    (patched,) = patch_times(sandbox, claim)
    print(f"\nLATENCY threshold-crossing sample -> PVC patch: {seconds_since(crossed, patched):.2f}s")
    assert [(r["before"], r["after"]) for r in verified_once] == [("400Gi", "800Gi")]
    assert any(e["reason"] == "ActionVerified" for e in events_for(api, claim))
    assert 'outcome="verified"' in agent.metrics()


# --- node failure ---------------------------------------------------------------------------------


def test_a_failed_nodes_broker_is_running_elsewhere(sandbox: Sandbox, api: KubeApi, agent: AgentProcess) -> None:
    node = node_of(api, 1)
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    volume = api.get(f"{PVCS}/{workload.pvc_name(1)}")["spec"]["volumeName"]
    neighbour = next(n for n in sandbox.status()["neighbours"] if n["node"] == node)
    bystanders = {key: uid for key, uid in pods_on(api, node).items() if key != f"kafka/{workload.pod_name(1)}"}
    assert len(bystanders) >= 2, bystanders  # the neighbour and a DaemonSet pod at least
    try:
        moved, latency = broker_moves_off_failed_node(sandbox, api, broker=1, node=node, timeout=180)
        print(f"\nLATENCY node NotReady -> broker pod Running elsewhere: {latency:.1f}s")
        assert moved["spec"]["nodeName"] != node
        assert api.get(f"/api/v1/nodes/{node}")["spec"].get("unschedulable") is True
        eventually(lambda: sandbox.kafka.broker_running(1), timeout=60, what="broker 1 following its pod")
        eventually(lambda: state_of(api, "kafka-node-failure", node) == "ActiveActionsTaken", timeout=120, what="Taken")
        assert any(e["reason"] == "ActionVerified" for e in events_for(api, node))
        deleted = [
            entry["objectRef"].get("name")
            for entry in agent_mutations(audit_log_entries(sandbox), since=since)
            if entry["objectRef"].get("resource") == "volumeattachments" and entry["verb"] == "delete"
        ]
        assert deleted, "the agent deleted the failed node's VolumeAttachment"
        attachments = api.get("/apis/storage.k8s.io/v1/volumeattachments")["items"]
        assert [
            (a["spec"]["nodeName"], a.get("status", {}).get("attached"))
            for a in attachments
            if a["spec"]["source"].get("persistentVolumeName") == volume
        ] == [(moved["spec"]["nodeName"], True)], "the volume is attached to the new node only"
        assert {key: uid for key, uid in pods_on(api, node).items() if key in bystanders} == bystanders
        if neighbour["volume_attachment"]:
            assert api.get(f"/apis/storage.k8s.io/v1/volumeattachments/{neighbour['volume_attachment']}")
    finally:
        sandbox.fault("recover-node", node)
    took = schedulable_within(api, node, seconds=60, what=f"{node} back and uncordoned by the agent")
    print(f"LATENCY node recovered -> schedulable again (the agent's own cordon undone): {took:.1f}s")


def test_a_node_that_flaps_back_within_the_grace_is_left_alone(sandbox: Sandbox, api: KubeApi) -> None:
    node = node_of(api, 2)
    uid = api.get(f"{PODS}/{workload.pod_name(2)}")["metadata"]["uid"]
    sandbox.fault("fail-node", node)
    time.sleep(25)
    sandbox.fault("recover-node", node)
    eventually(lambda: node_condition(api.get(f"/api/v1/nodes/{node}")) == "True", timeout=60, what="Ready again")
    time.sleep(20)
    assert api.get(f"{PODS}/{workload.pod_name(2)}")["metadata"]["uid"] == uid
    assert not api.get(f"/api/v1/nodes/{node}")["spec"].get("unschedulable")
    assert state_of(api, "kafka-node-failure", node) in (None, "Normal", "Initializing")


def test_a_partitioned_node_whose_broker_serves_gets_no_force_delete(
    sandbox: Sandbox, api: KubeApi, agent: AgentProcess
) -> None:
    node = node_of(api, 3)
    uid = api.get(f"{PODS}/{workload.pod_name(3)}")["metadata"]["uid"]
    sandbox.fault("partition-node", node)
    try:
        held = eventually(
            lambda: [r for r in agent.records() if r["event"] == "action-held" and r["object"] == node],
            timeout=150,
            what="the executor holding back",
        )
        assert "Kafka still sees" in held[0]["reason"]
        assert api.get(f"{PODS}/{workload.pod_name(3)}")["metadata"]["uid"] == uid
        assert sandbox.kafka.broker_running(3)
    finally:
        sandbox.fault("recover-node", node)
    took = schedulable_within(api, node, seconds=60, what=f"{node} schedulable after the partition")
    print(f"\nLATENCY partition recovered -> schedulable: {took:.1f}s")


# --- the reference table, step 2, and a restart mid-action -------------------------------------------


def test_step_2_resizes_800gi_to_1ti_capped(sandbox: Sandbox, api: KubeApi, agent: AgentProcess) -> None:
    claim = workload.pvc_name(0)
    set_usage(sandbox, claim, 650)
    wait_for_cooldown(api, "kafka-resize", f"kafka/{claim}")
    eventually(lambda: capacity(api, claim) == "1Ti", timeout=90, what="capacity 1Ti")
    verified = eventually(
        lambda: len(found := verified_resizes(agent, claim)) >= 2 and found,
        timeout=30,
        what="the second resize verified",
    )
    assert [(r["before"], r["after"]) for r in verified] == [("400Gi", "800Gi"), ("800Gi", "1Ti (capped at maxsize)")]


def test_a_restart_mid_action_resizes_exactly_once(sandbox: Sandbox, api: KubeApi, agent: AgentProcess) -> None:
    claim = workload.pvc_name(2)
    set_usage(sandbox, claim, 330)
    eventually(lambda: requested(api, claim) == "800Gi", timeout=60, what="the patch", interval=0.1)
    agent.kill()
    killed_at = capacity(api, claim)
    agent.start()
    eventually(lambda: capacity(api, claim) == "800Gi", timeout=60, what="capacity 800Gi")
    eventually(
        lambda: state_of(api, "kafka-resize", f"kafka/{claim}") == "ActiveActionsTaken", timeout=60, what="Taken"
    )
    time.sleep(10)
    print(f"\nrestart: capacity when killed {killed_at}")
    assert len(patch_times(sandbox, claim)) == 1
    assert requested(api, claim) == "800Gi"


# --- missing metrics ----------------------------------------------------------------------------------


def test_no_action_without_metrics_and_the_rule_health_says_so(
    sandbox: Sandbox, api: KubeApi, agent: AgentProcess
) -> None:
    claim = workload.pvc_name(3)
    sandbox.fault("stop-prometheus")
    try:
        set_usage(sandbox, claim, 390)
        time.sleep(12)
        assert requested(api, claim) == "400Gi"
        errors = [r for r in agent.records() if r["event"] == "cycle-error" and r["rule"] == "kafka-resize"]
        assert errors and "prometheus" in errors[-1]["reason"].lower()
        assert 'kafka_autopilot_query_errors_total{rule="kafka-resize"}' in agent.metrics()
        assert 'kafka_autopilot_rule_healthy{rule="kafka-resize"} 0' in agent.metrics()
        assert "prometheus" in agent.rule_health()["kafka-resize"].lower()
    finally:
        sandbox.fault("start-prometheus")
        set_usage(sandbox, claim, 100)
    eventually(lambda: agent.rule_health()["kafka-resize"] == "ok", timeout=60, what="the rule healthy again")


# --- the reference table, step 3 -------------------------------------------------------------------------


def test_step_3_is_declined_at_maxsize(sandbox: Sandbox, api: KubeApi, agent: AgentProcess) -> None:
    claim = workload.pvc_name(0)
    set_usage(sandbox, claim, 820)
    wait_for_cooldown(api, "kafka-resize", f"kafka/{claim}")
    eventually(
        lambda: state_of(api, "kafka-resize", f"kafka/{claim}") == "ActionsDeclined", timeout=60, what="declined"
    )
    assert capacity(api, claim) == "1Ti"
    assert len(patch_times(sandbox, claim)) == 2
    declined = [r for r in agent.records() if r["event"] == "action-declined" and r["object"] == f"kafka/{claim}"]
    assert declined and declined[0]["reason"].startswith("AtMaxSize")
    assert any(e["reason"] == "ActionDeclined" and e["type"] == "Warning" for e in events_for(api, claim))
    assert 'outcome="declined-at-maxsize"' in agent.metrics()


# --- dry-run ------------------------------------------------------------------------------------------------


def test_dry_run_decides_the_same_and_changes_nothing(
    sandbox: Sandbox, api: KubeApi, agent: AgentProcess, tmp_path: Path
) -> None:
    agent.stop()
    for item in api.get(STATE_OBJECTS)["items"]:
        api.delete(f"{STATE_OBJECTS}/{item['metadata']['name']}")
    since = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    dry = AgentProcess(sandbox=sandbox, rules=RULE_FILES, audit_path=tmp_path / "dry.jsonl", dry_run=True)
    dry.start()
    try:
        claim = workload.pvc_name(1)
        set_usage(sandbox, claim, 330)
        planned = eventually(
            lambda: [r for r in dry.records() if r["event"] == "action-dry-run" and r["object"] == f"kafka/{claim}"],
            timeout=60,
            what="a dry-run resize record",
        )
        assert (planned[0]["before"], planned[0]["after"]) == ("400Gi", "800Gi")
        node = node_of(api, 0)
        sandbox.fault("fail-node", node)
        try:
            eventually(
                lambda: [r for r in dry.records() if r["event"] == "action-dry-run" and r["object"] == node],
                timeout=180,
                what="a dry-run reschedule record",
            )
        finally:
            sandbox.fault("recover-node", node)
        assert requested(api, claim) == "400Gi"
        assert node_of(api, 0) == node
        assert not api.get(f"/api/v1/nodes/{node}")["spec"].get("unschedulable")
        time.sleep(2)
        touched = {
            entry["objectRef"].get("resource") for entry in agent_mutations(audit_log_entries(sandbox), since=since)
        }
        assert touched <= {"autopilotruleobjects", "events", "customresourcedefinitions"}, touched
        live_path = ["Normal", "Triggered", "ActiveActionsPending", "ActiveActionsInProgress", "ActiveActionsTaken"]
        dry_path = [r["to"] for r in dry.records() if r["event"] == "transition" and r["object"] == f"kafka/{claim}"]
        assert dry_path[: len(live_path)] == live_path
    finally:
        dry.stop()
