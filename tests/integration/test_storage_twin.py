"""The storage twin (a simulation of the storage layer) against the real control plane: it provisions
and resizes PVCs through the real API and PV binder, serves volume and pool metrics that follow the
ingest, answers the pool API, lets the apiserver refuse shrinks, resumes after a restart, and stops
cleanly.

The tests share one control plane and one twin and run in file order: each step starts from the
state the previous one left.
"""

from __future__ import annotations

import hashlib
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import eventually

from sandbox.kube import KubeApi, KubeApiError, KubeControlPlane, ensure_binaries
from sandbox.process import daemon_from_pid_file, pid_is_running, port_is_open
from sandbox.storage_twin import (
    DAEMON_NAME,
    DEFAULT_PROVISIONER,
    StorageTwinClient,
    StorageTwinError,
    csi_driver_name,
    start_storage_twin,
    stop_storage_twin,
    storage_twin_url,
)

pytestmark = pytest.mark.sandbox

GI = 1024**3
TI = 1024**4
NAMESPACE = "twin"
CLASS = "twin"
FIXED_CLASS = "twin-fixed"
PVC = "data-kafka-0"
FIXED_PVC = "fixed"
RESIZE_DELAY = 2.0
NODE_RESIZE_DELAY = 1.0
INGEST = GI  # bytes per second
PVCS = f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims"
RESIZE_CONDITIONS = ("Resizing", "FileSystemResizePending")


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of the first sample of `name` whose labels include `labels`, or None."""
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        series_name, _, label_text = series.partition("{")
        if series_name != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', label_text))
        if all(found.get(key) == wanted for key, wanted in labels.items()):
            return float(value)
    return None


def volume_metric(twin: StorageTwinClient, name: str) -> float | None:
    text = twin.metrics_text()
    if name.startswith("kubelet_"):
        return metric(text, name, namespace=NAMESPACE, persistentvolumeclaim=PVC)
    return metric(text, name, namespace=NAMESPACE, pvc=PVC)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeControlPlane]:
    control_plane = KubeControlPlane(
        work_dir=tmp_path_factory.mktemp("kube"), node_count=2, binaries=ensure_binaries(), ttl_seconds=1800
    )
    started = time.monotonic()
    control_plane.start()
    print(f"control plane started in {time.monotonic() - started:.1f}s")
    try:
        yield control_plane
    finally:
        control_plane.stop()


@pytest.fixture(scope="module")
def api(plane: KubeControlPlane) -> KubeApi:
    return plane.api()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("twin")


@pytest.fixture(scope="module")
def twin(plane: KubeControlPlane, run_dir: Path) -> Iterator[StorageTwinClient]:
    started = time.monotonic()
    start_storage_twin(
        kubeconfig=plane.kubeconfig_path,
        run_dir=run_dir,
        resize_delay=RESIZE_DELAY,
        node_resize_delay=NODE_RESIZE_DELAY,
        ttl_seconds=1800,
    )
    print(f"storage twin synced in {time.monotonic() - started:.1f}s")
    try:
        yield StorageTwinClient(storage_twin_url(run_dir=run_dir))
    finally:
        stop_storage_twin(run_dir=run_dir)


def claim(api: KubeApi, name: str = PVC) -> dict[str, Any]:
    return api.get(f"{PVCS}/{name}")


def create_claim(api: KubeApi, *, name: str, storage_class: str, size: str) -> None:
    api.create(
        PVCS,
        {
            "metadata": {"name": name},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": storage_class,
                "resources": {"requests": {"storage": size}},
            },
        },
    )


def bound(api: KubeApi, name: str) -> dict[str, Any] | None:
    found = claim(api, name)
    return found if found.get("status", {}).get("phase") == "Bound" else None


def test_pending_claim_gets_a_volume_from_the_twin_and_is_bound(api: KubeApi, twin: StorageTwinClient) -> None:
    api.create("/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
    for name, expandable in ((CLASS, True), (FIXED_CLASS, False)):
        api.create(
            "/apis/storage.k8s.io/v1/storageclasses",
            {
                "metadata": {"name": name},
                "provisioner": DEFAULT_PROVISIONER,
                "allowVolumeExpansion": expandable,
                "volumeBindingMode": "Immediate",
                "reclaimPolicy": "Delete",
            },
        )
    created = time.monotonic()
    create_claim(api, name=PVC, storage_class=CLASS, size="400Gi")
    found = eventually(lambda: bound(api, PVC), timeout=60, what=f"{PVC} Bound")
    print(f"{PVC} Bound {time.monotonic() - created:.1f}s after creation")
    uid = found["metadata"]["uid"]
    assert found["spec"]["volumeName"] == f"pvc-{uid}"
    assert found["status"]["capacity"] == {"storage": "400Gi"}
    pv = api.get(f"/api/v1/persistentvolumes/pvc-{uid}")
    assert pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == DEFAULT_PROVISIONER
    assert pv["spec"]["csi"]["driver"] == csi_driver_name(DEFAULT_PROVISIONER) == "storage-twin.kafka-autopilot.io"
    assert pv["spec"]["capacity"] == {"storage": "400Gi"}
    assert pv["spec"]["claimRef"]["uid"] == uid
    assert pv["spec"]["storageClassName"] == CLASS
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    assert pv["status"]["phase"] == "Bound"
    assert twin.healthz()["synced"] is True


ATTACHMENTS = "/apis/storage.k8s.io/v1/volumeattachments"
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"


def attachments_of(api: KubeApi, pv: str) -> dict[str, dict[str, Any]]:
    """The VolumeAttachments of one PV, by node."""
    items = api.get(ATTACHMENTS)["items"]
    return {a["spec"]["nodeName"]: a for a in items if a["spec"]["source"].get("persistentVolumeName") == pv}


def attached_on(api: KubeApi, pv: str, node: str) -> dict[str, Any] | None:
    found = attachments_of(api, pv).get(node)
    return found if found and found.get("status", {}).get("attached") is True else None


def create_pod(api: KubeApi, *, name: str, node: str) -> None:
    api.create(
        PODS,
        {
            "metadata": {"name": name},
            "spec": {
                "nodeName": node,
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": 0,
                "containers": [
                    {"name": "app", "image": "sandbox:none", "volumeMounts": [{"name": "d", "mountPath": "/d"}]}
                ],
                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": PVC}}],
            },
        },
    )


def test_a_pods_volume_is_attached_to_its_node_and_moves_only_once_detached(
    plane: KubeControlPlane, api: KubeApi, twin: StorageTwinClient
) -> None:
    """The attach-detach controller creates the VolumeAttachment, the twin (the driver's external
    attacher) attaches it; a ReadWriteOnce volume attaches to a second node only once detached."""
    driver = api.get(f"/apis/storage.k8s.io/v1/csidrivers/{csi_driver_name(DEFAULT_PROVISIONER)}")
    assert driver["spec"]["attachRequired"] is True
    pv = claim(api)["spec"]["volumeName"]
    first, second = plane.node_names[:2]
    eventually(lambda: api.get(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default"), timeout=30, what="SA")
    started = time.monotonic()
    create_pod(api, name="user-a", node=first)
    found = eventually(lambda: attached_on(api, pv, first), timeout=60, what=f"{pv} attached to {first}")
    print(f"{pv} attached to {first} {time.monotonic() - started:.1f}s after the pod was created")
    handle = api.get(f"/api/v1/persistentvolumes/{pv}")["spec"]["csi"]["volumeHandle"]
    digest = hashlib.sha256(f"{handle}{csi_driver_name(DEFAULT_PROVISIONER)}{first}".encode()).hexdigest()
    assert found["metadata"]["name"] == f"csi-{digest}"
    assert found["spec"]["attacher"] == csi_driver_name(DEFAULT_PROVISIONER)
    assert found["metadata"]["finalizers"] == [f"external-attacher/{csi_driver_name(DEFAULT_PROVISIONER)}"]
    assert found["status"]["attachmentMetadata"]["simulation"] == "storage-twin"
    unique_name = f"kubernetes.io/csi/{csi_driver_name(DEFAULT_PROVISIONER)}^{handle}"
    eventually(
        lambda: (
            unique_name
            in [v["name"] for v in api.get(f"/api/v1/nodes/{first}").get("status", {}).get("volumesAttached") or []]
        ),
        timeout=30,
        what=f"{first}'s status.volumesAttached listing {pv}",
    )
    assert twin.healthz()["attached_volumes"] == 1

    create_pod(api, name="user-b", node=second)
    time.sleep(3)
    assert set(attachments_of(api, pv)) == {first}, "a ReadWriteOnce volume attached elsewhere waits (Multi-Attach)"
    api.delete(f"{PODS}/user-a", grace_period_seconds=0)
    moved = time.monotonic()
    eventually(lambda: attached_on(api, pv, second), timeout=60, what=f"{pv} attached to {second}")
    print(f"{pv} moved to {second} {time.monotonic() - moved:.1f}s after the first pod was deleted")
    assert set(attachments_of(api, pv)) == {second}, "the old attachment is gone"
    api.delete(f"{PODS}/user-b", grace_period_seconds=0)
    eventually(lambda: not attachments_of(api, pv), timeout=60, what=f"{pv} detached once no pod uses it")


def test_metrics_say_simulation_and_used_bytes_follow_the_ingest(twin: StorageTwinClient) -> None:
    twin.set_used(namespace=NAMESPACE, pvc=PVC, used_bytes=100 * GI)
    twin.set_ingest(namespace=NAMESPACE, pvc=PVC, bytes_per_second=INGEST)
    eventually(
        lambda: volume_metric(twin, "kubelet_volume_stats_capacity_bytes") == 400 * GI,
        timeout=30,
        what="capacity metric of the bound claim",
    )
    with urllib.request.urlopen(f"{twin.base_url}/metrics", timeout=5) as response:
        assert "simulation" in response.headers["Server"]
        text = response.read().decode()
    help_lines = [line for line in text.splitlines() if line.startswith("# HELP ")]
    assert len(help_lines) == 9
    assert all("simulation" in line for line in help_lines)
    first = volume_metric(twin, "kubelet_volume_stats_used_bytes")
    time.sleep(1.5)
    text = twin.metrics_text()
    second = metric(text, "kubelet_volume_stats_used_bytes", namespace=NAMESPACE, persistentvolumeclaim=PVC)
    assert first is not None and second is not None
    assert 100 * GI < first < second < 200 * GI
    assert second - first >= 1.0 * INGEST
    px_used = metric(text, "px_volume_usage_bytes", namespace=NAMESPACE, pvc=PVC)
    assert px_used is not None and px_used >= second
    available = metric(text, "kubelet_volume_stats_available_bytes", namespace=NAMESPACE, persistentvolumeclaim=PVC)
    assert available == 400 * GI - second
    assert metric(text, "px_volume_capacity_bytes", namespace=NAMESPACE, pvc=PVC) == 400 * GI
    assert metric(text, "px_volume_capacity_bytes", namespace=NAMESPACE, pvc=PVC, volumename="nope") is None
    pattern = r'px_volume_capacity_bytes\{namespace="twin",pvc="data-kafka-0",volumename="pvc-[0-9a-f-]+"\} '
    assert re.search(pattern, text)


def test_a_full_volume_stays_full(twin: StorageTwinClient) -> None:
    twin.set_used(namespace=NAMESPACE, pvc=PVC, used_bytes=400 * GI - GI // 2)
    time.sleep(1.0)
    assert volume_metric(twin, "kubelet_volume_stats_used_bytes") == 400 * GI
    time.sleep(1.5)
    assert volume_metric(twin, "px_volume_usage_bytes") == 400 * GI
    assert volume_metric(twin, "kubelet_volume_stats_available_bytes") == 0


def test_growing_the_request_resizes_pv_and_claim_status_like_a_csi_resizer(
    api: KubeApi, twin: StorageTwinClient
) -> None:
    others = [c["type"] for c in claim(api)["status"].get("conditions") or []]
    requested = time.monotonic()
    api.merge_patch(f"{PVCS}/{PVC}", {"spec": {"resources": {"requests": {"storage": "800Gi"}}}})
    seen: list[tuple[tuple[str, ...], str | None]] = []

    def resized() -> dict[str, Any] | None:
        status = claim(api).get("status", {})
        step = (
            tuple(c["type"] for c in status.get("conditions") or [] if c["type"] in RESIZE_CONDITIONS),
            (status.get("allocatedResourceStatuses") or {}).get("storage"),
        )
        if not seen or seen[-1] != step:
            seen.append(step)
        return status if status.get("capacity") == {"storage": "800Gi"} else None

    status = eventually(resized, timeout=60, what="claim status.capacity 800Gi", interval=0.1)
    took = time.monotonic() - requested
    print(f"resize 400Gi -> 800Gi took {took:.1f}s; status steps {seen}")
    assert (("Resizing",), "ControllerResizeInProgress") in seen
    assert (("FileSystemResizePending",), "NodeResizePending") in seen
    assert seen.index((("Resizing",), "ControllerResizeInProgress")) < seen.index(
        (("FileSystemResizePending",), "NodeResizePending")
    )
    assert took >= RESIZE_DELAY + NODE_RESIZE_DELAY
    assert not [c for c in status.get("conditions") or [] if c["type"] in RESIZE_CONDITIONS]
    assert [c["type"] for c in status.get("conditions") or []] == others  # other conditions are kept
    assert status["allocatedResources"] == {"storage": "800Gi"}
    assert "storage" not in (status.get("allocatedResourceStatuses") or {})
    pv = api.get(f"/api/v1/persistentvolumes/{claim(api)['spec']['volumeName']}")
    assert pv["spec"]["capacity"] == {"storage": "800Gi"}

    eventually(
        lambda: (
            volume_metric(twin, "px_volume_capacity_bytes") == 800 * GI
            and volume_metric(twin, "kubelet_volume_stats_capacity_bytes") == 800 * GI
        ),
        timeout=10,
        what="capacity metrics at 800Gi",
    )
    # The full volume grows on from its old capacity: no jump by the bytes "ingested" while full.
    time.sleep(1.0)
    used = volume_metric(twin, "kubelet_volume_stats_used_bytes")
    assert used is not None
    assert 400 * GI < used <= 400 * GI + INGEST * (time.monotonic() - requested)


def test_a_shrink_is_refused_by_the_apiserver(api: KubeApi, twin: StorageTwinClient) -> None:
    for smaller in ("400Gi", "600Gi"):
        with pytest.raises(KubeApiError) as refused:
            api.merge_patch(f"{PVCS}/{PVC}", {"spec": {"resources": {"requests": {"storage": smaller}}}})
        assert refused.value.status == 422
        assert "can not be less than status.capacity" in refused.value.body
    time.sleep(1.0)
    found = claim(api)
    assert found["spec"]["resources"]["requests"]["storage"] == "800Gi"
    assert api.get(f"/api/v1/persistentvolumes/{found['spec']['volumeName']}")["spec"]["capacity"]["storage"] == "800Gi"
    assert volume_metric(twin, "px_volume_capacity_bytes") == 800 * GI


def test_growth_is_refused_by_admission_when_the_class_forbids_expansion(api: KubeApi) -> None:
    create_claim(api, name=FIXED_PVC, storage_class=FIXED_CLASS, size="10Gi")
    eventually(lambda: bound(api, FIXED_PVC), timeout=60, what=f"{FIXED_PVC} Bound")
    with pytest.raises(KubeApiError) as refused:
        api.merge_patch(f"{PVCS}/{FIXED_PVC}", {"spec": {"resources": {"requests": {"storage": "20Gi"}}}})
    assert refused.value.status == 403
    assert "storageclass that provisions the pvc must support resize" in refused.value.body


def pool_metric(twin: StorageTwinClient, name: str, node: str) -> float | None:
    return metric(twin.metrics_text(), name, node=node, pool="0")


def test_a_defined_pool_is_listed_and_measured(plane: KubeControlPlane, twin: StorageTwinClient) -> None:
    node = plane.node_names[0]
    pool = twin.define_pool(node=node, pool="0", drives=3, drive_size=TI, used=TI)
    assert (pool["total_size"], pool["used"], pool["drive_count"], pool["drive_size"]) == (3 * TI, TI, 3, TI)
    assert [p["uuid"] for p in twin.pools()] == [pool["uuid"]]
    assert twin.pool(pool["uuid"])["node"] == node
    assert pool_metric(twin, "px_pool_stats_total_bytes", node) == 3 * TI
    assert pool_metric(twin, "px_pool_stats_available_bytes", node) == 2 * TI
    twin.set_pool_ingest(node=node, pool="0", bytes_per_second=GI)
    time.sleep(1.0)
    used = pool_metric(twin, "px_pool_stats_used_bytes", node)
    assert used is not None and TI + GI <= used < TI + 10 * GI


def resize_done(twin: StorageTwinClient, pool_id: str) -> dict[str, Any] | None:
    pool = twin.pool(pool_id)
    return pool if pool["last_operation"]["status"] == "OPERATION_SUCCESSFUL" else None


def test_add_disk_by_percentage_adds_whole_drives(plane: KubeControlPlane, twin: StorageTwinClient) -> None:
    (pool,) = twin.pools()
    started = twin.resize_pool(uuid=pool["uuid"], percentage=50, operation_type="RESIZE_TYPE_ADD_DISK")
    assert started["last_operation"]["status"] == "OPERATION_IN_PROGRESS"
    assert started["total_size"] == 3 * TI
    done = eventually(lambda: resize_done(twin, pool["uuid"]), timeout=15, what="add-disk resize done")
    # 50% of 3Ti is 1.5Ti: two more drives of 1Ti.
    assert (done["drive_count"], done["drive_size"], done["total_size"]) == (5, TI, 5 * TI)
    assert done["last_operation"]["params"]["operation_type"] == "RESIZE_TYPE_ADD_DISK"
    assert pool_metric(twin, "px_pool_stats_total_bytes", plane.node_names[0]) == 5 * TI


def test_resize_disk_by_percentage_grows_every_drive(plane: KubeControlPlane, twin: StorageTwinClient) -> None:
    (pool,) = twin.pools()
    twin.resize_pool(uuid=pool["uuid"], percentage=10, operation_type="RESIZE_TYPE_RESIZE_DISK")
    done = eventually(lambda: resize_done(twin, pool["uuid"]), timeout=15, what="resize-disk resize done")
    # 10% of 5Ti over 5 drives is 102.4Gi each, rounded up to 103Gi: 5 x 1127Gi.
    assert (done["drive_count"], done["drive_size"], done["total_size"]) == (5, 1127 * GI, 5635 * GI)
    text = twin.metrics_text()  # one scrape: the pool's ingest goes on between two
    available = metric(text, "px_pool_stats_available_bytes", node=plane.node_names[0], pool="0")
    used = metric(text, "px_pool_stats_used_bytes", node=plane.node_names[0], pool="0")
    assert available is not None and used is not None
    assert available + used == 5635 * GI


def test_bad_resize_requests_get_a_clear_error(twin: StorageTwinClient) -> None:
    (pool,) = twin.pools()
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"size": 2 * TI}, 400, "refusing to shrink"),
        ({"size": 5635 * GI}, 400, "adds nothing"),
        ({"size": 6 * TI, "percentage": 10}, 400, "exactly one of 'size'"),
        ({}, 400, "exactly one of 'size'"),
        ({"percentage": 10, "operation_type": "RESIZE_TYPE_SHRINK"}, 400, "unknown operation_type"),
    ]
    for kwargs, status, message in cases:
        with pytest.raises(StorageTwinError) as refused:
            twin.resize_pool(uuid=pool["uuid"], **kwargs)
        assert refused.value.status == status, kwargs
        assert message in refused.value.message, kwargs
    with pytest.raises(StorageTwinError) as missing:
        twin.resize_pool(uuid="no-such-pool", percentage=10)
    assert missing.value.status == 404
    twin.resize_pool(uuid=pool["uuid"], size=6 * TI)
    with pytest.raises(StorageTwinError) as busy:
        twin.resize_pool(uuid=pool["uuid"], percentage=10)
    assert busy.value.status == 409
    assert "already being resized" in busy.value.message
    done = eventually(lambda: resize_done(twin, pool["uuid"]), timeout=15, what="auto resize done")
    # AUTO with no drive limit adds drives: 6Ti - 5635Gi = 509Gi needs one more drive of 1127Gi.
    assert (done["drive_count"], done["total_size"]) == (6, 6 * 1127 * GI)
    assert twin.pool(pool["uuid"])["total_size"] == 6 * 1127 * GI


def test_a_restarted_twin_resumes_its_state(plane: KubeControlPlane, run_dir: Path, twin: StorageTwinClient) -> None:
    (pool,) = twin.pools()
    before = volume_metric(twin, "kubelet_volume_stats_used_bytes")
    assert before is not None
    port = int(twin.base_url.rsplit(":", 1)[1])
    stop_storage_twin(run_dir=run_dir)
    assert not port_is_open(port)
    time.sleep(1.0)
    start_storage_twin(
        kubeconfig=plane.kubeconfig_path,
        run_dir=run_dir,
        port=port,
        resize_delay=RESIZE_DELAY,
        node_resize_delay=NODE_RESIZE_DELAY,
        ttl_seconds=1800,
    )
    after = eventually(
        lambda: volume_metric(twin, "kubelet_volume_stats_used_bytes"), timeout=15, what="metrics after restart"
    )
    assert after > before + INGEST  # the ingest went on, also while the twin was down
    assert volume_metric(twin, "kubelet_volume_stats_capacity_bytes") == 800 * GI
    resumed = twin.pool(pool["uuid"])
    assert (resumed["total_size"], resumed["drive_count"]) == (pool["total_size"], pool["drive_count"])
    assert resumed["ingest_bytes_per_second"] == GI


def test_the_twin_rides_out_an_apiserver_restart(plane: KubeControlPlane, twin: StorageTwinClient) -> None:
    plane.stop_apiserver()
    error = eventually(
        lambda: twin.healthz()["kube_api_error"], timeout=30, what="the twin notices the apiserver is gone"
    )
    print(f"twin while the apiserver is down: {error}")
    assert volume_metric(twin, "px_volume_capacity_bytes") == 800 * GI  # served from what it saw last
    plane.start_apiserver()
    eventually(lambda: twin.healthz()["kube_api_error"] is None, timeout=60, what="the twin syncing again")


def test_a_deleted_claims_volume_is_deleted_by_the_twin(api: KubeApi) -> None:
    volume = claim(api, FIXED_PVC)["spec"]["volumeName"]
    api.delete(f"{PVCS}/{FIXED_PVC}")

    def gone() -> bool:
        status, _ = api.request("GET", f"/api/v1/persistentvolumes/{volume}")
        return status == 404

    assert eventually(gone, timeout=60, what=f"{volume} deleted")


def test_stop_leaves_no_process_and_no_port(plane: KubeControlPlane, run_dir: Path, twin: StorageTwinClient) -> None:
    daemon = daemon_from_pid_file(name=DAEMON_NAME, run_dir=run_dir)
    assert daemon is not None and daemon.is_running()
    port = int(twin.base_url.rsplit(":", 1)[1])
    kube_daemons = plane.daemons()
    kube_ports = plane.ports()
    stop_storage_twin(run_dir=run_dir)
    plane.stop()
    assert not pid_is_running(daemon.pid)
    assert not port_is_open(port)
    assert not any(pid_is_running(d.pid) for d in kube_daemons.values())
    assert not [name for name, kube_port in kube_ports.items() if port_is_open(kube_port)]
    assert not _processes_mentioning(run_dir, plane.work_dir)


def _processes_mentioning(*paths: Path) -> list[str]:
    """Command lines of live processes that mention one of the paths (every daemon's flags do)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(str(path) in command for path in paths):
            found.append(command)
    return found
