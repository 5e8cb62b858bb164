"""Run a real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, and kwok playing the kubelets of N fake nodes.

The agent is judged against the real API server (RBAC, admission, audit log) and the real
controllers (StatefulSet, PV binder, attach-detach, node lifecycle, garbage collector); only the
kubelets are simulated. The programs are built from the Go module proxy by `scripts/build-kubernetes.sh`.
Everything a run creates (certificates, etcd data, kubeconfigs, logs, pid files, the audit log)
lives under one work directory, and `state.json` there records the ports and nodes, so
`kafka-autopilot sandbox up` and `sandbox down` can run in different processes.

Node failure: kwok manages only nodes carrying `HEARTBEAT_LABEL`. Removing the label makes kwok
stop renewing the node's Lease and updating its status, exactly what a dead kubelet looks like;
the real node-lifecycle controller then marks the node Unknown and taints it unreachable. Putting
the label back makes kwok heartbeat again, and the controller marks the node Ready.

Exceptions: `SandboxProcessError` (from `process`) when a program fails to start;
`KubeBinariesMissingError(SandboxProcessError)` when the build script has not run;
`KubeApiError` for an API request the server refused.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import secrets
import shutil
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import yaml

from sandbox.process import (
    Daemon,
    SandboxProcessError,
    cache_root,
    daemon_from_pid_file,
    free_port,
    pid_is_running,
    port_is_open,
    start_daemon,
    stop_daemon,
    wait_until,
)

KUBERNETES_VERSION: Final = "v1.37.2"
ETCD_VERSION: Final = "v3.7.3"
KWOK_VERSION: Final = "v0.8.0"
"""The pins of `scripts/build-kubernetes.sh`; the integration test checks that both agree."""

HEARTBEAT_LABEL: Final = "sandbox.kafka-autopilot.io/kwok-heartbeat"
"""kwok manages (heartbeats) exactly the nodes that carry this label with the value "on"."""

CONTROLLER_MANAGED_ATTACH_DETACH: Final = "volumes.kubernetes.io/controller-managed-attach-detach"
"""The node annotation without which the attach-detach controller leaves a node's volumes alone
(a kubelet sets it at registration, unless told to attach volumes itself)."""

DEFAULT_NODE_COUNT: Final = 5
NODE_LEASE_DURATION_SECONDS: Final = 20
"""kwok renews each node's Lease every quarter of this, as a kubelet does."""

NODE_MONITOR_GRACE_SECONDS: Final = 20
"""How long the node-lifecycle controller waits for a heartbeat before marking a node Unknown."""

SERVICE_ACCOUNT_ISSUER: Final = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER: Final = "kafka-autopilot-admin"

CONTROLLERS: Final = (
    "statefulset-controller",
    "daemonset-controller",
    "replicaset-controller",
    "deployment-controller",
    "job-controller",
    "disruption-controller",
    "node-lifecycle-controller",
    "taint-eviction-controller",
    "garbage-collector-controller",
    "pod-garbage-collector-controller",
    "persistentvolume-binder-controller",
    "persistentvolume-attach-detach-controller",
    "persistentvolume-expander-controller",
    "persistentvolume-protection-controller",
    "persistentvolumeclaim-protection-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "namespace-controller",
    "endpointslice-controller",
    "resourcequota-controller",
    "ttl-controller",
    "clusterrole-aggregation-controller",
)
"""kube-controller-manager's controllers: what StatefulSets, DaemonSets, PVCs, volume attachment and node failure
need.

The legacy Endpoints controller is left out: kwok gives pods loopback IPs, which v1 Endpoints
refuse (EndpointSlices take them).
"""


def pod_cidr(apiserver_port: int) -> str:
    """Pod IPs kwok hands out: loopback addresses, so nothing ever routes off the machine; 127.20-219.x.y,
    the second number from the apiserver's port, so that two sandboxes up at once (the test streams of
    `make test`) give their brokers different addresses and never contend for one address and port."""
    return f"127.{20 + apiserver_port % 200}.0.0/16"


_DAEMON_ORDER: Final = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


class KubeBinariesMissingError(SandboxProcessError):
    """A Kubernetes program is not in the cache; the message names the script that builds it."""


class KubeApiError(RuntimeError):
    """The API server answered a request with an error status."""

    def __init__(self, *, method: str, path: str, status: int, body: str) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.body = body
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")


# --- binaries ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class KubeBinaries:
    """The cached programs of one pinned Kubernetes version."""

    bin_dir: Path

    def path(self, name: str) -> Path:
        return self.bin_dir / name

    def missing(self) -> list[str]:
        return [name for name in _DAEMON_ORDER if not os.access(self.path(name), os.X_OK)]


