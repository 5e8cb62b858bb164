"""The whole local real environment, brought up and torn down as one: `kafka-autopilot sandbox ...`.

Parts, each a real program except the storage twin (a simulation, named as one):
- Kubernetes: etcd, kube-apiserver (RBAC, audit log), kube-controller-manager, kube-scheduler, and
  KWOK for 5 nodes (sandbox.kube);
- Kafka: a KRaft controller and brokers 0-3, each with the JMX exporter (sandbox.kafka);
- the storage twin: provisioner and resizer for the sandbox StorageClass, volume and pool metrics, and
  a storage-pool API shaped like the OpenStorage SDK's (sandbox.storage_twin);
- Prometheus scraping brokers, controller, twin and the agent every second (sandbox.prometheus);
- the bridge that makes each broker follow its pod (sandbox.bridge).

All state lives in one work dir (default `.cache/sandbox`), so `up`, `status`, `fault` and `down`
can run in different processes. Every daemon has a time-to-live and stops by itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.adapters.local_prometheus import ScrapeTarget
from sandbox import workload
from sandbox.bridge import Faults
from sandbox.kafka import KafkaCluster
from sandbox.kube import KubeApi, KubeApiError, KubeControlPlane
from sandbox.process import (
    SandboxProcessError,
    cache_root,
    daemon_from_pid_file,
    free_port,
    start_daemon,
    stop_daemon,
)
from sandbox.prometheus import PrometheusServer
from sandbox.storage_twin import StorageTwinClient, start_storage_twin

Progress = Callable[[str], None]
REPO = Path(__file__).resolve().parents[1]
SCRAPE_INTERVAL_SECONDS = 1.0
FAULTS = (
    "fail-node",
    "partition-node",
    "recover-node",
    "stop-broker",
    "start-broker",
    "stop-prometheus",
    "start-prometheus",
    "stop-apiserver",
    "start-apiserver",
    "set-ingest",
)


def default_work_dir() -> Path:
    return cache_root() / "sandbox"


def install_tools(progress: Progress) -> None:
    """Run the project's installers; each is idempotent and returns at once when its cache is warm."""
    for script in ("install-prometheus.sh", "fetch-kafka.sh", "build-kubernetes.sh"):
        progress(f"installing: scripts/{script}")
        done = subprocess.run(
            ["bash", str(REPO / "scripts" / script)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SandboxProcessError(f"scripts/{script} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")


@dataclass
class Sandbox:
    work_dir: Path = field(default_factory=default_work_dir)

    def __post_init__(self) -> None:
        self.work_dir = self.work_dir.resolve()

    @property
    def kube(self) -> KubeControlPlane:
        return KubeControlPlane(work_dir=self.work_dir / "kubernetes")

    @property
    def kafka(self) -> KafkaCluster:
        return KafkaCluster(work_dir=self.work_dir / "kafka")

    @property
    def run_dir(self) -> Path:
        return self.work_dir / "run"

    @property
    def faults_path(self) -> Path:
        return self.work_dir / "faults.json"

    @property
    def status_path(self) -> Path:
        return self.work_dir / "status.json"

    @property
    def ports_path(self) -> Path:
        return self.work_dir / "ports.json"

    def ports(self) -> dict[str, int]:
        """Loopback ports of the sandbox's own services, chosen once so URLs survive restarts.

        `agent` is where Prometheus expects an agent's /metrics (`kafka-autopilot run --listen`).
        """
        try:
            ports: dict[str, int] = json.loads(self.ports_path.read_text())
        except (OSError, ValueError):
            ports = {}
        missing = [name for name in ("prometheus", "storage_twin", "agent") if name not in ports]
        for name in missing:
            port = free_port()
            while port in ports.values():
                port = free_port()
            ports[name] = port
        if missing:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            self.ports_path.write_text(json.dumps(ports))
        return ports

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.ports()['prometheus']}"

    @property
    def storage_api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports()['storage_twin']}"

    def prometheus(self) -> PrometheusServer:
        return PrometheusServer(
            tsdb_dir=self.work_dir / "prometheus" / "tsdb",
            run_dir=self.run_dir,
            scrape_targets=self._scrape_targets(),
            scrape_interval_seconds=SCRAPE_INTERVAL_SECONDS,
            port=self.ports()["prometheus"],
        )

    # --- up / down / status ----------------------------------------------------------------------

    def up(self, *, progress: Progress, install: bool = True) -> dict[str, Any]:
        started = time.monotonic()
        if install:
            install_tools(progress)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not self.faults_path.exists():
            Faults().save(self.faults_path)
        progress("starting Kubernetes: etcd, kube-apiserver, controller-manager, scheduler, kwok")
        kube = self.kube
        kube.start()
        progress("starting the storage twin (a simulation of the storage layer)")
        self._start_twin(kube)
        progress("applying the Kafka workload: namespace, StorageClass, StatefulSet kafka (4 x 400Gi)")
        self._apply_workload(kube.api())
        progress("starting the Kafka KRaft controller")
        kafka = self.kafka
        kafka.start_controller()
        progress("starting the bridge: each broker follows its pod")
        self._start_bridge()
        progress("waiting for 4 pods Running with Bound volumes, and their brokers registered")
        self._wait_for_workload(kube.api(), kafka)
        progress("starting Prometheus (1s scrape of brokers, controller and twin)")
        self._start_prometheus()
        status = self._write_status()
        progress(f"sandbox up in {time.monotonic() - started:.0f}s")
        return status

    def down(self, *, progress: Progress) -> None:
        for name in ("bridge", "prometheus", "storage-twin"):
            daemon = daemon_from_pid_file(name=name, run_dir=self.run_dir)
            if daemon is not None:
                progress(f"stopping {name}")
                stop_daemon(daemon)
        progress("stopping Kafka")
        self.kafka.stop()
        progress("stopping Kubernetes")
        self.kube.stop()
        self.status_path.unlink(missing_ok=True)

    def reset(self, *, progress: Progress) -> None:
        self.down(progress=progress)
        progress(f"removing {self.work_dir}")
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def status(self) -> dict[str, Any]:
        try:
            recorded: dict[str, Any] = json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            recorded = {}
        running = {
            name: bool((daemon := daemon_from_pid_file(name=name, run_dir=self.run_dir)) and daemon.is_running())
            for name in ("bridge", "prometheus", "storage-twin")
        }
        recorded["up"] = bool(recorded) and self.kube.is_running() and all(running.values())
        recorded["processes"] = {
            **running,
            "kubernetes": self.kube.is_running(),
            "kafka-controller": self.kafka.controller_running(),
            **{f"broker-{b}": self.kafka.broker_running(b) for b in self.kafka.broker_ids},
        }
        return recorded

    # --- faults -----------------------------------------------------------------------------------

    def fault(self, kind: str, target: str | None = None, value: str | None = None) -> str:
        faults = Faults.load(self.faults_path)
        if kind in ("fail-node", "partition-node", "recover-node"):
            node = _need(target, f"{kind} needs a node name")
            if kind == "recover-node":
                faults = replace(
                    faults,
                    failed_nodes=faults.failed_nodes - {node},
                    partitioned_nodes=faults.partitioned_nodes - {node},
                )
                self.kube.recover_node(node)
                faults.save(self.faults_path)
                return f"{node}: heartbeat resumed"
            self.kube.fail_node(node)
            if kind == "fail-node":
                faults = replace(faults, failed_nodes=faults.failed_nodes | {node})
                faults.save(self.faults_path)
                return f"{node}: failed (heartbeat stopped, its brokers killed)"
            faults = replace(faults, partitioned_nodes=faults.partitioned_nodes | {node})
            faults.save(self.faults_path)
            return f"{node}: partitioned (heartbeat stopped, its brokers still serving)"
        if kind in ("stop-broker", "start-broker"):
            broker = int(_need(target, f"{kind} needs a broker id"))
            held = faults.stopped_brokers | {broker} if kind == "stop-broker" else faults.stopped_brokers - {broker}
            replace(faults, stopped_brokers=held).save(self.faults_path)
            if kind == "stop-broker":
                self.kafka.stop_broker(broker)
                return f"broker {broker} stopped"
            return f"broker {broker} released: the bridge starts it while its pod is Running"
        if kind == "stop-prometheus":
            daemon = daemon_from_pid_file(name="prometheus", run_dir=self.run_dir)
            if daemon is not None:
                stop_daemon(daemon)
            return "prometheus stopped"
        if kind == "start-prometheus":
            self._start_prometheus()
            return "prometheus started"
        if kind == "stop-apiserver":
            self.kube.stop_apiserver()
            return "kube-apiserver stopped"
        if kind == "start-apiserver":
            self.kube.start_apiserver()
            return "kube-apiserver started"
        if kind == "set-ingest":
            pvc = _need(target, "set-ingest needs a PVC as namespace/name")
            rate = float(_need(value, "set-ingest needs bytes per second"))
            pvc_namespace, _, name = pvc.rpartition("/")
            self.twin_client().set_ingest(
                namespace=pvc_namespace or workload.NAMESPACE, pvc=name, bytes_per_second=rate
            )
            return f"{pvc}: ingest {rate:g} bytes/s"
        raise ValueError(f"unknown fault {kind!r}; known: {', '.join(FAULTS)}")

    def twin_client(self) -> StorageTwinClient:
        return StorageTwinClient(self.storage_api_url)

    # --- internals --------------------------------------------------------------------------------

    def _start_twin(self, kube: KubeControlPlane) -> None:
        existing = daemon_from_pid_file(name="storage-twin", run_dir=self.run_dir)
        if existing is not None and existing.is_running():
            return
        start_storage_twin(
            kubeconfig=kube.kubeconfig_path,
            run_dir=self.run_dir,
            port=self.ports()["storage_twin"],
            state_file=self.work_dir / "storage-twin.json",
            storage_nodes=kube.node_names,
        )

    def _apply_workload(self, api: KubeApi) -> None:
        for path, manifest in (
            ("/api/v1/namespaces", workload.namespace()),
            ("/api/v1/namespaces", workload.agent_namespace()),
            ("/apis/storage.k8s.io/v1/storageclasses", workload.storage_class()),
            (f"/apis/apps/v1/namespaces/{workload.NAMESPACE}/statefulsets", workload.statefulset(replicas=4)),
        ):
            try:
                api.create(path, manifest)
            except KubeApiError as error:
                if error.status != 409:
                    raise

    def _wait_for_workload(self, api: KubeApi, kafka: KafkaCluster, *, timeout_seconds: float = 240.0) -> None:
        deadline = time.monotonic() + timeout_seconds
        pods_path = f"/api/v1/namespaces/{workload.NAMESPACE}/pods"
        pvcs_path = f"/api/v1/namespaces/{workload.NAMESPACE}/persistentvolumeclaims"
        while time.monotonic() < deadline:
            pods = [p for p in api.get(pods_path)["items"] if p.get("status", {}).get("phase") == "Running"]
            bound = [c for c in api.get(pvcs_path)["items"] if c.get("status", {}).get("phase") == "Bound"]
            if len(pods) >= 4 and len(bound) >= 4 and all(kafka.broker_running(b) for b in kafka.broker_ids):
                kafka.wait_for_brokers(kafka.broker_ids)
                return
            time.sleep(1)
        raise SandboxProcessError(
            f"the Kafka workload did not come up within {timeout_seconds:.0f}s: "
            f"{len(pods)} pods Running, {len(bound)} PVCs Bound; see {self.run_dir}/bridge.log"
        )

    def _start_bridge(self) -> None:
        existing = daemon_from_pid_file(name="bridge", run_dir=self.run_dir)
        if existing is not None and existing.is_running():
            return
        start_daemon(
            name="bridge",
            argv=[sys.executable, "-m", "sandbox.bridge", "--work-dir", str(self.work_dir)],
            run_dir=self.run_dir,
            cwd=REPO,
        )

    def _start_prometheus(self) -> None:
        existing = daemon_from_pid_file(name="prometheus", run_dir=self.run_dir)
        if existing is not None and existing.is_running():
            stop_daemon(existing)
        self.prometheus().start()

    def _scrape_targets(self) -> list[ScrapeTarget]:
        kafka = self.kafka
        targets = [
            ScrapeTarget(
                address=address,
                labels={"namespace": workload.NAMESPACE, "pod": workload.pod_name(broker), "broker": str(broker)},
            )
            for broker, address in kafka.metrics_targets.items()
        ]
        targets.append(
            ScrapeTarget(
                address=kafka.controller_metrics_target,
                labels={"namespace": workload.NAMESPACE, "pod": "kafka-controller-0", "role": "controller"},
            )
        )
        twin = self.storage_api_url.removeprefix("http://")
        targets.append(ScrapeTarget(address=twin, labels={"role": "storage-twin"}))
        targets.append(ScrapeTarget(address=self.agent_listen, labels={"role": "agent"}))
        return targets

    @property
    def agent_listen(self) -> str:
        return f"127.0.0.1:{self.ports()['agent']}"

    def _write_status(self) -> dict[str, Any]:
        kube = self.kube
        status = {
            "kubeconfig": str(kube.kubeconfig_path),
            "prometheus_url": self.prometheus_url,
            "kafka_bootstrap": self.kafka.bootstrap_servers,
            "storage_api_url": self.storage_api_url,
            "agent_listen": self.agent_listen,
            "apiserver_audit_log": str(kube.audit_log_path),
            "apiserver_url": kube.apiserver_url,
            "nodes": list(kube.node_names),
            "namespace": workload.NAMESPACE,
            "work_dir": str(self.work_dir),
        }
        self.status_path.write_text(json.dumps(status, indent=2))
        return status


def _need(value: str | None, message: str) -> str:
    if not value:
        raise ValueError(message)
    return value
