"""The agent in the deployment shapes users run besides the default StatefulSet: Strimzi node pools
(broker ids 10-13, our stand-in of Strimzi's CRDs with the operator twin) and the Bitnami chart
(`broker.minId: 100`: pod kafka-broker-0 is broker 100). The default shape runs the same scenarios in
test_agent_e2e and test_rebalance_e2e.

One sandbox and one live agent per shape, with the shape's shipped rules (`rules_dir` of the sandbox
status) unchanged. The agent learns each pod's broker id from Kafka (the brokers advertise their pod's
IP), never from a pod name. In order, per shape:
- a failed node: its broker runs elsewhere; the neighbour's pod and VolumeAttachment and the DaemonSet
  pod on that node are untouched; once the node is back, the agent's cordon is gone within 60 s;
- a partitioned node whose broker still serves: no force-delete, the node never stays unschedulable;
- a broker restarted: its preferred leadership restored;
- a volume over the threshold: resized in bitnami; in strimzi, declined with the owner named (the
  operator owns those PVCs);
- two broker nodes failing at once, with a topic at min.insync.replicas 2 on both: the min-ISR guard,
  counting every failing node, holds the reschedule and nothing is force-deleted.
A node that flaps back within the grace is left alone whatever runs on it: that case runs in the default
shape only (test_agent_e2e), since the shape does not enter it.
Latencies are printed for the closing notes (pytest -s shows them).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    AgentProcess,
    away_from_preferred,
    broker_moves_off_failed_node,
    create_topic,
    imbalance,
    pods_on,
    restart_broker,
    schedulable_within,
    view,
    wait_for_visible_imbalance,
)
from helpers import eventually

from agent.adapters.clock import WallClock
from agent.adapters.prometheus import PrometheusClient
from sandbox.environment import Sandbox
from sandbox.kube import KubeApi

pytestmark = pytest.mark.sandbox

SHAPED = pytest.mark.parametrize("shaped_sandbox", ["strimzi", "bitnami"], indirect=True, scope="module")
RULE_NAMES = ("kafka-node-failure.yaml", "kafka-leader-rebalance.yaml", "kafka-resize.yaml")
TOPIC = "shapes-e2e"
GI = 1024**3


@pytest.fixture(scope="module")
def api(shaped_sandbox: Sandbox) -> KubeApi:
    return shaped_sandbox.kube.api()


@pytest.fixture(scope="module")
def agent(shaped_sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    rules_dir = Path(shaped_sandbox.status()["rules_dir"])
    with AgentProcess(
        sandbox=shaped_sandbox,
        rules=[rules_dir / name for name in RULE_NAMES],
        audit_path=tmp_path_factory.mktemp("agent") / "audit.jsonl",
    ) as process:
        yield process


def brokers(sandbox: Sandbox) -> list[dict[str, Any]]:
    return sorted(sandbox.status()["brokers"], key=lambda broker: broker["broker_id"])


def pod_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{name}"


def uid_of(api: KubeApi, namespace: str, name: str) -> str:
    return str(api.get(pod_path(namespace, name))["metadata"]["uid"])


@SHAPED
def test_a_failed_nodes_broker_runs_elsewhere_and_nothing_else_there_is_touched(
    shaped_sandbox: Sandbox, api: KubeApi, agent: AgentProcess
) -> None:
    sandbox = shaped_sandbox
    broker = brokers(sandbox)[1]
    node = broker["node"]
    neighbour = next(n for n in sandbox.status()["neighbours"] if n["node"] == node)
    bystanders = {
        key: uid for key, uid in pods_on(api, node).items() if key != f"{broker['namespace']}/{broker['pod']}"
    }
    assert f"{neighbour['namespace']}/{neighbour['pod']}" in bystanders
    assert len(bystanders) >= 2, bystanders  # the neighbour and a DaemonSet pod at least
    try:
        moved, latency = broker_moves_off_failed_node(
            sandbox,
            api,
            broker=broker["broker_id"],
            node=node,
            timeout=240,
            pod=broker["pod"],
            namespace=broker["namespace"],
        )
        print(
            f"\nLATENCY {sandbox.shape}: node NotReady -> broker {broker['broker_id']} Running elsewhere:"
            f" {latency:.1f}s"
        )
        assert moved["spec"]["nodeName"] != node
        eventually(
            lambda: sandbox.kafka.broker_running(broker["broker_id"]),
            timeout=90,
            what=f"broker {broker['broker_id']} following its pod",
        )
        verified = eventually(
            lambda: [r for r in agent.records() if r["event"] == "action-verified" and r["object"] == node],
            timeout=120,
            what="the reschedule verified",
        )
        assert f"broker {broker['broker_id']} registered" in verified[0]["reason"], verified[0]
        assert {key: uid for key, uid in pods_on(api, node).items() if key in bystanders} == bystanders
        if neighbour["volume_attachment"]:
            assert api.get(f"/apis/storage.k8s.io/v1/volumeattachments/{neighbour['volume_attachment']}")
    finally:
        sandbox.fault("recover-node", node)
    took = schedulable_within(api, node, seconds=60, what=f"{node} back and uncordoned by the agent")
    print(f"LATENCY {sandbox.shape}: node recovered -> schedulable again: {took:.1f}s")
    released = [r for r in agent.records() if r["object"] == node and r.get("after") == "the agent's own marks undone"]
    assert released and released[-1]["event"] == "action-verified", released


@SHAPED
def test_a_partitioned_node_whose_broker_still_serves_is_left_running(
    shaped_sandbox: Sandbox, api: KubeApi, agent: AgentProcess
) -> None:
    sandbox = shaped_sandbox
    broker = brokers(sandbox)[2]
    node = broker["node"]
    uid = uid_of(api, broker["namespace"], broker["pod"])
    sandbox.fault("partition-node", node)
    try:
        held = eventually(
            lambda: [r for r in agent.records() if r["event"] == "action-held" and r["object"] == node],
            timeout=150,
            what="the reschedule held back",
        )
        assert "Kafka still sees" in held[0]["reason"], held[0]
        assert uid_of(api, broker["namespace"], broker["pod"]) == uid
        assert sandbox.kafka.broker_running(broker["broker_id"])
    finally:
        sandbox.fault("recover-node", node)
    took = schedulable_within(api, node, seconds=60, what=f"{node} schedulable after the partition")
    print(f"\nLATENCY {sandbox.shape}: partition recovered -> schedulable: {took:.1f}s")


@SHAPED
def test_a_restarted_broker_gets_its_preferred_leadership_back(shaped_sandbox: Sandbox, agent: AgentProcess) -> None:
    sandbox = shaped_sandbox
    ids = [broker["broker_id"] for broker in brokers(sandbox)]
    assignment = {n: [ids[n % 4], ids[(n + 1) % 4], ids[(n + 2) % 4]] for n in range(8)}
    prometheus = PrometheusClient(url=sandbox.prometheus_url, clock=WallClock())
    create_topic(sandbox, TOPIC, assignment)
    eventually(
        lambda: not away_from_preferred(view(sandbox)), timeout=90, what=f"{TOPIC} led by its preferred replicas"
    )
    restarted = ids[0]
    restart_broker(sandbox, restarted)
    wait_for_visible_imbalance(sandbox, prometheus, restarted, topic=TOPIC)
    visible_at = time.monotonic()
    eventually(lambda: not away_from_preferred(view(sandbox)), timeout=150, what="balanced", interval=0.2)
    print(f"\nLATENCY {sandbox.shape}: imbalance visible -> balanced: {time.monotonic() - visible_at:.1f}s")
    eventually(lambda: imbalance(prometheus) == 0, timeout=60, what="the controller's imbalance back at 0")


@SHAPED
def test_a_full_volume_is_resized_or_declined_with_its_owner_named(
    shaped_sandbox: Sandbox, api: KubeApi, agent: AgentProcess
) -> None:
    sandbox = shaped_sandbox
    broker = brokers(sandbox)[0]
    (claim,) = broker["pvcs"]
    sandbox.twin_client().set_used(namespace=broker["namespace"], pvc=claim, used_bytes=330 * GI)
    key = f"{broker['namespace']}/{claim}"
    if sandbox.shape == "strimzi":
        declined = eventually(
            lambda: [r for r in agent.records() if r["event"] == "action-declined" and r["object"] == key],
            timeout=90,
            what="the resize declined",
        )
        assert "owned by" in declined[0]["reason"], declined[0]
        return
    path = f"/api/v1/namespaces/{broker['namespace']}/persistentvolumeclaims/{claim}"
    eventually(
        lambda: api.get(path)["status"]["capacity"]["storage"] == "800Gi", timeout=120, what=f"{claim} grown to 800Gi"
    )


@SHAPED
def test_two_nodes_failing_at_once_are_held_by_the_min_isr_guard(
    shaped_sandbox: Sandbox, api: KubeApi, agent: AgentProcess
) -> None:
    sandbox = shaped_sandbox
    current = brokers(sandbox)
    first, second = current[1], current[2]
    assert first["node"] != second["node"]
    ids = [broker["broker_id"] for broker in current]
    create_topic(
        sandbox,
        "guarded",
        {0: [ids[0], first["broker_id"], second["broker_id"]]},
        configs={"min.insync.replicas": "2"},
    )
    uids = {b["pod"]: uid_of(api, b["namespace"], b["pod"]) for b in (first, second)}
    for broker in (first, second):
        sandbox.fault("fail-node", broker["node"])
    try:
        held = eventually(
            lambda: [
                r
                for r in agent.records()
                if r["event"] == "action-held"
                and r["object"] in (first["node"], second["node"])
                and "below min.insync.replicas" in r["reason"]
            ],
            timeout=180,
            what="the reschedule held by the min-ISR guard",
        )
        print(f"\nMIN-ISR GUARD {sandbox.shape}: {held[0]['reason']}")
        assert "guarded-0" in held[0]["reason"], held[0]
        assert {b["pod"]: uid_of(api, b["namespace"], b["pod"]) for b in (first, second)} == uids
    finally:
        for broker in (first, second):
            sandbox.fault("recover-node", broker["node"])
    for broker in (first, second):
        schedulable_within(api, broker["node"], seconds=60, what=f"{broker['node']} schedulable again")
