"""The three ways a Kafka cluster is deployed in the sandbox, so live checks do not hang on one layout.

- `statefulset` (the default, what `make demo` plays): StatefulSet `kafka`, pod `kafka-N` runs broker N;
- `strimzi`: our stand-in of Strimzi's CRDs (`Kafka` my-cluster, `KafkaNodePool` brokers with node ids
  10-13), whose pods and PVCs the operator twin (sandbox.operator_twin) makes as Strimzi names them;
- `bitnami`: StatefulSet `kafka-broker` labelled as the Bitnami chart labels it, broker ids from
  `broker.minId` 100 (pod `kafka-broker-0` runs broker 100).

Every shape has 4 brokers with 400Gi volumes in namespace `kafka`, and shares its broker nodes with
neighbours that are not Kafka (sandbox.neighbours). This module is pure: names, labels, manifests and
the pod-to-broker mapping the sandbox (the world, not the agent) uses; nothing here talks to an API.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sandbox import workload

SHAPE_NAMES: Final = ("statefulset", "strimzi", "bitnami")
DEFAULT_SHAPE: Final = "statefulset"
BROKER_COUNT: Final = 4
POD_INDEX_LABEL: Final = "apps.kubernetes.io/pod-index"
"""Set by the StatefulSet controller on each pod: its ordinal, an API field (never parsed from a name)."""

# --- Strimzi (our stand-in of its CRDs) -------------------------------------------------------------
STRIMZI_CLUSTER: Final = "my-cluster"
STRIMZI_POOL: Final = "brokers"
STRIMZI_NODE_IDS: Final = (10, 11, 12, 13)
STRIMZI_GROUP: Final = "kafka.strimzi.io"
STRIMZI_CORE_GROUP: Final = "core.strimzi.io"
STRIMZI_VERSION: Final = "v1beta2"
NEXT_NODE_IDS_ANNOTATION: Final = "strimzi.io/next-node-ids"
DELETE_CLAIM_ANNOTATION: Final = "strimzi.io/delete-claim"

# --- Bitnami chart ---------------------------------------------------------------------------------
BITNAMI_STATEFULSET: Final = "kafka-broker"
BITNAMI_MIN_ID: Final = 100
BITNAMI_CONTROLLER_MIN_ID: Final = 0
BITNAMI_LABELS: Final = {
    "app.kubernetes.io/name": "kafka",
    "app.kubernetes.io/instance": "kafka",
    "app.kubernetes.io/component": "broker",
}


@dataclass(frozen=True, kw_only=True)
class Shape:
    """One deployment shape: which broker ids exist, which pods and PVCs carry them, which rules fit."""

    name: str
    broker_ids: tuple[int, ...]
    controller_id: int
    pod_selector: Mapping[str, str]
    """Labels every broker pod of this shape carries (and nothing else in the namespace does)."""
    rules_dir: str
    """The shipped rules whose selectors fit this shape, relative to the checkout."""
    summary: str

    def pod_name(self, broker_id: int) -> str:
        """The pod that runs `broker_id`, as this shape's own controller names it."""
        if self.name == "strimzi":
            return f"{STRIMZI_CLUSTER}-{STRIMZI_POOL}-{broker_id}"
        if self.name == "bitnami":
            return f"{BITNAMI_STATEFULSET}-{broker_id - BITNAMI_MIN_ID}"
        return workload.pod_name(broker_id)

    def pvc_name(self, broker_id: int) -> str:
        """The data volume claim of `broker_id` (Strimzi: JBOD volume 0)."""
        if self.name == "strimzi":
            return strimzi_pvc_name(volume_id=0, pod=self.pod_name(broker_id))
        return f"{workload.CLAIM_TEMPLATE}-{self.pod_name(broker_id)}"

    @property
    def label_selector(self) -> str:
        return ",".join(f"{key}={value}" for key, value in self.pod_selector.items())


STATEFULSET_SHAPE: Final = Shape(
    name="statefulset",
    broker_ids=(0, 1, 2, 3),
    controller_id=100,
    pod_selector=dict(workload.APP_LABEL),
    rules_dir="rules",
    summary="StatefulSet kafka; pod kafka-N runs broker N (0-3); PVCs data-kafka-N",
)
STRIMZI_SHAPE: Final = Shape(
    name="strimzi",
    broker_ids=STRIMZI_NODE_IDS,
    controller_id=0,
    pod_selector={"strimzi.io/cluster": STRIMZI_CLUSTER, "strimzi.io/broker-role": "true"},
    rules_dir="rules-strimzi",
    summary="Kafka my-cluster + KafkaNodePool brokers (node ids 10-13), pods my-cluster-brokers-N and PVCs "
    "data-0-my-cluster-brokers-N made by the operator twin",
)
BITNAMI_SHAPE: Final = Shape(
    name="bitnami",
    broker_ids=tuple(BITNAMI_MIN_ID + i for i in range(BROKER_COUNT)),
    controller_id=BITNAMI_CONTROLLER_MIN_ID,
    pod_selector=dict(BITNAMI_LABELS),
    rules_dir="rules-bitnami",
    summary="StatefulSet kafka-broker (Bitnami chart labels, broker.minId 100): pod kafka-broker-N runs "
    "broker 100+N; PVCs data-kafka-broker-N",
)
SHAPES: Final = {shape.name: shape for shape in (STATEFULSET_SHAPE, STRIMZI_SHAPE, BITNAMI_SHAPE)}


