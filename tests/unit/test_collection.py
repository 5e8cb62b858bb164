"""Which states are worth an AutopilotRuleObject, and which stored ones the collector deletes (pure)."""

from __future__ import annotations

import pytest

from agent.core.collection import StoredPair, plan_collection
from agent.core.states import UNTOUCHED, Evaluated, ObjectState, RuleState, Verdict, decide

NOW = 10_000.0
GRACE = 600.0
S = RuleState


@pytest.mark.parametrize(
    ("state", "kept"),
    [
        (UNTOUCHED, False),
        (ObjectState(state=S.NORMAL, since=5.0, reason="conditions cleared", entered_at={"Normal": 5.0}), False),
        (ObjectState(state=S.NORMAL, cooldown_until=NOW + 1), True),  # a retry backoff still running
        (ObjectState(state=S.NORMAL, cooldown_until=NOW), False),
        (ObjectState(state=S.INITIALIZING), True),
        *[(ObjectState(state=state), True) for state in RuleState if state not in (S.NORMAL, S.INITIALIZING)],
    ],
)
def test_only_a_state_with_something_to_remember_is_worth_keeping(state: ObjectState, kept: bool) -> None:
    assert state.worth_keeping(NOW) is kept


@pytest.mark.parametrize(
    "state",
    [
        UNTOUCHED,
        *[ObjectState(state=state, since=1.0) for state in RuleState],
        *[ObjectState(state=state, since=1.0, last_holding_at=NOW - 2) for state in RuleState],
        *[ObjectState(state=state, since=1.0, approved_at=NOW - 5) for state in RuleState],
        ObjectState(state=S.ACTIVE_ACTIONS_TAKEN, cooldown_until=NOW + 60),
        ObjectState(state=S.ACTIONS_DECLINED, since=NOW - 1, reason="AtMaxSize: at maxsize"),  # backoff runs
        ObjectState(state=S.ACTIONS_DECLINED, since=NOW - 1, attempts_not_acted=3),
        ObjectState(state=S.ACTIONS_DECLINED, since=NOW - 600, reason="AtMaxSize: at maxsize"),  # due again
        ObjectState(state=S.ACTIONS_DECLINED, since=NOW - 600, approval_declined_at=NOW - 600),
        ObjectState(state=S.ACTIVE_ACTIONS_TAKEN, cooldown_until=NOW),  # cooldown over
        ObjectState(state=S.ACTION_AWAITING_WINDOW, since=1.0, reason="outside the action window"),
        ObjectState(state=S.ACTION_AWAITING_WINDOW, since=1.0, reason="outside the action window", approved_at=1.0),
    ],
)
@pytest.mark.parametrize("verdict", list(Verdict))
@pytest.mark.parametrize(("in_window", "approval_needed"), [(True, False), (False, False), (False, True), (True, True)])
def test_a_quiet_state_is_exactly_what_decide_returns_unchanged(
    state: ObjectState, verdict: Verdict, in_window: bool, approval_needed: bool
) -> None:
    """The engine skips `decide` when `quiet_note` gives a note: then decide must only copy the state,
    with that note."""
    step = decide(
        rule="r",
        object_key="o",
        state=state,
        event=Evaluated(verdict=verdict, in_action_window=in_window, approval_needed=approval_needed),
        now=NOW,
        cooldown_seconds=60,
        for_seconds=0,
        poll_interval_seconds=2,
    )
    note = state.quiet_note(
        verdict,
        now=NOW,
        poll_interval_seconds=2,
        cooldown_seconds=60,
        in_action_window=in_window,
        approval_needed=approval_needed,
    )
    if note is not None:
        assert (step.state, step.transitions, step.plan_now, step.preview_now, step.note) == (
            state,
            (),
            False,
            False,
            note,
        )
    in_flight = state.state in (S.ACTIVE_ACTIONS_PENDING, S.ACTIVE_ACTIONS_IN_PROGRESS)
    waiting = state.state is S.ACTION_AWAITING_APPROVAL and verdict is Verdict.HOLDS and state.approved_at is None
    backoff = min(60, 2 * 2 ** (max(1, state.attempts_not_acted) - 1))  # poll 2 s, doubled, capped at the cooldown
    not_due = (
        state.state is S.ACTIONS_DECLINED
        and verdict is Verdict.HOLDS
        and (state.approval_declined_at is not None or (state.since or NOW) + backoff > NOW)
    )
    cooling = state.state is S.ACTIVE_ACTIONS_TAKEN and state.cooldown_until is not None and state.cooldown_until > NOW
    out_of_window = (
        state.state is S.ACTION_AWAITING_WINDOW
        and verdict is Verdict.HOLDS
        and not in_window
        and (not approval_needed or state.approved_at is not None)
        and state.reason == "outside the action window"
    )
    assert (note is not None) is (
        (verdict is Verdict.NO_DATA and state.state is not S.INITIALIZING)
        or (
            state.last_holding_at is None
            and (
                (verdict is Verdict.CLEAR and state.state is S.NORMAL)
                or in_flight
                or waiting
                or not_due
                or cooling
                or out_of_window
            )
        )
    )


