"""The whole local real environment, brought up and torn down as one: `kafka-autopilot sandbox ...`.

Parts, each a real program except the storage twin and the operator twin (simulations, named as such):
- Kubernetes: etcd, kube-apiserver (RBAC, audit log), kube-controller-manager, kube-scheduler, and
  KWOK for 5 nodes (sandbox.kube);
- Kafka: a KRaft controller and 4 brokers, each with the JMX exporter, advertising its pod's IP
  (sandbox.kafka);
- the deployment shape (sandbox.shapes): `statefulset` (default), `strimzi` (our stand-in of Strimzi's
  CRDs, whose pods and PVCs the operator twin makes: sandbox.operator_twin, a simulation) or `bitnami`;
  plus neighbours that are not Kafka on the broker nodes (sandbox.neighbours);
- the storage twin: provisioner and resizer for the sandbox StorageClass, volume and pool metrics, and
  a storage-pool API shaped like the OpenStorage SDK's (sandbox.storage_twin);
- Prometheus scraping brokers, controller, twin and the agent every second (sandbox.prometheus);
- the bridge that makes each broker follow its pod (sandbox.bridge).

`Sandbox.up_kubernetes` brings up only Kubernetes (with as many KWOK nodes as asked) and Prometheus, for
bench/bench_cluster.py, which makes its own objects at cluster scale.

All state lives in one work dir (default `.cache/sandbox`), the shape included (`shape.json`), so
`up`, `status`, `fault` and `down` can run in different processes. Every daemon has a time-to-live
and stops by itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.adapters.local_prometheus import ScrapeTarget
from sandbox import neighbours, shapes, workload
from sandbox.bridge import Faults, recorded_pool_node_ids
from sandbox.kafka import KafkaCluster
from sandbox.kube import NODE_LEASE_DURATION_SECONDS, KubeApi, KubeApiError, KubeControlPlane
from sandbox.process import (
    SandboxProcessError,
    cache_root,
    daemon_from_pid_file,
    free_port,
    start_daemon,
    stop_daemon,
)
from sandbox.prometheus import PrometheusServer
from sandbox.shapes import Shape
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


DAEMONS = ("bridge", "operator-twin", "prometheus", "storage-twin")


@dataclass
class Sandbox:
    """The sandbox in `work_dir`. `shape` None means the one recorded there (else the default);
    a shape other than the recorded one is refused until `reset`."""

    work_dir: Path = field(default_factory=default_work_dir)
    shape: str | None = None

    def __post_init__(self) -> None:
        self.work_dir = self.work_dir.resolve()
        recorded = self.recorded_shape()
        if self.shape is None:
            self.shape = recorded or shapes.DEFAULT_SHAPE
        shapes.shape_named(self.shape)
        if recorded is not None and recorded != self.shape:
            raise SandboxProcessError(
                f"{self.work_dir} holds a {recorded} sandbox, not {self.shape}: "
                "`sandbox reset` it or use another work dir"
            )

    @property
    def shape_path(self) -> Path:
        return self.work_dir / "shape.json"

    def recorded_shape(self) -> str | None:
        try:
            name = json.loads(self.shape_path.read_text())["shape"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return str(name)

    @property
    def definition(self) -> Shape:
        return shapes.shape_named(self.shape or shapes.DEFAULT_SHAPE)

    @property
    def kube(self) -> KubeControlPlane:
        return KubeControlPlane(work_dir=self.work_dir / "kubernetes")

    @property
    def kafka(self) -> KafkaCluster:
        shape = self.definition
        return KafkaCluster(
            work_dir=self.work_dir / "kafka", broker_ids=shape.broker_ids, controller_id=shape.controller_id
        )

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

    def prometheus(self, *, extra_targets: Sequence[ScrapeTarget] = ()) -> PrometheusServer:
        return PrometheusServer(
            tsdb_dir=self.work_dir / "prometheus" / "tsdb",
            run_dir=self.run_dir,
            scrape_targets=[*self._scrape_targets(), *extra_targets],
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
        shape = self.definition
        self.shape_path.write_text(json.dumps({"shape": shape.name}) + "\n")
        if not self.faults_path.exists():
            Faults().save(self.faults_path)
        progress("starting Kubernetes: etcd, kube-apiserver, controller-manager, scheduler, kwok")
        kube = self.kube
        kube.start()
        progress("starting the storage twin (a simulation of the storage layer)")
        self._start_twin(kube)
        progress(f"applying the Kafka workload, shape {shape.name}: {shape.summary} (4 x 400Gi)")
        self._apply_workload(kube.api())
        if shape.name == "strimzi":
            progress("starting the operator twin (a simulation of Strimzi's operator for the pool)")
            self._start_operator_twin()
        progress("starting the Kafka KRaft controller")
        kafka = self.kafka
        kafka.start_controller()
        progress("starting the bridge: each broker follows its pod")
        self._start_bridge()
        progress("waiting for 4 pods Running with Bound volumes, and their brokers registered")
        self._wait_for_workload(kube.api(), kafka)
        progress("applying the neighbours: a pod with its own PVC on each broker node, a DaemonSet")
        self._apply(kube.api(), neighbours.manifests(shape))
        self._wait_for_neighbours(kube.api())
        progress("starting Prometheus (1s scrape of brokers, controller and twin)")
        self._start_prometheus()
        status = self._write_status()
        progress(f"sandbox up in {time.monotonic() - started:.0f}s")
        return status

    def up_kubernetes(
        self,
        *,
        progress: Progress,
        node_count: int,
        scrape_targets: Sequence[ScrapeTarget] = (),
        node_lease_duration_seconds: int = NODE_LEASE_DURATION_SECONDS,
        install: bool = True,
    ) -> dict[str, Any]:
        """Kubernetes with `node_count` KWOK nodes, the namespaces and Prometheus (also scraping
        `scrape_targets`), but no Kafka, twin or workload: for a benchmark that makes its own objects at
        cluster scale. `status`, `down` and AgentProcess work on it as on a full sandbox."""
        started = time.monotonic()
        if install:
            install_tools(progress)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.shape_path.write_text(json.dumps({"shape": self.definition.name}) + "\n")
        progress(f"starting Kubernetes: etcd, kube-apiserver, controller-manager, scheduler, kwok ({node_count} nodes)")
        kube = KubeControlPlane(
            work_dir=self.work_dir / "kubernetes",
            node_count=node_count,
            node_lease_duration_seconds=node_lease_duration_seconds,
        )
        kube.start(timeout_seconds=180.0 + node_count * 0.2)
        self._apply(kube.api(), [("/api/v1/namespaces", workload.agent_namespace())])
        progress("starting Prometheus")
        self._start_prometheus(extra_targets=scrape_targets)
        status = self._write_status()
        progress(f"Kubernetes and Prometheus up in {time.monotonic() - started:.0f}s")
        return status

    def down(self, *, progress: Progress) -> None:
        for name in DAEMONS:
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
        wanted = [d for d in DAEMONS if d != "operator-twin" or self.definition.name == "strimzi"]
        running = {
            name: bool((daemon := daemon_from_pid_file(name=name, run_dir=self.run_dir)) and daemon.is_running())
            for name in wanted
        }
        recorded["up"] = bool(recorded) and self.kube.is_running() and all(running.values())
        recorded["processes"] = {
            **running,
            "kubernetes": self.kube.is_running(),
            "kafka-controller": self.kafka.controller_running(),
            **{f"broker-{b}": self.kafka.broker_running(b) for b in self.kafka.broker_ids},
        }
        recorded.update(self.placement())
        return recorded

    def placement(self) -> dict[str, Any]:
        """The shape, where its brokers and the neighbours are now (read from the API), and its rules."""
        shape = self.definition
        found: dict[str, Any] = {
            "shape": shape.name,
            "rules_dir": str(REPO / shape.rules_dir),
            "brokers": [],
            "neighbours": [],
        }
        if not self.kube.is_running():
            return found
        try:
            api = self.kube.api()
            pods = api.get(f"/api/v1/namespaces/{workload.NAMESPACE}/pods?labelSelector={shape.label_selector}")
            node_ids = recorded_pool_node_ids(api) if shape.name == "strimzi" else ()
            by_broker = shapes.broker_pods(shape, pods["items"], pool_node_ids=node_ids)
            found["brokers"] = neighbours.broker_entries(shape=shape, broker_pods=by_broker)
            found["neighbours"] = neighbours.neighbour_entries(
                pods=api.get(f"/api/v1/namespaces/{neighbours.NAMESPACE}/pods")["items"],
                claims=api.get(f"/api/v1/namespaces/{neighbours.NAMESPACE}/persistentvolumeclaims")["items"],
                attachments=api.get("/apis/storage.k8s.io/v1/volumeattachments")["items"],
            )
        except (KubeApiError, OSError) as error:
            found["placement_error"] = f"{type(error).__name__}: {error}"
        return found

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
        self._apply(
            api,
            [
                ("/api/v1/namespaces", workload.namespace()),
                ("/api/v1/namespaces", workload.agent_namespace()),
                ("/apis/storage.k8s.io/v1/storageclasses", workload.storage_class()),
                *shapes.workload_manifests(self.definition),
            ],
        )

    @staticmethod
    def _apply(api: KubeApi, manifests: list[tuple[str, dict[str, Any]]], *, timeout_seconds: float = 30.0) -> None:
        """Create each object once; a 404 (a CRD not served yet) is retried until `timeout_seconds`."""
        deadline = time.monotonic() + timeout_seconds
        for path, manifest in manifests:
            while True:
                try:
                    api.create(path, manifest)
                    break
                except KubeApiError as error:
                    if error.status == 409:
                        break
                    if error.status != 404 or time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)

    def _wait_for_workload(self, api: KubeApi, kafka: KafkaCluster, *, timeout_seconds: float = 240.0) -> None:
        deadline = time.monotonic() + timeout_seconds
        shape = self.definition
        pods_path = f"/api/v1/namespaces/{workload.NAMESPACE}/pods?labelSelector={shape.label_selector}"
        pvcs_path = f"/api/v1/namespaces/{workload.NAMESPACE}/persistentvolumeclaims"
        pods: list[Any] = []
        bound: list[Any] = []
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

    def _wait_for_neighbours(self, api: KubeApi, *, timeout_seconds: float = 120.0) -> None:
        """Until a neighbour (Running, its PVC Bound) and a node-agent pod run on every broker node."""
        deadline = time.monotonic() + timeout_seconds
        missing: set[str] = set()
        while time.monotonic() < deadline:
            broker_nodes = {entry["node"] for entry in self.placement()["brokers"]}
            pods = api.get(f"/api/v1/namespaces/{neighbours.NAMESPACE}/pods")["items"]
            claims = api.get(f"/api/v1/namespaces/{neighbours.NAMESPACE}/persistentvolumeclaims")["items"]
            bound = {c["metadata"]["name"] for c in claims if c.get("status", {}).get("phase") == "Bound"}
            running = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
            with_volume = {
                p["spec"].get("nodeName")
                for p in running
                if p["metadata"].get("labels", {}).get("app") == neighbours.STATEFULSET
                and set(shapes.pod_claims(p)) <= bound
            }
            agents = {
                p["spec"].get("nodeName")
                for p in running
                if p["metadata"].get("labels", {}).get("app") == neighbours.DAEMONSET
            }
            missing = (broker_nodes - with_volume) | (broker_nodes - agents)
            if len(broker_nodes) == len(self.definition.broker_ids) and not missing:
                return
            time.sleep(1)
        raise SandboxProcessError(
            f"the neighbours did not come up within {timeout_seconds:.0f}s on broker nodes {sorted(missing)}"
        )

    def _start_bridge(self) -> None:
        self._start_helper("bridge", "sandbox.bridge", "--shape", self.definition.name)

    def _start_operator_twin(self) -> None:
        self._start_helper("operator-twin", "sandbox.operator_twin")

    def _start_helper(self, name: str, module: str, *args: str) -> None:
        existing = daemon_from_pid_file(name=name, run_dir=self.run_dir)
        if existing is not None and existing.is_running():
            return
        start_daemon(
            name=name,
            argv=[sys.executable, "-m", module, "--work-dir", str(self.work_dir), *args],
            run_dir=self.run_dir,
            cwd=REPO,
        )

    def _start_prometheus(self, *, extra_targets: Sequence[ScrapeTarget] = ()) -> None:
        existing = daemon_from_pid_file(name="prometheus", run_dir=self.run_dir)
        if existing is not None and existing.is_running():
            stop_daemon(existing)
        self.prometheus(extra_targets=extra_targets).start()

    def _scrape_targets(self) -> list[ScrapeTarget]:
        kafka = self.kafka
        shape = self.definition
        targets = [
            ScrapeTarget(
                address=address,
                labels={"namespace": workload.NAMESPACE, "pod": shape.pod_name(broker), "broker": str(broker)},
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
        status.update(self.placement())
        self.status_path.write_text(json.dumps(status, indent=2))
        return status


def _need(value: str | None, message: str) -> str:
    if not value:
        raise ValueError(message)
    return value
