"""The storage twin's pure parts for volume attachment and its initial pools: the external attacher's
decisions, the CSIDriver it registers, the pools every storage node starts with, and the bridge's
wait for a pod's volumes to be attached (as a kubelet waits)."""

from __future__ import annotations

from typing import Any

from sandbox.bridge import volumes_attached
from sandbox.kube import CONTROLLER_MANAGED_ATTACH_DETACH, CONTROLLERS, _node_manifest
from sandbox.storage_twin import (
    INITIAL_POOL_LABELS,
    AttacherMove,
    TwinState,
    attacher_finalizer,
    attacher_step,
    csi_driver_manifest,
    csi_driver_name,
)

DRIVER = csi_driver_name("kafka-autopilot.io/storage-twin")
FINALIZER = attacher_finalizer(DRIVER)


def attachment(
    *,
    driver: str = DRIVER,
    finalizers: list[str] | None = None,
    attached: bool | None = None,
    deleting: bool = False,
    pv: str | None = "pvc-1",
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "csi-abc", "resourceVersion": "7"}
    if finalizers is not None:
        meta["finalizers"] = finalizers
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    source = {"persistentVolumeName": pv} if pv else {"inlineVolumeSpec": {}}
    found: dict[str, Any] = {
        "metadata": meta,
        "spec": {"attacher": driver, "nodeName": "kwok-node-1", "source": source},
    }
    if attached is not None:
        found["status"] = {"attached": attached}
    return found


def test_driver_name_and_finalizer_follow_csi_attacher() -> None:
    assert DRIVER == "storage-twin.kafka-autopilot.io"
    assert FINALIZER == "external-attacher/storage-twin.kafka-autopilot.io"


def test_the_registered_driver_requires_attachment() -> None:
    manifest = csi_driver_manifest(DRIVER)
    assert manifest["kind"] == "CSIDriver"
    assert manifest["apiVersion"] == "storage.k8s.io/v1"
    assert manifest["metadata"]["name"] == DRIVER
    assert manifest["spec"]["attachRequired"] is True


def test_a_new_attachment_gets_the_finalizer_then_attached_true() -> None:
    step = attacher_step(attachment(), driver=DRIVER)
    assert step is not None
    assert step.move is AttacherMove.ATTACH
    assert step.finalizers == (FINALIZER,)
    assert step.resource_version == "7"
    assert step.status["attached"] is True
    assert step.status["attachmentMetadata"]["devicePath"] == "/dev/twin/pvc-1"


def test_other_finalizers_are_kept_and_ours_is_not_added_twice() -> None:
    step = attacher_step(attachment(finalizers=["other"]), driver=DRIVER)
    assert step is not None and step.finalizers == ("other", FINALIZER)
    again = attacher_step(attachment(finalizers=[FINALIZER], attached=False), driver=DRIVER)
    assert again is not None and again.finalizers is None and again.status["attached"] is True


def test_an_attached_attachment_needs_nothing() -> None:
    assert attacher_step(attachment(finalizers=[FINALIZER], attached=True), driver=DRIVER) is None


def test_another_drivers_attachment_is_left_alone() -> None:
    assert attacher_step(attachment(driver="ebs.csi.aws.com"), driver=DRIVER) is None
    assert attacher_step(attachment(driver="ebs.csi.aws.com", deleting=True, finalizers=["x"]), driver=DRIVER) is None


def test_a_deleted_attachment_is_detached_and_lets_go() -> None:
    step = attacher_step(attachment(finalizers=["other", FINALIZER], attached=True, deleting=True), driver=DRIVER)
    assert step is not None
    assert step.move is AttacherMove.DETACH
    assert step.finalizers == ("other",)
    assert step.status["attached"] is False
    assert attacher_step(attachment(finalizers=["other"], deleting=True), driver=DRIVER) is None


def test_an_inline_volume_is_refused_once_with_an_attach_error() -> None:
    step = attacher_step(attachment(pv=None), driver=DRIVER)
    assert step is not None and step.finalizers is None
    assert "inline" in step.status["attachError"]["message"]
    refused = attachment(pv=None)
    refused["status"] = {"attached": False, "attachError": step.status["attachError"]}
    assert attacher_step(refused, driver=DRIVER) is None


def test_storage_nodes_start_with_a_pool_the_shipped_rule_watches_but_does_not_expand() -> None:
    state = TwinState(path=None, clock=lambda: 100.0)
    seeded = state.seed_pools(["n1", "n2", "n1"])
    assert [pool.node for pool in seeded] == ["n1", "n2"]
    for pool in seeded:
        assert dict(pool.labels) == INITIAL_POOL_LABELS
        fraction = pool.usage.used_at(100.0, capacity=pool.total) / pool.total
        assert 0.2 <= fraction < 0.7, "the rule fires past 70%"
        assert pool.usage.bytes_per_second == 0


def test_a_node_with_pools_keeps_them() -> None:
    state = TwinState(path=None, clock=lambda: 100.0)
    state.define_pool(node="n1", name="own", drives=1, drive_size=10, used_bytes=0, max_drives=None)
    assert [pool.node for pool in state.seed_pools(["n1", "n2"])] == ["n2"]
    assert sorted(pool.name for pool in state.pools.values() if pool.node == "n1") == ["own"]


def test_kwok_nodes_let_the_attach_detach_controller_manage_them() -> None:
    assert "persistentvolume-attach-detach-controller" in CONTROLLERS
    annotations = _node_manifest(name="kwok-node-0", index=0)["metadata"]["annotations"]
    assert annotations[CONTROLLER_MANAGED_ATTACH_DETACH] == "true"


def pod(*claims: str, node: str = "n1") -> dict[str, Any]:
    volumes = [{"name": c, "persistentVolumeClaim": {"claimName": c}} for c in claims]
    return {"metadata": {"name": "kafka-0"}, "spec": {"nodeName": node, "volumes": [*volumes, {"name": "tmp"}]}}


CLAIMS = {"items": [{"metadata": {"name": "data-kafka-0"}, "spec": {"volumeName": "pv-0"}}]}


def attachments(*found: tuple[str, str, bool, bool]) -> dict[str, Any]:
    items = []
    for pv, node, attached, deleting in found:
        meta: dict[str, Any] = {"name": f"csi-{pv}-{node}"}
        if deleting:
            meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        items.append(
            {
                "metadata": meta,
                "spec": {"nodeName": node, "source": {"persistentVolumeName": pv}},
                "status": {"attached": attached},
            }
        )
    return {"items": items}


def test_a_broker_waits_for_its_volume_attached_to_its_own_node() -> None:
    ready = attachments(("pv-0", "n1", True, False))
    assert volumes_attached(pod("data-kafka-0"), claims=CLAIMS, attachments=ready)
    assert not volumes_attached(pod("data-kafka-0", node="n2"), claims=CLAIMS, attachments=ready)
    assert not volumes_attached(
        pod("data-kafka-0"), claims=CLAIMS, attachments=attachments(("pv-0", "n1", False, False))
    )
    assert not volumes_attached(pod("data-kafka-0"), claims=CLAIMS, attachments=attachments(("pv-0", "n1", True, True)))
    assert not volumes_attached(pod("data-kafka-0"), claims={"items": []}, attachments=ready)
    assert volumes_attached(pod(), claims={"items": []}, attachments={"items": []}), "no claim, nothing to wait for"
