"""One evaluation cycle of one rule, pure: vectors and states in; verdicts, transitions and plans out.

The runtime (and `kafka-autopilot test`) queries each distinct expression once, passes the vectors
and the current time here, persists the returned states, records every returned record, and hands
the planned actions to executors (or, in dry-run, to the audit sink). Nothing here knows which.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple, overload

from agent.core.catalog import Catalog, DeclineCode, Declined, PlanDetail, Planned
from agent.core.matching import InventoryIndex, JoinResult, TargetObject
from agent.core.operators import Answers, condition_test
from agent.core.policy import AdmissionFacts, Held, HoldCode, Policy, admit
from agent.core.rules import ConditionProvider, Rule, RuleAction
from agent.core.samples import Sample
from agent.core.states import (
    UNTOUCHED,
    Evaluated,
    Event,
    HeldByPolicy,
    ObjectState,
    PlanOutcome,
    RuleState,
    Step,
    Transition,
    Verdict,
    decide,
)


class ExpressionResult(NamedTuple):
    """One condition of one object in one cycle. A NamedTuple, as ObjectEvaluation: one of each is made
    per selected object per cycle, and a tuple is built several times faster, and smaller, than a frozen
    dataclass."""

    expression: str
    value: float | None
    holds: bool | None


class ObjectEvaluation(NamedTuple):
    rule: str
    object: str
    at: float
    results: tuple[ExpressionResult, ...]
    verdict: Verdict


ConditionCheck = tuple[str, Callable[[float | None], bool | None], Callable[[str], float | None]]
"""(expression label, its test, the object key -> value lookup of its join)."""


class Evaluations(Sequence[ObjectEvaluation]):
    """One rule's evaluations of one cycle, one per evaluated object, in order; each record is built when read.

    A cycle keeps the objects' keys (the selection's, shared) and the verdicts that are not "clear": a
    quiet object costs no record unless something reads it (`--audit-evaluations all`, a changed verdict,
    an approval's preview). Reading one tests its conditions again, over the same joins: the same values,
    the same record.
    """

    __slots__ = ("_answers", "_checks", "_positions", "_verdicts", "at", "keys", "rule", "unquiet")

    def __init__(
        self,
        *,
        rule: str,
        at: float,
        keys: Sequence[str] = (),
        unquiet: Mapping[str, Verdict] | None = None,
        checks: Sequence[ConditionCheck] = (),
        answers: Sequence[Answers] = (),
    ) -> None:
        self.rule = rule
        self.at = at
        self._checks = tuple(checks)
        self._answers = tuple(answers)
        self.keys = keys
        self.unquiet: Mapping[str, Verdict] = unquiet if unquiet is not None else {}
        """The verdicts that are not CLEAR, by object key."""
        self._verdicts: list[Verdict] | None = None
        self._positions: dict[str, int] | None = None

    @property
    def verdicts(self) -> Sequence[Verdict]:
        """Each object's verdict, in the order of `keys`."""
        if self._verdicts is None:
            unquiet, clear = self.unquiet, Verdict.CLEAR
            self._verdicts = [unquiet.get(key, clear) for key in self.keys] if unquiet else [clear] * len(self.keys)
        return self._verdicts

    def __len__(self) -> int:
        return len(self.keys)

    @overload
    def __getitem__(self, index: int) -> ObjectEvaluation: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[ObjectEvaluation, ...]: ...

    def __getitem__(self, index: int | slice) -> ObjectEvaluation | tuple[ObjectEvaluation, ...]:
        if isinstance(index, slice):
            return tuple(self._record(position) for position in range(len(self.keys))[index])
        return self._record(range(len(self.keys))[index])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(mine == theirs for mine, theirs in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Evaluations({self.rule!r}, {len(self)} objects)"

    @property
    def conditions(self) -> int:
        """How many conditions each object was tested on."""
        return len(self._answers)

    def stirred(self) -> frozenset[str]:
        """The objects some condition holds for or has no data for, or whose verdict is not clear: every
        other one is quiet, its conditions all false."""
        return frozenset().union(self.unquiet, *(a.holding for a in self._answers), *(a.unknown for a in self._answers))

    def holds(self, position: int) -> tuple[bool | None, ...]:
        """Each condition's verdict for the object at `position`, without building its record."""
        key = self.keys[position]
        return tuple([True if key in a.holding else None if key in a.unknown else False for a in self._answers])

    def of(self, object_key: str) -> ObjectEvaluation | None:
        """The object's evaluation, if it was evaluated."""
        if self._positions is None:
            self._positions = {key: position for position, key in enumerate(self.keys)}
        position = self._positions.get(object_key)
        return None if position is None else self._record(position)

    def _record(self, position: int) -> ObjectEvaluation:
        key = self.keys[position]
        results = tuple(
            [ExpressionResult(label, value := lookup(key), test(value)) for label, test, lookup in self._checks]
        )
        return ObjectEvaluation(self.rule, key, self.at, results, self.unquiet.get(key, Verdict.CLEAR))


class ObjectStates(Mapping[str, ObjectState]):
    """Every evaluated object's state after a cycle, in evaluation order: those the cycle touched (`touched`),
    and `UNTOUCHED` for the rest (quiet objects with no stored state, most of them)."""

    __slots__ = ("_members", "_order", "touched")

    def __init__(self, *, order: Sequence[str], members: AbstractSet[str], touched: Mapping[str, ObjectState]) -> None:
        self._order = order
        self._members = members
        self.touched = touched

    def __getitem__(self, key: str) -> ObjectState:
        found = self.touched.get(key)
        if found is not None:
            return found
        if key in self._members:
            return UNTOUCHED
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return key in self._members

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def __repr__(self) -> str:
        return f"ObjectStates({len(self)} objects, {len(self.touched)} touched)"

    def counts(self) -> Counter[RuleState]:
        """Objects per state, without visiting the untouched ones."""
        counted = Counter(state.state for state in self.touched.values())
        counted[RuleState.NORMAL] += len(self._order) - len(self.touched)
        return counted


def touched_states(outcome: CycleOutcome) -> Mapping[str, ObjectState]:
    """The states a cycle touched: every other object it evaluated is `UNTOUCHED` and was stored as nothing."""
    states = outcome.states
    return states.touched if isinstance(states, ObjectStates) else states


def state_counts(outcome: CycleOutcome) -> Counter[RuleState]:
    """The evaluated objects per state after a cycle."""
    states = outcome.states
    return states.counts() if isinstance(states, ObjectStates) else Counter(s.state for s in states.values())


def verdicts_by_object(evaluations: Sequence[ObjectEvaluation]) -> Iterable[tuple[str, Verdict]]:
    """(object key, verdict) of each evaluation, without building the records of an `Evaluations`."""
    if isinstance(evaluations, Evaluations):
        return zip(evaluations.keys, evaluations.verdicts, strict=True)
    return ((evaluation.object, evaluation.verdict) for evaluation in evaluations)


def evaluation_of(evaluations: Sequence[ObjectEvaluation], object_key: str) -> ObjectEvaluation | None:
    """The object's evaluation among `evaluations`, if any."""
    if isinstance(evaluations, Evaluations):
        return evaluations.of(object_key)
    return next((evaluation for evaluation in evaluations if evaluation.object == object_key), None)


@dataclass(frozen=True, kw_only=True)
class PlannedAction:
    rule: str
    object: str
    action: str
    before: str
    after: str
    at: float
    detail: PlanDetail | None = None
    """The planner's detail (e.g. the exact target size), recorded while the action is in flight."""


@dataclass(frozen=True, kw_only=True)
class DeclinedAction:
    rule: str
    object: str
    action: str
    code: str
    reason: str
    at: float


@dataclass(frozen=True, kw_only=True)
class HeldAction:
    """A planned action held back (the object is in ActionsThrottled): by the guardrail policy, or
    (code IdentityUnknown) because the object's identity is unknown."""

    rule: str
    object: str
    action: str
    code: str
    reason: str
    at: float


@dataclass(frozen=True, kw_only=True)
class CycleOutcome:
    states: Mapping[str, ObjectState]
    evaluations: Sequence[ObjectEvaluation] = ()
    """An `Evaluations` from `run_cycle`: records built when read."""
    transitions: tuple[Transition, ...] = ()
    planned: tuple[PlannedAction, ...] = ()
    previews: tuple[PlannedAction, ...] = ()
    declined: tuple[DeclinedAction, ...] = ()
    notes: Mapping[str, str] = field(default_factory=dict)
    unmatched_series: int = 0
    held: tuple[HeldAction, ...] = ()
    """Held back by the policy, newly or for a new reason (an unchanged hold is in `notes` only)."""
    excluded: Mapping[str, str] = field(default_factory=dict)
    """Objects the rule selects that the policy's namespaces keep out, and why; not evaluated."""
    ignored: Mapping[str, str] = field(default_factory=dict)
    """Objects the rule selects that carry the ignore annotation (TargetObject.ignored), and why; not evaluated."""
    no_data: Mapping[str, str] = field(default_factory=dict)
    """Objects the join gave no data, and why (a series naming several objects, one without identity)."""


def distinct_queries(rules: Sequence[Rule], *, provider: ConditionProvider = ConditionProvider.PROMETHEUS) -> list[str]:
    """Each distinct expression of `provider`'s rules once, in first-seen order.

    For Prometheus that is one PromQL query per expression per cycle, whatever the number of objects.
    """
    seen: dict[str, None] = {}
    for rule in rules:
        if rule.conditions.provider is not provider:
            continue
        for expression in rule.conditions.expressions:
            seen.setdefault(expression.query, None)
    return list(seen)


def run_cycle(
    *,
    rule: Rule,
    objects: Sequence[TargetObject] | InventoryIndex,
    vectors: Mapping[str, Sequence[Sample]],
    states: Mapping[str, ObjectState],
    now: float,
    approval_needed: bool | None = None,
    policy: Policy | None = None,
    facts: AdmissionFacts | None = None,
    catalog: Catalog,
) -> CycleOutcome:
    """Evaluate `rule` over the selected `objects` with this cycle's `vectors` (query -> samples).

    With a guardrail `policy`: objects in namespaces it keeps out are not evaluated (see `excluded`),
    its action windows apply on top of the rule's, its approval list adds to the rule's enforcement
    (when `approval_needed` is not given), and every planned action must pass `admit` with `facts`,
    which grow with each action admitted in this cycle. The `catalog` tells the policy which actions
    resize a volume or may cordon a node.

    An object annotated `kafka-autopilot.io/ignore: "true"` is not evaluated, policy or not (see `ignored`).

    An object with an `identity_problem` (a broker pod whose broker id is unknown) is evaluated, but
    every action planned on it is held (ActionsThrottled, code IdentityUnknown) with that reason, policy
    or not. An object the join gave no data says why in its note (and so in its evaluation record).

    An object with no state in `states` is Normal with no history (`UNTOUCHED`); its state in the outcome
    is worth storing only once it moves (`ObjectState.worth_keeping`). Pass one `InventoryIndex` for
    every rule of a cycle, instead of the plain objects, and rules with the same selectors share their
    selection, identity index and joins.
    """
    inventory = objects if isinstance(objects, InventoryIndex) else InventoryIndex(objects)
    if policy is None:
        selection = inventory.selection(rule)
    else:
        selection = inventory.selection(rule, kept_out=policy.excluded_by_namespace, filter_key=policy)
    selected, ignored, excluded = selection.objects, dict(selection.ignored), dict(selection.excluded)
    facts = facts if facts is not None else AdmissionFacts()
    joined = {
        expression.query: inventory.join(selection, expression.query, vectors.get(expression.query, ()))
        for expression in rule.conditions.expressions
    }
    checks: list[ConditionCheck] = [
        (
            expression.label,
            condition_test(expression.operator, tuple(expression.values)),
            joined[expression.query].values.get,
        )
        for expression in rule.conditions.expressions
    ]
    answers = [
        inventory.answers(
            selection, expression.query, joined[expression.query], expression.operator, tuple(expression.values)
        )
        for expression in rule.conditions.expressions
    ]
    needed = rule.conditions.needed
    moment = datetime.fromtimestamp(now, UTC)
    in_window = rule.in_action_window(weekday=moment.isoweekday(), minute_of_day=moment.hour * 60 + moment.minute)
    if policy is not None:
        in_window = in_window and policy.window_open(now)
    needs_approval = rule.approval_required if approval_needed is None else approval_needed
    if approval_needed is None and policy is not None:
        needs_approval = needs_approval or policy.approval_required(action.name for action in rule.actions)
    # Only objects some condition holds for or has no data for, and objects with a state, can do anything:
    # every other one is clear and stays Normal with no history, untouched (most objects, most cycles).
    members = selection.keys
    unquiet = verdicts_not_clear(answers, needed=needed, members=members)
    if needed <= 0:
        candidates: AbstractSet[str] = members
    else:
        candidates = {key for key in states if key in members}
        candidates.update(unquiet)
    new_states: dict[str, ObjectState] = {}
    evaluations = Evaluations(
        rule=rule.name, at=now, keys=selection.ordered_keys, unquiet=unquiet, checks=checks, answers=answers
    )
    transitions: list[Transition] = []
    planned: list[PlannedAction] = []
    previews: list[PlannedAction] = []
    declined: list[DeclinedAction] = []
    held: list[HeldAction] = []
    notes: dict[str, str] = {}
    no_data: dict[str, str] = {}
    every = len(candidates) == len(members)
    poll_seconds, cooldown_seconds = rule.poll_interval_seconds, rule.cooldown_seconds
    clear = Verdict.CLEAR
    events = {
        verdict: Evaluated(verdict=verdict, in_action_window=in_window, approval_needed=needs_approval)
        for verdict in Verdict
    }
    for key, target in zip(selection.ordered_keys, selected, strict=True):
        if not every and key not in candidates:
            continue
        verdict = unquiet.get(key, clear)
        state = states.get(key, UNTOUCHED)
        quiet = state.quiet_note(  # what `decide` would return, without its copies
            verdict,
            now=now,
            poll_interval_seconds=poll_seconds,
            cooldown_seconds=cooldown_seconds,
            in_action_window=in_window,
            approval_needed=needs_approval,
        )
        if quiet is not None:
            note, plan_now, preview_now = quiet, False, False
        else:
            step = advance(
                rule=rule,
                object_key=key,
                state=state,
                now=now,
                event=events[verdict],
            )
            transitions.extend(step.transitions)
            state, note, plan_now, preview_now = step.state, step.note, step.plan_now, step.preview_now
        if verdict is Verdict.NO_DATA:
            why = _no_data_reasons(key, joined.values())
            if why:
                no_data[key] = why
                note = f"no data: {why}; state kept, nothing done"
        if plan_now or preview_now:
            plans = plan_actions(rule=rule, target=target, now=now)
            hold = None
            if plan_now and not isinstance(plans, DeclinedAction) and target.identity_problem is not None:
                hold = plans[0].action, Held(code=HoldCode.IDENTITY_UNKNOWN, reason=target.identity_problem)
            elif plan_now and policy is not None and not isinstance(plans, DeclinedAction):
                hold = _first_hold(policy=policy, plans=plans, facts=facts, now=now, catalog=catalog)
            if preview_now and not isinstance(plans, DeclinedAction):
                previews.extend(plans)
            elif hold is not None:
                action, held_by = hold
                outcome = advance(
                    rule=rule,
                    object_key=target.key,
                    state=state,
                    now=now,
                    event=HeldByPolicy(
                        reason=f"{held_by.code}: {held_by.reason}",
                        by="an unknown identity" if held_by.code is HoldCode.IDENTITY_UNKNOWN else "the policy",
                    ),
                )
                if outcome.state.reason != state.reason or outcome.transitions:
                    held.append(
                        HeldAction(
                            rule=rule.name,
                            object=target.key,
                            action=action,
                            code=held_by.code,
                            reason=held_by.reason,
                            at=now,
                        )
                    )
                transitions.extend(outcome.transitions)
                state, note = outcome.state, outcome.note
            else:
                outcome = advance(
                    rule=rule,
                    object_key=target.key,
                    state=state,
                    now=now,
                    event=PlanOutcome(declined=_as_declined(plans)),
                )
                transitions.extend(outcome.transitions)
                state, note = outcome.state, outcome.note or note
                if isinstance(plans, DeclinedAction):
                    if plans.code != DeclineCode.NO_DATA:
                        declined.append(plans)
                elif state.state is RuleState.ACTIVE_ACTIONS_PENDING:
                    planned.extend(plans)
                    for plan in plans if policy is not None else ():  # only the policy's admission reads them
                        facts = facts.admitted(
                            rule=rule.name, object_key=target.key, action=plan.action, at=now, catalog=catalog
                        )
        if note:
            notes[key] = note
        new_states[key] = state
    return CycleOutcome(
        states=ObjectStates(order=selection.ordered_keys, members=members, touched=new_states),
        evaluations=evaluations,
        transitions=tuple(transitions),
        planned=tuple(planned),
        previews=tuple(previews),
        declined=tuple(declined),
        notes=notes,
        unmatched_series=sum(result.unmatched_series for result in joined.values()),
        held=tuple(held),
        excluded=excluded,
        ignored=ignored,
        no_data=no_data,
    )


def verdicts_not_clear(answers: Sequence[Answers], *, needed: int, members: AbstractSet[str]) -> dict[str, Verdict]:
    """The verdict of every object whose verdict is not CLEAR, from the conditions' answers as sets (their
    sizes, not the selection's, set the cost): HOLDS where at least `needed` conditions hold, NO_DATA where
    the unknown ones could still make it; every other object is CLEAR."""
    if needed <= 0:
        return dict.fromkeys(members, Verdict.HOLDS)
    if len(answers) == 1 and needed == 1:
        (answer,) = answers
        verdicts = dict.fromkeys(answer.unknown, Verdict.NO_DATA)
        verdicts.update(dict.fromkeys(answer.holding, Verdict.HOLDS))
        return verdicts
    holding: Counter[str] = Counter()
    possible: Counter[str] = Counter()
    for answer in answers:
        holding.update(answer.holding)
        possible.update(answer.holding)
        possible.update(answer.unknown)
    verdicts = {key: Verdict.NO_DATA for key, count in possible.items() if count >= needed}
    verdicts.update((key, Verdict.HOLDS) for key, count in holding.items() if count >= needed)
    return verdicts


def advance(*, rule: Rule, object_key: str, state: ObjectState, event: Event, now: float) -> Step:
    """`agent.core.states.decide` with the rule's cooldown and `for`: how the runtime moves a state."""
    return decide(
        rule=rule.name,
        object_key=object_key,
        state=state,
        event=event,
        now=now,
        cooldown_seconds=rule.cooldown_seconds,
        for_seconds=rule.conditions.for_seconds,
        poll_interval_seconds=rule.poll_interval_seconds,
    )


def _first_hold(
    *, policy: Policy, plans: Sequence[PlannedAction], facts: AdmissionFacts, now: float, catalog: Catalog
) -> tuple[str, Held] | None:
    """The first of an object's planned actions the policy holds back, if any (then none of them runs)."""
    for plan in plans:
        admission = admit(
            policy=policy,
            rule=plan.rule,
            object_key=plan.object,
            action=plan.action,
            facts=facts,
            now=now,
            catalog=catalog,
        )
        if isinstance(admission, Held):
            return plan.action, admission
    return None


def _no_data_reasons(key: str, joins: Iterable[JoinResult]) -> str:
    """Why the join gave this object no value, for each expression that says (each reason once)."""
    return "; ".join(dict.fromkeys(reason for join in joins if (reason := join.no_data.get(key))))


def _as_declined(plans: tuple[PlannedAction, ...] | DeclinedAction) -> Declined | None:
    if isinstance(plans, DeclinedAction):
        return Declined(code=plans.code, message=plans.reason)
    return None


def plan_actions(*, rule: Rule, target: TargetObject, now: float) -> tuple[PlannedAction, ...] | DeclinedAction:
    """Plan every action of the rule for one object; the first decline declines them all."""
    plans: list[PlannedAction] = []
    for action in rule.actions:
        plan = _plan_one(rule=rule, action=action, target=target, now=now)
        if isinstance(plan, DeclinedAction):
            return plan
        plans.append(plan)
    return tuple(plans)


def _plan_one(*, rule: Rule, action: RuleAction, target: TargetObject, now: float) -> PlannedAction | DeclinedAction:
    """The action's own spec plans it (resolved when the rule was loaded); the engine stamps who, what and when."""
    plan = action.spec.plan(target=target, params=action.params)
    assert isinstance(plan, Planned | Declined), f"{action.name}: its spec planned {plan!r}"
    if isinstance(plan, Declined):
        return DeclinedAction(
            rule=rule.name,
            object=target.key,
            action=action.name,
            code=plan.code,
            reason=plan.message,
            at=now,
        )
    return PlannedAction(
        rule=rule.name,
        object=target.key,
        action=action.name,
        before=plan.before,
        after=plan.after,
        at=now,
        detail=plan.detail,
    )
