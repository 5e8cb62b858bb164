"""The per-(rule, object) state machine: every transition drawn in agent.core.states' docstring.

Each row is (start state, event, now, cooldown, for) -> (end state, transitions as from/to pairs,
plan_now / preview_now, a fragment of the note). Times are plain numbers; there is no clock.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass, fields, replace

import pytest

from agent.core.catalog import DeclineCode, Declined
from agent.core.states import (
    UNTOUCHED,
    ActionFinished,
    ActionStarted,
    ApprovalAnswered,
    Evaluated,
    Event,
    ObjectState,
    PlanOutcome,
    RuleState,
    Step,
    Verdict,
    _changed,
    decide,
    retry_backoff_seconds,
)

S = RuleState
RULE = "kafka-resize"
OBJECT = "kafka/data-kafka-0"
T0 = 1000.0
COOLDOWN = 300

HOLDS = Evaluated(verdict=Verdict.HOLDS)
CLEAR = Evaluated(verdict=Verdict.CLEAR)
NO_DATA = Evaluated(verdict=Verdict.NO_DATA)
HOLDS_NEEDS_APPROVAL = Evaluated(verdict=Verdict.HOLDS, approval_needed=True)
HOLDS_OUTSIDE_WINDOW = Evaluated(verdict=Verdict.HOLDS, in_action_window=False)


def at(
    state: RuleState,
    *,
    since: float | None = T0 - 10,
    active_at: float | None = None,
    cooldown_until: float | None = None,
    approved_at: float | None = None,
    reason: str = "",
) -> ObjectState:
    return ObjectState(
        state=state,
        since=since,
        active_at=active_at,
        cooldown_until=cooldown_until,
        approved_at=approved_at,
        reason=reason,
    )


@dataclass(frozen=True, kw_only=True)
class Row:
    id: str
    start: ObjectState
    event: Event
    end: RuleState
    moves: tuple[tuple[RuleState, RuleState], ...] = ()
    now: float = T0
    cooldown: int = COOLDOWN
    for_seconds: int = 0
    plan_now: bool = False
    preview_now: bool = False
    note: str | None = None
    """A fragment the note must contain; None: the note must be empty."""
    reason: str | None = None
    """A fragment the new state's reason must contain, when it changed."""


