"""The operator twin: a simulation of the part of Strimzi's cluster operator the strimzi shape needs.

It is not Strimzi. It reads our stand-in of Strimzi's CRDs (`Kafka` my-cluster, `KafkaNodePool`
brokers) and does what the operator and its StrimziPodSet controller do for a broker pool:
- gives the pool its node ids (from the `strimzi.io/next-node-ids` annotation) in `status.nodeIds`;
- keeps a `StrimziPodSet` for the pool, owned by the `Kafka` resource;
- keeps one pod per node id, named and labelled as Strimzi names them (`my-cluster-brokers-10`),
  owned by the StrimziPodSet: a deleted pod comes back with the same name;
- keeps one PVC per JBOD volume and node (`data-0-my-cluster-brokers-10`), labelled as the pool's pods,
  annotated `strimzi.io/delete-claim`, and owned by the `Kafka` resource only when `deleteClaim` is true
  (so deleting the cluster deletes them), as Strimzi owns them;
- when a volume's `size` in the pool grows, grows that volume's PVC of every node (never shrinks).

Polls the apiserver every half second; when it cannot be reached it changes nothing.
Runs as its own process with a TTL, like the bridge: `python -m sandbox.operator_twin --work-dir DIR`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.core.quantity import parse_quantity
from sandbox import shapes
from sandbox.kube import KubeApi, KubeApiError, KubeControlPlane
from sandbox.workload import NAMESPACE

POLL_SECONDS = 0.5
SIMULATION = "operator twin (simulation)"

_BASE = f"/apis/{shapes.STRIMZI_GROUP}/{shapes.STRIMZI_VERSION}/namespaces/{NAMESPACE}"
KAFKA_PATH = f"{_BASE}/kafkas/{shapes.STRIMZI_CLUSTER}"
POOL_PATH = f"{_BASE}/kafkanodepools/{shapes.STRIMZI_POOL}"
PODSETS_PATH = f"/apis/{shapes.STRIMZI_CORE_GROUP}/{shapes.STRIMZI_VERSION}/namespaces/{NAMESPACE}/strimzipodsets"
PODS_PATH = f"/api/v1/namespaces/{NAMESPACE}/pods"
PVCS_PATH = f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims"
PODSET_NAME = f"{shapes.STRIMZI_CLUSTER}-{shapes.STRIMZI_POOL}"


def owner_reference(obj: Mapping[str, Any], *, controller: bool) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": controller,
        "blockOwnerDeletion": False,
    }


def pool_node_ids(pool: Mapping[str, Any]) -> list[int]:
    """The ids the pool's nodes get: kept from its status, else taken from the annotation, `replicas` of them."""
    replicas = int((pool.get("spec") or {}).get("replicas") or 0)
    current = [int(i) for i in (pool.get("status") or {}).get("nodeIds") or []]
    if len(current) == replicas:
        return current
    annotation = ((pool.get("metadata") or {}).get("annotations") or {}).get(shapes.NEXT_NODE_IDS_ANNOTATION, "")
    wanted = [i for i in shapes.parse_node_id_ranges(annotation) if i not in current]
    ids = sorted([*current[:replicas], *wanted][:replicas])
    return ids if len(ids) == replicas else current[:replicas]


def persistent_volumes(pool: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    storage = (pool.get("spec") or {}).get("storage") or {}
    volumes = (storage.get("volumes") or []) if storage.get("type") == "jbod" else [storage]
    return [v for v in volumes if v.get("type") == "persistent-claim"]


def pvc_manifest(*, kafka: Mapping[str, Any], volume: Mapping[str, Any], pod: str) -> dict[str, Any]:
    delete_claim = bool(volume.get("deleteClaim", False))
    metadata: dict[str, Any] = {
        "name": shapes.strimzi_pvc_name(volume_id=int(volume.get("id", 0)), pod=pod),
        "namespace": NAMESPACE,
        "labels": shapes.strimzi_pool_labels(),
        "annotations": {shapes.DELETE_CLAIM_ANNOTATION: str(delete_claim).lower()},
    }
    if delete_claim:
        metadata["ownerReferences"] = [owner_reference(kafka, controller=False)]
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": volume["size"]}},
        "volumeMode": "Filesystem",
    }
    if volume.get("class"):
        spec["storageClassName"] = volume["class"]
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata, "spec": spec}