def build_script() -> Path:
    """`scripts/build-kubernetes.sh` of the checkout this module runs from."""
    return Path(__file__).resolve().parents[1] / "scripts" / "build-kubernetes.sh"


def kube_binaries(*, cache: Path | None = None) -> KubeBinaries:
    """Where the build script puts the programs; does not check that they exist."""
    return KubeBinaries(bin_dir=(cache or cache_root()) / "kubernetes" / KUBERNETES_VERSION / "bin")


def ensure_binaries(*, cache: Path | None = None, build: bool = True) -> KubeBinaries:
    """The cached programs, running the build script first if any is missing and `build` is set.

    A cold build takes tens of minutes on two cores; a warm cache returns at once.
    """
    found = kube_binaries(cache=cache)
    if not found.missing():
        return found
    script = build_script()
    if not build or not script.is_file():
        raise KubeBinariesMissingError(
            f"Kubernetes programs missing in {found.bin_dir} ({', '.join(found.missing())}): "
            f"run scripts/build-kubernetes.sh"
        )
    env = dict(os.environ, CI="true")
    if cache is not None:
        env["KAFKA_AUTOPILOT_CACHE"] = str(cache)
    subprocess.run(["bash", str(script)], check=True, stdin=subprocess.DEVNULL, env=env)
    if found.missing():
        raise KubeBinariesMissingError(f"{script} ran but {', '.join(found.missing())} still missing")
    return found


# --- certificates -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ClientIdentity:
    """A client certificate's file stem, user name (CN) and groups (O)."""

    stem: str
    user: str
    groups: tuple[str, ...] = ()


ADMIN: Final = ClientIdentity(stem="admin", user=ADMIN_USER, groups=("system:masters",))
CONTROLLER_MANAGER: Final = ClientIdentity(stem="kube-controller-manager", user="system:kube-controller-manager")
SCHEDULER: Final = ClientIdentity(stem="kube-scheduler", user="system:kube-scheduler")
KWOK: Final = ClientIdentity(stem="kwok", user="kwok-controller", groups=("system:masters",))
"""kwok writes node and pod status, leases and events for every fake node, like many kubelets."""


CLIENT_USAGE: Final = ("keyUsage=critical,digitalSignature,keyEncipherment", "extendedKeyUsage=clientAuth")


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SandboxProcessError(f"openssl {' '.join(args)} failed:\n{result.stderr.strip()}")


def _new_ec_key(*, path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path.name, cwd=path.parent)
    path.chmod(0o600)


def new_ca(*, pki: Path, stem: str, subject: str) -> None:
    """Write `stem.key` and the self-signed `stem.crt` of a new CA in `pki` (also for sandbox/kafka.py)."""
    _new_ec_key(path=pki / f"{stem}.key")
    _openssl(
        "req", "-x509", "-new", "-key", f"{stem}.key", "-subj", subject,
        "-days", "3650", "-sha256", "-out", f"{stem}.crt",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        cwd=pki,
    )  # fmt: skip


def sign_certificate(*, pki: Path, stem: str, subject: str, extensions: Sequence[str], ca: str = "ca") -> None:
    """Write `stem.key` and `stem.crt`, signed by the CA `ca.crt` in `pki`."""
    _new_ec_key(path=pki / f"{stem}.key")
    _openssl("req", "-new", "-key", f"{stem}.key", "-subj", subject, "-out", f"{stem}.csr", cwd=pki)
    ext_file = pki / f"{stem}.ext"
    ext_file.write_text("\n".join(["basicConstraints=CA:FALSE", *extensions]) + "\n")
    _openssl(
        "x509", "-req", "-in", f"{stem}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-set_serial", str(secrets.randbits(63)), "-days", "365", "-sha256",
        "-extfile", ext_file.name, "-out", f"{stem}.crt",
        cwd=pki,
    )  # fmt: skip
    (pki / f"{stem}.csr").unlink()
    ext_file.unlink()


def _subject(identity: ClientIdentity) -> str:
    return "".join(f"/O={group}" for group in identity.groups) + f"/CN={identity.user}"


def require_openssl() -> None:
    if shutil.which("openssl") is None:
        raise SandboxProcessError("the openssl command is needed to make the sandbox's certificates")


