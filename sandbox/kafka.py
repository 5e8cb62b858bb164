"""A real Apache Kafka cluster (KRaft) on loopback, for the tests and the demo.

The autopilot reacts to Kafka's own metrics and acts through Kafka's own APIs, so the sandbox runs
the real thing: one KRaft controller and four broker-only processes started with plain `java -cp`
from the jars `scripts/fetch-kafka.sh` caches, each with the Prometheus JMX exporter agent. Leader
rebalancing is off, so an imbalance stays until someone fixes it. Every node keeps its log
directory under the work directory; a restarted broker finds its data again, as a pod does with
its re-attached volume. Ports, the cluster id and the pid files live in the work directory too,
so `up` and `down` may run in different processes.

A broker started for a pod (`start_broker(..., pod_ip=...)`, by the sandbox's bridge) advertises
`<pod IP>:<its pod port>`, as a broker in a pod does, so Kafka's metadata names the pod; it also keeps
its listener on 127.0.0.1 (the bootstrap address), advertised as the same pod address. Both are
loopback addresses (kwok's pod IPs are). Without a pod IP a broker advertises 127.0.0.1 as before.

With `tls_listener=True` (off by default: the PKI costs a few openssl runs) every broker also listens
on an SSL listener that requires a client certificate (`ssl.client.auth=required`), with PEM key and
trust stores. The CA, the brokers' certificate (127.0.0.1, localhost) and a client certificate
(CN=kafka-autopilot) are made by sandbox/kube.py's certificate functions into `<work dir>/pki`; a
client reaches it through `tls_bootstrap_servers` and `tls_files`. Brokers started for a pod do not
have it: their advertised pod addresses are not in the brokers' certificate.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import functools
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiokafka.client import AIOKafkaClient

from sandbox.kube import CLIENT_USAGE, new_ca, require_openssl, sign_certificate
from sandbox.process import (
    Daemon,
    SandboxProcessError,
    cache_root,
    daemon_from_pid_file,
    free_port,
    port_is_open,
    start_daemon,
    stop_daemon,
    wait_until,
)

RESOURCES = Path(__file__).resolve().parent / "resources" / "kafka"
POM_PATH = RESOURCES / "pom.xml"
EXPORTER_CONFIG_PATH = RESOURCES / "jmx-exporter.yaml"

DEFAULT_BROKER_IDS = (0, 1, 2, 3)
DEFAULT_CONTROLLER_ID = 100
HOST = "127.0.0.1"

_LOG4J2_PROPERTIES = """\
status = warn
shutdownHook = disable
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""

_T = TypeVar("_T")


@dataclass(frozen=True, kw_only=True)
class KafkaDistribution:
    """The cached Kafka jars and JMX exporter agent for the versions pinned in the pom."""

    kafka_version: str
    exporter_version: str
    libs_dir: Path
    javaagent: Path

    @classmethod
    def from_cache(cls, *, cache_dir: Path | None = None) -> KafkaDistribution:
        properties = _pom_properties(POM_PATH)
        version = properties["kafka.version"]
        home = (cache_dir or cache_root()) / "kafka" / version
        distribution = cls(
            kafka_version=version,
            exporter_version=properties["jmx.exporter.version"],
            libs_dir=home / "libs",
            javaagent=home / "javaagent" / "jmx_prometheus_javaagent.jar",
        )
        if not (home / ".fetched").is_file() or not distribution.javaagent.is_file():
            raise SandboxProcessError(f"Kafka {version} is not in {home}; run scripts/fetch-kafka.sh first")
        return distribution

    @property
    def classpath(self) -> str:
        return str(self.libs_dir / "*")


def _pom_properties(pom: Path) -> dict[str, str]:
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    properties = ET.parse(pom).getroot().find("m:properties", namespace)
    if properties is None:
        raise SandboxProcessError(f"{pom} has no <properties>")
    return {child.tag.split("}", 1)[1]: (child.text or "").strip() for child in properties}


