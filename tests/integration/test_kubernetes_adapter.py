"""The Kubernetes adapter against the real sandbox: reads, writes, Events, errors, a watch cache refused
for good (403) that serves once its role is granted, and watches that survive an apiserver restart and
an expired resourceVersion.

One sandbox for the module (about 40 s to bring up). Tests run in file order and each undoes what
it changed, except the PVC resize (data-kafka-0 stays at 800Gi) and the apiserver restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from agent import __version__
from agent.adapters.clock import WallClock
from agent.adapters.kubernetes import (
    USER_AGENT,
    ConflictError,
    EventTarget,
    KubeClient,
    KubeError,
    NotFoundError,
    PodInfo,
    PvcInfo,
    WatchEvent,
    connect,
)
from agent.adapters.kubernetes import client as kubernetes_client
from agent.adapters.kubernetes.cache import FAILED_WATCH_RETRY, WatchCache
from agent.core.quantity import GIB
from sandbox import workload
from sandbox.environment import Sandbox
from sandbox.kube import KubeApi

pytestmark = pytest.mark.sandbox

T = TypeVar("T")
PROBE_LABEL = "kafka-autopilot.io/adapter-probe"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
restarts: list[float] = []
"""Seconds each apiserver restart of this module took (a restart empties the apiserver's watch cache)."""


@pytest.fixture
async def kube(sandbox: Sandbox) -> AsyncIterator[KubeClient]:
    client = await connect(kubeconfig=sandbox.kube.kubeconfig_path, clock=WallClock())
    try:
        yield client
    finally:
        await client.close()


async def admin(sandbox: Sandbox, call: Callable[[KubeApi], T]) -> T:
    """Set up or inspect with the sandbox's own (synchronous) admin client, off the event loop."""
    return await asyncio.to_thread(lambda: call(sandbox.kube.api()))


async def eventually(check: Callable[[], Awaitable[T | None]], *, timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await check()
        except Exception as error:  # not there yet
            last = error
        else:
            if last:
                return last  # type: ignore[no-any-return]
        await asyncio.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {last!r})")


def audit_entries(sandbox: Sandbox, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    entries = []
    for line in sandbox.kube.audit_log_path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if predicate(entry):
                entries.append(entry)
    return entries


async def restart_apiserver(sandbox: Sandbox) -> None:
    started = time.monotonic()
    await asyncio.to_thread(sandbox.kube.stop_apiserver)
    await asyncio.to_thread(sandbox.kube.start_apiserver)
    restarts.append(time.monotonic() - started)


async def label_node(sandbox: Sandbox, node: str, value: str | None) -> None:
    await admin(
        sandbox, lambda api: api.merge_patch(f"/api/v1/nodes/{node}", {"metadata": {"labels": {PROBE_LABEL: value}}})
    )


async def next_event(events: AsyncIterator[WatchEvent], *, timeout: float) -> WatchEvent:
    return await asyncio.wait_for(anext(events), timeout)


async def spare_node(kube: KubeClient) -> str:
    """A node without a Kafka pod, so cordons and taints there disturb no broker."""
    used = {pod.node for pod in await kube.list_pods(namespace=workload.NAMESPACE)}
    return sorted(node.name for node in await kube.list_nodes() if node.name not in used)[0]


# --- reads ------------------------------------------------------------------------------------------


async def test_list_pvcs_returns_the_four_kafka_volumes_at_400gi(kube: KubeClient) -> None:
    pvcs = {pvc.name: pvc for pvc in await kube.list_pvcs() if pvc.namespace == workload.NAMESPACE}
    assert sorted(pvcs) == [f"data-kafka-{broker}" for broker in range(4)]
    for pvc in pvcs.values():
        assert pvc.requested_bytes == 400 * GIB, pvc
        assert pvc.capacity_bytes == 400 * GIB, pvc
        assert pvc.storage_class == workload.STORAGE_CLASS
        assert pvc.phase == "Bound"
        assert pvc.volume_name
        assert pvc.labels == {"app": "kafka"}
        assert pvc.controller is None  # the StatefulSet does not own its claims
    assert [pvc.name for pvc in await kube.list_pvcs(namespace="default")] == []


async def test_nodes_leases_pods_namespaces_and_storage_class_read_back_typed(kube: KubeClient) -> None:
    nodes = await kube.list_nodes()
    assert len(nodes) == 5
    assert all(node.ready == "True" and node.ready_since and node.uid for node in nodes), nodes
    renewed = await kube.node_lease_renew_times()
    assert set(renewed) == {node.name for node in nodes}
    assert all(time.time() - when < 60 for when in renewed.values()), renewed

    pods = await kube.list_pods(namespace=workload.NAMESPACE, label_selector="app=kafka")
    assert sorted(pod.name for pod in pods) == [workload.pod_name(broker) for broker in range(4)]
    for pod in pods:
        assert (pod.owner_kind, pod.owner_name) == ("StatefulSet", workload.STATEFULSET)
        assert pod.node in {node.name for node in nodes}
        assert pod.phase == "Running" and not pod.deleting and pod.uid
    assert await kube.list_pods(label_selector="app=no-such-app") == []

    labels = await kube.namespace_labels()
    assert labels[workload.NAMESPACE]["team"] == "kafka"
    assert "kube-node-lease" in labels

    storage_class = await kube.storage_class(workload.STORAGE_CLASS)
    assert storage_class.provisioner == workload.TWIN_PROVISIONER
    assert storage_class.allow_volume_expansion is True


async def test_volume_attachments_are_listed_and_deleted_once(sandbox: Sandbox, kube: KubeClient) -> None:
    name = f"probe-{uuid.uuid4().hex[:8]}"
    manifest = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "VolumeAttachment",
        "metadata": {"name": name},
        "spec": {
            "attacher": "storage-twin.kafka-autopilot.io",
            "nodeName": "kwok-node-1",
            "source": {"persistentVolumeName": "pv-probe"},
        },
    }
    await admin(sandbox, lambda api: api.create("/apis/storage.k8s.io/v1/volumeattachments", manifest))
    found = {attachment.name: attachment for attachment in await kube.list_volume_attachments()}
    assert found[name].node == "kwok-node-1"
    assert found[name].pv == "pv-probe"
    assert found[name].attached is False
    assert await kube.delete_volume_attachment(name) is True
    assert await kube.delete_volume_attachment(name) is False
    assert name not in {attachment.name for attachment in await kube.list_volume_attachments()}


async def test_every_request_carries_the_agent_user_agent_in_the_audit_log(sandbox: Sandbox, kube: KubeClient) -> None:
    probe = f"ua-probe-{uuid.uuid4().hex[:8]}"
    with pytest.raises(NotFoundError) as missing:
        await kube.storage_class(probe)
    assert str(missing.value).startswith(f"kube-apiserver {kube.server}: GET storageclasses {probe}: 404 Not Found")
    await kube.list_pvcs(namespace=workload.NAMESPACE)

    def ours(entry: dict[str, Any]) -> bool:
        return bool(entry.get("objectRef", {}).get("name") == probe)

    entries = await eventually(
        lambda: asyncio.to_thread(audit_entries, sandbox, ours), timeout=10, what="the probe in the audit log"
    )
    assert {entry["userAgent"] for entry in entries} == {USER_AGENT}
    assert f"kafka-autopilot/{__version__}" == USER_AGENT
    pvc_lists = await asyncio.to_thread(
        audit_entries,
        sandbox,
        lambda entry: (
            entry.get("verb") == "list"
            and entry.get("objectRef", {}).get("resource") == "persistentvolumeclaims"
            and entry.get("userAgent") == USER_AGENT
        ),
    )
    assert pvc_lists, "the PVC list is not recorded with the agent's User-Agent"
    others = await asyncio.to_thread(audit_entries, sandbox, lambda entry: entry.get("userAgent") != USER_AGENT)
    assert others, "the audit log should also hold other clients' requests, told apart by their User-Agent"


# --- writes -----------------------------------------------------------------------------------------


async def test_resize_pvc_is_one_patch_and_the_capacity_follows(sandbox: Sandbox, kube: KubeClient) -> None:
    name = workload.pvc_name(0)
    annotations = {"kafka-autopilot.io/resize-in-flight": "800Gi", "kafka-autopilot.io/resize-rule": "kafka-resize"}
    written = await kube.resize_pvc(
        namespace=workload.NAMESPACE, name=name, new_bytes=800 * GIB, annotations=annotations
    )
    assert written.requested_bytes == 800 * GIB
    assert {key: written.annotations[key] for key in annotations} == annotations

    async def resized() -> int | None:
        capacity = (await kube.get_pvc(namespace=workload.NAMESPACE, name=name)).capacity_bytes
        return capacity if capacity == 800 * GIB else None

    started = time.monotonic()
    await eventually(resized, timeout=90, what="the storage twin growing data-kafka-0 to 800Gi")
    print(f"capacity followed the resize in {time.monotonic() - started:.1f}s")

    patches = await asyncio.to_thread(
        audit_entries,
        sandbox,
        lambda entry: (
            entry.get("verb") == "patch"
            and entry.get("userAgent") == USER_AGENT
            and entry.get("objectRef", {}).get("name") == name
        ),
    )
    assert len(patches) == 1, "size and annotations should travel in one patch"
    body = patches[0]["requestObject"]
    assert body["spec"]["resources"]["requests"]["storage"] == "800Gi"
    assert body["metadata"]["annotations"] == annotations

    again = await kube.resize_pvc(namespace=workload.NAMESPACE, name=name, new_bytes=800 * GIB, annotations={})
    assert again.requested_bytes == 800 * GIB
    with pytest.raises(KubeError) as shrink:
        await kube.resize_pvc(namespace=workload.NAMESPACE, name=name, new_bytes=400 * GIB, annotations={})
    assert shrink.value.status == 422
    assert not shrink.value.temporary
    assert f"PATCH persistentvolumeclaims {workload.NAMESPACE}/{name}: 422" in str(shrink.value)

    await kube.annotate_pvc(
        namespace=workload.NAMESPACE, name=name, annotations={"kafka-autopilot.io/resize-in-flight": None}
    )
    cleared = await kube.get_pvc(namespace=workload.NAMESPACE, name=name)
    assert "kafka-autopilot.io/resize-in-flight" not in cleared.annotations
    assert cleared.annotations["kafka-autopilot.io/resize-rule"] == "kafka-resize"


async def test_cordon_and_taint_show_on_the_node_without_duplicates(sandbox: Sandbox, kube: KubeClient) -> None:
    node = await spare_node(kube)
    key = "kafka-autopilot.io/remediating"
    try:
        assert (await kube.cordon_node(node)).unschedulable is True
        assert (await kube.cordon_node(node)).unschedulable is True

        async def controller_tainted() -> bool:
            return any(taint.key == UNSCHEDULABLE for taint in (await kube.get_node(node)).taints)

        # The node-lifecycle controller answers a cordon with a taint of its own; ours must keep it.
        await eventually(controller_tainted, timeout=30, what="the controller's unschedulable taint")
        assert await kube.taint_node(name=node, key=key, value="node-failure", effect="NoSchedule") is True
        assert await kube.taint_node(name=node, key=key, value="node-failure", effect="NoSchedule") is False
        assert await kube.taint_node(name=node, key="other", value=None, effect="PreferNoSchedule") is True
        assert await kube.taint_node(name=node, key=key, value="resync", effect="NoSchedule") is True
        seen = await kube.get_node(node)
        assert seen.unschedulable is True
        assert [(taint.key, taint.value, taint.effect) for taint in seen.taints] == [
            (UNSCHEDULABLE, None, "NoSchedule"),
            (key, "resync", "NoSchedule"),
            ("other", None, "PreferNoSchedule"),
        ]
    finally:
        await admin(
            sandbox,
            lambda api: api.merge_patch(f"/api/v1/nodes/{node}", {"spec": {"unschedulable": None, "taints": None}}),
        )

    async def untainted() -> bool:
        return (await kube.get_node(node)).taints == ()

    await eventually(untainted, timeout=30, what="the node without taints again")


async def test_force_delete_pod_only_deletes_the_pod_with_that_uid(sandbox: Sandbox, kube: KubeClient) -> None:
    name = f"probe-{uuid.uuid4().hex[:8]}"
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": "kwok-node-1", "containers": [{"name": "c", "image": "sandbox/none"}]},
    }

    async def create() -> str:
        created = await admin(sandbox, lambda api: api.create("/api/v1/namespaces/default/pods", manifest))
        return str(created["metadata"]["uid"])

    first = await create()
    with pytest.raises(ConflictError) as wrong:
        await kube.force_delete_pod(namespace="default", name=name, uid=str(uuid.uuid4()))
    assert wrong.value.status == 409
    assert f"DELETE pods default/{name}: 409 Conflict" in str(wrong.value)
    assert isinstance(wrong.value.__cause__, ApiException)
    assert (await kube.get_pod(namespace="default", name=name)).uid == first

    assert await kube.force_delete_pod(namespace="default", name=name, uid=first) is True
    with pytest.raises(NotFoundError):
        await kube.get_pod(namespace="default", name=name)

    second = await create()  # recreated under the same name: the old uid must not delete it
    assert second != first
    with pytest.raises(ConflictError):
        await kube.force_delete_pod(namespace="default", name=name, uid=first)
    assert (await kube.get_pod(namespace="default", name=name)).uid == second
    assert await kube.force_delete_pod(namespace="default", name=name, uid=second) is True
    assert await kube.force_delete_pod(namespace="default", name=name, uid=second) is False


