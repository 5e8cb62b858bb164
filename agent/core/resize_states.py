"""What the storage says of a PVC's resize while the capacity has not arrived yet, purely.

Kubernetes reports a resize in two places of a PVC's status:
- `allocatedResourceStatuses.storage`: `ControllerResizeInProgress`, `NodeResizePending`,
  `NodeResizeInProgress` (still going), `ControllerResizeInfeasible`, `NodeResizeInfeasible` (the
  storage refused the size: it will not get there by waiting);
- `conditions`: `Resizing`, `FileSystemResizePending` (the volume has grown, the filesystem grows when
  a pod mounts it), and `ControllerResizeError` / `NodeResizeError`, whose message says why.

The resize executor's verify step (agent.actions.volume_resize) asks `storage_resize` on each poll:
in progress with that reason, or infeasible, which fails the action at once with the storage's message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

IN_PROGRESS_STATUSES = frozenset({"ControllerResizeInProgress", "NodeResizePending", "NodeResizeInProgress"})
INFEASIBLE_STATUSES = frozenset({"ControllerResizeInfeasible", "NodeResizeInfeasible"})
IN_PROGRESS_CONDITIONS = ("FileSystemResizePending", "Resizing")
ERROR_CONDITIONS = ("ControllerResizeError", "NodeResizeError")


class ConditionLike(Protocol):
    @property
    def type(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def message(self) -> str | None: ...


class StorageResize(Protocol):
    """A PVC's status, as far as a resize shows in it."""

    @property
    def conditions(self) -> Sequence[ConditionLike]: ...

    @property
    def allocated_resource_statuses(self) -> Mapping[str, str]: ...


@dataclass(frozen=True, kw_only=True)
class ResizeState:
    infeasible: bool
    reason: str


def storage_resize(claim: StorageResize) -> ResizeState | None:
    """The state of the claim's resize as its status reports it; None when the status says nothing."""
    status = claim.allocated_resource_statuses.get("storage", "")
    conditions = {c.type: c for c in claim.conditions if c.status == "True"}
    if status in INFEASIBLE_STATUSES:
        errors = [c.message for kind in ERROR_CONDITIONS if (c := conditions.get(kind)) and c.message]
        return ResizeState(infeasible=True, reason=f"{status}: {errors[0]}" if errors else status)
    if status in IN_PROGRESS_STATUSES:
        return ResizeState(infeasible=False, reason=status)
    for kind in IN_PROGRESS_CONDITIONS:
        condition = conditions.get(kind)
        if condition is not None:
            return ResizeState(infeasible=False, reason=f"{kind}: {condition.message}" if condition.message else kind)
    return None
