"""RBAC suffices: the agent runs as the Helm chart's ServiceAccount (its own token from TokenRequest,
not the sandbox's admin) with the roles `helm template` renders, started as the chart starts it (leader
election on the chart's Lease, the chart's default policy), and completes the reference scenario's
first step (400Gi -> 800Gi, verified), a node failure (its broker running elsewhere) and a resize that
needs approval, answered with `kafka-autopilot approvals` and `approve` by an identity bound to the
chart's approver ClusterRole. The apiserver's audit log then shows that every request the agent made
came from that ServiceAccount and that none was refused: the roles are enough, and they are all it had.

Last, a 429 storm: API Priority and Fairness puts the agent's ServiceAccount and a noisy neighbour's in
one starved priority level, whose every seat the neighbour holds; the agent is refused with 429, keeps
running, and resizes exactly once when the storm is over.

First, sidecar mode: an agent with `--scope-pod kafka/kafka-2` under the chart's sidecar roles resizes
its own pod's volume and leaves a neighbour's, just as full, alone; its node rule does not run.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import threading
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
    eventually(
        lambda: any(e["reason"] == "ActionVerified" for e in events_for(api, claim)),
        timeout=30,
        what="the ActionVerified Event",
    )
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
    # The agent follows approvals through its watch-fed cache (list, then watch), not a GET per cycle.
    assert {("list", None), ("watch", None), ("create", None), ("patch", "status")} <= approval_calls, approval_calls
    assert {e["verb"] for e in people} >= {"list", "patch"}
    refused = [
        f"{e['user']['username']} {e['verb']} {e['requestURI']}"
        for e in [*agent_entries, *people]
        if e.get("responseStatus", {}).get("code") in (401, 403)
    ]
    assert not refused, f"requests the chart's roles refused: {refused[:10]}"
    assert "Forbidden" not in second.audit_path.with_suffix(".log").read_text(errors="replace")


# --- a 429 storm --------------------------------------------------------------------------------------------

STARVED = "kafka-autopilot-e2e-starved"
NOISY = "noisy-neighbour"
FLOWCONTROL = "/apis/flowcontrol.apiserver.k8s.io/v1"


def starve_the_agent(api: KubeApi) -> None:
    """API Priority and Fairness as an admin would misconfigure it: the agent's and a noisy neighbour's
    requests share a priority level of one nominal share (a few seats), that neither lends nor borrows and
    rejects with 429 what does not fit. (The sandbox's admin is exempt from priority and fairness: only a
    ServiceAccount, as the chart runs the agent, meets it.)"""
    api.create(
        f"{FLOWCONTROL}/prioritylevelconfigurations",
        {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "PriorityLevelConfiguration",
            "metadata": {"name": STARVED},
            "spec": {
                "type": "Limited",
                "limited": {
                    "nominalConcurrencyShares": 1,
                    "lendablePercent": 0,
                    "borrowingLimitPercent": 0,
                    "limitResponse": {"type": "Reject"},
                },
            },
        },
    )
    subjects = [
        {"kind": "ServiceAccount", "serviceAccount": {"name": name, "namespace": NAMESPACE}}
        for name in (SERVICE_ACCOUNT, NOISY)
    ]
    every_resource = {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "clusterScope": True, "namespaces": ["*"]}
    api.create(
        f"{FLOWCONTROL}/flowschemas",
        {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
            "kind": "FlowSchema",
            "metadata": {"name": STARVED},
            "spec": {
                "priorityLevelConfiguration": {"name": STARVED},
                "matchingPrecedence": 150,
                "distinguisherMethod": {"type": "ByUser"},
                "rules": [
                    {
                        "subjects": subjects,
                        "resourceRules": [every_resource],
                        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                    }
                ],
            },
        },
    )


def noisy_neighbour_token(api: KubeApi) -> str:
    """A ServiceAccount allowed to patch one ConfigMap of the agent's namespace, and its token."""
    namespaced = f"/api/v1/namespaces/{NAMESPACE}"
    metadata = {"name": NOISY}
    api.create(f"{namespaced}/serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata})
    api.create(f"{namespaced}/configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata})
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{NAMESPACE}"
    rule = {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [NOISY], "verbs": ["patch"]}
    api.create(
        f"{rbac}/roles",
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": NOISY}, "rules": [rule]},
    )
    api.create(
        f"{rbac}/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": metadata,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NOISY},
            "subjects": [{"kind": "ServiceAccount", "name": NOISY, "namespace": NAMESPACE}],
        },
    )
    return service_account_token(api, namespace=NAMESPACE, name=NOISY)


