"""`openstorage.io.action.storagepool/expand`, pure: its params, its planner and its plan's in-flight record.

A pool is N drives of one size (agent.core.pools), as in the OpenStorage SDK pool resize, which grows a
pool by adding drives of the existing size (ADD_DISK) or by growing every drive equally (RESIZE_DISK);
AUTO lets the planner choose. Sizes are growth-based: target = current + added raw capacity, so a pool
whose usable total is a little below N * drive size is still planned correctly. The planner never
shrinks, never goes past maxsize or maxdrives and never acts without data.

    NoData      when the pool is unknown, its total <= 0, or it has no drives
    AtMaxSize   when maxsize is set and total >= maxsize
    wanted    = total * scalepercentage / 100, or scalesize (exactly one is given)
    NoGrowth    when wanted <= 0

    add-disk:    drives = ceil(wanted / drive size), target = total + drives * drive size.
                 max_drives limits the drive count: fewer drives (capped=True), or
                 AtMaxDrives when the pool already has max_drives drives.
                 Over maxsize: the largest number of drives that fits (capped=True); when not
                 even one fits, AtMaxSize.
    resize-disk: new drive size = drive size + wanted / N, rounded up to a whole GiB;
                 target = total + N * (new drive size - drive size).
                 Over maxsize: the new drive size is floored to a whole GiB so that the
                 target <= maxsize (capped=True); AtMaxSize when that is no growth.
    auto:        add-disk when all the wanted drives fit within max_drives (or max_drives is
                 None), else resize-disk; and resize-disk when not even one added drive fits
                 under maxsize. The plan records the resolved type.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from fractions import Fraction

from agent.core.catalog import (
    ActionSpec,
    DeclineCode,
    Declined,
    ParamSpec,
    ParamType,
    PlanDetail,
    Planned,
    at_max_size,
    choice_param,
    fraction_value,
    optional_int,
    percentage_text,
    signed_bytes_text,
)
from agent.core.matching import TargetObject
from agent.core.pools import PoolShape, ScaleType
from agent.core.quantity import GIB, format_bytes, round_up
from agent.core.rules import TargetKind

POOL_EXPAND = "openstorage.io.action.storagepool/expand"


@dataclass(frozen=True, kw_only=True)
class PoolExpandParams:
    scale_percentage: Fraction | None = Fraction(50)
    scale_size_bytes: int | None = None
    scale_type: ScaleType = ScaleType.AUTO
    max_bytes: int | None = None
    max_drives: int | None = None


@dataclass(frozen=True, kw_only=True)
class PoolExpandPlan:
    """scale_type is resolved (never auto); new_drive_size_bytes is the unchanged size for add-disk."""

    current_bytes: int
    target_bytes: int
    scale_type: ScaleType
    drives_added: int
    new_drive_size_bytes: int
    capped: bool

    def encode(self) -> dict[str, str]:
        return {
            "pool_current_bytes": str(self.current_bytes),
            "pool_target_bytes": str(self.target_bytes),
            "scale_type": self.scale_type.value,
            "drives_added": str(self.drives_added),
            "new_drive_size_bytes": str(self.new_drive_size_bytes),
            "capped": str(self.capped).lower(),
        }


def decode_pool_expand_plan(detail: Mapping[str, str]) -> PoolExpandPlan | None:
    """The plan `PoolExpandPlan.encode` recorded; None when the record holds none."""
    if "pool_target_bytes" not in detail:
        return None
    return PoolExpandPlan(
        current_bytes=int(detail["pool_current_bytes"]),
        target_bytes=int(detail["pool_target_bytes"]),
        scale_type=ScaleType(detail["scale_type"]),
        drives_added=int(detail.get("drives_added", 0)),
        new_drive_size_bytes=int(detail.get("new_drive_size_bytes", 0)),
        capped=detail.get("capped", "false") == "true",
    )


def plan_pool_expand(
    *,
    pool: PoolShape | None,
    scale_percentage: Fraction | None,
    scale_size_bytes: int | None,
    scale_type: ScaleType,
    max_bytes: int | None,
    max_drives: int | None = None,
) -> PoolExpandPlan | Declined:
    """How to grow a storage pool, or why it must not grow; the arithmetic is in the module docstring."""
    wanted_bytes, growth_source = _wanted_growth(
        pool=pool, scale_percentage=scale_percentage, scale_size_bytes=scale_size_bytes
    )
    if pool is None:
        return Declined(code=DeclineCode.NO_DATA, message="no data: the pool is unknown")
    if pool.total_bytes <= 0 or pool.drive_count <= 0 or pool.drive_size_bytes <= 0:
        return Declined(
            code=DeclineCode.NO_DATA,
            message=(
                f"no data: the pool has total {signed_bytes_text(pool.total_bytes)},"
                f" {pool.drive_count} drives of {signed_bytes_text(pool.drive_size_bytes)}"
            ),
        )
    current_bytes = pool.total_bytes
    if max_bytes is not None and current_bytes >= max_bytes:
        return at_max_size(current_bytes=current_bytes, max_bytes=max_bytes)
    if wanted_bytes <= 0:
        return Declined(code=DeclineCode.NO_GROWTH, message=f"no growth: {growth_source} adds nothing")

    if scale_type is ScaleType.RESIZE_DISK:
        return _resize_every_drive(pool=pool, wanted_bytes=wanted_bytes, max_bytes=max_bytes)
    drives_wanted = math.ceil(wanted_bytes / pool.drive_size_bytes)
    drive_room = None if max_drives is None else max_drives - pool.drive_count
    if scale_type is ScaleType.AUTO and drive_room is not None and drives_wanted > drive_room:
        return _resize_every_drive(pool=pool, wanted_bytes=wanted_bytes, max_bytes=max_bytes)

    drives_added = drives_wanted
    capped = False
    if drive_room is not None and drives_added > drive_room:
        if drive_room <= 0:
            return Declined(
                code=DeclineCode.AT_MAX_DRIVES,
                message=f"at max drives {max_drives} (the pool has {pool.drive_count} drives)",
            )
        drives_added = drive_room
        capped = True
    if max_bytes is not None and current_bytes + drives_added * pool.drive_size_bytes > max_bytes:
        drives_added = (max_bytes - current_bytes) // pool.drive_size_bytes
        capped = True
        if drives_added == 0:
            if scale_type is ScaleType.AUTO:
                return _resize_every_drive(pool=pool, wanted_bytes=wanted_bytes, max_bytes=max_bytes)
            return Declined(
                code=DeclineCode.AT_MAX_SIZE,
                message=(
                    f"at maxsize {format_bytes(max_bytes)}: one more drive of"
                    f" {format_bytes(pool.drive_size_bytes)} would pass it"
                    f" (current {format_bytes(current_bytes)})"
                ),
            )
    return PoolExpandPlan(
        current_bytes=current_bytes,
        target_bytes=current_bytes + drives_added * pool.drive_size_bytes,
        scale_type=ScaleType.ADD_DISK,
        drives_added=drives_added,
        new_drive_size_bytes=pool.drive_size_bytes,
        capped=capped,
    )


def _wanted_growth(
    *, pool: PoolShape | None, scale_percentage: Fraction | None, scale_size_bytes: int | None
) -> tuple[Fraction, str]:
    """The wanted growth in bytes and the parameter it came from, for messages."""
    if scale_percentage is not None and scale_size_bytes is None:
        total_bytes = 0 if pool is None else pool.total_bytes
        return total_bytes * scale_percentage / 100, f"scalepercentage {percentage_text(scale_percentage)}"
    if scale_size_bytes is not None and scale_percentage is None:
        return Fraction(scale_size_bytes), f"scalesize {signed_bytes_text(scale_size_bytes)}"
    raise ValueError("give exactly one of scale_percentage and scale_size_bytes")


def _resize_every_drive(*, pool: PoolShape, wanted_bytes: Fraction, max_bytes: int | None) -> PoolExpandPlan | Declined:
    old_drive_size = pool.drive_size_bytes
    new_drive_size = round_up(math.ceil(old_drive_size + wanted_bytes / pool.drive_count), granularity=GIB)
    capped = False
    if max_bytes is not None and _resized_total(pool=pool, new_drive_size=new_drive_size) > max_bytes:
        largest_drive_size = old_drive_size + (max_bytes - pool.total_bytes) // pool.drive_count
        new_drive_size = largest_drive_size // GIB * GIB
        capped = True
        if new_drive_size <= old_drive_size:
            return Declined(
                code=DeclineCode.AT_MAX_SIZE,
                message=(
                    f"at maxsize {format_bytes(max_bytes)}: growing each of the {pool.drive_count}"
                    f" drives of {format_bytes(old_drive_size)} to a whole GiB would pass it"
                    f" (current {format_bytes(pool.total_bytes)})"
                ),
            )
    return PoolExpandPlan(
        current_bytes=pool.total_bytes,
        target_bytes=_resized_total(pool=pool, new_drive_size=new_drive_size),
        scale_type=ScaleType.RESIZE_DISK,
        drives_added=0,
        new_drive_size_bytes=new_drive_size,
        capped=capped,
    )


def _resized_total(*, pool: PoolShape, new_drive_size: int) -> int:
    return pool.total_bytes + pool.drive_count * (new_drive_size - pool.drive_size_bytes)


def _plan(target: TargetObject, params: object) -> Planned | Declined:
    assert isinstance(params, PoolExpandParams)
    expand = plan_pool_expand(
        pool=target.pool,
        scale_percentage=params.scale_percentage,
        scale_size_bytes=params.scale_size_bytes,
        scale_type=params.scale_type,
        max_bytes=params.max_bytes,
        max_drives=params.max_drives,
    )
    if isinstance(expand, Declined):
        return expand
    after = f"{format_bytes(expand.target_bytes)} by {expand.scale_type}"
    return Planned(before=format_bytes(expand.current_bytes), after=after, detail=expand)


def _build(values: Mapping[str, object]) -> PoolExpandParams:
    has_percentage = "scalepercentage" in values
    has_size = "scalesize" in values
    if has_percentage and has_size:
        raise ValueError("give scalepercentage or scalesize, not both")
    return PoolExpandParams(
        scale_percentage=None if has_size else fraction_value(values.get("scalepercentage"), Fraction(50)),
        scale_size_bytes=optional_int(values.get("scalesize")),
        scale_type=ScaleType(str(values.get("scaletype", ScaleType.AUTO.value))),
        max_bytes=optional_int(values.get("maxsize")),
        max_drives=optional_int(values.get("maxdrives")),
    )


def _simulate(target: TargetObject, detail: PlanDetail | None) -> TargetObject:
    """The pool once expanded: the planned total, with the drives added or resized."""
    if not isinstance(detail, PoolExpandPlan) or target.pool is None:
        return target
    shape = PoolShape(
        total_bytes=detail.target_bytes,
        drive_count=target.pool.drive_count + detail.drives_added,
        drive_size_bytes=detail.new_drive_size_bytes,
    )
    return replace(target, pool=shape)


SPEC = ActionSpec(
    name=POOL_EXPAND,
    target=TargetKind.STORAGE_POOL,
    doc="Expand a storage pool by adding drives or resizing its drives, never past maxsize.",
    params=(
        ParamSpec(
            name="scalepercentage",
            type=ParamType.PERCENTAGE,
            doc="Grow by this percent of the pool's size (default 50 unless scalesize is given).",
            default="50",
        ),
        ParamSpec(name="scalesize", type=ParamType.BYTES, doc="Grow by this size instead of a percent."),
        choice_param(
            "scaletype",
            "add-disk adds drives of the pool's drive size; resize-disk grows every drive; "
            "auto adds drives while maxdrives allows, then resizes.",
            tuple(scale.value for scale in ScaleType),
            ScaleType.AUTO.value,
        ),
        ParamSpec(name="maxsize", type=ParamType.BYTES, doc="Never grow the pool past this size."),
        ParamSpec(
            name="maxdrives",
            type=ParamType.COUNT,
            doc="With auto, add drives only while the pool stays within this many (our extension).",
        ),
    ),
    build=_build,
    planner=_plan,
    decode=decode_pool_expand_plan,
    simulate=_simulate,
)
