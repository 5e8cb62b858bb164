"""The rendered chart against a real apiserver (the sandbox's control plane, with KWOK nodes):

- Pod Security: the objects are accepted in a namespace enforcing "restricted", the Deployment's
  pods are really created there (admission judges them), and a pod spec stripped of its
  securityContext is refused, so the check can fail;
- the sidecar snippet of the chart's README, in a broker pod, is admitted under "restricted" too;
- RBAC holds: with its own ServiceAccount token, the agent may do what its role says and gets 403
  for what it does not (delete a namespace, read Secrets, create Deployments);
- sidecar mode: the scoped inventory, under the sidecar RBAC, sees its own pod and its own PVCs
  only, and a cluster-wide read is refused.

The module shares one control plane; the tests use separate namespaces.
"""

from __future__ import annotations

import asyncio
import copy
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_support import (
    CHART,
    TokenApi,
    apply,
    create_namespace,
    of_kind,
    one,
    render,
    service_account_token,
    token_kubeconfig,
    wait_established,
)
from helpers import eventually

from agent.adapters.clock import WallClock
from agent.adapters.kubernetes import KubeError, connect
from agent.runtime.scope import PodScope, ScopedInventory
from sandbox.kube import KubeApi, KubeApiError, KubeControlPlane, ensure_binaries

pytestmark = pytest.mark.sandbox

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
RELEASE = "autopilot"
SERVICE_ACCOUNT = f"{RELEASE}-kafka-autopilot"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeControlPlane]:
    control_plane = KubeControlPlane(
        work_dir=tmp_path_factory.mktemp("kube"), binaries=ensure_binaries(), ttl_seconds=1800
    )
    control_plane.start()
    try:
        yield control_plane
    finally:
        control_plane.stop()


@pytest.fixture(scope="module")
def api(plane: KubeControlPlane) -> KubeApi:
    return plane.api()


@pytest.fixture(scope="module")
def service_mode(api: KubeApi) -> list[dict[str, Any]]:
    """The chart in service mode, applied into a namespace that enforces Pod Security "restricted"."""
    create_namespace(api, "kafka-autopilot", labels=RESTRICTED)
    objects = render(release=RELEASE, namespace="kafka-autopilot")
    apply(api, objects)
    return objects


def token_api(plane: KubeControlPlane, api: KubeApi, *, namespace: str) -> TokenApi:
    token = service_account_token(api, namespace=namespace, name=SERVICE_ACCOUNT)
    return TokenApi(host="127.0.0.1", port=plane.state.apiserver_port, ca_file=plane.pki_dir / "ca.crt", token=token)


def pod_from_template(objects: list[dict[str, Any]], *, name: str) -> dict[str, Any]:
    template = one(objects, "Deployment")["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "kafka-autopilot", "labels": dict(template["metadata"]["labels"])},
        "spec": copy.deepcopy(template["spec"]),
    }


# --- Pod Security ----------------------------------------------------------------------------------


def test_the_chart_is_accepted_where_pod_security_restricted_is_enforced(
    api: KubeApi, service_mode: list[dict[str, Any]]
) -> None:
    namespace = api.get("/api/v1/namespaces/kafka-autopilot")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    deployment = api.get(f"/apis/apps/v1/namespaces/kafka-autopilot/deployments/{SERVICE_ACCOUNT}")
    assert deployment["spec"]["replicas"] == 2
    assert api.get(f"/apis/policy/v1/namespaces/kafka-autopilot/poddisruptionbudgets/{SERVICE_ACCOUNT}")
    # The pod spec itself, judged by admission (server-side dry-run: nothing is created).
    admitted = apply(api, [pod_from_template(service_mode, name="autopilot-admission-check")], dry_run=True)
    assert admitted[0]["metadata"]["name"] == "autopilot-admission-check"


def test_the_deployments_pods_are_created_under_restricted(api: KubeApi, service_mode: list[dict[str, Any]]) -> None:
    """The ReplicaSet controller creates both pods; PodSecurity admission would refuse them otherwise."""

    def agent_pods() -> list[dict[str, Any]]:
        listed = api.get(
            "/api/v1/namespaces/kafka-autopilot/pods?labelSelector=app.kubernetes.io%2Finstance%3Dautopilot"
        )
        return list(listed["items"])

    pods = eventually(lambda: len(agent_pods()) == 2 and agent_pods(), timeout=90, what="2 agent pods created")
    assert {pod["spec"]["serviceAccountName"] for pod in pods} == {SERVICE_ACCOUNT}
    refusals = [
        event
        for event in api.get("/api/v1/namespaces/kafka-autopilot/events")["items"]
        if event.get("reason") == "FailedCreate"
    ]
    assert not refusals, refusals


def test_a_pod_without_the_securitycontext_is_refused_so_the_check_can_fail(
    api: KubeApi, service_mode: list[dict[str, Any]]
) -> None:
    pod = pod_from_template(service_mode, name="autopilot-unsafe")
    del pod["spec"]["containers"][0]["securityContext"]
    with pytest.raises(KubeApiError) as refused:
        apply(api, [pod], dry_run=True)
    assert refused.value.status == 403
    assert "violates PodSecurity" in str(refused.value)


def readme_sidecar_snippet() -> dict[str, Any]:
    readme = (CHART / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, flags=re.DOTALL)
    (snippet,) = [yaml.safe_load(block) for block in blocks if "--scope-pod" in block]
    return dict(snippet)


