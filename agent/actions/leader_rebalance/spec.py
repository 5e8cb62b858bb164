"""`kafka-autopilot.io.action.kafka/rebalance-leaders`, pure: its name, params and spec.

It has no size to plan: it is planned as "leads fewer partitions than it is preferred for" ->
"preferred leadership restored", and its executor finds the partitions to elect when it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agent.core.catalog import ActionSpec, ParamSpec, ParamType, optional_int
from agent.core.rules import TargetKind

LEADER_REBALANCE = "kafka-autopilot.io.action.kafka/rebalance-leaders"


@dataclass(frozen=True, kw_only=True)
class LeaderRebalanceParams:
    batch_size: int = 50
    """Partitions per ElectLeaders request."""
    timeout_seconds: int = 30


def _build(values: Mapping[str, object]) -> LeaderRebalanceParams:
    return LeaderRebalanceParams(
        batch_size=optional_int(values.get("batchsize")) or 50,
        timeout_seconds=optional_int(values.get("timeout")) or 30,
    )


SPEC = ActionSpec(
    name=LEADER_REBALANCE,
    target=TargetKind.BROKER,
    doc="Preferred-leader election (ElectLeaders, PREFERRED) for the partitions whose preferred "
    "replica is the selected broker and is in the ISR.",
    params=(
        ParamSpec(
            name="batchsize",
            type=ParamType.COUNT,
            doc="Partitions per ElectLeaders request.",
            default="50",
        ),
        ParamSpec(
            name="timeout",
            type=ParamType.SECONDS,
            doc="How long to wait for the election to show in metadata.",
            default="30",
        ),
    ),
    build=_build,
    before="leads fewer partitions than it is preferred for",
    after="preferred leadership restored",
)
