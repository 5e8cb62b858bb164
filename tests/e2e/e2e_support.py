"""Helpers of the end-to-end tests: readers of what the agent did, and drivers of the sandbox.

The agent runs exactly as users run it (`python -m agent.cli run ...`, sandbox.scenarios.AgentProcess,
shared with the benchmarks) with the shipped rules unchanged; tests read its audit trail (JSON lines),
its /metrics, the apiserver's audit log and the cluster itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from helpers import eventually

from sandbox import workload
from sandbox.environment import Sandbox
from sandbox.kube import KubeApi
from sandbox.scenarios import AgentProcess, fail_node_until_broker_moves

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "rules"


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
    failure = fail_node_until_broker_moves(
        sandbox, api, node=node, pod=pod or workload.pod_name(broker), namespace=namespace, timeout=timeout
    )
    return failure.moved, failure.not_ready_to_running


def pods_on(api: KubeApi, node: str) -> dict[str, str]:
    """(namespace/name -> uid) of every pod on `node`, in every namespace."""
    listed = api.get(f"/api/v1/pods?fieldSelector=spec.nodeName={node}")["items"]
    return {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p["metadata"]["uid"] for p in listed}


def answer(
    sandbox: Sandbox, verb: str, name: str, *options: str, kubeconfig: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`kafka-autopilot <verb> <name>` (approve, decline) with the real CLI, as a person runs it (as the
    sandbox's admin, or as the user of `kubeconfig`)."""
    script = Path(sys.executable).with_name("kafka-autopilot")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "agent.cli"]
    return subprocess.run(
        [*command, verb, name, "--kubeconfig", str(kubeconfig or sandbox.status()["kubeconfig"]), *options],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


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
