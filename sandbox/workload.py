"""The Kafka workload as Kubernetes sees it in the sandbox: namespace, StorageClass and StatefulSet.

Pod `kafka-N` stands for broker N (the default shape; sandbox.shapes has the others). KWOK plays the
kubelet, so no container runs: the real broker process is started by the sandbox's bridge
(sandbox.bridge) when the pod is Running. The
StorageClass's provisioner is the storage twin, which binds and resizes the volumes.
"""

from __future__ import annotations

from typing import Any, Final

NAMESPACE: Final = "kafka"
AGENT_NAMESPACE: Final = "kafka-autopilot"
"""The agent's own namespace, the default of `kafka-autopilot run --namespace`."""
STATEFULSET: Final = "kafka"
APP_LABEL: Final = {"app": "kafka"}
STORAGE_CLASS: Final = "sandbox-twin"
TWIN_PROVISIONER: Final = "kafka-autopilot.io/storage-twin"
VOLUME_SIZE: Final = "400Gi"
CLAIM_TEMPLATE: Final = "data"


def pod_name(broker_id: int) -> str:
    return f"{STATEFULSET}-{broker_id}"


def pvc_name(broker_id: int) -> str:
    return f"{CLAIM_TEMPLATE}-{pod_name(broker_id)}"


def namespace() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": {"team": "kafka"}}}


def agent_namespace() -> dict[str, Any]:
    """The agent's own namespace (its Lease, approvals for nodes and pools), as an installer makes it."""
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": AGENT_NAMESPACE}}


def storage_class() -> dict[str, Any]:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": STORAGE_CLASS},
        "provisioner": TWIN_PROVISIONER,
        "allowVolumeExpansion": True,
        "volumeBindingMode": "Immediate",
        "reclaimPolicy": "Delete",
    }


def statefulset(*, replicas: int) -> dict[str, Any]:
    """4 brokers by default, one per node (required anti-affinity), each with a 400Gi volume."""
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": STATEFULSET, "namespace": NAMESPACE, "labels": dict(APP_LABEL)},
        "spec": {
            "serviceName": STATEFULSET,
            "replicas": replicas,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": dict(APP_LABEL)},
            "template": {
                "metadata": {"labels": dict(APP_LABEL)},
                "spec": {
                    "affinity": {
                        "podAntiAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "labelSelector": {"matchLabels": dict(APP_LABEL)},
                                    "topologyKey": "kubernetes.io/hostname",
                                }
                            ]
                        }
                    },
                    "terminationGracePeriodSeconds": 30,
                    "containers": [
                        {
                            "name": "kafka",
                            "image": "apache/kafka:sandbox-stand-in",
                            "ports": [{"name": "kafka", "containerPort": 9092}],
                            "volumeMounts": [{"name": CLAIM_TEMPLATE, "mountPath": "/var/lib/kafka"}],
                        }
                    ],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": CLAIM_TEMPLATE, "labels": dict(APP_LABEL)},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": STORAGE_CLASS,
                        "resources": {"requests": {"storage": VOLUME_SIZE}},
                    },
                }
            ],
        },
    }
