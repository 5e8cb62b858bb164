"""Pure size arithmetic for the capacity actions: PVC resize and storage pool expansion.

Executors ask a planner what size to ask for and get either a plan or a Declined with a code
and a sentence for the audit log, Events and the rule status. Planners never shrink, never go
past maxsize and never act without data; all sizes are exact ints of bytes.

Volume resize (openstorage.io.action.volume/resize: scalepercentage, maxsize)
-----------------------------------------------------------------------------
    NoData      when current is unknown or <= 0
    AtMaxSize   when maxsize is set and current >= maxsize (above it too: never a shrink)
    increase  = max(current * scalepercentage / 100, min_step)
    NoGrowth    when increase <= 0
    target    = current + increase, rounded up to a whole number of GiB
    target    = maxsize, with capped=True, when target > maxsize

    The reference rule (scalepercentage 100, maxsize 1Ti): 400Gi -> 800Gi;
    800Gi -> 1Ti (capped); 1Ti -> declined AtMaxSize.

Storage pool expansion (openstorage.io.action.storagepool/expand)
-----------------------------------------------------------------
A pool is N drives of one size, as in the OpenStorage SDK pool resize, which grows a pool by
adding drives of the existing size (ADD_DISK) or by growing every drive equally (RESIZE_DISK);
AUTO lets the planner choose. Sizes are growth-based: target = current + added raw capacity,
so a pool whose usable total is a little below N * drive size is still planned correctly.

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
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

from agent.core.quantity import GIB, format_bytes, round_up

__all__ = [
    "DeclineCode",
    "Declined",
    "PoolExpandPlan",
    "PoolShape",
    "ResizePlan",
    "ScaleType",
    "plan_pool_expand",
    "plan_volume_resize",
]


class DeclineCode(StrEnum):
    AT_MAX_SIZE = "AtMaxSize"
    AT_MAX_DRIVES = "AtMaxDrives"
    NO_DATA = "NoData"
    NO_GROWTH = "NoGrowth"


@dataclass(frozen=True, kw_only=True)
class Declined:
    """No action, and why: code is one of DeclineCode, message quotes the sizes involved."""

    code: str
    message: str


@dataclass(frozen=True, kw_only=True)
class ResizePlan:
    current_bytes: int
    target_bytes: int
    capped: bool


class ScaleType(StrEnum):
    ADD_DISK = "add-disk"
    RESIZE_DISK = "resize-disk"
    AUTO = "auto"


@dataclass(frozen=True, kw_only=True)
class PoolShape:
    """A storage pool of drive_count drives of drive_size_bytes each, total_bytes usable."""

    total_bytes: int
    drive_count: int
    drive_size_bytes: int


@dataclass(frozen=True, kw_only=True)
class PoolExpandPlan:
    """scale_type is resolved (never auto); new_drive_size_bytes is the unchanged size for add-disk."""

    current_bytes: int
    target_bytes: int
    scale_type: ScaleType
    drives_added: int
    new_drive_size_bytes: int
    capped: bool


def plan_volume_resize(
    *,
    current_bytes: int | None,
    scale_percentage: Fraction,
    max_bytes: int | None,
    min_step_bytes: int = 0,
) -> ResizePlan | Declined:
    """The new size of a volume, or why it must not grow; the arithmetic is in the module docstring."""
    if current_bytes is None:
        return Declined(code=DeclineCode.NO_DATA, message="no data: the current size is unknown")
    if current_bytes <= 0:
        return Declined(code=DeclineCode.NO_DATA, message=f"no data: the current size is {current_bytes}")
    if max_bytes is not None and current_bytes >= max_bytes:
        return _at_max_size(current_bytes=current_bytes, max_bytes=max_bytes)
    increase = max(current_bytes * scale_percentage / 100, Fraction(min_step_bytes))
    if increase <= 0:
        return Declined(
            code=DeclineCode.NO_GROWTH,
            message=(
                f"no growth: scalepercentage {_percentage(scale_percentage)}"
                f" and minimum step {_signed_bytes(min_step_bytes)} add nothing"
            ),
        )
    target_bytes = round_up(math.ceil(current_bytes + increase), granularity=GIB)
    if max_bytes is not None and target_bytes > max_bytes:
        return ResizePlan(current_bytes=current_bytes, target_bytes=max_bytes, capped=True)
    return ResizePlan(current_bytes=current_bytes, target_bytes=target_bytes, capped=False)


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
                f"no data: the pool has total {_signed_bytes(pool.total_bytes)},"
                f" {pool.drive_count} drives of {_signed_bytes(pool.drive_size_bytes)}"
            ),
        )
    current_bytes = pool.total_bytes
    if max_bytes is not None and current_bytes >= max_bytes:
        return _at_max_size(current_bytes=current_bytes, max_bytes=max_bytes)
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
        return total_bytes * scale_percentage / 100, f"scalepercentage {_percentage(scale_percentage)}"
    if scale_size_bytes is not None and scale_percentage is None:
        return Fraction(scale_size_bytes), f"scalesize {_signed_bytes(scale_size_bytes)}"
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


def _at_max_size(*, current_bytes: int, max_bytes: int) -> Declined:
    where = "at" if current_bytes == max_bytes else "above"
    return Declined(
        code=DeclineCode.AT_MAX_SIZE,
        message=f"{where} maxsize {format_bytes(max_bytes)} (current {format_bytes(current_bytes)})",
    )


def _percentage(percentage: Fraction) -> str:
    if percentage.denominator == 1:
        return f"{percentage.numerator}%"
    return f"{float(percentage):g}%"


def _signed_bytes(n: int) -> str:
    return format_bytes(n) if n >= 0 else f"-{format_bytes(-n)}"
