"""Storage pools through the OpenStorage SDK's REST gateway: list them, and ask one to grow.

The agent reads pools the way the SDK serves them (libopenstorage/openstorage api/api.proto, behind
grpc-gateway v1, which writes proto field names and uint64 as JSON strings):

    GET /v1/nodes                        SdkNodeEnumerateResponse {"node_ids": [...]}
    GET /v1/nodes/inspect/{node_id}      SdkNodeInspectResponse {"node": StorageNode}; its "pools" are
                                         StoragePool {ID, TotalSize, Used, labels, uuid, last_operation}
    PUT /v1/storagepools/resize/{uuid}   SdkStoragePoolResizeRequest as query parameters (the HTTP rule
                                         has no body): size (new total, GiB) or percentage, and
                                         operation_type RESIZE_TYPE_{AUTO,ADD_DISK,RESIZE_DISK}; -> {}

A pool's name (the `pool` label of px_pool_stats_*) is its `pool` label when it has one, else its
numeric ID; its node is the node's scheduler_node_name (the Kubernetes node), else hostname or id.
The SDK has no per-pool drive facts: they come from `drive_count`/`drive_size` on the pool when the
server adds them (the storage twin does), else from the node's disks when the node has a single pool;
otherwise they are unknown, and the planner reports "no data" instead of guessing.

Errors, all naming the server and what failed:

    StoragePoolError                .temporary: worth trying again later (agent.adapters.errors)
    ├── unreachable, timeout        temporary
    ├── HTTP 5xx, 429               temporary
    ├── PoolNotFoundError           404, or no pool with that uuid / node and name
    ├── PoolBusyError               409: a resize is already running on the pool
    └── other HTTP 4xx, bad JSON    permanent, with the server's own message
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import requests

from agent.adapters.errors import PoolBusyError, PoolNotFoundError, StoragePoolError
from agent.core.pools import PoolShape, ScaleType
from agent.core.quantity import GIB

IN_PROGRESS_STATUSES = ("OPERATION_PENDING", "OPERATION_IN_PROGRESS")


class ResizeOperation(StrEnum):
    """SdkStoragePool.ResizeOperationType."""

    AUTO = "RESIZE_TYPE_AUTO"
    ADD_DISK = "RESIZE_TYPE_ADD_DISK"
    RESIZE_DISK = "RESIZE_TYPE_RESIZE_DISK"

    @classmethod
    def for_scale_type(cls, scale_type: ScaleType) -> ResizeOperation:
        return {ScaleType.AUTO: cls.AUTO, ScaleType.ADD_DISK: cls.ADD_DISK, ScaleType.RESIZE_DISK: cls.RESIZE_DISK}[
            scale_type
        ]


@dataclass(frozen=True, kw_only=True)
class PoolOperation:
    """StoragePoolOperation: the pool's last (or running) operation."""

    type: str
    status: str
    message: str
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def in_progress(self) -> bool:
        return self.status in IN_PROGRESS_STATUSES

    @property
    def failed(self) -> bool:
        return self.status == "OPERATION_FAILED"


@dataclass(frozen=True, kw_only=True)
class StoragePool:
    uuid: str
    node: str
    name: str
    pool_id: int
    labels: Mapping[str, str]
    total_bytes: int
    used_bytes: int
    drive_count: int | None = None
    drive_size_bytes: int | None = None
    last_operation: PoolOperation | None = None

    @property
    def key(self) -> str:
        return f"{self.node}/{self.name}"

    @property
    def resizing(self) -> bool:
        return self.last_operation is not None and self.last_operation.in_progress

    @property
    def shape(self) -> PoolShape | None:
        """What the planner needs, or None when the drive facts are unknown."""
        if self.drive_count is None or self.drive_size_bytes is None:
            return None
        return PoolShape(
            total_bytes=self.total_bytes, drive_count=self.drive_count, drive_size_bytes=self.drive_size_bytes
        )


