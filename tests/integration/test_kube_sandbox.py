"""The sandbox's Kubernetes side against the real programs: nodes, StatefulSet pods with bound PVCs,
node failure seen by the real node-lifecycle controller, recovery, and a clean stop.

The tests in this module share one control plane and run in file order: each step starts from
the state the previous one left.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import eventually

from sandbox.kube import (
    ETCD_VERSION,
    HEARTBEAT_LABEL,
    KUBERNETES_VERSION,
    KWOK_VERSION,
    SCHEDULER,
    KubeApi,
    KubeApiError,
    KubeControlPlane,
    build_script,
    ensure_binaries,
    node_condition,
    node_taint_keys,
    pod_cidr,
)
from sandbox.process import pid_is_running, port_is_open

pytestmark = pytest.mark.sandbox

NAMESPACE = "kafka"
STS = "kafka"
UNREACHABLE = "node.kubernetes.io/unreachable"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeControlPlane]:
    binaries = ensure_binaries()
    control_plane = KubeControlPlane(work_dir=tmp_path_factory.mktemp("kube"), binaries=binaries, ttl_seconds=1800)
    started = time.monotonic()
    control_plane.start()
    print(f"control plane started in {time.monotonic() - started:.1f}s; RSS {control_plane.rss_bytes()}")
    try:
        yield control_plane
    finally:
        control_plane.stop()


@pytest.fixture(scope="module")
def api(plane: KubeControlPlane) -> KubeApi:
    return plane.api()


def pods(api: KubeApi) -> dict[str, dict[str, Any]]:
    items = api.get(f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]
    return {pod["metadata"]["name"]: pod for pod in items}


def running_on(api: KubeApi) -> dict[str, str]:
    """Pod name -> node, for pods that are Running, not being deleted."""
    return {
        name: pod["spec"].get("nodeName", "")
        for name, pod in pods(api).items()
        if pod["status"].get("phase") == "Running" and "deletionTimestamp" not in pod["metadata"]
    }


def test_build_script_pins_match_the_module() -> None:
    text = build_script().read_text()
    pins = dict(re.findall(r"^([A-Z_]+_VERSION)=(\S+)$", text, flags=re.MULTILINE))
    assert pins == {
        "KUBERNETES_VERSION": KUBERNETES_VERSION,
        "ETCD_VERSION": ETCD_VERSION,
        "KWOK_VERSION": KWOK_VERSION,
    }


def test_nodes_are_ready_and_the_apiserver_is_the_pinned_version(plane: KubeControlPlane, api: KubeApi) -> None:
    nodes = api.get("/api/v1/nodes")["items"]
    assert sorted(node["metadata"]["name"] for node in nodes) == sorted(plane.node_names)
    assert len(nodes) == 5
    assert all(node_condition(node) == "True" for node in nodes)
    assert all(node["metadata"]["labels"][HEARTBEAT_LABEL] == "on" for node in nodes)
    assert api.get("/version")["gitVersion"] == KUBERNETES_VERSION
    leases = api.get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases")["items"]
    assert {lease["metadata"]["name"] for lease in leases} == set(plane.node_names)


def test_admin_kubeconfig_is_written(plane: KubeControlPlane) -> None:
    text = plane.kubeconfig_path.read_text()
    assert plane.apiserver_url in text
    assert "client-certificate-data" in text


def test_statefulset_pods_run_with_bound_pvcs(plane: KubeControlPlane, api: KubeApi) -> None:
    api.create("/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
    api.create(
        "/apis/storage.k8s.io/v1/storageclasses",
        {
            "metadata": {"name": "sandbox"},
            "provisioner": "sandbox.kafka-autopilot.io/storage-twin",
            "volumeBindingMode": "Immediate",
            "allowVolumeExpansion": True,
            "reclaimPolicy": "Retain",
        },
    )
    for index in range(2):
        api.create(
            "/api/v1/persistentvolumes",
            {
                "metadata": {"name": f"pv-data-kafka-{index}"},
                "spec": {
                    "capacity": {"storage": "10Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "sandbox",
                    "persistentVolumeReclaimPolicy": "Retain",
                    "claimRef": {"namespace": NAMESPACE, "name": f"data-kafka-{index}"},
                    "csi": {"driver": "sandbox.kafka-autopilot.io", "volumeHandle": f"vol-{index}"},
                },
            },
        )
    api.create(
        f"/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets",
        {
            "metadata": {"name": STS},
            "spec": {
                "serviceName": STS,
                "replicas": 2,
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": {"app": STS}},
                "template": {
                    "metadata": {"labels": {"app": STS}},
                    "spec": {
                        "terminationGracePeriodSeconds": 30,
                        "containers": [
                            {
                                "name": "kafka",
                                "image": "apache/kafka:sandbox",
                                "volumeMounts": [{"name": "data", "mountPath": "/var/lib/kafka"}],
                            }
                        ],
                    },
                },
                "volumeClaimTemplates": [
                    {
                        "metadata": {"name": "data"},
                        "spec": {
                            "accessModes": ["ReadWriteOnce"],
                            "storageClassName": "sandbox",
                            "resources": {"requests": {"storage": "10Gi"}},
                        },
                    }
                ],
            },
        },
    )

    def both_running() -> dict[str, str] | None:
        found = running_on(api)
        return found if len(found) == 2 else None

    placed = eventually(
        both_running,
        timeout=90,
        what="2 StatefulSet pods Running",
    )
    assert set(placed) == {"kafka-0", "kafka-1"}
    assert set(placed.values()) <= set(n["metadata"]["name"] for n in api.get("/api/v1/nodes")["items"])
    claims = api.get(f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims")["items"]
    assert {claim["metadata"]["name"]: claim["status"]["phase"] for claim in claims} == {
        "data-kafka-0": "Bound",
        "data-kafka-1": "Bound",
    }
    assert {claim["spec"]["volumeName"] for claim in claims} == {"pv-data-kafka-0", "pv-data-kafka-1"}
    prefix = pod_cidr(plane.state.apiserver_port).removesuffix("0.0/16")
    assert all(pod["status"].get("podIP", "").startswith(prefix) for pod in pods(api).values())


def test_the_attach_detach_controller_creates_a_volume_attachment_per_pod_volume(api: KubeApi) -> None:
    """The volumes are CSI volumes of a driver with no CSIDriver object, so attachment is required: the
    controller creates the VolumeAttachments; nothing here attaches them (no external attacher runs)."""

    def created() -> dict[str, str] | None:
        items = api.get("/apis/storage.k8s.io/v1/volumeattachments")["items"]
        found = {a["spec"]["source"]["persistentVolumeName"]: a["spec"]["nodeName"] for a in items}
        return found if len(found) == 2 else None

    attached_to = eventually(created, timeout=60, what="2 VolumeAttachments")
    assert attached_to == {f"pv-data-kafka-{index}": running_on(api)[f"kafka-{index}"] for index in range(2)}


def test_failed_node_turns_unknown_and_is_tainted(plane: KubeControlPlane, api: KubeApi) -> None:
    victim = running_on(api)["kafka-0"]
    failed_at = time.monotonic()
    plane.fail_node(victim)
    assert plane.failed_nodes() == {victim}

    def unreachable() -> dict[str, Any] | None:
        node = api.get(f"/api/v1/nodes/{victim}")
        ready = node_condition(node) in {"Unknown", "False"}
        return node if ready and UNREACHABLE in node_taint_keys(node) else None

    node = eventually(unreachable, timeout=60, what=f"{victim} NotReady and tainted unreachable")
    print(f"{victim} marked {node_condition(node)} after {time.monotonic() - failed_at:.1f}s")
    assert node_condition(node) == "Unknown"
    others = [api.get(f"/api/v1/nodes/{name}") for name in plane.node_names if name != victim]
    assert all(node_condition(other) == "True" for other in others)


def test_force_deleted_pod_is_recreated_on_another_node(plane: KubeControlPlane, api: KubeApi) -> None:
    (victim,) = plane.failed_nodes()
    assert running_on(api)["kafka-0"] == victim
    old_uid = pods(api)["kafka-0"]["metadata"]["uid"]
    api.delete(f"/api/v1/namespaces/{NAMESPACE}/pods/kafka-0", grace_period_seconds=0)

    def replaced() -> str | None:
        pod = pods(api).get("kafka-0")
        if pod is None or pod["metadata"]["uid"] == old_uid or pod["status"].get("phase") != "Running":
            return None
        node: str = pod["spec"]["nodeName"]
        return node

    new_node = eventually(replaced, timeout=60, what="kafka-0 recreated and Running")
    assert new_node != victim
    claim = api.get(f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims/data-kafka-0")
    assert claim["status"]["phase"] == "Bound"


def test_recovered_node_is_ready_again(plane: KubeControlPlane, api: KubeApi) -> None:
    (victim,) = plane.failed_nodes()
    plane.recover_node(victim)

    def healthy() -> bool:
        node = api.get(f"/api/v1/nodes/{victim}")
        return node_condition(node) == "True" and UNREACHABLE not in node_taint_keys(node)

    assert eventually(healthy, timeout=60, what=f"{victim} Ready and untainted")
    assert plane.failed_nodes() == set()
    assert plane.ready_node_count() == 5


def test_apiserver_restarts_on_the_same_etcd(plane: KubeControlPlane, api: KubeApi) -> None:
    plane.stop_apiserver()
    assert not port_is_open(plane.state.apiserver_port)
    with pytest.raises(OSError):
        api.get("/version")
    plane.start_apiserver()
    assert api.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets/{STS}")["spec"]["replicas"] == 2
    plane.wait_for_ready_nodes(timeout_seconds=60, stable_seconds=5)
    assert plane.ready_node_count() == 5


def test_rbac_limits_the_components(plane: KubeControlPlane) -> None:
    scheduler = plane.api(identity=SCHEDULER)
    status, _ = scheduler.request("GET", "/api/v1/namespaces/kube-system/secrets")
    assert status == 403
    status, _ = scheduler.request("GET", "/api/v1/nodes")
    assert status == 200


def test_unknown_node_is_refused(plane: KubeControlPlane) -> None:
    with pytest.raises(ValueError, match="not a sandbox node"):
        plane.fail_node("no-such-node")


def test_audit_log_records_users_and_agents(plane: KubeControlPlane, api: KubeApi) -> None:
    with pytest.raises(KubeApiError) as refused:
        api.get("/api/v1/namespaces/kafka/pods/does-not-exist")
    assert refused.value.status == 404
    entries = [json.loads(line) for line in plane.audit_log_path.read_text().splitlines() if line.strip()]
    assert len(entries) > 10
    users = {entry["user"]["username"] for entry in entries}
    assert {"kafka-autopilot-admin", "kwok-controller", "system:kube-scheduler"} <= users
    assert "system:serviceaccount:kube-system:statefulset-controller" in users
    deletes = [
        entry for entry in entries if entry["verb"] == "delete" and entry.get("objectRef", {}).get("name") == "kafka-0"
    ]
    assert deletes
    assert deletes[0]["userAgent"].startswith("kafka-autopilot-sandbox")


def test_stop_leaves_no_process_and_no_port(plane: KubeControlPlane) -> None:
    daemons = plane.daemons()
    ports = plane.ports()
    rss = plane.rss_bytes()
    print("RSS MiB:", {name: round(value / 2**20) for name, value in rss.items()})
    assert set(daemons) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}
    # As `sandbox down` does: a new object that knows only the work dir finds the daemons by pid file.
    KubeControlPlane(work_dir=plane.work_dir).stop()
    assert not any(pid_is_running(daemon.pid) for daemon in daemons.values())
    assert not [name for name, port in ports.items() if port_is_open(port)]
    assert not any(Path(daemon.pid_path).exists() for daemon in daemons.values())
    assert not _processes_under(plane.work_dir)


def _processes_under(work_dir: Path) -> list[str]:
    """Command lines of live processes that mention the work dir (a daemon's flags all do)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(work_dir) in command:
            found.append(command)
    return found
