"""The sandbox shapes' pure parts: names, the pod-to-broker mapping, the operator twin's decisions,
the status entries, and the broker listeners that advertise a pod's IP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sandbox import neighbours, operator_twin, shapes
from sandbox.bridge import BrokerPlacement, Faults, advertises_elsewhere, broker_should_run, placements
from sandbox.kafka import KafkaCluster
from sandbox.process import SandboxProcessError


def pod(
    name: str,
    *,
    labels: dict[str, str],
    node: str = "kwok-node-0",
    ip: str | None = "127.20.0.9",
    claims: tuple[str, ...] = (),
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "kafka", "labels": labels},
        "spec": {
            "nodeName": node,
            "volumes": [{"name": f"v{i}", "persistentVolumeClaim": {"claimName": c}} for i, c in enumerate(claims)],
        },
        "status": {"phase": "Running", **({"podIP": ip} if ip else {})},
    }


@pytest.mark.parametrize(
    ("shape", "broker", "pod_name", "pvc"),
    [
        (shapes.STATEFULSET_SHAPE, 2, "kafka-2", "data-kafka-2"),
        (shapes.STRIMZI_SHAPE, 12, "my-cluster-brokers-12", "data-0-my-cluster-brokers-12"),
        (shapes.BITNAMI_SHAPE, 102, "kafka-broker-2", "data-kafka-broker-2"),
    ],
)
def test_each_shape_names_pods_and_claims_as_its_controller_does(
    shape: shapes.Shape, broker: int, pod_name: str, pvc: str
) -> None:
    assert shape.pod_name(broker) == pod_name
    assert shape.pvc_name(broker) == pvc


def test_shapes_have_four_brokers_and_a_controller_id_apart_from_them() -> None:
    assert shapes.STATEFULSET_SHAPE.broker_ids == (0, 1, 2, 3)
    assert shapes.STRIMZI_SHAPE.broker_ids == (10, 11, 12, 13)
    assert shapes.BITNAMI_SHAPE.broker_ids == (100, 101, 102, 103)
    for shape in shapes.SHAPES.values():
        assert shape.controller_id not in shape.broker_ids
    assert shapes.shape_named("bitnami") is shapes.BITNAMI_SHAPE
    with pytest.raises(ValueError, match="unknown sandbox shape"):
        shapes.shape_named("helm")


def test_statefulset_shapes_take_the_broker_id_from_the_pod_index_label_and_min_id() -> None:
    labels = dict(shapes.BITNAMI_LABELS)
    pods = [
        pod("kafka-broker-1", labels={**labels, shapes.POD_INDEX_LABEL: "1"}),
        pod("kafka-broker-7", labels={**labels}),  # no index label: no broker's, whatever its name says
        pod("kafka-broker-0", labels={shapes.POD_INDEX_LABEL: "0"}),  # not the chart's labels
    ]
    found = shapes.broker_pods(shapes.BITNAMI_SHAPE, pods)
    assert {b: p["metadata"]["name"] for b, p in found.items()} == {101: "kafka-broker-1"}


def test_strimzi_takes_broker_ids_from_the_pools_node_ids() -> None:
    labels = shapes.strimzi_pool_labels(pod="x")
    pods = [pod("my-cluster-brokers-10", labels=labels), pod("my-cluster-brokers-11", labels=labels)]
    assert sorted(shapes.broker_pods(shapes.STRIMZI_SHAPE, pods, pool_node_ids=[10, 11])) == [10, 11]
    assert shapes.broker_pods(shapes.STRIMZI_SHAPE, pods, pool_node_ids=[]) == {}


@pytest.mark.parametrize(
    ("text", "ids"),
    [("[10-13]", [10, 11, 12, 13]), ("[10-11, 20]", [10, 11, 20]), ("[]", []), ("10-13", []), ("[a-b]", [])],
)
def test_next_node_ids_annotation_parses_as_strimzi_writes_it(text: str, ids: list[int]) -> None:
    assert shapes.parse_node_id_ranges(text) == ids


def test_operator_twin_keeps_existing_node_ids_and_takes_new_ones_from_the_annotation() -> None:
    pool = shapes.strimzi_node_pool()
    assert operator_twin.pool_node_ids(pool) == [10, 11, 12, 13]
    pool["status"] = {"nodeIds": [10, 11, 12, 13]}
    pool["metadata"]["annotations"][shapes.NEXT_NODE_IDS_ANNOTATION] = "[20-30]"
    assert operator_twin.pool_node_ids(pool) == [10, 11, 12, 13]
    pool["spec"]["replicas"] = 5
    assert operator_twin.pool_node_ids(pool) == [10, 11, 12, 13, 20]


KAFKA = {"apiVersion": "kafka.strimzi.io/v1beta2", "kind": "Kafka", "metadata": {"name": "my-cluster", "uid": "u-1"}}


def test_operator_twin_claims_are_owned_by_the_kafka_resource_only_when_delete_claim() -> None:
    volume = {"id": 0, "type": "persistent-claim", "size": "400Gi", "deleteClaim": True}
    owned = operator_twin.pvc_manifest(kafka=KAFKA, volume=volume, pod="my-cluster-brokers-10")
    assert owned["metadata"]["name"] == "data-0-my-cluster-brokers-10"
    assert owned["metadata"]["annotations"] == {"strimzi.io/delete-claim": "true"}
    assert [(o["kind"], o["uid"], o["controller"]) for o in owned["metadata"]["ownerReferences"]] == [
        ("Kafka", "u-1", False)
    ]
    kept = operator_twin.pvc_manifest(kafka=KAFKA, volume={**volume, "deleteClaim": False}, pod="my-cluster-brokers-10")
    assert "ownerReferences" not in kept["metadata"]
    assert kept["metadata"]["annotations"] == {"strimzi.io/delete-claim": "false"}


def test_operator_twin_pods_carry_strimzis_labels_and_mount_each_jbod_volume() -> None:
    volumes = operator_twin.persistent_volumes(shapes.strimzi_node_pool())
    podset = {**KAFKA, "kind": "StrimziPodSet", "metadata": {"name": "my-cluster-brokers", "uid": "u-2"}}
    made = operator_twin.pod_manifest(
        kafka=shapes.strimzi_kafka(), podset=podset, volumes=volumes, pod="my-cluster-brokers-11"
    )
    labels = made["metadata"]["labels"]
    assert labels["strimzi.io/pod-name"] == "my-cluster-brokers-11"
    assert all(labels[k] == v for k, v in shapes.STRIMZI_SHAPE.pod_selector.items())
    assert shapes.pod_claims(made) == ["data-0-my-cluster-brokers-11"]
    assert made["metadata"]["ownerReferences"][0]["controller"] is True
    assert "podAntiAffinity" in made["spec"]["affinity"]


def test_status_entries_for_brokers_and_neighbours_with_their_volume_attachment() -> None:
    broker = pod("kafka-0", labels={"app": "kafka"}, node="kwok-node-1", claims=("data-kafka-0",))
    assert neighbours.broker_entries(shape=shapes.STATEFULSET_SHAPE, broker_pods={0: broker}) == [
        {"pod": "kafka-0", "namespace": "kafka", "broker_id": 0, "node": "kwok-node-1", "pvcs": ["data-kafka-0"]}
    ]
    neighbour = pod("neighbour-0", labels={"app": "neighbour"}, node="kwok-node-1", claims=("data-neighbour-0",))
    neighbour["metadata"]["namespace"] = "neighbours"
    other = pod("neighbour-1", labels={"app": "neighbour"}, node="kwok-node-2", claims=("data-neighbour-1",))
    other["metadata"]["namespace"] = "neighbours"
    claims = [
        {"metadata": {"namespace": "neighbours", "name": "data-neighbour-0"}, "spec": {"volumeName": "pv-a"}},
        {"metadata": {"namespace": "neighbours", "name": "data-neighbour-1"}, "spec": {"volumeName": "pv-b"}},
    ]
    attachments = [
        {
            "metadata": {"name": "csi-a1"},
            "spec": {"nodeName": "kwok-node-1", "source": {"persistentVolumeName": "pv-a"}},
        },
        {
            "metadata": {"name": "csi-b9"},
            "spec": {"nodeName": "kwok-node-4", "source": {"persistentVolumeName": "pv-b"}},
        },
    ]
    entries = neighbours.neighbour_entries(pods=[broker, neighbour, other], claims=claims, attachments=attachments)
    assert entries == [
        {
            "pod": "neighbour-0",
            "namespace": "neighbours",
            "node": "kwok-node-1",
            "pvc": "data-neighbour-0",
            "volume_attachment": "csi-a1",
        },
        {
            "pod": "neighbour-1",
            "namespace": "neighbours",
            "node": "kwok-node-2",
            "pvc": "data-neighbour-1",
            "volume_attachment": None,
        },
    ]


def test_the_bridge_runs_a_broker_only_for_a_running_pod_with_an_ip_and_restarts_it_on_a_new_ip() -> None:
    labels = {"app": "kafka", shapes.POD_INDEX_LABEL: "3"}
    where = placements(shapes.STATEFULSET_SHAPE, {"items": [pod("kafka-3", labels=labels, ip="127.20.1.4")]})
    placed = where[3]
    assert broker_should_run(placed, Faults())
    assert not broker_should_run(placed, Faults(stopped_brokers=frozenset({3})))
    assert not broker_should_run(BrokerPlacement(broker_id=3, node="n", running=True, pod_ip=None), Faults())
    assert not advertises_elsewhere(placed, "127.20.1.4:4711")
    assert advertises_elsewhere(placed, "127.20.0.2:4711")
    assert not advertises_elsewhere(placed, None)


def test_a_broker_for_a_pod_advertises_the_pod_ip_and_keeps_its_loopback_bootstrap(tmp_path: Path) -> None:
    cluster = KafkaCluster(work_dir=tmp_path, broker_ids=(100, 101), controller_id=0)
    pod_port = cluster.layout.broker_pod_ports[100]
    properties = cluster._broker_properties(100, pod_ip="127.20.3.7")
    assert properties["advertised.listeners"] == f"POD://127.20.3.7:{pod_port},PLAINTEXT://127.20.3.7:{pod_port}"
    assert f"PLAINTEXT://127.0.0.1:{cluster.layout.broker_ports[100]}" in properties["listeners"]
    assert cluster._broker_properties(101)["advertised.listeners"] == f"PLAINTEXT://{cluster.broker_address(101)}"
    with pytest.raises(SandboxProcessError, match="not a loopback"):
        cluster._broker_properties(100, pod_ip="10.0.0.5")
    cluster._write_properties("kafka-broker-100", properties)
    assert cluster.advertised_address(100) == f"127.20.3.7:{pod_port}"
