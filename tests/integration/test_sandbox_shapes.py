"""Each sandbox shape brought up once: its brokers, as Kafka itself reports them, and its neighbours.

One `up` per shape (module-scoped, indirect parametrization), so the three shapes cost three bring-ups.
Kafka's own metadata must list the shape's broker ids with hosts equal to the pods' IPs: that is what
lets the agent learn a pod's broker id from Kafka instead of from its name.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiokafka.client import AIOKafkaClient
from helpers import eventually

from sandbox import neighbours, shapes, workload
from sandbox.environment import REPO, Sandbox
from sandbox.kafka import run_sync
from sandbox.kube import KubeApi, KubeApiError

pytestmark = pytest.mark.sandbox

PODS = f"/api/v1/namespaces/{workload.NAMESPACE}/pods"
PVCS = f"/api/v1/namespaces/{workload.NAMESPACE}/persistentvolumeclaims"
POOL = (
    f"/apis/{shapes.STRIMZI_GROUP}/{shapes.STRIMZI_VERSION}/namespaces/{workload.NAMESPACE}"
    f"/kafkanodepools/{shapes.STRIMZI_POOL}"
)


@pytest.fixture(scope="module")
def api(shaped_sandbox: Sandbox) -> KubeApi:
    return shaped_sandbox.kube.api()


async def _metadata_brokers(bootstrap: str) -> dict[int, str]:
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await client.bootstrap()
        return {int(b.nodeId): str(b.host) for b in client.cluster.brokers()}
    finally:
        await client.close()


def kafka_hosts(sandbox: Sandbox) -> dict[int, str]:
    return run_sync(_metadata_brokers(sandbox.kafka.bootstrap_servers))


def pod_ips(api: KubeApi, shape: shapes.Shape) -> dict[str, str]:
    pods = api.get(f"{PODS}?labelSelector={shape.label_selector}")["items"]
    return {p["metadata"]["name"]: p["status"].get("podIP", "") for p in pods if p["status"].get("phase") == "Running"}


SHAPES = pytest.mark.parametrize("shaped_sandbox", shapes.SHAPE_NAMES, indirect=True, scope="module")


@SHAPES
def test_status_json_names_the_shape_its_brokers_neighbours_and_rules(shaped_sandbox: Sandbox) -> None:
    status = json.loads(json.dumps(shaped_sandbox.status()))
    shape = shaped_sandbox.definition
    assert status["up"] is True
    assert status["shape"] == shape.name
    assert status["rules_dir"] == str(REPO / shape.rules_dir)
    assert sorted(b["broker_id"] for b in status["brokers"]) == list(shape.broker_ids)
    for broker in status["brokers"]:
        assert broker["pod"] == shape.pod_name(broker["broker_id"])
        assert broker["namespace"] == workload.NAMESPACE
        assert broker["pvcs"] == [shape.pvc_name(broker["broker_id"])]
        assert broker["node"] in shaped_sandbox.kube.node_names
    broker_nodes = {b["node"] for b in status["brokers"]}
    assert len(broker_nodes) == 4
    assert {n["node"] for n in status["neighbours"]} == broker_nodes
    for neighbour in status["neighbours"]:
        assert neighbour["namespace"] == neighbours.NAMESPACE
        assert neighbour["pvc"] == f"data-{neighbour['pod']}"
        assert "volume_attachment" in neighbour


@SHAPES
def test_kafka_metadata_lists_the_shapes_broker_ids_at_their_pod_ips(shaped_sandbox: Sandbox, api: KubeApi) -> None:
    shape = shaped_sandbox.definition
    ips = pod_ips(api, shape)
    hosts = kafka_hosts(shaped_sandbox)
    assert sorted(hosts) == list(shape.broker_ids)
    assert {b: hosts[b] for b in shape.broker_ids} == {b: ips[shape.pod_name(b)] for b in shape.broker_ids}
    assert all(host.startswith("127.") and host != "127.0.0.1" for host in hosts.values())


@SHAPES
def test_every_broker_node_has_a_neighbour_with_a_volume_and_a_daemonset_pod(
    shaped_sandbox: Sandbox, api: KubeApi
) -> None:
    broker_nodes = {b["node"] for b in shaped_sandbox.status()["brokers"]}
    pods = api.get(f"/api/v1/namespaces/{neighbours.NAMESPACE}/pods")["items"]
    running = [p for p in pods if p["status"].get("phase") == "Running"]

    def nodes_of(app: str) -> set[str]:
        return {p["spec"]["nodeName"] for p in running if p["metadata"]["labels"].get("app") == app}

    assert broker_nodes <= nodes_of(neighbours.STATEFULSET)
    assert broker_nodes <= nodes_of(neighbours.DAEMONSET)
    claims = api.get(f"/api/v1/namespaces/{neighbours.NAMESPACE}/persistentvolumeclaims")["items"]
    assert len([c for c in claims if c["status"].get("phase") == "Bound"]) == 4
    assert {c["spec"]["storageClassName"] for c in claims} == {workload.STORAGE_CLASS}


@SHAPES
def test_stop_broker_takes_the_shapes_broker_id(shaped_sandbox: Sandbox) -> None:
    broker = shaped_sandbox.definition.broker_ids[-1]
    assert "stopped" in shaped_sandbox.fault("stop-broker", str(broker))
    assert not shaped_sandbox.kafka.broker_running(broker)
    shaped_sandbox.fault("start-broker", str(broker))
    eventually(lambda: shaped_sandbox.kafka.broker_running(broker), timeout=30, what=f"broker {broker} running")
    shaped_sandbox.kafka.wait_for_brokers([broker])
    with pytest.raises(ValueError):
        shaped_sandbox.fault("stop-broker", "7")


def strimzi_absent(sandbox: Sandbox, api: KubeApi) -> bool:
    """Outside the strimzi shape: no operator twin runs and no node pool exists."""
    try:
        api.get(POOL)
    except KubeApiError as error:
        return error.status == 404 and "operator-twin" not in sandbox.status()["processes"]
    return False


@SHAPES
def test_strimzi_pods_and_claims_are_named_labelled_and_owned_as_strimzi_does(
    shaped_sandbox: Sandbox, api: KubeApi
) -> None:
    if shaped_sandbox.definition.name != "strimzi":
        assert strimzi_absent(shaped_sandbox, api)
        return
    pool = api.get(POOL)
    assert pool["status"]["nodeIds"] == list(shapes.STRIMZI_NODE_IDS)
    kafka_uid = api.get(POOL.replace(f"kafkanodepools/{shapes.STRIMZI_POOL}", "kafkas/my-cluster"))["metadata"]["uid"]
    for node_id in shapes.STRIMZI_NODE_IDS:
        pod = api.get(f"{PODS}/my-cluster-brokers-{node_id}")
        labels = pod["metadata"]["labels"]
        assert labels["strimzi.io/cluster"] == "my-cluster"
        assert labels["strimzi.io/pool-name"] == "brokers"
        assert labels["strimzi.io/broker-role"] == "true"
        assert labels["strimzi.io/kind"] == "Kafka"
        assert labels["strimzi.io/name"] == "my-cluster-kafka"
        assert [o["kind"] for o in pod["metadata"]["ownerReferences"]] == ["StrimziPodSet"]
        claim = api.get(f"{PVCS}/data-0-my-cluster-brokers-{node_id}")
        assert claim["metadata"]["annotations"]["strimzi.io/delete-claim"] == "true"
        assert [(o["kind"], o["uid"]) for o in claim["metadata"]["ownerReferences"]] == [("Kafka", kafka_uid)]


@SHAPES
def test_strimzi_growing_the_pools_volume_grows_every_claim(shaped_sandbox: Sandbox, api: KubeApi) -> None:
    if shaped_sandbox.definition.name != "strimzi":
        assert strimzi_absent(shaped_sandbox, api)
        return
    pool = api.get(POOL)
    volumes: list[dict[str, Any]] = pool["spec"]["storage"]["volumes"]
    api.merge_patch(POOL, {"spec": {"storage": {"type": "jbod", "volumes": [{**volumes[0], "size": "500Gi"}]}}})
    names = [shaped_sandbox.definition.pvc_name(b) for b in shapes.STRIMZI_NODE_IDS]

    def capacities() -> set[str]:
        return {api.get(f"{PVCS}/{name}")["status"].get("capacity", {}).get("storage", "") for name in names}

    eventually(lambda: capacities() == {"500Gi"}, timeout=60, what="every pool PVC at 500Gi")
    assert {api.get(f"{PVCS}/{n}")["spec"]["resources"]["requests"]["storage"] for n in names} == {"500Gi"}


@SHAPES
def test_a_deleted_broker_pod_comes_back_and_its_broker_advertises_the_new_pod_ip(
    shaped_sandbox: Sandbox, api: KubeApi
) -> None:
    """The shape's own controller (StatefulSet, or the operator twin as StrimziPodSet) recreates the pod."""
    shape = shaped_sandbox.definition
    broker = shape.broker_ids[0]
    name = shape.pod_name(broker)
    old_uid = api.get(f"{PODS}/{name}")["metadata"]["uid"]
    api.delete(f"{PODS}/{name}")

    def back() -> dict[str, Any] | None:
        found = api.get(f"{PODS}?fieldSelector=metadata.name={name}")["items"]
        fresh = [p for p in found if p["metadata"]["uid"] != old_uid and p["status"].get("phase") == "Running"]
        return fresh[0] if fresh and fresh[0]["status"].get("podIP") else None

    pod: dict[str, Any] = eventually(back, timeout=90, what=f"pod {name} recreated and Running")
    new_ip = pod["status"]["podIP"]
    eventually(
        lambda: kafka_hosts(shaped_sandbox).get(broker) == new_ip, timeout=120, what=f"broker {broker} at {new_ip}"
    )