@dataclass(frozen=True, kw_only=True)
class ClusterLayout:
    """What must stay the same across restarts: the cluster id and every node's ports."""

    cluster_id: str
    controller_id: int
    controller_port: int
    controller_metrics_port: int
    broker_ports: dict[int, int] = field(default_factory=dict)
    broker_metrics_ports: dict[int, int] = field(default_factory=dict)
    broker_pod_ports: dict[int, int] = field(default_factory=dict)
    """The port each broker listens on at its pod's IP, when it runs for a pod."""
    broker_tls_ports: dict[int, int] = field(default_factory=dict)
    """The port of each broker's TLS listener with client authentication (used with `tls_listener`)."""

    @classmethod
    def new(cls, *, controller_id: int, broker_ids: Sequence[int]) -> ClusterLayout:
        ports = _distinct_free_ports(2 + 4 * len(broker_ids))
        return cls(
            cluster_id=_new_cluster_id(),
            controller_id=controller_id,
            controller_port=ports[0],
            controller_metrics_port=ports[1],
            broker_ports={b: ports[2 + i] for i, b in enumerate(broker_ids)},
            broker_metrics_ports={b: ports[2 + len(broker_ids) + i] for i, b in enumerate(broker_ids)},
            broker_pod_ports={b: ports[2 + 2 * len(broker_ids) + i] for i, b in enumerate(broker_ids)},
            broker_tls_ports={b: ports[2 + 3 * len(broker_ids) + i] for i, b in enumerate(broker_ids)},
        )

    @classmethod
    def load(cls, path: Path) -> ClusterLayout:
        raw = json.loads(path.read_text())
        return cls(
            cluster_id=raw["cluster_id"],
            controller_id=raw["controller_id"],
            controller_port=raw["controller_port"],
            controller_metrics_port=raw["controller_metrics_port"],
            broker_ports={int(k): v for k, v in raw["broker_ports"].items()},
            broker_metrics_ports={int(k): v for k, v in raw["broker_metrics_ports"].items()},
            broker_pod_ports={int(k): v for k, v in raw.get("broker_pod_ports", {}).items()},
            broker_tls_ports={int(k): v for k, v in raw.get("broker_tls_ports", {}).items()},
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


@dataclass(frozen=True, kw_only=True)
class KafkaTlsFiles:
    """The PEM files a client of the TLS listener needs."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def generate_kafka_pki(*, pki: Path) -> KafkaTlsFiles:
    """CA, the brokers' serving certificate and key as one PEM keystore, and a client certificate.

    Idempotent: a `complete` marker, written last, means the set is there."""
    files = KafkaTlsFiles(ca_file=pki / "ca.crt", cert_file=pki / "client.crt", key_file=pki / "client.key")
    if (pki / "complete").is_file():
        return files
    require_openssl()
    pki.mkdir(parents=True, exist_ok=True)
    new_ca(pki=pki, stem="ca", subject="/CN=kafka-autopilot-sandbox-kafka-ca")
    sign_certificate(
        pki=pki,
        stem="broker",
        subject="/CN=kafka-sandbox-broker",
        extensions=[
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "extendedKeyUsage=serverAuth,clientAuth",
            f"subjectAltName=IP:{HOST},DNS:localhost",
        ],
    )
    sign_certificate(pki=pki, stem="client", subject="/CN=kafka-autopilot", extensions=CLIENT_USAGE)
    keystore = pki / "broker-keystore.pem"
    keystore.write_text((pki / "broker.key").read_text() + (pki / "broker.crt").read_text())
    keystore.chmod(0o600)
    (pki / "complete").write_text("")
    return files


def _distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _new_cluster_id() -> str:
    # Kafka's textual Uuid: 16 random bytes, URL-safe base64 without padding, never starting with '-'.
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


class KafkaCluster:
    """One KRaft controller and broker-only processes, all on 127.0.0.1, under `work_dir`.

    All state is in `work_dir` (`cluster.json`, per-node directories, `run/*.pid` and `run/*.log`),
    so any process can construct a `KafkaCluster` on the same directory and control the cluster.
    """

    def __init__(
        self,
        *,
        work_dir: Path,
        cache_dir: Path | None = None,
        broker_ids: Sequence[int] = DEFAULT_BROKER_IDS,
        controller_id: int = DEFAULT_CONTROLLER_ID,
        heap: str = "256m",
        ttl_seconds: int | None = None,
        ready_timeout_seconds: float = 180.0,
        tls_listener: bool = False,
    ) -> None:
        self.work_dir = work_dir.resolve()
        self.tls_listener = tls_listener
        self.cache_dir = cache_dir
        self.heap = heap
        self.ttl_seconds = ttl_seconds
        self.ready_timeout_seconds = ready_timeout_seconds
        self.run_dir = self.work_dir / "run"
        layout_path = self.work_dir / "cluster.json"
        if layout_path.is_file():
            self.layout = ClusterLayout.load(layout_path)
            if sorted(self.layout.broker_ports) != sorted(broker_ids):
                raise SandboxProcessError(
                    f"{layout_path} describes brokers {sorted(self.layout.broker_ports)}, "
                    f"not {sorted(broker_ids)}; use another work directory"
                )
        else:
            self.layout = ClusterLayout.new(controller_id=controller_id, broker_ids=broker_ids)
            self.layout.save(layout_path)
        if tls_listener and sorted(self.layout.broker_tls_ports) != sorted(broker_ids):
            raise SandboxProcessError(f"{layout_path} has no TLS listener ports; use another work directory")
        self._distribution: KafkaDistribution | None = None

    # -- addresses -------------------------------------------------------------------------------

    @property
    def broker_ids(self) -> list[int]:
        return sorted(self.layout.broker_ports)

    @property
    def bootstrap_servers(self) -> str:
        """Every broker's listener, comma separated, as Kafka clients expect it."""
        return ",".join(f"{HOST}:{self.layout.broker_ports[b]}" for b in self.broker_ids)

    @property
    def tls_bootstrap_servers(self) -> str:
        """Every broker's TLS listener (client certificate required); needs `tls_listener=True`."""
        if not self.tls_listener:
            raise SandboxProcessError("this KafkaCluster was made without tls_listener=True")
        return ",".join(f"{HOST}:{self.layout.broker_tls_ports[b]}" for b in self.broker_ids)

    @property
    def tls_files(self) -> KafkaTlsFiles:
        """The CA and client certificate for the TLS listener (made on first use)."""
        return generate_kafka_pki(pki=self.work_dir / "pki")

    def broker_address(self, broker_id: int) -> str:
        return f"{HOST}:{self.layout.broker_ports[broker_id]}"

    @property
    def metrics_targets(self) -> dict[int, str]:
        """Broker id to the `host:port` of that broker's JMX exporter, for Prometheus scrape configs."""
        return {b: f"{HOST}:{self.layout.broker_metrics_ports[b]}" for b in self.broker_ids}

    @property
    def controller_metrics_target(self) -> str:
        """The `host:port` of the controller's JMX exporter, where the KafkaController gauges live."""
        return f"{HOST}:{self.layout.controller_metrics_port}"

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start whatever is not running and wait until every broker is registered and serving."""
        self.start_controller()
        for broker_id in self.broker_ids:
            if not self.broker_running(broker_id):
                self._launch_broker(broker_id)
        for broker_id in self.broker_ids:
            self._wait_for_broker_ports(broker_id)
        self.wait_for_brokers(self.broker_ids)

    def start_controller(self) -> None:
        """Format the storage once and start the KRaft controller alone (the sandbox starts brokers
        one by one, as their pods become Running)."""
        self._format_storage()
        controller = self._daemon(self._controller_name)
        if controller is None or not controller.is_running():
            controller = self._launch(
                name=self._controller_name,
                port=self.layout.controller_port,
                metrics_port=self.layout.controller_metrics_port,
            )
        self._wait_for_ports(controller, self.layout.controller_port, self.layout.controller_metrics_port, "controller")

    def stop(self) -> None:
        """Stop the brokers (together, each shutting down cleanly), then the controller."""
        brokers = [d for b in self.broker_ids if (d := self._daemon(self._broker_name(b))) is not None]
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(brokers))) as pool:
            for future in [pool.submit(stop_daemon, d, grace_seconds=60.0) for d in brokers]:
                future.result()
        controller = self._daemon(self._controller_name)
        if controller is not None:
            stop_daemon(controller, grace_seconds=30.0)
        for port in self._all_ports():
            self._wait_closed(port)

    def start_broker(self, broker_id: int, *, wait: bool = True, pod_ip: str | None = None) -> None:
        """Start one broker on its own log directory; with `wait`, until clients see it registered.

        With `pod_ip` (a loopback address) the broker advertises `<pod_ip>:<its pod port>`.
        """
        self._check_broker_id(broker_id)
        if not self.broker_running(broker_id):
            self._launch_broker(broker_id, pod_ip=pod_ip)
        if wait:
            self._wait_for_broker_ports(broker_id)
            self.wait_for_brokers([broker_id])

    def stop_broker(self, broker_id: int, *, kill: bool = False) -> None:
        """Stop one broker: a clean shutdown, or with `kill` an abrupt SIGKILL like a lost node."""
        self._check_broker_id(broker_id)
        daemon = self._daemon(self._broker_name(broker_id))
        if daemon is None:
            return
        if kill:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(daemon.pid, signal.SIGKILL)
        stop_daemon(daemon, grace_seconds=60.0)
        self._wait_closed(self.layout.broker_ports[broker_id])
        self._wait_closed(self.layout.broker_metrics_ports[broker_id])

    def broker_running(self, broker_id: int) -> bool:
        self._check_broker_id(broker_id)
        daemon = self._daemon(self._broker_name(broker_id))
        return daemon is not None and daemon.is_running()

    def controller_running(self) -> bool:
        daemon = self._daemon(self._controller_name)
        return daemon is not None and daemon.is_running()

    def advertised_address(self, broker_id: int) -> str | None:
        """The `host:port` the broker was last configured to advertise, read from its server.properties."""
        self._check_broker_id(broker_id)
        try:
            lines = (self._node_dir(self._broker_name(broker_id)) / "server.properties").read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            key, _, value = line.partition("=")
            if key == "advertised.listeners":
                return value.split(",")[0].split("://", 1)[-1]
        return None

    def broker_log_dir(self, broker_id: int) -> Path:
        """The broker's data directory (its `log.dirs`): the sandbox's stand-in for its volume."""
        self._check_broker_id(broker_id)
        return self._node_dir(self._broker_name(broker_id)) / "data"

    def jvm_pids(self) -> dict[str, int]:
        """Running node name to the pid of its JVM (the child of the `timeout` wrapper)."""
        pids: dict[str, int] = {}
        for name in [self._controller_name, *(self._broker_name(b) for b in self.broker_ids)]:
            daemon = self._daemon(name)
            if daemon is None or not daemon.is_running():
                continue
            children = Path(f"/proc/{daemon.pid}/task/{daemon.pid}/children")
            try:
                child = children.read_text().split()
            except OSError:
                continue
            if child:
                pids[name] = int(child[0])
        return pids

    def wait_for_brokers(self, broker_ids: Sequence[int], *, timeout_seconds: float | None = None) -> None:
        """Wait until a metadata request lists every broker in `broker_ids` as alive."""
        wanted = set(broker_ids)
        deadline = time.monotonic() + (timeout_seconds or self.ready_timeout_seconds)
        seen: set[int] = set()
        while time.monotonic() < deadline:
            for broker_id in wanted:
                daemon = self._daemon(self._broker_name(broker_id))
                if daemon is None or not daemon.is_running():
                    tail = daemon.log_tail() if daemon else "(never started)"
                    raise SandboxProcessError(f"broker {broker_id} is not running:\n{tail}")
            # Ask the brokers that should be up, so no time goes to connecting to stopped ones.
            running = ",".join(self.broker_address(b) for b in self.broker_ids if self.broker_running(b))
            try:
                seen = set(run_sync(registered_brokers(bootstrap_servers=running)))
            except Exception:  # brokers still starting: ask again
                seen = set()
            if wanted <= seen:
                return
            time.sleep(0.5)
        raise SandboxProcessError(
            f"brokers {sorted(wanted - seen)} not registered after "
            f"{timeout_seconds or self.ready_timeout_seconds:.0f}s; logs in {self.run_dir}"
        )

    # -- internals -------------------------------------------------------------------------------

    @property
    def _controller_name(self) -> str:
        return "kafka-controller"

    @staticmethod
    def _broker_name(broker_id: int) -> str:
        return f"kafka-broker-{broker_id}"

    def _node_dir(self, name: str) -> Path:
        return self.work_dir / name

    def _check_broker_id(self, broker_id: int) -> None:
        if broker_id not in self.layout.broker_ports:
            raise ValueError(f"no broker {broker_id} in this cluster (brokers {self.broker_ids})")

    def _daemon(self, name: str) -> Daemon | None:
        return daemon_from_pid_file(name=name, run_dir=self.run_dir)

    def _all_ports(self) -> list[int]:
        return [
            self.layout.controller_port,
            self.layout.controller_metrics_port,
            *self.layout.broker_ports.values(),
            *self.layout.broker_metrics_ports.values(),
            *(self.layout.broker_tls_ports.values() if self.tls_listener else ()),
        ]

    @property
    def distribution(self) -> KafkaDistribution:
        if self._distribution is None:
            self._distribution = KafkaDistribution.from_cache(cache_dir=self.cache_dir)
        return self._distribution

    def _quorum_voters(self) -> str:
        return f"{self.layout.controller_id}@{HOST}:{self.layout.controller_port}"

    def _controller_properties(self) -> dict[str, str]:
        return {
            "process.roles": "controller",
            "node.id": str(self.layout.controller_id),
            "controller.quorum.voters": self._quorum_voters(),
            "listeners": f"CONTROLLER://{HOST}:{self.layout.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT",
            "log.dirs": str(self._node_dir(self._controller_name) / "data"),
            # In KRaft the controller fills in these defaults when it creates a topic.
            "default.replication.factor": "3",
            "num.partitions": "3",
            "min.insync.replicas": "2",
            # A killed broker is fenced after this long without heartbeats.
            "broker.session.timeout.ms": "6000",
            "num.io.threads": "2",
            "num.network.threads": "2",
            "background.threads": "2",
        }

    def _listener_properties(self, broker_id: int, *, pod_ip: str | None) -> dict[str, str]:
        port = self.layout.broker_ports[broker_id]
        if pod_ip is None and self.tls_listener:
            pki = self.work_dir / "pki"
            tls = self.tls_files
            listeners = f"PLAINTEXT://{HOST}:{port},SSL://{HOST}:{self.layout.broker_tls_ports[broker_id]}"
            return {
                "listeners": listeners,
                "advertised.listeners": listeners,
                "inter.broker.listener.name": "PLAINTEXT",
                "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL",
                "listener.name.ssl.ssl.client.auth": "required",
                "listener.name.ssl.ssl.keystore.type": "PEM",
                "listener.name.ssl.ssl.keystore.location": str(pki / "broker-keystore.pem"),
                "listener.name.ssl.ssl.truststore.type": "PEM",
                "listener.name.ssl.ssl.truststore.location": str(tls.ca_file),
            }
        if pod_ip is None:
            return {
                "listeners": f"PLAINTEXT://{HOST}:{port}",
                "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
                "inter.broker.listener.name": "PLAINTEXT",
                "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            }
        if not ipaddress.ip_address(pod_ip).is_loopback:
            raise SandboxProcessError(f"broker {broker_id}: pod IP {pod_ip} is not a loopback address; refusing")
        pod_address = f"{pod_ip}:{self.layout.broker_pod_ports[broker_id]}"
        # Clients bootstrapping at 127.0.0.1 are told the pod address, as are clients of the pod listener.
        return {
            "listeners": f"POD://{pod_address},PLAINTEXT://{HOST}:{port}",
            "advertised.listeners": f"POD://{pod_address},PLAINTEXT://{pod_address}",
            "inter.broker.listener.name": "POD",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,POD:PLAINTEXT",
        }

    def _broker_properties(self, broker_id: int, *, pod_ip: str | None = None) -> dict[str, str]:
        return {
            "process.roles": "broker",
            "node.id": str(broker_id),
            "controller.quorum.voters": self._quorum_voters(),
            "controller.listener.names": "CONTROLLER",
            **self._listener_properties(broker_id, pod_ip=pod_ip),
            "log.dirs": str(self.broker_log_dir(broker_id)),
            "auto.leader.rebalance.enable": "false",
            "min.insync.replicas": "2",
            "offsets.topic.replication.factor": "3",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "3",
            "transaction.state.log.min.isr": "2",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "3",
            "share.coordinator.state.topic.min.isr": "2",
            "group.initial.rebalance.delay.ms": "0",
            "broker.heartbeat.interval.ms": "1000",
            # The cleaner's buffer is on the heap; the 128 MiB default would take half of it.
            "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
            "num.io.threads": "2",
            "num.network.threads": "2",
            "num.replica.fetchers": "1",
            "num.recovery.threads.per.data.dir": "1",
            "background.threads": "2",
        }

    def _write_configs(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        (self.work_dir / "log4j2.properties").write_text(_LOG4J2_PROPERTIES)
        nodes = {self._controller_name: self._controller_properties()}
        nodes.update({self._broker_name(b): self._broker_properties(b) for b in self.broker_ids})
        for name, properties in nodes.items():
            self._write_properties(name, properties)

    def _write_properties(self, name: str, properties: dict[str, str]) -> None:
        node_dir = self._node_dir(name)
        node_dir.mkdir(parents=True, exist_ok=True)
        text = "".join(f"{key}={value}\n" for key, value in properties.items())
        (node_dir / "server.properties").write_text(text)

    def _format_storage(self) -> None:
        """Format each node's log directory once; a formatted directory is kept as it is."""
        self._write_configs()
        names = [self._controller_name, *(self._broker_name(b) for b in self.broker_ids)]
        pending = [n for n in names if not (self._node_dir(n) / "data" / "meta.properties").is_file()]
        if not pending:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        processes = []
        for name in pending:
            log = (self.run_dir / f"{name}-format.log").open("wb")
            argv = [
                *self._java_command(),
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                self.layout.cluster_id,
                "--config",
                str(self._node_dir(name) / "server.properties"),
            ]
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            processes.append((name, process, log))
        failures = []
        for name, process, log in processes:
            try:
                code = process.wait(timeout=self.ready_timeout_seconds)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
            log.close()
            if code != 0:
                failures.append(f"{name} (exit {code}, log {self.run_dir / f'{name}-format.log'})")
        if failures:
            raise SandboxProcessError("formatting Kafka storage failed for " + ", ".join(failures))

    def _java_command(self, *, metrics_port: int | None = None) -> list[str]:
        distribution = self.distribution
        argv = [
            "java",
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-XX:-UsePerfData",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.work_dir / 'log4j2.properties'}",
        ]
        if metrics_port is not None:
            argv.append(f"-javaagent:{distribution.javaagent}={HOST}:{metrics_port}:{EXPORTER_CONFIG_PATH}")
        return [*argv, "-cp", distribution.classpath]

    def _launch(self, *, name: str, port: int, metrics_port: int) -> Daemon:
        for each in (port, metrics_port):
            if port_is_open(each):
                raise SandboxProcessError(f"cannot start {name}: port {each} is taken by another process")
        return start_daemon(
            name=name,
            argv=[
                *self._java_command(metrics_port=metrics_port),
                "kafka.Kafka",
                str(self._node_dir(name) / "server.properties"),
            ],
            run_dir=self.run_dir,
            cwd=self._node_dir(name),
            ttl_seconds=self.ttl_seconds,
        )

    def _launch_broker(self, broker_id: int, *, pod_ip: str | None = None) -> Daemon:
        self._write_properties(self._broker_name(broker_id), self._broker_properties(broker_id, pod_ip=pod_ip))
        return self._launch(
            name=self._broker_name(broker_id),
            port=self.layout.broker_ports[broker_id],
            metrics_port=self.layout.broker_metrics_ports[broker_id],
        )

    def _wait_for_broker_ports(self, broker_id: int) -> None:
        daemon = self._daemon(self._broker_name(broker_id))
        if daemon is None:
            raise SandboxProcessError(f"broker {broker_id} was never started")
        self._wait_for_ports(
            daemon,
            self.layout.broker_ports[broker_id],
            self.layout.broker_metrics_ports[broker_id],
            f"broker {broker_id}",
        )

    def _wait_for_ports(self, daemon: Daemon, port: int, metrics_port: int, what: str) -> None:
        for each, role in ((metrics_port, "metrics"), (port, "listener")):
            wait_until(
                functools.partial(port_is_open, each),
                daemon=daemon,
                timeout_seconds=self.ready_timeout_seconds,
                what=f"{what} {role} port {each} open",
            )

    def _wait_closed(self, port: int, timeout_seconds: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_seconds
        while port_is_open(port):
            if time.monotonic() > deadline:
                raise SandboxProcessError(f"port {port} still open after its Kafka process stopped")
            time.sleep(0.1)


async def registered_brokers(*, bootstrap_servers: str, request_timeout_ms: int = 5000) -> list[int]:
    """The ids of the live brokers in the metadata of the first bootstrap server that answers."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=request_timeout_ms)
    try:
        await client.bootstrap()
        return sorted(int(broker.nodeId) for broker in client.cluster.brokers())
    finally:
        await client.close()


def run_sync(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine to completion from synchronous code, even when an event loop is running."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sandbox.kafka up|down|status WORK_DIR`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] not in {"up", "down", "status"}:
        print("usage: python -m sandbox.kafka up|down|status WORK_DIR", file=sys.stderr)
        return 2
    cluster = KafkaCluster(work_dir=Path(args[1]))
    if args[0] == "up":
        started = time.monotonic()
        cluster.start()
        print(f"kafka up in {time.monotonic() - started:.1f}s: bootstrap {cluster.bootstrap_servers}")
    elif args[0] == "down":
        cluster.stop()
        print("kafka down")
    status = {
        "bootstrap_servers": cluster.bootstrap_servers,
        "controller_running": cluster.controller_running(),
        "brokers_running": {b: cluster.broker_running(b) for b in cluster.broker_ids},
        "metrics_targets": cluster.metrics_targets,
        "controller_metrics_target": cluster.controller_metrics_target,
        "jvm_pids": cluster.jvm_pids(),
    }
    print(json.dumps(status, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
