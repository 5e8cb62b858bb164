"""Drivers of a running sandbox shared by the end-to-end tests and the benchmarks under `bench/`.

Both start the agent the same way (`python -m agent.cli run ...` as a subprocess, `AgentProcess`), fail a
node and time its broker's move, and restart a broker and read Kafka's leadership. Keeping one copy here
means a benchmark's figure measures exactly what the tests check. Nothing here asserts: a wait that is
not met raises `ScenarioTimeoutError`, which the tests turn into a failure and the benchmarks into a
timed-out run.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from agent.adapters.kafka import KafkaAdmin, KafkaSettings
from agent.adapters.prometheus import PrometheusClient
from agent.core.kafka_safety import ClusterView
from sandbox.environment import REPO, Sandbox
from sandbox.kube import KubeApi, node_condition
from sandbox.process import free_port


class ScenarioTimeoutError(RuntimeError):
    """A wait of a scenario not met in time; the message names what was awaited and the last answer."""


def poll(check: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.5) -> Any:
    """Poll until `check()` returns something truthy and return it; an exception means "not yet".

    Raises ScenarioTimeoutError past `timeout` seconds, showing the last answer (or exception).
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as error:  # not there yet
            last = error
        else:
            if last:
                return last
        time.sleep(interval)
    raise ScenarioTimeoutError(f"{what}: not reached within {timeout:.0f}s (last: {last!r})")


# --- the agent as users run it -----------------------------------------------------------------------