ROWS = [
    # Initializing --first evaluation--> Normal (and on, in the same evaluation).
    Row(
        id="first evaluation, clear",
        start=ObjectState(),
        event=CLEAR,
        end=S.NORMAL,
        moves=((S.INITIALIZING, S.NORMAL),),
    ),
    Row(
        id="first evaluation, holds, no for",
        start=ObjectState(),
        event=HOLDS,
        end=S.TRIGGERED,
        moves=((S.INITIALIZING, S.NORMAL), (S.NORMAL, S.TRIGGERED)),
        plan_now=True,
    ),
    Row(
        id="first evaluation, holds, for 60s",
        start=ObjectState(),
        event=HOLDS,
        for_seconds=60,
        end=S.TRIGGERED,
        moves=((S.INITIALIZING, S.NORMAL), (S.NORMAL, S.TRIGGERED)),
        note="holding for 0s of 60s",
    ),
    Row(
        id="first evaluation, no data",
        start=ObjectState(),
        event=NO_DATA,
        end=S.NORMAL,
        moves=((S.INITIALIZING, S.NORMAL),),
        note="no data",
        reason="first evaluation",
    ),
    # Normal / Triggered and `for`.
    Row(id="normal stays normal when clear", start=at(S.NORMAL), event=CLEAR, end=S.NORMAL),
    Row(
        id="normal, holds, no for: fires at once",
        start=at(S.NORMAL),
        event=HOLDS,
        end=S.TRIGGERED,
        moves=((S.NORMAL, S.TRIGGERED),),
        plan_now=True,
        reason="conditions hold",
    ),
    Row(
        id="normal, holds, for not elapsed",
        start=at(S.NORMAL),
        event=HOLDS,
        for_seconds=60,
        end=S.TRIGGERED,
        moves=((S.NORMAL, S.TRIGGERED),),
        note="holding for 0s of 60s",
    ),
    Row(
        id="triggered, for not yet elapsed",
        start=at(S.TRIGGERED, active_at=T0 - 30),
        event=HOLDS,
        for_seconds=60,
        end=S.TRIGGERED,
        note="holding for 30s of 60s",
    ),
    Row(
        id="triggered, for elapsed",
        start=at(S.TRIGGERED, active_at=T0 - 60),
        event=HOLDS,
        for_seconds=60,
        end=S.TRIGGERED,
        plan_now=True,
    ),
    Row(
        id="triggered, clear",
        start=at(S.TRIGGERED, active_at=T0 - 30),
        event=CLEAR,
        for_seconds=60,
        end=S.NORMAL,
        moves=((S.TRIGGERED, S.NORMAL),),
        reason="conditions cleared",
    ),
    # Cooldown blocks firing, then ends.
    Row(
        id="normal, holds, in cooldown",
        start=at(S.NORMAL, cooldown_until=T0 + 100),
        event=HOLDS,
        end=S.TRIGGERED,
        moves=((S.NORMAL, S.TRIGGERED),),
        note="in cooldown until 1100",
    ),
    Row(
        id="triggered, one second before the cooldown ends",
        start=at(S.TRIGGERED, active_at=T0 - 50, cooldown_until=T0 + 1),
        event=HOLDS,
        end=S.TRIGGERED,
        note="in cooldown until 1001",
    ),
    Row(
        id="triggered, cooldown ends",
        start=at(S.TRIGGERED, active_at=T0 - 50, cooldown_until=T0),
        event=HOLDS,
        end=S.TRIGGERED,
        plan_now=True,
    ),
    # Approval.
    Row(
        id="holds, approval needed",
        start=at(S.NORMAL),
        event=HOLDS_NEEDS_APPROVAL,
        end=S.ACTION_AWAITING_APPROVAL,
        moves=((S.NORMAL, S.TRIGGERED), (S.TRIGGERED, S.ACTION_AWAITING_APPROVAL)),
        preview_now=True,
        reason="approval required",
    ),
    Row(
        id="approval pending, still holds",
        start=at(S.ACTION_AWAITING_APPROVAL),
        event=HOLDS_NEEDS_APPROVAL,
        end=S.ACTION_AWAITING_APPROVAL,
        note="waiting for approval",
    ),
    Row(
        id="approval pending, no data",
        start=at(S.ACTION_AWAITING_APPROVAL),
        event=NO_DATA,
        end=S.ACTION_AWAITING_APPROVAL,
        note="no data",
    ),
    Row(
        id="approved: the actions start at the next evaluation",
        start=at(S.ACTION_AWAITING_APPROVAL),
        event=ApprovalAnswered(approved=True, by="alice"),
        end=S.ACTION_AWAITING_APPROVAL,
        note="next evaluation",
        reason="approved by alice",
    ),
    Row(
        id="approved, next evaluation inside the window: plan",
        start=at(S.ACTION_AWAITING_APPROVAL, approved_at=T0 - 5),
        event=HOLDS_NEEDS_APPROVAL,
        end=S.ACTION_AWAITING_APPROVAL,
        plan_now=True,
    ),
    Row(
        id="approved, next evaluation outside the window: wait for it",
        start=at(S.ACTION_AWAITING_APPROVAL, approved_at=T0 - 5),
        event=Evaluated(verdict=Verdict.HOLDS, approval_needed=True, in_action_window=False),
        end=S.ACTION_AWAITING_WINDOW,
        moves=((S.ACTION_AWAITING_APPROVAL, S.ACTION_AWAITING_WINDOW),),
        reason="outside the action window",
    ),
    Row(
        id="approved, waiting for the window, window opens: no second approval",
        start=at(S.ACTION_AWAITING_WINDOW, approved_at=T0 - 500),
        event=HOLDS_NEEDS_APPROVAL,
        end=S.ACTION_AWAITING_WINDOW,
        plan_now=True,
    ),
    Row(
        id="approved, no data: still waiting",
        start=at(S.ACTION_AWAITING_APPROVAL, approved_at=T0 - 5),
        event=NO_DATA,
        end=S.ACTION_AWAITING_APPROVAL,
        note="no data",
    ),
    Row(
        id="approval declined",
        start=at(S.ACTION_AWAITING_APPROVAL),
        event=ApprovalAnswered(approved=False, by="alice"),
        end=S.ACTIONS_DECLINED,
        moves=((S.ACTION_AWAITING_APPROVAL, S.ACTIONS_DECLINED),),
        reason="approval declined by alice",
    ),
    Row(
        id="approval cancelled when the conditions clear",
        start=at(S.ACTION_AWAITING_APPROVAL),
        event=CLEAR,
        end=S.NORMAL,
        moves=((S.ACTION_AWAITING_APPROVAL, S.NORMAL),),
        reason="approval cancelled",
    ),
    Row(
        id="an answer nobody waits for is ignored",
        start=at(S.NORMAL),
        event=ApprovalAnswered(approved=True),
        end=S.NORMAL,
    ),
    Row(
        id="an answer while triggered is ignored",
        start=at(S.TRIGGERED, active_at=T0),
        event=ApprovalAnswered(approved=False),
        end=S.TRIGGERED,
    ),
    # Action window.
    Row(
        id="holds outside the action window",
        start=at(S.NORMAL),
        event=HOLDS_OUTSIDE_WINDOW,
        end=S.ACTION_AWAITING_WINDOW,
        moves=((S.NORMAL, S.TRIGGERED), (S.TRIGGERED, S.ACTION_AWAITING_WINDOW)),
        reason="outside the action window",
    ),
    Row(
        id="waiting for the window, still outside",
        start=at(S.ACTION_AWAITING_WINDOW),
        event=HOLDS_OUTSIDE_WINDOW,
        end=S.ACTION_AWAITING_WINDOW,
    ),
    Row(
        id="waiting for the window, window opens",
        start=at(S.ACTION_AWAITING_WINDOW),
        event=HOLDS,
        end=S.ACTION_AWAITING_WINDOW,
        plan_now=True,
    ),
    Row(
        id="waiting for the window, clear",
        start=at(S.ACTION_AWAITING_WINDOW),
        event=CLEAR,
        end=S.NORMAL,
        moves=((S.ACTION_AWAITING_WINDOW, S.NORMAL),),
        reason="conditions cleared",
    ),
    Row(
        id="approval needed outside the window: approval first",
        start=at(S.NORMAL),
        event=Evaluated(verdict=Verdict.HOLDS, approval_needed=True, in_action_window=False),
        end=S.ACTION_AWAITING_APPROVAL,
        moves=((S.NORMAL, S.TRIGGERED), (S.TRIGGERED, S.ACTION_AWAITING_APPROVAL)),
        preview_now=True,
    ),
    # Executors.
    Row(
        id="executor starts",
        start=at(S.ACTIVE_ACTIONS_PENDING),
        event=ActionStarted(),
        end=S.ACTIVE_ACTIONS_IN_PROGRESS,
        moves=((S.ACTIVE_ACTIONS_PENDING, S.ACTIVE_ACTIONS_IN_PROGRESS),),
    ),
    Row(id="a start with nothing pending is ignored", start=at(S.NORMAL), event=ActionStarted(), end=S.NORMAL),
    Row(
        id="a second start is ignored",
        start=at(S.ACTIVE_ACTIONS_IN_PROGRESS),
        event=ActionStarted(),
        end=S.ACTIVE_ACTIONS_IN_PROGRESS,
    ),
    Row(
        id="action verified",
        start=at(S.ACTIVE_ACTIONS_IN_PROGRESS, active_at=T0 - 100),
        event=ActionFinished(succeeded=True),
        end=S.ACTIVE_ACTIONS_TAKEN,
        moves=((S.ACTIVE_ACTIONS_IN_PROGRESS, S.ACTIVE_ACTIONS_TAKEN),),
        reason="actions verified",
    ),
    Row(
        id="action failed",
        start=at(S.ACTIVE_ACTIONS_IN_PROGRESS, active_at=T0 - 100),
        event=ActionFinished(succeeded=False, reason="resize timed out"),
        end=S.TRIGGERED,
        moves=((S.ACTIVE_ACTIONS_IN_PROGRESS, S.TRIGGERED),),
        reason="action not completed: resize timed out",
    ),
    Row(
        id="a finish with nothing in flight is ignored",
        start=at(S.ACTIVE_ACTIONS_TAKEN, cooldown_until=T0 + 10),
        event=ActionFinished(succeeded=False),
        end=S.ACTIVE_ACTIONS_TAKEN,
    ),
    Row(
        id="pending: evaluation leaves the executor alone",
        start=at(S.ACTIVE_ACTIONS_PENDING),
        event=HOLDS,
        end=S.ACTIVE_ACTIONS_PENDING,
        note="actions in flight",
    ),
    Row(
        id="in progress: even a clear verdict waits",
        start=at(S.ACTIVE_ACTIONS_IN_PROGRESS),
        event=CLEAR,
        end=S.ACTIVE_ACTIONS_IN_PROGRESS,
        note="actions in flight",
    ),
    # ActiveActionsTaken and its cooldown.
    Row(
        id="taken, in cooldown, holds",
        start=at(S.ACTIVE_ACTIONS_TAKEN, cooldown_until=T0 + 300),
        event=HOLDS,
        end=S.ACTIVE_ACTIONS_TAKEN,
        note="in cooldown until 1300",
    ),
    Row(
        id="taken, in cooldown, clear",
        start=at(S.ACTIVE_ACTIONS_TAKEN, cooldown_until=T0 + 300),
        event=CLEAR,
        end=S.ACTIVE_ACTIONS_TAKEN,
        note="in cooldown until 1300",
    ),
    Row(
        id="taken, cooldown over, clear",
        start=at(S.ACTIVE_ACTIONS_TAKEN, cooldown_until=T0),
        event=CLEAR,
        end=S.NORMAL,
        moves=((S.ACTIVE_ACTIONS_TAKEN, S.NORMAL),),
        reason="cooldown over",
    ),
    Row(
        id="taken, cooldown over, still holds: on to Triggered and fire",
        start=at(S.ACTIVE_ACTIONS_TAKEN, cooldown_until=T0),
        event=HOLDS,
        end=S.TRIGGERED,
        moves=((S.ACTIVE_ACTIONS_TAKEN, S.NORMAL), (S.NORMAL, S.TRIGGERED)),
        plan_now=True,
    ),
    Row(
        id="taken, cooldown over, still holds, for restarts",
        start=at(S.ACTIVE_ACTIONS_TAKEN, cooldown_until=T0),
        event=HOLDS,
        for_seconds=30,
        end=S.TRIGGERED,
        moves=((S.ACTIVE_ACTIONS_TAKEN, S.NORMAL), (S.NORMAL, S.TRIGGERED)),
        note="holding for 0s of 30s",
    ),
    # ActionsDeclined: planned again only after the retry backoff (at most a cooldown).
    Row(
        id="declined, holds, within the retry backoff",
        start=at(S.ACTIONS_DECLINED, since=T0 - 0.5, reason="AtMaxSize: at maxsize 1Ti (current 1Ti)"),
        event=HOLDS,
        end=S.ACTIONS_DECLINED,
        note="declined: AtMaxSize",
    ),
    Row(
        id="declined, holds, cooldown over",
        start=at(S.ACTIONS_DECLINED, since=T0 - 300, reason="AtMaxSize: at maxsize 1Ti (current 1Ti)"),
        event=HOLDS,
        end=S.ACTIONS_DECLINED,
        plan_now=True,
    ),
    Row(
        id="declined, holds, zero cooldown",
        start=at(S.ACTIONS_DECLINED, since=T0, reason="AtMaxSize"),
        event=HOLDS,
        cooldown=0,
        end=S.ACTIONS_DECLINED,
        plan_now=True,
    ),
    Row(
        id="declined, clear",
        start=at(S.ACTIONS_DECLINED, since=T0 - 10),
        event=CLEAR,
        end=S.NORMAL,
        moves=((S.ACTIONS_DECLINED, S.NORMAL),),
        reason="conditions cleared",
    ),
]


