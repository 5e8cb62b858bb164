"""Which stored (rule, object) states to delete, pure: AutopilotRuleObjects exist only where there is state.

Why this module exists: a quiet object has no AutopilotRuleObject (`ObjectState.worth_keeping`), so one
is created on the first transition away from Normal; this is the other end. The runtime's collector
(agent.runtime.collector) lists the stored pairs, says which rules and objects still exist, and deletes
what `plan_collection` returns, each delete conditional on the object it read. A pair is collected:

- when its rule or its object is gone, and has been for `grace_seconds` (an object briefly missing from
  the inventory, a rule reloaded, keeps its state); or
- when it is back to Normal with no history a policy counts: no cooldown or retry backoff running, and no
  action started within `history_seconds` (the guardrail policy's look-back, `Policy.history_seconds`).

Never a pair in flight: a state ActiveActionsPending or ActiveActionsInProgress, or an in-flight record.
A state this agent cannot read is not given here (the store raises): nothing is deleted from a guess.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from agent.core.states import ObjectState, RuleState

DEFAULT_GRACE_SECONDS = 3600
"""How long a pair's rule or object must be gone before its state is collected (`--state-gc-grace`)."""

Pair = tuple[str, str]
"""(rule name, object key)."""

_IN_FLIGHT = (RuleState.ACTIVE_ACTIONS_PENDING, RuleState.ACTIVE_ACTIONS_IN_PROGRESS)


@dataclass(frozen=True, kw_only=True)
class StoredPair:
    """One AutopilotRuleObject as the collector read it."""

    rule: str
    object_key: str
    state: ObjectState | None
    in_flight: bool = False
    last_started_at: float | None = None
    """The latest action start it records (recent actions, last action), if any."""

    @property
    def pair(self) -> Pair:
        return (self.rule, self.object_key)


@dataclass(frozen=True, kw_only=True)
class CollectionPlan:
    """What to delete now, and since when each pair with a gone rule or object has been seen gone."""

    delete: Mapping[Pair, str]
    """Pair -> why it is collected (the audit record's reason)."""
    gone_since: Mapping[Pair, float]
    """Give it back to the next `plan_collection` (pairs no longer gone are dropped)."""


def plan_collection(
    stored: Sequence[StoredPair],
    *,
    live: Mapping[str, Collection[str]],
    unknown: Collection[str] = (),
    gone_since: Mapping[Pair, float],
    now: float,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    history_seconds: float = 0,
) -> CollectionPlan:
    """The pairs to delete among `stored`; `live` is rule name -> keys of the objects it selects now
    (a rule missing from it is gone), except the rules in `unknown`, whose objects could not be seen: their
    pairs are never taken as gone (fail closed). See the module docstring."""
    delete: dict[Pair, str] = {}
    still_gone: dict[Pair, float] = {}
    for found in stored:
        if found.in_flight or (found.state is not None and found.state.state in _IN_FLIGHT):
            continue
        objects = live.get(found.rule)
        if found.rule in unknown:
            if found.pair in gone_since:
                still_gone[found.pair] = gone_since[found.pair]
            gone = None
        else:
            gone = (
                f"rule {found.rule} is gone"
                if objects is None
                else (f"object {found.object_key} is gone" if found.object_key not in objects else None)
            )
        if gone is not None:
            since = gone_since.get(found.pair, now)
            still_gone[found.pair] = since
            if now - since >= grace_seconds:
                delete[found.pair] = f"{gone} (for {now - since:.0f}s, grace {grace_seconds:.0f}s)"
            continue
        if found.state is not None and found.state.worth_keeping(now):
            continue
        if found.last_started_at is not None and now - found.last_started_at < history_seconds:
            continue
        delete[found.pair] = "back to Normal with no history a policy counts"
    return CollectionPlan(delete=delete, gone_since=still_gone)
