"""RBAC suffices: the agent runs as the Helm chart's ServiceAccount (its own token from TokenRequest,
not the sandbox's admin) with the roles `helm template` renders, started as the chart starts it (leader
election on the chart's Lease, the chart's default policy), and completes the reference scenario's
first step (400Gi -> 800Gi, verified), a node failure (its broker running elsewhere) and a resize that
needs approval, answered with `kafka-autopilot approvals` and `approve` by an identity bound to the
chart's approver ClusterRole. The apiserver's audit log then shows that every request the agent made
came from that ServiceAccount and that none was refused: the roles are enough, and they are all it had.

First, sidecar mode: an agent with `--scope-pod kafka/kafka-2` under the chart's sidecar roles resizes
its own pod's volume and leaves a neighbour's, just as full, alone; its node rule does not run.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from chart_support import apply, of_kind, render, service_account_token, token_kubeconfig
from chart_support import wait_established as crds_established
from e2e_support import (
    REPO,
    RULES,
    AgentProcess,
    audit_log_entries,
    broker_moves_off_failed_node,
    capacity,
    events_for,
    node_of,
    requested,
    set_usage,
    state_of,
    verified_resizes,
)
from helpers import eventually

from sandbox import workload
from sandbox.environment import Sandbox
from sandbox.kube import KubeApi

pytestmark = pytest.mark.sandbox

NAMESPACE = "kafka-autopilot"
RELEASE = "autopilot"
SERVICE_ACCOUNT = f"{RELEASE}-kafka-autopilot"
LEASE_NAME = f"{RELEASE}-kafka-autopilot"  # the chart names the Lease after the release
USER = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
# The objects that give the agent its identity and rights; the Deployment is not needed to run it here.
IDENTITY_KINDS = {
    "CustomResourceDefinition",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
}


@pytest.fixture(scope="module")
def api(sandbox: Sandbox) -> KubeApi:
    return sandbox.kube.api()


LEASE = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{LEASE_NAME}"
APPROVALS = f"/apis/kafka-autopilot.io/v1alpha1/namespaces/{workload.NAMESPACE}/actionapprovals"


def chart_policy(folder: Path, *, approval_for: str | None = None) -> Path:
    """The policy the chart mounts by default (policy.name: default), optionally requiring approval for one action."""
    (config,) = [obj for obj in render(release=RELEASE, namespace=NAMESPACE) if obj["kind"] == "ConfigMap"]
    text = str(config["data"]["policy.yaml"])
    assert "name: default" in text
    if approval_for is not None:
        text = text.replace("spec:\n", f"spec:\n  approvalRequired: [{approval_for}]\n", 1)
    path = folder / "policy.yaml"
    path.write_text(text + "\n")
    return path


def chart_run_args() -> list[str]:
    """What the chart's Deployment passes besides rules, Prometheus and Kafka: its Lease and namespace."""
    return ["--lease-name", LEASE_NAME, "--namespace", NAMESPACE]