def check_step(step: Step, row: Row) -> None:
    assert step.state.state is row.end
    assert [(move.from_state, move.to_state) for move in step.transitions] == list(row.moves)
    assert (step.plan_now, step.preview_now) == (row.plan_now, row.preview_now)
    if row.note is None:
        assert step.note == ""
    else:
        assert row.note in step.note
    check_records(step, now=row.now)
    if row.reason is not None:
        assert row.reason in step.state.reason


def check_records(step: Step, *, now: float) -> None:
    """Every transition names rule, object, from, to, time and reason, and they chain up."""
    for move in step.transitions:
        assert (move.rule, move.object, move.at) == (RULE, OBJECT, now)
        assert move.from_state is not move.to_state
        assert move.reason
    for earlier, later in zip(step.transitions, step.transitions[1:], strict=False):
        assert earlier.to_state is later.from_state
    if step.transitions:
        assert step.state.since == now
        assert step.state.entered_at[step.state.state.value] == now
        assert step.state.reason == step.transitions[-1].reason


def run(row: Row) -> Step:
    return decide(
        rule=RULE,
        object_key=OBJECT,
        state=row.start,
        event=row.event,
        now=row.now,
        cooldown_seconds=row.cooldown,
        for_seconds=row.for_seconds,
    )


@pytest.mark.parametrize("row", [pytest.param(row, id=row.id) for row in ROWS])
def test_transition(row: Row) -> None:
    step = run(row)
    check_step(step, row)
    if not step.transitions:
        assert step.state.since == row.start.since


