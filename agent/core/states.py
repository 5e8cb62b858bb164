"""The per-(rule, object) state machine, pure: time and inputs are passed in, transitions come out.

States are the vendor Autopilot's, plus ActionAwaitingWindow and ActionsThrottled:

    Initializing ──first evaluation──► Normal ──conditions hold──► Triggered
    Triggered ──clear──► Normal
    Triggered ──held for `for`, out of cooldown──► (approval needed) ActionAwaitingApproval
                                                  (outside the action window) ActionAwaitingWindow
                                                  (planner declines) ActionsDeclined
                                                  (the policy holds it back) ActionsThrottled
                                                  (otherwise) ActiveActionsPending
    ActionAwaitingApproval ──approved, next evaluation──► window check, then plan; ──declined──► ActionsDeclined
    ActionAwaitingApproval / ActionAwaitingWindow / ActionsThrottled / ActionsDeclined ──clear──► Normal
    ActionAwaitingWindow / ActionsThrottled ──conditions hold──► approval and window checked, planned and
                     admitted again at every evaluation: ActiveActionsPending once the hold has passed
    ActiveActionsPending ──executor starts──► ActiveActionsInProgress
    ActiveActionsPending ──start lost (no executor, no in-flight record)──► Triggered (planned again next cycle)
    ActiveActionsInProgress ──verified (or dry-run)──► ActiveActionsTaken (cooldown applies)
    ActiveActionsInProgress ──failed, held or refused──► Triggered / ActionsDeclined, retried after a backoff
                     (`retry_backoff_seconds`: the pollInterval doubled per outcome in a row that did not
                     act, capped at the cooldown), not after a full cooldown
    ActiveActionsTaken ──cooldown over──► Normal (and on to Triggered if the conditions still hold)
    ActionsDeclined ──retry backoff over, conditions hold──► approval and window checked, planned again
                     (e.g. after maxsize was raised); never after an approver declined, until Normal

ActionsThrottled is a guardrail policy's hold (agent.core.policy.admit: a rate limit, the maximum of
actions in flight or of cordoned nodes, the minimum interval between two resizes); its reason names
the limit and, when it lifts by itself, the time it does. An object whose identity is unknown (a broker
pod no one can say the broker id of) is held the same way, with or without a policy, until it is known.

`for` counts from `active_at`; a gap with no holding sample longer than 2 x pollInterval (from
`last_holding_at`) restarts it, so two holding samples far apart never satisfy it.

"No data" is never a verdict: it leaves the state as it is and is recorded as such. Every change of
state yields a Transition (rule, object, from, to, at, reason); the caller records them all.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from types import EllipsisType
from typing import NamedTuple, assert_never, cast

from agent.core.catalog import DeclineCode, Declined


class RuleState(StrEnum):
    INITIALIZING = "Initializing"
    NORMAL = "Normal"
    TRIGGERED = "Triggered"
    ACTION_AWAITING_APPROVAL = "ActionAwaitingApproval"
    ACTION_AWAITING_WINDOW = "ActionAwaitingWindow"
    ACTIVE_ACTIONS_PENDING = "ActiveActionsPending"
    ACTIVE_ACTIONS_IN_PROGRESS = "ActiveActionsInProgress"
    ACTIVE_ACTIONS_TAKEN = "ActiveActionsTaken"
    ACTIONS_DECLINED = "ActionsDeclined"
    ACTIONS_THROTTLED = "ActionsThrottled"


class Verdict(StrEnum):
    HOLDS = "holds"
    CLEAR = "clear"
    NO_DATA = "no-data"


@dataclass(frozen=True, kw_only=True, slots=True)
class ObjectState:
    """What the agent knows of one (rule, object) pair; durable, so a restart resumes here.

    Slotted: a stored state is one object to the garbage collector, not two (with its `__dict__`), and
    the tens of thousands a big cluster stores are walked by each of its full passes."""

    state: RuleState = RuleState.INITIALIZING
    since: float | None = None
    active_at: float | None = None
    """When the conditions started to hold in the current episode (for `for`)."""
    cooldown_until: float | None = None
    approved_at: float | None = None
    """When the pending approval was granted; cleared when the episode ends (back to Normal)."""
    approval_declined_at: float | None = None
    """When an approver said no: nothing runs again in this episode, however long it lasts."""
    reason: str = ""
    entered_at: Mapping[str, float] = field(default_factory=dict)
    """Last time each state was entered, by state name."""
    last_holding_at: float | None = None
    """When the conditions were last seen holding while `for` was being waited for (Triggered); None: no gap
    known (another state, or a state stored before this field). Kept only then: no status write per cycle else."""
    attempts_not_acted: int = 0
    """Outcomes in a row that did not act (held, failed, declined): the retry backoff grows with them."""

    def worth_keeping(self, now: float) -> bool:
        """Whether this state needs an AutopilotRuleObject: anything but Normal does, and so does a Normal
        whose cooldown or retry backoff is still running (a policy counts it). A Normal with nothing
        pending is what an object with no stored state is (`UNTOUCHED`): it is not written."""
        if self.state is not RuleState.NORMAL:
            return True
        return self.cooldown_until is not None and now < self.cooldown_until

    def quiet_note(
        self,
        verdict: Verdict,
        *,
        now: float,
        poll_interval_seconds: int,
        cooldown_seconds: int,
        in_action_window: bool,
        approval_needed: bool,
    ) -> str | None:
        """The note of an evaluation (`Evaluated` with these fields) that leaves this state exactly as it is
        ("" for none), or None when it may change it: where `decide` would only copy the state, the engine
        skips it. That is most objects, most cycles: a quiet Normal, actions in flight or in their cooldown,
        an approval still to be answered, approved actions waiting for their window, and, given the time
        and the rule's poll and cooldown, actions declined and not yet due again."""
        if verdict is Verdict.NO_DATA:
            return None if self.state is RuleState.INITIALIZING else NO_DATA_NOTE
        if self.last_holding_at is not None:
            return None
        state = self.state
        if state is RuleState.NORMAL:
            return "" if verdict is Verdict.CLEAR else None
        if state is RuleState.ACTIVE_ACTIONS_PENDING or state is RuleState.ACTIVE_ACTIONS_IN_PROGRESS:
            return IN_FLIGHT_NOTE
        if state is RuleState.ACTIVE_ACTIONS_TAKEN:
            until = self.cooldown_until
            return f"in cooldown until {until:.0f}" if until is not None and now < until else None
        if state is RuleState.ACTION_AWAITING_APPROVAL and verdict is Verdict.HOLDS and self.approved_at is None:
            return AWAITING_APPROVAL_NOTE
        if (
            state is RuleState.ACTION_AWAITING_WINDOW
            and verdict is Verdict.HOLDS
            and not in_action_window
            and (not approval_needed or self.approved_at is not None)
            and self.reason == OUTSIDE_WINDOW_REASON
        ):
            return ""
        if state is RuleState.ACTIONS_DECLINED and verdict is Verdict.HOLDS:
            return (
                f"declined: {self.reason}"
                if self.declined_until_later(now, poll_interval_seconds, cooldown_seconds)
                else None
            )
        return None

    def declined_until_later(self, now: float, poll_interval_seconds: int, cooldown_seconds: int) -> bool:
        """ActionsDeclined and not due again at `now`: an approver said no, or the retry backoff runs."""
        if self.approval_declined_at is not None:
            return True
        since = self.since if self.since is not None else now
        retry_after = retry_backoff_seconds(
            poll_interval_seconds=poll_interval_seconds,
            attempts=max(1, self.attempts_not_acted),  # a state stored before attempts were counted
            cap_seconds=cooldown_seconds,
        )
        return now < since + retry_after