def generate_pki(*, pki: Path) -> None:
    """CA, apiserver serving certificate, service-account key pair and the clients' certificates,
    plus a front-proxy CA and client for the aggregation layer (request-header authentication).

    Idempotent: a `complete` marker, written last, means the set is there.
    """
    if (pki / "complete").is_file():
        return
    require_openssl()
    pki.mkdir(parents=True, exist_ok=True)
    new_ca(pki=pki, stem="ca", subject="/CN=kafka-autopilot-sandbox-ca")
    new_ca(pki=pki, stem="front-proxy-ca", subject="/CN=kafka-autopilot-sandbox-front-proxy-ca")
    sign_certificate(
        pki=pki,
        stem="front-proxy-client",
        subject="/CN=front-proxy-client",
        extensions=CLIENT_USAGE,
        ca="front-proxy-ca",
    )
    sign_certificate(
        pki=pki,
        stem="apiserver",
        subject="/CN=kube-apiserver",
        extensions=[
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "extendedKeyUsage=serverAuth",
            "subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.96.0.1,DNS:kubernetes,"
            "DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local",
        ],
    )
    for identity in (ADMIN, CONTROLLER_MANAGER, SCHEDULER, KWOK):
        sign_certificate(
            pki=pki,
            stem=identity.stem,
            subject=_subject(identity),
            extensions=CLIENT_USAGE,
        )
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key", cwd=pki)
    (pki / "sa.key").chmod(0o600)
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    (pki / "complete").write_text("")


def write_kubeconfig(*, path: Path, server: str, pki: Path, identity: ClientIdentity) -> None:
    """A kubeconfig with the CA and the client certificate embedded, so it can be copied anywhere."""

    def data(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sandbox", "cluster": {"server": server, "certificate-authority-data": data("ca.crt")}}],
        "users": [
            {
                "name": identity.user,
                "user": {
                    "client-certificate-data": data(f"{identity.stem}.crt"),
                    "client-key-data": data(f"{identity.stem}.key"),
                },
            }
        ],
        "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": identity.user}}],
        "current-context": "sandbox",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


# --- a small synchronous API client -----------------------------------------------------------------


class KubeApi:
    """Plain HTTPS+JSON requests to the apiserver, authenticated by a client certificate.

    Enough for the sandbox to create nodes and flip labels, and for tests to set up fixtures,
    without kubectl and without an event loop.
    """

    def __init__(
        self, *, host: str, port: int, pki: Path, identity: ClientIdentity = ADMIN, timeout_seconds: float = 10.0
    ) -> None:
        self._host = host
        self._port = port
        self._timeout = timeout_seconds
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(certfile=str(pki / f"{identity.stem}.crt"), keyfile=str(pki / f"{identity.stem}.key"))
        self._context = context

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> tuple[int, str]:
        """Send one request; return the status and the raw body. Raises OSError if unreachable.

        `accept` may ask for another representation, e.g. the Table kubectl prints
        (`application/json;as=Table;v=v1;g=meta.k8s.io`: the CRD's printer columns)."""
        connection = http.client.HTTPSConnection(self._host, self._port, context=self._context, timeout=self._timeout)
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Accept": accept, "User-Agent": "kafka-autopilot-sandbox"}
            if payload is not None:
                headers["Content-Type"] = content_type
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            return response.status, response.read().decode(errors="replace")
        finally:
            connection.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """Send one request and return the decoded JSON; raise KubeApiError on an error status."""
        status, text = self.request(method, path, body=body, content_type=content_type)
        if status >= 400:
            raise KubeApiError(method=method, path=path, status=status, body=text)
        decoded: dict[str, Any] = json.loads(text) if text else {}
        return decoded

    def get(self, path: str) -> dict[str, Any]:
        return self.call("GET", path)

    def create(self, path: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        return self.call("POST", path, body=obj)

    def merge_patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        return self.call("PATCH", path, body=patch, content_type="application/merge-patch+json")

    def delete(self, path: str, *, grace_period_seconds: int | None = None) -> dict[str, Any]:
        options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        return self.call("DELETE", path, body=options)

    def is_ready(self) -> bool:
        try:
            status, text = self.request("GET", "/readyz")
        except OSError:
            return False
        return status == 200 and text.strip() == "ok"


def node_condition(node: Mapping[str, Any], kind: str = "Ready") -> str | None:
    """The status ("True", "False", "Unknown") of a node's condition, or None if it has none yet."""
    for condition in node.get("status", {}).get("conditions") or []:
        if condition.get("type") == kind:
            status: str = condition.get("status", "")
            return status
    return None


def node_taint_keys(node: Mapping[str, Any]) -> set[str]:
    return {taint["key"] for taint in node.get("spec", {}).get("taints") or []}


# --- kwok stages ------------------------------------------------------------------------------------

_NODE_STATUS_TEMPLATE: Final = """\
{{ $now := Now }}
conditions:
{{ range NodeConditions }}
- type: {{ .type | Quote }}
  status: {{ .status | Quote }}
  reason: {{ .reason | Quote }}
  message: {{ .message | Quote }}
  lastHeartbeatTime: {{ $now | Quote }}
  lastTransitionTime: {{ $now | Quote }}
{{ end }}
nodeInfo:
  architecture: amd64
  operatingSystem: linux
  osImage: kafka-autopilot sandbox (kwok)
  kubeletVersion: {{ printf "kwok-%s" Version | Quote }}
  kubeProxyVersion: {{ printf "kwok-%s" Version | Quote }}
  containerRuntimeVersion: {{ printf "kwok-%s" Version | Quote }}
  kernelVersion: {{ printf "kwok-%s" Version | Quote }}
phase: Running
"""

_POD_RUNNING_TEMPLATE: Final = """\
{{ $now := Now }}
conditions:
- type: PodScheduled
  status: "True"
  lastTransitionTime: {{ $now | Quote }}
- type: Initialized
  status: "True"
  lastTransitionTime: {{ $now | Quote }}
- type: ContainersReady
  status: "True"
  lastTransitionTime: {{ $now | Quote }}
- type: Ready
  status: "True"
  lastTransitionTime: {{ $now | Quote }}
containerStatuses:
{{ range .spec.containers }}
- name: {{ .name | Quote }}
  image: {{ .image | Quote }}
  ready: true
  started: true
  restartCount: 0
  state:
    running:
      startedAt: {{ $now | Quote }}
{{ end }}
{{ with NodeIPsWith .spec.nodeName }}
hostIP: {{ index . 0 | Quote }}
hostIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
{{ $hostNetwork := or .spec.hostNetwork false }}
{{ $uid := or .metadata.uid "" }}
{{ $name := or .metadata.name "" }}
{{ $namespace := or .metadata.namespace "" }}
{{ with PodIPsWith .spec.nodeName $hostNetwork $uid $name $namespace }}
podIP: {{ index . 0 | Quote }}
podIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
phase: Running
startTime: {{ $now | Quote }}
"""

_POD_READY_AGAIN_TEMPLATE: Final = """\
{{ $now := Now }}
conditions:
- type: ContainersReady
  status: "True"
  lastTransitionTime: {{ $now | Quote }}
- type: Ready
  status: "True"
  lastTransitionTime: {{ $now | Quote }}
"""


def _stage(name: str, kind: str, selector: list[dict[str, Any]], next_: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": name},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": kind},
            "selector": {"matchExpressions": selector},
            **spec,
            "next": next_,
        },
    }


