"""Helpers of the end-to-end tests: the agent as a real subprocess, and readers of what it did.

The agent runs exactly as users run it (`python -m agent.cli run ...`) with the shipped rules
unchanged; tests read its audit trail (JSON lines), its /metrics, the apiserver's audit log and the
cluster itself.
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from helpers import eventually

from agent.adapters.kafka import KafkaAdmin, KafkaSettings
from agent.adapters.prometheus import PrometheusClient
from agent.core.kafka_safety import ClusterView
from sandbox import workload
from sandbox.environment import Sandbox
from sandbox.kube import KubeApi, node_condition
from sandbox.process import free_port

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "rules"


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
            eventually(self.ready, timeout=60, what="agent /readyz")
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


def audit_log_entries(sandbox: Sandbox) -> list[dict[str, Any]]:
    path = Path(sandbox.status()["apiserver_audit_log"])
    entries = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries


def agent_mutations(entries: Sequence[dict[str, Any]], *, since: str = "") -> list[dict[str, Any]]:
    """Mutating requests the agent made (by its User-Agent), at stage ResponseComplete."""
    return [
        entry
        for entry in entries
        if str(entry.get("userAgent", "")).startswith("kafka-autopilot/")
        and entry.get("verb") in ("create", "update", "patch", "delete", "deletecollection")
        and entry.get("stage") == "ResponseComplete"
        and entry.get("requestReceivedTimestamp", "") >= since
    ]


# --- readers and drivers shared by the end-to-end modules ----------------------------------------------

GI = 1024**3
PVCS = f"/api/v1/namespaces/{workload.NAMESPACE}/persistentvolumeclaims"
PODS = f"/api/v1/namespaces/{workload.NAMESPACE}/pods"
STATE_OBJECTS = "/apis/kafka-autopilot.io/v1alpha1/autopilotruleobjects"
AGENTS_OWN_RESOURCES = frozenset(
    {"autopilotruleobjects", "actionapprovals", "events", "customresourcedefinitions", "leases"}
)
"""What a dry-run agent may still write: its own objects, Events, its CRDs (--install-crds) and its Lease."""


def requested(api: KubeApi, claim: str) -> str:
    return str(api.get(f"{PVCS}/{claim}")["spec"]["resources"]["requests"]["storage"])


def capacity(api: KubeApi, claim: str) -> str:
    return str(api.get(f"{PVCS}/{claim}")["status"]["capacity"]["storage"])


def state_of(api: KubeApi, rule: str, key: str, *, dry_run: bool = False) -> str | None:
    """The state `rule` holds for object `key`, from its AutopilotRuleObject (a live agent's, or with
    `dry_run` a dry-run agent's: they keep apart objects)."""
    for item in api.get(STATE_OBJECTS)["items"]:
        spec = item.get("spec", {})
        if spec.get("rule") == rule and spec.get("objectKey") == key and (spec.get("mode") == "dry-run") == dry_run:
            return item.get("status", {}).get("state")
    return None


def set_usage(sandbox: Sandbox, claim: str, gib: float) -> float:
    """Tell the storage twin (simulation) the claim holds `gib` GiB; returns when."""
    moment = time.time()
    sandbox.twin_client().set_used(namespace=workload.NAMESPACE, pvc=claim, used_bytes=int(gib * GI))
    return moment


def patch_times(sandbox: Sandbox, claim: str) -> list[str]:
    """When the agent patched the claim's spec, from the apiserver's audit log."""
    return [
        entry["requestReceivedTimestamp"]
        for entry in agent_mutations(audit_log_entries(sandbox))
        if entry.get("objectRef", {}).get("resource") == "persistentvolumeclaims"
        and entry.get("objectRef", {}).get("name") == claim
        and entry.get("objectRef", {}).get("subresource") is None
    ]


def node_of(api: KubeApi, broker: int) -> str:
    return str(api.get(f"{PODS}/{workload.pod_name(broker)}")["spec"]["nodeName"])


def events_for(api: KubeApi, name: str) -> list[dict[str, Any]]:
    found = []
    for namespace in (workload.NAMESPACE, "default"):
        for event in api.get(f"/apis/events.k8s.io/v1/namespaces/{namespace}/events")["items"]:
            if event.get("regarding", {}).get("name") == name:
                found.append(event)
    return found


def verified_resizes(agent: AgentProcess, claim: str) -> list[dict[str, Any]]:
    return [r for r in agent.records() if r["event"] == "action-verified" and r["object"] == f"kafka/{claim}"]


def broker_moves_off_failed_node(
    sandbox: Sandbox,
    api: KubeApi,
    *,
    broker: int,
    node: str,
    timeout: float,
    pod: str | None = None,
    namespace: str = workload.NAMESPACE,
) -> tuple[dict[str, Any], float]:
    """Fail `node` (its broker dies with it), wait for it to turn NotReady, then for the broker's pod
    (`pod`, by default the statefulset shape's pod of `broker`) to be recreated and Running on another
    node; returns the new pod and the seconds from NotReady to Running. The caller recovers the node."""
    path = f"/api/v1/namespaces/{namespace}/pods/{pod or workload.pod_name(broker)}"
    uid = api.get(path)["metadata"]["uid"]
    sandbox.fault("fail-node", node)
    eventually(lambda: node_condition(api.get(f"/api/v1/nodes/{node}")) != "True", timeout=90, what="NotReady")
    not_ready = time.time()

    def running_elsewhere() -> dict[str, Any] | None:
        found = api.get(path)  # absent between the deletion and the recreation: not yet
        moved = found["metadata"]["uid"] != uid and found["status"].get("phase") == "Running"
        return found if moved and found["spec"].get("nodeName") != node else None

    moved: dict[str, Any] = eventually(running_elsewhere, timeout=timeout, what=f"{path} recreated and Running")
    return moved, time.time() - not_ready


def pods_on(api: KubeApi, node: str) -> dict[str, str]:
    """(namespace/name -> uid) of every pod on `node`, in every namespace."""
    listed = api.get(f"/api/v1/pods?fieldSelector=spec.nodeName={node}")["items"]
    return {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p["metadata"]["uid"] for p in listed}


def schedulable_within(api: KubeApi, node: str, *, seconds: float, what: str) -> float:
    """Seconds until `node` is Ready and not cordoned; fails past `seconds`."""
    started = time.monotonic()
    eventually(
        lambda: (
            node_condition(found := api.get(f"/api/v1/nodes/{node}")) == "True"
            and not found["spec"].get("unschedulable")
        ),
        timeout=seconds,
        what=what,
    )
    return time.monotonic() - started


# --- Kafka's leadership, for the rebalance scenarios ------------------------------------------------

IMBALANCE = "kafka_controller_kafkacontroller_preferredreplicaimbalancecount"


async def _view(bootstrap: str) -> ClusterView:
    async with KafkaAdmin(settings=KafkaSettings(bootstrap_servers=bootstrap)) as kafka:
        return await kafka.cluster_view()


def answer(sandbox: Sandbox, verb: str, name: str, *options: str) -> subprocess.CompletedProcess[str]:
    """`kafka-autopilot <verb> <name>` (approve, decline) with the real CLI, as a person runs it."""
    script = Path(sys.executable).with_name("kafka-autopilot")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "agent.cli"]
    return subprocess.run(
        [*command, verb, name, "--kubeconfig", sandbox.status()["kubeconfig"], *options],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


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


def restart_broker(sandbox: Sandbox, broker: int) -> None:
    sandbox.fault("stop-broker", str(broker))
    assert not sandbox.kafka.broker_running(broker)
    sandbox.fault("start-broker", str(broker))
    eventually(lambda: sandbox.kafka.broker_running(broker), timeout=60, what=f"the bridge restarting broker {broker}")
    sandbox.kafka.wait_for_brokers([broker])


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

    found: ClusterView = eventually(visible, timeout=90, what=f"broker {broker}'s imbalance visible", interval=0.2)
    return found


# --- storage pools (the storage twin's) ------------------------------------------------------------

TI = 1024**4
POOL_RULE = "kafka-pool-expand"
POOL_LABELS = {"kafka-autopilot.io/pool": "kafka"}


def twin_pool(sandbox: Sandbox, node: str, name: str) -> dict[str, Any]:
    (pool,) = [p for p in sandbox.twin_client().pools() if p["node"] == node and p["name"] == name]
    return pool


def fill(sandbox: Sandbox, node: str, name: str, fraction: float) -> float:
    """Set the pool's usage to `fraction` of its total; returns the moment."""
    total = twin_pool(sandbox, node, name)["total_size"]
    moment = time.time()
    sandbox.twin_client().set_pool_used(node=node, pool=name, used_bytes=int(total * fraction))
    return moment


def events_about(api: KubeApi, name: str) -> list[dict[str, Any]]:
    found = []
    for namespace in ("default", "kube-system"):
        for event in api.get(f"/apis/events.k8s.io/v1/namespaces/{namespace}/events")["items"]:
            if event.get("regarding", {}).get("name") == name:
                found.append(event)
    return found


def records(agent: AgentProcess, event: str, key: str) -> list[dict[str, Any]]:
    return [r for r in agent.records() if r["event"] == event and r["object"] == key]


def action_count(agent: AgentProcess, outcome: str) -> float:
    """kafka_autopilot_actions_total of the pool rule for one outcome, from the agent's /metrics."""
    for line in agent.metrics().splitlines():
        if (
            line.startswith("kafka_autopilot_actions_total{")
            and f'rule="{POOL_RULE}"' in line
            and f'outcome="{outcome}"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def finished_at(pool: dict[str, Any]) -> float:
    stamp = pool["last_operation"]["finished_at"]
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True, kw_only=True)
class PoolCase:
    """One pool of the module: where it lives and the drives it starts with (half full)."""

    node: str
    name: str
    drives: int
    drive_size: int

    @property
    def key(self) -> str:
        return f"{self.node}/{self.name}"


def resize_calls_for(sandbox: Sandbox, pool: PoolCase) -> list[dict[str, Any]]:
    uuid = twin_pool(sandbox, pool.node, pool.name)["uuid"]
    return [c for c in sandbox.twin_client().state()["resize_calls"] if uuid in c["path"]]


def expanded(sandbox: Sandbox, pool: PoolCase, *, letter: str, past: int) -> dict[str, Any]:
    """The pool once the twin finished growing it past `past` bytes."""
    grown: dict[str, Any] = eventually(
        lambda: (
            (found := twin_pool(sandbox, pool.node, pool.name))["total_size"] > past
            and found["last_operation"]["status"] == "OPERATION_SUCCESSFUL"
            and found
        ),
        timeout=180,
        what=f"pool {letter} grown past {past // GI}Gi",
        interval=1,
    )
    return grown
