"""Workloads that are not Kafka on the broker nodes, as on a real shared cluster.

Every shape gets, in namespace `neighbours`:
- StatefulSet `neighbour`: 4 pods, each with its own PVC of the sandbox StorageClass, each required to
  sit on a node that runs a broker pod (pod affinity) and apart from the others (anti-affinity);
- DaemonSet `node-agent`: one pod on every node (needs kube-controller-manager's daemonset controller).

The agent must leave them alone: they share nodes (and storage pools) with brokers but are no broker.
Pure: manifests and the status entries assembled from API objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from sandbox import workload
from sandbox.shapes import Shape, pod_claims

NAMESPACE: Final = "neighbours"
STATEFULSET: Final = "neighbour"
DAEMONSET: Final = "node-agent"
NEIGHBOUR_LABELS: Final = {"app": STATEFULSET}
DAEMON_LABELS: Final = {"app": DAEMONSET}
VOLUME_SIZE: Final = "10Gi"


def namespace() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}


def statefulset(*, shape: Shape, replicas: int = 4) -> dict[str, Any]:
    """One neighbour with its own volume on each broker node of `shape`."""
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": STATEFULSET, "namespace": NAMESPACE, "labels": dict(NEIGHBOUR_LABELS)},
        "spec": {
            "serviceName": STATEFULSET,
            "replicas": replicas,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": dict(NEIGHBOUR_LABELS)},
            "template": {
                "metadata": {"labels": dict(NEIGHBOUR_LABELS)},
                "spec": {
                    "affinity": {
                        "podAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "labelSelector": {"matchLabels": dict(shape.pod_selector)},
                                    "namespaces": [workload.NAMESPACE],
                                    "topologyKey": "kubernetes.io/hostname",
                                }
                            ]
                        },
                        "podAntiAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "labelSelector": {"matchLabels": dict(NEIGHBOUR_LABELS)},
                                    "topologyKey": "kubernetes.io/hostname",
                                }
                            ]
                        },
                    },
                    "containers": [
                        {
                            "name": "postgres",
                            "image": "postgres:sandbox-stand-in",
                            "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}],
                        }
                    ],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data", "labels": dict(NEIGHBOUR_LABELS)},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": workload.STORAGE_CLASS,
                        "resources": {"requests": {"storage": VOLUME_SIZE}},
                    },
                }
            ],
        },
    }


def daemonset() -> dict[str, Any]:
    """A node agent on every node, as log shippers and exporters run."""
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": DAEMONSET, "namespace": NAMESPACE, "labels": dict(DAEMON_LABELS)},
        "spec": {
            "selector": {"matchLabels": dict(DAEMON_LABELS)},
            "template": {
                "metadata": {"labels": dict(DAEMON_LABELS)},
                "spec": {"containers": [{"name": "agent", "image": "node-exporter:sandbox-stand-in"}]},
            },
        },
    }


def manifests(shape: Shape) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("/api/v1/namespaces", namespace()),
        (f"/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets", statefulset(shape=shape)),
        (f"/apis/apps/v1/namespaces/{NAMESPACE}/daemonsets", daemonset()),
    ]


def _labelled(obj: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    found = (obj.get("metadata") or {}).get("labels") or {}
    return all(found.get(k) == v for k, v in labels.items())


def neighbour_entries(
    *,
    pods: Sequence[Mapping[str, Any]],
    claims: Sequence[Mapping[str, Any]],
    attachments: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """`{pod, namespace, node, pvc, volume_attachment}` for each neighbour pod with a volume.

    `volume_attachment` is the name of the VolumeAttachment of the pod's PV on the pod's node, None
    while none exists.
    """
    volume_of = {
        (c["metadata"]["namespace"], c["metadata"]["name"]): (c.get("spec") or {}).get("volumeName") for c in claims
    }
    attached = {
        (
            ((a.get("spec") or {}).get("source") or {}).get("persistentVolumeName"),
            (a.get("spec") or {}).get("nodeName"),
        ): a["metadata"]["name"]
        for a in attachments
    }
    entries = []
    for pod in pods:
        if not _labelled(pod, NEIGHBOUR_LABELS):
            continue
        meta = pod["metadata"]
        node = (pod.get("spec") or {}).get("nodeName")
        for claim in pod_claims(pod):
            volume = volume_of.get((meta["namespace"], claim))
            entries.append(
                {
                    "pod": meta["name"],
                    "namespace": meta["namespace"],
                    "node": node,
                    "pvc": claim,
                    "volume_attachment": attached.get((volume, node)) if volume and node else None,
                }
            )
    return sorted(entries, key=lambda e: (e["pod"], e["pvc"]))


def broker_entries(*, shape: Shape, broker_pods: Mapping[int, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """`{pod, namespace, broker_id, node, pvcs}` for each broker whose pod exists."""
    return [
        {
            "pod": pod["metadata"]["name"],
            "namespace": pod["metadata"]["namespace"],
            "broker_id": broker_id,
            "node": (pod.get("spec") or {}).get("nodeName"),
            "pvcs": pod_claims(pod),
        }
        for broker_id, pod in sorted(broker_pods.items())
        if broker_id in shape.broker_ids
    ]
