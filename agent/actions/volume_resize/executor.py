"""Executor for `openstorage.io.action.volume/resize`: grow a PVC, then wait until it has grown.

Plan: re-read the PVC. If its request already reaches the target (we asked before a restart, or
someone else did), nothing is applied and only the result is verified. Otherwise the resize is
declined when the StorageClass does not allow expansion, or when an operator owns the PVC (Strimzi's
Kafka / KafkaNodePool: resizing behind its back starts a fight; raise the pool's size instead).
Apply: one patch of the request, with an annotation recording the in-flight resize.
Verify: the PVC's status capacity reaches the request. Until then the object stays
ActiveActionsInProgress, so it cannot trigger again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from agent.actions.base import Dependencies, MutationLog, Outcome, OutcomeKind, verified_when
from agent.actions.mutations import Applier, ResizePvc
from agent.actions.volume_resize.spec import VOLUME_RESIZE, ResizePlan
from agent.adapters.clock import Clock
from agent.adapters.kubernetes import NotFoundError
from agent.core.engine import PlannedAction
from agent.core.matching import TargetObject
from agent.core.quantity import format_bytes
from agent.core.rules import Rule

IN_FLIGHT_ANNOTATION = "kafka-autopilot.io/resize-requested"
OPERATOR_OWNER_KINDS = ("Kafka", "KafkaNodePool")
OPERATOR_LABELS = ("strimzi.io/cluster", "strimzi.io/pool-name")


class OwnerLike(Protocol):
    @property
    def kind(self) -> str: ...

    @property
    def name(self) -> str: ...


class PvcLike(Protocol):
    @property
    def namespace(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def labels(self) -> Mapping[str, str]: ...

    @property
    def requested_bytes(self) -> int | None: ...

    @property
    def capacity_bytes(self) -> int | None: ...

    @property
    def storage_class(self) -> str | None: ...

    @property
    def owner_references(self) -> Sequence[OwnerLike]: ...


class StorageClassLike(Protocol):
    @property
    def allow_volume_expansion(self) -> bool: ...


class VolumeReader(Protocol):
    async def list_pvcs(self) -> Sequence[PvcLike]: ...

    async def storage_class(self, name: str) -> StorageClassLike:
        """Raises agent.adapters.kubernetes.NotFoundError when there is no such class."""
        ...


def operator_owner(pvc: PvcLike) -> str | None:
    """`Kind/name` of the operator resource that owns this PVC, if one does."""
    for owner in pvc.owner_references:
        if owner.kind in OPERATOR_OWNER_KINDS:
            return f"{owner.kind}/{owner.name}"
    for label in OPERATOR_LABELS:
        if label in pvc.labels:
            return f"Strimzi ({label}={pvc.labels[label]})"
    return None


@dataclass
class VolumeResizeExecutor:
    reader: VolumeReader
    applier: Applier
    clock: Clock
    verify_timeout_seconds: float = 300.0
    action: str = VOLUME_RESIZE

    async def _pvc(self, namespace: str, name: str) -> PvcLike | None:
        return next((c for c in await self.reader.list_pvcs() if c.namespace == namespace and c.name == name), None)

    async def run(self, *, planned: PlannedAction, target: TargetObject, params: object, rule: Rule) -> Outcome:
        assert isinstance(planned.detail, ResizePlan)
        wanted = planned.detail.target_bytes
        namespace, name = target.namespace or "", target.name
        claim = await self._pvc(namespace, name)
        if claim is None:
            return Outcome(kind=OutcomeKind.FAILED, reason=f"PersistentVolumeClaim {target.key} no longer exists")
        log = MutationLog(applier=self.applier)
        if (claim.requested_bytes or 0) < wanted:
            refusal = await self._refusal(claim, planned)
            if refusal is not None:
                return refusal
            await log.apply(
                ResizePvc(
                    namespace=namespace,
                    name=name,
                    new_bytes=wanted,
                    annotations={IN_FLIGHT_ANNOTATION: format_bytes(wanted)},
                )
            )

        async def still_growing() -> str | None:
            current = await self._pvc(namespace, name)
            capacity = current.capacity_bytes if current is not None else None
            if capacity is not None and capacity >= wanted:
                return None
            shown = format_bytes(capacity) if capacity is not None else "unknown"
            return f"status capacity {shown}, waiting for {format_bytes(wanted)}"

        return await verified_when(
            log,
            still_growing,
            clock=self.clock,
            timeout_seconds=self.verify_timeout_seconds,
            reason=f"capacity reached {format_bytes(wanted)}",
        )

    async def _refusal(self, claim: PvcLike, planned: PlannedAction) -> Outcome | None:
        assert isinstance(planned.detail, ResizePlan)
        owner = operator_owner(claim)
        if owner is not None:
            return Outcome(
                kind=OutcomeKind.DECLINED,
                reason=f"owned by {owner}: resize it through its owner (e.g. the KafkaNodePool's storage size); "
                "kafka-autopilot does not patch operator-managed volumes",
            )
        storage_class: StorageClassLike | None = None
        if claim.storage_class:
            with contextlib.suppress(NotFoundError):
                storage_class = await self.reader.storage_class(claim.storage_class)
        if storage_class is None or not storage_class.allow_volume_expansion:
            return Outcome(
                kind=OutcomeKind.DECLINED,
                reason=f"StorageClass {claim.storage_class or '(none)'} does not allow volume expansion",
            )
        if (claim.requested_bytes or 0) > planned.detail.current_bytes:
            return Outcome(
                kind=OutcomeKind.HELD,
                reason=f"the request changed since planning ({format_bytes(claim.requested_bytes or 0)}); "
                "planning again next cycle",
            )
        return None


def build_executor(dependencies: Dependencies, applier: Applier) -> VolumeResizeExecutor:
    return VolumeResizeExecutor(reader=dependencies.inventory, applier=applier, clock=dependencies.clock)
