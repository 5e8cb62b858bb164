"""The agent's own metrics, exposed on /metrics in the Prometheus text format.

A handful of counters and one summary are all we need; writing the text format takes less code than
adapting a client library's registry, and keeps label cardinality visible here:

| metric                                        | labels                          |
|-----------------------------------------------|---------------------------------|
| kafka_autopilot_evaluations_total             | rule, verdict                   |
| kafka_autopilot_query_errors_total            | rule                            |
| kafka_autopilot_unmatched_series_total        | rule                            |
| kafka_autopilot_transitions_total             | rule, from, to                  |
| kafka_autopilot_actions_total                 | rule, action, outcome           |
| kafka_autopilot_loop_duration_seconds         | rule (summary: _sum, _count)    |
| kafka_autopilot_rules_loaded                  | (gauge)                         |
| kafka_autopilot_rule_problems                 | (gauge: rules that failed to load) |
| kafka_autopilot_rule_healthy                  | rule (gauge: 1 when its last cycle saw every object) |
| kafka_autopilot_approvals_total               | rule, outcome (requested, approved, declined, cancelled, used) |
| kafka_autopilot_leader                        | (gauge: 1 while this replica acts; 0 on standby) |

`outcome` is one of planned, applied, verified, failed, declined, declined-at-maxsize, held, dry-run.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

LabelSet = tuple[tuple[str, str], ...]

_HELP = {
    "kafka_autopilot_evaluations_total": ("counter", "Object evaluations by rule and verdict."),
    "kafka_autopilot_query_errors_total": ("counter", "Failed metric queries by rule."),
    "kafka_autopilot_unmatched_series_total": ("counter", "Series that named no selected object."),
    "kafka_autopilot_transitions_total": ("counter", "State transitions by rule, from and to."),
    "kafka_autopilot_actions_total": ("counter", "Actions by rule, action and outcome."),
    "kafka_autopilot_loop_duration_seconds": ("summary", "Duration of one evaluation cycle of a rule."),
    "kafka_autopilot_rules_loaded": ("gauge", "Rules loaded and running."),
    "kafka_autopilot_rule_problems": ("gauge", "Problems found while loading rules."),
    "kafka_autopilot_rule_healthy": ("labeled-gauge", "1 when the rule's last cycle had data for every object."),
    "kafka_autopilot_approvals_total": ("counter", "ActionApprovals by rule and what became of them."),
    "kafka_autopilot_events_published_total": ("counter", "CloudEvents sent to the --events-topic."),
    "kafka_autopilot_events_dropped_total": ("counter", "CloudEvents dropped: the buffer was full."),
    "kafka_autopilot_leader": ("gauge", "1 while this replica holds the leader Lease and acts; 0 while it stands by."),
}


@dataclass
class Telemetry:
    counters: dict[str, dict[LabelSet, float]] = field(default_factory=lambda: defaultdict(dict))
    gauges: dict[str, float] = field(default_factory=dict)

    def inc(self, name: str, amount: float = 1.0, /, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        series = self.counters[name]
        series[key] = series.get(key, 0.0) + amount

    def observe(self, name: str, seconds: float, /, **labels: str) -> None:
        self.inc(f"{name}_sum", seconds, **labels)
        self.inc(f"{name}_count", 1.0, **labels)

    def set(self, name: str, value: float) -> None:
        self.gauges[name] = value

    def set_labeled(self, name: str, value: float, /, **labels: str) -> None:
        self.counters[name][tuple(sorted(labels.items()))] = value

    def value(self, name: str, /, **labels: str) -> float:
        return self.counters.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        lines: list[str] = []
        for name, (kind, text) in _HELP.items():
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} {kind.removeprefix('labeled-')}")
            if kind == "gauge":
                lines.append(f"{name} {_number(self.gauges.get(name, 0.0))}")
                continue
            suffixes = ("_sum", "_count") if kind == "summary" else ("",)
            for suffix in suffixes:
                for labels, value in sorted(self.counters.get(name + suffix, {}).items()):
                    lines.append(f"{name}{suffix}{_labels(labels)} {_number(value)}")
        return "\n".join(lines) + "\n"


def _labels(labels: LabelSet) -> str:
    if not labels:
        return ""
    body = ",".join(f'{key}="{_escape(value)}"' for key, value in labels)
    return "{" + body + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)
