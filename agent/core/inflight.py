"""The record of an action in flight, pure: what a restarted agent needs to resume exactly the same plan.

While an action runs, the object's status holds its record as strings: the action's name, the
before/after the audit trail shows, and the keys its plan detail encodes itself to (`PlanDetail.encode`).
A restarted agent reads the record back with the action's spec (`ActionSpec.decode_detail`), so the
executor verifies that plan instead of planning again. The keys are the action's own; a new action
needs nothing here.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.core.catalog import Catalog
from agent.core.engine import PlannedAction, plan_actions
from agent.core.matching import TargetObject
from agent.core.rules import Rule

__all__ = ["decode_in_flight", "encode_in_flight"]


def encode_in_flight(planned: PlannedAction) -> dict[str, str]:
    """What a restarted agent needs to resume exactly this plan (strings, as the status stores them)."""
    detail = {"before": planned.before, "after": planned.after}
    if planned.detail is not None:
        detail.update(planned.detail.encode())
    return detail


def decode_in_flight(
    detail: Mapping[str, object] | None, *, rule: Rule, target: TargetObject, now: float, catalog: Catalog
) -> PlannedAction | None:
    """The exact plan a previous run recorded (`detail` holds the action's name under "action" besides
    what `encode_in_flight` wrote); without a record, a fresh plan (executors are idempotent)."""
    if detail is None:
        fresh = plan_actions(rule=rule, target=target, now=now)
        return fresh[0] if isinstance(fresh, tuple) and fresh else None
    action = str(detail["action"])
    strings = {key: str(value) for key, value in detail.items()}
    spec = catalog.get(action)
    return PlannedAction(
        rule=rule.name,
        object=target.key,
        action=action,
        before=strings.get("before", ""),
        after=strings.get("after", ""),
        at=now,
        detail=None if spec is None else spec.decode_detail(strings),
    )
