"""RBAC suffices: the agent runs as the Helm chart's ServiceAccount (its own token from TokenRequest,
not the sandbox's admin) with the roles `helm template` renders, and completes the reference
scenario's first step (400Gi -> 800Gi, verified) and a node failure (its broker running elsewhere).

The apiserver's audit log then shows that every request the agent made came from that
ServiceAccount and that none was refused: the roles are enough, and they are all it had.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chart_support import apply, create_namespace, of_kind, render, service_account_token, token_kubeconfig
from chart_support import wait_established as crds_established
from e2e_support import RULES, AgentProcess, audit_log_entries
from helpers import eventually
from test_agent_e2e import PODS, capacity, events_for, node_of, requested, set_usage, state_of, verified_resizes

from agent.sandbox import workload
from agent.sandbox.environment import Sandbox
from agent.sandbox.kube import KubeApi, node_condition

pytestmark = pytest.mark.sandbox

NAMESPACE = "kafka-autopilot"
RELEASE = "autopilot"
SERVICE_ACCOUNT = f"{RELEASE}-kafka-autopilot"
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


@pytest.fixture(scope="module")
def chart_kubeconfig(sandbox: Sandbox, api: KubeApi, tmp_path_factory: pytest.TempPathFactory) -> Path:
    create_namespace(api, NAMESPACE)
    objects = [obj for obj in render(release=RELEASE, namespace=NAMESPACE) if obj["kind"] in IDENTITY_KINDS]
    apply(api, objects)
    names = [crd["metadata"]["name"] for crd in of_kind(objects, "CustomResourceDefinition")]
    eventually(lambda: crds_established(api, names), timeout=60, what="the chart's CRDs established")
    plane = sandbox.kube
    return token_kubeconfig(
        path=tmp_path_factory.mktemp("chart") / "agent.kubeconfig",
        server=plane.apiserver_url,
        ca_file=plane.pki_dir / "ca.crt",
        token=service_account_token(api, namespace=NAMESPACE, name=SERVICE_ACCOUNT),
        user=USER,
    )


@pytest.fixture(scope="module")
def agent(sandbox: Sandbox, chart_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    process = AgentProcess(
        sandbox=sandbox,
        rules=[RULES / "kafka-resize.yaml", RULES / "kafka-node-failure.yaml"],
        audit_path=tmp_path_factory.mktemp("agent") / "audit.jsonl",
        kubeconfig=chart_kubeconfig,
        install_crds=False,
    )
    try:
        process.start()
        yield process
    finally:
        process.stop()


def agent_requests(sandbox: Sandbox) -> list[dict[str, Any]]:
    return [
        entry
        for entry in audit_log_entries(sandbox)
        if str(entry.get("userAgent", "")).startswith("kafka-autopilot/") and entry.get("stage") == "ResponseComplete"
    ]


def test_step_1_resizes_400gi_to_800gi_as_the_charts_service_account(
    sandbox: Sandbox, api: KubeApi, agent: AgentProcess
) -> None:
    claim = workload.pvc_name(0)
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
        for entry in agent_requests(sandbox)
        if entry["verb"] == "patch" and entry.get("objectRef", {}).get("resource") == "persistentvolumeclaims"
    ]
    assert patches and {entry["user"]["username"] for entry in patches} == {USER}


def test_a_failed_nodes_broker_moves_as_the_charts_service_account(
    sandbox: Sandbox, api: KubeApi, agent: AgentProcess
) -> None:
    node = node_of(api, 1)
    uid = api.get(f"{PODS}/{workload.pod_name(1)}")["metadata"]["uid"]
    sandbox.fault("fail-node", node)
    try:
        eventually(lambda: node_condition(api.get(f"/api/v1/nodes/{node}")) != "True", timeout=90, what="NotReady")
        not_ready = time.time()
        moved = eventually(
            lambda: (
                (pod := api.get(f"{PODS}/{workload.pod_name(1)}"))["metadata"]["uid"] != uid
                and pod["status"].get("phase") == "Running"
                and pod
            ),
            timeout=240,
            what="kafka-1 recreated and Running",
        )
        print(f"\nLATENCY (chart RBAC) node NotReady -> broker pod Running elsewhere: {time.time() - not_ready:.1f}s")
        assert moved["spec"]["nodeName"] != node
        assert api.get(f"/api/v1/nodes/{node}")["spec"].get("unschedulable") is True
        eventually(lambda: state_of(api, "kafka-node-failure", node) == "ActiveActionsTaken", timeout=180, what="Taken")
    finally:
        sandbox.fault("recover-node", node)
        api.merge_patch(f"/api/v1/nodes/{node}", {"spec": {"unschedulable": False}})
    deletes = [
        entry
        for entry in agent_requests(sandbox)
        if entry["verb"] == "delete" and entry.get("objectRef", {}).get("resource") == "pods"
    ]
    assert deletes and {entry["user"]["username"] for entry in deletes} == {USER}


def test_every_request_of_the_agent_was_its_service_accounts_and_none_was_refused(
    sandbox: Sandbox, agent: AgentProcess
) -> None:
    requests = agent_requests(sandbox)
    assert len(requests) > 20
    assert {entry["user"]["username"] for entry in requests} == {USER}
    refused = [
        f"{entry['verb']} {entry['requestURI']}"
        for entry in requests
        if entry.get("responseStatus", {}).get("code") in (401, 403)
    ]
    assert not refused, f"requests the chart's roles refused: {refused[:10]}"
    assert "Forbidden" not in agent.audit_path.with_suffix(".log").read_text(errors="replace")
