"""The storage twin: a SIMULATION of the storage layer, the one part of the sandbox that is not real.

Why it exists: the agent resizes PVCs, expands storage pools and reads volume and pool metrics, but
the sandbox has no disks, no CSI driver and no Portworx. This process stands in for all three, next
to the real kube-apiserver and controllers, and says that it is a simulation everywhere: in its log
lines, its HTTP `Server` header and the HELP text of every metric it serves.

    python -m sandbox.storage_twin --kubeconfig F --listen 127.0.0.1:PORT --state-file F
        [--resize-delay 2] [--node-resize-delay 1] [--provisioner kafka-autopilot.io/storage-twin]
        [--storage-node NODE ...]

Provisioner. For every Pending PVC (without a selector) whose StorageClass names the twin as its
provisioner, it creates PV `pvc-<claim uid>`: a `csi` source (driver: the provisioner name made a
DNS subdomain, "kafka-autopilot.io/storage-twin" -> "storage-twin.kafka-autopilot.io", as the API
refuses "/" in CSI driver names), capacity = the request, the claim's access modes and volume
mode, the class's reclaim policy (Delete by default) and a claimRef with the claim's uid. The real
PV binder binds the pair. A Released PV the twin provisioned with policy Delete is deleted.

Attacher. The twin registers the CSIDriver of that name with attachRequired true, so the real
attach-detach controller of kube-controller-manager (on nodes annotated
volumes.kubernetes.io/controller-managed-attach-detach) creates a VolumeAttachment
`csi-<sha256(volumeHandle + driver + node)>` when a pod using the volume is scheduled to a node, and
waits for it. The twin is the driver's external attacher, as csi-attacher is: it puts its finalizer
`external-attacher/<driver>` on each VolumeAttachment of its driver and sets status.attached true
(attachmentMetadata says it is simulated); one being deleted is detached (attached false, then the
finalizer removed, so the API deletes it). The controller, not the twin, decides when: it detaches a
volume once no pod on that node needs it (before attaching elsewhere: a ReadWriteOnce volume attached
to another node gets a Multi-Attach error event and waits), and the node's status.volumesAttached is
its record. The sandbox's kubelets (kwok) report no volumesInUse, so a detach never waits for an
unmount. Unlike csi-attacher, no finalizer is put on the PV.

Resizer. The real expand controller leaves CSI volumes to an external resizer; the twin is that
resizer and the kubelet's file-system step, writing the PVC status fields of Kubernetes v1.37
(RecoverVolumeExpansionFailure is GA there) through the `persistentvolumeclaims/status` subresource:

    spec request > status.capacity   conditions += Resizing; allocatedResources.storage = request;
                                     allocatedResourceStatuses.storage = ControllerResizeInProgress
    after --resize-delay             PV spec.capacity = request; Resizing -> FileSystemResizePending;
                                     allocatedResourceStatuses.storage = NodeResizePending
    after --node-resize-delay more   status.capacity = request; both conditions removed;
                                     allocatedResourceStatuses.storage removed

It never shrinks: a PV only ever grows, and a claim whose request is not above its capacity is left
alone. The apiserver itself refuses a request below status.capacity (validation, HTTP 422) and any
growth when the class has allowVolumeExpansion false (PersistentVolumeClaimResize admission, 403).

Initial pools. Each node given with --storage-node gets pool "0" at start (4 x 1Ti drives, 40% used,
labelled kafka-autopilot.io/pool=kafka), as a storage cluster has its pools before anyone asks; a
node that already has pools (a resumed state) is left as it is.

Usage model. A volume (keyed namespace/pvc, whether or not the claim exists yet) or a pool holds
`used` bytes at a wall-clock instant and grows at `bytes_per_second` (default 0; negative frees
space), clamped to [0, capacity]: a full volume stays full. Whenever the capacity or the rate
changes, the model is rebased at that instant, so a volume that was full grows on from its old
capacity instead of jumping.

Pools. A pool is `drives` drives of `drive_size` bytes on a node; total = drives * drive_size. A
resize request (shaped like the OpenStorage SDK's SdkStoragePoolResizeRequest) gives exactly one
of `size` (the new total in bytes) or `percentage` (growth in percent of the current total), and an
`operation_type` (SdkStoragePool.ResizeOperationType; default RESIZE_TYPE_AUTO). With growth =
size - total, or total * percentage / 100:

    RESIZE_TYPE_ADD_DISK     adds ceil(growth / drive_size) drives of the pool's drive size;
                             refused if that passes the pool's max_drives
    RESIZE_TYPE_RESIZE_DISK  every drive grows to ceil(drive_size + growth / drives), rounded up
                             to a whole GiB
    RESIZE_TYPE_AUTO         add-disk when the added drives fit under max_drives (or there is no
                             limit), else resize-disk

so the new total is always >= the requested one. A shrink or no-growth request gets HTTP 400; a
second resize while one runs gets 409. The new size applies --resize-delay seconds later; until
then `last_operation` reports OPERATION_IN_PROGRESS with a progress fraction.

Faithful to the SDK (api/api.proto of libopenstorage/openstorage, served by grpc-gateway v1 with
proto field names): pools are read through OpenStorageNode (`GET /v1/nodes` -> {"node_ids"},
`GET /v1/nodes/inspect/{id}` -> {"node": StorageNode with "pools" and "disks"}); a pool carries
the StoragePool fields `ID`, `Medium`, `TotalSize` and `Used` (uint64, so JSON strings), `labels`,
`uuid` and `last_operation` {type, msg, params, status}; OpenStoragePool.Resize is
`PUT /v1/storagepools/resize/{uuid}` with its fields in the query string (`size` = the new total in
GiB, or `percentage`; `operation_type`), answering `{}`; errors are grpc-gateway's
{"error", "code", "message", "details"}. The SDK has no per-pool drive facts; the twin adds them
to each pool as extensions (`drive_count`, `drive_size`, `max_drives`, `node`, `name`, ...), as it
adds `GET /v1/storagepools[/{uuid}]` and its own `/v1/storagepools/{uuid}/resize` (JSON body,
`size` in bytes, answering the pool). Every resize request received is kept (`resize_calls` in
/control/state), so tests can tell that nobody asked.

HTTP (JSON unless noted; errors are {"error": message} with a 4xx status):

    GET  /healthz                              liveness, and whether the first sync with the API is done
    GET  /metrics                              Prometheus text: kubelet_volume_stats_*, px_volume_*, px_pool_stats_*
    GET  /v1/storagepools                      {"pools": [pool, ...]}
    GET  /v1/storagepools/{uuid}               {"pool": pool}
    PUT|POST /v1/storagepools/{uuid}/resize    {"size"|"percentage", "operation_type"} -> 202 {"pool": pool}
    PUT  /v1/storagepools/resize/{uuid}        the SDK's Resize: ?size=GiB|percentage=N&operation_type=T -> {}
    GET  /v1/nodes, /v1/nodes/inspect/{node}   SdkNodeEnumerate / SdkNodeInspect: node ids, node with pools
                                               and disks (also at /v1/nodes/{node})
    POST /control/ingest                       {"namespace","pvc","bytes_per_second"} or {"node","pool",...}
    POST /control/used                         {"namespace","pvc","bytes"} or {"node","pool","bytes"}
    POST /control/pools                        {"node","pool","drives","drive_size"[,"used","max_drives","labels"]}
    GET  /control/state                        everything the twin keeps, for debugging

State. Used bytes, rates and pools live in memory and are written (atomically) to --state-file on
every change, so a restarted twin resumes: usage is a function of wall-clock time, so the bytes
ingested while it was down count, and a pool resize that fell due meanwhile completes. Volume
capacities are not stored; they come from the API. An in-flight PVC resize restarts its delay.

The module also holds what tests and the sandbox CLI use: `start_storage_twin`, `storage_twin_url`,
`stop_storage_twin` and the small synchronous `StorageTwinClient`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import os
import signal
import sys
import time
import urllib.error
import urllib.request
import uuid as uuid_module
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from agent.core.quantity import GIB, QuantityError, format_bytes, parse_bytes, parse_quantity, round_up
from sandbox.process import (
    Daemon,
    SandboxProcessError,
    daemon_from_pid_file,
    free_port,
    port_is_open,
    start_daemon,
    stop_daemon,
    wait_until,
)

DEFAULT_PROVISIONER: Final = "kafka-autopilot.io/storage-twin"
DEFAULT_RESIZE_DELAY_SECONDS: Final = 2.0
DEFAULT_NODE_RESIZE_DELAY_SECONDS: Final = 1.0
SIMULATION: Final = "storage twin (simulation)"
SERVER_HEADER: Final = "kafka-autopilot-storage-twin (a simulation of the storage layer)"
DAEMON_NAME: Final = "storage-twin"
PROVISIONED_BY: Final = "pv.kubernetes.io/provisioned-by"
RESIZING: Final = "Resizing"
FS_RESIZE_PENDING: Final = "FileSystemResizePending"
STATE_VERSION: Final = 1
RESYNC_SECONDS: Final = 5.0
WATCH_SECONDS: Final = 50
REQUEST_TIMEOUT_SECONDS: Final = 10.0

INITIAL_POOL_NAME: Final = "0"
INITIAL_POOL_DRIVES: Final = 4
INITIAL_POOL_DRIVE_SIZE: Final = 1024 * GIB
INITIAL_POOL_USED_FRACTION: Final = Fraction(2, 5)
INITIAL_POOL_LABELS: Final = {"kafka-autopilot.io/pool": "kafka"}
"""Every storage node's pool from the start: 4 x 1Ti drives, 40% used, not growing, labelled as the
shipped rule `rules/kafka-pool-expand.yaml` selects; it fires past 70%, so it watches but waits."""

_REPO: Final = Path(__file__).resolve().parents[1]
_log = structlog.get_logger("storage_twin", simulation="storage twin")


# --- the model: usage, pools, resize arithmetic (pure) -----------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Usage:
    """`used_bytes` at wall-clock `at`, growing by `bytes_per_second`, clamped to [0, capacity]."""

    used_bytes: float = 0.0
    at: float
    bytes_per_second: float = 0.0

    def used_at(self, now: float, *, capacity: int | None) -> float:
        used = self.used_bytes + self.bytes_per_second * max(0.0, now - self.at)
        if capacity is not None:
            used = min(used, float(capacity))
        return max(0.0, used)

    def rebased(self, now: float, *, capacity: int | None) -> Usage:
        """The same curve from `now` on, with the clamping so far made permanent."""
        return replace(self, used_bytes=self.used_at(now, capacity=capacity), at=now)


class ResizeType(StrEnum):
    """SdkStoragePool.ResizeOperationType; its numbers are the enum's index (AUTO = 0)."""

    AUTO = "RESIZE_TYPE_AUTO"
    ADD_DISK = "RESIZE_TYPE_ADD_DISK"
    RESIZE_DISK = "RESIZE_TYPE_RESIZE_DISK"