_NAMES = {state: state.value for state in RuleState}
"""Each state's name; `RuleState.value` is a descriptor, slow at one call per transition."""


_STATE_FIELD_NAMES = tuple(state_field.name for state_field in fields(ObjectState))
_STATE_FIELDS = frozenset(_STATE_FIELD_NAMES)
_every_field = operator.attrgetter(*_STATE_FIELD_NAMES)


class _Draft:
    """A state being changed: ObjectState's very slots without its frozen `__setattr__`, so a step fills
    one in plain stores, then `_sealed` makes it the ObjectState it is (the same layout). A third of the
    cost of `object.__setattr__` per field, at a copy or two per moving object per cycle."""

    __slots__ = _STATE_FIELD_NAMES
    state: RuleState
    since: float | None
    active_at: float | None
    cooldown_until: float | None
    approved_at: float | None
    approval_declined_at: float | None
    reason: str
    entered_at: Mapping[str, float]
    last_holding_at: float | None
    attempts_not_acted: int


def _draft(state: ObjectState) -> _Draft:
    """A draft holding the state's every field: the stores below are in the order of ObjectState's fields
    (tests/unit/test_states.py checks each one is kept)."""
    draft = object.__new__(_Draft)
    (
        draft.state,
        draft.since,
        draft.active_at,
        draft.cooldown_until,
        draft.approved_at,
        draft.approval_declined_at,
        draft.reason,
        draft.entered_at,
        draft.last_holding_at,
        draft.attempts_not_acted,
    ) = _every_field(state)
    return draft


