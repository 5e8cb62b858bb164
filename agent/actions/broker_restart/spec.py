"""`kafka-autopilot.io.action.broker/restart`, pure: its name, params, spec and what a run decided.

A graceful restart of one broker's pod (the shipped rules/kafka-under-replicated.yaml): planned as
"broker running with lagging followers" -> "broker restarted, replicas back in sync". Its executor
(agent.actions.broker_restart.executor) checks, deletes the pod gracefully by uid, and verifies. Before
the delete it records the pod's uid (`RestartDecision`) in the in-flight record, so a run resumed after
a crash that finds the pod replaced only verifies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agent.core.catalog import ActionSpec, ParamSpec, ParamType, Planned, optional_int
from agent.core.matching import TargetObject
from agent.core.rules import TargetKind

BROKER_RESTART = "kafka-autopilot.io.action.broker/restart"


@dataclass(frozen=True, kw_only=True)
class BrokerRestartParams:
    min_isr_margin: int = 1
    """Restart only if every partition keeps at least min.insync.replicas + margin - 1 in-sync replicas."""
    verify_timeout_seconds: int = 300
    """How long the restarted broker has to be Running, registered and back in every ISR."""


@dataclass(frozen=True, kw_only=True)
class RestartDecision:
    """The pod the run deleted (its uid): a pod of that name with another uid is the restarted one."""

    pod_uid: str

    def encode(self) -> dict[str, str]:
        return {"restartPodUid": self.pod_uid}


def _decode(detail: Mapping[str, str]) -> RestartDecision | None:
    uid = detail.get("restartPodUid")
    return RestartDecision(pod_uid=uid) if uid else None


def _plan(target: TargetObject, params: object) -> Planned:
    return Planned(
        before="broker running with lagging followers",
        after="broker restarted, replicas back in sync",
        detail=RestartDecision(pod_uid=target.uid) if target.uid else None,
    )


def _build(values: Mapping[str, object]) -> BrokerRestartParams:
    margin = optional_int(values.get("minisrmargin"))
    timeout = optional_int(values.get("verifytimeout"))
    if margin is not None and margin < 1:
        raise ValueError(f"minisrmargin must be at least 1, got {margin}")
    return BrokerRestartParams(
        min_isr_margin=1 if margin is None else margin, verify_timeout_seconds=300 if timeout is None else timeout
    )


SPEC = ActionSpec(
    name=BROKER_RESTART,
    target=TargetKind.BROKER,
    doc="Restart one broker whose followers fall behind: a graceful delete of its pod (by uid), only when the "
    "pod is Running, Kafka sees the broker registered, and no partition would drop below min.insync.replicas "
    "(+ margin - 1) while it is down; verified when a new pod of that name is Running, the broker is "
    "registered again and back in the ISR of every partition it replicates.",
    params=(
        ParamSpec(
            name="minisrmargin",
            type=ParamType.COUNT,
            doc="Keep at least min.insync.replicas + minisrmargin - 1 in-sync replicas of every partition "
            "while the broker is down (1: exactly min.insync.replicas).",
            default="1",
        ),
        ParamSpec(
            name="verifytimeout",
            type=ParamType.SECONDS,
            doc="How long the restarted broker has to be Running, registered and back in every ISR.",
            default="300",
        ),
    ),
    build=_build,
    planner=_plan,
    decode=_decode,
    before="broker running with lagging followers",
    after="broker restarted, replicas back in sync",
)
