"""In-memory stand-ins for everything the shell talks to, so executors and the runtime loop run in milliseconds.

Each fake is a small model of one external system with the same semantics as the real adapter's
docstring promises (idempotent writes stay idempotent, a uid precondition still fails, a conflict is
still raised), plus a few scripted behaviours for tests: "the resize completes after N sleeps",
"never completes", "the next call raises". Reads return the real adapters' frozen dataclasses
(`PvcInfo`, `NodeInfo`, `StoragePool`, `ClusterView`, `Approval`, ...), so an executor reads exactly
what it reads in production. Every write is counted, so a test can assert that nothing happened twice.

| fake               | stands for (Protocols it satisfies, checked by mypy at the bottom of this file)          |
|--------------------|------------------------------------------------------------------------------------------|
| FakeClock          | agent.adapters.clock.Clock                                                               |
| FakeCluster        | resize.VolumeReader, reschedule.NodeReader, mutations.ClusterWriter, runtime Inventory   |
| FakeKafka          | rebalance.KafkaViewer, reschedule.KafkaViewer, mutations.KafkaWriter                     |
| FakeStoragePools   | storagepools.StoragePoolApi, mutations.PoolWriter                                        |
| FakeStateStore     | runtime StateStore                                                                       |
| FakePrometheus     | runtime QueryClient                                                                      |
| FakeEvents         | runtime EventSink                                                                        |
| FakeApprovals      | runtime ApprovalBackend                                                                  |
| FakeWatches        | cache.WatchSource (KubeClient.watch: list, then events; counts every LIST it serves)     |
| RecordingApplier   | mutations.Applier (a DryRunApplier that keeps what it was handed)                        |
| CrashingApplier    | mutations.Applier (applies N mutations, then the process "dies": SimulatedCrash)         |

Time: the fakes that "take a while" (a PVC's capacity following its request, a pod coming back, a
pool growing, an election showing in metadata) count the FakeClock's sleeps, never wall time.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from agent.actions.mutations import Applier, DryRunApplier, Mutation, Result, TaintEffect
from agent.adapters.errors import (
    ActionInFlightError,
    ConflictError,
    KubeError,
    NotFoundError,
    PoolBusyError,
    PoolNotFoundError,
    PrometheusQueryError,
    StateConflictError,
)
from agent.adapters.kubernetes import (
    NodeInfo,
    OwnerReference,
    PodInfo,
    PvcCondition,
    PvcInfo,
    StorageClassInfo,
    Taint,
    VolumeAttachmentInfo,
)
from agent.adapters.kubernetes.approvals import Approval
from agent.adapters.kubernetes.client import ConditionStatus, WatchEvent, WatchEventType
from agent.adapters.kubernetes.statuscodec import ActionHistory, InFlight, LastAction, StoredStatus, acted, with_recent
from agent.adapters.storagepools import (
    PoolOperation,
    ResizeOperation,
    StoragePool,
    size_in_gib,
)
from agent.core.approvals import ActionPreview, Answer, ApprovalRequest, Phase
from agent.core.broker_identity import BrokerEndpoint
from agent.core.elections import (
    ELECTION_NOT_NEEDED,
    NONE,
    PREFERRED_LEADER_NOT_AVAILABLE,
    PartitionElection,
)
from agent.core.kafka_safety import ClusterView, PartitionState
from agent.core.matching import TargetObject
from agent.core.policy import ActionStart
from agent.core.quantity import GIB
from agent.core.rules import LabelSelector
from agent.core.samples import Sample
from agent.core.states import ObjectState

UNKNOWN_TOPIC_OR_PARTITION = 3

# --- time --------------------------------------------------------------------------------------------


class FakeClock:
    """Virtual time: nothing moves unless a sleep, a timed-out wait or the test moves it.

    - `now()` and `monotonic()` advance together (from `start` and 0).
    - `sleep(s)` records s in `sleeps`, advances time by s (negative counts as 0), runs the callbacks
      due after this many sleeps (`after_sleeps`), then yields to the event loop once, so other
      tasks run as they would during a real sleep.
    - `wait(event, timeout=t)` returns True at once when the event is set. Otherwise it yields to
      the loop once (a task that is ready to set the event gets to run), and returns True if the
      event is set by then; if not, it advances time by t, records t in `waits`, and returns False.
      It does not wait for events set later in virtual time: the fake has no timers.
    """

    def __init__(self, *, start: float = 1_717_416_000.0) -> None:  # 2024-06-03 12:00 UTC, a Monday
        self._now = start
        self._monotonic = 0.0
        self.sleeps: list[float] = []
        self.waits: list[float] = []
        self.timeouts: list[float] = []
        self._due: list[tuple[int, Callable[[], None]]] = []

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._monotonic += seconds

    def after_sleeps(self, count: int, callback: Callable[[], None]) -> None:
        """Run `callback` at the end of the `count`-th sleep from now (at once when count is 0)."""
        if count <= 0:
            callback()
        else:
            self._due.append((len(self.sleeps) + count, callback))

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))
        due = [callback for at, callback in self._due if at <= len(self.sleeps)]
        self._due = [(at, callback) for at, callback in self._due if at > len(self.sleeps)]
        for callback in due:
            callback()
        await asyncio.sleep(0)

    async def wait(self, event: asyncio.Event, *, timeout: float) -> bool:
        if event.is_set():
            return True
        await asyncio.sleep(0)
        if event.is_set():
            return True
        self.waits.append(timeout)
        self.advance(max(0.0, timeout))
        return False

    def timeout(self, seconds: float) -> contextlib.AbstractAsyncContextManager[object]:
        """Never fires: the fake has no timers (the bounded call returns or raises on its own)."""
        self.timeouts.append(seconds)
        return contextlib.nullcontext()


def _later(clock: FakeClock | None, sleeps: int | None, change: Callable[[], None]) -> None:
    """`change` after `sleeps` sleeps of `clock` (None: never; no clock: at once unless never)."""
    if sleeps is None:
        return
    if clock is None:
        change()
    else:
        clock.after_sleeps(sleeps, change)


class Failures:
    """Scripted errors: `fail("resize_pvc", error)` makes the next call of that name raise it;
    `after=n` lets n calls through first, `times` is how many calls in a row raise."""

    def __init__(self) -> None:
        self._next: dict[str, list[BaseException | None]] = {}

    def fail(self, call: str, error: BaseException, *, times: int = 1, after: int = 0) -> None:
        self._next.setdefault(call, []).extend([None] * after + [error] * times)

    def check(self, call: str) -> None:
        pending = self._next.get(call)
        if pending:
            error = pending.pop(0)
            if error is not None:
                raise error


# --- Kubernetes --------------------------------------------------------------------------------------


@dataclass
class FakePvc:
    namespace: str
    name: str
    requested_bytes: int | None
    capacity_bytes: int | None = None
    """None means: the same as the request (a bound, fully grown claim)."""
    storage_class: str | None = "expandable"
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    owner_references: tuple[OwnerReference, ...] = ()
    grows_after_sleeps: int | None = 0
    """After a resize, status capacity follows the request after this many clock sleeps; None: never."""
    uid: str = ""
    conditions: tuple[PvcCondition, ...] = ()
    allocated_resource_statuses: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.capacity_bytes is None:
            self.capacity_bytes = self.requested_bytes

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def info(self) -> PvcInfo:
        return PvcInfo(
            namespace=self.namespace,
            name=self.name,
            uid=self.uid or f"uid-{self.name}",
            labels=dict(self.labels),
            annotations=dict(self.annotations),
            requested_bytes=self.requested_bytes,
            capacity_bytes=self.capacity_bytes,
            storage_class=self.storage_class,
            phase="Bound",
            volume_name=f"pv-{self.name}",
            owner_references=self.owner_references,
            conditions=self.conditions,
            allocated_resource_statuses=dict(self.allocated_resource_statuses),
        )


@dataclass
class FakeNode:
    name: str
    ready: ConditionStatus | None = "True"
    """The Ready condition's status; None: never reported."""
    ready_since: float | None = None
    unschedulable: bool = False
    taints: list[Taint] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    def info(self) -> NodeInfo:
        return NodeInfo(
            name=self.name,
            uid=f"uid-{self.name}",
            labels=dict(self.labels),
            ready=self.ready,
            ready_since=self.ready_since,
            unschedulable=self.unschedulable,
            taints=tuple(self.taints),
            annotations=dict(self.annotations),
        )


