"""Turns what happened into the three records people read: an audit record, a counter, and an Event.

Why it exists: a cycle's outcome, a transition, an action's end and an approval step each need the
same three writes, with the same dry-run flag. Doing them in one place keeps the trail, /metrics and
`kubectl get events` telling the same story, and keeps the rest of the runtime free of bookkeeping.

Which evaluation records a cycle writes (`--audit-evaluations`) and when a rule's evaluation-summary is
due are decided here too, by agent.audit.evaluations; everything else is always written.

A rule that is an AutopilotRule object also shows what happened on that object (`rule_reporter`,
agent.runtime.liverules): an Event per transition of its objects, and its status after each cycle.

The dry-run flag of a record is decided here only (`dry_run_for`): the agent's --dry-run, the rule's
`enforcement: dryRun`, and the policy's per-action `dryRunActions`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from agent.actions.base import Outcome
from agent.adapters.clock import Clock
from agent.audit.evaluations import EvaluationAudit
from agent.audit.trail import (
    AUDIT_KEYS,
    AuditRecord,
    AuditTrail,
    action_record,
    cycle_records,
    evaluation_summary_record,
    excluded_record,
    iso_time,
    summary_fields,
    transition_record,
)
from agent.core.approvals import ActionPreview
from agent.core.engine import CycleOutcome, PlannedAction, state_counts, verdicts_by_object
from agent.core.matching import TargetObject
from agent.core.rules import Rule
from agent.core.states import RuleState, Transition
from agent.runtime.telemetry import Telemetry

log = structlog.get_logger("kafka-autopilot")


class EventSink(Protocol):
    async def emit(self, *, rule: str, target: TargetObject, reason: str, message: str, warning: bool) -> None: ...


class RuleReporter(Protocol):
    """What a rule's own AutopilotRule object shows: Events for its objects' transitions, and its status."""

    async def transition(self, rule: Rule, transition: Transition) -> None: ...

    async def cycle_recorded(self, rule: Rule, outcome: CycleOutcome) -> None: ...


@dataclass
class Recorder:
    trail: AuditTrail
    telemetry: Telemetry
    clock: Clock
    events: EventSink | None = None
    dry_run: bool = False
    dry_run_actions: frozenset[str] = frozenset()
    """Actions whose executor got the dry-run applier (the policy's dryRunActions)."""
    evaluations: EvaluationAudit = field(default_factory=EvaluationAudit)
    """Which evaluation records to write (`--audit-evaluations`; default: changes only)."""
    rule_reporter: RuleReporter | None = None
    """With `--cluster-rules`: Events and status on the AutopilotRule objects (agent.runtime.liverules)."""
    _written: dict[str, int] = field(default_factory=dict)
    """Evaluation records written by each rule's latest cycle, for its summary."""
    _excluded_said: set[tuple[str, str]] = field(default_factory=set)
    _ignored_said: set[tuple[str, str]] = field(default_factory=set)

    def dry_run_for(self, rule: Rule, action: str | None = None) -> bool:
        """Whether records about this rule (and action) say dry-run."""
        return self.dry_run or rule.dry_run or (action is not None and action in self.dry_run_actions)

    async def _event(
        self, rule: Rule, target: TargetObject | None, *, reason: str, message: str, warning: bool
    ) -> None:
        if target is not None and self.events is not None:
            await self.events.emit(rule=rule.name, target=target, reason=reason, message=message, warning=warning)

    async def cycle(self, rule: Rule, outcome: CycleOutcome, by_key: Mapping[str, TargetObject]) -> None:
        """Everything one cycle decided: evaluations (as `--audit-evaluations` says), transitions, plans,
        declines, holds, exclusions. `by_key`: the inventory's objects by key."""
        written = self.evaluations.to_write(rule.name, outcome.evaluations, outcome.states)
        self._written[rule.name] = len(written)
        for record in cycle_records(outcome, dry_run=self.dry_run_for(rule), evaluations=written):
            self.trail.write(record)
        for verdict, count in Counter(verdict for _, verdict in verdicts_by_object(outcome.evaluations)).items():
            self.telemetry.inc("kafka_autopilot_evaluations_total", count, rule=rule.name, verdict=verdict.value)
        if outcome.unmatched_series:
            self.telemetry.inc("kafka_autopilot_unmatched_series_total", outcome.unmatched_series, rule=rule.name)
        self.telemetry.object_states(rule, state_counts(outcome))
        for transition in outcome.transitions:
            await self._transition_counted(rule, transition, by_key.get(transition.object))
        for declined in outcome.declined:
            outcome_label = "declined-at-maxsize" if declined.code == "AtMaxSize" else "declined"
            self.telemetry.action(rule, declined.action, outcome_label, by_key.get(declined.object))
            await self._event(
                rule,
                by_key.get(declined.object),
                reason="ActionDeclined",
                message=f"{declined.action} declined: {declined.code}: {declined.reason}",
                warning=True,
            )
        for planned in outcome.planned:
            self.telemetry.action(rule, planned.action, "planned", by_key.get(planned.object))
        entered = {transition.object for transition in outcome.transitions}
        for held in outcome.held:
            self.telemetry.action(rule, held.action, "throttled", by_key.get(held.object))
            if held.object not in entered:  # still held, for another reason (entering the state has its own Event)
                await self._event(
                    rule,
                    by_key.get(held.object),
                    reason=RuleState.ACTIONS_THROTTLED.value,
                    message=f"{held.action} still held: {held.code}: {held.reason}",
                    warning=False,
                )
        for key, why in outcome.excluded.items():
            if (rule.name, key) not in self._excluded_said:
                self._excluded_said.add((rule.name, key))
                log.info("object not acted on: outside the policy's namespaces", rule=rule.name, object=key, why=why)
                self.trail.write(excluded_record(rule=rule.name, object_key=key, reason=why, at=self.clock.now()))
        for key, why in outcome.ignored.items():
            if (rule.name, key) not in self._ignored_said:
                self._ignored_said.add((rule.name, key))
                log.info("object not acted on: annotated to be ignored", rule=rule.name, object=key, why=why)
                self.trail.write(
                    excluded_record(
                        rule=rule.name, object_key=key, reason=why, at=self.clock.now(), event="object-ignored"
                    )
                )
        # said again if it is annotated again after it was not
        self._ignored_said = {
            (name, key) for name, key in self._ignored_said if name != rule.name or key in outcome.ignored
        }

    async def cycle_reported(self, rule: Rule, outcome: CycleOutcome) -> None:
        """The cycle's end on the rule's own AutopilotRule (its status, its summed-up Events), when it is
        one. Called once the cycle's actions have started: a status write never delays an action."""
        if self.rule_reporter is not None:
            await self.rule_reporter.cycle_recorded(rule, outcome)

    def cycle_summary(self, rule: Rule, outcome: CycleOutcome, *, selected: int, cycle_seconds: float) -> None:
        """The rule's evaluation-summary for the cycle just recorded, when due (agent.audit.evaluations);
        `selected`: how many objects the inventory gave the rule."""
        counts = summary_fields(outcome, selected=selected)
        if self.evaluations.summary_due(rule.name, counts, at=self.clock.monotonic()):
            self.trail.write(
                evaluation_summary_record(
                    rule=rule.name,
                    at=self.clock.now(),
                    counts=counts,
                    written=self._written.get(rule.name, 0),
                    cycle_seconds=cycle_seconds,
                    dry_run=self.dry_run_for(rule),
                )
            )

    async def transitions(self, rule: Rule, target: TargetObject, transitions: Iterable[Transition]) -> None:
        """Transitions outside a cycle (an action started or ended, an approver answered)."""
        for transition in transitions:
            self.trail.write(transition_record(transition, dry_run=self.dry_run_for(rule)))
            await self._transition_counted(rule, transition, target)

    async def _transition_counted(self, rule: Rule, transition: Transition, target: TargetObject | None) -> None:
        self.telemetry.inc(
            "kafka_autopilot_transitions_total",
            rule=rule.name,
            **{"from": transition.from_state.value, "to": transition.to_state.value},
        )
        if transition.from_state is not RuleState.INITIALIZING:
            await self._event(
                rule,
                target,
                reason=transition.to_state.value,
                message=f"{rule.name}: {transition.from_state} -> {transition.to_state}: {transition.reason}",
                warning=transition.to_state is RuleState.ACTIONS_DECLINED,
            )
            if self.rule_reporter is not None:
                await self.rule_reporter.transition(rule, transition)

    async def action_finished(self, rule: Rule, planned: PlannedAction, target: TargetObject, outcome: Outcome) -> None:
        record: AuditRecord = action_record(
            planned,
            dry_run=self.dry_run_for(rule, planned.action),
            outcome=outcome.kind.value,
            reason=outcome.reason,
        )
        record["time"] = iso_time(self.clock.now())
        record["mutations"] = list(outcome.mutations)
        self.trail.write(record)
        self.telemetry.action(rule, planned.action, outcome.kind.value, target)
        await self._event(
            rule,
            target,
            reason=f"Action{outcome.kind.value.title().replace('-', '')}",
            message=f"{planned.action} {planned.before} -> {planned.after}: {outcome.kind}: {outcome.reason}",
            warning=not outcome.succeeded,
        )

    def rule_changed(self, *, event: str, rule: str, reason: str) -> None:
        """A rule added, changed, refused or removed while the agent runs (AutopilotRules are live):
        `rule-added`, `rule-changed`, `rule-invalid`, `rule-removed`."""
        record: AuditRecord = dict.fromkeys(AUDIT_KEYS)
        record.update(
            time=iso_time(self.clock.now()),
            event=event,
            rule=rule,
            outcome=event.removeprefix("rule-"),
            reason=reason,
            dry_run=self.dry_run,
        )
        self.trail.write(record)

    def cycle_error(self, rule: Rule, error: BaseException) -> None:
        self.telemetry.inc("kafka_autopilot_query_errors_total", rule=rule.name)
        log.warning("cycle failed", rule=rule.name, error=str(error))
        record: AuditRecord = dict.fromkeys(AUDIT_KEYS)
        record.update(
            time=iso_time(self.clock.now()),
            event="cycle-error",
            rule=rule.name,
            outcome="error",
            reason=f"{type(error).__name__}: {error}",
            dry_run=self.dry_run,
        )
        self.trail.write(record)

    async def approval(
        self,
        rule: Rule,
        target: TargetObject,
        *,
        event: str,
        reason: str,
        message: str,
        where: str,
        actions: Sequence[ActionPreview] = (),
        warning: bool = False,
    ) -> None:
        """An approval step (`approval-requested`, `-approved`, …, or `-error` with reason "")."""
        first = actions[0] if actions else None
        outcome = event.removeprefix("approval-")
        self.trail.write(
            approval_record(
                event=event,
                rule=rule.name,
                target=target,
                at=self.clock.now(),
                approval=where,
                outcome=outcome,
                reason=message,
                dry_run=self.dry_run_for(rule),
                action=first.action if first else None,
                before=first.before if first else None,
                after=first.after if first else None,
                summary="; ".join(action.describe() for action in actions),
            )
        )
        if outcome == "error":
            return
        self.telemetry.inc("kafka_autopilot_approvals_total", rule=rule.name, outcome=outcome)
        await self._event(rule, target, reason=reason, message=message, warning=warning)


def approval_record(
    *,
    event: str,
    rule: str,
    target: TargetObject,
    at: float,
    approval: str,
    outcome: str,
    reason: str,
    dry_run: bool,
    action: str | None = None,
    before: str | None = None,
    after: str | None = None,
    summary: str = "",
) -> AuditRecord:
    """An audit record about an approval, with the trail's stable keys plus `approval` (namespace/name)."""
    record: AuditRecord = dict.fromkeys(AUDIT_KEYS)
    record.update(
        time=iso_time(at),
        event=event,
        rule=rule,
        object=target.key,
        action=action,
        before=before,
        after=after,
        outcome=outcome,
        reason=reason,
        dry_run=dry_run,
        approval=approval,
    )
    if summary:
        record["summary"] = summary
    return record
