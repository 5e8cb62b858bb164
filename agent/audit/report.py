"""`kafka-autopilot report`: what an audit trail says the agent did, in numbers.

From the JSON-lines audit records (`agent.audit.trail`) of a live or dry-run agent (or a backtest):
- actions by rule and outcome (`planned`, `verified`, `dry-run`, `failed`, `held`, `declined`,
  `throttled`, ...: the `outcome` of every `action-*` record);
- the time from a trigger to the verified action (p50, p95 by nearest rank): from the transition into
  `Triggered` that opened the episode to the `action-verified` (or `action-dry-run`) that closed it;
- declines at maxsize, once per stay in `ActionsDeclined` (the agent records a lasting decline again
  now and then);
- holds by reason: the policy's (`action-throttled`, by code, once per stay in `ActionsThrottled`) and
  the executors' (`action-held`, by reason).

Pure: records in, a summary out; reading the file is the caller's.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from agent.audit.trail import AuditRecord
from agent.core.catalog import DeclineCode
from agent.core.states import RuleState

DONE_OUTCOMES = ("verified", "dry-run")
"""The outcomes that close an episode's clock: the action ran (or, in dry-run, would have)."""


def record_time(record: AuditRecord) -> float:
    return datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00")).timestamp()


def first_of_stays(records: Iterable[AuditRecord], *, event: str, state: RuleState) -> list[AuditRecord]:
    """The first `event` record of each stay of an object in `state`: the agent records a lasting decline
    or hold again now and then (a hold whenever its reason changes, e.g. the time left)."""
    first: list[AuditRecord] = []
    staying: set[tuple[str, str]] = set()
    for record in records:
        key = (str(record["rule"]), str(record["object"]))
        if record["event"] == "transition" and record.get("from") == state.value:
            staying.discard(key)
        elif record["event"] == event and key not in staying:
            staying.add(key)
            first.append(record)
    return first


def declines(records: Iterable[AuditRecord]) -> list[AuditRecord]:
    return first_of_stays(records, event="action-declined", state=RuleState.ACTIONS_DECLINED)


def holds_by_reason(records: Sequence[AuditRecord]) -> dict[str, int]:
    """Policy holds by code, once per stay in ActionsThrottled; executors' holds by their reason."""
    policy = first_of_stays(records, event="action-throttled", state=RuleState.ACTIONS_THROTTLED)
    executors = [r for r in records if r["event"] == "action-held"]
    counted = Counter(str(r.get("code") or "") for r in policy)
    counted.update(f"executor: {r.get('reason') or ''}" for r in executors)
    return dict(sorted(counted.items()))


def trigger_to_done_seconds(records: Iterable[AuditRecord]) -> list[float]:
    """Per episode, seconds from entering Triggered (from Normal or Initializing) to the action done."""
    opened: dict[tuple[str, str], float] = {}
    found: list[float] = []
    for record in records:
        key = (str(record["rule"]), str(record["object"]))
        if record["event"] == "transition" and record.get("to") == RuleState.TRIGGERED.value:
            if record.get("from") in (RuleState.NORMAL.value, RuleState.INITIALIZING.value):
                opened[key] = record_time(record)
        elif record["event"] == "transition" and record.get("to") == RuleState.NORMAL.value:
            opened.pop(key, None)
        elif record["event"] in {f"action-{outcome}" for outcome in DONE_OUTCOMES} and key in opened:
            found.append(record_time(record) - opened.pop(key))
    return found


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile (the smallest value with at least `fraction` of them at or below it)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def report(records: Sequence[AuditRecord], *, since: float | None = None) -> dict[str, Any]:
    kept = [r for r in records if r.get("time") and (since is None or record_time(r) >= since)]
    actions = Counter(
        (str(r["rule"]), str(r.get("outcome") or r["event"].removeprefix("action-")))
        for r in kept
        if str(r.get("event", "")).startswith("action-")
    )
    by_rule: dict[str, dict[str, int]] = {}
    for (rule, outcome), count in sorted(actions.items()):
        by_rule.setdefault(rule, {})[outcome] = count
    durations = trigger_to_done_seconds(kept)
    return {
        "records": len(kept),
        "from": kept[0]["time"] if kept else None,
        "to": kept[-1]["time"] if kept else None,
        "dry_run_records": sum(1 for r in kept if r.get("dry_run")),
        "actions_by_rule_and_outcome": by_rule,
        "trigger_to_done": {
            "episodes": len(durations),
            "p50_seconds": percentile(durations, 0.5),
            "p95_seconds": percentile(durations, 0.95),
        },
        "declined_at_maxsize": sum(1 for r in declines(kept) if r.get("code") == DeclineCode.AT_MAX_SIZE.value),
        "holds_by_reason": holds_by_reason(kept),
    }


def render_text(summary: dict[str, Any]) -> str:
    lines = [f"{summary['records']} records, {summary['from']} .. {summary['to']}"]
    if summary["dry_run_records"]:
        lines[0] += f" ({summary['dry_run_records']} dry-run)"
    lines.append("actions by rule and outcome:")
    for rule, outcomes in summary["actions_by_rule_and_outcome"].items():
        lines.append(f"  {rule}: " + ", ".join(f"{outcome} {count}" for outcome, count in outcomes.items()))
    if not summary["actions_by_rule_and_outcome"]:
        lines.append("  none")
    timing = summary["trigger_to_done"]
    if timing["episodes"]:
        lines.append(
            f"trigger -> verified: p50 {timing['p50_seconds']:.1f}s, p95 {timing['p95_seconds']:.1f}s "
            f"({timing['episodes']} episodes)"
        )
    else:
        lines.append("trigger -> verified: no episode ended with a verified action")
    lines.append(f"declined at maxsize: {summary['declined_at_maxsize']}")
    holds = summary["holds_by_reason"]
    lines.append("holds: " + (", ".join(f"{reason} x{count}" for reason, count in holds.items()) or "none"))
    return "\n".join(lines)
