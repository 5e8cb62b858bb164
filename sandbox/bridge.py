"""Make real Kafka brokers follow their pods: the sandbox's stand-in for a kubelet running containers.

KWOK marks pods Running without running anything. This bridge watches the broker pods of the sandbox's
shape (sandbox.shapes) and keeps a broker's process running exactly while its pod is Running on a node
that has not failed, on the same log directory wherever the pod lands (as a re-attached volume would).
Which pod runs which broker comes from the shape's definition and the pods' API fields (the
StatefulSet pod-index label, the Strimzi pool's node ids), never from parsing names. Like a kubelet, it
starts a broker only once each volume of its pod is attached to the pod's node (a VolumeAttachment of
the claim's PV and that node with status.attached true). The broker advertises its pod's IP (kwok
hands out loopback IPs); when the pod comes back with another IP the broker is restarted to advertise
the new one. A failed node kills its
brokers (SIGKILL, like a power loss); a partitioned node keeps them (only its heartbeat is lost). A
broker stopped by the `stop-broker` fault stays stopped until `start-broker`.

Faults are read from `faults.json` in the sandbox work dir, written by `kafka-autopilot sandbox fault`.
When the apiserver cannot be reached, the bridge changes nothing: it knows nothing new.

Runs as its own process: `python -m sandbox.bridge --work-dir DIR`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox import shapes
from sandbox.kafka import KafkaCluster
from sandbox.kube import KubeApi, KubeControlPlane
from sandbox.shapes import Shape
from sandbox.workload import NAMESPACE

POLL_SECONDS = 0.5


@dataclass(frozen=True, kw_only=True)
class Faults:
    failed_nodes: frozenset[str] = frozenset()
    partitioned_nodes: frozenset[str] = frozenset()
    stopped_brokers: frozenset[int] = frozenset()

    @classmethod
    def load(cls, path: Path) -> Faults:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls()
        return cls(
            failed_nodes=frozenset(data.get("failed_nodes", [])),
            partitioned_nodes=frozenset(data.get("partitioned_nodes", [])),
            stopped_brokers=frozenset(int(b) for b in data.get("stopped_brokers", [])),
        )

    def save(self, path: Path) -> None:
        data = {
            "failed_nodes": sorted(self.failed_nodes),
            "partitioned_nodes": sorted(self.partitioned_nodes),
            "stopped_brokers": sorted(self.stopped_brokers),
        }
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, indent=2))
        temporary.replace(path)


@dataclass(frozen=True, kw_only=True)
class BrokerPlacement:
    """Where the pod of one broker is, as the apiserver reports it."""

    broker_id: int
    node: str | None
    running: bool
    pod_ip: str | None = None


def placements(
    shape: Shape, pods: Mapping[str, Any], *, pool_node_ids: Sequence[int] = ()
) -> dict[int, BrokerPlacement]:
    found: dict[int, BrokerPlacement] = {}
    for broker_id, pod in shapes.broker_pods(shape, pods.get("items", []), pool_node_ids=pool_node_ids).items():
        status = pod.get("status", {})
        running = status.get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp")
        found[broker_id] = BrokerPlacement(
            broker_id=broker_id,
            node=pod.get("spec", {}).get("nodeName"),
            running=running,
            pod_ip=status.get("podIP") or None,
        )
    return found


def volumes_attached(pod: Mapping[str, Any], *, claims: Mapping[str, Any], attachments: Mapping[str, Any]) -> bool:
    """Whether every claim of the pod is bound to a PV with an attached VolumeAttachment on its node."""
    node = pod.get("spec", {}).get("nodeName")
    volume_of = {c["metadata"]["name"]: c.get("spec", {}).get("volumeName") for c in claims.get("items", [])}
    attached = {
        (a["spec"].get("source", {}).get("persistentVolumeName"), a["spec"].get("nodeName"))
        for a in attachments.get("items", [])
        if a.get("status", {}).get("attached") is True and not a["metadata"].get("deletionTimestamp")
    }
    wanted = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod.get("spec", {}).get("volumes", [])
        if "persistentVolumeClaim" in v
    ]
    return all(volume_of.get(claim) and (volume_of[claim], node) in attached for claim in wanted)


def broker_should_run(placement: BrokerPlacement | None, faults: Faults) -> bool:
    if placement is None or not placement.running or placement.broker_id in faults.stopped_brokers:
        return False
    return placement.node not in faults.failed_nodes and placement.pod_ip is not None


def advertises_elsewhere(placement: BrokerPlacement | None, advertised: str | None) -> bool:
    """The broker runs for a pod that now has another IP than the one it advertises."""
    if placement is None or placement.pod_ip is None or advertised is None:
        return False
    return advertised.rpartition(":")[0] != placement.pod_ip


def recorded_pool_node_ids(api: KubeApi) -> list[int]:
    """The Strimzi pool's node ids, as its status (written by the operator twin) gives them."""
    path = f"/apis/{shapes.STRIMZI_GROUP}/{shapes.STRIMZI_VERSION}/namespaces/{NAMESPACE}/kafkanodepools"
    pool = api.get(f"{path}/{shapes.STRIMZI_POOL}")
    return [int(i) for i in (pool.get("status") or {}).get("nodeIds") or []]


