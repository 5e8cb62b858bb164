"""Make real Kafka brokers follow their pods: the sandbox's stand-in for a kubelet running containers.

KWOK marks pods Running without running anything. This bridge watches the StatefulSet's pods and keeps
broker process N running exactly while pod `kafka-N` is Running on a node that has not failed, on
the same log directory wherever the pod lands (as a re-attached volume would). Like a kubelet, it
starts a broker only once each volume of its pod is attached to the pod's node (a VolumeAttachment
of the claim's PV and that node with status.attached true). A failed node kills its
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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.kafka import KafkaCluster
from sandbox.kube import KubeApi, KubeControlPlane
from sandbox.workload import APP_LABEL, NAMESPACE, broker_id_of

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


def placements(pods: Mapping[str, Any]) -> dict[int, BrokerPlacement]:
    found: dict[int, BrokerPlacement] = {}
    for pod in pods.get("items", []):
        broker_id = broker_id_of(pod["metadata"]["name"])
        if broker_id is None:
            continue
        running = pod.get("status", {}).get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp")
        found[broker_id] = BrokerPlacement(
            broker_id=broker_id, node=pod.get("spec", {}).get("nodeName"), running=running
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
    return placement.node not in faults.failed_nodes


@dataclass
class Bridge:
    api: KubeApi
    cluster: KafkaCluster
    faults_path: Path
    started: dict[int, str | None] = field(default_factory=dict)

    def step(self) -> None:
        selector = ",".join(f"{key}={value}" for key, value in APP_LABEL.items())
        pods = self.api.get(f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector={selector}")
        faults = Faults.load(self.faults_path)
        where = placements(pods)
        for broker_id in self.cluster.broker_ids:
            placement = where.get(broker_id)
            wanted = broker_should_run(placement, faults)
            running = self.cluster.broker_running(broker_id)
            if (
                wanted
                and not running
                and not volumes_attached(
                    next(p for p in pods["items"] if broker_id_of(p["metadata"]["name"]) == broker_id),
                    claims=self.api.get(f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims"),
                    attachments=self.api.get("/apis/storage.k8s.io/v1/volumeattachments"),
                )
            ):
                continue  # a kubelet waits for the pod's volumes to be attached before starting it
            if wanted and not running:
                node = placement.node if placement else None
                print(f"bridge: pod kafka-{broker_id} Running on {node}: starting broker {broker_id}", flush=True)
                self.cluster.start_broker(broker_id, wait=False)
            elif running and not wanted:
                lost = placement is not None and placement.node in faults.failed_nodes
                why = f"node {placement.node} failed" if lost and placement else "its pod is not Running"
                print(f"bridge: stopping broker {broker_id}: {why}", flush=True)
                self.cluster.stop_broker(broker_id, kill=lost)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Keep sandbox Kafka brokers following their pods.")
    parser.add_argument("--work-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    work_dir: Path = args.work_dir.resolve()
    control_plane = KubeControlPlane(work_dir=work_dir / "kubernetes")
    bridge = Bridge(
        api=control_plane.api(),
        cluster=KafkaCluster(work_dir=work_dir / "kafka"),
        faults_path=work_dir / "faults.json",
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
