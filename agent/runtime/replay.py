"""The agent's loop in fast-forward, shared by `kafka-autopilot test` and `kafka-autopilot backtest`.

Both evaluate rules at a series of times with the real core (matching, state machine, planners) and a
simulated executor: a planned action succeeds at once, and a resize or pool expansion updates the
object's size (each action's spec says how: `ActionSpec.simulate`), so later plans start from it. Only
where the vectors come from differs: rule tests ask a Prometheus holding backfilled series at each
time, a backtest looks up the range queries it made over the window. Nothing here does I/O but
through the `query` it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from agent.actions.registry import CATALOG
from agent.audit.trail import AuditRecord, action_record, cycle_records, transition_record
from agent.core.engine import PlannedAction, distinct_queries, run_cycle
from agent.core.matching import TargetObject
from agent.core.policy import ActionStart, AdmissionFacts, Policy
from agent.core.rules import ConditionProvider, Rule
from agent.core.samples import Sample
from agent.core.states import ActionFinished, ActionStarted, ApprovalAnswered, Event, ObjectState, decide

VectorAt = Callable[[str, float], Sequence[Sample]]
"""The instant vector of one expression at one time (Unix seconds)."""
FinishTime = Callable[[Rule, PlannedAction, TargetObject | None], float]
"""When the simulated executor is done with a planned action, given the object it makes."""

SIMULATED_REASON = "simulated executor: applied"


def paced_rules(rules: Sequence[Rule], *, step_seconds: int) -> list[Rule]:
    """The rules as evaluated every `step_seconds`: a gap that restarts `for` (over 2 x pollInterval
    without a holding sample) is measured against the slower of the two."""
    return [replace(rule, poll_interval_seconds=max(rule.poll_interval_seconds, step_seconds)) for rule in rules]


@dataclass
class Replay:
    """Per-object states, the actions taken and the audit records of rules evaluated at given times."""

    rules: Sequence[Rule]
    """Already paced (`paced_rules`)."""
    objects: dict[str, TargetObject]
    vector_at: VectorAt
    on_record: Callable[[AuditRecord], None] | None = None
    kubernetes_from_prometheus: bool = False
    """Also query `provider: kubernetes` keys as series (rule tests give them as input series)."""
    policy: Policy | None = None
    """A guardrail policy, admitting actions on the starts of this replay (none is ever in flight: the
    simulated executor finishes at once)."""
    starts: list[ActionStart] = field(default_factory=list)
    finish_time: FinishTime | None = None
    """When a simulated action is done (its cooldown starts then); at once without it."""
    states: dict[tuple[str, str], ObjectState] = field(default_factory=dict)
    taken: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    last_decline: dict[tuple[str, str], str] = field(default_factory=dict)
    records: list[AuditRecord] = field(default_factory=list)

    def record(self, record: AuditRecord) -> None:
        self.records.append(record)
        if self.on_record is not None:
            self.on_record(record)

    def rule(self, name: str) -> Rule:
        return next(rule for rule in self.rules if rule.name == name)

    def queries(self) -> list[str]:
        queries = distinct_queries(self.rules)
        if self.kubernetes_from_prometheus:
            queries += distinct_queries(self.rules, provider=ConditionProvider.KUBERNETES)
        return queries

    def cycle(self, now: float) -> None:
        vectors = {query: self.vector_at(query, now) for query in self.queries()}
        for rule in self.rules:
            states = {obj: state for (name, obj), state in self.states.items() if name == rule.name}
            outcome = run_cycle(
                rule=rule,
                objects=list(self.objects.values()),
                vectors=vectors,
                states=states,
                now=now,
                policy=self.policy,
                facts=AdmissionFacts(starts=tuple(self.starts)) if self.policy is not None else None,
                catalog=CATALOG,
            )
            for obj, state in outcome.states.items():
                self.states[(rule.name, obj)] = state
            for record in cycle_records(outcome, dry_run=True):
                self.record(record)
            for declined in outcome.declined:
                self.last_decline[(rule.name, declined.object)] = declined.code
            for planned in outcome.planned:
                self.execute(rule, planned, now)

    def answer(self, *, rule_name: str, object_key: str, approved: bool, by: str, now: float) -> None:
        self.advance(self.rule(rule_name), object_key, ApprovalAnswered(approved=approved, by=by), now)

    def advance(self, rule: Rule, object_key: str, event: Event, now: float) -> None:
        key = (rule.name, object_key)
        step = decide(
            rule=rule.name,
            object_key=object_key,
            state=self.states.get(key, ObjectState()),
            event=event,
            now=now,
            cooldown_seconds=rule.cooldown_seconds,
            for_seconds=rule.conditions.for_seconds,
            poll_interval_seconds=rule.poll_interval_seconds,
        )
        self.states[key] = step.state
        for transition in step.transitions:
            self.record(transition_record(transition, dry_run=True))

    def execute(self, rule: Rule, planned: PlannedAction, now: float) -> None:
        target = self.objects.get(planned.object)
        spec = CATALOG.get(planned.action)
        after = spec.simulated(target, planned.detail) if target is not None and spec is not None else None
        done = self.finish_time(rule, planned, after) if self.finish_time is not None else now
        self.advance(rule, planned.object, ActionStarted(), now)
        self.advance(rule, planned.object, ActionFinished(succeeded=True, reason=SIMULATED_REASON), max(now, done))
        self.taken.setdefault((rule.name, planned.object), []).append(f"{planned.before} -> {planned.after}")
        self.starts.append(ActionStart(rule=rule.name, object=planned.object, action=planned.action, at=now))
        finished = replace(planned, at=max(now, done))
        self.record(action_record(finished, dry_run=True, outcome="applied", reason="simulated executor"))
        if after is not None:
            self.objects[after.key] = after
