"""The audit trail: one JSON line per evaluation outcome, state transition, planned and declined action.

Dry-run and live runs write the same records through the same code; only `dry_run` differs. Every
record carries the same stable keys, null where they do not apply, so tools can rely on them:

| key      | meaning                                                                   |
|----------|---------------------------------------------------------------------------|
| time     | when it happened (the cycle's time, ISO 8601 UTC)                         |
| event    | evaluation, evaluation-summary, transition, action-planned,               |
|          | action-declined, action-applied…                                          |
|          | action-throttled (held by the policy), policy-excluded (outside its       |
|          | namespaces), object-ignored (its kafka-autopilot.io/ignore annotation)    |
| rule     | the rule's name                                                           |
| object   | the object: namespace/name, or name for cluster-scoped objects            |
| from, to | the states of a transition                                                |
| action   | the action's name                                                         |
| before   | the object before the action (e.g. 800Gi)                                 |
| after    | what the action makes of it (e.g. 1Ti (capped at maxsize))                |
| outcome  | holds / clear / no-data for evaluations; planned / declined / applied...  |
| reason   | why: the transition's reason, the decline's message, or what was missing  |
| dry_run  | true when nothing was (or will be) changed                                |

Evaluation records add `values` (expression -> value or null) and `verdict`. Which of them a cycle
writes is `--audit-evaluations` (agent.audit.evaluations): by default only an object's first and those
whose verdict or state changed; transitions, actions, holds and errors are always written.

Evaluation-summary records (one per rule, object null, outcome `summary`) add `counts` (objects by
verdict: holds, clear, no-data), `selected` (objects the rule selects), `excluded` and `ignored` (kept
out by the policy's namespaces, by their ignore annotation), `written` (evaluation records this cycle
wrote) and `cycle_seconds` (the cycle's duration).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import structlog

from agent.audit.evaluations import verdict_counts
from agent.core.engine import CycleOutcome, DeclinedAction, HeldAction, ObjectEvaluation, PlannedAction
from agent.core.states import Transition

AUDIT_KEYS = (
    "time",
    "event",
    "rule",
    "object",
    "from",
    "to",
    "action",
    "before",
    "after",
    "outcome",
    "reason",
    "dry_run",
)

AuditRecord = dict[str, Any]


def iso_time(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _record(*, event: str, at: float, rule: str, obj: str | None, dry_run: bool, **fields: Any) -> AuditRecord:
    record: AuditRecord = dict.fromkeys(AUDIT_KEYS)
    record.update(time=iso_time(at), event=event, rule=rule, object=obj, dry_run=dry_run)
    record.update(fields)
    return record


def evaluation_record(evaluation: ObjectEvaluation, *, dry_run: bool, note: str = "") -> AuditRecord:
    values = {
        result.expression: (None if result.value is None or math.isnan(result.value) else result.value)
        for result in evaluation.results
    }
    return _record(
        event="evaluation",
        at=evaluation.at,
        rule=evaluation.rule,
        obj=evaluation.object,
        dry_run=dry_run,
        outcome=evaluation.verdict.value,
        reason=note or None,
        values=values,
        verdict=evaluation.verdict.value,
    )


def transition_record(transition: Transition, *, dry_run: bool) -> AuditRecord:
    return _record(
        event="transition",
        at=transition.at,
        rule=transition.rule,
        obj=transition.object,
        dry_run=dry_run,
        reason=transition.reason,
        outcome="transition",
        **{"from": transition.from_state.value, "to": transition.to_state.value},
    )


def action_record(
    action: PlannedAction, *, dry_run: bool, outcome: str = "planned", reason: str | None = None
) -> AuditRecord:
    return _record(
        event=f"action-{outcome}",
        at=action.at,
        rule=action.rule,
        obj=action.object,
        dry_run=dry_run,
        action=action.action,
        before=action.before,
        after=action.after,
        outcome=outcome,
        reason=reason if reason is not None else ("dry-run: nothing changed" if dry_run else None),
    )


def declined_record(declined: DeclinedAction, *, dry_run: bool) -> AuditRecord:
    return _record(
        event="action-declined",
        at=declined.at,
        rule=declined.rule,
        obj=declined.object,
        dry_run=dry_run,
        action=declined.action,
        outcome="declined",
        reason=f"{declined.code}: {declined.reason}",
        code=declined.code,
    )


def held_record(held: HeldAction, *, dry_run: bool) -> AuditRecord:
    return _record(
        event="action-throttled",
        at=held.at,
        rule=held.rule,
        obj=held.object,
        dry_run=dry_run,
        action=held.action,
        outcome="throttled",
        reason=f"{held.code}: {held.reason}",
        code=held.code,
    )


def excluded_record(
    *, rule: str, object_key: str, reason: str, at: float, event: str = "policy-excluded"
) -> AuditRecord:
    """An object the rule selects that the policy keeps out, or (event `object-ignored`) that its ignore
    annotation does (written once while it stays out)."""
    return _record(event=event, at=at, rule=rule, obj=object_key, dry_run=False, outcome="excluded", reason=reason)


def collected_record(*, rule: str, object_key: str, reason: str, at: float) -> AuditRecord:
    """A pair's AutopilotRuleObject deleted by the collector (agent.runtime.collector), and why."""
    return _record(
        event="state-collected", at=at, rule=rule, obj=object_key, dry_run=False, outcome="deleted", reason=reason
    )