@dataclass
class FakePod:
    namespace: str
    name: str
    node: str | None
    phase: str | None = "Running"
    labels: dict[str, str] = field(default_factory=dict)
    uid: str = ""
    ips: tuple[str, ...] = ()
    subdomain: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    claims: tuple[str, ...] = ()

    def info(self) -> PodInfo:
        return PodInfo(
            namespace=self.namespace,
            name=self.name,
            uid=self.uid,
            node=self.node,
            phase=self.phase,
            labels=dict(self.labels),
            deleting=False,
            owner_kind="StatefulSet",
            owner_name=self.name.rpartition("-")[0] or None,
            ips=self.ips,
            subdomain=self.subdomain,
            annotations=dict(self.annotations),
            claims=self.claims,
        )


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """A JSON merge patch (RFC 7386) of `target`, in place: maps merge, lists and scalars replace, null removes."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _matches(selector: str | None, labels: Mapping[str, str]) -> bool:
    """A `labelSelector` string as the API reads it (`a=b,c in (d,e),!f`)."""
    return not selector or LabelSelector.from_query(selector).matches(labels)


class FakeCluster:
    """A Kubernetes API holding PVCs, StorageClasses, nodes, node Leases, pods and VolumeAttachments.

    Writes behave as `agent.adapters.kubernetes.KubeClient`'s: `resize_pvc` refuses a shrink (422)
    and an unknown claim (404); `cordon_node` is idempotent; `taint_node` returns whether the taints
    changed (the out-of-service taint makes the pods on the node go, as the pod GC does);
    `force_delete_pod` returns False for a pod that is gone and raises ConflictError for a namesake
    with another uid; `delete_volume_attachment` returns False when it was already gone.

    A deleted broker pod comes back as its StatefulSet makes it: same name, new uid, on
    `reschedule_to` (if set; else it stays gone), Pending after `pending_after_sleeps` clock sleeps,
    and Running after `running_after_sleeps` more (None: never). Every write call is appended to
    `writes` as (call, object); `failures` scripts errors per call name.
    """

    def __init__(self, *, clock: FakeClock | None = None) -> None:
        self.clock = clock
        self.pvcs: dict[str, FakePvc] = {}
        self.storage_classes: dict[str, StorageClassInfo] = {}
        self.nodes: dict[str, FakeNode] = {}
        self.leases: dict[str, float] = {}
        self.pods: dict[str, FakePod] = {}
        self.attachments: dict[str, VolumeAttachmentInfo] = {}
        self.namespaces: dict[str, dict[str, str]] = {}
        self.writes: list[tuple[str, str]] = []
        self.failures = Failures()
        self.reschedule_to: str | None = None
        self.pending_after_sleeps: int | None = 0
        self.running_after_sleeps: int | None = 0
        self.on_running: Callable[[FakePod], None] | None = None
        """Called when a recreated pod turns Running (e.g. its broker registers with Kafka again)."""
        self.custom_objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        """(plural, namespace, name) -> a custom object (e.g. a Strimzi KafkaNodePool), as the API returns it."""
        self.on_custom_patch: Callable[[str, dict[str, Any]], None] | None = None
        """Called with (plural, the object as patched): an operator reacting (e.g. growing a pool's PVCs)."""
        self._uids = itertools.count(1)

    # -- building the world

    def add_storage_class(self, name: str, *, expandable: bool) -> None:
        self.storage_classes[name] = StorageClassInfo(
            name=name, provisioner="fake.csi.io", allow_volume_expansion=expandable
        )

    def add_pvc(self, pvc: FakePvc) -> FakePvc:
        self.pvcs[pvc.key] = pvc
        self.namespaces.setdefault(pvc.namespace, {})
        return pvc

    def add_node(self, node: FakeNode, *, lease_renewed: float | None = None) -> FakeNode:
        self.nodes[node.name] = node
        if lease_renewed is not None:
            self.leases[node.name] = lease_renewed
        return node

    def add_pod(self, pod: FakePod) -> FakePod:
        if not pod.uid:
            pod.uid = f"uid-{pod.name}-{next(self._uids)}"
        self.pods[f"{pod.namespace}/{pod.name}"] = pod
        self.namespaces.setdefault(pod.namespace, {})
        return pod

    def add_attachment(self, name: str, *, node: str, pv: str | None = None) -> None:
        self.attachments[name] = VolumeAttachmentInfo(name=name, node=node, pv=pv, attached=True)

    def count(self, call: str) -> int:
        return sum(1 for made, _ in self.writes if made == call)

    # -- reads (VolumeReader, NodeReader, Inventory)

    async def list_pvcs(self, *, namespace: str | None = None, label_selector: str | None = None) -> list[PvcInfo]:
        self.failures.check("list_pvcs")
        return [
            pvc.info()
            for pvc in self.pvcs.values()
            if _matches(label_selector, pvc.labels) and namespace in (None, pvc.namespace)
        ]

    async def get_pvc(self, *, namespace: str, name: str) -> PvcInfo:
        self.failures.check("get_pvc")
        found = self.pvcs.get(f"{namespace}/{name}")
        if found is None:
            raise _claim_not_found("GET", namespace, name)
        return found.info()

    async def storage_class(self, name: str) -> StorageClassInfo:
        self.failures.check("storage_class")
        found = self.storage_classes.get(name)
        if found is None:
            raise NotFoundError(
                f"storageclasses {name} not found", server="fake", verb="GET", resource="storageclasses", status=404
            )
        return found

    async def namespace_labels(self) -> dict[str, dict[str, str]]:
        return {name: dict(labels) for name, labels in self.namespaces.items()}

    async def list_nodes(self) -> list[NodeInfo]:
        self.failures.check("list_nodes")
        return [node.info() for node in self.nodes.values()]

    async def node_lease_renew_times(self) -> dict[str, float]:
        self.failures.check("node_lease_renew_times")
        return dict(self.leases)

    async def list_pods(
        self, *, namespace: str | None = None, label_selector: str | None = None, field_selector: str | None = None
    ) -> list[PodInfo]:
        """`field_selector`: only `spec.nodeName=<node>` (what the node remediation asks) is understood."""
        self.failures.check("list_pods")
        on_node = field_selector.removeprefix("spec.nodeName=") if field_selector else None
        return [
            pod.info()
            for pod in self.pods.values()
            if (namespace is None or pod.namespace == namespace)
            and _matches(label_selector, pod.labels)
            and (on_node is None or pod.node == on_node)
        ]

    async def get_pod(self, *, namespace: str, name: str) -> PodInfo:
        self.failures.check("get_pod")
        found = self.pods.get(f"{namespace}/{name}")
        if found is None:
            raise NotFoundError(
                f"pods {namespace}/{name} not found", server="fake", verb="GET", resource="pods", status=404
            )
        return found.info()

    async def list_volume_attachments(self) -> list[VolumeAttachmentInfo]:
        self.failures.check("list_volume_attachments")
        return list(self.attachments.values())

    # -- writes (ClusterWriter)

    async def resize_pvc(self, *, namespace: str, name: str, new_bytes: int, annotations: Mapping[str, str]) -> PvcInfo:
        key = f"{namespace}/{name}"
        self.writes.append(("resize_pvc", key))
        self.failures.check("resize_pvc")
        pvc = self.pvcs.get(key)
        if pvc is None:
            raise _claim_not_found("PATCH", namespace, name)
        if pvc.requested_bytes is not None and new_bytes < pvc.requested_bytes:
            raise KubeError(
                f"persistentvolumeclaims {key}: spec.resources.requests.storage: field can not be less than previous",
                server="fake",
                verb="PATCH",
                resource="persistentvolumeclaims",
                namespace=namespace,
                name=name,
                status=422,
            )
        pvc.requested_bytes = new_bytes
        pvc.annotations.update(annotations)

        def grown() -> None:
            pvc.capacity_bytes = max(pvc.capacity_bytes or 0, new_bytes)

        _later(self.clock, pvc.grows_after_sleeps, grown)
        return pvc.info()

    async def cordon_node(self, name: str, *, annotations: Mapping[str, str] | None = None) -> NodeInfo:
        self.writes.append(("cordon_node", name))
        self.failures.check("cordon_node")
        node = self._node(name, verb="PATCH")
        node.unschedulable = True
        node.annotations.update(annotations or {})
        return node.info()

    async def annotate_node(self, name: str, *, annotations: Mapping[str, str]) -> NodeInfo:
        self.writes.append(("annotate_node", name))
        self.failures.check("annotate_node")
        node = self._node(name, verb="PATCH")
        node.annotations.update(annotations)
        return node.info()

    async def release_node(
        self, name: str, *, marks: Mapping[str, str], uncordon: bool, taint_keys: Sequence[str]
    ) -> bool:
        self.writes.append(("release_node", name))
        self.failures.check("release_node")
        node = self._node(name, verb="PATCH")
        mine = [key for key, value in marks.items() if node.annotations.get(key) == value]
        if not mine:
            return False
        for key in mine:
            del node.annotations[key]
        if uncordon:
            node.unschedulable = False
        node.taints = [taint for taint in node.taints if taint.key not in taint_keys]
        return True

    async def taint_node(self, *, name: str, key: str, value: str | None, effect: TaintEffect) -> bool:
        self.writes.append(("taint_node", name))
        self.failures.check("taint_node")
        node = self._node(name, verb="PATCH")
        wanted = Taint(key=key, value=value, effect=effect)
        same = [index for index, taint in enumerate(node.taints) if taint.key == key and taint.effect == effect]
        if same and node.taints[same[0]].value == value:
            return False
        if same:
            node.taints[same[0]] = wanted
        else:
            node.taints.append(wanted)
        if key == "node.kubernetes.io/out-of-service" and effect == "NoExecute":
            for pod in [pod for pod in self.pods.values() if pod.node == name]:
                self._delete_pod(pod)
        return True

    async def force_delete_pod(self, *, namespace: str, name: str, uid: str) -> bool:
        return await self._delete_with_uid("force_delete_pod", namespace=namespace, name=name, uid=uid)

    async def delete_pod(self, *, namespace: str, name: str, uid: str) -> bool:
        """A graceful delete: in the fake the pod goes at once (its grace period is not modelled)."""
        return await self._delete_with_uid("delete_pod", namespace=namespace, name=name, uid=uid)

    async def _delete_with_uid(self, call: str, *, namespace: str, name: str, uid: str) -> bool:
        key = f"{namespace}/{name}"
        self.writes.append((call, key))
        self.failures.check(call)
        pod = self.pods.get(key)
        if pod is None:
            return False
        if pod.uid != uid:
            raise ConflictError(
                f"pods {key}: Precondition failed: UID in precondition: {uid}, UID in object meta: {pod.uid}",
                server="fake",
                verb="DELETE",
                resource="pods",
                namespace=namespace,
                name=name,
                status=409,
            )
        self._delete_pod(pod)
        return True

    async def delete_volume_attachment(self, name: str) -> bool:
        self.writes.append(("delete_volume_attachment", name))
        self.failures.check("delete_volume_attachment")
        return self.attachments.pop(name, None) is not None

    # -- custom objects (the resize executor's OwnerReader; ClusterWriter.patch_custom_object)

    def add_custom_object(self, plural: str, obj: dict[str, Any]) -> None:
        metadata = obj.setdefault("metadata", {})
        metadata.setdefault("resourceVersion", "1")
        self.custom_objects[(plural, metadata["namespace"], metadata["name"])] = obj

    async def get_custom_object(
        self, *, group: str, version: str, plural: str, name: str, namespace: str | None = None
    ) -> dict[str, Any]:
        self.failures.check("get_custom_object")
        found = self.custom_objects.get((plural, namespace or "", name))
        if found is None:
            raise NotFoundError(
                f"{plural} {namespace}/{name} not found", server="fake", verb="GET", resource=plural, status=404
            )
        return copy.deepcopy(found)

    async def patch_custom_object(
        self, *, group: str, version: str, plural: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A merge patch; a metadata.resourceVersion in it that is not the object's is refused (409)."""
        self.writes.append((f"patch {plural}", f"{namespace}/{name}"))
        self.failures.check("patch_custom_object")
        found = self.custom_objects.get((plural, namespace, name))
        if found is None:
            raise NotFoundError(
                f"{plural} {namespace}/{name} not found", server="fake", verb="PATCH", resource=plural, status=404
            )
        version_read = (patch.get("metadata") or {}).get("resourceVersion")
        if version_read is not None and version_read != found["metadata"]["resourceVersion"]:
            raise ConflictError(
                f"{plural} {namespace}/{name}: the object has been modified",
                server="fake",
                verb="PATCH",
                resource=plural,
                status=409,
            )
        _merge(found, patch)
        found["metadata"]["resourceVersion"] = str(int(found["metadata"]["resourceVersion"]) + 1)
        if self.on_custom_patch is not None:
            self.on_custom_patch(plural, found)
        return copy.deepcopy(found)

    # -- internals

    def _node(self, name: str, *, verb: str) -> FakeNode:
        node = self.nodes.get(name)
        if node is None:
            raise NotFoundError(f"nodes {name} not found", server="fake", verb=verb, resource="nodes", status=404)
        return node

    def _delete_pod(self, pod: FakePod) -> None:
        key = f"{pod.namespace}/{pod.name}"
        del self.pods[key]
        target = self.reschedule_to
        if target is None:
            return

        def recreated() -> None:
            if key in self.pods:
                return
            back = self.add_pod(
                FakePod(
                    namespace=pod.namespace, name=pod.name, node=target, phase="Pending", ips=pod.ips, claims=pod.claims
                )
            )
            back.labels.update(pod.labels)

            def running() -> None:
                back.phase = "Running"
                if self.on_running is not None:
                    self.on_running(back)

            _later(self.clock, self.running_after_sleeps, running)

        _later(self.clock, self.pending_after_sleeps, recreated)


# --- watches -----------------------------------------------------------------------------------------


class FakeWatches:
    """`KubeClient.watch` over raw objects held per kind: each watch first LISTs (counted in `lists`,
    with its selectors in `watched`), sends one ADDED per object the label selector matches, then
    SYNCED when asked, then the changes `put` / `delete` make. `expire(kind)` answers as an apiserver
    whose resourceVersion expired (the watch lists again: one RESYNC with the whole list);
    `refuse(kind, error)` makes the lists of the kind fail with it (e.g. a 403) until `grant(kind)`.
    A failed watch waits on `clock` before it is tried again."""

    server = "https://fake-watches"

    def __init__(self, *, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.objects: dict[str, dict[str, dict[str, Any]]] = {}
        self.lists: list[str] = []
        self.watched: list[tuple[str, str | None, str | None]] = []
        self.refused: dict[str, KubeError] = {}
        self._queues: list[tuple[str, str | None, asyncio.Queue[WatchEvent | KubeError]]] = []
        self._versions = itertools.count(1)

    def put(self, kind: str, raw: dict[str, Any]) -> dict[str, Any]:
        """Add or change an object (a new resourceVersion, unless it carries one); the watches of the kind see it."""
        metadata = raw.setdefault("metadata", {})
        metadata.setdefault("resourceVersion", f"w{next(self._versions)}")
        key = f"{metadata.get('namespace') or ''}/{metadata['name']}"
        known = key in self.objects.setdefault(kind, {})
        self.objects[kind][key] = raw
        self._send(kind, "MODIFIED" if known else "ADDED", raw)
        return raw

    def delete(self, kind: str, name: str, namespace: str | None = None) -> None:
        raw = self.objects.get(kind, {}).pop(f"{namespace or ''}/{name}")
        self._send(kind, "DELETED", raw)

    def expire(self, kind: str) -> None:
        """The watch's resourceVersion is gone (410): it lists again and sends RESYNC."""
        for watched, selector, queue in self._queues:
            if watched == kind:
                self.lists.append(kind)
                queue.put_nowait(
                    WatchEvent(type="RESYNC", object_name="", namespace=None, raw=self._list(kind, selector))
                )

    def refuse(self, kind: str, error: KubeError) -> None:
        self.refused[kind] = error

    def cut(self, kind: str, error: KubeError) -> None:
        """The running watches of the kind end with `error`, and the kind is refused until `grant(kind)`;
        what changes meanwhile reaches no watch."""
        self.refused[kind] = error
        for watched, _, queue in self._queues:
            if watched == kind:
                queue.put_nowait(error)
        self._queues = [entry for entry in self._queues if entry[0] != kind]

    def grant(self, kind: str) -> None:
        """The kind may be listed again (a permission granted later)."""
        self.refused.pop(kind, None)

    async def watch(
        self,
        kind: str,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        synced_event: bool = False,
    ) -> AsyncIterator[WatchEvent]:
        self.watched.append((kind, label_selector, field_selector))
        if kind in self.refused:
            raise self.refused[kind]
        self.lists.append(kind)
        queue: asyncio.Queue[WatchEvent | KubeError] = asyncio.Queue()
        self._queues.append((kind, label_selector, queue))
        for raw in self._list(kind, label_selector)["items"]:
            yield WatchEvent(type="ADDED", object_name=raw["metadata"]["name"], namespace=None, raw=raw)
        if synced_event:
            yield WatchEvent(type="SYNCED", object_name="", namespace=None, raw={})
        while True:
            event = await queue.get()
            if isinstance(event, KubeError):
                raise event
            yield event

    def _list(self, kind: str, selector: str | None) -> dict[str, Any]:
        items = [copy.deepcopy(raw) for raw in self.objects.get(kind, {}).values() if _matches(selector, _labels(raw))]
        return {"items": items, "metadata": {}}

    def _send(self, kind: str, change: WatchEventType, raw: dict[str, Any]) -> None:
        for watched, selector, queue in self._queues:
            if watched == kind and _matches(selector, _labels(raw)):
                event = WatchEvent(
                    type=change, object_name=raw["metadata"]["name"], namespace=None, raw=copy.deepcopy(raw)
                )
                queue.put_nowait(event)


def _labels(raw: Mapping[str, Any]) -> Mapping[str, str]:
    return (raw.get("metadata") or {}).get("labels") or {}


# --- Kafka -------------------------------------------------------------------------------------------


class FakeKafka:
    """A Kafka cluster's metadata and its ElectLeaders API, as `agent.adapters.kafka.KafkaAdmin` serves them.

    `registered` are the unfenced brokers; `partitions` each partition's leader, replicas (first =
    preferred), ISR and min.insync.replicas. `elect_preferred_leaders` answers per partition as Kafka
    does: ELECTION_NOT_NEEDED when the preferred replica leads already, PREFERRED_LEADER_NOT_AVAILABLE
    when it is fenced or out of the ISR, UNKNOWN_TOPIC_OR_PARTITION for an unknown partition, else
    NONE; an elected partition shows its new leader in metadata after `shows_after_sleeps` clock
    sleeps (None: never, as a broker whose metadata lags). `refuse[(topic, p)] = code` scripts a
    refusal. Every request is appended to `elections`; `views` counts metadata reads.
    """

    def __init__(self, *, clock: FakeClock | None = None) -> None:
        self.clock = clock
        self.registered: set[int] = set()
        self.hosts: dict[int, str] = {}
        """Broker id -> the host it advertises; listed fenced when not in `registered` (DescribeCluster v2)."""
        self.partitions: dict[tuple[str, int], PartitionState] = {}
        self.refuse: dict[tuple[str, int], int] = {}
        self.shows_after_sleeps: int | None = 0
        self.elections: list[tuple[tuple[str, int], ...]] = []
        self.views = 0
        self.failures = Failures()

    def add_partition(
        self,
        topic: str,
        partition: int,
        *,
        replicas: Sequence[int],
        leader: int | None,
        isr: Sequence[int] = (),
        min_insync: int = 1,
    ) -> None:
        self.partitions[(topic, partition)] = PartitionState(
            topic=topic,
            partition=partition,
            leader=leader,
            replicas=tuple(replicas),
            isr=tuple(isr) if isr else tuple(replicas),
            min_insync=min_insync,
        )

    def leaders(self) -> dict[tuple[str, int], int | None]:
        return {key: state.leader for key, state in self.partitions.items()}

    async def cluster_view(self, *, topics: Sequence[str] | None = None) -> ClusterView:
        self.failures.check("cluster_view")
        self.views += 1
        wanted = None if topics is None else set(topics)
        return ClusterView(
            brokers_registered=frozenset(self.registered),
            partitions=tuple(
                state for key, state in sorted(self.partitions.items()) if wanted is None or state.topic in wanted
            ),
            endpoints=tuple(
                BrokerEndpoint(broker_id=broker, host=host, port=9092, fenced=broker not in self.registered)
                for broker, host in sorted(self.hosts.items())
            ),
        )

    async def elect_preferred_leaders(self, partitions: Sequence[tuple[str, int]]) -> tuple[PartitionElection, ...]:
        self.elections.append(tuple(partitions))
        self.failures.check("elect_preferred_leaders")
        return tuple(self._elect(key) for key in partitions)

    def _elect(self, key: tuple[str, int]) -> PartitionElection:
        topic, partition = key
        state = self.partitions.get(key)
        if key in self.refuse:
            return PartitionElection(topic=topic, partition=partition, error_code=self.refuse[key])
        if state is None:
            return PartitionElection(topic=topic, partition=partition, error_code=UNKNOWN_TOPIC_OR_PARTITION)
        preferred = state.preferred_leader
        if state.leader == preferred:
            return PartitionElection(topic=topic, partition=partition, error_code=ELECTION_NOT_NEEDED)
        if preferred is None or preferred not in state.isr or preferred not in self.registered:
            return PartitionElection(topic=topic, partition=partition, error_code=PREFERRED_LEADER_NOT_AVAILABLE)

        def shown() -> None:
            self.partitions[key] = replace(self.partitions[key], leader=preferred)

        _later(self.clock, self.shows_after_sleeps, shown)
        return PartitionElection(topic=topic, partition=partition, error_code=NONE)


# --- storage pools -----------------------------------------------------------------------------------


class FakeStoragePools:
    """The OpenStorage SDK's pools, as `agent.adapters.storagepools.StoragePoolClient` serves them.

    `resize_pool` takes `size_bytes` as the client does (sent as whole GiB, rounded up) or a
    percentage; a pool with a resize running answers PoolBusyError, an unknown uuid
    PoolNotFoundError. The pool then shows an in-progress operation, and reaches its new total
    after `completes_after_sleeps` clock sleeps (None: never); with `fails_with` set, the operation
    ends OPERATION_FAILED with that message instead. Calls are appended to `resizes`.
    """

    server = "fake-storage-api"

    def __init__(self, *, clock: FakeClock | None = None) -> None:
        self.clock = clock
        self.pools: dict[str, StoragePool] = {}
        self.completes_after_sleeps: int | None = 0
        self.fails_with: str | None = None
        self.resizes: list[tuple[str, int | None, int | None, str]] = []
        self.failures = Failures()

    def add_pool(
        self,
        *,
        uuid: str,
        node: str,
        name: str,
        total_bytes: int,
        drive_count: int | None,
        drive_size_bytes: int | None,
        labels: Mapping[str, str] | None = None,
    ) -> StoragePool:
        pool = StoragePool(
            uuid=uuid,
            node=node,
            name=name,
            pool_id=len(self.pools),
            labels=dict(labels or {"pool": name}),
            total_bytes=total_bytes,
            used_bytes=total_bytes // 2,
            drive_count=drive_count,
            drive_size_bytes=drive_size_bytes,
        )
        self.pools[uuid] = pool
        return pool

    async def list_pools(self) -> list[StoragePool]:
        self.failures.check("list_pools")
        return list(self.pools.values())

    async def resize_pool(
        self,
        *,
        uuid: str,
        size_bytes: int | None = None,
        percentage: int | None = None,
        operation: str = ResizeOperation.AUTO,
    ) -> None:
        self.resizes.append((uuid, size_bytes, percentage, str(operation)))
        self.failures.check("resize_pool")
        if (size_bytes is None) == (percentage is None):
            raise ValueError("give exactly one of size_bytes and percentage")
        pool = self.pools.get(uuid)
        what = f"resize pool {uuid}"
        if pool is None:
            raise PoolNotFoundError(server=self.server, what=what, reason="HTTP 404: not found", temporary=False)
        if pool.resizing:
            raise PoolBusyError(server=self.server, what=what, reason="HTTP 409: resize in progress", temporary=True)
        if size_bytes is not None:
            new_total = size_in_gib(size_bytes) * GIB
        else:
            new_total = pool.total_bytes + pool.total_bytes * (percentage or 0) // 100
        running = PoolOperation(type="OPERATION_RESIZE", status="OPERATION_IN_PROGRESS", message="resizing")
        self.pools[uuid] = replace(pool, last_operation=running)

        def finished() -> None:
            current = self.pools[uuid]
            if self.fails_with is not None:
                failed = PoolOperation(type="OPERATION_RESIZE", status="OPERATION_FAILED", message=self.fails_with)
                self.pools[uuid] = replace(current, last_operation=failed)
                return
            done = PoolOperation(type="OPERATION_RESIZE", status="OPERATION_SUCCESSFUL", message="resized")
            self.pools[uuid] = replace(current, total_bytes=new_total, last_operation=done)

        _later(self.clock, self.completes_after_sleeps, finished)


# --- the runtime's own stores and sinks ----------------------------------------------------------------


@dataclass
class _StoredObject:
    kind: str
    version: int
    status: StoredStatus


class FakeStateStore:
    """`agent.adapters.statestore.StateStore` in memory: one AutopilotRuleObject status per (rule, object).

    Like the real store, one instance is one writer: every write is based on the status this
    instance last read (`load`, `status`, `in_flight`) or wrote for the pair, and raises
    StateConflictError when the stored object's resourceVersion has moved since (another writer,
    see `replica()`). `record_in_flight` raises ActionInFlightError when an action is already
    recorded. A write that changes nothing is not sent. `conflict_on_next_write(rule, key)` makes
    the next write for that pair raise StateConflictError. Writes are appended to `writes`.
    """

    def __init__(self, *, objects: dict[tuple[str, str], _StoredObject] | None = None) -> None:
        self._objects: dict[tuple[str, str], _StoredObject] = objects if objects is not None else {}
        self._seen: dict[tuple[str, str], int | None] = {}
        self._conflicts: set[tuple[str, str]] = set()
        self.writes: list[tuple[str, str, str]] = []

    def replica(self) -> FakeStateStore:
        """A second writer over the same stored objects (another agent replica)."""
        return FakeStateStore(objects=self._objects)

    def conflict_on_next_write(self, rule: str, object_key: str) -> None:
        self._conflicts.add((rule, object_key))

    def stored(self, rule: str, object_key: str) -> StoredStatus:
        """What is stored for the pair now (no write base changes: for test assertions)."""
        found = self._objects.get((rule, object_key))
        return found.status if found is not None else StoredStatus()

    def resource_version(self, rule: str, object_key: str) -> int | None:
        found = self._objects.get((rule, object_key))
        return found.version if found is not None else None

    # -- reads

    async def load(self, rule: str) -> dict[str, ObjectState]:
        states: dict[str, ObjectState] = {}
        for (stored_rule, key), stored in self._objects.items():
            if stored_rule != rule:
                continue
            self._seen[(rule, key)] = stored.version
            if stored.status.state is not None:
                states[key] = stored.status.state
        return states

    async def status(self, rule: str, object_key: str) -> StoredStatus:
        self._seen[(rule, object_key)] = self.resource_version(rule, object_key)
        return self.stored(rule, object_key)

    async def in_flight(self, rule: str, object_key: str) -> InFlight | None:
        return (await self.status(rule, object_key)).in_flight

    async def action_history(self) -> ActionHistory:
        starts: list[ActionStart] = []
        in_flight: set[tuple[str, str]] = set()
        for (rule, key), stored in self._objects.items():
            status = stored.status
            starts.extend(
                ActionStart(rule=rule, object=key, action=action.name, at=action.started_at)
                for action in status.recent_actions
            )
            last = status.last_action
            if (
                last is not None
                and last.started_at is not None
                and acted(last)
                and not any(action.started_at == last.started_at for action in status.recent_actions)
            ):
                starts.append(ActionStart(rule=rule, object=key, action=last.name, at=last.started_at))
            if status.in_flight is not None:
                in_flight.add((rule, key))
                starts.append(
                    ActionStart(rule=rule, object=key, action=status.in_flight.action, at=status.in_flight.requested_at)
                )
        return ActionHistory(starts=tuple(starts), in_flight=frozenset(in_flight))

    # -- writes

    async def save(
        self,
        *,
        rule: str,
        object_key: str,
        object_kind: str,
        state: ObjectState,
        last_action: LastAction | None = None,
        in_flight: InFlight | None = None,
    ) -> None:
        def change(stored: StoredStatus) -> StoredStatus:
            return StoredStatus(
                state=state,
                last_action=last_action if last_action is not None else stored.last_action,
                in_flight=in_flight if in_flight is not None else stored.in_flight,
                recent_actions=with_recent(stored.recent_actions, last_action),
            )

        self._write("save", rule, object_key, object_kind, change)

    async def record_in_flight(
        self,
        *,
        rule: str,
        object_key: str,
        object_kind: str,
        action: str,
        requested_at: float,
        detail: Mapping[str, str] | None = None,
        state: ObjectState | None = None,
    ) -> InFlight:
        record = InFlight(action=action, requested_at=requested_at, detail=dict(detail or {}))

        def change(stored: StoredStatus) -> StoredStatus:
            if stored.in_flight is not None:
                raise ActionInFlightError(
                    f"action {stored.in_flight.action!r} is already in flight",
                    rule=rule,
                    object_key=object_key,
                    in_flight=stored.in_flight,
                )
            return replace(stored, state=state if state is not None else stored.state, in_flight=record)

        self._write("record_in_flight", rule, object_key, object_kind, change)
        return record

    async def clear_in_flight(
        self,
        *,
        rule: str,
        object_key: str,
        object_kind: str,
        state: ObjectState | None = None,
        last_action: LastAction | None = None,
    ) -> None:
        def change(stored: StoredStatus) -> StoredStatus:
            return StoredStatus(
                state=state if state is not None else stored.state,
                last_action=last_action if last_action is not None else stored.last_action,
                in_flight=None,
                recent_actions=with_recent(stored.recent_actions, last_action),
            )

        self._write("clear_in_flight", rule, object_key, object_kind, change)

    def _write(
        self, call: str, rule: str, object_key: str, object_kind: str, change: Callable[[StoredStatus], StoredStatus]
    ) -> None:
        pair = (rule, object_key)
        if pair in self._conflicts:
            self._conflicts.discard(pair)
            raise StateConflictError("scripted conflict", rule=rule, object_key=object_key)
        current = self._objects.get(pair)
        base = self._seen.get(pair)
        if (current.version if current is not None else None) != base:
            now = current.status.state.state.value if current is not None and current.status.state else "no state"
            raise StateConflictError(
                f"another writer changed the stored state (now {now}); not acting on a stale decision",
                rule=rule,
                object_key=object_key,
            )
        before = current.status if current is not None else StoredStatus()
        wanted = change(before)
        if current is not None and wanted == before:
            return
        version = (current.version if current is not None else 0) + 1
        self._objects[pair] = _StoredObject(kind=object_kind, version=version, status=wanted)
        self._seen[pair] = version
        self.writes.append((call, rule, object_key))


class FakePrometheus:
    """Instant queries answered from `vectors` (expression -> samples); an unknown expression gives an
    empty vector, as Prometheus does for a metric it has no series of. `fail(expr)` makes queries of
    that expression (None: every query) raise PrometheusQueryError until `heal`. Queries are
    appended to `queries` as (expression, time)."""

    url = "http://fake-prometheus:9090"

    def __init__(self) -> None:
        self.vectors: dict[str, tuple[Sample, ...]] = {}
        self.queries: list[tuple[str, float | None]] = []
        self._failing: dict[str | None, str] = {}

    def set(self, expr: str, samples: Iterable[Sample]) -> None:
        self.vectors[expr] = tuple(samples)

    def fail(self, expr: str | None = None, *, reason: str = "unreachable: ConnectionError") -> None:
        self._failing[expr] = reason

    def heal(self) -> None:
        self._failing.clear()

    async def query(self, expr: str, *, at: float | None = None) -> tuple[Sample, ...]:
        self.queries.append((expr, at))
        reason = self._failing.get(expr, self._failing.get(None))
        if reason is not None:
            raise PrometheusQueryError(url=self.url, expr=expr, reason=reason, temporary=True)
        return self.vectors.get(expr, ())


@dataclass(frozen=True, kw_only=True)
class EmittedEvent:
    rule: str
    object: str
    reason: str
    message: str
    warning: bool


class FakeEvents:
    """Records every Event the agent emits, in order."""

    def __init__(self) -> None:
        self.emitted: list[EmittedEvent] = []

    async def emit(self, *, rule: str, target: TargetObject, reason: str, message: str, warning: bool) -> None:
        self.emitted.append(EmittedEvent(rule=rule, object=target.key, reason=reason, message=message, warning=warning))

    def reasons(self) -> list[str]:
        return [event.reason for event in self.emitted]


class FakeApprovals:
    """ActionApprovals in memory, as `agent.adapters.approvals.ApprovalStore` keeps them.

        `ensure` creates the request's approval with phase Pending and its preview (True when created
        now), returns an existing one as it is, and refuses a name that belongs to another (rule,
        object). `set_phase` returns None for an approval that does not exist and changes nothing when
        phase and message are already those; `withdraw_answer` puts an answer back to pending when the
    approval is still as read. `answer` is the person (`kafka-autopilot approve|decline`);
        `fail_next(error)` makes the next call raise (a temporary KubeError by default).
    """

    def __init__(self) -> None:
        self.approvals: dict[tuple[str, str], Approval] = {}
        self._failures: list[BaseException] = []
        self._versions = itertools.count(1)

    def fail_next(self, error: BaseException | None = None) -> None:
        self._failures.append(
            error
            or KubeError(
                "kube-apiserver fake: no answer", server="fake", verb="GET", resource="actionapprovals", temporary=True
            )
        )

    def _check(self) -> None:
        if self._failures:
            raise self._failures.pop(0)

    def answer(
        self,
        *,
        namespace: str,
        name: str,
        answer: Answer,
        by: str = "someone",
        reason: str = "",
        groups: tuple[str, ...] = (),
    ) -> Approval:
        current = self.approvals[(namespace, name)]
        answered = replace(
            current,
            answer=answer,
            answered_by=by,
            answered_by_groups=groups,
            answer_reason=reason,
            resource_version=str(next(self._versions)),
        )
        self.approvals[(namespace, name)] = answered
        return answered

    async def get(self, *, namespace: str, name: str) -> Approval | None:
        self._check()
        return self.approvals.get((namespace, name))

    async def ensure(self, request: ApprovalRequest, *, now: float) -> tuple[Approval, bool]:
        self._check()
        existing = self.approvals.get((request.namespace, request.name))
        if existing is not None:
            if existing.rule != request.rule or existing.object_key != request.object_key:
                raise KubeError(
                    f"ActionApproval {request.namespace}/{request.name} belongs to {existing.rule!r}: "
                    f"{existing.object_key!r}, not to {request.rule!r}: {request.object_key!r} (name clash)",
                    server="fake",
                    verb="GET",
                    resource="actionapprovals",
                    namespace=request.namespace,
                    name=request.name,
                )
            return existing, False
        created = Approval(
            name=request.name,
            namespace=request.namespace,
            rule=request.rule,
            object_kind=request.object_kind,
            object_key=request.object_key,
            answer=Answer.PENDING,
            phase=Phase.PENDING,
            message=f"waiting for an answer: kafka-autopilot approve|decline {request.name} -n {request.namespace}",
            actions=tuple(ActionPreview(action=a.action, before=a.before, after=a.after) for a in request.actions),
            why=request.why,
            created_at=float(int(now)),
            answered_by="",
            answer_reason="",
            resource_version=str(next(self._versions)),
        )
        self.approvals[(request.namespace, request.name)] = created
        return created, True

    async def set_phase(self, *, namespace: str, name: str, phase: Phase, message: str, now: float) -> Approval | None:
        self._check()
        current = self.approvals.get((namespace, name))
        if current is None:
            return None
        if current.phase is phase and current.message == message:
            return current
        updated = replace(current, phase=phase, message=message, resource_version=str(next(self._versions)))
        self.approvals[(namespace, name)] = updated
        return updated

    async def withdraw_answer(self, approval: Approval, *, message: str, now: float) -> Approval | None:
        self._check()
        current = self.approvals.get((approval.namespace, approval.name))
        if current is None or current.resource_version != approval.resource_version:
            return None
        self.approvals[(approval.namespace, approval.name)] = replace(
            current, answer=Answer.PENDING, answered_by="", answered_by_groups=(), answer_reason=""
        )
        return await self.set_phase(
            namespace=approval.namespace, name=approval.name, phase=Phase.PENDING, message=message, now=now
        )


class RecordingApplier(DryRunApplier):
    """The dry-run applier, keeping every mutation it was handed in `recorded`."""

    def __init__(self) -> None:
        self.recorded: list[Mutation] = []
        super().__init__(record=self.recorded.append)


class SimulatedCrash(BaseException):
    """The agent process dying mid-action (a BaseException, so no `except Exception` catches it)."""


@dataclass
class CrashingApplier:
    """Applies the first `crash_after` mutations through `applier`, then dies right after the last one."""

    applier: Applier
    crash_after: int
    applied: int = 0

    async def apply(self, mutation: Mutation) -> None:
        await self.applier.apply(mutation)
        self.applied += 1
        if self.applied >= self.crash_after:
            raise SimulatedCrash(f"crashed after {mutation.describe()}")

    async def after_apply(self, *, verify: Callable[[], Awaitable[Result]], recorded: Callable[[], Result]) -> Result:
        return await self.applier.after_apply(verify=verify, recorded=recorded)


if TYPE_CHECKING:  # drift between a fake and the Protocol it stands for fails mypy here
    from agent.actions.leader_rebalance.executor import KafkaViewer as RebalanceKafka
    from agent.actions.mutations import ClusterWriter, KafkaWriter, PoolWriter
    from agent.actions.node_reschedule.executor import KafkaViewer as RescheduleKafka
    from agent.actions.node_reschedule.executor import NodeReader
    from agent.actions.volume_resize.executor import VolumeReader
    from agent.adapters.clock import Clock
    from agent.adapters.kubernetes.cache import WatchSource
    from agent.adapters.storagepools import StoragePoolApi
    from agent.runtime.approvals import ApprovalBackend
    from agent.runtime.inventory import ClusterReader, QueryClient
    from agent.runtime.recorder import EventSink
    from agent.runtime.runner import StateStore

    _clock: Clock = FakeClock()
    _watches: WatchSource = FakeWatches()
    _volume_reader: VolumeReader = FakeCluster()
    _node_reader: NodeReader = FakeCluster()
    _cluster_writer: ClusterWriter = FakeCluster()
    _inventory: ClusterReader = FakeCluster()
    _rebalance_kafka: RebalanceKafka = FakeKafka()
    _reschedule_kafka: RescheduleKafka = FakeKafka()
    _kafka_writer: KafkaWriter = FakeKafka()
    _pools: StoragePoolApi = FakeStoragePools()
    _pool_writer: PoolWriter = FakeStoragePools()
    _state_store: StateStore = FakeStateStore()
    _query_client: QueryClient = FakePrometheus()
    _events: EventSink = FakeEvents()
    _approvals: ApprovalBackend = FakeApprovals()
    _applier: Applier = RecordingApplier()
    _crashing: Applier = CrashingApplier(applier=RecordingApplier(), crash_after=1)


def _claim_not_found(verb: str, namespace: str, name: str) -> NotFoundError:
    return NotFoundError(
        f"persistentvolumeclaims {namespace}/{name} not found",
        server="fake",
        verb=verb,
        resource="persistentvolumeclaims",
        namespace=namespace,
        name=name,
        status=404,
    )
