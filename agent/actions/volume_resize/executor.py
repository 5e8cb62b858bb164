"""Executor for `openstorage.io.action.volume/resize`: grow a PVC, then wait until it has grown.

Plan: re-read the PVC. If its request already reaches the target (we asked before a restart, or
someone else did), nothing is applied and only the result is verified. Otherwise the resize is
declined when the StorageClass does not allow expansion.
Apply: one patch of the request, with an annotation recording the in-flight resize.
Verify: the PVC's status capacity reaches the request. Until then the object stays
ActiveActionsInProgress, so it cannot trigger again, and each change of what it waits for is logged
with the storage's own state of the resize (agent.core.resize_states: e.g. FileSystemResizePending);
a resize the storage marks infeasible fails at once with the storage's message.

A PVC Strimzi owns (agent.core.strimzi says which) is never patched: resizing behind
the operator's back starts a fight. Its owner's storage spec grows instead (the KafkaNodePool's
`spec.storage`, or `Kafka.spec.kafka.storage`), one conditional merge patch through the same Applier,
so dry-run records it and makes none. A pool volume is shared by every broker of the pool: it grows
to the largest size planned for any of its PVCs (this plan, or a larger one already applied), never
shrinks, and is verified on every PVC of the pool. What cannot be grown safely (ephemeral storage, a
JBOD volume id not found, an owner that does not match the labels) is declined with the reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from agent.actions.base import (
    Dependencies,
    MutationLog,
    Outcome,
    OutcomeKind,
    VerificationFailedError,
    verified_when,
)
from agent.actions.mutations import Applier, GrowOwnerStorage, ResizePvc
from agent.actions.volume_resize.spec import VOLUME_RESIZE, ResizePlan
from agent.adapters.clock import Clock
from agent.adapters.errors import NotFoundError
from agent.core import strimzi
from agent.core.engine import PlannedAction
from agent.core.matching import IGNORE_ANNOTATION, TargetObject
from agent.core.quantity import format_bytes
from agent.core.resize_states import StorageResize, storage_resize
from agent.core.rules import Rule

IN_FLIGHT_ANNOTATION = "kafka-autopilot.io/resize-requested"
logger = structlog.get_logger("kafka-autopilot")


class PvcLike(strimzi.ClaimLike, StorageResize, Protocol):
    @property
    def requested_bytes(self) -> int | None: ...

    @property
    def capacity_bytes(self) -> int | None: ...

    @property
    def storage_class(self) -> str | None: ...


class StorageClassLike(Protocol):
    @property
    def allow_volume_expansion(self) -> bool: ...


class StorageClassReader(Protocol):
    async def storage_class(self, name: str) -> StorageClassLike: ...


class VolumeReader(Protocol):
    async def list_pvcs(self, *, namespace: str | None = None) -> Sequence[PvcLike]: ...

    async def get_pvc(self, *, namespace: str, name: str) -> PvcLike:
        """Raises agent.adapters.kubernetes.NotFoundError when there is no such claim."""
        ...

    async def storage_class(self, name: str) -> StorageClassLike:
        """Raises agent.adapters.kubernetes.NotFoundError when there is no such class."""
        ...


class OwnerReader(Protocol):
    """Reads the operator resources that own PVCs (the Kubernetes adapter's custom-object get)."""

    async def get_custom_object(
        self, *, group: str, version: str, plural: str, name: str, namespace: str | None = None
    ) -> dict[str, Any]:
        """Raises agent.adapters.kubernetes.NotFoundError when there is no such object."""
        ...


@dataclass
class VolumeResizeExecutor:
    reader: VolumeReader
    applier: Applier
    clock: Clock
    owners: OwnerReader | None = None
    """Where Strimzi's resources are read; None: a Strimzi-owned PVC is declined."""
    verify_timeout_seconds: float = 300.0
    action: str = VOLUME_RESIZE
    classes: StorageClassReader | None = None
    """The watch-fed StorageClasses (agent.adapters.kubernetes.cache), else `reader`'s (a GET)."""

    async def _pvc(self, namespace: str, name: str) -> PvcLike | None:
        """The claim as the apiserver has it now (one GET: the proof a patch or a verdict rests on)."""
        try:
            return await self.reader.get_pvc(namespace=namespace, name=name)
        except NotFoundError:
            return None

    async def run(self, *, planned: PlannedAction, target: TargetObject, params: object, rule: Rule) -> Outcome:
        assert isinstance(planned.detail, ResizePlan)
        wanted = planned.detail.target_bytes
        namespace, name = target.namespace or "", target.name
        claim = await self._pvc(namespace, name)
        if claim is None:
            return Outcome(kind=OutcomeKind.FAILED, reason=f"PersistentVolumeClaim {target.key} no longer exists")
        owned = strimzi.owned_volume(claim)
        if isinstance(owned, strimzi.NotGrowable):
            return declined(f"{owned.reason}; kafka-autopilot does not patch operator-managed volumes")
        if owned is not None:
            return await self._grow_owner(claim, owned, planned)
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
            return _gap(current, wanted, name=name)

        return await self._verified(
            log, still_growing, key=target.key, reason=f"capacity reached {format_bytes(wanted)}"
        )

    async def _grow_owner(self, claim: PvcLike, owned: strimzi.OwnedVolume, planned: PlannedAction) -> Outcome:
        """Grow the storage spec the PVC is made from, then verify every PVC made from it."""
        assert isinstance(planned.detail, ResizePlan)
        wanted = planned.detail.target_bytes
        if self.owners is None:
            return declined(f"owned by {owned.resource}: this agent cannot read Strimzi's resources")
        try:
            resource = await self.owners.get_custom_object(
                group=strimzi.GROUP,
                version=strimzi.VERSION,
                plural=owned.plural,
                namespace=owned.namespace,
                name=owned.resource_name,
            )
        except NotFoundError:
            return declined(f"its owner {owned.resource} is not found: its size is unknown")
        metadata = resource.get("metadata") or {}
        if (metadata.get("annotations") or {}).get(IGNORE_ANNOTATION) == "true":
            return declined(f'{owned.resource} is annotated {IGNORE_ANNOTATION}: "true": no rule acts on it')
        storage = strimzi.storage_of(owned, resource)
        if isinstance(storage, strimzi.NotGrowable):
            return declined(storage.reason)
        sized = strimzi.volume_size(owned, storage, resource=owned.resource)
        if isinstance(sized, strimzi.NotGrowable):
            return declined(sized.reason)
        node_ids = {int(i) for i in (resource.get("status") or {}).get("nodeIds") or [] if str(i).isdigit()}

        async def pool_claims() -> list[PvcLike]:
            return strimzi.claims_of(owned, await self.reader.list_pvcs(namespace=owned.namespace), node_ids=node_ids)

        log = MutationLog(applier=self.applier)
        claims = await pool_claims()
        grows = owned.grows(len(claims))
        if sized.size_bytes < wanted:
            refusal = await self._refusal(claim, planned)
            if refusal is not None:
                return refusal
            await log.apply(
                GrowOwnerStorage(
                    group=strimzi.GROUP,
                    version=strimzi.VERSION,
                    plural=owned.plural,
                    kind=owned.kind,
                    namespace=owned.namespace,
                    name=owned.resource_name,
                    patch=strimzi.storage_patch(
                        owned, storage, new_bytes=wanted, resource_version=metadata.get("resourceVersion")
                    ),
                    change=f"{owned.volume_text} size {format_bytes(sized.size_bytes)} -> {format_bytes(wanted)}"
                    f" ({grows})",
                )
            )

        async def still_growing() -> str | None:
            current = await pool_claims()
            if not current:
                return f"no claim of {owned.resource} {owned.volume_text} is found"
            gaps = [f"{c.name}: {gap}" for c in current if (gap := _gap(c, wanted, name=c.name)) is not None]
            return "; ".join(gaps) or None

        return await self._verified(
            log,
            still_growing,
            key=f"{claim.namespace}/{claim.name}",
            reason=f"capacity reached {format_bytes(wanted)} on every claim: {grows}",
        )

    async def _verified(
        self, log: MutationLog, check: Callable[[], Awaitable[str | None]], *, key: str, reason: str
    ) -> Outcome:
        """Verify by polling `check`; each time what is still missing changes (e.g. the storage moves from
        ControllerResizeInProgress to FileSystemResizePending), it is logged, so the wait says why."""
        last_gap: str | None = None

        async def check_and_say() -> str | None:
            nonlocal last_gap
            gap = await check()
            if gap is not None and gap != last_gap:
                logger.info("resize in progress", object=key, waiting_for=gap)
            last_gap = gap
            return gap

        return await verified_when(
            log, check_and_say, clock=self.clock, timeout_seconds=self.verify_timeout_seconds, reason=reason
        )

    async def _refusal(self, claim: PvcLike, planned: PlannedAction) -> Outcome | None:
        assert isinstance(planned.detail, ResizePlan)
        storage_class: StorageClassLike | None = None
        if claim.storage_class:
            with contextlib.suppress(NotFoundError):
                storage_class = await (self.classes or self.reader).storage_class(claim.storage_class)
        if storage_class is None or not storage_class.allow_volume_expansion:
            return declined(f"StorageClass {claim.storage_class or '(none)'} does not allow volume expansion")
        if (claim.requested_bytes or 0) > planned.detail.current_bytes:
            return Outcome(
                kind=OutcomeKind.HELD,
                reason=f"the request changed since planning ({format_bytes(claim.requested_bytes or 0)}); "
                "planning again next cycle",
            )
        return None


def declined(reason: str) -> Outcome:
    return Outcome(kind=OutcomeKind.DECLINED, reason=reason)


def _gap(claim: PvcLike | None, wanted: int, *, name: str) -> str | None:
    """None when the claim has `wanted` bytes; else what is missing, with the storage's own state of the
    resize. Raises VerificationFailedError when the storage says the resize cannot be done."""
    capacity = claim.capacity_bytes if claim is not None else None
    if capacity is not None and capacity >= wanted:
        return None
    shown = format_bytes(capacity) if capacity is not None else "unknown"
    gap = f"status capacity {shown}, waiting for {format_bytes(wanted)}"
    state = storage_resize(claim) if claim is not None else None
    if state is None:
        return gap
    if state.infeasible:
        raise VerificationFailedError(f"the storage cannot resize {name}: {state.reason}")
    return f"{gap}: in progress, {state.reason}"


def build_executor(dependencies: Dependencies, applier: Applier) -> VolumeResizeExecutor:
    return VolumeResizeExecutor(
        reader=dependencies.inventory,
        applier=applier,
        clock=dependencies.clock,
        owners=dependencies.kube,
        classes=dependencies.watched,
    )