@pytest.mark.parametrize("state", [state for state in RuleState if state is not S.INITIALIZING])
def test_no_data_keeps_every_state(state: RuleState) -> None:
    start = at(state, active_at=T0 - 5, cooldown_until=T0 - 1, reason="as it was")
    step = decide(
        rule=RULE,
        object_key=OBJECT,
        state=start,
        event=NO_DATA,
        now=T0,
        cooldown_seconds=COOLDOWN,
        for_seconds=0,
    )
    assert step.state == start
    assert step.transitions == ()
    assert not (step.plan_now or step.preview_now)
    assert "no data" in step.note


# --- what a transition does to the timestamps ---------------------------------------------------


def test_approval_ends_with_the_episode() -> None:
    (cleared,) = feed(at(S.ACTION_AWAITING_APPROVAL, approved_at=T0 - 5), [(T0, CLEAR)])
    assert (cleared.state.state, cleared.state.approved_at) == (S.NORMAL, None)
    (answered,) = feed(at(S.ACTION_AWAITING_APPROVAL), [(T0, ApprovalAnswered(approved=True))])
    assert answered.state.approved_at == T0


@pytest.mark.parametrize(
    ("start", "event", "active_at", "cooldown_until"),
    [
        pytest.param(at(S.NORMAL), HOLDS, T0, None, id="conditions start to hold: active_at is now"),
        pytest.param(at(S.TRIGGERED, active_at=T0 - 5), CLEAR, None, None, id="clear forgets active_at"),
        pytest.param(
            at(S.ACTIVE_ACTIONS_IN_PROGRESS, active_at=T0 - 5),
            ActionFinished(succeeded=True),
            None,
            T0 + COOLDOWN,
            id="success starts the cooldown",
        ),
        pytest.param(
            at(S.ACTIVE_ACTIONS_IN_PROGRESS, active_at=T0 - 5),
            ActionFinished(succeeded=False, reason="x"),
            T0 - 5,
            T0 + 1,
            id="failure keeps active_at and starts the retry backoff, not the cooldown",
        ),
        pytest.param(
            at(S.TRIGGERED, active_at=T0 - 5, cooldown_until=T0 + 9),
            NO_DATA,
            T0 - 5,
            T0 + 9,
            id="no data keeps both",
        ),
    ],
)
def test_timestamps(start: ObjectState, event: Event, active_at: float | None, cooldown_until: float | None) -> None:
    step = decide(
        rule=RULE, object_key=OBJECT, state=start, event=event, now=T0, cooldown_seconds=COOLDOWN, for_seconds=60
    )
    assert (step.state.active_at, step.state.cooldown_until) == (active_at, cooldown_until)


