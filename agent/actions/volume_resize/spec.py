"""`openstorage.io.action.volume/resize`, pure: its params, its planner and its plan's in-flight record.

The vendor's action keeps its name and parameters unchanged (scalepercentage, maxsize; minstep is ours).
The planner says what size to ask for, or declines with a code and a sentence for the audit log, Events
and the rule status. It never shrinks, never goes past maxsize and never acts without data; all sizes are
exact ints of bytes.

    NoData      when current is unknown or <= 0
    AtMaxSize   when maxsize is set and current >= maxsize (above it too: never a shrink)
    increase  = max(current * scalepercentage / 100, min_step)
    NoGrowth    when increase <= 0
    target    = current + increase, rounded up to a whole number of GiB
    target    = maxsize, with capped=True, when target > maxsize

    The reference rule (scalepercentage 100, maxsize 1Ti): 400Gi -> 800Gi;
    800Gi -> 1Ti (capped); 1Ti -> declined AtMaxSize.
"""

from __future__ import annotations

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
    fraction_value,
    optional_int,
    percentage_text,
    signed_bytes_text,
)
from agent.core.matching import MAXSIZE_ANNOTATION, TargetObject
from agent.core.quantity import GIB, QuantityError, format_bytes, parse_bytes, round_up
from agent.core.rules import TargetKind

VOLUME_RESIZE = "openstorage.io.action.volume/resize"


@dataclass(frozen=True, kw_only=True)
class VolumeResizeParams:
    scale_percentage: Fraction = Fraction(50)
    max_bytes: int | None = None
    min_step_bytes: int = 0


@dataclass(frozen=True, kw_only=True)
class ResizePlan:
    current_bytes: int
    target_bytes: int
    capped: bool

    def encode(self) -> dict[str, str]:
        return {
            "current_bytes": str(self.current_bytes),
            "target_bytes": str(self.target_bytes),
            "capped": str(self.capped).lower(),
        }


def decode_resize_plan(detail: Mapping[str, str]) -> ResizePlan | None:
    """The plan `ResizePlan.encode` recorded; None when the record holds none."""
    if "target_bytes" not in detail:
        return None
    return ResizePlan(
        current_bytes=int(detail["current_bytes"]),
        target_bytes=int(detail["target_bytes"]),
        capped=detail.get("capped", "false") == "true",
    )


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
        return at_max_size(current_bytes=current_bytes, max_bytes=max_bytes)
    # In ints: increase = max(current * p / (q * 100), min_step) for scalepercentage p/q, and the target
    # current + ceil(increase) = current + max(ceil(current * p / (q * 100)), min_step).
    grown = current_bytes * scale_percentage.numerator
    if grown <= 0 and min_step_bytes <= 0:
        return Declined(
            code=DeclineCode.NO_GROWTH,
            message=(
                f"no growth: scalepercentage {percentage_text(scale_percentage)}"
                f" and minimum step {signed_bytes_text(min_step_bytes)} add nothing"
            ),
        )
    increase_bytes = max(-(-grown // (scale_percentage.denominator * 100)), min_step_bytes)
    target_bytes = round_up(current_bytes + increase_bytes, granularity=GIB)
    if max_bytes is not None and target_bytes > max_bytes:
        return ResizePlan(current_bytes=current_bytes, target_bytes=max_bytes, capped=True)
    return ResizePlan(current_bytes=current_bytes, target_bytes=target_bytes, capped=False)


def object_max_bytes(target: TargetObject, rule_max_bytes: int | None) -> int | Declined | None:
    """The maxsize for this object: its `kafka-autopilot.io/maxsize` annotation when lower than the
    rule's (never higher), else the rule's; Declined (NoData) naming the annotation when it does not parse."""
    text = target.annotations.get(MAXSIZE_ANNOTATION)
    if text is None:
        return rule_max_bytes
    try:
        own = parse_bytes(text)
    except QuantityError as error:
        return Declined(
            code=DeclineCode.NO_DATA,
            message=f"annotation {MAXSIZE_ANNOTATION} of {target.key} is not a size: {error}",
        )
    return own if rule_max_bytes is None else min(own, rule_max_bytes)


def _plan(target: TargetObject, params: object) -> Planned | Declined:
    assert isinstance(params, VolumeResizeParams)
    max_bytes = object_max_bytes(target, params.max_bytes)
    if isinstance(max_bytes, Declined):
        return max_bytes
    resize = plan_volume_resize(
        current_bytes=target.capacity_bytes,
        scale_percentage=params.scale_percentage,
        max_bytes=max_bytes,
        min_step_bytes=params.min_step_bytes,
    )
    if isinstance(resize, Declined):
        return resize
    capped = " (capped at maxsize)" if resize.capped else ""
    through = f", {target.grown_through}" if target.grown_through else ""
    return Planned(
        before=format_bytes(resize.current_bytes),
        after=format_bytes(resize.target_bytes) + capped + through,
        detail=resize,
    )


def _build(values: Mapping[str, object]) -> VolumeResizeParams:
    return VolumeResizeParams(
        scale_percentage=fraction_value(values.get("scalepercentage"), Fraction(50)),
        max_bytes=optional_int(values.get("maxsize")),
        min_step_bytes=optional_int(values.get("minstep")) or 0,
    )


def _simulate(target: TargetObject, detail: PlanDetail | None) -> TargetObject:
    """The volume once resized: its capacity is the planned target."""
    if not isinstance(detail, ResizePlan):
        return target
    return replace(target, capacity_bytes=detail.target_bytes)


SPEC = ActionSpec(
    name=VOLUME_RESIZE,
    target=TargetKind.PVC,
    doc="Grow a PersistentVolumeClaim by a percentage of its current size, never past maxsize.",
    params=(
        ParamSpec(
            name="scalepercentage",
            type=ParamType.PERCENTAGE,
            doc="Grow by this percent of the current size.",
            default="50",
        ),
        ParamSpec(
            name="maxsize",
            type=ParamType.BYTES,
            doc="Never grow past this size; at it, the resize is declined (AtMaxSize).",
        ),
        ParamSpec(
            name="minstep",
            type=ParamType.BYTES,
            doc="Grow by at least this much, for small volumes (our extension).",
        ),
    ),
    build=_build,
    planner=_plan,
    decode=decode_resize_plan,
    simulate=_simulate,
    spaced_by_min_resize_interval=True,
)
