"""`kafka-autopilot.io.action.node/cordon-reschedule`, pure: its name, params and spec.

It has no size to plan: it is planned as "node failed, broker pods stranded on it" -> "node cordoned,
broker pods running on healthy nodes", and its executor re-checks every guardrail when it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from agent.core.catalog import ActionSpec, ParamSpec, ParamType, choice_param, optional_int
from agent.core.rules import LabelSelector, TargetKind

NODE_RESCHEDULE = "kafka-autopilot.io.action.node/cordon-reschedule"


class RescheduleMode(StrEnum):
    FORCE_DELETE = "force-delete"
    OUT_OF_SERVICE_TAINT = "out-of-service-taint"


@dataclass(frozen=True, kw_only=True)
class NodeRescheduleParams:
    grace_seconds: int = 40
    """How long the node must be NotReady/Unknown with a stale Lease before anything is done."""
    mode: RescheduleMode = RescheduleMode.FORCE_DELETE
    delete_volume_attachments: bool = True
    broker_selector: LabelSelector = field(default_factory=LabelSelector)
    """Which pods on the node are Kafka brokers to reschedule (empty: the rule's selector, else the pods
    Kafka identifies as brokers; see the executor)."""


def _build(values: Mapping[str, object]) -> NodeRescheduleParams:
    broker_label = values.get("brokerlabel")
    selector = LabelSelector()
    if isinstance(broker_label, str):
        key, separator, value = broker_label.partition("=")
        if not separator or not key or not value:
            raise ValueError(f"brokerlabel must look like key=value, got {broker_label!r}")
        selector = LabelSelector(match_labels={key: value})
    grace = optional_int(values.get("grace"))
    return NodeRescheduleParams(
        grace_seconds=40 if grace is None else grace,
        mode=RescheduleMode(str(values.get("mode", RescheduleMode.FORCE_DELETE.value))),
        delete_volume_attachments=bool(values.get("deletevolumeattachments", True)),
        broker_selector=selector,
    )


SPEC = ActionSpec(
    name=NODE_RESCHEDULE,
    target=TargetKind.NODE,
    doc="Cordon a failed node and move its Kafka broker pods to healthy nodes, after confirming "
    "the node is gone and Kafka has fenced its brokers.",
    params=(
        ParamSpec(
            name="grace",
            type=ParamType.SECONDS,
            doc="The node must be NotReady/Unknown with a stale Lease this long first.",
            default="40",
        ),
        choice_param(
            "mode",
            "force-delete the broker pods, or apply the node.kubernetes.io/out-of-service taint.",
            tuple(mode.value for mode in RescheduleMode),
            RescheduleMode.FORCE_DELETE.value,
        ),
        ParamSpec(
            name="deletevolumeattachments",
            type=ParamType.BOOLEAN,
            doc="Delete the moved pods' VolumeAttachments on the node so their volumes can attach elsewhere.",
            default="true",
        ),
        ParamSpec(
            name="brokerlabel",
            type=ParamType.TEXT,
            doc="key=value label of the broker pods to move (default: the rule's selector, else the pods Kafka"
            " identifies as brokers).",
        ),
    ),
    build=_build,
    before="node failed, broker pods stranded on it",
    after="node cordoned, broker pods running on healthy nodes",
)