@pytest.fixture(scope="module")
def chart_kubeconfig(sandbox: Sandbox, api: KubeApi, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The sandbox creates the agent's namespace at install, as `helm install --create-namespace` would.
    assert api.get(f"/api/v1/namespaces/{NAMESPACE}")["metadata"]["name"] == NAMESPACE
    path = tmp_path_factory.mktemp("chart") / "agent.kubeconfig"
    return identity_kubeconfig(sandbox, api, release=RELEASE, namespace=NAMESPACE, path=path)


def identity_kubeconfig(
    sandbox: Sandbox, api: KubeApi, *, release: str, namespace: str, path: Path, **values: Any
) -> Path:
    """Apply the chart's identity objects for `release` and return a kubeconfig with its token."""
    rendered = render(release=release, namespace=namespace, values=values or None)
    objects = [obj for obj in rendered if obj["kind"] in IDENTITY_KINDS]
    apply(api, objects)
    names = [crd["metadata"]["name"] for crd in of_kind(objects, "CustomResourceDefinition")]
    eventually(lambda: crds_established(api, names), timeout=60, what="the chart's CRDs established")
    account = f"{release}-kafka-autopilot"
    return token_kubeconfig(
        path=path,
        server=sandbox.kube.apiserver_url,
        ca_file=sandbox.kube.pki_dir / "ca.crt",
        token=service_account_token(api, namespace=namespace, name=account),
        user=f"system:serviceaccount:{namespace}:{account}",
    )


def test_a_sidecar_acts_on_its_own_pods_volume_only(
    sandbox: Sandbox, api: KubeApi, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("sidecar")
    kubeconfig = identity_kubeconfig(
        sandbox,
        api,
        release="sidecar",
        namespace=workload.NAMESPACE,
        path=folder / "sidecar.kubeconfig",
        sidecar={"enabled": True},
    )
    own, neighbour = workload.pvc_name(2), workload.pvc_name(3)
    sidecar = AgentProcess(
        sandbox=sandbox,
        rules=[RULES / "kafka-resize.yaml", RULES / "kafka-node-failure.yaml"],
        audit_path=folder / "audit.jsonl",
        kubeconfig=kubeconfig,
        install_crds=False,
        policy=chart_policy(folder),
        extra_args=["--scope-pod", f"{workload.NAMESPACE}/{workload.pod_name(2)}"],
    )
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    sidecar.start()
    try:
        health = sidecar.rule_health()
        assert health["kafka-node-failure"].startswith("not run in sidecar mode"), health
        set_usage(sandbox, own, 330)
        set_usage(sandbox, neighbour, 330)
        eventually(lambda: requested(api, own) == "800Gi", timeout=90, what="its own PVC at 800Gi")
        verified = eventually(lambda: verified_resizes(sidecar, own), timeout=90, what="its resize verified")
        assert [(r["before"], r["after"]) for r in verified] == [("400Gi", "800Gi")]
        time.sleep(10)  # several of the rule's 2 s cycles with the neighbour over 80%
        assert requested(api, neighbour) == "400Gi"
        assert not [r for r in sidecar.records() if r.get("object") == f"{workload.NAMESPACE}/{neighbour}"]
        assert health.get("kafka-resize") != "no object selected"
    finally:
        sidecar.stop()
        set_usage(sandbox, neighbour, 100)
    requests = [r for r in agent_requests(sandbox) if r.get("requestReceivedTimestamp", "") >= started]
    account = f"system:serviceaccount:{workload.NAMESPACE}:sidecar-kafka-autopilot"
    assert requests and {r["user"]["username"] for r in requests} == {account}
    assert not [r["requestURI"] for r in requests if r.get("responseStatus", {}).get("code") in (401, 403)]


@pytest.fixture(scope="module")
def agent(sandbox: Sandbox, chart_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    folder = tmp_path_factory.mktemp("agent")
    with AgentProcess(
        sandbox=sandbox,
        rules=[RULES / "kafka-resize.yaml", RULES / "kafka-node-failure.yaml"],
        audit_path=folder / "audit.jsonl",
        kubeconfig=chart_kubeconfig,
        install_crds=False,
        policy=chart_policy(folder),
        extra_args=chart_run_args(),
        leader_elect=True,
        identity="autopilot-0",
    ) as process:
        yield process


@pytest.fixture(scope="module")
def since(agent: AgentProcess) -> str:
    """When the service-mode agent was up (audit-log timestamps are UTC, second precision or finer)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def agent_requests(sandbox: Sandbox, *, since: str = "") -> list[dict[str, Any]]:
    return [
        entry
        for entry in audit_log_entries(sandbox)
        if str(entry.get("userAgent", "")).startswith("kafka-autopilot/")
        and entry.get("stage") == "ResponseComplete"
        and entry.get("requestReceivedTimestamp", "") >= since
    ]


def test_step_1_resizes_400gi_to_800gi_as_the_charts_service_account(
    sandbox: Sandbox, api: KubeApi, agent: AgentProcess, since: str
) -> None:
    claim = workload.pvc_name(0)
    lease = eventually(lambda: api.get(LEASE)["spec"], timeout=60, what="the chart's Lease")
    assert lease["holderIdentity"] == "autopilot-0"
    set_usage(sandbox, claim, 330)
    eventually(lambda: requested(api, claim) == "800Gi", timeout=90, what="the PVC request at 800Gi")
    eventually(lambda: capacity(api, claim) == "800Gi", timeout=90, what="capacity 800Gi")
    eventually(
        lambda: state_of(api, "kafka-resize", f"kafka/{claim}") == "ActiveActionsTaken", timeout=60, what="Taken"
    )
    verified = eventually(lambda: verified_resizes(agent, claim), timeout=60, what="the resize verified")
    assert [(r["before"], r["after"]) for r in verified] == [("400Gi", "800Gi")]
    assert any(e["reason"] == "ActionVerified" for e in events_for(api, claim))
    patches = [
        entry
        for entry in agent_requests(sandbox, since=since)
        if entry["verb"] == "patch" and entry.get("objectRef", {}).get("resource") == "persistentvolumeclaims"
    ]
    assert patches and {entry["user"]["username"] for entry in patches} == {USER}


def test_a_failed_nodes_broker_moves_as_the_charts_service_account(
    sandbox: Sandbox, api: KubeApi, agent: AgentProcess, since: str
) -> None:
    node = node_of(api, 1)
    try:
        moved, latency = broker_moves_off_failed_node(sandbox, api, broker=1, node=node, timeout=240)
        print(f"\nLATENCY (chart RBAC) node NotReady -> broker pod Running elsewhere: {latency:.1f}s")
        assert moved["spec"]["nodeName"] != node
        assert api.get(f"/api/v1/nodes/{node}")["spec"].get("unschedulable") is True
        eventually(lambda: state_of(api, "kafka-node-failure", node) == "ActiveActionsTaken", timeout=180, what="Taken")
    finally:
        sandbox.fault("recover-node", node)
        api.merge_patch(f"/api/v1/nodes/{node}", {"spec": {"unschedulable": False}})
    deletes = [
        entry
        for entry in agent_requests(sandbox, since=since)
        if entry["verb"] == "delete" and entry.get("objectRef", {}).get("resource") == "pods"
    ]
    assert deletes and {entry["user"]["username"] for entry in deletes} == {USER}


def test_every_request_of_the_agent_was_its_service_accounts_and_none_was_refused(
    sandbox: Sandbox, agent: AgentProcess, since: str
) -> None:
    requests = agent_requests(sandbox, since=since)
    assert len(requests) > 20
    assert {entry["user"]["username"] for entry in requests} == {USER}
    refused = [
        f"{entry['verb']} {entry['requestURI']}"
        for entry in requests
        if entry.get("responseStatus", {}).get("code") in (401, 403)
    ]
    assert not refused, f"requests the chart's roles refused: {refused[:10]}"
    assert "Forbidden" not in agent.audit_path.with_suffix(".log").read_text(errors="replace")
    assert "policy" in agent.audit_path.with_suffix(".log").read_text(errors="replace")


def pending_approval(api: KubeApi, claim: str) -> dict[str, Any] | None:
    found = [
        item
        for item in api.get(APPROVALS)["items"]
        if item["spec"].get("objectKey") == f"{workload.NAMESPACE}/{claim}"
        and item.get("status", {}).get("phase") == "Pending"
    ]
    return found[-1] if found else None


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_an_approval_is_asked_answered_under_the_approver_role_and_used(
    sandbox: Sandbox,
    api: KubeApi,
    agent: AgentProcess,
    chart_kubeconfig: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The replica that leads next (the first one stops, releasing the Lease) runs with a policy that
    requires approval for resizes; a person bound to the chart's approver ClusterRole answers."""
    agent.stop()
    folder = tmp_path_factory.mktemp("approvals")
    approver = "approver"
    api.create(
        f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": approver}},
    )
    subjects = [{"kind": "ServiceAccount", "name": approver, "namespace": NAMESPACE}]
    rendered = render(release=RELEASE, namespace=NAMESPACE, values={"rbac": {"approver": {"subjects": subjects}}})
    apply(
        api,
        [o for o in rendered if o["kind"].startswith("ClusterRole") and o["metadata"]["name"].endswith("-approver")],
    )
    approver_user = f"system:serviceaccount:{NAMESPACE}:{approver}"
    approver_config = token_kubeconfig(
        path=folder / "approver.kubeconfig",
        server=sandbox.kube.apiserver_url,
        ca_file=sandbox.kube.pki_dir / "ca.crt",
        token=service_account_token(api, namespace=NAMESPACE, name=approver),
        user=approver_user,
    )
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    second = AgentProcess(
        sandbox=sandbox,
        rules=[RULES / "kafka-resize.yaml"],
        audit_path=folder / "audit.jsonl",
        kubeconfig=chart_kubeconfig,
        install_crds=False,
        policy=chart_policy(folder, approval_for="openstorage.io.action.volume/resize"),
        extra_args=chart_run_args(),
        leader_elect=True,
        identity="autopilot-1",
    )
    claim = workload.pvc_name(3)
    second.start()
    try:
        eventually(lambda: api.get(LEASE)["spec"].get("holderIdentity") == "autopilot-1", timeout=90, what="lead")
        set_usage(sandbox, claim, 330)
        approval = eventually(lambda: pending_approval(api, claim), timeout=120, what="a pending ActionApproval")
        name = approval["metadata"]["name"]
        time.sleep(6)  # three cycles: nothing happens without an answer
        assert requested(api, claim) == "400Gi"
        listed = cli("approvals", "--kubeconfig", str(approver_config))
        assert listed.returncode == 0 and name in listed.stdout, listed.stdout + listed.stderr
        answered = cli("approve", name, "--kubeconfig", str(approver_config), "--by", "e2e", "--reason", "chart rbac")
        assert answered.returncode == 0, answered.stdout + answered.stderr
        eventually(lambda: requested(api, claim) == "800Gi", timeout=120, what="the approved resize")
        eventually(
            lambda: api.get(f"{APPROVALS}/{name}").get("status", {}).get("phase") == "Used",
            timeout=90,
            what="the approval marked Used",
        )
    finally:
        second.stop()
        set_usage(sandbox, claim, 100)
    entries = [
        e
        for e in audit_log_entries(sandbox)
        if e.get("stage") == "ResponseComplete" and e["requestReceivedTimestamp"] >= started
    ]
    agent_entries = [e for e in entries if e["user"]["username"] == USER]
    people = [e for e in entries if e["user"]["username"] == approver_user]
    approval_calls = {
        (e["verb"], e["objectRef"].get("subresource"))
        for e in agent_entries
        if e.get("objectRef", {}).get("resource") == "actionapprovals"
    }
    assert {("get", None), ("create", None), ("patch", "status")} <= approval_calls, approval_calls
    assert {e["verb"] for e in people} >= {"list", "patch"}
    refused = [
        f"{e['user']['username']} {e['verb']} {e['requestURI']}"
        for e in [*agent_entries, *people]
        if e.get("responseStatus", {}).get("code") in (401, 403)
    ]
    assert not refused, f"requests the chart's roles refused: {refused[:10]}"
    assert "Forbidden" not in second.audit_path.with_suffix(".log").read_text(errors="replace")
