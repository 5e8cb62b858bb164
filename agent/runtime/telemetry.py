"""The agent's own metrics, exposed on /metrics in the Prometheus text format (prometheus_client).

Why it exists: alerts on `increase()` only see a failure if the series existed before it, so every
series a rule can produce is created at 0 when the rule is loaded (`rules_loaded`); and the label sets
are kept here, in one table, so that their cardinality stays visible:

| metric                                     | labels                                   |
|--------------------------------------------|------------------------------------------|
| kafka_autopilot_evaluations_total          | rule, verdict                            |
| kafka_autopilot_query_errors_total         | rule                                     |
| kafka_autopilot_unmatched_series_total     | rule                                     |
| kafka_autopilot_transitions_total          | rule, from, to                           |
| kafka_autopilot_actions_total              | rule, action, outcome                    |
| kafka_autopilot_object_actions_total       | rule, action, outcome, object (see below)|
| kafka_autopilot_approvals_total            | rule, outcome (APPROVAL_OUTCOMES)        |
| kafka_autopilot_loop_duration_seconds      | rule (summary: _sum, _count)             |
| kafka_autopilot_rules_loaded               | (gauge)                                  |
| kafka_autopilot_rule_problems              | (gauge: rules that failed to load)       |
| kafka_autopilot_rule_healthy               | rule (gauge: 1 when its last cycle saw every object) |
| kafka_autopilot_rule_not_configured        | rule (gauge: 1 when the rule cannot run in this agent's configuration) |
| kafka_autopilot_objects                    | rule, state (gauge: objects per state after the last cycle) |
| kafka_autopilot_approvals_pending          | rule (gauge: objects waiting for an approver) |
| kafka_autopilot_leader                     | (gauge: 1 while this replica acts; 0 on standby) |
| kafka_autopilot_events_published_total     | (CloudEvents sent to --events-topic)     |
| kafka_autopilot_events_dropped_total       | (CloudEvents dropped: the buffer was full) |
| kafka_autopilot_kube_events_dropped_total  | (Kubernetes Events dropped: too many waiting to be written) |
| process_*                                  | prometheus_client's ProcessCollector (CPU, memory, open fds) |

`outcome` of an action is one of ACTION_OUTCOMES. The `object` label (a broker, node or pool key) is
written only for the target kinds given to `Telemetry(object_label_kinds=...)`: by default the kinds
with few objects (brokers, nodes, pools), not PVCs, whose number grows with the cluster's claims.
A rule that is not configured here (a StoragePool rule without --storage-api, a cluster-wide rule in a
sidecar) has no `rule_healthy` series: it is neither healthy nor failing, and no alert fires for it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector, Summary
from prometheus_client.metrics import MetricWrapperBase

from agent.actions.base import OutcomeKind
from agent.core.matching import TargetObject
from agent.core.rules import Rule, TargetKind
from agent.core.states import RuleState, Verdict

ACTION_OUTCOMES = ("planned", "throttled", "declined-at-maxsize", *(kind.value for kind in OutcomeKind))
"""What became of an action: the cycle's decisions (planned, throttled, declined, declined-at-maxsize),
then the executor's end (verified, dry-run, declined, held, failed)."""
APPROVAL_OUTCOMES = ("requested", "approved", "declined", "refused", "cancelled", "used")
FEW_OBJECTS = frozenset({TargetKind.BROKER, TargetKind.NODE, TargetKind.STORAGE_POOL})
"""Target kinds whose objects get the `object` label by default: a cluster has tens of them."""


