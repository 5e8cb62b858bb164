"""What a restarted agent needs to resume exactly the plan it recorded before applying it.

The plan's detail is stored as strings in the AutopilotRuleObject's `status.inFlight.detail`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.core.engine import PlannedAction, plan_actions
from agent.core.matching import TargetObject
from agent.core.planners import PoolExpandPlan, ResizePlan, ScaleType
from agent.core.rules import Rule


def in_flight_detail(planned: PlannedAction) -> dict[str, str]:
    """What a restarted agent needs to resume exactly this plan (strings, as the status stores them)."""
    detail = {"before": planned.before, "after": planned.after}
    if isinstance(planned.detail, ResizePlan):
        detail.update(
            current_bytes=str(planned.detail.current_bytes),
            target_bytes=str(planned.detail.target_bytes),
            capped=str(planned.detail.capped).lower(),
        )
    if isinstance(planned.detail, PoolExpandPlan):
        detail.update(
            pool_current_bytes=str(planned.detail.current_bytes),
            pool_target_bytes=str(planned.detail.target_bytes),
            scale_type=planned.detail.scale_type.value,
            drives_added=str(planned.detail.drives_added),
            new_drive_size_bytes=str(planned.detail.new_drive_size_bytes),
            capped=str(planned.detail.capped).lower(),
        )
    return detail


def planned_from_in_flight(
    detail: Mapping[str, Any] | None, *, rule: Rule, target: TargetObject, now: float
) -> PlannedAction | None:
    """The exact plan a previous run recorded; without a record, a fresh plan (executors are idempotent)."""
    if detail is None:
        fresh = plan_actions(rule=rule, target=target, now=now)
        return fresh[0] if isinstance(fresh, tuple) and fresh else None
    plan: ResizePlan | PoolExpandPlan | None = None
    if "pool_target_bytes" in detail:
        plan = PoolExpandPlan(
            current_bytes=int(detail["pool_current_bytes"]),
            target_bytes=int(detail["pool_target_bytes"]),
            scale_type=ScaleType(str(detail["scale_type"])),
            drives_added=int(detail.get("drives_added", 0)),
            new_drive_size_bytes=int(detail.get("new_drive_size_bytes", 0)),
            capped=str(detail.get("capped", "false")) == "true",
        )
    elif "target_bytes" in detail:
        plan = ResizePlan(
            current_bytes=int(detail["current_bytes"]),
            target_bytes=int(detail["target_bytes"]),
            capped=str(detail.get("capped", "false")) == "true",
        )
    return PlannedAction(
        rule=rule.name,
        object=target.key,
        action=str(detail["action"]),
        before=str(detail.get("before", "")),
        after=str(detail.get("after", "")),
        at=now,
        detail=plan,
    )