def _ready_is(operator: str) -> dict[str, Any]:
    return {
        "key": '.status.conditions.[] | select( .type == "Ready" ) | .status',
        "operator": operator,
        "values": ["True"],
    }


_NOT_DELETING: Final = {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"}


def kwok_stages() -> list[dict[str, Any]]:
    """The lifecycle kwok plays: nodes become Ready and stay so; pods run at once and go on delete.

    A node's liveness signal is its Lease (renewed by kwok), so the status refresh is slow, as a
    kubelet's is. A pod marked not ready while its node was unreachable becomes ready again once
    the node is back, as its containers never stopped.
    """
    return [
        _stage("node-initialize", "Node", [_ready_is("NotIn")], {"statusTemplate": _NODE_STATUS_TEMPLATE}),
        _stage(
            "node-heartbeat",
            "Node",
            [_ready_is("In")],
            {"statusTemplate": _NODE_STATUS_TEMPLATE.replace("lastTransitionTime: {{ $now | Quote }}\n", "")},
            delay={"durationMilliseconds": 60_000, "jitterDurationMilliseconds": 65_000},
        ),
        _stage(
            "pod-running",
            "Pod",
            [_NOT_DELETING, {"key": ".status.phase", "operator": "In", "values": ["Pending"]}],
            {"statusTemplate": _POD_RUNNING_TEMPLATE},
        ),
        _stage(
            "pod-ready-again",
            "Pod",
            [_NOT_DELETING, {"key": ".status.phase", "operator": "In", "values": ["Running"]}, _ready_is("NotIn")],
            {"statusTemplate": _POD_READY_AGAIN_TEMPLATE},
        ),
        _stage(
            "pod-job-complete",
            "Pod",
            [
                _NOT_DELETING,
                {"key": ".status.phase", "operator": "In", "values": ["Running"]},
                {"key": ".metadata.ownerReferences.[].kind", "operator": "In", "values": ["Job"]},
            ],
            {"statusTemplate": "phase: Succeeded\n"},
        ),
        _stage(
            "pod-delete",
            "Pod",
            [{"key": ".metadata.deletionTimestamp", "operator": "Exists"}],
            {"delete": True},
        ),
    ]


# --- the control plane ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ControlPlaneState:
    """What `start()` chose, saved as `state.json` so that another process can find and stop it."""

    etcd_client_port: int
    etcd_peer_port: int
    apiserver_port: int
    controller_manager_port: int
    scheduler_port: int
    kwok_port: int
    node_names: tuple[str, ...]

    @classmethod
    def load(cls, path: Path) -> ControlPlaneState | None:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(raw, dict) or set(raw) != {field.name for field in fields(cls)}:
            return None
        raw["node_names"] = tuple(raw["node_names"])
        return cls(**raw)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


class KubeControlPlane:
    """etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok under `work_dir`.

    `start()` is idempotent and reuses the work dir's certificates and etcd data, so a cluster
    survives `stop()` + `start()`; delete the work dir for a fresh one. Every daemon runs under
    `process.start_daemon`'s time-to-live, so a forgotten sandbox stops by itself.
    """

    def __init__(
        self,
        *,
        work_dir: Path,
        node_count: int = DEFAULT_NODE_COUNT,
        binaries: KubeBinaries | None = None,
        node_monitor_grace_seconds: int = NODE_MONITOR_GRACE_SECONDS,
        node_lease_duration_seconds: int = NODE_LEASE_DURATION_SECONDS,
        ttl_seconds: int | None = None,
    ) -> None:
        self.work_dir = work_dir.resolve()
        self.node_count = node_count
        self._binaries = binaries
        self.node_monitor_grace_seconds = node_monitor_grace_seconds
        self.node_lease_duration_seconds = node_lease_duration_seconds
        self.ttl_seconds = ttl_seconds

    # -- paths and addresses

    @property
    def pki_dir(self) -> Path:
        return self.work_dir / "pki"

    @property
    def run_dir(self) -> Path:
        """Logs and pid files of the daemons."""
        return self.work_dir / "run"

    @property
    def state_path(self) -> Path:
        return self.work_dir / "state.json"

    @property
    def kubeconfig_path(self) -> Path:
        """The admin kubeconfig (user `kafka-autopilot-admin`, group system:masters)."""
        return self.work_dir / "kubeconfig"

    @property
    def audit_log_path(self) -> Path:
        return self.work_dir / "audit" / "audit.log"

    @property
    def state(self) -> ControlPlaneState:
        state = ControlPlaneState.load(self.state_path)
        if state is None:
            raise SandboxProcessError(f"no control plane was started in {self.work_dir} (no state.json)")
        return state

    @property
    def apiserver_url(self) -> str:
        return f"https://127.0.0.1:{self.state.apiserver_port}"

    @property
    def node_names(self) -> tuple[str, ...]:
        return self.state.node_names

    def api(self, *, identity: ClientIdentity = ADMIN) -> KubeApi:
        return KubeApi(host="127.0.0.1", port=self.state.apiserver_port, pki=self.pki_dir, identity=identity)

    def binaries(self) -> KubeBinaries:
        found = self._binaries or kube_binaries()
        if found.missing():
            raise KubeBinariesMissingError(
                f"Kubernetes programs missing in {found.bin_dir} ({', '.join(found.missing())}): "
                f"run scripts/build-kubernetes.sh"
            )
        return found

    # -- lifecycle

    def start(self, *, timeout_seconds: float = 180.0) -> None:
        """Start whatever is not running, create the nodes, and wait until every node is Ready."""
        deadline = time.monotonic() + timeout_seconds
        binaries = self.binaries()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        state = ControlPlaneState.load(self.state_path) or self._new_state()
        state.save(self.state_path)
        generate_pki(pki=self.pki_dir)
        self._write_configs(state)
        try:
            self._start_etcd(binaries, state, deadline)
            self._start_apiserver(binaries, state, deadline)
            self._start_controller_manager(binaries, state, deadline)
            self._start_scheduler(binaries, state, deadline)
            self._start_kwok(binaries, state, deadline)
            self._create_nodes(state)
            self.wait_for_ready_nodes(timeout_seconds=max(1.0, deadline - time.monotonic()))
            self._wait_for(
                lambda: self._exists("/api/v1/namespaces/default/serviceaccounts/default"),
                what="service account default/default",
                daemon_name="kube-controller-manager",
                deadline=deadline,
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every daemon (in reverse start order), from this or another process."""
        for name in reversed(_DAEMON_ORDER):
            daemon = daemon_from_pid_file(name=name, run_dir=self.run_dir)
            if daemon is not None:
                stop_daemon(daemon)

    def stop_apiserver(self) -> None:
        """Stop only kube-apiserver; etcd and the rest keep running and reconnect later."""
        daemon = daemon_from_pid_file(name="kube-apiserver", run_dir=self.run_dir)
        if daemon is not None:
            stop_daemon(daemon)

    def start_apiserver(self, *, timeout_seconds: float = 90.0) -> None:
        """Start kube-apiserver again on the same port and etcd, and wait until it is ready.

        After an outage longer than the node-monitor grace period, the node-lifecycle controller
        may mark some nodes Unknown for a few seconds before it sees kwok's next Lease renewals,
        as it would with real kubelets; `wait_for_ready_nodes()` waits that out.
        """
        self._start_apiserver(self.binaries(), self.state, time.monotonic() + timeout_seconds)

    def wait_for_ready_nodes(self, *, timeout_seconds: float = 60.0, stable_seconds: float = 0.0) -> None:
        """Wait until every node with a heartbeat (not failed by `fail_node`) is Ready, and has
        stayed so for `stable_seconds`."""
        ready_since: list[float] = []

        def all_ready() -> bool:
            nodes = self.api().get("/api/v1/nodes")["items"]
            alive = [node for node in nodes if node["metadata"].get("labels", {}).get(HEARTBEAT_LABEL) == "on"]
            if not alive or not all(node_condition(node) == "True" for node in alive):
                ready_since.clear()
                return False
            if not ready_since:
                ready_since.append(time.monotonic())
            return time.monotonic() - ready_since[0] >= stable_seconds

        self._wait_for(
            all_ready,
            what="every node with a heartbeat Ready",
            daemon_name="kwok",
            deadline=time.monotonic() + timeout_seconds,
        )

    def daemons(self) -> dict[str, Daemon]:
        """The daemons whose pid files exist, running or not."""
        found: dict[str, Daemon] = {}
        for name in _DAEMON_ORDER:
            daemon = daemon_from_pid_file(name=name, run_dir=self.run_dir)
            if daemon is not None:
                found[name] = daemon
        return found

    def is_running(self) -> bool:
        running = {name for name, daemon in self.daemons().items() if daemon.is_running()}
        return running == set(_DAEMON_ORDER)

    def ports(self) -> dict[str, int]:
        state = self.state
        return {
            "etcd-client": state.etcd_client_port,
            "etcd-peer": state.etcd_peer_port,
            "kube-apiserver": state.apiserver_port,
            "kube-controller-manager": state.controller_manager_port,
            "kube-scheduler": state.scheduler_port,
            "kwok": state.kwok_port,
        }

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each running daemon, its whole process tree added up."""
        return {name: _tree_rss_bytes(daemon.pid) for name, daemon in self.daemons().items() if daemon.is_running()}

    # -- nodes

    def fail_node(self, name: str) -> None:
        """Stop the node's heartbeat: kwok lets go of it, its Lease goes stale, and the real
        node-lifecycle controller marks it Unknown and taints it unreachable after the grace period.
        Its pods keep their phase, as with a kubelet that vanished.
        """
        self._require_node(name)
        self.api().merge_patch(f"/api/v1/nodes/{quote(name)}", {"metadata": {"labels": {HEARTBEAT_LABEL: None}}})

    def recover_node(self, name: str) -> None:
        """Resume the node's heartbeat; the node-lifecycle controller marks it Ready and untaints it."""
        self._require_node(name)
        self.api().merge_patch(f"/api/v1/nodes/{quote(name)}", {"metadata": {"labels": {HEARTBEAT_LABEL: "on"}}})

    def failed_nodes(self) -> set[str]:
        """Nodes whose heartbeat is stopped by `fail_node`."""
        nodes = self.api().get("/api/v1/nodes")["items"]
        return {
            node["metadata"]["name"]
            for node in nodes
            if node["metadata"].get("labels", {}).get(HEARTBEAT_LABEL) != "on"
        }

    def ready_node_count(self) -> int:
        nodes = self.api().get("/api/v1/nodes")["items"]
        return sum(1 for node in nodes if node_condition(node) == "True")

    # -- internals

    def _require_node(self, name: str) -> None:
        if name not in self.state.node_names:
            raise ValueError(f"{name!r} is not a sandbox node; nodes are {', '.join(self.state.node_names)}")

    def _new_state(self) -> ControlPlaneState:
        ports: set[int] = set()
        while len(ports) < 6:
            ports.add(free_port())
        etcd_client, etcd_peer, apiserver, kcm, scheduler, kwok = sorted(ports)
        return ControlPlaneState(
            etcd_client_port=etcd_client,
            etcd_peer_port=etcd_peer,
            apiserver_port=apiserver,
            controller_manager_port=kcm,
            scheduler_port=scheduler,
            kwok_port=kwok,
            node_names=tuple(f"kwok-node-{index}" for index in range(self.node_count)),
        )

    def _write_configs(self, state: ControlPlaneState) -> None:
        server = f"https://127.0.0.1:{state.apiserver_port}"
        write_kubeconfig(path=self.kubeconfig_path, server=server, pki=self.pki_dir, identity=ADMIN)
        for identity in (CONTROLLER_MANAGER, SCHEDULER, KWOK):
            write_kubeconfig(
                path=self.work_dir / f"{identity.stem}.kubeconfig", server=server, pki=self.pki_dir, identity=identity
            )
        self.audit_log_path.parent.mkdir(parents=True, exist_ok=True)
        (self.work_dir / "audit-policy.yaml").write_text(yaml.safe_dump(_audit_policy(), sort_keys=False))
        kwok_config = self.work_dir / "kwok.yaml"
        kwok_config.write_text(yaml.safe_dump_all(kwok_stages(), sort_keys=False))

    def _wait_for(self, check: Callable[[], bool], *, what: str, daemon_name: str, deadline: float) -> None:
        daemon = daemon_from_pid_file(name=daemon_name, run_dir=self.run_dir)
        if daemon is None:
            raise SandboxProcessError(f"{daemon_name} has no pid file in {self.run_dir}")
        wait_until(check, daemon=daemon, timeout_seconds=max(1.0, deadline - time.monotonic()), what=what)

    def _running(self, name: str) -> bool:
        daemon = daemon_from_pid_file(name=name, run_dir=self.run_dir)
        return daemon is not None and daemon.is_running()

    def _launch(self, name: str, argv: Sequence[str], *, port: int, env: Mapping[str, str] | None = None) -> None:
        if port_is_open(port):
            raise SandboxProcessError(f"{name}: port {port} on 127.0.0.1 is taken by another program")
        start_daemon(name=name, argv=argv, run_dir=self.run_dir, env=env, ttl_seconds=self.ttl_seconds)

    def _start_etcd(self, binaries: KubeBinaries, state: ControlPlaneState, deadline: float) -> None:
        client = f"http://127.0.0.1:{state.etcd_client_port}"
        peer = f"http://127.0.0.1:{state.etcd_peer_port}"
        if not self._running("etcd"):
            self._launch(
                "etcd",
                [
                    str(binaries.path("etcd")),
                    "--name=sandbox",
                    f"--data-dir={self.work_dir / 'etcd'}",
                    f"--listen-client-urls={client}",
                    f"--advertise-client-urls={client}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=sandbox={peer}",
                    "--initial-cluster-state=new",
                    "--unsafe-no-fsync",
                    "--quota-backend-bytes=2147483648",
                    "--log-level=warn",
                ],
                port=state.etcd_client_port,
            )
        self._wait_for(
            lambda: _http_ok(f"{client}/health", expect='"health":"true"'),
            what="etcd healthy",
            daemon_name="etcd",
            deadline=deadline,
        )

    def _start_apiserver(self, binaries: KubeBinaries, state: ControlPlaneState, deadline: float) -> None:
        pki = self.pki_dir
        if not self._running("kube-apiserver"):
            self._launch(
                "kube-apiserver",
                [
                    str(binaries.path("kube-apiserver")),
                    f"--etcd-servers=http://127.0.0.1:{state.etcd_client_port}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    # The reconciler refuses a loopback address for the `kubernetes` Service.
                    "--endpoint-reconciler-type=none",
                    f"--secure-port={state.apiserver_port}",
                    f"--tls-cert-file={pki / 'apiserver.crt'}",
                    f"--tls-private-key-file={pki / 'apiserver.key'}",
                    f"--client-ca-file={pki / 'ca.crt'}",
                    f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
                    "--requestheader-allowed-names=front-proxy-client",
                    "--requestheader-username-headers=X-Remote-User",
                    "--requestheader-group-headers=X-Remote-Group",
                    "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                    f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
                    f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
                    "--authorization-mode=Node,RBAC",
                    "--anonymous-auth=false",
                    "--enable-admission-plugins=NodeRestriction",
                    f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                    f"--service-account-key-file={pki / 'sa.pub'}",
                    f"--service-account-signing-key-file={pki / 'sa.key'}",
                    "--service-cluster-ip-range=10.96.0.0/16",
                    f"--audit-policy-file={self.work_dir / 'audit-policy.yaml'}",
                    f"--audit-log-path={self.audit_log_path}",
                    "--audit-log-format=json",
                    "--audit-log-maxsize=100",
                    "--audit-log-maxbackup=3",
                    "--allow-privileged=true",
                    "--profiling=false",
                    "--event-ttl=2h",
                ],
                port=state.apiserver_port,
            )
        api = self.api()
        self._wait_for(api.is_ready, what="kube-apiserver ready", daemon_name="kube-apiserver", deadline=deadline)

    def _component_flags(self, identity: ClientIdentity, *, port: int) -> list[str]:
        kubeconfig = self.work_dir / f"{identity.stem}.kubeconfig"
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={self.work_dir / identity.stem}",
            "--leader-elect=false",
        ]

    def _start_controller_manager(self, binaries: KubeBinaries, state: ControlPlaneState, deadline: float) -> None:
        pki = self.pki_dir
        port = state.controller_manager_port
        if not self._running("kube-controller-manager"):
            self._launch(
                "kube-controller-manager",
                [
                    str(binaries.path("kube-controller-manager")),
                    *self._component_flags(CONTROLLER_MANAGER, port=port),
                    f"--controllers={','.join(CONTROLLERS)}",
                    "--use-service-account-credentials=true",
                    f"--service-account-private-key-file={pki / 'sa.key'}",
                    f"--root-ca-file={pki / 'ca.crt'}",
                    f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                    f"--cluster-signing-key-file={pki / 'ca.key'}",
                    "--node-monitor-period=2s",
                    f"--node-monitor-grace-period={self.node_monitor_grace_seconds}s",
                    "--profiling=false",
                ],
                port=port,
            )
        self._wait_for(
            lambda: _http_ok(f"https://127.0.0.1:{port}/healthz", expect="ok"),
            what="kube-controller-manager healthy",
            daemon_name="kube-controller-manager",
            deadline=deadline,
        )

    def _start_scheduler(self, binaries: KubeBinaries, state: ControlPlaneState, deadline: float) -> None:
        port = state.scheduler_port
        if not self._running("kube-scheduler"):
            self._launch(
                "kube-scheduler",
                [
                    str(binaries.path("kube-scheduler")),
                    *self._component_flags(SCHEDULER, port=port),
                    "--profiling=false",
                ],
                port=port,
            )
        self._wait_for(
            lambda: _http_ok(f"https://127.0.0.1:{port}/healthz", expect="ok"),
            what="kube-scheduler healthy",
            daemon_name="kube-scheduler",
            deadline=deadline,
        )

    def _start_kwok(self, binaries: KubeBinaries, state: ControlPlaneState, deadline: float) -> None:
        port = state.kwok_port
        home = self.work_dir / "kwok-home"
        home.mkdir(exist_ok=True)
        if not self._running("kwok"):
            self._launch(
                "kwok",
                [
                    str(binaries.path("kwok")),
                    f"--kubeconfig={self.work_dir / 'kwok.kubeconfig'}",
                    f"--config={self.work_dir / 'kwok.yaml'}",
                    f"--manage-nodes-with-label-selector={HEARTBEAT_LABEL}=on",
                    f"--node-lease-duration-seconds={self.node_lease_duration_seconds}",
                    f"--server-address=127.0.0.1:{port}",
                    f"--cidr={pod_cidr(state.apiserver_port)}",
                ],
                port=port,
                # kwok also reads ~/.kwok/kwok.yaml when it exists: give it a home of its own.
                env={"HOME": str(home)},
            )
        self._wait_for(
            lambda: _http_ok(f"http://127.0.0.1:{port}/healthz", expect="ok"),
            what="kwok healthy",
            daemon_name="kwok",
            deadline=deadline,
        )

    def _create_nodes(self, state: ControlPlaneState) -> None:
        api = self.api()
        for index, name in enumerate(state.node_names):
            try:
                api.create("/api/v1/nodes", _node_manifest(name=name, index=index))
            except KubeApiError as error:
                if error.status != 409:
                    raise

    def _exists(self, path: str) -> bool:
        status, _ = self.api().request("GET", path)
        return status == 200


def _node_manifest(*, name: str, index: int) -> dict[str, Any]:
    resources = {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "500Gi"}
    zone = "abc"[index % 3]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                HEARTBEAT_LABEL: "on",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "kwok",
                "topology.kubernetes.io/region": "sandbox",
                "topology.kubernetes.io/zone": f"sandbox-{zone}",
                "type": "kwok",
            },
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", CONTROLLER_MANAGED_ATTACH_DETACH: "true"},
        },
        "spec": {},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            # A loopback address per node, so nothing aimed at a node leaves the machine.
            "addresses": [
                {"type": "InternalIP", "address": f"127.0.10.{index + 1}"},
                {"type": "Hostname", "address": name},
            ],
        },
    }


def _audit_policy() -> dict[str, Any]:
    """Metadata (user, groups, user agent, verb, object) for every request; bodies of writes too,
    except for Secrets and the high-volume Leases and Events."""
    quiet = [
        {"group": "", "resources": ["secrets", "configmaps", "events", "serviceaccounts/token"]},
        {"group": "coordination.k8s.io", "resources": ["leases"]},
        {"group": "events.k8s.io", "resources": ["events"]},
        {"group": "authentication.k8s.io", "resources": ["tokenreviews"]},
    ]
    return {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            {"level": "Metadata", "resources": quiet},
            {"level": "Request", "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
            {"level": "Metadata"},
        ],
    }


def _http_ok(url: str, *, expect: str) -> bool:
    """GET `url` (not verifying the self-signed certificates of controller health ports)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            body: bytes = response.read()
            return response.status == 200 and expect in body.decode(errors="replace")
    except OSError:
        return False


def _children(pid: int) -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            # The command name may hold spaces: the fields after its closing parenthesis are fixed.
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == pid:
                yield int(entry.name)


def _tree_rss_bytes(pid: int) -> int:
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        if not pid_is_running(current):
            continue
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        pending.extend(_children(current))
    return total