def _sealed(draft: _Draft) -> ObjectState:
    object.__setattr__(draft, "__class__", ObjectState)
    return cast(ObjectState, draft)


def _changed(state: ObjectState, changes: Mapping[str, object]) -> ObjectState:
    """`dataclasses.replace` for the state machine's own fields, without re-running `__init__` (several
    times faster). The fields are plain values; the names are checked here, the values by the tests of
    every transition."""
    assert changes.keys() <= _STATE_FIELDS, f"not fields of ObjectState: {sorted(changes.keys() - _STATE_FIELDS)}"
    draft = _draft(state)
    for name, value in changes.items():
        setattr(draft, name, value)
    return _sealed(draft)


UNTOUCHED = ObjectState(state=RuleState.NORMAL)
"""The state of an object with no stored state: Normal, no history. It is never written (`worth_keeping`),
so a quiet object costs no AutopilotRuleObject; the first transition away from Normal creates one."""

NO_DATA_NOTE = "no data: state kept, nothing done"
IN_FLIGHT_NOTE = "actions in flight: the executor owns this object"
AWAITING_APPROVAL_NOTE = "waiting for approval"
OUTSIDE_WINDOW_REASON = "outside the action window"

GAP_POLL_INTERVALS = 2
"""`for` restarts after a gap with no holding sample longer than this many pollIntervals."""


def retry_backoff_seconds(*, poll_interval_seconds: int, attempts: int, cap_seconds: int) -> float:
    """How long after an outcome that did not act the actions are tried again: the pollInterval,
    doubled for each such outcome in a row, never more than `cap_seconds` (the rule's cooldown)."""
    if attempts <= 0:
        return 0.0
    backoff = float(max(poll_interval_seconds, 1)) * 2.0 ** min(attempts - 1, 30)
    return min(backoff, float(max(cap_seconds, poll_interval_seconds)))


class Transition(NamedTuple):
    """One change of state of one (rule, object) pair (a NamedTuple: a first cycle over many objects makes
    one or two per moving object)."""

    rule: str
    object: str
    from_state: RuleState
    to_state: RuleState
    at: float
    reason: str


@dataclass(frozen=True, kw_only=True)
class Evaluated:
    """The cycle's verdict for this object."""

    verdict: Verdict
    in_action_window: bool = True
    approval_needed: bool = False


@dataclass(frozen=True, kw_only=True)
class ApprovalAnswered:
    approved: bool
    by: str = ""


@dataclass(frozen=True, kw_only=True)
class PlanOutcome:
    """After `plan_now`: the planner's answer (None: the actions are planned), or an executor's refusal."""

    declined: Declined | None = None


@dataclass(frozen=True, kw_only=True)
class HeldByPolicy:
    """After `plan_now`: the guardrail policy (or, `by`, what else) holds the planned actions back, for `reason`."""

    reason: str
    by: str = "the policy"


@dataclass(frozen=True, kw_only=True)
class ActionStarted:
    pass


@dataclass(frozen=True, kw_only=True)
class ActionFinished:
    succeeded: bool
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class StartLost:
    """An ActiveActionsPending whose start was never recorded (a failed write between plan and start):
    back to Triggered, `for` kept, so the next cycle plans and admits it again."""

    reason: str


Event = Evaluated | ApprovalAnswered | PlanOutcome | HeldByPolicy | ActionStarted | ActionFinished | StartLost


class Step(NamedTuple):
    """The outcome of one event: the new state, its transitions, and what to do next (a NamedTuple: one is
    made per moving object per cycle)."""

    state: ObjectState
    transitions: tuple[Transition, ...] = ()
    plan_now: bool = False
    """The actions must be planned and handed to executors (state is ActiveActionsPending)."""
    preview_now: bool = False
    """The actions must be planned for an approval preview (state is ActionAwaitingApproval)."""
    note: str = ""
    """Why nothing happened, when nothing did (no data, cooldown, waiting for `for`...)."""


