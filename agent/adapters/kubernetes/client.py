"""The agent's one way to read and change Kubernetes: typed reads, single-call writes, and watches that survive.

Why this module exists: the core decides on plain values (`TargetObject`s, byte counts, Ready
states and Lease times); the actions change PVCs, nodes, pods and VolumeAttachments. Between
them sits the Kubernetes API with its JSON, resourceVersions, 409s, 410s and restarts. This module
keeps all of that on its side of the line:

- reads return frozen dataclasses (`PvcInfo`, `NodeInfo`, `PodInfo`, ...) built from the API's JSON,
  with sizes as exact ints (`agent.core.quantity`) and times as epoch seconds;
- every write is one request, a merge patch where one suffices, idempotent where it can be:
  `resize_pvc` sets the size and the in-flight annotations together, `force_delete_pod` carries a
  uid precondition so a pod recreated under the same name is never deleted by mistake, and
  `taint_node` is a compare-and-swap on `spec.taints`;
- `read_lease` / `create_lease` / `replace_lease` serve leader election (agent.runtime.leadership):
  a replace carries the resourceVersion read, so a concurrent writer's change makes it fail with 409;
- `watch()` lists (page by page), then watches from the list's resourceVersion, and keeps going
  across expired resourceVersions (HTTP 410: it lists again and says so with a `RESYNC` event) and
  apiserver restarts (it backs off and resumes);
- every request carries the User-Agent `kafka-autopilot/<version>` (`USER_AGENT`), so the
  apiserver's audit log tells the agent's requests apart from everyone else's.

Connecting: `await connect()` uses the pod's service account when `KUBERNETES_SERVICE_HOST` is set
and no kubeconfig is given, else the kubeconfig file (`KUBECONFIG` or `~/.kube/config` by default).
Config files are read in a worker thread and the in-cluster token is re-read there too (once a
minute), so the event loop never waits on disk; the one exception is kubernetes_asyncio's
ApiClient constructor, which loads the TLS files into an ssl context once, at connect.

Custom resources: `get_custom_object`, `list_custom_objects`, `create_custom_object`,
`patch_custom_object`, `replace_custom_object_status`, `patch_custom_object_status` and the CRD calls
are the one way the stores of this package (state store, approvals, cluster rules, CRDs) reach the
apiserver, with the same errors as every other call.

Errors (agent.adapters.errors; every message names the server, the verb, the object and what failed,
as in "kube-apiserver https://127.0.0.1:6443: PATCH persistentvolumeclaims kafka/data-kafka-0: 403
Forbidden: ..."; the kubernetes_asyncio `ApiException` or aiohttp error is chained as `__cause__`):

    KubeError                       .server .verb .resource .namespace .name .status .reason
    │                               .temporary: connection refused or reset, timeouts, 429, 5xx
    │                               (4xx and TLS certificate failures are permanent)
    │                               .retry_after: the server's Retry-After, when it sent one
    ├── NotFoundError               404
    └── ConflictError               409: a failed precondition (uid) or a stale resourceVersion

Watches (`watch()`, narrowed by label and field selectors): the first list is delivered as one
ADDED event per object (and, when asked, one SYNCED event after them), then the watch's
ADDED / MODIFIED / DELETED events follow (agent.adapters.kubernetes.cache keeps watch-fed caches
on them). Bookmarks only move the resourceVersion on. After every
later list (the resourceVersion expired, which is what a restarted apiserver answers) one `RESYNC`
event carries the whole list (`raw["items"]`): consumers replace their view and re-evaluate.
Temporary errors never reach the consumer: the watch backs off (`agent.adapters.retry`, jittered
exponential, on the client's Clock, so tests control time) and resumes from the last resourceVersion.
Permanent errors (403, 404, ...) are raised. The watch ends when the consumer stops iterating
(close it with `contextlib.aclosing` to end it at once) or when the client is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import os
import socket
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self

import aiohttp
import structlog
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.incluster_config import InClusterConfigLoader

from agent import __version__
from agent.adapters.clock import Clock
from agent.adapters.errors import ConflictError, KubeError, NotFoundError
from agent.adapters.retry import RetryPolicy, retrying
from agent.core.broker_identity import PodAddress
from agent.core.leadership import LeaseRecord
from agent.core.quantity import QuantityError, format_bytes, parse_bytes
from agent.core.rules import API_GROUP, API_VERSION

__all__ = [
    "REPORTING_CONTROLLER",
    "USER_AGENT",
    "ConflictError",
    "EventTarget",
    "KubeClient",
    "KubeError",
    "LeaseInfo",
    "NodeInfo",
    "NotFoundError",
    "OwnerReference",
    "PodInfo",
    "PvcCondition",
    "PvcInfo",
    "StorageClassInfo",
    "Taint",
    "VolumeAttachmentInfo",
    "WatchEvent",
    "connect",
]

USER_AGENT: Final = f"kafka-autopilot/{__version__}"
"""Sent with every request, so the apiserver's audit log (`userAgent`) shows which requests are ours."""

REPORTING_CONTROLLER: Final = "kafka-autopilot.io/agent"
"""`reportingController` of the Events the agent writes."""

SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
"""Where Kubernetes mounts a pod's service-account token and CA (read when running in a cluster)."""

TOKEN_REREAD_SECONDS: Final = 60.0
"""The kubelet rotates the mounted token; the agent reads the file again this often."""

DEFAULT_REQUEST_TIMEOUT_SECONDS: Final = 30.0
WATCH_RECONNECT: Final = RetryPolicy(attempts=None, base_seconds=0.5, max_seconds=10.0, jitter_seconds=0.5)
"""How a watch comes back after a temporary failure: no limit, pauses of 0.5 s doubling to 10 s, plus jitter."""
LIST_PAGE_SIZE = 500
"""Objects per page of a watch's list (as client-go's reflectors page theirs)."""
WATCH_MIN_HEALTHY_SECONDS: Final = 1.0
"""A watch request that ends sooner without one event counts as a failure (so it never spins)."""
WATCH_TIMEOUT_SECONDS: Final = 300
"""The apiserver ends each watch request after this long; the watch then simply resumes."""

TAINT_ATTEMPTS: Final = 3
"""Read-test-write rounds `taint_node` makes while others keep changing the node's taints."""

EVENT_NOTE_MAX_BYTES: Final = 1024
"""events.k8s.io/v1 refuses a `note` longer than this."""

WatchKind = Literal[
    "nodes",
    "pods",
    "leases",
    "pvcs",
    "namespaces",
    "storageclasses",
    "autopilotruleobjects",
    "actionapprovals",
    "autopilotrules",
]
WatchEventType = Literal["ADDED", "MODIFIED", "DELETED", "RESYNC", "SYNCED"]
ConditionStatus = Literal["True", "False", "Unknown"]
TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
EventType = Literal["Normal", "Warning"]

_CHANGES: Final[Mapping[str, WatchEventType]] = {"ADDED": "ADDED", "MODIFIED": "MODIFIED", "DELETED": "DELETED"}
_log = structlog.get_logger("kafka_autopilot.kubernetes")
_CONNECTION_ERRORS: Final = (aiohttp.ClientError, TimeoutError, OSError)


