"""`kafka-autopilot.io.action.broker/restart`, pure: its name, params and spec.

Rules may name it and it is planned like any action, but it has no executor yet: the runtime holds it
with "no executor" and the reason (agent.actions.broker_restart.executor).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agent.core.catalog import ActionSpec, ParamSpec, ParamType, optional_int
from agent.core.rules import TargetKind

BROKER_RESTART = "kafka-autopilot.io.action.broker/restart"


@dataclass(frozen=True, kw_only=True)
class BrokerRestartParams:
    min_isr_margin: int = 1
    """Restart only if every partition keeps at least min.insync.replicas + margin - 1 in-sync replicas."""


def _build(values: Mapping[str, object]) -> BrokerRestartParams:
    return BrokerRestartParams(min_isr_margin=optional_int(values.get("minisrmargin")) or 1)


SPEC = ActionSpec(
    name=BROKER_RESTART,
    target=TargetKind.BROKER,
    doc="Restart one broker whose followers fall behind, only if no partition would drop below min.insync.replicas.",
    params=(
        ParamSpec(
            name="minisrmargin",
            type=ParamType.COUNT,
            doc="In-sync replicas to keep above min.insync.replicas - 1 during the restart.",
            default="1",
        ),
    ),
    build=_build,
    before="broker running with lagging followers",
    after="broker restarted, replicas back in sync",
)