@dataclass(slots=True)
class _Machine:
    rule: str
    object_key: str
    cooldown_seconds: int
    for_seconds: int
    poll_interval_seconds: int
    now: float
    state: ObjectState
    transitions: list[Transition] = field(default_factory=list)
    note: str = ""

    def go(
        self,
        to_state: RuleState,
        reason: str,
        *,
        active_at: float | EllipsisType | None = ...,
        cooldown_until: float | EllipsisType | None = ...,
    ) -> None:
        state = self.state
        draft = _draft(state)  # one copy of the state per step, not one per field
        draft.reason = reason
        if to_state is not state.state:
            self.transitions.append(Transition(self.rule, self.object_key, state.state, to_state, self.now, reason))
            draft.state, draft.since = to_state, self.now
            draft.entered_at = {**state.entered_at, _NAMES[to_state]: self.now}
            if to_state is RuleState.NORMAL:
                draft.approved_at = draft.approval_declined_at = None
                draft.attempts_not_acted = 0
        if active_at is not ...:
            draft.active_at = active_at
        if cooldown_until is not ...:
            draft.cooldown_until = cooldown_until
        self.state = _sealed(draft)

    def backoff(self) -> float:
        return retry_backoff_seconds(
            poll_interval_seconds=self.poll_interval_seconds,
            attempts=self.state.attempts_not_acted,
            cap_seconds=self.cooldown_seconds,
        )

    def in_cooldown(self) -> bool:
        until = self.state.cooldown_until
        return until is not None and self.now < until

    def step(self, **flags: bool) -> Step:
        return Step(state=self.state, transitions=tuple(self.transitions), note=self.note, **flags)


def decide(
    *,
    rule: str,
    object_key: str,
    state: ObjectState,
    event: Event,
    now: float,
    cooldown_seconds: int,
    for_seconds: int,
    poll_interval_seconds: int = 0,
) -> Step:
    """Apply one event to one (rule, object) state at time `now`: the one transition function.

    A cycle's verdict (`Evaluated`), the planner's or the policy's answer after `plan_now` (`PlanOutcome`,
    `HeldByPolicy`), an approver's answer, and an action's start and end all go through here.
    """
    machine = _Machine(
        rule=rule,
        object_key=object_key,
        cooldown_seconds=cooldown_seconds,
        for_seconds=for_seconds,
        poll_interval_seconds=poll_interval_seconds,
        now=now,
        state=state,
    )
    current = state.state
    if isinstance(event, Evaluated):  # the event of every cycle, checked first
        return _evaluated(machine, event)
    if isinstance(event, PlanOutcome):
        return _planned(machine, event.declined)
    if isinstance(event, HeldByPolicy):
        machine.go(RuleState.ACTIONS_THROTTLED, event.reason)
        machine.note = f"held by {event.by}: {event.reason}"
        return machine.step()
    if isinstance(event, ActionStarted):
        if current is RuleState.ACTIVE_ACTIONS_PENDING:
            machine.go(RuleState.ACTIVE_ACTIONS_IN_PROGRESS, "executor started the actions")
        return machine.step()
    if isinstance(event, StartLost):
        if current is RuleState.ACTIVE_ACTIONS_PENDING:
            machine.go(RuleState.TRIGGERED, f"action start lost, planned again: {event.reason}")
        return machine.step()
    if isinstance(event, ActionFinished):
        if current in (RuleState.ACTIVE_ACTIONS_PENDING, RuleState.ACTIVE_ACTIONS_IN_PROGRESS):
            if event.succeeded:
                machine.go(
                    RuleState.ACTIVE_ACTIONS_TAKEN,
                    event.reason or "actions verified",
                    cooldown_until=now + cooldown_seconds,
                    active_at=None,
                )
                machine.state = _changed(machine.state, {"attempts_not_acted": 0, "last_holding_at": None})
            else:
                # Not acted (or not verified): tried again after a backoff, `for` kept (no gap known).
                machine.state = _changed(
                    machine.state, {"attempts_not_acted": machine.state.attempts_not_acted + 1, "last_holding_at": None}
                )
                machine.go(
                    RuleState.TRIGGERED,
                    f"action not completed: {event.reason}",
                    cooldown_until=now + machine.backoff(),
                )
        return machine.step()
    if isinstance(event, ApprovalAnswered):
        if current is not RuleState.ACTION_AWAITING_APPROVAL:
            return machine.step()
        by = f" by {event.by}" if event.by else ""
        if not event.approved:
            machine.go(RuleState.ACTIONS_DECLINED, f"approval declined{by}")
            machine.state = _changed(machine.state, {"approval_declined_at": now})
            return machine.step()
        machine.state = _changed(machine.state, {"approved_at": now, "reason": f"approved{by}"})
        machine.note = "approved: the actions start at the next evaluation"
        return machine.step()
    assert_never(event)


