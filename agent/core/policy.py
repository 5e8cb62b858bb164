"""Guardrail policies (AutopilotPolicy), pure: the model, its loader, and the admission of planned actions.

Rules say when to act; a policy says how much acting the whole agent may do, whatever the rules say.
One policy applies to every rule (`kafka-autopilot run --policy FILE`). Its document:

    apiVersion: kafka-autopilot.io/v1alpha1
    kind: AutopilotPolicy
    metadata:
      name: conservative
    spec:
      dryRun: false                        # true: every action is planned and recorded, none applied
      dryRunActions: [<action>, ...]       # only these actions are recorded instead of applied
      approvalRequired: [<action>, ...]    # a rule with one of these actions waits for an approval
      maxConcurrentActions: 2              # actions in flight at once, all rules together
      rateLimits:                          # each: at most `count` actions started within `period`
        perObject: {count: 1, period: 6h}  #   on one object, by any rule
        perRule: {count: 4, period: 1h}    #   by one rule, on any of its objects
        overall: {count: 10, period: 1h}   #   by all rules together
      namespaces:
        allow: [kafka]                     # absent or empty: every namespace
        deny: [kube-system]                # wins over allow
      actionWindow:                        # as a rule's actionWindow (UTC); both must be open
        - {days: [Mon, Tue, Wed, Thu, Fri], start: "08:00", end: "18:00"}
      maxCordonedNodes: 1                  # a node action waits while this many other nodes are cordoned
      minResizeInterval: 6h                # between two resizes of one volume (cloud volume limits)

Durations are whole seconds or strings such as 90s, 30m, 6h, 1h30m. Every field is optional; an empty
spec allows everything. Problems are reported like the rule loader's, all at once, as
file:line:col: policy name: field: message.

Where each guardrail acts:
- namespaces: objects outside are not evaluated at all (`excluded_by_namespace` says why; the
  runtime records it). Cluster-scoped objects (nodes) have no namespace and are never excluded.
- actionWindow and approvalRequired: inputs of the state machine (ActionAwaitingWindow,
  ActionAwaitingApproval), exactly like a rule's own window and `enforcement: approvalRequired`.
- dryRun and dryRunActions: read once at start-up, to pick each executor's applier.
- rate limits, maxConcurrentActions, maxCordonedNodes, minResizeInterval: `admit`, below, on every
  planned action; a hold puts the object in ActionsThrottled, re-checked at each evaluation.

`admit` is given facts, never reads them: the actions started recently (from the durable
AutopilotRuleObject statuses, so a restarted agent or another replica sees the same history, plus
the ones this agent started and has not stored yet), how many actions are in flight, and which nodes
are cordoned. Checks run in this order and the first hold wins: minResizeInterval, perObject,
perRule, overall, maxConcurrentActions, maxCordonedNodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum

from agent.core.catalog import Catalog
from agent.core.diagnostics import Location, Problem, did_you_mean
from agent.core.loader import _RuleBuilder
from agent.core.rules import API_VERSION, POLICY_KIND, ActionWindow
from agent.core.yamlview import View, compose_documents

# --- the model ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RateLimit:
    """At most `count` actions started within any `period_seconds`."""

    count: int
    period_seconds: int

    def describe(self) -> str:
        return f"{self.count} per {_duration(self.period_seconds)}"


@dataclass(frozen=True, kw_only=True)
class RateLimits:
    per_object: RateLimit | None = None
    per_rule: RateLimit | None = None
    overall: RateLimit | None = None


@dataclass(frozen=True, kw_only=True)
class Policy:
    name: str
    source: Location | None = None
    dry_run: bool = False
    dry_run_actions: frozenset[str] = frozenset()
    approval_required_actions: frozenset[str] = frozenset()
    max_concurrent_actions: int | None = None
    rate_limits: RateLimits = field(default_factory=RateLimits)
    namespaces_allowed: frozenset[str] = frozenset()
    """Empty: every namespace."""
    namespaces_denied: frozenset[str] = frozenset()
    action_windows: tuple[ActionWindow, ...] = ()
    max_cordoned_nodes: int | None = None
    min_resize_interval_seconds: int | None = None

    def action_dry_run(self, action: str) -> bool:
        """Whether `action`'s executor gets the dry-run applier (decided once, at start-up)."""
        return self.dry_run or action in self.dry_run_actions

    def approval_required(self, actions: Iterable[str]) -> bool:
        return any(action in self.approval_required_actions for action in actions)

    def window_open(self, now: float) -> bool:
        if not self.action_windows:
            return True
        moment = datetime.fromtimestamp(now, UTC)
        weekday, minute = moment.isoweekday(), moment.hour * 60 + moment.minute
        return any(window.contains(weekday=weekday, minute_of_day=minute) for window in self.action_windows)

    def excluded_by_namespace(self, namespace: str | None) -> str | None:
        """Why an object in `namespace` is not acted on, or None when it may be."""
        if namespace is None:
            return None
        if namespace in self.namespaces_denied:
            return f"namespace {namespace} is denied by policy {self.name}"
        if self.namespaces_allowed and namespace not in self.namespaces_allowed:
            allowed = ", ".join(sorted(self.namespaces_allowed))
            return f"namespace {namespace} is not among those policy {self.name} allows ({allowed})"
        return None

    @property
    def history_seconds(self) -> int:
        """How far back admission looks at started actions (0: it does not need them)."""
        limits = self.rate_limits
        periods = [limit.period_seconds for limit in (limits.per_object, limits.per_rule, limits.overall) if limit]
        return max([*periods, self.min_resize_interval_seconds or 0])