class Telemetry:
    """The agent's metrics in their own registry (one per agent, so tests can run several)."""

    def __init__(self, *, object_label_kinds: Iterable[TargetKind] = FEW_OBJECTS, process: bool = True) -> None:
        self.registry = CollectorRegistry()
        self.object_label_kinds = frozenset(object_label_kinds)
        self._metrics: dict[str, MetricWrapperBase] = {}
        counter, gauge = self._add(Counter), self._add(Gauge)
        counter("kafka_autopilot_evaluations_total", "Object evaluations by rule and verdict.", "rule", "verdict")
        counter("kafka_autopilot_query_errors_total", "Failed evaluation cycles (metric queries) by rule.", "rule")
        counter("kafka_autopilot_unmatched_series_total", "Series that named no selected object.", "rule")
        counter("kafka_autopilot_transitions_total", "State transitions by rule, from and to.", "rule", "from", "to")
        counter("kafka_autopilot_actions_total", "Actions by rule, action and outcome.", "rule", "action", "outcome")
        counter(
            "kafka_autopilot_object_actions_total",
            "Actions by rule, action, outcome and object (only for target kinds with few objects).",
            *("rule", "action", "outcome", "object"),
        )
        counter(
            "kafka_autopilot_approvals_total", "ActionApprovals by rule and what became of them.", "rule", "outcome"
        )
        self._add(Summary)(
            "kafka_autopilot_loop_duration_seconds", "Duration of one evaluation cycle of a rule.", "rule"
        )
        gauge("kafka_autopilot_rules_loaded", "Rules loaded and running.")
        gauge("kafka_autopilot_rule_problems", "Problems found while loading rules.")
        gauge("kafka_autopilot_rule_healthy", "1 when the rule's last cycle had data for every object.", "rule")
        gauge(
            "kafka_autopilot_rule_not_configured",
            "1 when the rule cannot run in this agent's configuration (not an error).",
            "rule",
        )
        gauge("kafka_autopilot_objects", "Objects of the rule by state, after its last cycle.", "rule", "state")
        gauge("kafka_autopilot_approvals_pending", "Objects of the rule waiting for an approver.", "rule")
        gauge("kafka_autopilot_leader", "1 while this replica holds the leader Lease and acts; 0 while it stands by.")
        counter("kafka_autopilot_events_published_total", "CloudEvents sent to the --events-topic.")
        counter("kafka_autopilot_events_dropped_total", "CloudEvents dropped: the buffer was full.")
        counter(
            "kafka_autopilot_kube_events_dropped_total", "Kubernetes Events dropped: too many waiting to be written."
        )
        if process:
            ProcessCollector(registry=self.registry)

    def _add(self, kind: type[MetricWrapperBase]) -> Callable[..., None]:
        def add(name: str, documentation: str, *labels: str) -> None:
            self._metrics[name] = kind(name, documentation, labels, registry=self.registry)

        return add

    def _child(self, name: str, labels: Mapping[str, str]) -> MetricWrapperBase:
        metric = self._metrics[name]
        return metric.labels(**labels) if labels else metric

    def inc(self, name: str, amount: float = 1.0, /, **labels: str) -> None:
        self._child(name, labels).inc(amount)  # type: ignore[attr-defined]

    def observe(self, name: str, seconds: float, /, **labels: str) -> None:
        self._child(name, labels).observe(seconds)  # type: ignore[attr-defined]

    def set(self, name: str, value: float, /, **labels: str) -> None:
        self._child(name, labels).set(value)  # type: ignore[attr-defined]

    def value(self, name: str, /, **labels: str) -> float:
        """A sample's value; 0 when the series does not exist."""
        return self.registry.get_sample_value(name, dict(labels)) or 0.0

    def rules_loaded(self, rules: Iterable[Rule], *, not_configured: Iterable[str] = ()) -> None:
        """Create every series the rules can produce, at 0, so that the first event is an increase."""
        rules = list(rules)
        self.set("kafka_autopilot_rules_loaded", len(rules))
        for rule in rules:
            labels = {"rule": rule.name}
            self._child("kafka_autopilot_query_errors_total", labels)
            self._child("kafka_autopilot_unmatched_series_total", labels)
            self._child("kafka_autopilot_approvals_pending", labels)
            self.set("kafka_autopilot_rule_not_configured", 0, **labels)
            for verdict in Verdict:
                self._child("kafka_autopilot_evaluations_total", {**labels, "verdict": verdict.value})
            for action in dict.fromkeys(action.name for action in rule.actions):
                for outcome in ACTION_OUTCOMES:
                    self._child("kafka_autopilot_actions_total", {**labels, "action": action, "outcome": outcome})
            for outcome in APPROVAL_OUTCOMES:
                self._child("kafka_autopilot_approvals_total", {**labels, "outcome": outcome})
        for name in not_configured:
            self.set("kafka_autopilot_rule_not_configured", 1, rule=name)

    def action(self, rule: Rule, action: str, outcome: str, target: TargetObject | None) -> None:
        """Count what became of one action (with the object's key where its kind allows the label)."""
        self.inc("kafka_autopilot_actions_total", rule=rule.name, action=action, outcome=outcome)
        if target is not None and rule.target in self.object_label_kinds:
            self.inc(
                "kafka_autopilot_object_actions_total",
                rule=rule.name,
                action=action,
                outcome=outcome,
                object=target.key,
            )

    def object_states(self, rule: Rule, states: Mapping[RuleState, int]) -> None:
        """Objects of the rule per state after a cycle (`states`: the count of each); every state is
        written, 0 included."""
        counts = {state: states.get(state, 0) for state in RuleState}
        for state, count in counts.items():
            self.set("kafka_autopilot_objects", count, rule=rule.name, state=state.value)
        self.set("kafka_autopilot_approvals_pending", counts[RuleState.ACTION_AWAITING_APPROVAL], rule=rule.name)

    def render(self) -> str:
        """The text exposition format; integral values without a decimal point, no `_created` series."""
        lines: list[str] = []
        for family in self.registry.collect():
            name = family.name + "_total" if family.type == "counter" else family.name
            lines.append(f"# HELP {name} {_escape_help(family.documentation)}")
            lines.append(f"# TYPE {name} {family.type}")
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                lines.append(f"{sample.name}{_labels(sample.labels)} {_number(sample.value)}")
        return "\n".join(lines) + "\n"


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    body = ",".join(f'{key}="{_escape(value)}"' for key, value in sorted(labels.items()))
    return "{" + body + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    return str(int(value)) if value == int(value) else repr(value)
