"""Helpers of the Helm chart's tests: the cached helm binary, rendering, applying what it renders to
the sandbox apiserver, and a ServiceAccount's own credentials (TokenRequest -> kubeconfig).

There is no kubectl here: manifests are POSTed to the apiserver as JSON, each kind to its path.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.kube import KubeApi, KubeApiError

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "kafka-autopilot"
HELM_VERSION = "v3.22.0"  # scripts/build-helm.sh pins the same


def cache_dir() -> Path:
    return Path(os.environ.get("KAFKA_AUTOPILOT_CACHE") or REPO / ".cache").resolve()


def helm_binary() -> Path:
    """The helm that scripts/build-helm.sh built; a missing one fails the test, naming the installer."""
    helm = cache_dir() / "helm" / HELM_VERSION / "bin" / "helm"
    if not helm.is_file():
        pytest.fail(f"helm {HELM_VERSION} is not built at {helm}: run scripts/build-helm.sh (or `make helm`)")
    return helm


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HELM_CACHE_HOME": "/tmp/kafka-autopilot-helm/cache"}
    env |= {"HELM_CONFIG_HOME": "/tmp/kafka-autopilot-helm/config", "HELM_DATA_HOME": "/tmp/kafka-autopilot-helm/data"}
    done = subprocess.run(
        [str(helm_binary()), *args], capture_output=True, text=True, timeout=120, check=False, env=env
    )
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} exited {done.returncode}:\n{done.stderr}{done.stdout}")
    return done


def render(
    *, release: str = "autopilot", namespace: str = "kafka-autopilot", values: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """`helm template` of the chart (CRDs included), as a list of objects."""
    args = ["template", release, str(CHART), "--namespace", namespace, "--include-crds"]
    if values:
        values_file = Path(f"/tmp/kafka-autopilot-helm/values-{os.getpid()}-{release}.yaml")
        values_file.parent.mkdir(parents=True, exist_ok=True)
        values_file.write_text(yaml.safe_dump(dict(values)))
        args += ["--values", str(values_file)]
    return [doc for doc in yaml.safe_load_all(helm(*args).stdout) if doc]


def of_kind(objects: Iterable[Mapping[str, Any]], kind: str) -> list[Mapping[str, Any]]:
    return [obj for obj in objects if obj.get("kind") == kind]


def one(objects: Iterable[Mapping[str, Any]], kind: str) -> Mapping[str, Any]:
    (found,) = of_kind(objects, kind)
    return found


# --- applying ------------------------------------------------------------------------------------

_PATHS = {
    "CustomResourceDefinition": "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
    "ServiceAccount": "/api/v1/namespaces/{namespace}/serviceaccounts",
    "ConfigMap": "/api/v1/namespaces/{namespace}/configmaps",
    "Service": "/api/v1/namespaces/{namespace}/services",
    "Pod": "/api/v1/namespaces/{namespace}/pods",
    "Deployment": "/apis/apps/v1/namespaces/{namespace}/deployments",
    "PodDisruptionBudget": "/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets",
    "ValidatingAdmissionPolicy": "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies",
    "ValidatingAdmissionPolicyBinding": "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings",
}


def collection_path(obj: Mapping[str, Any]) -> str:
    kind = str(obj["kind"])
    if kind not in _PATHS:
        raise AssertionError(f"no API path known for kind {kind}")
    return _PATHS[kind].format(namespace=obj.get("metadata", {}).get("namespace", ""))


def create_namespace(api: KubeApi, name: str, *, labels: Mapping[str, str] | None = None) -> None:
    api.create(
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels or {})}},
    )


def apply(api: KubeApi, objects: Sequence[Mapping[str, Any]], *, dry_run: bool = False) -> list[dict[str, Any]]:
    """Create each object (CRDs first); an existing one is left as it is. Returns what the server answered."""
    ordered = sorted(objects, key=lambda obj: obj.get("kind") != "CustomResourceDefinition")
    answers = []
    for obj in ordered:
        path = collection_path(obj) + ("?dryRun=All" if dry_run else "")
        try:
            answers.append(api.create(path, obj))
        except KubeApiError as error:
            if error.status != 409:
                raise
    return answers


def wait_established(api: KubeApi, names: Iterable[str]) -> bool:
    for name in names:
        crd = api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        conditions = crd.get("status", {}).get("conditions", [])
        if not any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
            return False
    return True


# --- a ServiceAccount's own credentials --------------------------------------------------------------


def service_account_token(api: KubeApi, *, namespace: str, name: str, seconds: int = 7200) -> str:
    """A bound token for the ServiceAccount (TokenRequest), as a pod of it would get."""
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": seconds}}
    answer = api.create(f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", request)
    return str(answer["status"]["token"])


def token_kubeconfig(*, path: Path, server: str, ca_file: Path, token: str, user: str) -> Path:
    """A kubeconfig that authenticates with `token` only (no client certificate)."""
    ca = base64.b64encode(ca_file.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sandbox", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": user}}],
        "current-context": "sandbox",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


APPROVER_RULES = [
    {"apiGroups": ["kafka-autopilot.io"], "resources": ["actionapprovals"], "verbs": ["get", "list", "patch"]}
]
"""What `kafka-autopilot approvals|approve|decline` call (the chart's approver ClusterRole)."""


def approver_kubeconfig(
    api: KubeApi, *, server: str, ca_file: Path, namespace: str, name: str, role: str, folder: Path
) -> Path:
    """A kubeconfig of a new ServiceAccount NAMESPACE/NAME (user `system:serviceaccount:NAMESPACE:NAME`),
    bound in its namespace to the ClusterRole `role` (e.g. one with APPROVER_RULES)."""
    api.create(f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": name}})
    api.create(
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
        {
            "metadata": {"name": f"{name}-approver"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    )
    return token_kubeconfig(
        path=folder / f"{name}.kubeconfig",
        server=server,
        ca_file=ca_file,
        token=service_account_token(api, namespace=namespace, name=name),
        user=name,
    )


@dataclass(frozen=True, kw_only=True)
class TokenApi:
    """Raw requests to the apiserver as a bearer token, to see what that identity may and may not do."""

    host: str
    port: int
    ca_file: Path
    token: str

    def request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None, *, content_type: str = "application/json"
    ) -> tuple[int, dict[str, Any]]:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        connection = http.client.HTTPSConnection(self.host, self.port, context=context, timeout=10)
        try:
            headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
            payload = None
            if body is not None:
                payload = json.dumps(body).encode()
                headers["Content-Type"] = content_type
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            text = response.read().decode(errors="replace")
        finally:
            connection.close()
        return response.status, (json.loads(text) if text.strip().startswith("{") else {"raw": text})