# --- admission --------------------------------------------------------------------------------------


class HoldCode(StrEnum):
    MIN_RESIZE_INTERVAL = "MinResizeInterval"
    RATE_LIMIT_OBJECT = "RateLimitPerObject"
    RATE_LIMIT_RULE = "RateLimitPerRule"
    RATE_LIMIT_OVERALL = "RateLimitOverall"
    MAX_CONCURRENT = "MaxConcurrentActions"
    MAX_CORDONED = "MaxCordonedNodes"
    IDENTITY_UNKNOWN = "IdentityUnknown"
    """Not the policy's: the object's identity (a broker pod's broker id) is unknown (agent.core.engine)."""


@dataclass(frozen=True, kw_only=True)
class ActionStart:
    """One action started on an object by a rule (in flight or finished)."""

    rule: str
    object: str
    action: str
    at: float


@dataclass(frozen=True, kw_only=True)
class AdmissionFacts:
    """What admission needs to know of the world, gathered by the caller."""

    starts: tuple[ActionStart, ...] = ()
    """Actions started recently, by every rule (at least the policy's `history_seconds` back)."""
    in_flight: int = 0
    """Actions in flight now, all rules together."""
    cordoned_nodes: frozenset[str] = frozenset()

    def admitted(self, *, rule: str, object_key: str, action: str, at: float, catalog: Catalog) -> AdmissionFacts:
        """The facts once this action has been let through (for the next admission in the same cycle)."""
        may_cordon = action in catalog.node_actions()
        cordoned = self.cordoned_nodes | {object_key} if may_cordon else self.cordoned_nodes
        start = ActionStart(rule=rule, object=object_key, action=action, at=at)
        return replace(self, starts=(*self.starts, start), in_flight=self.in_flight + 1, cordoned_nodes=cordoned)


@dataclass(frozen=True, kw_only=True)
class Admitted:
    pass


@dataclass(frozen=True, kw_only=True)
class Held:
    code: HoldCode
    reason: str
    until: float | None = None
    """When the hold lifts by itself (None: when the condition clears, e.g. an action finishes)."""


Admission = Admitted | Held


def admit(
    *, policy: Policy, rule: str, object_key: str, action: str, facts: AdmissionFacts, now: float, catalog: Catalog
) -> Admission:
    """May `rule` start `action` on `object_key` now? The checks are listed in the module docstring.

    The `catalog` says which actions `minResizeInterval` spaces out on one volume (those whose spec is
    `spaced_by_min_resize_interval`) and which `maxCordonedNodes` guards (node actions, which may cordon
    the node they act on)."""
    resize_actions = catalog.resize_actions()
    if action in resize_actions and policy.min_resize_interval_seconds:
        interval = policy.min_resize_interval_seconds
        resizes = [start.at for start in facts.starts if start.object == object_key and start.action in resize_actions]
        last = max(resizes, default=None)
        if last is not None and now < last + interval:
            until = last + interval
            return Held(
                code=HoldCode.MIN_RESIZE_INTERVAL,
                reason=f"last resize of {object_key} {_duration(now - last)} ago; policy {policy.name} allows one "
                f"per {_duration(interval)}: next at {_iso(until)}",
                until=until,
            )
    limits = policy.rate_limits
    scopes = (
        (limits.per_object, HoldCode.RATE_LIMIT_OBJECT, f"on {object_key}", lambda s: s.object == object_key),
        (limits.per_rule, HoldCode.RATE_LIMIT_RULE, f"by rule {rule}", lambda s: s.rule == rule),
        (limits.overall, HoldCode.RATE_LIMIT_OVERALL, "by all rules", lambda s: True),
    )
    for limit, code, scope, counted in scopes:
        if limit is None:
            continue
        recent = sorted(s.at for s in facts.starts if counted(s) and s.at > now - limit.period_seconds)
        if len(recent) >= limit.count:
            until = recent[len(recent) - limit.count] + limit.period_seconds
            return Held(
                code=code,
                reason=f"{len(recent)} actions started {scope} in the last {_duration(limit.period_seconds)}; "
                f"policy {policy.name} allows {limit.describe()}: next at {_iso(until)}",
                until=until,
            )
    if policy.max_concurrent_actions is not None and facts.in_flight >= policy.max_concurrent_actions:
        return Held(
            code=HoldCode.MAX_CONCURRENT,
            reason=f"{facts.in_flight} actions in flight; policy {policy.name} allows "
            f"{policy.max_concurrent_actions} at once",
        )
    if action in catalog.node_actions() and policy.max_cordoned_nodes is not None:
        others = sorted(facts.cordoned_nodes - {object_key})
        if len(others) >= policy.max_cordoned_nodes:
            return Held(
                code=HoldCode.MAX_CORDONED,
                reason=f"{len(others)} other nodes cordoned ({', '.join(others)}); policy {policy.name} allows "
                f"{policy.max_cordoned_nodes} at once",
            )
    return Admitted()


