"""What the core knows of an action, without knowing any action: the spec an action describes itself with.

Each action lives in its own folder under `agent/actions/` and describes itself with one `ActionSpec`:
its name, the kind of object it acts on, its typed and documented parameters, how to build its params,
how to plan it for one object, and how its plan's detail is read back from a stored status. The built-in
actions are listed once, in `agent.actions.registry`, which hands a `Catalog` of their specs to the code
that needs one (rule and policy loaders, the engine's policy checks, the JSON Schemas); nothing in the
core imports an action.

Parameter values are strings in the vendor format (`map[string]string`); YAML numbers and booleans are
accepted too and read as written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from typing import Protocol

from agent.core.matching import TargetObject
from agent.core.quantity import QuantityError, format_bytes, parse_bytes, parse_quantity
from agent.core.rules import TargetKind


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


class PlanDetail(Protocol):
    """What an action's planner decided beyond before/after (e.g. the exact target size).

    It is stored in the object's status while the action is in flight, as strings, so that a restarted
    agent resumes exactly this plan; the action's spec reads it back (`ActionSpec.decode_detail`).
    """

    def encode(self) -> dict[str, str]: ...


@dataclass(frozen=True, kw_only=True)
class Planned:
    """One action planned for one object: what it is now, what it will be, and the planner's detail."""

    before: str
    after: str
    detail: PlanDetail | None = None


Planner = Callable[[TargetObject, object], Planned | Declined]
"""Plans an action for one object with the rule's params (of the type the spec's `build` returns)."""


@dataclass(frozen=True, kw_only=True)
class ActionSpec:
    name: str
    target: TargetKind
    doc: str
    params: tuple[ParamSpec, ...]
    build: Callable[[Mapping[str, object]], object]
    """Builds typed params from already-converted values; raises ValueError on cross-field errors."""
    before: str = ""
    after: str = ""
    """How the audit trail shows an action that has no planner (no size): the object before and after it."""
    planner: Planner | None = None
    """How big the action is for one object, or why not; without one, the action is planned as before/after."""
    decode: Callable[[Mapping[str, str]], PlanDetail | None] | None = None
    """Reads a stored plan detail back (the inverse of the planner's `PlanDetail.encode`)."""
    simulate: Callable[[TargetObject, PlanDetail | None], TargetObject] | None = None
    """The object as it looks once the action succeeded, for `kafka-autopilot test`'s simulated executor."""
    spaced_by_min_resize_interval: bool = False
    """A policy's `minResizeInterval` spaces this action out on one object (cloud volume limits)."""

    def plan(self, *, target: TargetObject, params: object) -> Planned | Declined:
        if self.planner is None:
            return Planned(before=self.before, after=self.after)
        return self.planner(target, params)

    def decode_detail(self, detail: Mapping[str, str]) -> PlanDetail | None:
        return None if self.decode is None else self.decode(detail)

    def simulated(self, target: TargetObject, detail: PlanDetail | None) -> TargetObject:
        return target if self.simulate is None else self.simulate(target, detail)

    @property
    def may_cordon_node(self) -> bool:
        """A node action may cordon the node it acts on, so a policy's `maxCordonedNodes` guards it."""
        return self.target is TargetKind.NODE


class Catalog(Mapping[str, ActionSpec]):
    """The actions a rule may name: action name -> spec, in the order they were listed."""

    def __init__(self, specs: Iterable[ActionSpec]) -> None:
        self._specs: dict[str, ActionSpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise ValueError(f"action {spec.name} is listed twice")
            self._specs[spec.name] = spec
        self._node_actions = frozenset(name for name, spec in self._specs.items() if spec.may_cordon_node)
        self._resize_actions = frozenset(
            name for name, spec in self._specs.items() if spec.spaced_by_min_resize_interval
        )

    def __getitem__(self, name: str) -> ActionSpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def node_actions(self) -> frozenset[str]:
        return self._node_actions

    def resize_actions(self) -> frozenset[str]:
        return self._resize_actions


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


# --- small helpers the actions' specs share ----------------------------------------------------------------


def choice_param(name: str, doc: str, choices: tuple[str, ...], default: str) -> ParamSpec:
    return ParamSpec(name=name, type=ParamType.CHOICE, doc=doc, choices=choices, default=default)


def fraction_value(value: object, default: Fraction) -> Fraction:
    """A converted percentage parameter, or `default` when it was not given."""
    return value if isinstance(value, Fraction) else default


def optional_int(value: object) -> int | None:
    """A converted size, count or seconds parameter, or None when it was not given."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def at_max_size(*, current_bytes: int, max_bytes: int) -> Declined:
    where = "at" if current_bytes == max_bytes else "above"
    return Declined(
        code=DeclineCode.AT_MAX_SIZE,
        message=f"{where} maxsize {format_bytes(max_bytes)} (current {format_bytes(current_bytes)})",
    )


def percentage_text(percentage: Fraction) -> str:
    if percentage.denominator == 1:
        return f"{percentage.numerator}%"
    return f"{float(percentage):g}%"


def signed_bytes_text(n: int) -> str:
    return format_bytes(n) if n >= 0 else f"-{format_bytes(-n)}"