@dataclass
class Bridge:
    api: KubeApi
    cluster: KafkaCluster
    faults_path: Path
    shape: Shape = field(default_factory=lambda: shapes.STATEFULSET_SHAPE)

    def step(self) -> None:
        pods = self.api.get(f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector={self.shape.label_selector}")
        node_ids = recorded_pool_node_ids(self.api) if self.shape.name == "strimzi" else ()
        faults = Faults.load(self.faults_path)
        where = placements(self.shape, pods, pool_node_ids=node_ids)
        by_id = shapes.broker_pods(self.shape, pods.get("items", []), pool_node_ids=node_ids)
        for broker_id in self.cluster.broker_ids:
            placement = where.get(broker_id)
            wanted = broker_should_run(placement, faults)
            running = self.cluster.broker_running(broker_id)
            pod = self.shape.pod_name(broker_id)
            if running and wanted and advertises_elsewhere(placement, self.cluster.advertised_address(broker_id)):
                print(f"bridge: pod {pod} has a new IP: restarting broker {broker_id}", flush=True)
                self.cluster.stop_broker(broker_id)
                running = False
            if wanted and not running and placement is not None:
                if not volumes_attached(
                    by_id[broker_id],
                    claims=self.api.get(f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims"),
                    attachments=self.api.get("/apis/storage.k8s.io/v1/volumeattachments"),
                ):
                    continue  # a kubelet waits for the pod's volumes to be attached before starting it
                print(
                    f"bridge: pod {pod} Running on {placement.node} at {placement.pod_ip}: starting broker {broker_id}",
                    flush=True,
                )
                self.cluster.start_broker(broker_id, wait=False, pod_ip=placement.pod_ip)
            elif running and not wanted:
                lost = placement is not None and placement.node in faults.failed_nodes
                why = f"node {placement.node} failed" if lost and placement else "its pod is not Running"
                print(f"bridge: stopping broker {broker_id}: {why}", flush=True)
                self.cluster.stop_broker(broker_id, kill=lost)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Keep sandbox Kafka brokers following their pods.")
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--shape", choices=shapes.SHAPE_NAMES, default=shapes.DEFAULT_SHAPE)
    args = parser.parse_args(argv)
    work_dir: Path = args.work_dir.resolve()
    shape = shapes.shape_named(args.shape)
    control_plane = KubeControlPlane(work_dir=work_dir / "kubernetes")
    bridge = Bridge(
        api=control_plane.api(),
        cluster=KafkaCluster(
            work_dir=work_dir / "kafka", broker_ids=shape.broker_ids, controller_id=shape.controller_id
        ),
        faults_path=work_dir / "faults.json",
        shape=shape,
    )
    print("bridge: started", flush=True)
    while True:
        try:
            bridge.step()
        except Exception as error:  # the apiserver may be down on purpose: keep what runs, retry
            print(f"bridge: no change this round: {type(error).__name__}: {error}", flush=True)
        time.sleep(POLL_SECONDS)


if __name__ == "__main__":
    sys.exit(main())