# --- Planned: the planner's answer goes through the same transition function -------------------


def apply_plan_outcome(*, state: ObjectState, now: float, declined: Declined | None, poll: int = 0) -> Step:
    return decide(
        rule=RULE,
        object_key=OBJECT,
        state=state,
        event=PlanOutcome(declined=declined),
        now=now,
        cooldown_seconds=COOLDOWN,
        for_seconds=0,
        poll_interval_seconds=poll,
    )


AT_MAX = Declined(code=DeclineCode.AT_MAX_SIZE, message="at maxsize 1Ti (current 1Ti)")
NO_GROWTH = Declined(code=DeclineCode.NO_GROWTH, message="no growth: scalepercentage 0% adds nothing")
UNKNOWN_SIZE = Declined(code=DeclineCode.NO_DATA, message="no data: the current size is unknown")


@pytest.mark.parametrize(
    ("start", "declined", "end", "moves", "texts"),
    [
        pytest.param(
            at(S.TRIGGERED, active_at=T0),
            None,
            S.ACTIVE_ACTIONS_PENDING,
            ((S.TRIGGERED, S.ACTIVE_ACTIONS_PENDING),),
            ("", "actions planned"),
            id="planned",
        ),
        pytest.param(
            at(S.ACTION_AWAITING_APPROVAL),
            None,
            S.ACTIVE_ACTIONS_PENDING,
            ((S.ACTION_AWAITING_APPROVAL, S.ACTIVE_ACTIONS_PENDING),),
            ("", "actions planned"),
            id="planned after approval",
        ),
        pytest.param(
            at(S.ACTION_AWAITING_WINDOW),
            None,
            S.ACTIVE_ACTIONS_PENDING,
            ((S.ACTION_AWAITING_WINDOW, S.ACTIVE_ACTIONS_PENDING),),
            ("", "actions planned"),
            id="planned when the window opened",
        ),
        pytest.param(
            at(S.ACTIONS_DECLINED, since=T0 - 300),
            None,
            S.ACTIVE_ACTIONS_PENDING,
            ((S.ACTIONS_DECLINED, S.ACTIVE_ACTIONS_PENDING),),
            ("", "actions planned"),
            id="planned again after a decline (maxsize raised)",
        ),
        pytest.param(
            at(S.TRIGGERED, active_at=T0, reason="conditions hold"),
            UNKNOWN_SIZE,
            S.TRIGGERED,
            (),
            (UNKNOWN_SIZE.message, "conditions hold"),
            id="no data is not a decline",
        ),
        pytest.param(
            at(S.TRIGGERED, active_at=T0),
            AT_MAX,
            S.ACTIONS_DECLINED,
            ((S.TRIGGERED, S.ACTIONS_DECLINED),),
            ("", "AtMaxSize: at maxsize 1Ti"),
            id="at maxsize",
        ),
        pytest.param(
            at(S.TRIGGERED, active_at=T0),
            NO_GROWTH,
            S.ACTIONS_DECLINED,
            ((S.TRIGGERED, S.ACTIONS_DECLINED),),
            ("", "NoGrowth"),
            id="no growth",
        ),
        pytest.param(
            at(S.ACTIONS_DECLINED, since=T0 - 300, reason="AtMaxSize: at maxsize 1Ti (current 1Ti)"),
            AT_MAX,
            S.ACTIONS_DECLINED,
            (),
            ("still declined: at maxsize 1Ti", "at maxsize 1Ti"),
            id="declined again",
        ),
    ],
)
def test_apply_plan_outcome(
    start: ObjectState,
    declined: Declined | None,
    end: RuleState,
    moves: tuple[tuple[RuleState, RuleState], ...],
    texts: tuple[str, str],
) -> None:
    note, reason = texts
    step = apply_plan_outcome(state=start, now=T0, declined=declined)
    assert step.state.state is end
    assert [(move.from_state, move.to_state) for move in step.transitions] == list(moves)
    assert not (step.plan_now or step.preview_now)
    assert note in step.note if note else step.note == ""
    assert reason in step.state.reason
    check_records(step, now=T0)


