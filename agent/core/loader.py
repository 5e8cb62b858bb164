"""Turn AutopilotRule YAML text into validated Rules, reporting every problem at once.

Both the vendor's `autopilot.libopenstorage.org/v1alpha1` rules (unchanged) and our own
`kafka-autopilot.io/v1alpha1` rules are accepted; ours may use the extensions (`identityLabels`,
`enforcement: dryRun`, `actionWindow`, `minstep`, ...), and so may vendor rules, which costs nothing.

AutopilotPolicy documents in the same files are skipped here; agent.core.policy loads them.
Actions and their params are checked against the catalog the caller passes (agent.actions.registry),
and each loaded action keeps its spec, which plans it.

Each problem carries file:line:column, the rule name and the field path. A document with errors yields
no Rule, and never stops the documents and files after it from loading.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from agent.core.aliases import KEY_ALIASES
from agent.core.broker_identity import KAFKA_ONLY, StatedIdentity
from agent.core.catalog import Catalog, ParamError, convert_param
from agent.core.diagnostics import Problem, Severity, did_you_mean
from agent.core.operators import Operator, validate_values
from agent.core.rules import (
    API_VERSION,
    DEFAULT_COOLDOWN_SECONDS,
    DEFAULT_POLL_INTERVAL_SECONDS,
    POLICY_KIND,
    RULE_KIND,
    VENDOR_API_VERSION,
    ActionWindow,
    ConditionExpression,
    ConditionProvider,
    Conditions,
    Enforcement,
    IdentityLabels,
    LabelSelector,
    Rule,
    RuleAction,
    SelectorOperator,
    SelectorRequirement,
    TargetKind,
)
from agent.core.yamlview import View, compose_documents

API_VERSIONS = (VENDOR_API_VERSION, API_VERSION)

KUBERNETES_CONDITION_KEYS = {
    "NodeReady": "1 when the node's Ready condition is True, 0 when False or Unknown",
    "NodeLeaseAgeSeconds": "seconds since the node's Lease was last renewed",
    "NodeUnreachableSeconds": "seconds the node has been NotReady/Unknown (0 when Ready)",
}
"""Condition keys of `conditions.provider: kubernetes`, read from the watch cache of Nodes and Leases."""

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKDAYS = {name: number for number, day in enumerate(_DAY_NAMES, 1) for name in (day, day[:3])}
_CLOCK = re.compile(r"^([01]?\d|2[0-4]):([0-5]\d)$")


@dataclass(frozen=True, kw_only=True)
class LoadResult:
    rules: tuple[Rule, ...]
    problems: tuple[Problem, ...]

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(problem for problem in self.problems if problem.severity is Severity.ERROR)


def parse_rules(text: str, *, file: str, catalog: Catalog) -> LoadResult:
    """Every rule in a (multi-document) YAML text; documents with errors are left out and reported.

    Action names and params are checked against `catalog`; each loaded action carries its spec."""
    documents = compose_documents(text, file=file)
    rules: list[Rule] = []
    problems: list[Problem] = []
    for document in documents.views:
        kind = document.get("kind")
        if kind is not None and kind.is_scalar() and kind.text() == POLICY_KIND:
            continue
        builder = _RuleBuilder(document, catalog=catalog)
        rule = builder.build()
        problems.extend(builder.problems)
        if rule is not None:
            rules.append(rule)
    if documents.error is not None:
        error = documents.error
        problems.append(Problem(location=error.location, rule="", field="", message=error.message))
    return LoadResult(rules=tuple(rules), problems=tuple(problems))


def merge_results(results: Iterable[LoadResult], *, drop_duplicated: bool = False) -> LoadResult:
    """Combine per-file results, reporting a rule name defined twice, at both places (file and line).

    The later definition is always dropped; with `drop_duplicated` (rule files read together, where
    no one can say which definition was meant) the first is dropped too, and nothing of that name runs.
    """
    rules: list[Rule] = []
    problems: list[Problem] = []
    seen: dict[str, Rule] = {}
    duplicated: set[str] = set()
    for result in results:
        problems.extend(result.problems)
        for rule in result.rules:
            first = seen.get(rule.name)
            if first is not None:
                ignored = "both are ignored" if drop_duplicated else "this one is ignored"
                problems.append(
                    Problem(
                        location=rule.source,
                        rule=rule.name,
                        field="metadata.name",
                        message=f"rule name already used at {first.source}; {ignored}",
                    )
                )
                if drop_duplicated and rule.name not in duplicated:
                    duplicated.add(rule.name)
                    problems.append(
                        Problem(
                            location=first.source,
                            rule=rule.name,
                            field="metadata.name",
                            message=f"rule name used again at {rule.source}; both are ignored",
                        )
                    )
                continue
            seen[rule.name] = rule
            rules.append(rule)
    kept = tuple(rule for rule in rules if rule.name not in duplicated)
    return LoadResult(rules=kept, problems=tuple(problems))


@dataclass
class _RuleBuilder:
    document: View
    catalog: Catalog
    rule_name: str = ""
    problems: list[Problem] = field(default_factory=list)

    def error(self, view: View, message: str, *, path: str | None = None) -> None:
        self.problems.append(
            Problem(
                location=view.location,
                rule=self.rule_name,
                field=view.path if path is None else path,
                message=message,
            )
        )

    # --- structure helpers -------------------------------------------------------------------

    def mapping(self, view: View | None, known: Iterable[str], *, required: Iterable[str] = ()) -> bool:
        """Check a mapping's keys: unknown ones (with a suggestion) and missing required ones."""
        if view is None:
            return False
        if not view.is_mapping():
            self.error(view, f"must be a mapping, got a {view.kind}")
            return False
        known = tuple(known)
        present = set()
        for key, key_view, _ in view.items():
            if key in present:
                self.error(key_view, f'duplicate field "{key}": each field may be given once')
            present.add(key)
            if key not in known:
                self.error(key_view, f'unknown field "{key}"{did_you_mean(key, known)}')
        for key in required:
            if key not in present:
                self.error(view, f'missing required field "{key}"', path=_join(view.path, key))
        return True

    def string(self, view: View | None, *, allow_numbers: bool = False) -> str | None:
        if view is None:
            return None
        if view.kind == "string" or (allow_numbers and view.kind == "number"):
            return view.text()
        hint = " (quote it)" if view.kind in ("number", "boolean") else ""
        self.error(view, f"must be a string, got a {view.kind}{hint}")
        return None

    def seconds(self, view: View | None, *, default: int, minimum: int = 0) -> int:
        """A duration: an integer number of seconds, or a string like 90s, 5m, 1h30m."""
        if view is None:
            return default
        if not view.is_scalar():
            self.error(view, f"must be whole seconds or a duration like 5m, got a {view.kind}")
            return default
        if view.kind == "number" and view.text().isdigit():
            value = int(view.text())
        elif view.kind == "string" and (match := _DURATION.match(view.text())) and view.text():
            hours, minutes, secs = (int(part) if part else 0 for part in match.groups())
            value = hours * 3600 + minutes * 60 + secs
        else:
            self.error(view, f"must be whole seconds or a duration like 5m, got {view.text()!r}")
            return default
        if value < minimum:
            self.error(view, f"must be at least {minimum}s, got {value}s")
            return default
        return value

    def sequence(self, view: View | None) -> list[View]:
        if view is None:
            return []
        if not view.is_sequence():
            self.error(view, f"must be a list, got a {view.kind}")
            return []
        return list(view.elements())

    # --- the rule ----------------------------------------------------------------------------

    def build(self) -> Rule | None:
        document = self.document
        name_view = document.get("metadata")
        name_view = name_view.get("name") if name_view is not None else None
        if name_view is not None and name_view.is_scalar():
            self.rule_name = name_view.text()
        if not self.mapping(
            document, ("apiVersion", "kind", "metadata", "spec"), required=("apiVersion", "kind", "spec")
        ):
            return None
        problems_before = len(self.problems)
        api_version = self.string(document.get("apiVersion"))
        if api_version is not None and api_version not in API_VERSIONS:
            self.error(
                _must(document.get("apiVersion")),
                f"unsupported apiVersion {api_version!r}; use {' or '.join(API_VERSIONS)}"
                f"{did_you_mean(api_version, API_VERSIONS)}",
            )
        kind = self.string(document.get("kind"))
        if kind is not None and kind != RULE_KIND:
            self.error(_must(document.get("kind")), f"kind must be {RULE_KIND}, got {kind!r}")
            return None
        self.metadata(document.get("metadata"), document)
        spec_view = document.get("spec")
        rule = self.spec(spec_view, api_version or API_VERSION) if spec_view is not None else None
        if len(self.problems) > problems_before:
            return None
        return rule

    def metadata(self, view: View | None, document: View) -> None:
        if view is None:
            self.error(document, 'missing required field "metadata"', path="metadata")
            return
        if not self.mapping(view, ("name", "namespace", "labels", "annotations"), required=("name",)):
            return
        name = self.string(view.get("name"))
        if name is not None and (len(name) > 253 or not _DNS_SUBDOMAIN.match(name)):
            self.error(
                _must(view.get("name")),
                f"{name!r} is not a valid name: lowercase letters, digits, '-' and '.', "
                "starting and ending with a letter or digit",
            )

    def spec(self, view: View, api_version: str) -> Rule | None:
        known = (
            "selector",
            "namespaceSelector",
            "conditions",
            "actions",
            "pollInterval",
            "actionsCoolDownPeriod",
            "enforcement",
            "actionWindow",
            "weight",
            "identityLabels",
            "brokerIdentity",
        )
        if not self.mapping(view, known, required=("conditions", "actions")):
            return None
        selector = self.selector(view.get("selector")) or LabelSelector()
        namespace_selector = self.selector(view.get("namespaceSelector"))
        actions = self.actions(view.get("actions"))
        target = self.target(view.get("actions"), actions)
        conditions = self.conditions(view.get("conditions"), target)
        enforcement = self.enforcement(view.get("enforcement"))
        windows = self.action_windows(view.get("actionWindow"))
        identity = self.identity_labels(view.get("identityLabels"))
        broker_identity = self.broker_identity(view.get("brokerIdentity"))
        weight = view.get("weight")
        if weight is not None and weight.kind != "number":
            self.error(weight, f"must be a number, got a {weight.kind}")
        poll = self.seconds(view.get("pollInterval"), default=DEFAULT_POLL_INTERVAL_SECONDS, minimum=1)
        cooldown = self.seconds(view.get("actionsCoolDownPeriod"), default=DEFAULT_COOLDOWN_SECONDS)
        if conditions is None or target is None or not actions:
            return None
        return Rule(
            name=self.rule_name,
            api_version=api_version,
            source=self.document.location,
            target=target,
            selector=selector,
            namespace_selector=namespace_selector,
            conditions=conditions,
            actions=tuple(actions),
            poll_interval_seconds=poll,
            cooldown_seconds=cooldown,
            enforcement=enforcement,
            action_windows=windows,
            identity_labels=identity,
            broker_identity=broker_identity,
        )

    def selector(self, view: View | None) -> LabelSelector | None:
        if not self.mapping(view, ("matchLabels", "matchExpressions")):
            return None
        assert view is not None
        labels: dict[str, str] = {}
        labels_view = view.get("matchLabels")
        if labels_view is not None:
            if not labels_view.is_mapping():
                self.error(labels_view, f"must be a mapping of label to value, got a {labels_view.kind}")
            else:
                for label, _, value_view in labels_view.items():
                    label_value = self.string(value_view, allow_numbers=True)
                    if label_value is not None:
                        labels[label] = label_value
        requirements = []
        for element in self.sequence(view.get("matchExpressions")):
            if not self.mapping(element, ("key", "operator", "values"), required=("key", "operator")):
                continue
            key = self.string(element.get("key"))
            operator_text = self.string(element.get("operator"))
            values = [
                text
                for value in self.sequence(element.get("values"))
                if (text := self.string(value, allow_numbers=True)) is not None
            ]
            if key is None or operator_text is None:
                continue
            choices = [operator.value for operator in SelectorOperator]
            if operator_text not in choices:
                self.error(
                    _must(element.get("operator")),
                    f"label selector operator must be one of {', '.join(choices)}"
                    f"{did_you_mean(operator_text, choices)}",
                )
                continue
            operator = SelectorOperator(operator_text)
            needs_values = operator in (SelectorOperator.IN, SelectorOperator.NOT_IN)
            if needs_values != bool(values):
                self.error(
                    element,
                    f"{operator} takes {'one or more values' if needs_values else 'no values'}",
                    path=_join(element.path, "values"),
                )
                continue
            requirements.append(SelectorRequirement(key=key, operator=operator, values=tuple(values)))
        return LabelSelector(match_labels=labels, match_expressions=tuple(requirements))

    def conditions(self, view: View | None, target: TargetKind | None) -> Conditions | None:
        if not self.mapping(
            view, ("expressions", "requiredMatches", "for", "type", "provider"), required=("expressions",)
        ):
            return None
        assert view is not None
        provider = ConditionProvider.PROMETHEUS
        provider_view = view.get("provider")
        provider_text = self.string(provider_view)
        if provider_view is not None and provider_text is not None:
            choices = [choice.value for choice in ConditionProvider]
            if provider_text not in choices:
                self.error(
                    provider_view,
                    f"provider must be one of {', '.join(choices)}{did_you_mean(provider_text, choices)}",
                )
            else:
                provider = ConditionProvider(provider_text)
                if provider is ConditionProvider.KUBERNETES and target not in (None, TargetKind.NODE):
                    self.error(provider_view, "the kubernetes provider has conditions for Nodes only")
        type_view = view.get("type")
        if type_view is not None and self.string(type_view) not in (None, "monitoring"):
            self.error(type_view, 'type must be "monitoring" (the only condition type)')
        expressions = [
            expression
            for element in self.sequence(view.get("expressions"))
            if (expression := self.expression(element, provider)) is not None
        ]
        expressions_view = view.get("expressions")
        count = len(list(expressions_view.elements())) if expressions_view and expressions_view.is_sequence() else 0
        if expressions_view is not None and expressions_view.is_sequence() and count == 0:
            self.error(expressions_view, "needs at least one expression")
        required_view = view.get("requiredMatches")
        required = 0
        if required_view is not None:
            if required_view.kind != "number" or not required_view.text().isdigit():
                self.error(required_view, f"must be a whole number, got a {required_view.kind}")
            else:
                required = int(required_view.text())
                if required > count:
                    self.error(required_view, f"is {required} but there are only {count} expressions")
        for_seconds = self.seconds(view.get("for"), default=0)
        if not expressions:
            return None
        return Conditions(
            expressions=tuple(expressions),
            required_matches=required,
            for_seconds=for_seconds,
            provider=provider,
        )

    def expression(self, view: View, provider: ConditionProvider) -> ConditionExpression | None:
        if not self.mapping(view, ("key", "keyAlias", "operator", "values"), required=("operator",)):
            return None
        key_view, alias_view = view.get("key"), view.get("keyAlias")
        key = self.string(key_view)
        alias = self.string(alias_view)
        query: str | None = None
        if key_view is not None and alias_view is not None:
            self.error(view, "give key or keyAlias, not both", path=_join(view.path, "keyAlias"))
        elif key_view is None and alias_view is None:
            self.error(view, 'missing required field "key" (or "keyAlias")', path=_join(view.path, "key"))
        elif alias is not None and provider is ConditionProvider.KUBERNETES:
            self.error(
                _must(alias_view), "keyAlias names PromQL; the kubernetes provider takes a key such as NodeReady"
            )
        elif alias is not None:
            query = KEY_ALIASES.get(alias)
            if query is None:
                self.error(_must(alias_view), f'unknown keyAlias "{alias}"{did_you_mean(alias, KEY_ALIASES)}')
        elif key is not None:
            query = key.strip()
            if not query:
                self.error(_must(key_view), "must not be empty")
                query = None
            elif provider is ConditionProvider.KUBERNETES and query not in KUBERNETES_CONDITION_KEYS:
                self.error(
                    _must(key_view),
                    f'unknown kubernetes condition "{query}"; known: '
                    f"{', '.join(KUBERNETES_CONDITION_KEYS)}{did_you_mean(query, KUBERNETES_CONDITION_KEYS)}",
                )
                query = None
            elif provider is ConditionProvider.PROMETHEUS and query.count("(") != query.count(")"):
                self.error(_must(key_view), "unbalanced parentheses in the PromQL expression")
                query = None
        operator_view = view.get("operator")
        operator_text = self.string(operator_view)
        operator: Operator | None = None
        if operator_view is not None and operator_text is not None:
            choices = [choice.value for choice in Operator]
            if operator_text not in choices:
                self.error(
                    operator_view,
                    f"unknown operator {operator_text!r}; use one of {', '.join(choices)}"
                    f"{did_you_mean(operator_text, choices)}",
                )
            else:
                operator = Operator(operator_text)
        values_view = view.get("values")
        values = [
            text
            for element in self.sequence(values_view)
            if (text := self.string(element, allow_numbers=True)) is not None
        ]
        if operator is not None:
            for message in validate_values(operator, values=values):
                self.error(values_view or view, message, path=_join(view.path, "values"))
        if query is None or operator is None:
            return None
        written = key_view or alias_view
        return ConditionExpression(
            query=query,
            operator=operator,
            values=tuple(values),
            alias=alias,
            location=written.location if written is not None else view.location,
            field_path=written.path if written is not None else view.path,
        )

    def actions(self, view: View | None) -> list[RuleAction]:
        elements = self.sequence(view)
        if view is not None and view.is_sequence() and not elements:
            self.error(view, "needs at least one action")
        actions = []
        for element in elements:
            action = self.action(element)
            if action is not None:
                actions.append(action)
        return actions

    def action(self, view: View) -> RuleAction | None:
        if not self.mapping(view, ("name", "params"), required=("name",)):
            return None
        name_view = view.get("name")
        name = self.string(name_view)
        if name_view is None or name is None:
            return None
        spec = self.catalog.get(name)
        if spec is None:
            self.error(name_view, f'unknown action "{name}"{did_you_mean(name, self.catalog)}')
            return None
        params_view = view.get("params")
        known = [param.name for param in spec.params]
        values: dict[str, object] = {}
        raw: dict[str, str] = {}
        ok = True
        if params_view is not None and self.mapping(params_view, known):
            for key, _, value_view in params_view.items():
                param = next((param for param in spec.params if param.name == key), None)
                text = self.string(value_view, allow_numbers=True)
                if param is None or text is None:
                    ok = ok and param is None
                    continue
                raw[key] = text
                try:
                    values[key] = convert_param(param, text.strip())
                except ParamError as error:
                    self.error(value_view, str(error))
                    ok = False
        elif params_view is not None:
            ok = False
        if not ok:
            return None
        try:
            params = spec.build(values)
        except ValueError as error:
            self.error(params_view or view, str(error), path=_join(view.path, "params"))
            return None
        return RuleAction(name=name, spec=spec, params=params, raw_params=raw)

    def target(self, view: View | None, actions: list[RuleAction]) -> TargetKind | None:
        targets = {action.spec.target for action in actions}
        if len(targets) > 1:
            assert view is not None
            kinds = ", ".join(f"{action.name} acts on {action.spec.target}" for action in actions)
            self.error(view, f"actions of one rule must act on one kind of object: {kinds}")
            return None
        return next(iter(targets), None)

    def enforcement(self, view: View | None) -> Enforcement:
        text = self.string(view)
        if view is None or text is None:
            return Enforcement.REQUIRED
        choices = [choice.value for choice in Enforcement]
        if text not in choices:
            self.error(view, f"must be one of {', '.join(choices)}{did_you_mean(text, choices)}")
            return Enforcement.REQUIRED
        return Enforcement(text)

    def action_windows(self, view: View | None) -> tuple[ActionWindow, ...]:
        if view is None:
            return ()
        elements = [view] if view.is_mapping() else self.sequence(view)
        windows = []
        for element in elements:
            if not self.mapping(element, ("days", "start", "end"), required=("start", "end")):
                continue
            start = self.clock(element.get("start"))
            end = self.clock(element.get("end"))
            days: set[int] = set()
            for day_view in self.sequence(element.get("days")):
                day = self.string(day_view)
                if day is None:
                    continue
                if day.lower() not in _WEEKDAYS:
                    self.error(day_view, f"must be a weekday such as Mon or Saturday, got {day!r}")
                else:
                    days.add(_WEEKDAYS[day.lower()])
            if start is not None and end is not None:
                windows.append(ActionWindow(days=frozenset(days), start_minute=start, end_minute=end))
        return tuple(windows)

    def clock(self, view: View | None) -> int | None:
        text = self.string(view)
        match = _CLOCK.match(text) if text is not None else None
        if view is None or text is None:
            return None
        if match is None or (int(match.group(1)) == 24 and match.group(2) != "00"):
            self.error(view, f'must be a UTC time "HH:MM", got {text!r}')
            return None
        return int(match.group(1)) * 60 + int(match.group(2))

    def identity_labels(self, view: View | None) -> IdentityLabels | None:
        if view is None:
            return None
        alternatives = []
        for element in self.sequence(view):
            names = tuple(
                name
                for label in (self.sequence(element) if element.is_sequence() else [element])
                if (name := self.string(label)) is not None
            )
            if names:
                alternatives.append(names)
        if not alternatives:
            self.error(view, 'must be a list of label lists, e.g. [["namespace", "pvc"]]')
            return None
        return tuple(alternatives)

    def broker_identity(self, view: View | None) -> StatedIdentity:
        """`{label: KEY}`, `{annotation: KEY}` or `{ordinalOffset: N}`: exactly one."""
        ways = ("label", "annotation", "ordinalOffset")
        if view is None or not self.mapping(view, ways):
            return KAFKA_ONLY
        given = [key for key, _, _ in view.items() if key in ways]
        if not given and any(True for _ in view.items()):
            return KAFKA_ONLY  # its unknown fields are reported already
        if len(given) != 1:
            self.error(view, f"must give exactly one of label, annotation or ordinalOffset, got {len(given)}")
            return KAFKA_ONLY
        offset_view = view.get("ordinalOffset")
        if offset_view is not None:
            if offset_view.kind != "number" or not offset_view.text().isdigit():
                self.error(offset_view, f"must be a whole number of at least 0, got {offset_view.text()!r}")
                return KAFKA_ONLY
            return StatedIdentity(ordinal_offset=int(offset_view.text()))
        key = given[0]
        name = self.string(view.get(key))
        if not name:
            if name is not None:
                self.error(_must(view.get(key)), "must name a label or annotation, got an empty string")
            return KAFKA_ONLY
        return StatedIdentity(label=name) if key == "label" else StatedIdentity(annotation=name)


def _must(view: View | None) -> View:
    assert view is not None
    return view


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