def pod_manifest(
    *, kafka: Mapping[str, Any], podset: Mapping[str, Any] | None, volumes: Sequence[Mapping[str, Any]], pod: str
) -> dict[str, Any]:
    template = (((kafka.get("spec") or {}).get("kafka") or {}).get("template") or {}).get("pod") or {}
    spec: dict[str, Any] = {
        "hostname": pod,
        "subdomain": f"{shapes.STRIMZI_CLUSTER}-kafka-brokers",
        "terminationGracePeriodSeconds": 30,
        "containers": [
            {
                "name": "kafka",
                "image": "quay.io/strimzi/kafka:sandbox-stand-in",
                "ports": [{"name": "tcp-clients", "containerPort": 9092}],
                "volumeMounts": [
                    {"name": f"data-{v.get('id', 0)}", "mountPath": f"/var/lib/kafka/data-{v.get('id', 0)}"}
                    for v in volumes
                ],
            }
        ],
        "volumes": [
            {
                "name": f"data-{v.get('id', 0)}",
                "persistentVolumeClaim": {"claimName": shapes.strimzi_pvc_name(volume_id=int(v.get("id", 0)), pod=pod)},
            }
            for v in volumes
        ],
    }
    if template.get("affinity"):
        spec["affinity"] = template["affinity"]
    metadata: dict[str, Any] = {
        "name": pod,
        "namespace": NAMESPACE,
        "labels": shapes.strimzi_pool_labels(pod=pod),
        "annotations": {"strimzi.io/kafka-version": str((kafka.get("spec") or {}).get("kafka", {}).get("version"))},
    }
    if podset is not None:
        metadata["ownerReferences"] = [owner_reference(podset, controller=True)]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def podset_manifest(*, kafka: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": f"{shapes.STRIMZI_CORE_GROUP}/{shapes.STRIMZI_VERSION}",
        "kind": "StrimziPodSet",
        "metadata": {
            "name": PODSET_NAME,
            "namespace": NAMESPACE,
            "labels": shapes.strimzi_pool_labels(),
            "ownerReferences": [owner_reference(kafka, controller=True)],
        },
        "spec": {
            "selector": {
                "matchLabels": {
                    "strimzi.io/cluster": shapes.STRIMZI_CLUSTER,
                    "strimzi.io/pool-name": shapes.STRIMZI_POOL,
                }
            },
            "pods": [dict(p) for p in pods],
        },
    }


def requested(claim: Mapping[str, Any]) -> str:
    return str(((claim.get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage", "0"))


@dataclass
class OperatorTwin:
    api: KubeApi

    def step(self) -> None:
        try:
            kafka = self.api.get(KAFKA_PATH)
            pool = self.api.get(POOL_PATH)
        except KubeApiError as error:
            if error.status == 404:
                return
            raise
        node_ids = pool_node_ids(pool)
        if node_ids != [int(i) for i in (pool.get("status") or {}).get("nodeIds") or []]:
            print(f"{SIMULATION}: pool {shapes.STRIMZI_POOL} node ids {node_ids}", flush=True)
            status = {"nodeIds": node_ids, "replicas": len(node_ids), "roles": pool["spec"].get("roles", [])}
            self.api.merge_patch(f"{POOL_PATH}/status", {"status": status})
        volumes = persistent_volumes(pool)
        pod_names = [f"{PODSET_NAME}-{node_id}" for node_id in node_ids]
        podset = self._podset(
            kafka, [pod_manifest(kafka=kafka, podset=None, volumes=volumes, pod=p) for p in pod_names]
        )
        claims = {c["metadata"]["name"]: c for c in self.api.get(PVCS_PATH)["items"]}
        pods = {p["metadata"]["name"]: p for p in self.api.get(PODS_PATH)["items"]}
        for pod in pod_names:
            for volume in volumes:
                self._claim(kafka=kafka, volume=volume, pod=pod, existing=claims)
            if pod not in pods:
                print(f"{SIMULATION}: creating pod {pod}", flush=True)
                self.api.create(PODS_PATH, pod_manifest(kafka=kafka, podset=podset, volumes=volumes, pod=pod))

    def _podset(self, kafka: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        try:
            found: dict[str, Any] = self.api.get(f"{PODSETS_PATH}/{PODSET_NAME}")
            return found
        except KubeApiError as error:
            if error.status != 404:
                raise
        print(f"{SIMULATION}: creating StrimziPodSet {PODSET_NAME}", flush=True)
        created: dict[str, Any] = self.api.create(PODSETS_PATH, podset_manifest(kafka=kafka, pods=pods))
        return created

    def _claim(
        self, *, kafka: Mapping[str, Any], volume: Mapping[str, Any], pod: str, existing: Mapping[str, Any]
    ) -> None:
        wanted = pvc_manifest(kafka=kafka, volume=volume, pod=pod)
        name = wanted["metadata"]["name"]
        claim = existing.get(name)
        if claim is None:
            print(f"{SIMULATION}: creating PVC {name} ({volume['size']})", flush=True)
            self.api.create(PVCS_PATH, wanted)
            return
        if claim["metadata"].get("deletionTimestamp"):
            return
        if parse_quantity(volume["size"]) > parse_quantity(requested(claim)):
            print(f"{SIMULATION}: growing PVC {name} {requested(claim)} -> {volume['size']}", flush=True)
            self.api.merge_patch(
                f"{PVCS_PATH}/{name}", {"spec": {"resources": {"requests": {"storage": volume["size"]}}}}
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The operator twin: a simulation of Strimzi's operator for a pool.")
    parser.add_argument("--work-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    twin = OperatorTwin(api=KubeControlPlane(work_dir=args.work_dir.resolve() / "kubernetes").api())
    print(f"{SIMULATION}: started", flush=True)
    while True:
        try:
            twin.step()
        except Exception as error:  # the apiserver may be down on purpose: change nothing, retry
            print(f"{SIMULATION}: no change this round: {type(error).__name__}: {error}", flush=True)
        time.sleep(POLL_SECONDS)


if __name__ == "__main__":
    sys.exit(main())