def stored(key: str, state: ObjectState | None, *, rule: str = "r", **more: object) -> StoredPair:
    return StoredPair(rule=rule, object_key=key, state=state, **more)  # type: ignore[arg-type]


TRIGGERED = ObjectState(state=S.TRIGGERED, since=NOW - 5)
NORMAL = ObjectState(state=S.NORMAL, since=NOW - 50)


def test_back_to_normal_with_no_counted_history_is_collected_at_once() -> None:
    plan = plan_collection(
        [
            stored("a", NORMAL),
            stored("b", None),  # an object created but never given a state
            stored("c", TRIGGERED),
            stored("d", NORMAL, last_started_at=NOW - 100),  # counted by a policy looking 1 h back
            stored("e", NORMAL, last_started_at=NOW - 4000),  # older than the policy looks
        ],
        live={"r": {"a", "b", "c", "d", "e"}},
        gone_since={},
        now=NOW,
        history_seconds=3600,
    )
    assert dict(plan.delete) == {
        ("r", "a"): "back to Normal with no history a policy counts",
        ("r", "b"): "back to Normal with no history a policy counts",
        ("r", "e"): "back to Normal with no history a policy counts",
    }
    assert plan.gone_since == {}


def test_a_gone_object_or_rule_is_collected_only_after_the_grace_period() -> None:
    pairs = [stored("gone", TRIGGERED), stored("x", TRIGGERED, rule="removed"), stored("here", TRIGGERED)]
    first = plan_collection(pairs, live={"r": {"here"}}, gone_since={}, now=NOW, grace_seconds=GRACE)
    later = plan_collection(
        pairs, live={"r": {"here"}}, gone_since=first.gone_since, now=NOW + GRACE - 1, grace_seconds=GRACE
    )
    due = plan_collection(
        pairs, live={"r": {"here"}}, gone_since=later.gone_since, now=NOW + GRACE, grace_seconds=GRACE
    )

    assert (dict(first.delete), dict(later.delete)) == ({}, {})
    assert first.gone_since == {("r", "gone"): NOW, ("removed", "x"): NOW}
    assert dict(due.delete) == {
        ("r", "gone"): "object gone is gone (for 600s, grace 600s)",
        ("removed", "x"): "rule removed is gone (for 600s, grace 600s)",
    }


def test_an_object_back_before_the_grace_ends_starts_again_from_zero() -> None:
    pairs = [stored("flaky", TRIGGERED)]
    gone = plan_collection(pairs, live={"r": set()}, gone_since={}, now=NOW, grace_seconds=GRACE)
    back = plan_collection(pairs, live={"r": {"flaky"}}, gone_since=gone.gone_since, now=NOW + 10, grace_seconds=GRACE)
    again = plan_collection(pairs, live={"r": set()}, gone_since=back.gone_since, now=NOW + GRACE, grace_seconds=GRACE)

    assert (back.gone_since, dict(again.delete), again.gone_since) == ({}, {}, {("r", "flaky"): NOW + GRACE})


@pytest.mark.parametrize(
    "pair",
    [
        stored("o", ObjectState(state=S.ACTIVE_ACTIONS_PENDING)),
        stored("o", ObjectState(state=S.ACTIVE_ACTIONS_IN_PROGRESS)),
        stored("o", NORMAL, in_flight=True),
        stored("o", None, in_flight=True),
    ],
)
def test_a_state_in_flight_is_never_collected(pair: StoredPair) -> None:
    plan = plan_collection([pair], live={}, gone_since={pair.pair: 0.0}, now=NOW, grace_seconds=GRACE)
    assert dict(plan.delete) == {}


def test_a_rule_whose_objects_could_not_be_seen_is_not_taken_as_gone() -> None:
    pairs = [stored("o", TRIGGERED), stored("quiet", NORMAL)]
    plan = plan_collection(
        pairs, live={}, unknown={"r"}, gone_since={("r", "o"): NOW - 2 * GRACE}, now=NOW, grace_seconds=GRACE
    )
    assert dict(plan.delete) == {("r", "quiet"): "back to Normal with no history a policy counts"}
    assert plan.gone_since == {("r", "o"): NOW - 2 * GRACE}  # kept as it was, neither reset nor acted on