def _evaluated(machine: _Machine, event: Evaluated) -> Step:
    if machine.state.state is RuleState.INITIALIZING:
        machine.go(RuleState.NORMAL, "first evaluation")
    current = machine.state.state
    verdict = event.verdict
    if verdict is Verdict.NO_DATA:
        machine.note = NO_DATA_NOTE
        return machine.step()
    last_holding = machine.state.last_holding_at
    gap = None if last_holding is None or verdict is not Verdict.HOLDS else machine.now - last_holding
    # kept only while `for` is being waited for: a holding Triggered sets it again below, in one copy
    still_waiting = current is RuleState.TRIGGERED and verdict is Verdict.HOLDS and machine.for_seconds > 0
    if last_holding is not None and not still_waiting:
        machine.state = _changed(machine.state, {"last_holding_at": None})
    if current is RuleState.ACTIVE_ACTIONS_TAKEN:
        if machine.in_cooldown():
            machine.note = f"in cooldown until {machine.state.cooldown_until:.0f}"
            return machine.step()
        machine.go(RuleState.NORMAL, "cooldown over")
        current = RuleState.NORMAL
    if current in (RuleState.ACTIVE_ACTIONS_PENDING, RuleState.ACTIVE_ACTIONS_IN_PROGRESS):
        machine.note = IN_FLIGHT_NOTE
        return machine.step()
    if verdict is Verdict.CLEAR:
        if current is not RuleState.NORMAL:
            cancelled = " (approval cancelled)" if current is RuleState.ACTION_AWAITING_APPROVAL else ""
            machine.go(RuleState.NORMAL, f"conditions cleared{cancelled}", active_at=None)
        return machine.step()
    if current is RuleState.NORMAL:
        machine.go(RuleState.TRIGGERED, "conditions hold", active_at=machine.now)
        current = RuleState.TRIGGERED
    if current is RuleState.ACTION_AWAITING_APPROVAL:
        if machine.state.approved_at is None:
            machine.note = AWAITING_APPROVAL_NOTE
            return machine.step()
        return _fire(machine, approved=True, in_action_window=event.in_action_window)
    if current is RuleState.ACTIONS_DECLINED and machine.state.declined_until_later(
        machine.now, machine.poll_interval_seconds, machine.cooldown_seconds
    ):
        machine.note = f"declined: {machine.state.reason}"
        return machine.step()
    if current is RuleState.TRIGGERED:
        active_at = machine.state.active_at if machine.state.active_at is not None else machine.now
        if machine.for_seconds > 0:
            machine.state = _changed(machine.state, {"last_holding_at": machine.now})
        limit = GAP_POLL_INTERVALS * machine.poll_interval_seconds
        if gap is not None and machine.poll_interval_seconds > 0 and gap > limit and active_at < machine.now:
            active_at = machine.now
            machine.state = _changed(machine.state, {"active_at": active_at})
            machine.note = f"`for` restarted: no holding sample for {gap:.0f}s (over {limit}s)"
            if machine.for_seconds > 0:
                return machine.step()
        if machine.now - active_at < machine.for_seconds:
            machine.note = f"holding for {machine.now - active_at:.0f}s of {machine.for_seconds}s"
            return machine.step()
        if machine.in_cooldown():
            machine.note = f"in cooldown until {machine.state.cooldown_until:.0f}"
            return machine.step()
    return _fire(
        machine,
        approved=not event.approval_needed or machine.state.approved_at is not None,
        in_action_window=event.in_action_window,
    )


def _fire(machine: _Machine, *, approved: bool, in_action_window: bool) -> Step:
    if not approved:
        machine.go(RuleState.ACTION_AWAITING_APPROVAL, "approval required")
        return machine.step(preview_now=True)
    if not in_action_window:
        machine.go(RuleState.ACTION_AWAITING_WINDOW, OUTSIDE_WINDOW_REASON)
        return machine.step()
    return machine.step(plan_now=True)


def _planned(machine: _Machine, declined: Declined | None) -> Step:
    """Go to ActiveActionsPending, or record why the planner (or the executor) declined."""
    if declined is None:
        machine.go(RuleState.ACTIVE_ACTIONS_PENDING, "actions planned")
    elif declined.code == DeclineCode.NO_DATA:
        machine.note = declined.message
    elif machine.state.state is RuleState.ACTIONS_DECLINED:
        machine.state = _changed(
            machine.state,
            {
                "since": machine.now,
                "reason": f"{declined.code}: {declined.message}",
                "attempts_not_acted": machine.state.attempts_not_acted + 1,
            },
        )
        machine.note = f"still declined: {declined.message}"
    else:
        machine.go(RuleState.ACTIONS_DECLINED, f"{declined.code}: {declined.message}")
        machine.state = _changed(machine.state, {"attempts_not_acted": machine.state.attempts_not_acted + 1})
    return machine.step()
