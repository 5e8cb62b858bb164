"""Executor for `openstorage.io.action.storagepool/expand`: grow a storage pool, then wait until it has.

Plan: re-read the pool from the storage API. If its total already reaches the planned target, or the
whole GiB this plan sends (we asked before a restart, or someone else did), or a resize is already
running on it, nothing is applied: the result is only verified. A pool that shrank or grew since
planning, or that changed drives, is held for a fresh plan next cycle. The target is checked again against maxsize and
maxdrives (never past them) and against the current total (never a shrink), then sent as a whole
number of GiB, as the SDK's `size` counts, rounded up unless that would pass maxsize.
Apply: one ExpandPool mutation, with the scale type the planner resolved (add-disk or resize-disk;
`auto` is resolved by the planner, which knows maxdrives, so the storage layer gets no guess to make).
Verify: poll until the pool's total reaches the target; a failed operation on the pool, or no growth
within the timeout, fails with the gap.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.actions.base import (
    Dependencies,
    MutationLog,
    Outcome,
    OutcomeKind,
    VerificationFailedError,
    verified_when,
)
from agent.actions.mutations import Applier, ExpandPool
from agent.actions.pool_expand.spec import POOL_EXPAND, PoolExpandParams, PoolExpandPlan
from agent.adapters.clock import Clock
from agent.adapters.errors import PoolNotFoundError, StoragePoolError
from agent.adapters.storagepools import (
    ResizeOperation,
    StoragePool,
    StoragePoolApi,
    find_pool,
    size_in_gib,
)
from agent.core.engine import PlannedAction
from agent.core.matching import TargetObject
from agent.core.pools import ScaleType
from agent.core.quantity import GIB, format_bytes
from agent.core.rules import Rule


@dataclass
class PoolExpandExecutor:
    pools: StoragePoolApi
    applier: Applier
    clock: Clock
    verify_timeout_seconds: float = 600.0
    poll_seconds: float = 1.0
    action: str = POOL_EXPAND

    async def run(self, *, planned: PlannedAction, target: TargetObject, params: object, rule: Rule) -> Outcome:
        assert isinstance(planned.detail, PoolExpandPlan)
        assert isinstance(params, PoolExpandParams)
        plan = planned.detail
        node, name = target.identity["node"], target.identity["pool"]
        try:
            pool = await find_pool(self.pools, node=node, name=name)
        except PoolNotFoundError:
            return Outcome(kind=OutcomeKind.FAILED, reason=f"storage pool {target.key} is no longer served")
        # What reaching the plan means: the whole GiB sent, which a maxsize that is not a whole GiB
        # rounds down. A run resumed after a crash finds the pool there and only verifies.
        size = size_in_gib(plan.target_bytes, at_most=params.max_bytes) * GIB
        wanted = min(plan.target_bytes, size)
        log = MutationLog(applier=self.applier)
        unchanged = pool.total_bytes == plan.current_bytes
        if not pool.resizing and (pool.total_bytes < wanted or unchanged):
            refusal = self._refusal(pool, plan, params)
            if refusal is not None:
                return refusal
            await log.apply(
                ExpandPool(
                    uuid=pool.uuid,
                    node=node,
                    pool=name,
                    current_bytes=pool.total_bytes,
                    new_bytes=size,
                    operation=ResizeOperation.for_scale_type(plan.scale_type).value,
                    drives_added=plan.drives_added,
                    new_drive_size_bytes=plan.new_drive_size_bytes
                    if plan.scale_type is ScaleType.RESIZE_DISK
                    else None,
                )
            )

        async def still_growing() -> str | None:
            try:
                current = await find_pool(self.pools, node=node, name=name)
            except StoragePoolError as error:
                if not error.temporary:
                    raise
                return f"storage API not answering: {error}"
            if current.total_bytes >= wanted and not current.resizing:
                return None
            operation = current.last_operation
            if operation is not None and operation.failed:
                raise VerificationFailedError(f"the storage layer reports the resize failed: {operation.message}")
            if not log.done and not current.resizing:
                raise VerificationFailedError(
                    f"the resize already running ended at {format_bytes(current.total_bytes)}, short of"
                    f" {format_bytes(wanted)}; planning again next cycle"
                )
            doing = f"; {operation.status}: {operation.message}" if operation is not None else ""
            return f"total {format_bytes(current.total_bytes)}, waiting for {format_bytes(wanted)}{doing}"

        capped = " (capped at maxsize)" if plan.capped else ""
        return await verified_when(
            log,
            still_growing,
            clock=self.clock,
            timeout_seconds=self.verify_timeout_seconds,
            interval_seconds=self.poll_seconds,
            reason=f"pool total reached {format_bytes(wanted)}{capped} by {plan.scale_type}",
        )

    def _refusal(self, pool: StoragePool, plan: PoolExpandPlan, params: PoolExpandParams) -> Outcome | None:
        if pool.total_bytes != plan.current_bytes:
            return Outcome(
                kind=OutcomeKind.HELD,
                reason=f"the pool changed since planning (total {format_bytes(pool.total_bytes)}, planned from"
                f" {format_bytes(plan.current_bytes)}); planning again next cycle",
            )
        if plan.target_bytes <= pool.total_bytes:
            return Outcome(kind=OutcomeKind.DECLINED, reason="the plan would not grow the pool; never a shrink")
        if params.max_bytes is not None and plan.target_bytes > params.max_bytes:
            return Outcome(
                kind=OutcomeKind.DECLINED,
                reason=f"the plan {format_bytes(plan.target_bytes)} passes maxsize {format_bytes(params.max_bytes)}",
            )
        if (
            params.max_bytes is not None
            and size_in_gib(plan.target_bytes, at_most=params.max_bytes) * GIB <= pool.total_bytes
        ):
            return Outcome(
                kind=OutcomeKind.DECLINED,
                reason=f"at maxsize {format_bytes(params.max_bytes)}: no whole GiB of growth left",
            )
        if (
            plan.scale_type is ScaleType.ADD_DISK
            and params.max_drives is not None
            and pool.drive_count is not None
            and pool.drive_count + plan.drives_added > params.max_drives
        ):
            return Outcome(
                kind=OutcomeKind.DECLINED,
                reason=f"adding {plan.drives_added} drive(s) to {pool.drive_count}"
                f" passes maxdrives {params.max_drives}",
            )
        return None


def build_executor(dependencies: Dependencies, applier: Applier) -> PoolExpandExecutor | None:
    """None without a storage API: the pool cannot be read or grown."""
    if dependencies.pools is None:
        return None
    return PoolExpandExecutor(pools=dependencies.pools, applier=applier, clock=dependencies.clock)