def test_repeated_decline_restarts_the_declined_cooldown() -> None:
    start = at(S.ACTIONS_DECLINED, since=T0 - 300, reason="AtMaxSize: at maxsize 1Ti (current 1Ti)")
    step = apply_plan_outcome(state=start, now=T0, declined=AT_MAX)
    assert step.state.since == T0


def test_no_data_from_the_planner_changes_nothing_in_declined() -> None:
    start = at(S.ACTIONS_DECLINED, since=T0 - 300, reason="AtMaxSize: at maxsize 1Ti (current 1Ti)")
    step = apply_plan_outcome(state=start, now=T0, declined=UNKNOWN_SIZE)
    assert step.state == start
    assert step.note == UNKNOWN_SIZE.message


# --- sequences ---------------------------------------------------------------------------------


def feed(state: ObjectState, events: list[tuple[float, Event]], *, for_seconds: int = 0, poll: int = 0) -> list[Step]:
    steps = []
    for now, event in events:
        step = decide(
            rule=RULE,
            object_key=OBJECT,
            state=state,
            event=event,
            now=now,
            cooldown_seconds=COOLDOWN,
            for_seconds=for_seconds,
            poll_interval_seconds=poll,
        )
        steps.append(step)
        state = step.state
    return steps


def test_declined_is_replanned_after_a_backoff_that_doubles_up_to_the_cooldown() -> None:
    state = at(S.TRIGGERED, active_at=T0)
    state = apply_plan_outcome(state=state, now=T0, declined=AT_MAX, poll=10).state
    assert (state.state, state.attempts_not_acted) == (S.ACTIONS_DECLINED, 1)

    early, due = feed(state, [(T0 + 9, HOLDS), (T0 + 10, HOLDS)], poll=10)
    assert (early.plan_now, due.plan_now) == (False, True)

    state = apply_plan_outcome(state=due.state, now=T0 + 10, declined=AT_MAX, poll=10).state
    early, due = feed(state, [(T0 + 29, HOLDS), (T0 + 30, HOLDS)], poll=10)
    assert (early.plan_now, due.plan_now) == (False, True)

    for _ in range(10):
        state = apply_plan_outcome(state=state, now=T0, declined=AT_MAX, poll=10).state
    early, due = feed(state, [(T0 + COOLDOWN - 1, HOLDS), (T0 + COOLDOWN, HOLDS)], poll=10)
    assert (early.plan_now, due.plan_now) == (False, True)

    after_raise = apply_plan_outcome(state=due.state, now=T0 + 600, declined=None)
    assert after_raise.state.state is S.ACTIVE_ACTIONS_PENDING


