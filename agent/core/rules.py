"""The rule model: what an AutopilotRule means once it has been validated.

Everything here is immutable and already checked, so the evaluator, state machine and executors never
re-validate or re-parse. The loader (agent.core.loader) builds these from YAML; the JSON Schema for
editors (agent.core.schema) describes the same fields.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from agent.core.broker_identity import KAFKA_ONLY, StatedIdentity
from agent.core.diagnostics import Location
from agent.core.operators import Operator

VENDOR_API_VERSION = "autopilot.libopenstorage.org/v1alpha1"
API_GROUP = "kafka-autopilot.io"
API_VERSION = f"{API_GROUP}/v1alpha1"
RULE_KIND = "AutopilotRule"
POLICY_KIND = "AutopilotPolicy"
"""Guardrail policies (agent.core.policy) may share files with rules; the rule loader leaves them alone."""

DEFAULT_POLL_INTERVAL_SECONDS = 10
DEFAULT_COOLDOWN_SECONDS = 300


class TargetKind(StrEnum):
    """The kind of object a rule acts on; it follows from the rule's actions."""

    PVC = "PersistentVolumeClaim"
    STORAGE_POOL = "StoragePool"
    BROKER = "KafkaBroker"
    NODE = "Node"


class Enforcement(StrEnum):
    """`spec.enforcement`: the vendor's values plus our `dryRun`."""

    REQUIRED = "required"
    PREFERRED = "preferred"
    APPROVAL_REQUIRED = "approvalRequired"
    DRY_RUN = "dryRun"


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


@dataclass(frozen=True, kw_only=True)
class SelectorRequirement:
    key: str
    operator: SelectorOperator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator is SelectorOperator.EXISTS:
            return present
        if self.operator is SelectorOperator.DOES_NOT_EXIST:
            return not present
        inside = present and labels[self.key] in self.values
        return inside if self.operator is SelectorOperator.IN else not inside