def hold_a_seat(sandbox: Sandbox, token: str, release: threading.Event, answers: list[str]) -> None:
    """A PATCH whose body never finishes: the apiserver reads the body inside the request's seat, so the
    seat stays taken until `release`. A request that finds no seat is answered at once (429): its announced
    body is over the 256 KiB that Go's HTTP server would otherwise wait to drain before answering, and under
    the apiserver's 3 MB request limit."""
    host, port = "127.0.0.1", int(sandbox.kube.apiserver_url.rsplit(":", 1)[1])
    context = ssl.create_default_context(cafile=str(sandbox.kube.pki_dir / "ca.crt"))
    with (
        socket.create_connection((host, port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        head = (
            f"PATCH /api/v1/namespaces/{NAMESPACE}/configmaps/{NOISY} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/merge-patch+json\r\n"
            "Content-Length: 1000000\r\n\r\n{"
        )
        tls.sendall(head.encode())
        tls.settimeout(0.5)
        while not release.is_set():
            try:
                answered = tls.recv(200)
            except TimeoutError:
                continue
            answers.append(answered.decode(errors="replace").split("\r\n", 1)[0])
            return


def test_a_429_storm_delays_the_resize_and_never_doubles_it(
    sandbox: Sandbox, api: KubeApi, chart_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The apiserver answers 429 to the agent while a noisy neighbour holds every seat of their shared
    priority level; the agent keeps running and retries, and once the storm ends it resizes, once."""
    folder = tmp_path_factory.mktemp("storm")
    token = noisy_neighbour_token(api)
    starve_the_agent(api)
    agent = AgentProcess(
        sandbox=sandbox,
        rules=[RULES / "kafka-resize.yaml"],
        audit_path=folder / "audit.jsonl",
        kubeconfig=chart_kubeconfig,
        install_crds=False,
        policy=chart_policy(folder),
        extra_args=chart_run_args(),
    )
    claim = workload.pvc_name(1)
    release = threading.Event()
    answers: list[str] = []
    holders: list[threading.Thread] = []
    agent.start()
    try:
        storm_from = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")

        def seats_full() -> bool:
            thread = threading.Thread(target=hold_a_seat, args=(sandbox, token, release, answers), daemon=True)
            thread.start()
            holders.append(thread)
            time.sleep(0.3)
            return any(" 429 " in f"{answer} " for answer in answers)

        eventually(seats_full, timeout=60, what="every seat of the starved priority level taken", interval=0.2)
        set_usage(sandbox, claim, 330)
        eventually(
            lambda: [
                entry
                for entry in agent_requests(sandbox, since=storm_from)
                if entry.get("responseStatus", {}).get("code") == 429
            ],
            timeout=60,
            what="the agent's requests answered 429",
        )
        time.sleep(10)
        assert requested(api, claim) == "400Gi", "nothing gets through while every seat is taken"
        assert agent.process is not None and agent.process.poll() is None, "the agent survives the storm"
        release.set()
        storm_over = time.monotonic()
        eventually(lambda: requested(api, claim) == "800Gi", timeout=90, what="the resize after the storm")
        patched_after = time.monotonic() - storm_over
        refused = [
            entry
            for entry in agent_requests(sandbox, since=storm_from)
            if entry.get("responseStatus", {}).get("code") == 429
        ]
        print(
            f"\nFAULT 429 storm: {len(refused)} of the agent's requests refused with 429 during it;"
            f" storm over -> PVC patched: {patched_after:.1f}s"
        )
        verified = eventually(lambda: verified_resizes(agent, claim), timeout=60, what="the resize verified")
        assert [(r["before"], r["after"]) for r in verified] == [("400Gi", "800Gi")]
        patches = [
            entry
            for entry in agent_requests(sandbox, since=storm_from)
            if entry["verb"] == "patch"
            and entry.get("objectRef", {}).get("resource") == "persistentvolumeclaims"
            and entry.get("objectRef", {}).get("name") == claim
            and entry.get("objectRef", {}).get("subresource") is None
            and entry.get("responseStatus", {}).get("code") == 200
        ]
        assert len(patches) == 1, patches
    finally:
        release.set()
        agent.stop()
        for thread in holders:
            thread.join(timeout=5)
        api.delete(f"{FLOWCONTROL}/flowschemas/{STARVED}")
        api.delete(f"{FLOWCONTROL}/prioritylevelconfigurations/{STARVED}")