class StoragePoolApi(Protocol):
    """What the agent needs from the storage layer."""

    server: str

    async def list_pools(self) -> Sequence[StoragePool]: ...

    async def resize_pool(
        self,
        *,
        uuid: str,
        size_bytes: int | None = None,
        percentage: int | None = None,
        operation: str = ResizeOperation.AUTO,
    ) -> None: ...


async def find_pool(api: StoragePoolApi, *, node: str, name: str) -> StoragePool:
    """The pool `name` on `node`, fresh from the server; raises PoolNotFoundError."""
    for pool in await api.list_pools():
        if pool.node == node and pool.name == name:
            return pool
    raise PoolNotFoundError(
        server=api.server, what=f"find pool {node}/{name}", reason="no such pool on that node", temporary=False
    )


def size_in_gib(size_bytes: int, *, at_most: int | None = None) -> int:
    """The SDK's `size` (whole GiB) for a wanted total: rounded up, unless that would pass `at_most`."""
    gib = math.ceil(size_bytes / GIB)
    if at_most is not None and gib * GIB > at_most:
        gib = at_most // GIB
    return gib


class StoragePoolClient:
    """The SDK REST gateway over requests, each call run in a worker thread off the event loop."""

    def __init__(
        self,
        *,
        url: str,
        token_file: Path | None = None,
        timeout_seconds: float = 10.0,
        verify_tls: bool | str = True,
    ) -> None:
        self.server = url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.token_file = token_file
        self.session = requests.Session()
        self.session.verify = verify_tls
        self.session.headers["User-Agent"] = "kafka-autopilot"

    # --- the Protocol ------------------------------------------------------------------------------

    async def list_pools(self) -> list[StoragePool]:
        enumerate_answer = await self._call("GET", "/v1/nodes", what="enumerate nodes")
        node_ids = enumerate_answer.get("node_ids") or []
        if not isinstance(node_ids, list):
            raise self._bad_answer("enumerate nodes", f"'node_ids' is {type(node_ids).__name__}, not a list")
        pools: list[StoragePool] = []
        for node_id in node_ids:
            inspected = await self._call("GET", f"/v1/nodes/inspect/{node_id}", what=f"inspect node {node_id}")
            node = inspected.get("node")
            if not isinstance(node, dict):
                raise self._bad_answer(f"inspect node {node_id}", "no 'node' object in the answer")
            pools.extend(self._pools_of(node, node_id=str(node_id)))
        return pools

    async def resize_pool(
        self,
        *,
        uuid: str,
        size_bytes: int | None = None,
        percentage: int | None = None,
        operation: str = ResizeOperation.AUTO,
    ) -> None:
        """Ask for a resize: `size_bytes` (sent as whole GiB, rounded up) or `percentage`."""
        if (size_bytes is None) == (percentage is None):
            raise ValueError("give exactly one of size_bytes and percentage")
        query: dict[str, str] = {"operation_type": ResizeOperation(operation).value}
        if size_bytes is not None:
            query["size"] = str(size_in_gib(size_bytes))
        else:
            query["percentage"] = str(percentage)
        await self._call("PUT", f"/v1/storagepools/resize/{uuid}", what=f"resize pool {uuid}", params=query)

    # --- internals ---------------------------------------------------------------------------------

    def _pools_of(self, node: Mapping[str, Any], *, node_id: str) -> list[StoragePool]:
        node_name = str(node.get("scheduler_node_name") or node.get("hostname") or node.get("id") or node_id)
        raw_pools = node.get("pools") or []
        disks = [
            disk
            for disk in (node.get("disks") or {}).values()
            if isinstance(disk, dict)
            and not (disk.get("metadata") or disk.get("cache") or disk.get("pool_metadata_dev"))
        ]
        found = []
        for raw in raw_pools:
            what = f"inspect node {node_id}"
            try:
                labels = {str(k): str(v) for k, v in (raw.get("labels") or {}).items()}
                pool_id = int(raw.get("ID", 0))
                drive_count = _optional_int(raw.get("drive_count"))
                drive_size = _optional_int(raw.get("drive_size"))
                if drive_count is None and len(raw_pools) == 1 and disks:
                    drive_count = len(disks)
                    drive_size = max(int(disk.get("size", 0)) for disk in disks) or None
                found.append(
                    StoragePool(
                        uuid=str(raw["uuid"]),
                        node=node_name,
                        name=labels.get("pool") or str(pool_id),
                        pool_id=pool_id,
                        labels=labels,
                        total_bytes=int(raw.get("TotalSize", 0)),
                        used_bytes=int(raw.get("Used", 0)),
                        drive_count=drive_count,
                        drive_size_bytes=drive_size,
                        last_operation=_operation(raw.get("last_operation")),
                    )
                )
            except (KeyError, TypeError, ValueError, AttributeError) as error:
                raise self._bad_answer(what, f"a pool that is not an SDK StoragePool ({error!r}): {raw!r}") from error
        return found

    def _bad_answer(self, what: str, reason: str) -> StoragePoolError:
        return StoragePoolError(server=self.server, what=what, reason=reason, temporary=False)

    def _headers(self) -> dict[str, str]:
        if self.token_file is None:
            return {}
        try:
            token = self.token_file.read_text().strip()
        except OSError as error:
            raise StoragePoolError(
                server=self.server, what="read the token", reason=f"{self.token_file}: {error}", temporary=False
            ) from error
        return {"Authorization": f"bearer {token}"}

    async def _call(
        self, method: str, path: str, *, what: str, params: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        return await asyncio.to_thread(self._call_blocking, method, path, what, params)

    def _call_blocking(self, method: str, path: str, what: str, params: Mapping[str, str] | None) -> dict[str, Any]:
        url = f"{self.server}{path}"
        try:
            response = self.session.request(
                method, url, params=params, headers=self._headers(), timeout=self.timeout_seconds
            )
        except requests.Timeout as error:
            raise StoragePoolError(
                server=self.server, what=what, reason=f"no answer within {self.timeout_seconds:g}s", temporary=True
            ) from error
        except requests.RequestException as error:
            raise StoragePoolError(
                server=self.server, what=what, reason=f"unreachable: {type(error).__name__}: {error}", temporary=True
            ) from error
        if response.status_code >= 400:
            message = _error_message(response)
            status = response.status_code
            reason = f"HTTP {status}: {message}"
            if status == 404:
                raise PoolNotFoundError(server=self.server, what=what, reason=reason, temporary=False, status=status)
            if status == 409:
                raise PoolBusyError(server=self.server, what=what, reason=reason, temporary=True, status=status)
            temporary = status >= 500 or status == 429
            raise StoragePoolError(server=self.server, what=what, reason=reason, temporary=temporary, status=status)
        try:
            answer = response.json() if response.content else {}
        except ValueError as error:
            raise self._bad_answer(what, f"the answer is not JSON: {response.text[:200]!r}") from error
        if not isinstance(answer, dict):
            raise self._bad_answer(what, f"the answer is not a JSON object: {response.text[:200]!r}")
        return answer


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _operation(raw: Any) -> PoolOperation | None:
    if not isinstance(raw, dict):
        return None
    return PoolOperation(
        type=str(raw.get("type", "OPERATION_RESIZE")),
        status=str(raw.get("status", "OPERATION_PENDING")),
        message=str(raw.get("msg", "")),
        params={str(k): str(v) for k, v in (raw.get("params") or {}).items()},
    )


def _error_message(response: requests.Response) -> str:
    """grpc-gateway's {"error"|"message": ...}, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason
    if isinstance(body, dict):
        for key in ("message", "error"):
            if body.get(key):
                return str(body[key])
    return json.dumps(body)[:300]