_RESIZE_TYPE_ALIASES: Final = {
    "0": ResizeType.AUTO,
    "1": ResizeType.ADD_DISK,
    "2": ResizeType.RESIZE_DISK,
    "auto": ResizeType.AUTO,
    "add-disk": ResizeType.ADD_DISK,
    "resize-disk": ResizeType.RESIZE_DISK,
}


class OperationStatus(StrEnum):
    """SdkStoragePool.OperationStatus."""

    PENDING = "OPERATION_PENDING"
    IN_PROGRESS = "OPERATION_IN_PROGRESS"
    SUCCESSFUL = "OPERATION_SUCCESSFUL"
    FAILED = "OPERATION_FAILED"


@dataclass(frozen=True, kw_only=True)
class PoolOperation:
    """A pool resize: what was asked, what it resolves to, and when it started and falls due."""

    status: OperationStatus
    operation_type: ResizeType
    requested: str
    from_total: int
    target_drive_count: int
    target_drive_size: int
    started_at: float
    due_at: float
    finished_at: float | None = None

    @property
    def target_total(self) -> int:
        return self.target_drive_count * self.target_drive_size


@dataclass(frozen=True, kw_only=True)
class Pool:
    """A storage pool of `drive_count` drives of `drive_size` bytes on `node`."""

    uuid: str
    node: str
    name: str
    id: int
    drive_count: int
    drive_size: int
    usage: Usage
    max_drives: int | None = None
    operation: PoolOperation | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    """User labels (the SDK's StoragePool.labels), e.g. kafka-autopilot.io/pool: kafka."""

    @property
    def total(self) -> int:
        return self.drive_count * self.drive_size


@dataclass(frozen=True, kw_only=True)
class PoolPlan:
    operation_type: ResizeType
    drive_count: int
    drive_size: int
    requested: str