def _duration(seconds: float) -> str:
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")
    return text or "0s"


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the loader ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PolicyLoadResult:
    policies: tuple[Policy, ...]
    problems: tuple[Problem, ...]


def parse_policies(text: str, *, file: str, catalog: Catalog) -> PolicyLoadResult:
    """Every AutopilotPolicy document of a YAML text; documents of other kinds are left to their loaders.

    A syntax error is reported by the rule loader for the same text, so it is not reported twice when
    the caller reads both; `parse_policy_file` reports it for a file read as a policy alone.
    """
    policies: list[Policy] = []
    problems: list[Problem] = []
    for document in compose_documents(text, file=file).views:
        kind = document.get("kind")
        if kind is None or not kind.is_scalar() or kind.text() != POLICY_KIND:
            continue
        builder = _PolicyBuilder(document, catalog=catalog)
        policy = builder.build_policy()
        problems.extend(builder.problems)
        if policy is not None:
            policies.append(policy)
    return PolicyLoadResult(policies=tuple(policies), problems=tuple(problems))


def parse_policy_file(text: str, *, file: str, catalog: Catalog) -> PolicyLoadResult:
    """The one policy a `--policy` file must hold: anything else in it is a problem."""
    documents = compose_documents(text, file=file)
    result = parse_policies(text, file=file, catalog=catalog)
    problems = list(result.problems)
    if documents.error is not None:
        problems.append(Problem(location=documents.error.location, rule="", field="", message=documents.error.message))
    for document in documents.views:
        kind = document.get("kind")
        if kind is None or not kind.is_scalar() or kind.text() != POLICY_KIND:
            written = kind.text() if kind is not None and kind.is_scalar() else "no kind"
            problems.append(
                Problem(
                    location=(kind or document).location,
                    rule="",
                    field="kind",
                    message=f"a policy file holds {POLICY_KIND} documents only, got {written!r}",
                )
            )
    if not problems and len(result.policies) != 1:
        where = Location(file=file, line=1, column=1)
        found = len(result.policies)
        problems.append(Problem(location=where, rule="", field="", message=f"expected one policy, found {found}"))
    return PolicyLoadResult(policies=result.policies, problems=tuple(problems))


_SPEC_FIELDS = (
    "dryRun",
    "dryRunActions",
    "approvalRequired",
    "maxConcurrentActions",
    "rateLimits",
    "namespaces",
    "actionWindow",
    "maxCordonedNodes",
    "minResizeInterval",
)