def evaluation_summary_record(
    *, rule: str, at: float, counts: Mapping[str, object], written: int, cycle_seconds: float, dry_run: bool
) -> AuditRecord:
    """One rule's cycle in one line; `counts` are `summary_fields` (verdicts, selected, excluded, ignored)."""
    return _record(
        event="evaluation-summary",
        at=at,
        rule=rule,
        obj=None,
        dry_run=dry_run,
        outcome="summary",
        **counts,
        written=written,
        cycle_seconds=round(cycle_seconds, 3),
    )


def summary_fields(outcome: CycleOutcome, *, selected: int) -> dict[str, object]:
    """What an evaluation-summary counts of a cycle (what `changes` compares to say it again)."""
    return {
        "counts": verdict_counts(outcome.evaluations),
        "selected": selected,
        "excluded": len(outcome.excluded),
        "ignored": len(outcome.ignored),
    }


def cycle_records(
    outcome: CycleOutcome, *, dry_run: bool, evaluations: Sequence[ObjectEvaluation] | None = None
) -> Iterator[AuditRecord]:
    """Every record of one rule's cycle, in the order things happened per object; of the evaluations, only
    `evaluations` when given (the rest are always all written)."""
    for evaluation in outcome.evaluations if evaluations is None else evaluations:
        yield evaluation_record(evaluation, dry_run=dry_run, note=outcome.notes.get(evaluation.object, ""))
    for transition in outcome.transitions:
        yield transition_record(transition, dry_run=dry_run)
    for declined in outcome.declined:
        yield declined_record(declined, dry_run=dry_run)
    for held in outcome.held:
        yield held_record(held, dry_run=dry_run)
    for planned in outcome.planned:
        yield action_record(planned, dry_run=dry_run)
    for preview in outcome.previews:
        yield action_record(preview, dry_run=dry_run, outcome="awaiting-approval")


def _stable_key_order(_logger: object, _method: str, event_dict: MutableMapping[str, Any]) -> AuditRecord:
    ordered: AuditRecord = {key: event_dict.pop(key, None) for key in AUDIT_KEYS}
    ordered.update(event_dict)
    return ordered


class AuditTrail:
    """Writes audit records as JSON lines through structlog to a stream (stdout by default)."""

    def __init__(self, *, stream: TextIO | None = None, listener: Callable[[AuditRecord], None] | None = None) -> None:
        self._listener = listener
        self._logger = structlog.wrap_logger(
            structlog.WriteLogger(stream if stream is not None else sys.stdout),
            processors=[_stable_key_order, structlog.processors.JSONRenderer(default=str)],
        )

    def write(self, record: AuditRecord) -> None:
        """Write one record; every record says when it happened (a record without a time is a bug)."""
        if not record.get("time"):
            raise ValueError(f"audit record {record.get('event')!r} has no time")
        if self._listener is not None:
            self._listener(record)
        fields = dict(record)
        event = fields.pop("event")
        self._logger.info(event, **fields)