def test_the_readmes_sidecar_snippet_is_admitted_in_a_broker_pod_under_restricted(api: KubeApi) -> None:
    create_namespace(api, "kafka-restricted", labels=RESTRICTED)
    objects = render(release=RELEASE, namespace="kafka-restricted", values={"sidecar": {"enabled": True}})
    apply(api, [obj for obj in objects if obj["kind"] != "CustomResourceDefinition"])
    pod_spec = readme_sidecar_snippet()["spec"]["template"]["spec"]
    broker = {
        "name": "kafka",
        "image": "apache/kafka:4.1.0",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    pod_spec["containers"] = [broker, *pod_spec["containers"]]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "kafka-0", "namespace": "kafka-restricted"}}
    pod["spec"] = pod_spec
    (admitted,) = apply(api, [pod], dry_run=True)
    names = [container["name"] for container in admitted["spec"]["containers"]]
    assert names == ["kafka", "kafka-autopilot"]
    assert one(objects, "ConfigMap")["metadata"]["name"] == pod_spec["volumes"][0]["configMap"]["name"]
    assert pod_spec["serviceAccountName"] == SERVICE_ACCOUNT


# --- RBAC holds ------------------------------------------------------------------------------------


def test_the_service_account_gets_403_outside_its_role(
    plane: KubeControlPlane, api: KubeApi, service_mode: list[dict[str, Any]]
) -> None:
    agent = token_api(plane, api, namespace="kafka-autopilot")
    # What the role grants works with this token (so the 403s below are about the role, not the token).
    assert agent.request("GET", "/api/v1/nodes")[0] == 200
    assert agent.request("GET", "/api/v1/persistentvolumeclaims")[0] == 200
    # A CRD just created answers 429 until the apiserver serves it.
    eventually(
        lambda: agent.request("GET", "/apis/kafka-autopilot.io/v1alpha1/autopilotruleobjects")[0] == 200,
        timeout=60,
        what="the AutopilotRuleObject CRD served to the agent",
    )
    denied = {
        "delete a namespace": agent.request("DELETE", "/api/v1/namespaces/default"),
        "read Secrets": agent.request("GET", "/api/v1/namespaces/kafka-autopilot/secrets"),
        "create a Deployment": agent.request(
            "POST",
            "/apis/apps/v1/namespaces/kafka-autopilot/deployments",
            one(service_mode, "Deployment") | {"metadata": {"name": "not-allowed"}},
        ),
        "delete a PVC": agent.request("DELETE", "/api/v1/namespaces/default/persistentvolumeclaims/x"),
        "write a Lease in kube-node-lease": agent.request(
            "POST",
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "forged"}},
        ),
        "create a CRD": agent.request(
            "POST",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            dict(of_kind(service_mode, "CustomResourceDefinition")[0]),
        ),
    }
    statuses = {what: answer[0] for what, answer in denied.items()}
    assert statuses == dict.fromkeys(denied, 403), {what: answer[1].get("message") for what, answer in denied.items()}
    assert api.get("/api/v1/namespaces/default")["status"]["phase"] == "Active"


# --- sidecar mode under its RBAC -------------------------------------------------------------------


def pvc(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "kafka", "labels": {"app": "kafka"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "400Gi"}}},
    }


def broker_pod(ordinal: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"kafka-{ordinal}", "namespace": "kafka", "labels": {"app": "kafka"}},
        "spec": {
            "containers": [{"name": "kafka", "image": "apache/kafka:4.1.0"}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": f"data-kafka-{ordinal}"}}],
        },
    }


def test_sidecar_mode_sees_only_its_own_pod_and_volumes(plane: KubeControlPlane, api: KubeApi, tmp_path: Path) -> None:
    create_namespace(api, "kafka")
    objects = render(release=RELEASE, namespace="kafka", values={"sidecar": {"enabled": True}})
    apply(api, objects)
    eventually(
        lambda: wait_established(
            api, [crd["metadata"]["name"] for crd in of_kind(objects, "CustomResourceDefinition")]
        ),
        timeout=30,
        what="CRDs established",
    )
    for ordinal in (0, 1):
        api.create("/api/v1/namespaces/kafka/persistentvolumeclaims", pvc(f"data-kafka-{ordinal}"))
        api.create("/api/v1/namespaces/kafka/pods", broker_pod(ordinal))
    token = service_account_token(api, namespace="kafka", name=SERVICE_ACCOUNT)
    kubeconfig = token_kubeconfig(
        path=tmp_path / "sidecar.kubeconfig",
        server=plane.apiserver_url,
        ca_file=plane.pki_dir / "ca.crt",
        token=token,
        user=f"system:serviceaccount:kafka:{SERVICE_ACCOUNT}",
    )

    async def look() -> tuple[list[str], list[str], list[int | None]]:
        async with await connect(kubeconfig=kubeconfig, clock=WallClock()) as kube:
            scoped = ScopedInventory(source=kube, scope=PodScope.parse("kafka/kafka-0"))
            pods = [pod.name for pod in await scoped.list_pods()]
            claims = [claim.name for claim in await scoped.list_pvcs()]
            refused = []
            for outside in (kube.list_pods(), kube.list_nodes(), kube.list_pvcs()):
                try:
                    await outside
                    refused.append(None)
                except KubeError as error:
                    refused.append(None if error.temporary else error.status)
            return pods, claims, refused

    started = time.monotonic()
    pods, claims, refused = asyncio.run(look())
    print(f"\nsidecar inventory read in {time.monotonic() - started:.2f}s")
    assert pods == ["kafka-0"]
    assert claims == ["data-kafka-0"]
    assert refused == [403, 403, 403], "cluster-wide pods, nodes and PVCs must be out of the sidecar's reach"