def shape_named(name: str) -> Shape:
    try:
        return SHAPES[name]
    except KeyError:
        raise ValueError(f"unknown sandbox shape {name!r}; known: {', '.join(SHAPE_NAMES)}") from None


# --- which pod runs which broker ---------------------------------------------------------------------


def broker_pods(
    shape: Shape, pods: Sequence[Mapping[str, Any]], *, pool_node_ids: Sequence[int] = ()
) -> dict[int, Any]:
    """Broker id to its pod, from the shape's definition and the pods' API fields.

    StatefulSet shapes: the pod-index label plus the first broker id (0, or Bitnami's minId).
    Strimzi: the pool's node ids (its status, as the operator twin writes it), each naming its pod.
    A pod without the fields is no broker's: the sandbox never guesses.
    """
    selected = [p for p in pods if _has_labels(p, shape.pod_selector)]
    found: dict[int, Any] = {}
    if shape.name == "strimzi":
        by_name = {p["metadata"]["name"]: p for p in selected}
        for node_id in pool_node_ids:
            pod = by_name.get(shape.pod_name(node_id))
            if pod is not None:
                found[node_id] = pod
        return found
    first = shape.broker_ids[0]
    for pod in selected:
        index = (pod["metadata"].get("labels") or {}).get(POD_INDEX_LABEL, "")
        if index.isdigit() and first + int(index) in shape.broker_ids:
            found[first + int(index)] = pod
    return found


def _has_labels(obj: Mapping[str, Any], wanted: Mapping[str, str]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(key) == value for key, value in wanted.items())


def pod_claims(pod: Mapping[str, Any]) -> list[str]:
    """The PVC names a pod mounts, from its spec."""
    volumes = (pod.get("spec") or {}).get("volumes") or []
    return [v["persistentVolumeClaim"]["claimName"] for v in volumes if v.get("persistentVolumeClaim")]


# --- manifests -------------------------------------------------------------------------------------


def workload_manifests(shape: Shape) -> list[tuple[str, dict[str, Any]]]:
    """(collection path, object) to create, in order, after the namespaces and the StorageClass."""
    namespace = workload.NAMESPACE
    if shape.name == "statefulset":
        return [(f"/apis/apps/v1/namespaces/{namespace}/statefulsets", workload.statefulset(replicas=BROKER_COUNT))]
    if shape.name == "bitnami":
        return [(f"/apis/apps/v1/namespaces/{namespace}/statefulsets", bitnami_statefulset())]
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    base = f"/apis/{STRIMZI_GROUP}/{STRIMZI_VERSION}/namespaces/{namespace}"
    return [
        (crds, strimzi_crd(kind="Kafka", plural="kafkas", group=STRIMZI_GROUP, short="k")),
        (crds, strimzi_crd(kind="KafkaNodePool", plural="kafkanodepools", group=STRIMZI_GROUP, short="knp")),
        (crds, strimzi_crd(kind="StrimziPodSet", plural="strimzipodsets", group=STRIMZI_CORE_GROUP, short="sps")),
        (f"{base}/kafkas", strimzi_kafka()),
        (f"{base}/kafkanodepools", strimzi_node_pool()),
    ]


def _anti_affinity(selector: Mapping[str, str]) -> dict[str, Any]:
    """One broker per node, as the default StatefulSet has it."""
    return {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": dict(selector)}, "topologyKey": "kubernetes.io/hostname"}
            ]
        }
    }


def bitnami_statefulset() -> dict[str, Any]:
    """The broker StatefulSet as the Bitnami chart renders it (labels, names), 4 x 400Gi."""
    labels = {**BITNAMI_LABELS, "app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/part-of": "kafka"}
    manifest = workload.statefulset(replicas=BROKER_COUNT)
    manifest["metadata"] = {"name": BITNAMI_STATEFULSET, "namespace": workload.NAMESPACE, "labels": labels}
    spec = manifest["spec"]
    spec["serviceName"] = f"{BITNAMI_STATEFULSET}-headless"
    spec["selector"] = {"matchLabels": dict(BITNAMI_LABELS)}
    spec["template"]["metadata"] = {"labels": labels}
    spec["template"]["spec"]["affinity"] = _anti_affinity(BITNAMI_LABELS)
    spec["template"]["spec"]["containers"][0]["image"] = "bitnami/kafka:sandbox-stand-in"
    spec["template"]["spec"]["containers"][0]["env"] = [
        {"name": "KAFKA_MIN_ID", "value": str(BITNAMI_MIN_ID)},
    ]
    spec["volumeClaimTemplates"][0]["metadata"] = {"name": workload.CLAIM_TEMPLATE, "labels": dict(BITNAMI_LABELS)}
    return manifest


