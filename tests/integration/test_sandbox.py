"""The whole sandbox, brought up once: what the agent will rely on, checked against the real programs.

Order matters: the module shares one sandbox, and the last test tears it down and checks that
nothing is left running. Each fault is undone by the test that made it.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from helpers import eventually

from agent.adapters.clock import WallClock
from agent.adapters.prometheus import PrometheusClient
from sandbox import workload
from sandbox.environment import Sandbox
from sandbox.kube import KubeApi, node_condition, node_taint_keys
from sandbox.process import port_is_open

pytestmark = pytest.mark.sandbox

PODS = f"/api/v1/namespaces/{workload.NAMESPACE}/pods"
PVCS = f"/api/v1/namespaces/{workload.NAMESPACE}/persistentvolumeclaims"
GI = 1024**3


def kafka_volumes(metric: str) -> str:
    """The metric for Kafka's PVCs only: the neighbours' PVCs (namespace `neighbours`) share the StorageClass."""
    return f'{metric}{{namespace="{workload.NAMESPACE}"}}'


@pytest.fixture(scope="module")
def api(sandbox: Sandbox) -> KubeApi:
    return sandbox.kube.api()


@pytest.fixture(scope="module")
def prometheus(sandbox: Sandbox) -> PrometheusClient:
    return PrometheusClient(url=sandbox.prometheus_url, clock=WallClock())


def pod(api: KubeApi, broker: int) -> dict[str, Any]:
    found: dict[str, Any] = api.get(f"{PODS}/{workload.pod_name(broker)}")
    return found


def test_status_json_names_every_endpoint(sandbox: Sandbox) -> None:
    status = sandbox.status()
    for key in ("kubeconfig", "prometheus_url", "kafka_bootstrap", "storage_api_url", "apiserver_audit_log"):
        assert status[key], key
    assert Path(status["kubeconfig"]).is_file()
    assert Path(status["apiserver_audit_log"]).is_file()
    assert status["up"] is True
    json.dumps(status)


def test_four_broker_pods_run_on_kwok_nodes_with_bound_volumes(api: KubeApi, sandbox: Sandbox) -> None:
    pods = api.get(PODS)["items"]
    running = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods if p["status"].get("phase") == "Running"}
    assert sorted(running) == [workload.pod_name(b) for b in range(4)]
    assert len(set(running.values())) == 4, "anti-affinity puts one broker per node"
    assert set(running.values()) <= set(sandbox.kube.node_names)
    claims = api.get(PVCS)["items"]
    assert sorted(c["metadata"]["name"] for c in claims if c["status"].get("phase") == "Bound") == [
        workload.pvc_name(b) for b in range(4)
    ]
    assert {c["status"]["capacity"]["storage"] for c in claims} == {"400Gi"}


def test_each_broker_volume_is_a_csi_volume_attached_to_its_pods_node(api: KubeApi, sandbox: Sandbox) -> None:
    driver = sandbox.twin_client().healthz()["csi_driver"]
    assert api.get(f"/apis/storage.k8s.io/v1/csidrivers/{driver}")["spec"]["attachRequired"] is True
    attachments = api.get("/apis/storage.k8s.io/v1/volumeattachments")["items"]
    for broker in range(4):
        volume = api.get(f"{PVCS}/{workload.pvc_name(broker)}")["spec"]["volumeName"]
        csi = api.get(f"/api/v1/persistentvolumes/{volume}")["spec"]["csi"]
        assert csi["driver"] == driver and csi["volumeHandle"] and csi["fsType"] == "ext4"
        node = pod(api, broker)["spec"]["nodeName"]
        found = [a for a in attachments if a["spec"]["source"].get("persistentVolumeName") == volume]
        assert [(a["spec"]["nodeName"], a["spec"]["attacher"], a["status"]["attached"]) for a in found] == [
            (node, driver, True)
        ], f"{volume} attached to {node} only"


def test_every_storage_node_has_a_pool_from_the_start(sandbox: Sandbox) -> None:
    pools = sandbox.twin_client().pools()
    assert sorted(p["node"] for p in pools) == sorted(sandbox.kube.node_names)
    for found in pools:
        assert found["labels"]["kafka-autopilot.io/pool"] == "kafka", "the shipped pool rule selects it"
        assert 0 < found["used"] < 0.7 * found["total_size"], "below the shipped rule's 70%: it watches, it waits"


def test_prometheus_has_real_broker_metrics_and_the_twins_volume_metrics(
    prometheus: PrometheusClient, sandbox: Sandbox
) -> None:
    leaders = eventually(
        lambda: (
            len(found := [s for s in prometheus.instant_query("kafka_server_replicamanager_leadercount") if s.has_data])
            == 4
            and found
        ),
        timeout=60,
        what="leader counts of 4 brokers",
    )
    assert sorted(sample.labels["pod"] for sample in leaders) == [workload.pod_name(b) for b in range(4)]
    capacities = eventually(
        lambda: len(found := prometheus.instant_query(kafka_volumes("px_volume_capacity_bytes"))) == 4 and found,
        timeout=60,
        what="twin volume metrics for 4 PVCs",
    )
    assert {s.labels["pvc"] for s in capacities} == {workload.pvc_name(b) for b in range(4)}
    assert {s.value for s in capacities} == {400 * GI}
    targets = eventually(
        lambda: (
            {"storage-twin", "agent", "controller"}
            <= (roles := {s.labels.get("role") for s in prometheus.instant_query("up")})
            and roles
        ),
        timeout=30,
        what="Prometheus scraping the controller, the twin and the agent's address",
    )
    assert None in targets, "and the brokers"
    used = prometheus.instant_query(kafka_volumes("kubelet_volume_stats_used_bytes"))
    assert len(used) == 4
    sandbox.twin_client().define_pool(
        node=sandbox.kube.node_names[0], pool="pool-1", drives=3, drive_size=GI * 1024, used=0
    )
    pools = eventually(
        lambda: {s.labels["pool"]: s.value for s in prometheus.instant_query("px_pool_stats_total_bytes")}.get(
            "pool-1"
        ),
        timeout=30,
        what="the defined pool's metrics",
    )
    assert pools == 3 * 1024 * GI
    initial = prometheus.instant_query('px_pool_stats_total_bytes{pool="0"}')
    assert sorted(s.labels["node"] for s in initial) == sorted(sandbox.kube.node_names)


def test_a_resize_request_is_followed_by_pv_pvc_and_metrics(api: KubeApi, prometheus: PrometheusClient) -> None:
    claim = workload.pvc_name(0)
    api.merge_patch(f"{PVCS}/{claim}", {"spec": {"resources": {"requests": {"storage": "800Gi"}}}})
    eventually(
        lambda: api.get(f"{PVCS}/{claim}")["status"]["capacity"]["storage"] == "800Gi",
        timeout=60,
        what="PVC status capacity 800Gi",
    )
    volume = api.get(f"{PVCS}/{claim}")["spec"]["volumeName"]
    assert api.get(f"/api/v1/persistentvolumes/{volume}")["spec"]["capacity"]["storage"] == "800Gi"
    eventually(
        lambda: any(
            s.value == 800 * GI for s in prometheus.instant_query(f'px_volume_capacity_bytes{{pvc="{claim}"}}')
        ),
        timeout=30,
        what="the capacity metric following the resize",
    )


async def _leaders(bootstrap: str) -> dict[tuple[str, int], tuple[int, list[int]]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        described = await admin.describe_topics(["sandbox-imbalance"])
    finally:
        await admin.close()
    return {
        ("sandbox-imbalance", p["partition"]): (p["leader"], list(p["replicas"]))
        for topic in described
        for p in topic["partitions"]
    }


async def _create_topic(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name="sandbox-imbalance", num_partitions=8, replication_factor=3)])
    finally:
        await admin.close()


def test_a_broker_restart_leaves_leadership_away_from_preferred_replicas(
    sandbox: Sandbox, prometheus: PrometheusClient
) -> None:
    bootstrap = sandbox.kafka.bootstrap_servers
    asyncio.run(_create_topic(bootstrap))
    eventually(lambda: len(asyncio.run(_leaders(bootstrap))) == 8, timeout=30, what="8 partitions with leaders")
    sandbox.fault("stop-broker", "2")
    assert not sandbox.kafka.broker_running(2)
    sandbox.fault("start-broker", "2")
    eventually(lambda: sandbox.kafka.broker_running(2), timeout=30, what="the bridge restarting broker 2")
    sandbox.kafka.wait_for_brokers([2])
    leaders = asyncio.run(_leaders(bootstrap))
    away = [key for key, (leader, replicas) in leaders.items() if replicas[0] == 2 and leader != 2]
    assert away, f"expected partitions preferring broker 2 to be led elsewhere: {leaders}"
    eventually(
        lambda: any(
            s.value > 0
            for s in prometheus.instant_query("kafka_controller_kafkacontroller_preferredreplicaimbalancecount")
        ),
        timeout=60,
        what="preferredreplicaimbalancecount > 0",
    )


def test_a_partitioned_node_goes_not_ready_but_its_broker_keeps_serving(sandbox: Sandbox, api: KubeApi) -> None:
    node = pod(api, 3)["spec"]["nodeName"]
    sandbox.fault("partition-node", node)
    try:
        eventually(
            lambda: node_condition(api.get(f"/api/v1/nodes/{node}")) in ("Unknown", "False"),
            timeout=90,
            what=f"{node} NotReady",
        )
        assert sandbox.kafka.broker_running(3)
        sandbox.kafka.wait_for_brokers([3])
    finally:
        sandbox.fault("recover-node", node)
    eventually(lambda: node_condition(api.get(f"/api/v1/nodes/{node}")) == "True", timeout=90, what=f"{node} Ready")


def test_a_failed_nodes_broker_comes_back_elsewhere_only_after_a_force_delete(sandbox: Sandbox, api: KubeApi) -> None:
    node = pod(api, 1)["spec"]["nodeName"]
    sandbox.fault("fail-node", node)
    try:
        eventually(
            lambda: node_condition(api.get(f"/api/v1/nodes/{node}")) in ("Unknown", "False"),
            timeout=90,
            what=f"{node} NotReady",
        )
        eventually(lambda: not sandbox.kafka.broker_running(1), timeout=30, what="broker 1 dying with its node")
        eventually(
            lambda: "node.kubernetes.io/unreachable" in node_taint_keys(api.get(f"/api/v1/nodes/{node}")),
            timeout=60,
            what="the unreachable taint",
        )
        time.sleep(15)
        stuck = pod(api, 1)
        assert stuck["spec"]["nodeName"] == node, "Kubernetes alone does not move a StatefulSet pod off a lost node"
        api.delete(f"{PODS}/{workload.pod_name(1)}", grace_period_seconds=0)
        moved = eventually(
            lambda: (p := pod(api, 1))["status"].get("phase") == "Running" and p["spec"]["nodeName"] != node and p,
            timeout=120,
            what="kafka-1 Running on another node",
        )
        assert moved["spec"]["nodeName"] != node
        eventually(lambda: sandbox.kafka.broker_running(1), timeout=30, what="broker 1 following its pod")
        sandbox.kafka.wait_for_brokers([1])
    finally:
        sandbox.fault("recover-node", node)


def test_down_leaves_no_process_and_no_port(sandbox: Sandbox) -> None:
    kube_ports = list(sandbox.kube.ports().values())
    kafka_ports = [int(address.rsplit(":", 1)[1]) for address in sandbox.kafka.metrics_targets.values()]
    own_ports = list(sandbox.ports().values())
    sandbox.down(progress=lambda message: None)
    status = sandbox.status()
    assert not any(status["processes"].values()), status["processes"]
    for port in kube_ports + kafka_ports + own_ports:
        assert not port_is_open(port), f"port {port} still open"
