"""A readable timeline of audit records: one line per transition or action, with the values behind it.

Used by `kafka-autopilot test --timeline` and by the demo; the JSON lines stay the record of truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.audit.trail import AuditRecord


@dataclass
class Timeline:
    last_values: dict[tuple[str, str], str] = field(default_factory=dict)

    def line(self, record: AuditRecord) -> str | None:
        """The line for this record, or None for records the timeline leaves out (evaluations)."""
        key = (str(record.get("rule")), str(record.get("object")))
        clock = str(record.get("time") or "")[11:19]
        event = str(record.get("event"))
        if event == "evaluation":
            self.last_values[key] = ", ".join(_value_text(value) for value in record["values"].values())
            return None
        if event == "transition":
            values = self.last_values.get(key, "")
            shown = f"  value {values}" if values else ""
            return f"{clock}  {record['object']:<22} {record['from']} -> {record['to']}  [{record['reason']}]{shown}"
        if event.startswith("action-"):
            by_reason = event in ("action-declined", "action-throttled")
            detail = record["reason"] if by_reason else f"{record['before']} -> {record['after']}"
            if not by_reason and event != "action-planned" and record.get("reason"):
                detail += f" ({record['reason']})"
            return f"{clock}  {record['object']:<22} {event}: {detail}"
        if event == "cycle-error":
            return f"{clock}  {record['rule']:<22} cycle error: {record['reason']}"
        return None


def _value_text(value: object) -> str:
    return "no data" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)