def test_a_failed_or_held_action_is_retried_after_a_backoff_not_a_cooldown() -> None:
    finished, early, due = feed(
        at(S.ACTIVE_ACTIONS_IN_PROGRESS, active_at=T0 - 60),
        [
            (T0, ActionFinished(succeeded=False, reason="apiserver unavailable")),
            (T0 + 5, HOLDS),
            (T0 + 10, HOLDS),
        ],
        poll=10,
    )
    assert (finished.state.state, finished.state.cooldown_until) == (S.TRIGGERED, T0 + 10)
    assert (early.state.state, early.plan_now) == (S.TRIGGERED, False)
    assert "cooldown" in early.note
    assert due.plan_now  # `for` (60 s ago) is kept: no second wait

    second = feed(
        replace(finished.state, state=S.ACTIVE_ACTIONS_IN_PROGRESS),
        [(T0 + 20, ActionFinished(succeeded=False, reason="held again"))],
        poll=10,
    )[0]
    assert second.state.cooldown_until == T0 + 20 + 20  # doubled
    assert retry_backoff_seconds(poll_interval_seconds=10, attempts=30, cap_seconds=COOLDOWN) == COOLDOWN


def test_for_restarts_after_a_gap_without_holding_samples_longer_than_two_poll_intervals() -> None:
    far = feed(ObjectState(), [(T0, HOLDS), (T0 + 600, HOLDS)], for_seconds=120, poll=60)
    assert not far[-1].plan_now
    assert far[-1].state.active_at == T0 + 600
    assert "restarted" in far[-1].note

    close = feed(ObjectState(), [(T0, HOLDS), (T0 + 60, NO_DATA), (T0 + 120, HOLDS)], for_seconds=120, poll=60)
    assert close[-1].plan_now

    # a state stored before last_holding_at existed: no gap known, `for` kept
    old = feed(at(S.TRIGGERED, active_at=T0 - 600), [(T0, HOLDS)], for_seconds=120, poll=60)
    assert old[-1].plan_now


