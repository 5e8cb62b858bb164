"""What `kafka-autopilot backtest` prints: a table per object of transitions and actions, and a summary.

The summary counts the simulated actions by kind, the declines at maxsize and the holds (once per stay
in ActionsDeclined or ActionsThrottled, as `kafka-autopilot report` does), and sums the
time each object spent Triggered (a `for` window running, or waiting on a hold) within the window.
`--json` gives the same as one document, with every transition and action record.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from agent.audit.report import declines, holds_by_reason, record_time
from agent.audit.trail import AuditRecord, iso_time
from agent.core.catalog import DeclineCode
from agent.core.states import RuleState
from agent.runtime.backtest import BacktestResult

SHOWN_EVENTS = ("transition", "action-applied", "action-declined", "action-throttled", "action-awaiting-approval")
"""The records of the per-object tables: every change of state and every action, decline and hold
(`action-applied` is the simulated executor's; the `action-planned` before it says the same)."""


def shown(records: Iterable[AuditRecord]) -> list[AuditRecord]:
    return [record for record in records if record["event"] in SHOWN_EVENTS]


def triggered_seconds(records: Iterable[AuditRecord], *, end: float) -> dict[tuple[str, str], float]:
    """Per (rule, object): seconds spent in Triggered, an open stay counted up to `end`."""
    since: dict[tuple[str, str], float] = {}
    spent: dict[tuple[str, str], float] = {}
    for record in records:
        if record["event"] != "transition":
            continue
        key = (str(record["rule"]), str(record["object"]))
        if record["to"] == RuleState.TRIGGERED.value:
            since.setdefault(key, record_time(record))
        elif key in since:
            spent[key] = spent.get(key, 0.0) + record_time(record) - since.pop(key)
    for key, start in since.items():
        spent[key] = spent.get(key, 0.0) + end - start
    return spent


def summary(result: BacktestResult) -> dict[str, Any]:
    records = result.records
    actions = Counter(str(r["action"]) for r in records if r["event"] == "action-applied")
    declined = declines(records)
    triggered = triggered_seconds(records, end=result.window.end)
    return {
        "from": iso_time(result.window.start),
        "to": iso_time(result.window.end),
        "step_seconds": result.window.step,
        "steps": result.window.steps,
        "actions_by_kind": dict(sorted(actions.items())),
        "declined_at_maxsize": sum(1 for r in declined if r.get("code") == DeclineCode.AT_MAX_SIZE.value),
        "declined": len(declined),
        "holds_by_reason": holds_by_reason(records),
        "triggered_seconds": {f"{rule} {obj}": round(seconds) for (rule, obj), seconds in sorted(triggered.items())},
        "left_out": dict(result.left_out),
        "notes": list(result.notes),
    }


def as_json(result: BacktestResult) -> dict[str, Any]:
    return {"summary": summary(result), "records": shown(result.records)}


def _detail(record: AuditRecord) -> str:
    event = str(record["event"])
    if event == "transition":
        return f"{record['from']} -> {record['to']}  [{record['reason']}]"
    if event in ("action-declined", "action-throttled"):
        return f"{event.removeprefix('action-')} {record['action']}: {record['reason']}"
    verb = "would act" if event == "action-applied" else event.removeprefix("action-")
    return f"{verb}: {record['action']} {record['before']} -> {record['after']}"


def render_text(result: BacktestResult) -> str:
    lines: list[str] = []
    by_object: dict[tuple[str, str], list[AuditRecord]] = {}
    for record in shown(result.records):
        by_object.setdefault((str(record["rule"]), str(record["object"])), []).append(record)
    for (rule, obj), found in sorted(by_object.items()):
        lines.append(f"{rule}  {obj}")
        lines.extend(f"  {record['time']}  {_detail(record)}" for record in found)
        lines.append("")
    facts = summary(result)
    lines.append(f"backtest {facts['from']} .. {facts['to']}, every {facts['step_seconds']}s ({facts['steps']} steps)")
    kinds = ", ".join(f"{name} x{count}" for name, count in facts["actions_by_kind"].items()) or "none"
    lines.append(f"  actions: {kinds}")
    lines.append(f"  declined at maxsize: {facts['declined_at_maxsize']} (declined in all: {facts['declined']})")
    holds = ", ".join(f"{code} x{count}" for code, count in facts["holds_by_reason"].items()) or "none"
    lines.append(f"  holds: {holds}")
    for key, seconds in facts["triggered_seconds"].items():
        lines.append(f"  time Triggered: {key}: {seconds}s")
    for rule, why in facts["left_out"].items():
        lines.append(f"  left out: {rule}: {why}")
    lines.extend(f"  note: {note}" for note in facts["notes"])
    return "\n".join(lines)