class _PolicyBuilder(_RuleBuilder):
    """The rule loader's field readers (positions, unknown fields, durations, windows), for a policy."""

    def build_policy(self) -> Policy | None:
        document = self.document
        metadata = document.get("metadata")
        name_view = metadata.get("name") if metadata is not None else None
        if name_view is not None and name_view.is_scalar():
            self.rule_name = name_view.text()
        if not self.mapping(document, ("apiVersion", "kind", "metadata", "spec"), required=("apiVersion", "kind")):
            return None
        api_version = self.string(document.get("apiVersion"))
        if api_version is not None and api_version != API_VERSION:
            self.error(
                _must(document.get("apiVersion")),
                f"unsupported apiVersion {api_version!r} for {POLICY_KIND}; use {API_VERSION}",
            )
        self.metadata(metadata, document)
        spec = document.get("spec")
        policy = Policy(name=self.rule_name, source=document.location)
        if spec is not None:
            if spec.kind == "null":
                spec = None
            elif not self.mapping(spec, _SPEC_FIELDS):
                return None
        if spec is not None:
            policy = self.policy_spec(spec, policy)
        return None if self.problems else policy

    def policy_spec(self, spec: View, policy: Policy) -> Policy:
        allowed, denied = self.namespaces(spec.get("namespaces"))
        return replace(
            policy,
            dry_run=self.boolean(spec.get("dryRun"), default=False),
            dry_run_actions=self.action_names(spec.get("dryRunActions")),
            approval_required_actions=self.action_names(spec.get("approvalRequired")),
            max_concurrent_actions=self.count(spec.get("maxConcurrentActions"), minimum=1),
            rate_limits=self.rate_limits(spec.get("rateLimits")),
            action_windows=self.action_windows(spec.get("actionWindow")),
            max_cordoned_nodes=self.count(spec.get("maxCordonedNodes"), minimum=0),
            min_resize_interval_seconds=self.optional_seconds(spec.get("minResizeInterval"), minimum=1),
            namespaces_allowed=allowed,
            namespaces_denied=denied,
        )

    def boolean(self, view: View | None, *, default: bool) -> bool:
        if view is None:
            return default
        if view.kind != "boolean":
            self.error(view, f"must be true or false, got {_shown(view)}")
            return default
        return bool(view.scalar())

    def count(self, view: View | None, *, minimum: int) -> int | None:
        if view is None:
            return None
        value = view.scalar() if view.is_scalar() and view.kind == "number" else None
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            self.error(view, f"must be a whole number of at least {minimum}, got {_shown(view)}")
            return None
        return value

    def optional_seconds(self, view: View | None, *, minimum: int) -> int | None:
        if view is None:
            return None
        problems = len(self.problems)
        value = self.seconds(view, default=0, minimum=minimum)
        return None if len(self.problems) > problems else value

    def action_names(self, view: View | None) -> frozenset[str]:
        names = set()
        for element in self.sequence(view):
            name = self.string(element)
            if name is None:
                continue
            if name not in self.catalog:
                self.error(element, f'unknown action "{name}"{did_you_mean(name, self.catalog)}')
                continue
            names.add(name)
        return frozenset(names)

    def rate_limits(self, view: View | None) -> RateLimits:
        if not self.mapping(view, ("perObject", "perRule", "overall")):
            return RateLimits()
        assert view is not None
        return RateLimits(
            per_object=self.rate_limit(view.get("perObject")),
            per_rule=self.rate_limit(view.get("perRule")),
            overall=self.rate_limit(view.get("overall")),
        )

    def rate_limit(self, view: View | None) -> RateLimit | None:
        if not self.mapping(view, ("count", "period"), required=("count", "period")):
            return None
        assert view is not None
        count = self.count(view.get("count"), minimum=1)
        period = self.optional_seconds(view.get("period"), minimum=1)
        if count is None or period is None:
            return None
        return RateLimit(count=count, period_seconds=period)

    def namespaces(self, view: View | None) -> tuple[frozenset[str], frozenset[str]]:
        """(allowed, denied) namespace names."""
        if not self.mapping(view, ("allow", "deny")):
            return frozenset(), frozenset()
        assert view is not None
        allowed, denied = (
            frozenset(name for element in self.sequence(view.get(key)) if (name := self.string(element)) is not None)
            for key in ("allow", "deny")
        )
        if allowed & denied:
            self.error(view, f"allowed and denied at once: {', '.join(sorted(allowed & denied))}")
        return allowed, denied


def _shown(view: View) -> str:
    return f"the {view.kind} {view.text()!r}" if view.is_scalar() else f"a {view.kind}"


def _must(view: View | None) -> View:
    assert view is not None
    return view


def describe(policy: Policy) -> Sequence[str]:
    """The policy in a few lines, for the agent's start-up log."""
    limits = policy.rate_limits
    lines = [
        f"dry-run: {'all actions' if policy.dry_run else ', '.join(sorted(policy.dry_run_actions)) or 'none'}",
        f"approval required for: {', '.join(sorted(policy.approval_required_actions)) or 'none'}",
        f"max concurrent actions: {policy.max_concurrent_actions or 'unlimited'}",
    ]
    for label, limit in (("per object", limits.per_object), ("per rule", limits.per_rule), ("overall", limits.overall)):
        if limit is not None:
            lines.append(f"rate limit {label}: {limit.describe()}")
    if policy.namespaces_allowed:
        lines.append(f"namespaces allowed: {', '.join(sorted(policy.namespaces_allowed))}")
    if policy.namespaces_denied:
        lines.append(f"namespaces denied: {', '.join(sorted(policy.namespaces_denied))}")
    if policy.action_windows:
        lines.append(f"action windows: {len(policy.action_windows)}")
    if policy.max_cordoned_nodes is not None:
        lines.append(f"max cordoned nodes: {policy.max_cordoned_nodes}")
    if policy.min_resize_interval_seconds:
        lines.append(f"min resize interval: {_duration(policy.min_resize_interval_seconds)}")
    return lines
