"""The actions a rule may name, with their target kind and typed, documented parameters.

The vendor's two actions keep their names and parameters unchanged; ours live under the
`kafka-autopilot.io.action.` prefix. Parameter values are strings in the vendor format
(`map[string]string`); YAML numbers and booleans are accepted too and read as written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

from agent.core.planners import ScaleType
from agent.core.quantity import QuantityError, parse_bytes, parse_quantity
from agent.core.rules import (
    ActionParams,
    BrokerRestartParams,
    LabelSelector,
    LeaderRebalanceParams,
    NodeRescheduleParams,
    PoolExpandParams,
    RescheduleMode,
    TargetKind,
    VolumeResizeParams,
)

VOLUME_RESIZE = "openstorage.io.action.volume/resize"
POOL_EXPAND = "openstorage.io.action.storagepool/expand"
LEADER_REBALANCE = "kafka-autopilot.io.action.kafka/rebalance-leaders"
NODE_RESCHEDULE = "kafka-autopilot.io.action.node/cordon-reschedule"
BROKER_RESTART = "kafka-autopilot.io.action.broker/restart"


class ParamType(StrEnum):
    PERCENTAGE = "percentage"
    BYTES = "quantity of bytes"
    COUNT = "positive integer"
    SECONDS = "seconds"
    BOOLEAN = "boolean"
    CHOICE = "one of"
    TEXT = "text"


@dataclass(frozen=True, kw_only=True)
class ParamSpec:
    name: str
    type: ParamType
    doc: str
    default: str | None = None
    choices: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ActionSpec:
    name: str
    target: TargetKind
    doc: str
    params: tuple[ParamSpec, ...]
    build: Callable[[Mapping[str, object]], ActionParams]
    """Builds typed params from already-converted values; raises ValueError on cross-field errors."""
    before: str = ""
    after: str = ""
    """How the audit trail shows an action that has no size: the object before and after it."""


class ParamError(ValueError):
    """A parameter value has the wrong type or range; the message says what was expected."""


def convert_param(spec: ParamSpec, text: str) -> object:
    """Convert one parameter's text to its typed value, or raise ParamError."""
    try:
        if spec.type is ParamType.PERCENTAGE:
            value = parse_quantity(text.removesuffix("%"))
            if value <= 0:
                raise ParamError(f"must be a percentage above 0, got {text!r}")
            return value
        if spec.type is ParamType.BYTES:
            size = parse_bytes(text)
            if size <= 0:
                raise ParamError(f"must be a size above 0 such as 1Ti, got {text!r}")
            return size
        if spec.type in (ParamType.COUNT, ParamType.SECONDS):
            if not text.isdigit() or (spec.type is ParamType.COUNT and int(text) == 0):
                raise ParamError(f"must be a {spec.type}, got {text!r}")
            return int(text)
        if spec.type is ParamType.BOOLEAN:
            if text.lower() not in ("true", "false"):
                raise ParamError(f"must be true or false, got {text!r}")
            return text.lower() == "true"
    except QuantityError as error:
        raise ParamError(str(error)) from error
    if spec.type is ParamType.TEXT:
        return text
    if text not in spec.choices:
        raise ParamError(f"must be one of {', '.join(spec.choices)}, got {text!r}")
    return text


def _volume_resize(values: Mapping[str, object]) -> ActionParams:
    return VolumeResizeParams(
        scale_percentage=_fraction(values.get("scalepercentage"), Fraction(50)),
        max_bytes=_optional_int(values.get("maxsize")),
        min_step_bytes=_optional_int(values.get("minstep")) or 0,
    )


def _pool_expand(values: Mapping[str, object]) -> ActionParams:
    has_percentage = "scalepercentage" in values
    has_size = "scalesize" in values
    if has_percentage and has_size:
        raise ValueError("give scalepercentage or scalesize, not both")
    return PoolExpandParams(
        scale_percentage=None if has_size else _fraction(values.get("scalepercentage"), Fraction(50)),
        scale_size_bytes=_optional_int(values.get("scalesize")),
        scale_type=ScaleType(str(values.get("scaletype", ScaleType.AUTO.value))),
        max_bytes=_optional_int(values.get("maxsize")),
        max_drives=_optional_int(values.get("maxdrives")),
    )


def _leader_rebalance(values: Mapping[str, object]) -> ActionParams:
    return LeaderRebalanceParams(
        batch_size=_optional_int(values.get("batchsize")) or 50,
        timeout_seconds=_optional_int(values.get("timeout")) or 30,
    )


def _node_reschedule(values: Mapping[str, object]) -> ActionParams:
    broker_label = values.get("brokerlabel")
    selector = LabelSelector()
    if isinstance(broker_label, str):
        key, separator, value = broker_label.partition("=")
        if not separator or not key or not value:
            raise ValueError(f"brokerlabel must look like key=value, got {broker_label!r}")
        selector = LabelSelector(match_labels={key: value})
    grace = _optional_int(values.get("grace"))
    return NodeRescheduleParams(
        grace_seconds=40 if grace is None else grace,
        mode=RescheduleMode(str(values.get("mode", RescheduleMode.FORCE_DELETE.value))),
        delete_volume_attachments=bool(values.get("deletevolumeattachments", True)),
        broker_selector=selector,
    )


def _broker_restart(values: Mapping[str, object]) -> ActionParams:
    return BrokerRestartParams(min_isr_margin=_optional_int(values.get("minisrmargin")) or 1)


def _fraction(value: object, default: Fraction) -> Fraction:
    return value if isinstance(value, Fraction) else default


def _optional_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _choice_param(name: str, doc: str, choices: tuple[str, ...], default: str) -> ParamSpec:
    return ParamSpec(name=name, type=ParamType.CHOICE, doc=doc, choices=choices, default=default)


ACTIONS: Mapping[str, ActionSpec] = {
    spec.name: spec
    for spec in (
        ActionSpec(
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
            build=_volume_resize,
        ),
        ActionSpec(
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
                _choice_param(
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
            build=_pool_expand,
        ),
        ActionSpec(
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
            build=_leader_rebalance,
            before="leads fewer partitions than it is preferred for",
            after="preferred leadership restored",
        ),
        ActionSpec(
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
                _choice_param(
                    "mode",
                    "force-delete the broker pods, or apply the node.kubernetes.io/out-of-service taint.",
                    tuple(mode.value for mode in RescheduleMode),
                    RescheduleMode.FORCE_DELETE.value,
                ),
                ParamSpec(
                    name="deletevolumeattachments",
                    type=ParamType.BOOLEAN,
                    doc="Delete the node's stale VolumeAttachments so volumes can attach elsewhere.",
                    default="true",
                ),
                ParamSpec(
                    name="brokerlabel",
                    type=ParamType.TEXT,
                    doc="key=value label of the broker pods to move (default: all pods on the node).",
                ),
            ),
            build=_node_reschedule,
            before="node failed, broker pods stranded on it",
            after="node cordoned, broker pods running on healthy nodes",
        ),
        ActionSpec(
            name=BROKER_RESTART,
            target=TargetKind.BROKER,
            doc="Restart one broker whose followers fall behind, only if no partition would drop below "
            "min.insync.replicas.",
            params=(
                ParamSpec(
                    name="minisrmargin",
                    type=ParamType.COUNT,
                    doc="In-sync replicas to keep above min.insync.replicas - 1 during the restart.",
                    default="1",
                ),
            ),
            build=_broker_restart,
            before="broker running with lagging followers",
            after="broker restarted, replicas back in sync",
        ),
    )
}