@dataclass(frozen=True, kw_only=True)
class LabelSelector:
    """Kubernetes label selector semantics: every matchLabels pair and every expression must hold.

    An empty selector matches everything.
    """

    match_labels: Mapping[str, str] = field(default_factory=dict)
    match_expressions: tuple[SelectorRequirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if not self.match_labels.items() <= labels.items():
            return False
        for requirement in self.match_expressions:  # noqa: SIM110 (all() of a generator doubles the cost per object)
            if not requirement.matches(labels):
                return False
        return True

    def query(self) -> str:
        """The selector as the API's `labelSelector` parameter (`a=b,c in (d,e),!f`): "" selects everything."""
        terms = [f"{key}={value}" for key, value in sorted(self.match_labels.items())]
        for requirement in self.match_expressions:
            values = ",".join(requirement.values)
            terms.append(
                {
                    SelectorOperator.IN: f"{requirement.key} in ({values})",
                    SelectorOperator.NOT_IN: f"{requirement.key} notin ({values})",
                    SelectorOperator.EXISTS: requirement.key,
                    SelectorOperator.DOES_NOT_EXIST: f"!{requirement.key}",
                }[requirement.operator]
            )
        return ",".join(terms)

    @classmethod
    def from_query(cls, query: str) -> LabelSelector:
        """The inverse of `query`, for what reads a `labelSelector` parameter (fakes, the sidecar scope):
        `a=b`, `a==b`, `a!=b`, `a in (b,c)`, `a notin (b,c)`, `a`, `!a`."""
        labels: dict[str, str] = {}
        expressions: list[SelectorRequirement] = []
        for term in (found.strip() for found in _SELECTOR_TERM.findall(query)):
            if not term:
                continue
            if set_based := re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", term):
                key, operator, values = set_based.groups()
                expressions.append(
                    SelectorRequirement(
                        key=key,
                        operator=SelectorOperator.IN if operator == "in" else SelectorOperator.NOT_IN,
                        values=tuple(v.strip() for v in values.split(",") if v.strip()),
                    )
                )
            elif "!=" in term:
                key, _, value = term.partition("!=")
                expressions.append(
                    SelectorRequirement(key=key.strip(), operator=SelectorOperator.NOT_IN, values=(value.strip(),))
                )
            elif "=" in term:
                key, _, value = term.replace("==", "=").partition("=")
                labels[key.strip()] = value.strip()
            elif term.startswith("!"):
                expressions.append(SelectorRequirement(key=term[1:].strip(), operator=SelectorOperator.DOES_NOT_EXIST))
            else:
                expressions.append(SelectorRequirement(key=term, operator=SelectorOperator.EXISTS))
        return cls(match_labels=labels, match_expressions=tuple(expressions))


_SELECTOR_TERM = re.compile(r"(?:[^,(]|\([^)]*\))+")
"""One term of a `labelSelector` string: commas inside `in (...)` do not split it."""


@dataclass(frozen=True, kw_only=True)
class ConditionExpression:
    """One condition: a PromQL query (written out, or expanded from `keyAlias`) and its test."""

    query: str
    operator: Operator
    values: tuple[str, ...]
    alias: str | None = None
    location: Location | None = None
    """Where the key (or keyAlias) was written, for errors found after loading (e.g. bad PromQL)."""
    field_path: str = ""

    @property
    def label(self) -> str:
        return self.alias or self.query


class ConditionProvider(StrEnum):
    """Where condition values come from. `prometheus` is the default; `kubernetes` reads node state."""

    PROMETHEUS = "prometheus"
    KUBERNETES = "kubernetes"


@dataclass(frozen=True, kw_only=True)
class Conditions:
    expressions: tuple[ConditionExpression, ...]
    required_matches: int = 0
    """How many expressions must hold; 0 means all of them."""
    for_seconds: int = 0
    provider: ConditionProvider = ConditionProvider.PROMETHEUS

    @property
    def needed(self) -> int:
        return self.required_matches or len(self.expressions)


class ActionSpecView(Protocol):
    """What a rule needs of its action's spec (agent.core.catalog.ActionSpec), named here so that the
    rule model does not import the catalog, which imports the rule model."""

    @property
    def name(self) -> str: ...

    @property
    def target(self) -> TargetKind: ...

    def plan(self, *, target: Any, params: object) -> object:
        """A `catalog.Planned` or a `catalog.Declined`."""
        ...


@dataclass(frozen=True, kw_only=True)
class RuleAction:
    """One action of a rule, resolved against the catalog when the rule was loaded."""

    name: str
    spec: ActionSpecView
    params: object
    """Typed params, of the type the action's spec builds (its `spec.py` in agent/actions/<action>/)."""
    raw_params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ActionWindow:
    """Actions may start only inside one of these UTC windows (days empty = every day)."""

    days: frozenset[int] = frozenset()
    """ISO weekdays, Monday = 1."""
    start_minute: int = 0
    end_minute: int = 24 * 60
    """Minutes after midnight UTC; a window with end < start spans midnight."""

    def contains(self, *, weekday: int, minute_of_day: int) -> bool:
        if self.start_minute <= self.end_minute:
            inside = self.start_minute <= minute_of_day < self.end_minute
            day = weekday
        else:
            inside = minute_of_day >= self.start_minute or minute_of_day < self.end_minute
            day = weekday if minute_of_day >= self.start_minute else (weekday - 2) % 7 + 1
        return inside and (not self.days or day in self.days)


IdentityLabels = tuple[tuple[str, ...], ...]
"""Alternative label sets that name an object; the first set a series carries in full is used."""


@dataclass(frozen=True, kw_only=True)
class Rule:
    name: str
    api_version: str
    source: Location
    target: TargetKind
    selector: LabelSelector
    namespace_selector: LabelSelector | None
    conditions: Conditions
    actions: tuple[RuleAction, ...]
    poll_interval_seconds: int = DEFAULT_POLL_INTERVAL_SECONDS
    cooldown_seconds: int = DEFAULT_COOLDOWN_SECONDS
    enforcement: Enforcement = Enforcement.REQUIRED
    action_windows: tuple[ActionWindow, ...] = ()
    identity_labels: IdentityLabels | None = None
    """Per-rule override of the default join labels for the target kind."""
    broker_identity: StatedIdentity = KAFKA_ONLY
    """How a pod's broker id is read (`spec.brokerIdentity`); by default only from Kafka's advertised hosts."""

    @property
    def approval_required(self) -> bool:
        return self.enforcement is Enforcement.APPROVAL_REQUIRED

    @property
    def dry_run(self) -> bool:
        return self.enforcement is Enforcement.DRY_RUN

    def in_action_window(self, *, weekday: int, minute_of_day: int) -> bool:
        if not self.action_windows:
            return True
        return any(window.contains(weekday=weekday, minute_of_day=minute_of_day) for window in self.action_windows)