@dataclass
class AgentProcess:
    """`kafka-autopilot run` as a subprocess; its audit trail is a JSON-lines file."""

    sandbox: Sandbox
    rules: Sequence[Path]
    audit_path: Path
    dry_run: bool = False
    extra_args: Sequence[str] = ()
    """More `run` options, e.g. `--policy FILE` or `--namespace NAME`."""
    policy: Path | None = None
    """An AutopilotPolicy file for `--policy`."""
    kubeconfig: Path | None = None
    """Another identity than the sandbox's admin (e.g. the Helm chart's ServiceAccount)."""
    install_crds: bool = True
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    leader_elect: bool = False
    """Run with --leader-elect (a replica of an HA pair); `identity` names it in the Lease and its User-Agent."""
    identity: str | None = None
    lease_duration: int | None = None
    audit_to_stdout: bool = False
    """Run without --audit, so the audit trail goes to stdout (captured into `audit_path`)."""
    environment: Mapping[str, str] = field(default_factory=dict)
    """Extra environment variables for the process (e.g. a skewed clock through libfaketime)."""
    ready_timeout_seconds: float = 60.0
    """How long `start` waits for /readyz, i.e. for every rule's first cycle (long on a big cluster)."""

    def start(self) -> None:
        status = self.sandbox.status()
        argv = [
            sys.executable,
            "-m",
            "agent.cli",
            "run",
            "--rules",
            *map(str, self.rules),
            "--kubeconfig",
            str(self.kubeconfig or status["kubeconfig"]),
            "--prometheus",
            status["prometheus_url"],
            "--kafka",
            status["kafka_bootstrap"],
            "--storage-api",
            self.sandbox.storage_api_url,
            *(["--install-crds"] if self.install_crds else []),
            "--listen",
            f"127.0.0.1:{self.port}",
            *([] if self.audit_to_stdout else ["--audit", str(self.audit_path)]),
        ]
        if self.dry_run:
            argv.append("--dry-run")
        if self.policy is not None:
            argv += ["--policy", str(self.policy)]
        argv.extend(self.extra_args)
        if self.leader_elect:
            argv.append("--leader-elect")
        if self.identity is not None:
            argv += ["--identity", self.identity]
        if self.lease_duration is not None:
            argv += ["--lease-duration", str(self.lease_duration)]
        environment = {**os.environ, **self.environment}
        stdout_path = self.audit_path if self.audit_to_stdout else self.audit_path.with_suffix(".log")
        with self.audit_path.with_suffix(".log").open("ab") as log, stdout_path.open("ab") as stdout:
            self.process = subprocess.Popen(
                argv, cwd=REPO, stdout=stdout, stderr=log, stdin=subprocess.DEVNULL, env=environment
            )
        try:
            poll(self.ready, timeout=self.ready_timeout_seconds, what="agent /readyz")
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> AgentProcess:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            log = self.audit_path.with_suffix(".log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"the agent exited with {self.process.returncode}:\n{log}")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as answer:
            return bool(answer.status == 200)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as answer:
            return str(answer.read().decode())

    def rule_health(self) -> dict[str, str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/rules", timeout=5) as answer:
            health: dict[str, str] = json.loads(answer.read())
            return health

    def records(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        lines = self.audit_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def kill(self) -> None:
        """SIGKILL: no goodbye, as a crashed or evicted agent."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


# --- a node failure, timed ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class NodeFailure:
    """One failed node and its broker's move, with the moments (time.monotonic) that bound it."""

    moved: dict[str, Any]
    """The broker's recreated pod, Running on another node."""
    failed_at: float
    """When the node's heartbeat was stopped (`fail-node`)."""
    not_ready_at: float
    """When the node was first seen not Ready (False or Unknown)."""
    running_at: float
    """When the broker's new pod was first seen Running on another node."""

    @property
    def heartbeat_to_not_ready(self) -> float:
        """What Kubernetes takes to notice: the node-monitor grace period and its polling."""
        return self.not_ready_at - self.failed_at

    @property
    def not_ready_to_running(self) -> float:
        """What the remediation takes once the node is seen gone."""
        return self.running_at - self.not_ready_at


def fail_node_until_broker_moves(
    sandbox: Sandbox,
    api: KubeApi,
    *,
    node: str,
    pod: str,
    namespace: str,
    timeout: float,
    interval: float = 0.2,
) -> NodeFailure:
    """Fail `node` (its broker dies with it), wait for it to turn NotReady, then for the broker's pod to be
    recreated and Running on another node. The caller recovers the node."""
    path = f"/api/v1/namespaces/{namespace}/pods/{pod}"
    uid = api.get(path)["metadata"]["uid"]
    failed_at = time.monotonic()
    sandbox.fault("fail-node", node)
    poll(
        lambda: node_condition(api.get(f"/api/v1/nodes/{node}")) != "True",
        timeout=90,
        what=f"{node} NotReady",
        interval=interval,
    )
    not_ready_at = time.monotonic()

    def running_elsewhere() -> dict[str, Any] | None:
        found = api.get(path)  # absent between the deletion and the recreation: not yet
        moved = found["metadata"]["uid"] != uid and found["status"].get("phase") == "Running"
        return found if moved and found["spec"].get("nodeName") != node else None

    moved: dict[str, Any] = poll(
        running_elsewhere, timeout=timeout, what=f"{path} recreated and Running elsewhere", interval=interval
    )
    return NodeFailure(moved=moved, failed_at=failed_at, not_ready_at=not_ready_at, running_at=time.monotonic())


def schedulable_within(api: KubeApi, node: str, *, seconds: float, what: str) -> float:
    """Seconds until `node` is Ready and not cordoned; raises ScenarioTimeoutError past `seconds`."""
    started = time.monotonic()
    poll(
        lambda: (
            node_condition(found := api.get(f"/api/v1/nodes/{node}")) == "True"
            and not found["spec"].get("unschedulable")
        ),
        timeout=seconds,
        what=what,
    )
    return time.monotonic() - started


# --- Kafka's leadership, for the rebalance scenarios ---------------------------------------------------

IMBALANCE = "kafka_controller_kafkacontroller_preferredreplicaimbalancecount"


async def _view(bootstrap: str) -> ClusterView:
    async with KafkaAdmin(settings=KafkaSettings(bootstrap_servers=bootstrap)) as kafka:
        return await kafka.cluster_view()


def view(sandbox: Sandbox) -> ClusterView:
    return asyncio.run(_view(sandbox.kafka.bootstrap_servers))


def away_from_preferred(current: ClusterView) -> list[str]:
    return [f"{p.name} (leader {p.leader})" for p in current.partitions if p.leader != p.preferred_leader]


def imbalance(prometheus: PrometheusClient) -> float | None:
    samples = prometheus.instant_query(IMBALANCE)
    return max(s.value for s in samples) if samples else None


async def _create_topic(
    bootstrap: str, topic: str, assignment: dict[int, list[int]], configs: dict[str, str] | None = None
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    name=topic,
                    num_partitions=-1,
                    replication_factor=-1,
                    replica_assignments=assignment,
                    topic_configs=configs or {},
                )
            ]
        )
    finally:
        await admin.close()


def create_topic(
    sandbox: Sandbox, topic: str, assignment: dict[int, list[int]], configs: dict[str, str] | None = None
) -> None:
    """A topic whose partition n has the replicas `assignment[n]`, the first of them preferred."""
    asyncio.run(_create_topic(sandbox.kafka.bootstrap_servers, topic, assignment, configs))


def restart_broker(sandbox: Sandbox, broker: int) -> float:
    """Stop the broker, release it to the bridge and wait until it is registered again; returns the
    moment (time.monotonic) it was released to start."""
    sandbox.fault("stop-broker", str(broker))
    if sandbox.kafka.broker_running(broker):
        raise RuntimeError(f"broker {broker} still running after stop-broker")
    started_at = time.monotonic()
    sandbox.fault("start-broker", str(broker))
    poll(lambda: sandbox.kafka.broker_running(broker), timeout=60, what=f"the bridge restarting broker {broker}")
    sandbox.kafka.wait_for_brokers([broker])
    return started_at


def wait_for_visible_imbalance(
    sandbox: Sandbox, prometheus: PrometheusClient, broker: int, *, topic: str
) -> ClusterView:
    """Broker `broker` back in the ISR of every partition of `topic` it prefers, leading none of them, and
    the controller's imbalance in Prometheus: the moment an election can fix it."""

    def visible() -> ClusterView | None:
        current = view(sandbox)
        mine = [p for p in current.partitions if p.topic == topic and p.preferred_leader == broker]
        ready = all(broker in p.isr and p.leader != broker for p in mine)
        shown = (imbalance(prometheus) or 0) > 0
        return current if ready and shown else None

    found: ClusterView = poll(visible, timeout=90, what=f"broker {broker}'s imbalance visible", interval=0.2)
    return found