# --- errors ------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Operation:
    """One request, as error messages name it: "PATCH persistentvolumeclaims kafka/data-kafka-0"."""

    verb: str
    resource: str
    namespace: str | None = None
    name: str | None = None

    def __str__(self) -> str:
        if self.name is not None:
            target = f"{self.namespace}/{self.name}" if self.namespace else self.name
            return f"{self.verb} {self.resource} {target}"
        scope = f" in {self.namespace}" if self.namespace else ""
        return f"{self.verb} {self.resource}{scope}"

    def context(self, server: str) -> dict[str, Any]:
        return {
            "server": server,
            "verb": self.verb,
            "resource": self.resource,
            "namespace": self.namespace,
            "name": self.name,
        }


def _status_error(
    *, server: str, operation: _Operation, status: int, http_reason: str, body: Any, headers: Any
) -> KubeError:
    """The KubeError for an answer with an error status (or a watch's ERROR event)."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else str(body or "")
    api_reason: str | None = None
    detail = text.strip()[:500]
    with contextlib.suppress(ValueError, AttributeError):
        decoded = json.loads(text)
        if isinstance(decoded, Mapping):
            api_reason = decoded.get("reason") or None
            detail = str(decoded.get("message") or detail)
    message = f"kube-apiserver {server}: {operation}: {status} {http_reason}"
    if detail:
        message += f": {detail}"
    context = operation.context(server) | {"status": status, "reason": api_reason}
    if status == 429 or status >= 500:
        retry_after: float | None = None
        with contextlib.suppress(TypeError, ValueError, AttributeError):
            retry_after = max(0.0, float(headers.get("Retry-After")))
        return KubeError(message, temporary=True, retry_after=retry_after, **context)
    if status == 404:
        return NotFoundError(message, **context)
    if status == 409:
        return ConflictError(message, **context)
    return KubeError(message, **context)


def _connection_error(*, server: str, operation: _Operation, error: BaseException) -> KubeError:
    """The KubeError for a request that got no answer."""
    what = str(error) or type(error).__name__
    if isinstance(error, TimeoutError):
        what = "timed out"
    message = f"kube-apiserver {server}: {operation}: no answer: {what}"
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return KubeError(message, **operation.context(server))
    return KubeError(message, temporary=True, **operation.context(server))


# --- what the reads return ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class KubeUser:
    """A user as the apiserver authenticated it: name and groups."""

    name: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class OwnerReference:
    kind: str
    name: str
    controller: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class PvcCondition:
    type: str
    status: str
    reason: str | None = None
    message: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class PvcInfo:
    """A PersistentVolumeClaim: what it asks for (spec) and what it has got (status)."""

    namespace: str
    name: str
    uid: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    requested_bytes: int | None
    """spec.resources.requests.storage: the size the claim has been given (what a resize changes)."""
    capacity_bytes: int | None
    """status.capacity.storage: the size the volume has (follows the request once resized)."""
    storage_class: str | None
    phase: str | None
    volume_name: str | None
    owner_references: tuple[OwnerReference, ...]
    conditions: tuple[PvcCondition, ...]
    allocated_resource_statuses: Mapping[str, str] = field(default_factory=dict)
    """status.allocatedResourceStatuses: resource -> where its resize is (e.g. storage: NodeResizePending)."""

    @property
    def controller(self) -> str | None:
        """`Kind/name` of the controlling owner (e.g. a Strimzi StrimziPodSet), if any."""
        for owner in self.owner_references:
            if owner.controller:
                return f"{owner.kind}/{owner.name}"
        return None

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> PvcInfo:
        metadata = _mapping(raw.get("metadata"))
        spec = _mapping(raw.get("spec"))
        status = _mapping(raw.get("status"))
        return cls(
            namespace=str(metadata.get("namespace") or ""),
            name=str(metadata.get("name") or ""),
            uid=str(metadata.get("uid") or ""),
            labels=_strings(metadata.get("labels")),
            annotations=_strings(metadata.get("annotations")),
            requested_bytes=_bytes(_dig(spec, "resources", "requests", "storage")),
            capacity_bytes=_bytes(_dig(status, "capacity", "storage")),
            storage_class=_optional_str(spec.get("storageClassName")),
            phase=_optional_str(status.get("phase")),
            volume_name=_optional_str(spec.get("volumeName")),
            owner_references=tuple(
                OwnerReference(
                    kind=str(owner.get("kind") or ""),
                    name=str(owner.get("name") or ""),
                    controller=owner.get("controller") is True,
                )
                for owner in _mappings(metadata.get("ownerReferences"))
            ),
            conditions=tuple(
                PvcCondition(
                    type=str(condition.get("type") or ""),
                    status=str(condition.get("status") or ""),
                    reason=_optional_str(condition.get("reason")),
                    message=_optional_str(condition.get("message")),
                )
                for condition in _mappings(status.get("conditions"))
            ),
            allocated_resource_statuses=_strings(status.get("allocatedResourceStatuses")),
        )


@dataclass(frozen=True, kw_only=True)
class Taint:
    key: str
    effect: TaintEffect
    value: str | None = None

    def as_json(self) -> dict[str, str]:
        encoded = {"key": self.key, "effect": self.effect}
        if self.value is not None:
            encoded["value"] = self.value
        return encoded


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeInfo:
    name: str
    uid: str
    labels: Mapping[str, str]
    ready: ConditionStatus | None
    """The Ready condition's status; None while the node has reported none."""
    ready_since: float | None
    """When the Ready condition last changed status (lastTransitionTime), in epoch seconds."""
    unschedulable: bool
    taints: tuple[Taint, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> NodeInfo:
        metadata = _mapping(raw.get("metadata"))
        spec = _mapping(raw.get("spec"))
        ready: ConditionStatus | None = None
        ready_since: float | None = None
        for condition in _mappings(_dig(raw, "status", "conditions")):
            if condition.get("type") == "Ready":
                status = condition.get("status")
                ready = status if status in ("True", "False", "Unknown") else "Unknown"
                ready_since = _epoch(condition.get("lastTransitionTime"))
        return cls(
            name=str(metadata.get("name") or ""),
            uid=str(metadata.get("uid") or ""),
            labels=_strings(metadata.get("labels")),
            ready=ready,
            ready_since=ready_since,
            unschedulable=spec.get("unschedulable") is True,
            annotations=_strings(metadata.get("annotations")),
            taints=tuple(
                Taint(key=str(taint.get("key") or ""), value=_optional_str(taint.get("value")), effect=taint["effect"])
                for taint in _mappings(spec.get("taints"))
                if taint.get("effect") in ("NoSchedule", "PreferNoSchedule", "NoExecute")
            ),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class PodInfo:
    namespace: str
    name: str
    uid: str
    """What `force_delete_pod` needs, so it deletes this pod and never a namesake."""
    node: str | None
    phase: str | None
    labels: Mapping[str, str]
    deleting: bool
    """The pod has a deletionTimestamp: it is on its way out."""
    owner_kind: str | None
    owner_name: str | None
    """The controlling owner (e.g. StatefulSet kafka), if any."""
    claims: tuple[str, ...] = ()
    """The PersistentVolumeClaims its volumes mount (in its namespace)."""
    ips: tuple[str, ...] = ()
    """status.podIPs, status.podIP first."""
    hostname: str | None = None
    subdomain: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def address(self) -> PodAddress:
        """What broker identity is matched on (agent.core.broker_identity)."""
        return PodAddress(
            namespace=self.namespace,
            name=self.name,
            ips=self.ips,
            hostname=self.hostname,
            subdomain=self.subdomain,
            labels=self.labels,
            annotations=self.annotations,
        )

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> PodInfo:
        metadata = _mapping(raw.get("metadata"))
        owners = _mappings(metadata.get("ownerReferences"))
        controller = next((owner for owner in owners if owner.get("controller") is True), None)
        return cls(
            namespace=str(metadata.get("namespace") or ""),
            name=str(metadata.get("name") or ""),
            uid=str(metadata.get("uid") or ""),
            node=_optional_str(_dig(raw, "spec", "nodeName")),
            phase=_optional_str(_dig(raw, "status", "phase")),
            labels=_strings(metadata.get("labels")),
            deleting=metadata.get("deletionTimestamp") is not None,
            owner_kind=_optional_str(controller.get("kind")) if controller else None,
            owner_name=_optional_str(controller.get("name")) if controller else None,
            claims=tuple(
                str(claim)
                for volume in _mappings(_dig(raw, "spec", "volumes"))
                if (claim := _dig(volume, "persistentVolumeClaim", "claimName"))
            ),
            ips=_pod_ips(raw),
            hostname=_optional_str(_dig(raw, "spec", "hostname")),
            subdomain=_optional_str(_dig(raw, "spec", "subdomain")),
            annotations=_strings(metadata.get("annotations")),
        )


def _pod_ips(raw: Mapping[str, Any]) -> tuple[str, ...]:
    ips: list[str] = []
    for candidate in [_dig(raw, "status", "podIP"), *(m.get("ip") for m in _mappings(_dig(raw, "status", "podIPs")))]:
        if isinstance(candidate, str) and candidate and candidate not in ips:
            ips.append(candidate)
    return tuple(ips)


@dataclass(frozen=True, kw_only=True)
class StorageClassInfo:
    name: str
    provisioner: str
    allow_volume_expansion: bool

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> StorageClassInfo:
        return cls(
            name=str(_dig(raw, "metadata", "name") or ""),
            provisioner=str(raw.get("provisioner") or ""),
            allow_volume_expansion=raw.get("allowVolumeExpansion") is True,
        )


@dataclass(frozen=True, kw_only=True)
class VolumeAttachmentInfo:
    name: str
    node: str
    pv: str | None
    attached: bool


@dataclass(frozen=True, kw_only=True)
class LeaseInfo:
    """A coordination.k8s.io/v1 Lease: its spec as a LeaseRecord, and the resourceVersion to write it back with."""

    namespace: str
    name: str
    resource_version: str
    record: LeaseRecord

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> LeaseInfo:
        metadata = _mapping(raw.get("metadata"))
        spec = _mapping(raw.get("spec"))
        duration = spec.get("leaseDurationSeconds")
        transitions = spec.get("leaseTransitions")
        return cls(
            namespace=str(metadata.get("namespace") or ""),
            name=str(metadata.get("name") or ""),
            resource_version=str(metadata.get("resourceVersion") or ""),
            record=LeaseRecord(
                holder=_optional_str(spec.get("holderIdentity")),
                duration_seconds=float(duration) if isinstance(duration, int | float) else None,
                acquire_time=_epoch(spec.get("acquireTime")),
                renew_time=_epoch(spec.get("renewTime")),
                transitions=transitions if isinstance(transitions, int) else None,
            ),
        )


def _lease_spec(record: LeaseRecord) -> dict[str, Any]:
    """The Lease spec for `record`; a missing holder is written as null (released)."""
    return {
        "holderIdentity": record.holder or None,
        "leaseDurationSeconds": None if record.duration_seconds is None else max(1, round(record.duration_seconds)),
        "acquireTime": _micro_time(record.acquire_time),
        "renewTime": _micro_time(record.renew_time),
        "leaseTransitions": record.transitions,
    }


def _micro_time(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, kw_only=True)
class EventTarget:
    """The object an Event is about (events.k8s.io/v1 `regarding`)."""

    kind: str
    name: str
    namespace: str | None
    uid: str | None
    api_version: str = "v1"

    @classmethod
    def of_pvc(cls, pvc: PvcInfo) -> EventTarget:
        return cls(kind="PersistentVolumeClaim", name=pvc.name, namespace=pvc.namespace, uid=pvc.uid)

    @classmethod
    def of_node(cls, node: NodeInfo) -> EventTarget:
        return cls(kind="Node", name=node.name, namespace=None, uid=node.uid)

    @classmethod
    def of_pod(cls, pod: PodInfo) -> EventTarget:
        return cls(kind="Pod", name=pod.name, namespace=pod.namespace, uid=pod.uid)


@dataclass(frozen=True, kw_only=True)
class WatchEvent:
    """One change seen by `watch()`. For RESYNC, `object_name` is "" and `raw` is the whole List."""

    type: WatchEventType
    object_name: str
    namespace: str | None
    raw: Mapping[str, Any]


# --- JSON helpers ------------------------------------------------------------------------------------


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _mappings(value: Any) -> list[Mapping[str, Any]]:
    return [item for item in value if isinstance(item, Mapping)] if isinstance(value, list) else []


def _dig(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _strings(value: Any) -> dict[str, str]:
    return {str(key): str(item) for key, item in value.items()} if isinstance(value, Mapping) else {}


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _bytes(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return parse_bytes(value)
    except QuantityError:
        return None


def _epoch(value: Any) -> float | None:
    """RFC 3339 (Time or MicroTime) as epoch seconds."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def _truncate_utf8(text: str, max_bytes: int) -> str:
    encoded = text.encode()
    return text if len(encoded) <= max_bytes else encoded[:max_bytes].decode(errors="ignore")


# --- watchable resources -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Watchable:
    """A kind `watch()` follows: how to list it (all namespaces, or one), and the selectors that narrow it."""

    resource: str
    list_all: Callable[[Any], Callable[..., Any]]
    """api_client -> the call that lists (or, with watch=True, watches) every object of the kind."""
    list_namespaced: Callable[[Any, str], Callable[..., Any]] | None
    """(api_client, namespace) -> the call for one namespace; None for cluster-scoped kinds."""
    label_selector: str | None = None
    field_selector: str | None = None

    @property
    def selectors(self) -> dict[str, str]:
        """The kubernetes_asyncio keyword arguments that narrow the list and the watch server-side."""
        chosen = {"label_selector": self.label_selector, "field_selector": self.field_selector}
        return {key: value for key, value in chosen.items() if value}


def _custom(plural: str) -> _Watchable:
    """The agent's own kinds: cluster-scoped (AutopilotRuleObject, AutopilotRule) or namespaced (ActionApproval)."""
    version = API_VERSION.split("/", 1)[1]
    return _Watchable(
        resource=plural,
        list_all=lambda api: functools.partial(
            client.CustomObjectsApi(api).list_cluster_custom_object, API_GROUP, version, plural
        ),
        list_namespaced=lambda api, namespace: (
            lambda **options: client.CustomObjectsApi(api).list_namespaced_custom_object(
                API_GROUP, version, namespace, plural, **options
            )
        ),
    )


_WATCHABLE: Final[Mapping[str, _Watchable]] = {
    "nodes": _Watchable(resource="nodes", list_all=lambda api: client.CoreV1Api(api).list_node, list_namespaced=None),
    "pods": _Watchable(
        resource="pods",
        list_all=lambda api: client.CoreV1Api(api).list_pod_for_all_namespaces,
        list_namespaced=lambda api, namespace: functools.partial(client.CoreV1Api(api).list_namespaced_pod, namespace),
    ),
    "leases": _Watchable(
        resource="leases",
        list_all=lambda api: client.CoordinationV1Api(api).list_lease_for_all_namespaces,
        list_namespaced=lambda api, namespace: functools.partial(
            client.CoordinationV1Api(api).list_namespaced_lease, namespace
        ),
    ),
    "pvcs": _Watchable(
        resource="persistentvolumeclaims",
        list_all=lambda api: client.CoreV1Api(api).list_persistent_volume_claim_for_all_namespaces,
        list_namespaced=lambda api, namespace: functools.partial(
            client.CoreV1Api(api).list_namespaced_persistent_volume_claim, namespace
        ),
    ),
    "namespaces": _Watchable(
        resource="namespaces", list_all=lambda api: client.CoreV1Api(api).list_namespace, list_namespaced=None
    ),
    "storageclasses": _Watchable(
        resource="storageclasses",
        list_all=lambda api: client.StorageV1Api(api).list_storage_class,
        list_namespaced=None,
    ),
    "autopilotruleobjects": _custom("autopilotruleobjects"),
    "actionapprovals": _custom("actionapprovals"),
    "autopilotrules": _custom("autopilotrules"),
}


@dataclass(kw_only=True)
class _WatchCursor:
    """Where one watch stands: the resourceVersion to resume from and the open stream, if any."""

    source: _Watchable
    namespace: str | None
    version: str | None
    listed: bool = False
    page: str | None = None
    """The next page of the list under way (its `continue` token), if any."""
    resync_items: list[Mapping[str, Any]] = field(default_factory=list)
    """A re-list's items so far: a RESYNC replaces the view with all of them at once."""
    stream: AsyncGenerator[tuple[str, Mapping[str, Any]], None] | None = None
    started: float = 0.0
    delivered: bool = False
    synced_event: bool = False

    def __post_init__(self) -> None:
        self.listed = self.version is not None

    async def end_stream(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            await stream.aclose()


# --- the client --------------------------------------------------------------------------------------


class KubeClient:
    """A connection to one apiserver; make it with `connect()`, end it with `close()` or `async with`."""

    def __init__(
        self,
        *,
        api_client: Any,
        clock: Clock,
        request_timeout_seconds: float = DEFAULT_REQUEST_TIMEOUT_SECONDS,
        reporting_instance: str | None = None,
    ) -> None:
        self._api_client = api_client
        self._api_client.user_agent = USER_AGENT
        self._clock = clock
        self._event_numbers = itertools.count()
        self._timeout = request_timeout_seconds
        self._reporting_instance = reporting_instance or os.environ.get("POD_NAME") or socket.gethostname()
        self._core = client.CoreV1Api(api_client)
        self._storage = client.StorageV1Api(api_client)
        self._coordination = client.CoordinationV1Api(api_client)
        self._events = client.EventsV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._extensions = client.ApiextensionsV1Api(api_client)
        self._streams: set[aiohttp.ClientResponse] = set()
        self._closing = asyncio.Event()

    @property
    def server(self) -> str:
        """The apiserver's URL, as error messages name it."""
        host: str = self._api_client.configuration.host
        return host

    @property
    def api_client(self) -> Any:
        """The kubernetes_asyncio ApiClient underneath, for setting its User-Agent."""
        return self._api_client

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def closed(self) -> bool:
        return self._closing.is_set()

    async def close(self) -> None:
        """End every watch of this client and release the connections; idempotent."""
        if self._closing.is_set():
            return
        self._closing.set()
        for response in list(self._streams):
            response.close()
        await self._api_client.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    # -- reads

    async def list_pvcs(self, *, namespace: str | None = None, label_selector: str | None = None) -> list[PvcInfo]:
        """Every PVC (the label selector picks, server-side), or those of one namespace."""
        operation = _Operation(verb="GET", resource="persistentvolumeclaims", namespace=namespace)
        selector = {"label_selector": label_selector} if label_selector else {}
        if namespace is None:
            listing = await self._send(
                operation, self._core.list_persistent_volume_claim_for_all_namespaces, **selector
            )
        else:
            listing = await self._send(
                operation, self._core.list_namespaced_persistent_volume_claim, namespace, **selector
            )
        return [PvcInfo.from_raw(item) for item in _mappings(listing.get("items"))]

    async def get_pvc(self, *, namespace: str, name: str) -> PvcInfo:
        operation = _Operation(verb="GET", resource="persistentvolumeclaims", namespace=namespace, name=name)
        raw = await self._send(operation, self._core.read_namespaced_persistent_volume_claim, name, namespace)
        return PvcInfo.from_raw(raw)

    async def namespace_labels(self) -> dict[str, dict[str, str]]:
        """Namespace name -> its labels (what a rule's namespaceSelector matches)."""
        listing = await self._send(_Operation(verb="GET", resource="namespaces"), self._core.list_namespace)
        return {
            str(_dig(item, "metadata", "name")): _strings(_dig(item, "metadata", "labels"))
            for item in _mappings(listing.get("items"))
        }

    async def list_nodes(self) -> list[NodeInfo]:
        listing = await self._send(_Operation(verb="GET", resource="nodes"), self._core.list_node)
        return [NodeInfo.from_raw(item) for item in _mappings(listing.get("items"))]

    async def get_node(self, name: str) -> NodeInfo:
        """One node, fresh: what a destructive step re-checks right before it acts."""
        raw = await self._send(_Operation(verb="GET", resource="nodes", name=name), self._core.read_node, name)
        return NodeInfo.from_raw(raw)

    async def node_lease_renew_times(self) -> dict[str, float]:
        """Node name -> when its kubelet last renewed its Lease in kube-node-lease (epoch seconds)."""
        operation = _Operation(verb="GET", resource="leases", namespace="kube-node-lease")
        listing = await self._send(operation, self._coordination.list_namespaced_lease, "kube-node-lease")
        renewed: dict[str, float] = {}
        for lease in _mappings(listing.get("items")):
            when = _epoch(_dig(lease, "spec", "renewTime"))
            if when is not None:
                renewed[str(_dig(lease, "metadata", "name"))] = when
        return renewed

    async def list_pods(
        self, *, namespace: str | None = None, label_selector: str | None = None, field_selector: str | None = None
    ) -> list[PodInfo]:
        """The pods (of one namespace, or all) the selectors pick, server-side (e.g. `spec.nodeName=<node>`)."""
        operation = _Operation(verb="GET", resource="pods", namespace=namespace)
        chosen = {"label_selector": label_selector, "field_selector": field_selector}
        selector = {key: value for key, value in chosen.items() if value}
        if namespace is None:
            listing = await self._send(operation, self._core.list_pod_for_all_namespaces, **selector)
        else:
            listing = await self._send(operation, self._core.list_namespaced_pod, namespace, **selector)
        return [PodInfo.from_raw(item) for item in _mappings(listing.get("items"))]

    async def get_pod(self, *, namespace: str, name: str) -> PodInfo:
        operation = _Operation(verb="GET", resource="pods", namespace=namespace, name=name)
        return PodInfo.from_raw(await self._send(operation, self._core.read_namespaced_pod, name, namespace))

    async def storage_class(self, name: str) -> StorageClassInfo:
        """Raises NotFoundError when there is no such StorageClass."""
        operation = _Operation(verb="GET", resource="storageclasses", name=name)
        return StorageClassInfo.from_raw(await self._send(operation, self._storage.read_storage_class, name))

    async def list_volume_attachments(self) -> list[VolumeAttachmentInfo]:
        operation = _Operation(verb="GET", resource="volumeattachments")
        listing = await self._send(operation, self._storage.list_volume_attachment)
        return [
            VolumeAttachmentInfo(
                name=str(_dig(item, "metadata", "name") or ""),
                node=str(_dig(item, "spec", "nodeName") or ""),
                pv=_optional_str(_dig(item, "spec", "source", "persistentVolumeName")),
                attached=_dig(item, "status", "attached") is True,
            )
            for item in _mappings(listing.get("items"))
        ]

    # -- writes

    async def resize_pvc(self, *, namespace: str, name: str, new_bytes: int, annotations: Mapping[str, str]) -> PvcInfo:
        """Ask for `new_bytes` of storage and set `annotations`, in one merge patch; returns the PVC as written.

        Idempotent: the same size again changes nothing. The apiserver itself refuses a shrink (422).
        """
        patch = {
            "metadata": {"annotations": dict(annotations)},
            "spec": {"resources": {"requests": {"storage": format_bytes(new_bytes)}}},
        }
        return await self._patch_pvc(namespace=namespace, name=name, patch=patch)

    async def annotate_pvc(self, *, namespace: str, name: str, annotations: Mapping[str, str | None]) -> PvcInfo:
        """Set annotations in one merge patch (None removes one); returns the PVC as written."""
        return await self._patch_pvc(
            namespace=namespace, name=name, patch={"metadata": {"annotations": dict(annotations)}}
        )

    async def cordon_node(self, name: str, *, annotations: Mapping[str, str] | None = None) -> NodeInfo:
        """Mark the node unschedulable and set `annotations`, in one merge patch (idempotent)."""
        patch: dict[str, Any] = {"spec": {"unschedulable": True}}
        if annotations:
            patch["metadata"] = {"annotations": dict(annotations)}
        return await self._merge_patch_node(name, patch)

    async def annotate_node(self, name: str, *, annotations: Mapping[str, str]) -> NodeInfo:
        """Set `annotations` on the node (merge patch; idempotent)."""
        return await self._merge_patch_node(name, {"metadata": {"annotations": dict(annotations)}})

    async def release_node(
        self, name: str, *, marks: Mapping[str, str], uncordon: bool, taint_keys: Sequence[str]
    ) -> bool:
        """Undo what the agent did to a node, only if its marks are still there, in one JSON patch.

        `marks` are annotations the agent wrote (key -> the value it wrote): each is tested, then
        removed. With `uncordon`, spec.unschedulable goes back to false; taints with `taint_keys` are
        removed. Whatever changed since the marks were read fails the patch's tests (422) and is left
        alone. False when the node has none of the marks any more (nothing to undo).
        """
        read = _Operation(verb="GET", resource="nodes", name=name)
        node = await self._send(read, self._core.read_node, name)
        present = _strings(_dig(node, "metadata", "annotations"))
        mine = {key: value for key, value in marks.items() if present.get(key) == value}
        if not mine:
            return False
        patch: list[dict[str, Any]] = []
        for key, value in mine.items():
            path = "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")
            patch += [{"op": "test", "path": path, "value": value}, {"op": "remove", "path": path}]
        if uncordon:
            patch.append({"op": "add", "path": "/spec/unschedulable", "value": False})
        current = _dig(node, "spec", "taints")
        if taint_keys and current:
            kept = [dict(t) for t in _mappings(current) if t.get("key") not in taint_keys]
            patch += [
                {"op": "test", "path": "/spec/taints", "value": current},
                {"op": "add", "path": "/spec/taints", "value": kept},
            ]
        operation = _Operation(verb="PATCH", resource="nodes", name=name)
        await self._send(operation, self._core.patch_node, name, patch, _content_type="application/json-patch+json")
        return True

    async def taint_node(self, *, name: str, key: str, value: str | None, effect: TaintEffect) -> bool:
        """Add the taint unless the node has it already; True when the node's taints changed.

        A taint with the same key and effect but another value is replaced. The write is a JSON
        patch that first tests `spec.taints` against what was just read, so a concurrent change by
        someone else is never overwritten: the patch fails, and this reads again (3 tries).
        """
        wanted = Taint(key=key, value=value, effect=effect).as_json()
        operation = _Operation(verb="PATCH", resource="nodes", name=name)
        last_seen: object = object()
        for attempt in range(1, TAINT_ATTEMPTS + 1):
            node = await self._send(_Operation(verb="GET", resource="nodes", name=name), self._core.read_node, name)
            current = _dig(node, "spec", "taints")
            taints = [dict(taint) for taint in _mappings(current)]
            same = [
                index for index, taint in enumerate(taints) if taint.get("key") == key and taint.get("effect") == effect
            ]
            if same and taints[same[0]].get("value") == value:
                return False
            if same:
                taints[same[0]] = wanted
            else:
                taints.append(wanted)
            patch = [
                {"op": "test", "path": "/spec/taints", "value": current},
                {"op": "add", "path": "/spec/taints", "value": taints},
            ]
            try:
                await self._send(
                    operation, self._core.patch_node, name, patch, _content_type="application/json-patch+json"
                )
            except KubeError as error:
                # A failed `test` is a 422; if the taints did not move, the 422 is about our taint.
                if error.status != 422 or current == last_seen or attempt == TAINT_ATTEMPTS:
                    raise
                last_seen = current
                continue
            return True
        raise AssertionError("unreachable")

    async def delete_pod(self, *, namespace: str, name: str, uid: str) -> bool:
        """Delete the pod gracefully (its own termination grace period), only if it is still the pod with
        `uid`. True when the delete was accepted, False when no pod of that name exists any more; a
        namesake with another uid raises ConflictError and stays."""
        operation = _Operation(verb="DELETE", resource="pods", namespace=namespace, name=name)
        try:
            await self._send(
                operation, self._core.delete_namespaced_pod, name, namespace, body={"preconditions": {"uid": uid}}
            )
        except NotFoundError:
            return False
        return True

    async def force_delete_pod(self, *, namespace: str, name: str, uid: str) -> bool:
        """Delete the pod at once (grace period 0), only if it is still the pod with `uid`.

        True when it was deleted now, False when no pod of that name exists any more. A pod of
        that name with another uid (recreated since it was read) raises ConflictError and stays.
        """
        operation = _Operation(verb="DELETE", resource="pods", namespace=namespace, name=name)
        options = {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        try:
            await self._send(
                operation, self._core.delete_namespaced_pod, name, namespace, body=options, grace_period_seconds=0
            )
        except NotFoundError:
            return False
        return True

    async def delete_volume_attachment(self, name: str) -> bool:
        """True when it was deleted now, False when it was already gone."""
        operation = _Operation(verb="DELETE", resource="volumeattachments", name=name)
        try:
            await self._send(operation, self._storage.delete_volume_attachment, name)
        except NotFoundError:
            return False
        return True

    async def emit_event(
        self,
        *,
        involved: EventTarget,
        reason: str,
        message: str,
        type_: EventType,
        action: str,
        at: float | None = None,
    ) -> str:
        """Write an events.k8s.io/v1 Event about `involved`; returns its name.

        `at`: when it happened (Unix seconds; now if None), for an Event written a little later.
        Events about cluster-scoped objects (nodes) go into the "default" namespace.
        """
        namespace = involved.namespace or "default"
        now = self._clock.now() if at is None else at
        regarding = {"kind": involved.kind, "name": involved.name, "apiVersion": involved.api_version}
        if involved.namespace:
            regarding["namespace"] = involved.namespace
        if involved.uid:
            regarding["uid"] = involved.uid
        body = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            # A time-based suffix (and a count, for two Events in one microsecond), as generateName is
            # refused for Events ("name." is not a valid name).
            "metadata": {
                "name": f"{involved.name[:220]}.{round(now * 1e6):x}{next(self._event_numbers) % 4096:03x}",
                "namespace": namespace,
            },
            "eventTime": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "reportingController": REPORTING_CONTROLLER,
            "reportingInstance": self._reporting_instance,
            "action": action,
            "reason": reason,
            "note": _truncate_utf8(message, EVENT_NOTE_MAX_BYTES),
            "type": type_,
            "regarding": regarding,
        }
        operation = _Operation(verb="POST", resource="events", namespace=namespace)
        created = await self._send(operation, self._events.create_namespaced_event, namespace, body)
        return str(_dig(created, "metadata", "name"))

    # -- watches

    async def watch(
        self,
        kind: WatchKind,
        *,
        namespace: str | None = None,
        resource_version: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        synced_event: bool = False,
    ) -> AsyncGenerator[WatchEvent, None]:
        """Follow changes to one kind (of one namespace, or all), narrowed server-side by the selectors,
        without end.

        Lists first, in pages of LIST_PAGE_SIZE (one ADDED event per object; with `synced_event`, then
        one SYNCED event, so a cache knows its first list is complete), or, with `resource_version` (one
        saved before a restart), resumes from there. See the module docstring for RESYNC, backoff and
        ending.
        """
        source = replace(_WATCHABLE[kind], label_selector=label_selector, field_selector=field_selector)
        if namespace is not None and source.list_namespaced is None:
            raise ValueError(f"{kind} are cluster-scoped: watch them without a namespace")
        cursor = _WatchCursor(source=source, namespace=namespace, version=resource_version, synced_event=synced_event)
        try:
            while not self.closed:
                for event in await self._next_watch_events(cursor):
                    yield event
        finally:
            await cursor.end_stream()

    async def _next_watch_events(self, cursor: _WatchCursor) -> list[WatchEvent]:
        """The watch's next events, reconnecting through `agent.adapters.retry` until some come (or
        the client is closed); a permanent error is raised."""

        async def pause(seconds: float) -> None:
            await self._clock.wait(self._closing, timeout=seconds)  # cut short by close()

        async for attempt in retrying(WATCH_RECONNECT, clock=self._clock, sleep=pause):
            with attempt:
                return await self._watch_step(cursor)
        raise AssertionError("unreachable: tenacity returns or raises")

    async def _watch_step(self, cursor: _WatchCursor) -> list[WatchEvent]:
        """One step of a watch: list (when there is no resourceVersion to start from) or read the
        stream until it yields one change; [] when nothing is to be delivered yet."""
        if self.closed:
            return []
        source, namespace = cursor.source, cursor.namespace
        if cursor.stream is None:
            if cursor.version is None:
                return await self._list_page(cursor)
            cursor.stream = self._stream(source, namespace, cursor.version)
            cursor.started = self._clock.monotonic()
            cursor.delivered = False
        while True:
            try:
                event_type, obj = await anext(cursor.stream)
            except StopAsyncIteration:
                cursor.stream = None
                if not cursor.delivered and self._clock.monotonic() - cursor.started < WATCH_MIN_HEALTHY_SECONDS:
                    raise KubeError(
                        f"kube-apiserver {self.server}: {self._source_operation(source, 'WATCH', namespace)}: "
                        "ended at once without an event",
                        temporary=True,
                        **self._source_operation(source, "WATCH", namespace).context(self.server),
                    ) from None
                return []
            except KubeError as error:
                cursor.stream = None
                if error.status == 410:
                    _log.info(
                        "watch resourceVersion expired, listing again", resource=source.resource, error=str(error)
                    )
                    cursor.version = None
                    return []
                if error.temporary and not self.closed:
                    _log.warning("watch interrupted, resuming", resource=source.resource, error=str(error))
                raise
            cursor.delivered = True
            cursor.version = str(_dig(obj, "metadata", "resourceVersion") or "") or cursor.version
            change = _CHANGES.get(event_type)  # BOOKMARK only moves the resourceVersion on
            if change is not None:
                return [_watch_event(change, obj)]

    # -- leases (leader election) and the agent's namespace

    async def read_lease(self, *, namespace: str, name: str) -> LeaseInfo | None:
        """The Lease, or None when there is none."""
        operation = _Operation(verb="GET", resource="leases", namespace=namespace, name=name)
        try:
            raw = await self._send(operation, self._coordination.read_namespaced_lease, name, namespace)
        except NotFoundError:
            return None
        return LeaseInfo.from_raw(raw)

    async def create_lease(self, *, namespace: str, name: str, record: LeaseRecord) -> LeaseInfo:
        """Create the Lease; ConflictError when it exists already (someone else created it first),
        NotFoundError when the namespace does not exist."""
        operation = _Operation(verb="POST", resource="leases", namespace=namespace, name=name)
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace},
            "spec": _lease_spec(record),
        }
        raw = await self._send(operation, self._coordination.create_namespaced_lease, namespace, body)
        return LeaseInfo.from_raw(raw)

    async def replace_lease(self, lease: LeaseInfo, record: LeaseRecord) -> LeaseInfo:
        """Write `record` as the Lease's spec only if the Lease is still at `lease.resource_version`;
        ConflictError when someone wrote it in between."""
        operation = _Operation(verb="PUT", resource="leases", namespace=lease.namespace, name=lease.name)
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": lease.name, "namespace": lease.namespace, "resourceVersion": lease.resource_version},
            "spec": _lease_spec(record),
        }
        raw = await self._send(
            operation, self._coordination.replace_namespaced_lease, lease.name, lease.namespace, body
        )
        return LeaseInfo.from_raw(raw)

    async def ensure_namespace(self, name: str) -> bool:
        """Create the namespace unless it exists; True when it was created now."""
        read = _Operation(verb="GET", resource="namespaces", name=name)
        try:
            await self._send(read, self._core.read_namespace, name)
            return False
        except NotFoundError:
            pass
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        try:
            await self._send(
                _Operation(verb="POST", resource="namespaces", name=name), self._core.create_namespace, body
            )
        except ConflictError:
            return False
        return True

    # -- who is asking (the approval commands record it)

    async def whoami(self) -> KubeUser:
        """The caller's username and groups as the apiserver authenticated them (a SelfSubjectReview,
        which every authenticated user may create): who answers an approval, never a local login name."""
        operation = _Operation(verb="CREATE", resource="selfsubjectreviews")
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        authentication = client.AuthenticationV1Api(self._api_client)
        raw = await self._send(operation, authentication.create_self_subject_review, review)
        user_info = raw.get("status", {}).get("userInfo", {})
        username = str(user_info.get("username") or "")
        if not username:
            raise KubeError(
                f"kube-apiserver {self.server}: {operation}: the review names no user", **operation.context(self.server)
            )
        return KubeUser(name=username, groups=tuple(str(group) for group in user_info.get("groups") or ()))

    # -- custom resources and their definitions (the stores of this package)

    async def get_custom_object(
        self, *, group: str, version: str, plural: str, name: str, namespace: str | None = None
    ) -> dict[str, Any]:
        """One custom object; NotFoundError when there is none."""
        operation = _Operation(verb="GET", resource=plural, namespace=namespace, name=name)
        if namespace is None:
            return await self._send(operation, self._custom.get_cluster_custom_object, group, version, plural, name)
        return await self._send(
            operation, self._custom.get_namespaced_custom_object, group, version, namespace, plural, name
        )

    async def list_custom_objects(
        self,
        *,
        group: str,
        version: str,
        plural: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> dict[str, Any]:
        """One page of a List (of one namespace, or of all); its metadata.continue asks for the next."""
        operation = _Operation(verb="GET", resource=plural, namespace=namespace)
        options: dict[str, Any] = {}
        if label_selector:
            options["label_selector"] = label_selector
        if field_selector:
            options["field_selector"] = field_selector
        if limit is not None:
            options["limit"] = limit
        if continue_token is not None:
            options["_continue"] = continue_token
        if namespace is None:
            return await self._send(
                operation, self._custom.list_cluster_custom_object, group, version, plural, **options
            )
        return await self._send(
            operation, self._custom.list_namespaced_custom_object, group, version, namespace, plural, **options
        )

    async def create_custom_object(
        self, *, group: str, version: str, plural: str, body: Mapping[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        """Create it; ConflictError when it exists already."""
        name = _optional_str(_dig(body, "metadata", "name"))
        operation = _Operation(verb="POST", resource=plural, namespace=namespace, name=name)
        if namespace is None:
            return await self._send(
                operation, self._custom.create_cluster_custom_object, group, version, plural, dict(body)
            )
        return await self._send(
            operation, self._custom.create_namespaced_custom_object, group, version, namespace, plural, dict(body)
        )

    async def delete_custom_object(
        self, *, group: str, version: str, plural: str, name: str, uid: str, resource_version: str
    ) -> bool:
        """Delete a cluster-scoped object only while it is the one read (same uid and resourceVersion).

        True when it was deleted, False when it was already gone; one changed or recreated since it was
        read raises ConflictError and stays."""
        operation = _Operation(verb="DELETE", resource=plural, name=name)
        preconditions = {"preconditions": {"uid": uid, "resourceVersion": resource_version}}
        try:
            await self._send(
                operation, self._custom.delete_cluster_custom_object, group, version, plural, name, body=preconditions
            )
        except NotFoundError:
            return False
        return True

    async def patch_custom_object(
        self, *, group: str, version: str, plural: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A merge patch of a namespaced object; a `metadata.resourceVersion` in it makes it conditional (409)."""
        operation = _Operation(verb="PATCH", resource=plural, namespace=namespace, name=name)
        return await self._send(
            operation,
            self._custom.patch_namespaced_custom_object,
            group,
            version,
            namespace,
            plural,
            name,
            dict(patch),
            _content_type="application/merge-patch+json",
        )

    async def replace_custom_object_status(
        self, *, group: str, version: str, plural: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        """PUT the status of a cluster-scoped object; `body` carries the resourceVersion it was read at,
        so a write by someone else in between makes this fail with ConflictError."""
        name = str(_dig(body, "metadata", "name") or "")
        operation = _Operation(verb="PUT", resource=f"{plural}/status", name=name)
        return await self._send(
            operation, self._custom.replace_cluster_custom_object_status, group, version, plural, name, dict(body)
        )

    async def patch_custom_object_status(
        self, *, group: str, version: str, plural: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A merge patch of a namespaced object's status."""
        operation = _Operation(verb="PATCH", resource=f"{plural}/status", namespace=namespace, name=name)
        return await self._send(
            operation,
            self._custom.patch_namespaced_custom_object_status,
            group,
            version,
            namespace,
            plural,
            name,
            {"status": dict(status)},
            _content_type="application/merge-patch+json",
        )

    async def read_crd(self, name: str) -> dict[str, Any]:
        operation = _Operation(verb="GET", resource="customresourcedefinitions", name=name)
        return await self._send(operation, self._extensions.read_custom_resource_definition, name)

    async def create_crd(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        name = _optional_str(_dig(manifest, "metadata", "name"))
        operation = _Operation(verb="POST", resource="customresourcedefinitions", name=name)
        return await self._send(operation, self._extensions.create_custom_resource_definition, dict(manifest))

    async def replace_crd(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """PUT the definition; `manifest` carries the resourceVersion it replaces (ConflictError when stale)."""
        name = str(_dig(manifest, "metadata", "name") or "")
        operation = _Operation(verb="PUT", resource="customresourcedefinitions", name=name)
        return await self._send(operation, self._extensions.replace_custom_resource_definition, name, dict(manifest))

    # -- internals

    async def _merge_patch_node(self, name: str, patch: Mapping[str, Any]) -> NodeInfo:
        operation = _Operation(verb="PATCH", resource="nodes", name=name)
        raw = await self._send(
            operation, self._core.patch_node, name, patch, _content_type="application/merge-patch+json"
        )
        return NodeInfo.from_raw(raw)

    async def _patch_pvc(self, *, namespace: str, name: str, patch: Mapping[str, Any]) -> PvcInfo:
        operation = _Operation(verb="PATCH", resource="persistentvolumeclaims", namespace=namespace, name=name)
        raw = await self._send(
            operation,
            self._core.patch_namespaced_persistent_volume_claim,
            name,
            namespace,
            patch,
            _content_type="application/merge-patch+json",
        )
        return PvcInfo.from_raw(raw)

    async def _send(self, operation: _Operation, call: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """One request through kubernetes_asyncio, answered as decoded JSON or a KubeError."""
        if self.closed:
            raise RuntimeError("this KubeClient is closed")
        try:
            response = await call(*args, _preload_content=False, _request_timeout=self._timeout, **kwargs)
            try:
                body: bytes = await response.read()
            finally:
                response.release()
        except _CONNECTION_ERRORS as error:
            raise _connection_error(server=self.server, operation=operation, error=error) from error
        if not 200 <= response.status < 300:
            raise self._refusal(operation, response, body)
        decoded = json.loads(body) if body else {}
        return decoded if isinstance(decoded, dict) else {}

    def _source_operation(self, source: _Watchable, verb: str, namespace: str | None) -> _Operation:
        return _Operation(verb=verb, resource=source.resource, namespace=namespace)

    def _lister(self, source: _Watchable, namespace: str | None) -> Callable[..., Any]:
        """The list call for the source (narrowed by its selectors); with watch=True, its watch."""
        if namespace is None:
            lister = source.list_all(self._api_client)
        else:
            assert source.list_namespaced is not None  # watch() refuses a namespace for cluster-scoped kinds
            lister = source.list_namespaced(self._api_client, namespace)
        return functools.partial(lister, **source.selectors)

    async def _list_page(self, cursor: _WatchCursor) -> list[WatchEvent]:
        """One page (LIST_PAGE_SIZE objects) of a watch's list: the first list's objects as ADDED events,
        page by page, so the agent never holds a whole 10,000-object answer at once; a re-list's as one
        RESYNC once its last page is in. A page token that expired (410) starts the list again, delivered
        then as a RESYNC, which replaces whatever the cut list had added."""
        source, namespace = cursor.source, cursor.namespace
        paging: dict[str, Any] = {"limit": LIST_PAGE_SIZE}
        if cursor.page is not None:
            paging["_continue"] = cursor.page
        try:
            listing = await self._send(
                self._source_operation(source, "GET", namespace), self._lister(source, namespace), **paging
            )
        except KubeError as error:
            if error.status != 410 or cursor.page is None:
                raise
            _log.info("list page expired, listing again", resource=source.resource, error=str(error))
            cursor.page, cursor.listed = None, True
            cursor.resync_items.clear()
            return []
        items = _mappings(listing.get("items"))
        cursor.page = str(_dig(listing, "metadata", "continue") or "") or None
        if cursor.listed:
            cursor.resync_items.extend(items)
            if cursor.page is not None:
                return []
            listing = {**listing, "items": cursor.resync_items}
            cursor.resync_items = []
        cursor.version = (
            None if cursor.page is not None else str(_dig(listing, "metadata", "resourceVersion") or "") or None
        )
        if cursor.listed:
            _log.info("watch resynced", resource=source.resource, namespace=namespace, resource_version=cursor.version)
            return [WatchEvent(type="RESYNC", object_name="", namespace=namespace, raw=listing)]
        listed = [_watch_event("ADDED", item) for item in items]
        if cursor.page is None:
            cursor.listed = True
            if cursor.synced_event:
                listed.append(WatchEvent(type="SYNCED", object_name="", namespace=namespace, raw={}))
        return listed

    async def _stream(
        self, source: _Watchable, namespace: str | None, version: str | None
    ) -> AsyncGenerator[tuple[str, Mapping[str, Any]], None]:
        """One watch request: (type, object) per line until the server ends it; errors as KubeError."""
        if self.closed:  # closed while the consumer held an event: end quietly
            return
        operation = self._source_operation(source, "WATCH", namespace)
        timeout = aiohttp.ClientTimeout(sock_connect=self._timeout, sock_read=WATCH_TIMEOUT_SECONDS + 30)
        try:
            response = await self._lister(source, namespace)(
                watch=True,
                resource_version=version,
                allow_watch_bookmarks=True,
                timeout_seconds=WATCH_TIMEOUT_SECONDS,
                _preload_content=False,
                _request_timeout=timeout,
            )
        except _CONNECTION_ERRORS as error:
            raise _connection_error(server=self.server, operation=operation, error=error) from error
        self._streams.add(response)
        try:
            if response.status != 200:
                try:
                    body = await response.read()
                except _CONNECTION_ERRORS as error:
                    raise _connection_error(server=self.server, operation=operation, error=error) from error
                raise self._refusal(operation, response, body)
            while True:
                try:
                    line = await response.content.readline()
                    event = json.loads(line) if line.strip() else None
                except (*_CONNECTION_ERRORS, ValueError) as error:
                    raise _connection_error(server=self.server, operation=operation, error=error) from error
                if not line:
                    return
                if not isinstance(event, Mapping):
                    continue
                obj = _mapping(event.get("object"))
                if event.get("type") == "ERROR":
                    # What the apiserver says mid-stream, e.g. 410 Expired for a too old resourceVersion.
                    status = int(obj.get("code") or 500)
                    cause = ApiException(status=status, reason=f"{obj.get('reason')}: {obj.get('message')}")
                    refusal = _status_error(
                        server=self.server,
                        operation=operation,
                        status=status,
                        http_reason=str(obj.get("reason") or ""),
                        body=json.dumps(obj),
                        headers={},
                    )
                    raise refusal from cause
                yield str(event.get("type")), obj
        finally:
            self._streams.discard(response)
            response.close()

    def _refusal(self, operation: _Operation, response: aiohttp.ClientResponse, body: bytes) -> KubeError:
        """The KubeError for an error status, chained to the ApiException kubernetes_asyncio would raise."""
        cause = ApiException(status=response.status, reason=response.reason)
        cause.body = body
        cause.headers = response.headers
        error = _status_error(
            server=self.server,
            operation=operation,
            status=response.status,
            http_reason=response.reason or "",
            body=body,
            headers=response.headers,
        )
        error.__cause__ = cause
        return error


def _watch_event(event_type: WatchEventType, obj: Mapping[str, Any]) -> WatchEvent:
    metadata = _mapping(obj.get("metadata"))
    return WatchEvent(
        type=event_type,
        object_name=str(metadata.get("name") or ""),
        namespace=_optional_str(metadata.get("namespace")),
        raw=obj,
    )


# --- connecting --------------------------------------------------------------------------------------


async def connect(
    *,
    kubeconfig: Path | None = None,
    context: str | None = None,
    clock: Clock,
    request_timeout_seconds: float = DEFAULT_REQUEST_TIMEOUT_SECONDS,
    reporting_instance: str | None = None,
) -> KubeClient:
    """A client for the pod's own cluster (service account) or for a kubeconfig's context.

    In-cluster when `kubeconfig` is None and KUBERNETES_SERVICE_HOST is set; otherwise the
    kubeconfig file (`kubeconfig`, else $KUBECONFIG, else ~/.kube/config) and its `context` (else
    its current context). Files are read off the event loop.
    """
    configuration = client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        await asyncio.to_thread(_load_in_cluster, configuration)
        configuration.refresh_api_key_hook = _token_rereader(SERVICE_ACCOUNT_DIR / "token", clock=clock)
    else:
        try:
            await asyncio.to_thread(_load_kubeconfig, configuration, kubeconfig, context)
        except (config.ConfigException, OSError, ValueError) as error:
            where = str(kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config")
            raise KubeError(
                f"cannot load the kubeconfig {where}: {error}", server=where, verb="LOAD", resource="kubeconfig"
            ) from error
    return KubeClient(
        api_client=client.ApiClient(configuration=configuration),
        clock=clock,
        request_timeout_seconds=request_timeout_seconds,
        reporting_instance=reporting_instance,
    )


def _load_in_cluster(configuration: Any) -> None:
    """Runs in a worker thread: reads the service-account token and CA."""
    loader = InClusterConfigLoader(
        token_filename=str(SERVICE_ACCOUNT_DIR / "token"),
        cert_filename=str(SERVICE_ACCOUNT_DIR / "ca.crt"),
        try_refresh_token=False,
    )
    loader.load_and_set(configuration)


def _load_kubeconfig(configuration: Any, kubeconfig: Path | None, context: str | None) -> None:
    """Runs in a worker thread, with a loop of its own for kubernetes_asyncio's async loader."""
    asyncio.run(
        config.load_kube_config(
            config_file=None if kubeconfig is None else str(kubeconfig),
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    )


def _token_rereader(token_path: Path, *, clock: Clock) -> Callable[[Any], Awaitable[None]]:
    """An async refresh hook for kubernetes_asyncio: re-reads the mounted token once a minute, in a thread."""
    last_read = clock.monotonic()

    async def reread(configuration: Any) -> None:
        nonlocal last_read
        if clock.monotonic() - last_read < TOKEN_REREAD_SECONDS:
            return
        last_read = clock.monotonic()
        token = (await asyncio.to_thread(token_path.read_text)).strip()
        if token:
            configuration.api_key["BearerToken"] = f"Bearer {token}"

    return reread