async def test_emit_event_writes_events_k8s_io_events_that_read_back(sandbox: Sandbox, kube: KubeClient) -> None:
    pvc = await kube.get_pvc(namespace=workload.NAMESPACE, name=workload.pvc_name(1))
    node = (await kube.list_nodes())[0]
    for target, namespace in ((EventTarget.of_pvc(pvc), workload.NAMESPACE), (EventTarget.of_node(node), "default")):
        name = await kube.emit_event(
            involved=target, reason="ResizeDeclined", message="at maxsize 1Ti", type_="Warning", action="Resize"
        )
        path = f"/apis/events.k8s.io/v1/namespaces/{namespace}/events/{name}"
        event = await asyncio.to_thread(sandbox.kube.api().get, path)
        assert event["reportingController"] == "kafka-autopilot.io/agent"
        assert event["reportingInstance"]
        assert (event["reason"], event["note"], event["type"], event["action"]) == (
            "ResizeDeclined",
            "at maxsize 1Ti",
            "Warning",
            "Resize",
        )
        assert event["regarding"]["kind"] == target.kind
        assert event["regarding"]["name"] == target.name
        assert event["regarding"]["uid"] == target.uid


# --- errors -----------------------------------------------------------------------------------------


async def in_cluster_as_the_default_service_account(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Make `connect()` without a kubeconfig connect as a pod of default/default would (its token and CA
    files, KUBERNETES_SERVICE_*): an identity with no role at all."""
    token_request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 600},
    }
    issued = await admin(
        sandbox, lambda api: api.create("/api/v1/namespaces/default/serviceaccounts/default/token", token_request)
    )
    (tmp_path / "token").write_text(issued["status"]["token"])
    shutil.copy(sandbox.kube.pki_dir / "ca.crt", tmp_path / "ca.crt")
    monkeypatch.setattr(kubernetes_client, "SERVICE_ACCOUNT_DIR", tmp_path)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(sandbox.kube.state.apiserver_port))


async def test_in_cluster_service_account_refused_is_a_permanent_error_naming_everything(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await in_cluster_as_the_default_service_account(sandbox, tmp_path, monkeypatch)
    async with await connect(clock=WallClock()) as in_cluster:
        assert in_cluster.server == sandbox.kube.apiserver_url
        with pytest.raises(KubeError) as refused:
            await in_cluster.cordon_node("kwok-node-0")
    error = refused.value
    assert not error.temporary
    assert (error.status, error.reason, error.verb, error.resource, error.name) == (
        403,
        "Forbidden",
        "PATCH",
        "nodes",
        "kwok-node-0",
    )
    assert str(error).startswith(
        f"kube-apiserver {sandbox.kube.apiserver_url}: PATCH nodes kwok-node-0: 403 Forbidden: "
    )
    assert "system:serviceaccount:default:default" in str(error)
    assert isinstance(error.__cause__, ApiException) and error.__cause__.status == 403


async def test_a_watch_cache_refused_for_good_serves_once_its_role_is_granted_without_a_restart(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await in_cluster_as_the_default_service_account(sandbox, tmp_path, monkeypatch)
    name = "kafka-autopilot-adapter-probe-list-pvcs"
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": [{"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["list", "watch"]}],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}],
    }

    def grant(api: KubeApi) -> None:
        api.create("/apis/rbac.authorization.k8s.io/v1/clusterroles", role)
        api.create("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding)

    def revoke(api: KubeApi) -> None:
        for kind in ("clusterrolebindings", "clusterroles"):
            with contextlib.suppress(Exception):
                api.delete(f"/apis/rbac.authorization.k8s.io/v1/{kind}/{name}")

    async with await connect(clock=WallClock()) as in_cluster:
        claims: WatchCache[PvcInfo] = WatchCache(source=in_cluster, kind="pvcs", decode=PvcInfo.from_raw)
        following = asyncio.create_task(claims.run())
        try:

            async def refused() -> KubeError | None:
                return claims.failure

            failure = await eventually(refused, timeout=30, what="the watch refused")
            assert (failure.status, failure.temporary) == (403, False)
            assert claims.problem is not None and "403 Forbidden" in claims.problem
            await admin(sandbox, grant)
            granted_at = time.monotonic()

            async def served() -> bool:
                return claims.synced

            await eventually(served, timeout=30, what="the claims listed after the grant")
            served_after = time.monotonic() - granted_at
            cached = {f"{claim.namespace}/{claim.name}" for claim in claims.records()}
            listed = await admin(sandbox, lambda api: api.get("/api/v1/persistentvolumeclaims")["items"])
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
            await admin(sandbox, revoke)
    assert cached == {f"{claim['metadata']['namespace']}/{claim['metadata']['name']}" for claim in listed}
    assert {f"{workload.NAMESPACE}/data-kafka-{broker}" for broker in range(4)} <= cached
    assert served_after < 2 * FAILED_WATCH_RETRY.base_seconds + 2, "served at its first or second try again"


# --- watches ----------------------------------------------------------------------------------------


async def test_watch_lists_first_and_refuses_a_namespace_for_nodes(kube: KubeClient) -> None:
    async with contextlib.aclosing(kube.watch("pvcs", namespace=workload.NAMESPACE)) as events:
        first = [await next_event(events, timeout=10) for _ in range(4)]
    assert {(event.type, event.namespace) for event in first} == {("ADDED", workload.NAMESPACE)}
    assert sorted(event.object_name for event in first) == [workload.pvc_name(broker) for broker in range(4)]

    async with contextlib.aclosing(kube.watch("pods", namespace=workload.NAMESPACE)) as events:
        pods = [await next_event(events, timeout=10) for _ in range(4)]
    assert sorted(PodInfo.from_raw(event.raw).name for event in pods) == [workload.pod_name(b) for b in range(4)]

    async with contextlib.aclosing(kube.watch("leases", namespace="kube-node-lease")) as events:
        changes = [await next_event(events, timeout=30) for _ in range(6)]
    assert [event.type for event in changes[:5]] == ["ADDED"] * 5
    assert changes[5].type == "MODIFIED"  # kwok renews every node's Lease every few seconds

    with pytest.raises(ValueError, match="cluster-scoped"):
        await anext(kube.watch("nodes", namespace="default"))


async def test_a_watch_lists_page_by_page_then_says_synced(
    sandbox: Sandbox, kube: KubeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first list comes in pages (2 objects a page here, 500 by default): every object once, as
    ADDED, then SYNCED; the apiserver saw one request per page, each with the page's limit."""
    monkeypatch.setattr(kubernetes_client, "LIST_PAGE_SIZE", 2)
    since = time.time()
    async with contextlib.aclosing(kube.watch("nodes", synced_event=True)) as events:
        listed = []
        while not listed or listed[-1].type != "SYNCED":
            listed.append(await next_event(events, timeout=10))
    assert [event.type for event in listed[:-1]] == ["ADDED"] * len(sandbox.kube.node_names)
    assert sorted(event.object_name for event in listed[:-1]) == sorted(sandbox.kube.node_names)

    def paged_list(entry: dict[str, Any]) -> bool:
        uri = str(entry.get("requestURI", ""))
        return (
            entry.get("verb") == "list"
            and entry.get("objectRef", {}).get("resource") == "nodes"
            and "limit=2" in uri
            and entry.get("stage") == "ResponseComplete"
            and datetime.fromisoformat(entry["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp() >= since
        )

    pages = await asyncio.to_thread(audit_entries, sandbox, paged_list)
    assert len(pages) == -(-len(sandbox.kube.node_names) // 2), [entry["requestURI"] for entry in pages]
    assert sum("continue=" in entry["requestURI"] for entry in pages) == len(pages) - 1


async def test_watch_survives_an_apiserver_restart(sandbox: Sandbox) -> None:
    delays: list[float] = []

    class RecordingClock(WallClock):
        """The wall clock, noting every pause (a watch pauses with `wait`, cut short by close())."""

        async def sleep(self, seconds: float) -> None:
            delays.append(seconds)
            await super().sleep(seconds)

        async def wait(self, event: asyncio.Event, *, timeout: float) -> bool:
            delays.append(timeout)
            return await super().wait(event, timeout=timeout)

    client = await connect(kubeconfig=sandbox.kube.kubeconfig_path, clock=RecordingClock())
    received: list[WatchEvent] = []
    stamp = uuid.uuid4().hex[:12]

    async def consume() -> None:
        async for event in client.watch("nodes"):
            received.append(event)

    consumer = asyncio.create_task(consume())
    try:
        await eventually(lambda: asyncio.sleep(0, len(received) >= 5), timeout=15, what="the initial node list")
        await asyncio.to_thread(sandbox.kube.stop_apiserver)
        stopped_at = len(received)
        with pytest.raises(KubeError) as unreachable:
            await client.list_nodes()
        assert unreachable.value.temporary
        assert str(unreachable.value).startswith(f"kube-apiserver {sandbox.kube.apiserver_url}: GET nodes: no answer")
        assert unreachable.value.status is None
        await asyncio.sleep(3)  # the watch keeps trying, backing off
        started = time.monotonic()
        await asyncio.to_thread(sandbox.kube.start_apiserver)
        restarts.append(time.monotonic() - started)

        await label_node(sandbox, "kwok-node-2", stamp)

        def labelled() -> bool:
            return any(
                event.type == "MODIFIED"
                and event.object_name == "kwok-node-2"
                and event.raw["metadata"]["labels"].get(PROBE_LABEL) == stamp
                for event in received[stopped_at:]
            )

        await eventually(lambda: asyncio.sleep(0, labelled()), timeout=60, what="the label change after the restart")
        after = [event.type for event in received[stopped_at:]]
        print(f"events after the restart: {after}; backoff delays: {delays}")
        assert delays, "the watch should have backed off with the injected sleep"
        reconnect = kubernetes_client.WATCH_RECONNECT
        assert max(delays) <= reconnect.max_seconds + reconnect.jitter_seconds
        assert not consumer.done(), "the watch must not end or raise on temporary errors"
    finally:
        await client.close()
        await asyncio.wait_for(consumer, 10)  # close() ends the watch
        await label_node(sandbox, "kwok-node-2", None)
        await asyncio.to_thread(sandbox.kube.wait_for_ready_nodes, timeout_seconds=90)
    watches = await asyncio.to_thread(
        audit_entries,
        sandbox,
        lambda entry: entry.get("verb") == "watch" and entry.get("objectRef", {}).get("resource") == "nodes",
    )
    assert USER_AGENT in {entry["userAgent"] for entry in watches}


async def test_watch_from_an_expired_resource_version_lists_again_and_resyncs(
    sandbox: Sandbox, kube: KubeClient
) -> None:
    if not restarts:  # run alone: a fresh apiserver still holds the whole history in its watch cache
        await restart_apiserver(sandbox)
        await asyncio.to_thread(sandbox.kube.wait_for_ready_nodes, timeout_seconds=90)
    stamp = uuid.uuid4().hex[:12]
    async with contextlib.aclosing(kube.watch("nodes", resource_version="1")) as events:
        resync = await next_event(events, timeout=30)
        assert resync.type == "RESYNC"
        assert resync.object_name == ""
        assert sorted(item["metadata"]["name"] for item in resync.raw["items"]) == list(sandbox.kube.node_names)
        await label_node(sandbox, "kwok-node-3", stamp)
        while True:
            event = await next_event(events, timeout=30)
            if event.object_name == "kwok-node-3" and event.raw["metadata"]["labels"].get(PROBE_LABEL) == stamp:
                break
        assert event.type == "MODIFIED"
    await label_node(sandbox, "kwok-node-3", None)