class TwinRequestError(Exception):
    """A request the twin refuses: `status` is the HTTP status, `message` says why."""

    def __init__(self, *, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def pool_uuid(*, node: str, pool: str) -> str:
    """Stable across restarts and redefinitions: derived from the node and pool names."""
    return str(uuid_module.uuid5(uuid_module.NAMESPACE_URL, f"kafka-autopilot-storage-twin:{node}/{pool}"))


def plan_pool_resize(*, pool: Pool, size: int | None, percentage: int | None, operation_type: ResizeType) -> PoolPlan:
    """The pool's new drives, by the rules in the module docstring; raises TwinRequestError(400)."""
    where = f"storage pool {pool.uuid} (node {pool.node}, pool {pool.name})"
    total = pool.total
    if (size is None) == (percentage is None):
        raise TwinRequestError(status=400, message="give exactly one of 'size' (bytes) and 'percentage'")
    if size is not None:
        if size < total:
            raise TwinRequestError(
                status=400,
                message=(
                    f"refusing to shrink {where} from {format_bytes(total)} to {format_bytes(size)}:"
                    " a storage pool only grows"
                ),
            )
        if size == total:
            raise TwinRequestError(
                status=400, message=f"{where} is already {format_bytes(total)}: the requested size adds nothing"
            )
        growth = Fraction(size - total)
        requested = f"size {format_bytes(size)}"
    else:
        assert percentage is not None
        if percentage <= 0:
            raise TwinRequestError(
                status=400, message=f"'percentage' must be a positive whole number, got {percentage}"
            )
        growth = Fraction(total * percentage, 100)
        requested = f"percentage {percentage}%"
    drives_wanted = math.ceil(growth / pool.drive_size)
    fits = pool.max_drives is None or pool.drive_count + drives_wanted <= pool.max_drives
    resolved = operation_type
    if resolved is ResizeType.AUTO:
        resolved = ResizeType.ADD_DISK if fits else ResizeType.RESIZE_DISK
    if resolved is ResizeType.ADD_DISK:
        if not fits:
            raise TwinRequestError(
                status=400,
                message=(
                    f"{where}: adding {drives_wanted} drives of {format_bytes(pool.drive_size)} would pass"
                    f" its max_drives {pool.max_drives} (it has {pool.drive_count})"
                ),
            )
        return PoolPlan(
            operation_type=resolved,
            drive_count=pool.drive_count + drives_wanted,
            drive_size=pool.drive_size,
            requested=requested,
        )
    new_drive_size = round_up(math.ceil(pool.drive_size + growth / pool.drive_count), granularity=GIB)
    return PoolPlan(
        operation_type=resolved, drive_count=pool.drive_count, drive_size=new_drive_size, requested=requested
    )


def settle_pool(pool: Pool, *, now: float) -> Pool:
    """The pool with its resize applied if it fell due by `now` (at its due time, not at `now`)."""
    operation = pool.operation
    if operation is None or operation.status is not OperationStatus.IN_PROGRESS or operation.due_at > now:
        return pool
    return replace(
        pool,
        usage=pool.usage.rebased(operation.due_at, capacity=pool.total),
        drive_count=operation.target_drive_count,
        drive_size=operation.target_drive_size,
        operation=replace(operation, status=OperationStatus.SUCCESSFUL, finished_at=operation.due_at),
    )


# --- JSON shapes -------------------------------------------------------------------------------------


def _iso(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def pool_json(pool: Pool, *, now: float) -> dict[str, Any]:
    """A pool as the API shows it: the SDK StoragePool's fields in snake_case, plus the drives."""
    total = pool.total
    used = int(pool.usage.used_at(now, capacity=total))
    operation = pool.operation
    last: dict[str, Any] | None = None
    if operation is not None:
        span = operation.due_at - operation.started_at
        done = operation.status is not OperationStatus.IN_PROGRESS
        progress = 1.0 if done or span <= 0 else min(1.0, max(0.0, (now - operation.started_at) / span))
        verb = "resized" if done else "resizing"
        last = {
            "type": "OPERATION_RESIZE",
            "status": str(operation.status),
            "msg": (
                f"{SIMULATION}: {verb} pool from {format_bytes(operation.from_total)} to"
                f" {format_bytes(operation.target_total)} ({operation.operation_type}, {operation.requested})"
            ),
            "params": {
                "operation_type": str(operation.operation_type),
                "requested": operation.requested,
                "from_size": str(operation.from_total),
                "target_size": str(operation.target_total),
                "target_drive_count": str(operation.target_drive_count),
                "target_drive_size": str(operation.target_drive_size),
            },
            "progress": round(progress, 3),
            "started_at": _iso(operation.started_at),
            "due_at": _iso(operation.due_at),
            "finished_at": _iso(operation.finished_at),
        }
    return {
        # the SDK's StoragePool, as its REST gateway writes it (proto field names, uint64 as strings)
        "ID": pool.id,
        "Medium": "STORAGE_MEDIUM_SSD",
        "TotalSize": str(total),
        "Used": str(used),
        "labels": {**pool.labels, "node": pool.node, "pool": pool.name},
        "uuid": pool.uuid,
        "last_operation": last,
        # twin extensions (not in the SDK): the pool's name and node, its drives, its ingest
        "id": pool.id,
        "name": pool.name,
        "node": pool.node,
        "total_size": total,
        "used": used,
        "available": total - used,
        "drive_count": pool.drive_count,
        "drive_size": pool.drive_size,
        "max_drives": pool.max_drives,
        "ingest_bytes_per_second": pool.usage.bytes_per_second,
    }


def _usage_to_json(usage: Usage) -> dict[str, float]:
    return {"used_bytes": usage.used_bytes, "at": usage.at, "bytes_per_second": usage.bytes_per_second}


def _usage_from_json(raw: Mapping[str, Any]) -> Usage:
    return Usage(
        used_bytes=float(raw["used_bytes"]), at=float(raw["at"]), bytes_per_second=float(raw["bytes_per_second"])
    )


def _pool_to_json(pool: Pool) -> dict[str, Any]:
    operation = pool.operation
    return {
        "uuid": pool.uuid,
        "node": pool.node,
        "name": pool.name,
        "id": pool.id,
        "drive_count": pool.drive_count,
        "drive_size": pool.drive_size,
        "max_drives": pool.max_drives,
        "labels": dict(pool.labels),
        "usage": _usage_to_json(pool.usage),
        "operation": None
        if operation is None
        else {
            "status": str(operation.status),
            "operation_type": str(operation.operation_type),
            "requested": operation.requested,
            "from_total": operation.from_total,
            "target_drive_count": operation.target_drive_count,
            "target_drive_size": operation.target_drive_size,
            "started_at": operation.started_at,
            "due_at": operation.due_at,
            "finished_at": operation.finished_at,
        },
    }


def _pool_from_json(raw: Mapping[str, Any]) -> Pool:
    op = raw.get("operation")
    return Pool(
        uuid=str(raw["uuid"]),
        node=str(raw["node"]),
        name=str(raw["name"]),
        id=int(raw["id"]),
        drive_count=int(raw["drive_count"]),
        drive_size=int(raw["drive_size"]),
        max_drives=None if raw.get("max_drives") is None else int(raw["max_drives"]),
        labels={str(key): str(value) for key, value in (raw.get("labels") or {}).items()},
        usage=_usage_from_json(raw["usage"]),
        operation=None
        if op is None
        else PoolOperation(
            status=OperationStatus(op["status"]),
            operation_type=ResizeType(op["operation_type"]),
            requested=str(op["requested"]),
            from_total=int(op["from_total"]),
            target_drive_count=int(op["target_drive_count"]),
            target_drive_size=int(op["target_drive_size"]),
            started_at=float(op["started_at"]),
            due_at=float(op["due_at"]),
            finished_at=None if op.get("finished_at") is None else float(op["finished_at"]),
        ),
    )


# --- the state the twin keeps ------------------------------------------------------------------------


class TwinState:
    """Volume usage and pools, saved to `path` after every change. Time comes from `clock`."""

    def __init__(self, *, path: Path | None, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self.volumes: dict[str, Usage] = {}
        self.pools: dict[str, Pool] = {}
        self.resize_calls: list[dict[str, Any]] = []
        """Every resize request received (refused ones too), oldest first: tests check who asked what."""

    def load(self) -> None:
        """Read the state file if there is one; a corrupt one is set aside and the twin starts empty."""
        if self.path is None or not self.path.exists():
            return
        try:
            raw = json.loads(self.path.read_text())
            if raw.get("version") != STATE_VERSION:
                raise ValueError(f"version {raw.get('version')!r}, expected {STATE_VERSION}")
            volumes = {str(key): _usage_from_json(value) for key, value in raw["volumes"].items()}
            pools = {str(key): _pool_from_json(value) for key, value in raw["pools"].items()}
            calls = [dict(call) for call in raw.get("resize_calls", [])]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(self.clock())}")
            with contextlib.suppress(OSError):
                self.path.rename(aside)
            _log.error(f"{SIMULATION}: state file unreadable, starting empty", path=str(self.path), error=str(error))
            return
        self.volumes, self.pools, self.resize_calls = volumes, pools, calls
        _log.info(f"{SIMULATION}: state resumed", path=str(self.path), volumes=len(volumes), pools=len(pools))

    def save(self) -> None:
        if self.path is None:
            return
        payload = {
            "kind": "StorageTwinState",
            "version": STATE_VERSION,
            "note": f"state of the {SIMULATION}; times are Unix seconds",
            "volumes": {key: _usage_to_json(usage) for key, usage in sorted(self.volumes.items())},
            "pools": {key: _pool_to_json(pool) for key, pool in sorted(self.pools.items())},
            "resize_calls": self.resize_calls,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.path.with_name(f".{self.path.name}.tmp")
        scratch.write_text(json.dumps(payload, indent=2) + "\n")
        os.replace(scratch, self.path)

    # -- volumes

    def volume(self, key: str) -> Usage:
        return self.volumes.get(key) or Usage(at=self.clock())

    def set_volume(
        self, key: str, *, capacity: int | None, used_bytes: float | None = None, bytes_per_second: float | None = None
    ) -> Usage:
        now = self.clock()
        usage = self.volume(key).rebased(now, capacity=capacity)
        if used_bytes is not None:
            usage = replace(usage, used_bytes=min(used_bytes, capacity) if capacity is not None else used_bytes)
        if bytes_per_second is not None:
            usage = replace(usage, bytes_per_second=bytes_per_second)
        self.volumes[key] = usage
        self.save()
        return usage

    def capacity_changed(self, key: str, *, old_capacity: int | None) -> None:
        """Make the clamping at the old capacity permanent before the new capacity applies."""
        if key in self.volumes:
            self.volumes[key] = self.volumes[key].rebased(self.clock(), capacity=old_capacity)
            self.save()

    def forget_volume(self, key: str) -> None:
        if self.volumes.pop(key, None) is not None:
            self.save()

    # -- pools

    def settle(self) -> list[Pool]:
        """Apply the pool resizes that fell due; return the pools that changed."""
        now = self.clock()
        changed = []
        for key, pool in self.pools.items():
            settled = settle_pool(pool, now=now)
            if settled is not pool:
                self.pools[key] = settled
                changed.append(settled)
                _log.info(
                    f"{SIMULATION}: pool resize finished",
                    pool=settled.uuid,
                    node=settled.node,
                    name=settled.name,
                    total=format_bytes(settled.total),
                    drives=settled.drive_count,
                    drive_size=format_bytes(settled.drive_size),
                )
        if changed:
            self.save()
        return changed

    def pool(self, pool_id: str) -> Pool:
        self.settle()
        found = self.pools.get(pool_id)
        if found is None:
            raise TwinRequestError(status=404, message=f"no storage pool with uuid {pool_id!r}")
        return found

    def pool_named(self, *, node: str, name: str) -> Pool:
        return self.pool(pool_uuid(node=node, pool=name))

    def define_pool(
        self,
        *,
        node: str,
        name: str,
        drives: int,
        drive_size: int,
        used_bytes: int,
        max_drives: int | None,
        labels: Mapping[str, str] | None = None,
    ) -> Pool:
        key = pool_uuid(node=node, pool=name)
        existing = self.pools.get(key)
        if existing is not None:
            number = existing.id
            rate = existing.usage.bytes_per_second
        else:
            number = sum(1 for pool in self.pools.values() if pool.node == node)
            rate = 0.0
        total = drives * drive_size
        pool = Pool(
            uuid=key,
            node=node,
            name=name,
            id=number,
            drive_count=drives,
            drive_size=drive_size,
            max_drives=max_drives,
            usage=Usage(used_bytes=min(used_bytes, total), at=self.clock(), bytes_per_second=rate),
            labels=dict(labels or {}),
        )
        self.pools[key] = pool
        self.save()
        return pool

    def seed_pools(self, nodes: Iterable[str]) -> list[Pool]:
        """Define the initial pool on every node that has no pool yet (a resumed state keeps its own)."""
        has_pools = {pool.node for pool in self.pools.values()}
        return [
            self.define_pool(
                node=node,
                name=INITIAL_POOL_NAME,
                drives=INITIAL_POOL_DRIVES,
                drive_size=INITIAL_POOL_DRIVE_SIZE,
                used_bytes=int(INITIAL_POOL_DRIVES * INITIAL_POOL_DRIVE_SIZE * INITIAL_POOL_USED_FRACTION),
                max_drives=None,
                labels=INITIAL_POOL_LABELS,
            )
            for node in dict.fromkeys(nodes)
            if node not in has_pools
        ]

    def set_pool(self, pool: Pool, *, used_bytes: float | None = None, bytes_per_second: float | None = None) -> Pool:
        usage = pool.usage.rebased(self.clock(), capacity=pool.total)
        if used_bytes is not None:
            usage = replace(usage, used_bytes=min(used_bytes, pool.total))
        if bytes_per_second is not None:
            usage = replace(usage, bytes_per_second=bytes_per_second)
        updated = replace(pool, usage=usage)
        self.pools[pool.uuid] = updated
        self.save()
        return updated

    def resize_pool(
        self, pool_id: str, *, size: int | None, percentage: int | None, operation_type: ResizeType, delay: float
    ) -> Pool:
        pool = self.pool(pool_id)
        running = pool.operation
        if running is not None and running.status is OperationStatus.IN_PROGRESS:
            raise TwinRequestError(
                status=409,
                message=(
                    f"storage pool {pool.uuid} is already being resized to {format_bytes(running.target_total)}"
                    f" ({running.operation_type}); try again when last_operation is {OperationStatus.SUCCESSFUL}"
                ),
            )
        plan = plan_pool_resize(pool=pool, size=size, percentage=percentage, operation_type=operation_type)
        now = self.clock()
        operation = PoolOperation(
            status=OperationStatus.IN_PROGRESS,
            operation_type=plan.operation_type,
            requested=plan.requested,
            from_total=pool.total,
            target_drive_count=plan.drive_count,
            target_drive_size=plan.drive_size,
            started_at=now,
            due_at=now + delay,
        )
        updated = replace(pool, operation=operation)
        self.pools[pool.uuid] = updated
        self.save()
        return updated

    def note_resize_call(self, call: Mapping[str, Any]) -> None:
        self.resize_calls.append(dict(call))
        self.save()

    def to_json(self, *, now: float) -> dict[str, Any]:
        return {
            "simulation": SIMULATION,
            "volumes": {key: _usage_to_json(usage) for key, usage in sorted(self.volumes.items())},
            "pools": [pool_json(pool, now=now) for pool in sorted(self.pools.values(), key=_pool_order)],
            "resize_calls": list(self.resize_calls),
        }


def _pool_order(pool: Pool) -> tuple[str, int, str]:
    return (pool.node, pool.id, pool.name)


# --- metrics -----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BoundVolume:
    """A Bound claim of a twin class, as the last sync saw it; capacity is status.capacity.storage."""

    namespace: str
    pvc: str
    volume_name: str
    capacity_bytes: int | None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.pvc}"


_FAMILIES: Final = (
    ("kubelet_volume_stats_capacity_bytes", "capacity of the volume's file system in bytes"),
    ("kubelet_volume_stats_used_bytes", "bytes used in the volume's file system"),
    ("kubelet_volume_stats_available_bytes", "bytes available in the volume's file system"),
    ("px_volume_usage_bytes", "bytes used in the volume"),
    ("px_volume_capacity_bytes", "size of the volume in bytes"),
    ("px_pool_stats_total_bytes", "total size of the storage pool in bytes"),
    ("px_pool_stats_used_bytes", "bytes used in the storage pool"),
    ("px_pool_stats_available_bytes", "bytes available in the storage pool"),
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _sample(name: str, labels: Mapping[str, str], value: float) -> str:
    rendered = ",".join(f'{key}="{_escape(text)}"' for key, text in labels.items())
    return f"{name}{{{rendered}}} {int(value)}"


def render_metrics(
    *, volumes: Iterable[BoundVolume], usage: Mapping[str, Usage], pools: Iterable[Pool], now: float, provisioner: str
) -> str:
    """The Prometheus text exposition (format 0.0.4) of every bound volume and every pool."""
    samples: dict[str, list[str]] = {name: [] for name, _ in _FAMILIES}
    for volume in sorted(volumes, key=lambda item: item.key):
        capacity = volume.capacity_bytes
        if capacity is None or capacity <= 0:
            continue  # no capacity is no data, not a zero
        current = usage.get(volume.key) or Usage(at=now)
        used = int(current.used_at(now, capacity=capacity))
        kubelet = {"namespace": volume.namespace, "persistentvolumeclaim": volume.pvc}
        portworx = {"namespace": volume.namespace, "pvc": volume.pvc, "volumename": volume.volume_name}
        samples["kubelet_volume_stats_capacity_bytes"].append(
            _sample("kubelet_volume_stats_capacity_bytes", kubelet, capacity)
        )
        samples["kubelet_volume_stats_used_bytes"].append(_sample("kubelet_volume_stats_used_bytes", kubelet, used))
        samples["kubelet_volume_stats_available_bytes"].append(
            _sample("kubelet_volume_stats_available_bytes", kubelet, capacity - used)
        )
        samples["px_volume_usage_bytes"].append(_sample("px_volume_usage_bytes", portworx, used))
        samples["px_volume_capacity_bytes"].append(_sample("px_volume_capacity_bytes", portworx, capacity))
    for pool in sorted(pools, key=_pool_order):
        total = pool.total
        used = int(pool.usage.used_at(now, capacity=total))
        labels = {"node": pool.node, "pool": pool.name}
        samples["px_pool_stats_total_bytes"].append(_sample("px_pool_stats_total_bytes", labels, total))
        samples["px_pool_stats_used_bytes"].append(_sample("px_pool_stats_used_bytes", labels, used))
        samples["px_pool_stats_available_bytes"].append(_sample("px_pool_stats_available_bytes", labels, total - used))
    lines = [
        f"# HELP storage_twin_info The {SIMULATION} is serving these metrics; none comes from real storage.",
        "# TYPE storage_twin_info gauge",
        _sample("storage_twin_info", {"provisioner": provisioner, "simulation": "true"}, 1),
    ]
    for name, meaning in _FAMILIES:
        lines.append(f"# HELP {name} Simulated by the {SIMULATION}: {meaning}.")
        lines.append(f"# TYPE {name} gauge")
        lines.extend(samples[name])
    return "\n".join(lines) + "\n"


# --- Kubernetes: provisioner and resizer ------------------------------------------------------------


class ResizeStage(StrEnum):
    CONTROLLER = "controller"
    NODE = "node"


@dataclass(frozen=True, kw_only=True)
class InFlightResize:
    """A PVC being expanded: the target (as the claim wrote it), the stage, and when it falls due."""

    target: str
    target_bytes: int
    stage: ResizeStage
    started: float
    due: float


def csi_driver_name(provisioner: str) -> str:
    """A CSI driver name (a DNS subdomain) for the provisioner: "a.io/twin" -> "twin.a.io"."""
    prefix, slash, name = provisioner.partition("/")
    return f"{name}.{prefix}" if slash else provisioner


def attacher_finalizer(driver: str) -> str:
    """The finalizer an external attacher puts on the VolumeAttachments it serves (csi-attacher's form)."""
    return f"external-attacher/{driver.replace('/', '-')}"


def csi_driver_manifest(driver: str) -> dict[str, Any]:
    """The CSIDriver the twin registers: attachment required, so the attach-detach controller creates a
    VolumeAttachment per volume and node, and the twin (its external attacher) answers it."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "CSIDriver",
        "metadata": {
            "name": driver,
            "labels": {"app.kubernetes.io/managed-by": "kafka-autopilot-storage-twin"},
            "annotations": {"kafka-autopilot.io/simulation": SIMULATION},
        },
        "spec": {
            "attachRequired": True,
            "podInfoOnMount": False,
            "volumeLifecycleModes": ["Persistent"],
            "fsGroupPolicy": "ReadWriteOnceWithFSType",
        },
    }


class AttacherMove(StrEnum):
    ATTACH = "attach"
    DETACH = "detach"


@dataclass(frozen=True, kw_only=True)
class AttacherStep:
    """What the twin, as its driver's external attacher, does next to one VolumeAttachment: set
    `finalizers` (a merge patch of the whole list, conditional on `resource_version`) when they
    change, then patch `status` through the status subresource."""

    name: str
    move: AttacherMove
    resource_version: str | None
    finalizers: tuple[str, ...] | None
    status: Mapping[str, Any]


def attacher_step(attachment: Mapping[str, Any], *, driver: str) -> AttacherStep | None:
    """The next step for a VolumeAttachment, or None when it is not the driver's or needs nothing.

    As csi-attacher does: an attachment being deleted (deletionTimestamp) with our finalizer is detached
    (attached false, finalizer removed, so the API can delete it); any other one of our driver gets our
    finalizer first, then attached true. A source other than a PersistentVolume (an inline volume) is
    refused with an attachError: the twin provisions only PVs.
    """
    spec, meta = attachment.get("spec") or {}, attachment.get("metadata") or {}
    if spec.get("attacher") != driver:
        return None
    finalizer = attacher_finalizer(driver)
    finalizers = tuple(meta.get("finalizers") or ())
    status = attachment.get("status") or {}
    name, version = str(meta.get("name")), meta.get("resourceVersion")
    if meta.get("deletionTimestamp"):
        if finalizer not in finalizers:
            return None
        return AttacherStep(
            name=name,
            move=AttacherMove.DETACH,
            resource_version=version,
            finalizers=tuple(f for f in finalizers if f != finalizer),
            status={"attached": False, "attachmentMetadata": None, "detachError": None},
        )
    pv_name = (spec.get("source") or {}).get("persistentVolumeName")
    if not pv_name:
        if status.get("attachError"):
            return None
        message = f"{SIMULATION}: only PersistentVolumes attach, not inline volumes"
        error = {"time": _now_rfc3339(), "message": message}
        return AttacherStep(
            name=name,
            move=AttacherMove.ATTACH,
            resource_version=version,
            finalizers=None,
            status={"attachError": error},
        )
    if finalizer in finalizers and status.get("attached") is True:
        return None
    return AttacherStep(
        name=name,
        move=AttacherMove.ATTACH,
        resource_version=version,
        finalizers=None if finalizer in finalizers else (*finalizers, finalizer),
        status={
            "attached": True,
            "attachmentMetadata": {"simulation": "storage-twin", "devicePath": f"/dev/twin/{pv_name}"},
            "attachError": None,
        },
    )


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _claim_class(claim: Mapping[str, Any]) -> str | None:
    name = (claim.get("spec") or {}).get("storageClassName")
    if name:
        return str(name)
    annotations = (claim.get("metadata") or {}).get("annotations") or {}
    legacy = annotations.get("volume.beta.kubernetes.io/storage-class")
    return str(legacy) if legacy else None


def _bound_volume(claim: Mapping[str, Any], pv: Mapping[str, Any]) -> BoundVolume:
    meta = claim["metadata"]
    capacity = ((claim.get("status") or {}).get("capacity") or {}).get("storage")
    return BoundVolume(
        namespace=meta["namespace"],
        pvc=meta["name"],
        volume_name=pv["metadata"]["name"],
        capacity_bytes=None if capacity is None else parse_bytes(capacity),
    )


def _other_conditions(claim: Mapping[str, Any]) -> list[dict[str, Any]]:
    conditions = (claim.get("status") or {}).get("conditions") or []
    return [c for c in conditions if c.get("type") not in (RESIZING, FS_RESIZE_PENDING)]


def _condition(kind: str, message: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True",
        "lastProbeTime": None,
        "lastTransitionTime": _now_rfc3339(),
        "message": message,
    }


class KubeSync:
    """Level-triggered sync with the API: watches only wake it up; every pass lists classes, claims
    and volumes and moves each one step. A pass also runs every RESYNC_SECONDS and when a resize
    step falls due, so an apiserver restart or a missed event costs at most a few seconds.
    """

    def __init__(
        self,
        *,
        provisioner: str,
        resize_delay: float,
        node_resize_delay: float,
        state: TwinState,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provisioner = provisioner
        self.driver = csi_driver_name(provisioner)
        self.resize_delay = resize_delay
        self.node_resize_delay = node_resize_delay
        self.state = state
        self.monotonic = monotonic
        self.bound: dict[str, BoundVolume] = {}
        self.synced = False
        self.last_error: str | None = None
        self._resizes: dict[str, InFlightResize] = {}
        self._refusals: set[str] = set()
        self.driver_registered = False
        self.attached: dict[str, str] = {}
        """VolumeAttachment name -> node, for those the twin has attached (status.attached true)."""
        self._wake = asyncio.Event()
        self._core: Any = None
        self._storage: Any = None

    def capacity_of(self, key: str) -> int | None:
        volume = self.bound.get(key)
        return None if volume is None else volume.capacity_bytes

    async def run(self) -> None:
        api = client.ApiClient()
        self._core = client.CoreV1Api(api)
        self._storage = client.StorageV1Api(api)
        watchers = [
            asyncio.create_task(self._watch(self._core.list_persistent_volume_claim_for_all_namespaces)),
            asyncio.create_task(self._watch(self._core.list_persistent_volume)),
            asyncio.create_task(self._watch(self._storage.list_volume_attachment)),
        ]
        try:
            while True:
                next_due = await self._pass_safely()
                delay = RESYNC_SECONDS if next_due is None else min(RESYNC_SECONDS, next_due - self.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=max(0.05, delay))
                self._wake.clear()
                await asyncio.sleep(0.05)  # let a burst of watch events arrive before the next pass
        finally:
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            await api.close()

    async def _watch(self, list_func: Any) -> None:
        while True:
            try:
                async with watch.Watch() as stream:
                    async for _event in stream.stream(list_func, timeout_seconds=WATCH_SECONDS):
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the apiserver went away or the watch expired: start again
                _log.debug(f"{SIMULATION}: watch ended", error=str(error)[:200])
                await asyncio.sleep(1.0)
            self._wake.set()

    async def _pass_safely(self) -> float | None:
        try:
            next_due = await self.sync_once()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            message = f"{type(error).__name__}: {error}"[:300]
            if message != self.last_error:
                _log.warning(f"{SIMULATION}: sync with the API failed, retrying", error=message)
            self.last_error = message
            return self.monotonic() + 1.0
        if self.last_error is not None:
            _log.info(f"{SIMULATION}: sync with the API works again")
        self.last_error = None
        self.synced = True
        return next_due

    async def _list(self, func: Any) -> list[dict[str, Any]]:
        response = await func(_preload_content=False, _request_timeout=REQUEST_TIMEOUT_SECONDS)
        try:
            body = await response.read()
            if not 200 <= response.status <= 299:
                raise RuntimeError(f"list failed with HTTP {response.status}: {body[:300]!r}")
        finally:
            response.release()
        items: list[dict[str, Any]] = json.loads(body).get("items") or []
        return items

    async def sync_once(self) -> float | None:
        """One pass over the driver, every VolumeAttachment, claim and volume; returns when (monotonic)
        a resize step falls due."""
        if not self.driver_registered:
            await self._register_driver()
        await self._attach_pass()
        classes = {
            item["metadata"]["name"]: item
            for item in await self._list(self._storage.list_storage_class)
            if item.get("provisioner") == self.provisioner
        }
        claims = await self._list(self._core.list_persistent_volume_claim_for_all_namespaces)
        volumes = await self._list(self._core.list_persistent_volume)
        volumes_by_name = {pv["metadata"]["name"]: pv for pv in volumes}
        bound: dict[str, BoundVolume] = {}
        live_uids = set()
        for claim in claims:
            class_name = _claim_class(claim)
            if class_name not in classes:
                continue
            meta = claim["metadata"]
            live_uids.add(meta["uid"])
            phase = (claim.get("status") or {}).get("phase")
            volume_name = (claim.get("spec") or {}).get("volumeName")
            try:
                if phase == "Pending" and not volume_name:
                    await self._provision(claim, classes[class_name], volumes_by_name)
                elif phase == "Bound" and volume_name in volumes_by_name:
                    volume = _bound_volume(claim, volumes_by_name[volume_name])
                    bound[volume.key] = volume
                    bound[volume.key] = await self._resize_step(claim, volumes_by_name[volume_name], volume)
            except ApiException as error:  # this claim only; the others go on
                self._refused(f"claim {meta['namespace']}/{meta['name']}", error)
        claim_keys = {f"{c['metadata']['namespace']}/{c['metadata']['name']}" for c in claims}
        for pv in volumes:
            try:
                await self._reclaim(pv, claim_keys)
            except ApiException as error:
                self._refused(f"volume {pv['metadata']['name']}", error)
        for key, volume in bound.items():
            old = self.bound.get(key)
            if old is not None and old.capacity_bytes != volume.capacity_bytes:
                self.state.capacity_changed(key, old_capacity=old.capacity_bytes)
        self.bound = bound
        for uid in set(self._resizes) - live_uids:
            del self._resizes[uid]
        return min((flight.due for flight in self._resizes.values()), default=None)

    async def _register_driver(self) -> None:
        """Create the CSIDriver object; one that exists already is kept (its attachRequired is immutable)."""
        try:
            await self._storage.create_csi_driver(
                csi_driver_manifest(self.driver), _request_timeout=REQUEST_TIMEOUT_SECONDS
            )
            _log.info(f"{SIMULATION}: CSIDriver registered", driver=self.driver, attach_required=True)
        except ApiException as error:
            if error.status != 409:
                raise
        self.driver_registered = True

    async def _attach_pass(self) -> None:
        """Play the external attacher of the twin's driver for every VolumeAttachment, one step each."""
        attached: dict[str, str] = {}
        for attachment in await self._list(self._storage.list_volume_attachment):
            step = attacher_step(attachment, driver=self.driver)
            node = str((attachment.get("spec") or {}).get("nodeName"))
            if step is None:
                if (attachment.get("status") or {}).get("attached") is True and not (
                    attachment["metadata"].get("deletionTimestamp")
                ):
                    attached[attachment["metadata"]["name"]] = node
                continue
            try:
                await self._apply_attacher_step(step)
            except ApiException as error:
                if error.status != 404:  # gone meanwhile: nothing left to do
                    self._refused(f"VolumeAttachment {step.name}", error)
                continue
            source = (attachment.get("spec") or {}).get("source") or {}
            now_attached = step.status.get("attached") is True
            done = "detached" if step.move is AttacherMove.DETACH else "attached" if now_attached else "refused"
            _log.info(
                f"{SIMULATION}: volume {done}", attachment=step.name, pv=source.get("persistentVolumeName"), node=node
            )
            if now_attached:
                attached[step.name] = node
        self.attached = attached

    async def _apply_attacher_step(self, step: AttacherStep) -> None:
        """Attach: finalizer first, then the status. Detach: the status first, then the finalizer last,
        which lets the API delete the object."""

        async def finalizers(version: str | None) -> None:
            if step.finalizers is None:
                return
            await self._storage.patch_volume_attachment(
                step.name,
                {"metadata": {"resourceVersion": version, "finalizers": list(step.finalizers) or None}},
                _content_type="application/merge-patch+json",
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )

        async def status() -> str | None:
            patched = await self._storage.patch_volume_attachment_status(
                step.name,
                {"status": dict(step.status)},
                _content_type="application/merge-patch+json",
                _request_timeout=REQUEST_TIMEOUT_SECONDS,
            )
            version: str | None = patched.metadata.resource_version
            return version

        if step.move is AttacherMove.ATTACH:
            await finalizers(step.resource_version)
            await status()
        else:
            await finalizers(await status())

    async def _provision(
        self, claim: Mapping[str, Any], storage_class: Mapping[str, Any], volumes: Mapping[str, Any]
    ) -> None:
        meta, spec = claim["metadata"], claim.get("spec") or {}
        name = f"pvc-{meta['uid']}"
        request = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
        if name in volumes or not request or spec.get("selector"):
            return  # provisioned already, or a claim a dynamic provisioner does not serve
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": name,
                "annotations": {PROVISIONED_BY: self.provisioner},
                "labels": {"app.kubernetes.io/managed-by": "kafka-autopilot-storage-twin"},
            },
            "spec": {
                "capacity": {"storage": request},
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "volumeMode": spec.get("volumeMode") or "Filesystem",
                "storageClassName": storage_class["metadata"]["name"],
                "persistentVolumeReclaimPolicy": storage_class.get("reclaimPolicy") or "Delete",
                "mountOptions": storage_class.get("mountOptions") or None,
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "resourceVersion": meta.get("resourceVersion"),
                },
                "csi": {
                    "driver": self.driver,
                    "volumeHandle": f"twin-{meta['uid']}",
                    "fsType": "ext4",
                    "volumeAttributes": {"simulation": "storage-twin"},
                },
            },
        }
        try:
            await self._core.create_persistent_volume(body, _request_timeout=REQUEST_TIMEOUT_SECONDS)
        except ApiException as error:
            if error.status != 409:
                raise
            return
        _log.info(
            f"{SIMULATION}: provisioned a volume",
            pv=name,
            pvc=f"{meta['namespace']}/{meta['name']}",
            size=request,
            driver=self.driver,
        )

    async def _reclaim(self, pv: Mapping[str, Any], claim_keys: set[str]) -> None:
        meta = pv["metadata"]
        if (meta.get("annotations") or {}).get(PROVISIONED_BY) != self.provisioner or meta.get("deletionTimestamp"):
            return
        if (pv.get("status") or {}).get("phase") != "Released":
            return
        if (pv.get("spec") or {}).get("persistentVolumeReclaimPolicy") != "Delete":
            return
        try:
            await self._core.delete_persistent_volume(meta["name"], _request_timeout=REQUEST_TIMEOUT_SECONDS)
        except ApiException as error:
            if error.status != 404:
                raise
        claim = (pv.get("spec") or {}).get("claimRef") or {}
        key = f"{claim.get('namespace')}/{claim.get('name')}"
        if key not in claim_keys:
            self.state.forget_volume(key)
        _log.info(f"{SIMULATION}: deleted a released volume", pv=meta["name"], pvc=key)

    def _refused(self, what: str, error: ApiException) -> None:
        """A write about one object failed: a conflict means it changed under us, so look again soon;
        anything else is logged once and retried on later passes."""
        if error.status == 409:
            self._wake.set()
            return
        message = f"{what}: HTTP {error.status}: {str(error.body)[:300]}"
        if message not in self._refusals:
            self._refusals.add(message)
            _log.warning(f"{SIMULATION}: the API refused a write", error=message)

    async def _resize_step(self, claim: Mapping[str, Any], pv: Mapping[str, Any], volume: BoundVolume) -> BoundVolume:
        """Move a bound claim's expansion one step if one is due; return the claim's volume."""
        meta, spec, status = claim["metadata"], claim.get("spec") or {}, claim.get("status") or {}
        uid = meta["uid"]
        capacity_text = (status.get("capacity") or {}).get("storage")
        request_text = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
        if request_text is None or volume.capacity_bytes is None:
            return volume
        request = parse_bytes(request_text)
        if request <= volume.capacity_bytes:
            self._resizes.pop(uid, None)
            return volume
        now = self.monotonic()
        flight = self._resizes.get(uid)
        if flight is None or request > flight.target_bytes:
            await self._patch_status(
                claim,
                {
                    "conditions": [
                        *_other_conditions(claim),
                        _condition(RESIZING, f"{SIMULATION}: expanding the volume to {request_text}"),
                    ],
                    "allocatedResources": {"storage": request_text},
                    "allocatedResourceStatuses": {"storage": "ControllerResizeInProgress"},
                },
            )
            self._resizes[uid] = InFlightResize(
                target=request_text,
                target_bytes=request,
                stage=ResizeStage.CONTROLLER,
                started=now if flight is None else flight.started,
                due=now + self.resize_delay,
            )
            _log.info(
                f"{SIMULATION}: resize started",
                pvc=volume.key,
                pv=volume.volume_name,
                size_from=capacity_text,
                size_to=request_text,
            )
            return volume
        if now < flight.due:
            return volume
        if flight.stage is ResizeStage.CONTROLLER:
            pv_capacity = parse_bytes(((pv.get("spec") or {}).get("capacity") or {}).get("storage", "0"))
            if pv_capacity < flight.target_bytes:  # never shrink the volume
                await self._core.patch_persistent_volume(
                    volume.volume_name,
                    {"spec": {"capacity": {"storage": flight.target}}},
                    _request_timeout=REQUEST_TIMEOUT_SECONDS,
                )
            await self._patch_status(
                claim,
                {
                    "conditions": [
                        *_other_conditions(claim),
                        _condition(
                            FS_RESIZE_PENDING, f"{SIMULATION}: volume expanded to {flight.target}; file system next"
                        ),
                    ],
                    "allocatedResources": {"storage": flight.target},
                    "allocatedResourceStatuses": {"storage": "NodeResizePending"},
                },
            )
            self._resizes[uid] = replace(flight, stage=ResizeStage.NODE, due=now + self.node_resize_delay)
            _log.info(f"{SIMULATION}: volume expanded", pv=volume.volume_name, size=flight.target)
            return volume
        await self._patch_status(
            claim,
            {
                "capacity": {"storage": flight.target},
                "conditions": _other_conditions(claim) or None,
                "allocatedResources": {"storage": flight.target},
                "allocatedResourceStatuses": {"storage": None},
            },
        )
        del self._resizes[uid]
        _log.info(
            f"{SIMULATION}: resize finished",
            pvc=volume.key,
            size=flight.target,
            seconds=round(now - flight.started, 2),
        )
        return replace(volume, capacity_bytes=flight.target_bytes)

    async def _patch_status(self, claim: Mapping[str, Any], status: Mapping[str, Any]) -> None:
        """A merge patch of the status subresource, conditional on the claim's resourceVersion."""
        meta = claim["metadata"]
        await self._core.patch_namespaced_persistent_volume_claim_status(
            meta["name"],
            meta["namespace"],
            {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status},
            _content_type="application/merge-patch+json",
            _request_timeout=REQUEST_TIMEOUT_SECONDS,
        )