def strimzi_crd(*, kind: str, plural: str, group: str, short: str) -> dict[str, Any]:
    """Our stand-in of one of Strimzi's CRDs: its group, version and names, and the fields we use."""
    volume = {
        "type": "object",
        "properties": {
            "id": {"type": "integer", "minimum": 0},
            "type": {"type": "string", "enum": ["ephemeral", "persistent-claim"]},
            "size": {"type": "string"},
            "class": {"type": "string"},
            "deleteClaim": {"type": "boolean"},
        },
    }
    spec_properties: dict[str, Any] = {
        "replicas": {"type": "integer", "minimum": 0},
        "roles": {"type": "array", "items": {"type": "string", "enum": ["controller", "broker"]}},
        "storage": {
            "type": "object",
            "properties": {"type": {"type": "string"}, "volumes": {"type": "array", "items": volume}},
            "x-kubernetes-preserve-unknown-fields": True,
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{group}",
            "labels": {"app": "strimzi", "kafka-autopilot.io/stand-in": "true"},
        },
        "spec": {
            "group": group,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short],
                "categories": ["strimzi"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": STRIMZI_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": spec_properties,
                                    "x-kubernetes-preserve-unknown-fields": True,
                                },
                                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            },
                        }
                    },
                }
            ],
        },
    }


def strimzi_kafka() -> dict[str, Any]:
    """`Kafka` my-cluster in KRaft mode with node pools; the pod template keeps one broker per node."""
    return {
        "apiVersion": f"{STRIMZI_GROUP}/{STRIMZI_VERSION}",
        "kind": "Kafka",
        "metadata": {
            "name": STRIMZI_CLUSTER,
            "namespace": workload.NAMESPACE,
            "annotations": {"strimzi.io/node-pools": "enabled", "strimzi.io/kraft": "enabled"},
        },
        "spec": {
            "kafka": {
                "version": "4.4.0",
                "listeners": [{"name": "plain", "port": 9092, "type": "internal", "tls": False}],
                "template": {"pod": {"affinity": _anti_affinity(STRIMZI_SHAPE.pod_selector)}},
            },
            "entityOperator": {},
        },
    }


def strimzi_node_pool(*, size: str = workload.VOLUME_SIZE) -> dict[str, Any]:
    """`KafkaNodePool` brokers: 4 broker-role nodes asking for ids 10-13, one 400Gi JBOD volume each."""
    low, high = STRIMZI_NODE_IDS[0], STRIMZI_NODE_IDS[-1]
    return {
        "apiVersion": f"{STRIMZI_GROUP}/{STRIMZI_VERSION}",
        "kind": "KafkaNodePool",
        "metadata": {
            "name": STRIMZI_POOL,
            "namespace": workload.NAMESPACE,
            "labels": {"strimzi.io/cluster": STRIMZI_CLUSTER},
            "annotations": {NEXT_NODE_IDS_ANNOTATION: f"[{low}-{high}]"},
        },
        "spec": {
            "replicas": BROKER_COUNT,
            "roles": ["broker"],
            "storage": {
                "type": "jbod",
                "volumes": [
                    {
                        "id": 0,
                        "type": "persistent-claim",
                        "size": size,
                        "class": workload.STORAGE_CLASS,
                        "deleteClaim": True,
                    }
                ],
            },
        },
    }


def strimzi_pvc_name(*, volume_id: int, pod: str) -> str:
    """Strimzi's name of a JBOD volume's claim: `data-<volume id>-<pod>`."""
    return f"data-{volume_id}-{pod}"


_ID_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+))?\s*$")


def parse_node_id_ranges(text: str) -> list[int]:
    """The ids in Strimzi's `[10-13, 20]` annotation form, in the order written; [] when malformed."""
    inner = text.strip()
    if not (inner.startswith("[") and inner.endswith("]")):
        return []
    ids: list[int] = []
    for part in inner[1:-1].split(","):
        if not part.strip():
            continue
        match = _ID_RANGE.match(part)
        if match is None:
            return []
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) else low
        ids.extend(i for i in range(low, high + 1) if i not in ids)
    return ids


def strimzi_pool_labels(*, pod: str | None = None) -> dict[str, str]:
    """The labels Strimzi puts on a node pool's pods (and, without the pod name, on its PVCs)."""
    labels = {
        "app.kubernetes.io/instance": STRIMZI_CLUSTER,
        "app.kubernetes.io/managed-by": "strimzi-cluster-operator",
        "app.kubernetes.io/name": "kafka",
        "app.kubernetes.io/part-of": f"strimzi-{STRIMZI_CLUSTER}",
        "strimzi.io/cluster": STRIMZI_CLUSTER,
        "strimzi.io/component-type": "kafka",
        "strimzi.io/kind": "Kafka",
        "strimzi.io/name": f"{STRIMZI_CLUSTER}-kafka",
        "strimzi.io/pool-name": STRIMZI_POOL,
        "strimzi.io/broker-role": "true",
        "strimzi.io/controller-role": "false",
    }
    if pod is not None:
        labels.update(
            {
                "strimzi.io/controller": "strimzipodset",
                "strimzi.io/controller-name": f"{STRIMZI_CLUSTER}-{STRIMZI_POOL}",
                "strimzi.io/pod-name": pod,
            }
        )
    return labels