def test_for_counts_from_when_the_conditions_started_to_hold() -> None:
    steps = feed(ObjectState(), [(T0, HOLDS), (T0 + 20, NO_DATA), (T0 + 40, HOLDS), (T0 + 60, HOLDS)], for_seconds=60)
    assert [step.plan_now for step in steps] == [False, False, False, True]
    assert steps[-1].state.active_at == T0


def test_a_clear_verdict_restarts_for() -> None:
    steps = feed(ObjectState(), [(T0, HOLDS), (T0 + 30, CLEAR), (T0 + 40, HOLDS), (T0 + 90, HOLDS)], for_seconds=60)
    assert [step.plan_now for step in steps] == [False, False, False, False]
    assert steps[-1].note == "holding for 50s of 60s"


def test_full_cycle_of_one_action() -> None:
    steps = feed(
        ObjectState(),
        [(T0, HOLDS)],
    )
    state = apply_plan_outcome(state=steps[0].state, now=T0, declined=None).state
    started, finished, cooling, again = feed(
        state,
        [
            (T0 + 1, ActionStarted()),
            (T0 + 20, ActionFinished(succeeded=True, reason="resized to 800Gi")),
            (T0 + 20 + COOLDOWN - 1, HOLDS),
            (T0 + 20 + COOLDOWN, HOLDS),
        ],
    )
    assert [step.state.state for step in (started, finished, cooling, again)] == [
        S.ACTIVE_ACTIONS_IN_PROGRESS,
        S.ACTIVE_ACTIONS_TAKEN,
        S.ACTIVE_ACTIONS_TAKEN,
        S.TRIGGERED,
    ]
    assert finished.state.reason == "resized to 800Gi"
    assert (cooling.plan_now, again.plan_now) == (False, True)
    entered = (S.NORMAL, S.TRIGGERED, S.ACTIVE_ACTIONS_PENDING, S.ACTIVE_ACTIONS_IN_PROGRESS, S.ACTIVE_ACTIONS_TAKEN)
    assert set(again.state.entered_at) == {entered_state.value for entered_state in entered}
    assert again.state.entered_at[S.TRIGGERED.value] == T0 + 20 + COOLDOWN


# --- discrepancies found (bugs, reported and not fixed here) ----------------------------------


def test_declined_approval_is_never_turned_into_an_action_without_approval() -> None:
    answered, later = feed(
        at(S.ACTION_AWAITING_APPROVAL),
        [(T0, ApprovalAnswered(approved=False, by="sre")), (T0 + COOLDOWN, HOLDS_NEEDS_APPROVAL)],
    )
    assert answered.state.state is S.ACTIONS_DECLINED
    assert not later.plan_now


def test_declined_is_not_replanned_outside_the_action_window() -> None:
    (step,) = feed(at(S.ACTIONS_DECLINED, since=T0 - COOLDOWN, reason="AtMaxSize"), [(T0, HOLDS_OUTSIDE_WINDOW)])
    assert not step.plan_now


def test_declined_at_time_zero_is_replanned_after_the_cooldown() -> None:
    (step,) = feed(at(S.ACTIONS_DECLINED, since=0.0, reason="AtMaxSize"), [(COOLDOWN + 100.0, HOLDS)])
    assert step.plan_now


def test_a_changed_state_is_a_frozen_object_state_with_every_other_field_kept() -> None:
    every = ObjectState(
        state=RuleState.ACTIONS_DECLINED,
        since=1.0,
        active_at=2.0,
        cooldown_until=3.0,
        approved_at=4.0,
        approval_declined_at=5.0,
        reason="AtMaxSize: at maxsize",
        entered_at={"Triggered": 0.5},
        last_holding_at=6.0,
        attempts_not_acted=7,
    )
    assert all(getattr(every, field.name) != field.default for field in fields(ObjectState))
    for field in fields(ObjectState):
        changed = _changed(every, {field.name: getattr(UNTOUCHED, field.name)})
        assert type(changed) is ObjectState
        assert changed == replace(every, **{field.name: getattr(UNTOUCHED, field.name)})
        with pytest.raises(FrozenInstanceError):
            changed.reason = "changed in place"  # type: ignore[misc]
    assert every.reason == "AtMaxSize: at maxsize" and every.attempts_not_acted == 7  # the original is untouched