# --- HTTP ---------------------------------------------------------------------------------------------


def _text_field(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise TwinRequestError(status=400, message=f"'{name}' must be a non-empty string, got {value!r}")
    return value


def _bytes_field(body: Mapping[str, Any], name: str, *, minimum: int = 0) -> int:
    """Bytes as a JSON integer, a decimal string (the SDK's uint64 encoding) or a quantity ("5Ti")."""
    value = body.get(name)
    try:
        if isinstance(value, bool) or value is None:
            raise QuantityError(str(value), "not a number")
        if isinstance(value, float) and not value.is_integer():
            raise QuantityError(str(value), "not a whole number of bytes")
        count = parse_bytes(str(int(value))) if isinstance(value, int | float) else parse_bytes(str(value))
    except (QuantityError, ValueError) as error:
        raise TwinRequestError(
            status=400, message=f"'{name}' must be a number of bytes or a quantity such as \"400Gi\": {error}"
        ) from error
    if count < minimum:
        raise TwinRequestError(status=400, message=f"'{name}' must be at least {minimum}, got {count}")
    return count


def _rate_field(body: Mapping[str, Any], name: str) -> float:
    value = body.get(name)
    try:
        if isinstance(value, bool) or value is None:
            raise QuantityError(str(value), "not a number")
        rate = float(value) if isinstance(value, int | float) else float(parse_quantity(str(value)))
    except (QuantityError, ValueError) as error:
        raise TwinRequestError(
            status=400, message=f"'{name}' must be a number of bytes per second or a quantity: {error}"
        ) from error
    if not math.isfinite(rate):
        raise TwinRequestError(status=400, message=f"'{name}' must be finite, got {value!r}")
    return rate


def _resize_type_field(body: Mapping[str, Any]) -> ResizeType:
    value = body.get("operation_type", ResizeType.AUTO.value)
    text = str(value).strip()
    for kind in ResizeType:
        if text == kind.value:
            return kind
    if isinstance(value, int | str) and text in _RESIZE_TYPE_ALIASES:
        return _RESIZE_TYPE_ALIASES[text]
    known = ", ".join(kind.value for kind in ResizeType)
    raise TwinRequestError(status=400, message=f"unknown operation_type {value!r}; use one of {known} (or 0, 1, 2)")


def _labels_field(body: Mapping[str, Any]) -> dict[str, str]:
    value = body.get("labels") or {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise TwinRequestError(status=400, message=f"'labels' must map strings to strings, got {value!r}")
    return dict(value)


def _percentage_field(body: Mapping[str, Any]) -> int | None:
    value = body.get("percentage")
    if value is None:
        return None
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
        raise TwinRequestError(
            status=400, message=f"'percentage' must be a whole number (a uint64 in the SDK), got {value!r}"
        )
    return int(value)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError as error:
        raise TwinRequestError(status=400, message=f"the body must be a JSON object: {error}") from error
    if not isinstance(body, dict):
        raise TwinRequestError(status=400, message="the body must be a JSON object")
    return body


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except TwinRequestError as error:
        return web.json_response(_error_body(error.message, error.status), status=error.status)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return web.json_response(_error_body(error.reason, error.status), status=error.status)


_GRPC_CODES: Final = {400: 3, 401: 16, 403: 7, 404: 5, 409: 10, 412: 9, 429: 8, 500: 13, 501: 12, 503: 14}
"""HTTP status -> the gRPC code the SDK's REST gateway would have mapped to it."""


def _error_body(message: str, status: int) -> dict[str, Any]:
    """grpc-gateway's error body ({"error", "code", "message", "details"}), plus the HTTP status."""
    return {"error": message, "code": _GRPC_CODES.get(status, 2), "message": message, "details": [], "status": status}


async def _server_header(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_HEADER


class StorageTwin:
    """The twin's parts under one roof: state, sync with the API, and the HTTP application."""

    def __init__(
        self,
        *,
        provisioner: str,
        resize_delay: float,
        node_resize_delay: float,
        state_file: Path | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.provisioner = provisioner
        self.resize_delay = resize_delay
        self.clock = clock
        self.state = TwinState(path=state_file, clock=clock)
        self.kube = KubeSync(
            provisioner=provisioner, resize_delay=resize_delay, node_resize_delay=node_resize_delay, state=self.state
        )

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_errors])
        app.on_response_prepare.append(_server_header)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/v1/storagepools", self._pools)
        app.router.add_put("/v1/storagepools/resize/{uuid}", self._sdk_resize)
        app.router.add_get("/v1/storagepools/{uuid}", self._pool)
        app.router.add_put("/v1/storagepools/{uuid}/resize", self._resize)
        app.router.add_post("/v1/storagepools/{uuid}/resize", self._resize)
        app.router.add_get("/v1/nodes", self._nodes)
        app.router.add_get("/v1/nodes/inspect/{node}", self._node)
        app.router.add_get("/v1/nodes/{node}", self._node)
        app.router.add_post("/control/ingest", self._ingest)
        app.router.add_post("/control/used", self._used)
        app.router.add_post("/control/pools", self._define_pool)
        app.router.add_get("/control/state", self._state)
        return app

    async def tick(self) -> None:
        """Complete pool resizes as they fall due, even when nobody asks (reads also complete them)."""
        while True:
            self.state.settle()
            await asyncio.sleep(0.25)

    # -- handlers

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "simulation": SIMULATION,
                "provisioner": self.provisioner,
                "csi_driver": self.kube.driver,
                "synced": self.kube.synced,
                "kube_api_error": self.kube.last_error,
                "bound_volumes": len(self.kube.bound),
                "csi_driver_registered": self.kube.driver_registered,
                "attached_volumes": len(self.kube.attached),
                "pools": len(self.state.pools),
            }
        )

    async def _metrics(self, _request: web.Request) -> web.Response:
        self.state.settle()
        text = render_metrics(
            volumes=self.kube.bound.values(),
            usage=self.state.volumes,
            pools=self.state.pools.values(),
            now=self.clock(),
            provisioner=self.provisioner,
        )
        return web.Response(text=text, content_type="text/plain", charset="utf-8", headers={"X-Simulation": "true"})

    def _pools_json(self, *, node: str | None = None) -> list[dict[str, Any]]:
        self.state.settle()
        now = self.clock()
        pools = sorted(self.state.pools.values(), key=_pool_order)
        return [pool_json(pool, now=now) for pool in pools if node is None or pool.node == node]

    async def _pools(self, _request: web.Request) -> web.Response:
        return web.json_response({"pools": self._pools_json()})

    async def _pool(self, request: web.Request) -> web.Response:
        pool = self.state.pool(request.match_info["uuid"])
        return web.json_response({"pool": pool_json(pool, now=self.clock())})

    async def _resize(self, request: web.Request) -> web.Response:
        """The twin's own resize: a JSON body, `size` in bytes; answers with the pool."""
        pool_id = request.match_info["uuid"]
        self.state.note_resize_call(
            {"at": self.clock(), "path": request.path, "query": dict(request.query), "body": await request.text()}
        )
        body = await _json_body(request)
        if body.get("uuid") not in (None, "", pool_id):
            raise TwinRequestError(
                status=400, message=f"body uuid {body['uuid']!r} differs from the path's {pool_id!r}"
            )
        size = None if body.get("size") is None else _bytes_field(body, "size", minimum=1)
        pool = self._start_resize(
            pool_id, size=size, percentage=_percentage_field(body), operation_type=_resize_type_field(body)
        )
        return web.json_response({"pool": pool_json(pool, now=self.clock())}, status=202)

    async def _sdk_resize(self, request: web.Request) -> web.Response:
        """OpenStoragePool.Resize as the SDK's REST gateway serves it: the request's fields come from
        the query string (the HTTP rule has no body), `size` is the new total in GiB, and the answer is
        the empty SdkStoragePoolResizeResponse."""
        pool_id = request.match_info["uuid"]
        query = dict(request.query)
        self.state.note_resize_call(
            {"at": self.clock(), "path": request.path, "query": query, "body": await request.text()}
        )
        size_gib = query.get("size")
        size = None
        if size_gib is not None:
            if not size_gib.isdigit() or int(size_gib) < 1:
                raise TwinRequestError(
                    status=400, message=f"'size' must be a whole number of GiB >= 1, got {size_gib!r}"
                )
            size = int(size_gib) * GIB
        self._start_resize(
            pool_id, size=size, percentage=_percentage_field(query), operation_type=_resize_type_field(query)
        )
        return web.json_response({})

    def _start_resize(
        self, pool_id: str, *, size: int | None, percentage: int | None, operation_type: ResizeType
    ) -> Pool:
        pool = self.state.resize_pool(
            pool_id, size=size, percentage=percentage, operation_type=operation_type, delay=self.resize_delay
        )
        operation = pool.operation
        assert operation is not None
        _log.info(
            f"{SIMULATION}: pool resize started",
            pool=pool.uuid,
            node=pool.node,
            name=pool.name,
            requested=operation.requested,
            operation_type=str(operation.operation_type),
            size_from=format_bytes(operation.from_total),
            size_to=format_bytes(operation.target_total),
        )
        return pool

    async def _nodes(self, _request: web.Request) -> web.Response:
        return web.json_response({"node_ids": sorted({pool.node for pool in self.state.pools.values()})})

    async def _node(self, request: web.Request) -> web.Response:
        node = request.match_info["node"]
        pools = self._pools_json(node=node)
        if not pools:
            raise TwinRequestError(status=404, message=f"no storage node {node!r} (define a pool on it first)")
        disks = {
            f"/dev/twin/{pool['name']}/{index}": {
                "id": f"{pool['uuid']}-{index}",
                "path": f"/dev/twin/{pool['name']}/{index}",
                "medium": "STORAGE_MEDIUM_SSD",
                "online": True,
                "size": str(pool["drive_size"]),
            }
            for pool in pools
            for index in range(pool["drive_count"])
        }
        return web.json_response(
            {
                "node": {
                    "id": node,
                    "hostname": node,
                    "scheduler_node_name": node,
                    "status": "STATUS_OK",
                    "disks": disks,
                    "pools": pools,
                }
            }
        )

    async def _ingest(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        rate = _rate_field(body, "bytes_per_second")
        if "node" in body or "pool" in body:
            pool = self.state.pool_named(node=_text_field(body, "node"), name=_text_field(body, "pool"))
            pool = self.state.set_pool(pool, bytes_per_second=rate)
            _log.info(f"{SIMULATION}: pool ingest set", node=pool.node, pool=pool.name, bytes_per_second=rate)
            return web.json_response({"pool": pool_json(pool, now=self.clock())})
        key = f"{_text_field(body, 'namespace')}/{_text_field(body, 'pvc')}"
        usage = self.state.set_volume(key, capacity=self.kube.capacity_of(key), bytes_per_second=rate)
        _log.info(f"{SIMULATION}: volume ingest set", pvc=key, bytes_per_second=rate)
        return web.json_response({"volume": self._volume_json(key, usage)})

    async def _used(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        used = _bytes_field(body, "bytes")
        if "node" in body or "pool" in body:
            pool = self.state.pool_named(node=_text_field(body, "node"), name=_text_field(body, "pool"))
            pool = self.state.set_pool(pool, used_bytes=used)
            _log.info(f"{SIMULATION}: pool used set", node=pool.node, pool=pool.name, used=used)
            return web.json_response({"pool": pool_json(pool, now=self.clock())})
        key = f"{_text_field(body, 'namespace')}/{_text_field(body, 'pvc')}"
        usage = self.state.set_volume(key, capacity=self.kube.capacity_of(key), used_bytes=used)
        _log.info(f"{SIMULATION}: volume used set", pvc=key, used=used)
        return web.json_response({"volume": self._volume_json(key, usage)})

    def _volume_json(self, key: str, usage: Usage) -> dict[str, Any]:
        capacity = self.kube.capacity_of(key)
        return {
            "key": key,
            "capacity": capacity,
            "used": int(usage.used_at(self.clock(), capacity=capacity)),
            "bytes_per_second": usage.bytes_per_second,
        }

    async def _define_pool(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        max_drives = body.get("max_drives")
        if max_drives is not None and (isinstance(max_drives, bool) or not isinstance(max_drives, int)):
            raise TwinRequestError(status=400, message=f"'max_drives' must be a whole number, got {max_drives!r}")
        drives = body.get("drives")
        if isinstance(drives, bool) or not isinstance(drives, int) or drives < 1:
            raise TwinRequestError(status=400, message=f"'drives' must be a whole number >= 1, got {drives!r}")
        if max_drives is not None and drives > max_drives:
            raise TwinRequestError(status=400, message=f"'drives' {drives} is above 'max_drives' {max_drives}")
        pool = self.state.define_pool(
            node=_text_field(body, "node"),
            name=_text_field(body, "pool"),
            drives=drives,
            drive_size=_bytes_field(body, "drive_size", minimum=1),
            used_bytes=_bytes_field(body, "used") if body.get("used") is not None else 0,
            max_drives=max_drives,
            labels=_labels_field(body),
        )
        _log.info(
            f"{SIMULATION}: pool defined",
            pool=pool.uuid,
            node=pool.node,
            name=pool.name,
            drives=pool.drive_count,
            drive_size=format_bytes(pool.drive_size),
        )
        return web.json_response({"pool": pool_json(pool, now=self.clock())}, status=201)

    async def _state(self, _request: web.Request) -> web.Response:
        self.state.settle()
        return web.json_response(self.state.to_json(now=self.clock()))


# --- the process ------------------------------------------------------------------------------------


def _loopback_listen(text: str) -> tuple[str, int]:
    host, _, port_text = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port_text.isdigit():
        raise ValueError(f"--listen wants HOST:PORT, got {text!r}")
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"--listen {text}: the storage twin only listens on a loopback address")
    return host, int(port_text)


def _configure_logging() -> None:
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )


async def serve(
    *, twin: StorageTwin, kubeconfig: Path, host: str, port: int, storage_nodes: Sequence[str] = ()
) -> None:
    """Serve until SIGTERM or SIGINT, then stop the sync and the HTTP server."""
    await config.load_kube_config(config_file=str(kubeconfig))
    twin.state.load()
    for pool in twin.state.seed_pools(storage_nodes):
        _log.info(
            f"{SIMULATION}: initial pool",
            pool=pool.uuid,
            node=pool.node,
            name=pool.name,
            total=format_bytes(pool.total),
            used=format_bytes(int(pool.usage.used_bytes)),
        )
    runner = web.AppRunner(twin.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    tasks = [asyncio.create_task(twin.kube.run()), asyncio.create_task(twin.tick())]
    _log.info(
        f"{SIMULATION}: listening",
        url=f"http://{host}:{port}",
        provisioner=twin.provisioner,
        resize_delay=twin.resize_delay,
        state_file=str(twin.state.path),
    )
    done_task = asyncio.create_task(stop.wait())
    finished, _ = await asyncio.wait([done_task, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for task in (*tasks, done_task):
        task.cancel()
    results = await asyncio.gather(*tasks, done_task, return_exceptions=True)
    await runner.cleanup()
    failures = [r for r in results if isinstance(r, Exception) and not isinstance(r, asyncio.CancelledError)]
    if failures and done_task not in finished:
        raise failures[0]
    _log.info(f"{SIMULATION}: stopped")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.storage_twin",
        description="The storage twin: a SIMULATION of the storage layer for the kafka-autopilot sandbox.",
    )
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--listen", required=True, help="HOST:PORT on a loopback address")
    parser.add_argument("--state-file", type=Path, required=True)
    parser.add_argument("--resize-delay", type=float, default=DEFAULT_RESIZE_DELAY_SECONDS)
    parser.add_argument("--node-resize-delay", type=float, default=DEFAULT_NODE_RESIZE_DELAY_SECONDS)
    parser.add_argument("--provisioner", default=DEFAULT_PROVISIONER)
    parser.add_argument(
        "--storage-node",
        action="append",
        default=[],
        dest="storage_nodes",
        help="a node of the storage cluster: it gets the initial pool unless it has pools (repeatable)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        host, port = _loopback_listen(args.listen)
    except ValueError as error:
        parser.error(str(error))
    if args.resize_delay < 0 or args.node_resize_delay < 0:
        parser.error("delays cannot be negative")
    _configure_logging()
    twin = StorageTwin(
        provisioner=args.provisioner,
        resize_delay=args.resize_delay,
        node_resize_delay=args.node_resize_delay,
        state_file=args.state_file,
    )
    asyncio.run(serve(twin=twin, kubeconfig=args.kubeconfig, host=host, port=port, storage_nodes=args.storage_nodes))
    return 0


# --- starting it, and talking to it -----------------------------------------------------------------


def _address_file(run_dir: Path) -> Path:
    return run_dir / f"{DAEMON_NAME}.json"


def storage_twin_url(*, run_dir: Path) -> str:
    """The base URL of the twin started with `start_storage_twin(run_dir=...)`, from any process."""
    try:
        url: str = json.loads(_address_file(run_dir).read_text())["url"]
    except (OSError, ValueError, KeyError) as error:
        raise SandboxProcessError(f"no storage twin was started in {run_dir}") from error
    return url


def start_storage_twin(
    *,
    kubeconfig: Path,
    run_dir: Path,
    port: int | None = None,
    state_file: Path | None = None,
    resize_delay: float = DEFAULT_RESIZE_DELAY_SECONDS,
    node_resize_delay: float = DEFAULT_NODE_RESIZE_DELAY_SECONDS,
    provisioner: str = DEFAULT_PROVISIONER,
    storage_nodes: Sequence[str] = (),
    ttl_seconds: int | None = None,
    timeout_seconds: float = 60.0,
) -> Daemon:
    """Start the twin as a daemon and wait until its first sync with the API is done.

    Each of `storage_nodes` gets the initial pool (INITIAL_POOL_*) unless the state already has pools
    on it. The state file defaults to `run_dir/storage-twin-state.json`; the URL is kept in
    `run_dir/storage-twin.json` for `storage_twin_url`.
    """
    port = port or free_port()
    if port_is_open(port):
        raise SandboxProcessError(f"{DAEMON_NAME}: port {port} on 127.0.0.1 is taken by another program")
    state_file = state_file or run_dir / f"{DAEMON_NAME}-state.json"
    url = f"http://127.0.0.1:{port}"
    argv = [
        sys.executable,
        "-m",
        "sandbox.storage_twin",
        "--kubeconfig",
        str(kubeconfig),
        "--listen",
        f"127.0.0.1:{port}",
        "--state-file",
        str(state_file),
        "--resize-delay",
        str(resize_delay),
        "--node-resize-delay",
        str(node_resize_delay),
        "--provisioner",
        provisioner,
        *(f"--storage-node={node}" for node in storage_nodes),
    ]
    daemon = start_daemon(name=DAEMON_NAME, argv=argv, run_dir=run_dir, cwd=_REPO, ttl_seconds=ttl_seconds)
    _address_file(run_dir).write_text(
        json.dumps({"url": url, "port": port, "state_file": str(state_file), "provisioner": provisioner}) + "\n"
    )
    twin = StorageTwinClient(url, timeout_seconds=2.0)
    try:
        wait_until(
            lambda: bool(twin.healthz().get("synced")),
            daemon=daemon,
            timeout_seconds=timeout_seconds,
            what="storage twin synced with the API",
        )
    except BaseException:
        stop_daemon(daemon)
        raise
    return daemon


def stop_storage_twin(*, run_dir: Path) -> None:
    """Stop the twin started in `run_dir`, from this or another process."""
    daemon = daemon_from_pid_file(name=DAEMON_NAME, run_dir=run_dir)
    if daemon is not None:
        stop_daemon(daemon)


class StorageTwinError(RuntimeError):
    """The twin answered with an error status; `message` is its explanation."""

    def __init__(self, *, method: str, url: str, status: int, message: str) -> None:
        super().__init__(f"{method} {url}: HTTP {status}: {message}")
        self.status = status
        self.message = message


class StorageTwinClient:
    """A small synchronous client of the twin's HTTP API, for tests and the sandbox CLI."""

    def __init__(self, base_url: str, *, timeout_seconds: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_seconds = timeout_seconds

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        url = f"{self.base_url}{path}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as error:
            raw = error.read().decode(errors="replace")
            try:
                message = str(json.loads(raw)["error"])
            except (ValueError, KeyError, TypeError):
                message = raw[:500]
            raise StorageTwinError(method=method, url=url, status=error.code, message=message) from error
        return json.loads(text) if path != "/metrics" else text

    def healthz(self) -> dict[str, Any]:
        found: dict[str, Any] = self._call("GET", "/healthz")
        return found

    def metrics_text(self) -> str:
        text: str = self._call("GET", "/metrics")
        return text

    def set_ingest(self, *, namespace: str, pvc: str, bytes_per_second: float) -> dict[str, Any]:
        found: dict[str, Any] = self._call(
            "POST", "/control/ingest", {"namespace": namespace, "pvc": pvc, "bytes_per_second": bytes_per_second}
        )
        return found

    def set_pool_ingest(self, *, node: str, pool: str, bytes_per_second: float) -> dict[str, Any]:
        found: dict[str, Any] = self._call(
            "POST", "/control/ingest", {"node": node, "pool": pool, "bytes_per_second": bytes_per_second}
        )
        return found

    def set_used(self, *, namespace: str, pvc: str, used_bytes: int) -> dict[str, Any]:
        found: dict[str, Any] = self._call(
            "POST", "/control/used", {"namespace": namespace, "pvc": pvc, "bytes": used_bytes}
        )
        return found

    def set_pool_used(self, *, node: str, pool: str, used_bytes: int) -> dict[str, Any]:
        found: dict[str, Any] = self._call("POST", "/control/used", {"node": node, "pool": pool, "bytes": used_bytes})
        return found

    def define_pool(
        self,
        *,
        node: str,
        pool: str,
        drives: int,
        drive_size: int,
        used: int = 0,
        max_drives: int | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Define (or redefine) a pool; `used` is in bytes, like `drive_size`."""
        body: dict[str, Any] = {"node": node, "pool": pool, "drives": drives, "drive_size": drive_size, "used": used}
        if max_drives is not None:
            body["max_drives"] = max_drives
        if labels:
            body["labels"] = dict(labels)
        found: dict[str, Any] = self._call("POST", "/control/pools", body)["pool"]
        return found

    def pools(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._call("GET", "/v1/storagepools")["pools"]
        return found

    def pool(self, uuid: str) -> dict[str, Any]:
        found: dict[str, Any] = self._call("GET", f"/v1/storagepools/{uuid}")["pool"]
        return found

    def resize_pool(
        self,
        *,
        uuid: str,
        size: int | None = None,
        percentage: int | None = None,
        operation_type: str = ResizeType.AUTO.value,
    ) -> dict[str, Any]:
        """Ask for a resize; returns the pool with `last_operation` in progress."""
        body: dict[str, Any] = {"operation_type": operation_type}
        if size is not None:
            body["size"] = size
        if percentage is not None:
            body["percentage"] = percentage
        found: dict[str, Any] = self._call("PUT", f"/v1/storagepools/{uuid}/resize", body)["pool"]
        return found

    def state(self) -> dict[str, Any]:
        found: dict[str, Any] = self._call("GET", "/control/state")
        return found


if __name__ == "__main__":
    sys.exit(main())
