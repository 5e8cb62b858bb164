"""Leader election decisions (agent.core.leadership): one row per situation a replica can be in.

Times are plain numbers on the deciding replica's clock; the default timing is 15 s / 10 s / 2 s.
The holder's renewTime is another replica's clock: whatever it says, only this replica's own
observation of the record changing decides expiry.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from agent.core.leadership import (
    RELEASED_LEASE_SECONDS,
    LeadershipConfigError,
    LeaseRecord,
    Observation,
    Timing,
    Verdict,
    decide,
    observe,
    released,
)

ME = "agent-a"
OTHER = "agent-b"
NOW = 10_000.0
TIMING = Timing(lease_duration=15, renew_deadline=10, retry_period=2)


def held(
    holder: str | None, *, renewed: float | None = NOW - 1, duration: float | None = 15, transitions: int | None = 3
):
    return LeaseRecord(
        holder=holder, duration_seconds=duration, acquire_time=NOW - 100, renew_time=renewed, transitions=transitions
    )


@dataclass(frozen=True)
class Row:
    name: str
    current: LeaseRecord | None
    leading: bool
    observed_at: float | None
    last_renewed_at: float | None
    verdict: Verdict
    transitions: int | None = None
    """leaseTransitions in the record to write (ACQUIRE / RENEW)."""
    reason: str = ""


ROWS = [
    # --- a standby (not leading) ---
    Row("no Lease yet: create it", None, False, None, None, Verdict.ACQUIRE, 0, "no Lease"),
    Row("another's fresh lease", held(OTHER), False, NOW - 1, None, Verdict.STAND_BY, reason=f"{OTHER} holds"),
    Row(
        "another's lease unchanged for a whole duration",
        held(OTHER, renewed=NOW - 16),
        False,
        NOW - 15,
        None,
        Verdict.ACQUIRE,
        4,
        "expired",
    ),
    Row(
        "unchanged just under the duration",
        held(OTHER, renewed=NOW - 14.9),
        False,
        NOW - 14.9,
        None,
        Verdict.STAND_BY,
    ),
    Row("released lease (no holder)", held(None, duration=1), False, NOW, None, Verdict.ACQUIRE, 4, "nobody holds"),
    Row("empty-string holder", held(""), False, NOW, None, Verdict.ACQUIRE, 4, "nobody holds"),
    Row("my own lease after a restart", held(ME), False, NOW, None, Verdict.ACQUIRE, 3, "already names"),
    Row(
        "first sight of a lease abandoned long ago: its renewTime is another clock, wait a duration",
        held(OTHER, renewed=NOW - 3600),
        False,
        NOW,
        None,
        Verdict.STAND_BY,
        reason="as seen here",
    ),
    Row(
        "the holder's clock 18s behind this one: a healthy lease, renewed just now as seen here",
        held(OTHER, renewed=NOW - 18),
        False,
        NOW,
        None,
        Verdict.STAND_BY,
    ),
    Row(
        "holder's clock ahead within the bound: fresh",
        held(OTHER, renewed=NOW + 4),
        False,
        NOW,
        None,
        Verdict.STAND_BY,
    ),
    Row(
        "holder's clock far ahead: its renewTime is never compared, own observation decides (fresh)",
        held(OTHER, renewed=NOW + 600),
        False,
        NOW - 3,
        None,
        Verdict.STAND_BY,
        reason="renewed 3.0s ago as seen here",
    ),
    Row(
        "holder's clock far ahead, but unchanged for a duration: expired",
        held(OTHER, renewed=NOW + 600),
        False,
        NOW - 15,
        None,
        Verdict.ACQUIRE,
        4,
    ),
    Row(
        "holder's clock behind by less than the bound: still fresh",
        held(OTHER, renewed=NOW - 15 - 4),
        False,
        NOW - 1,
        None,
        Verdict.STAND_BY,
    ),
    Row(
        "missing renewTime: own observation decides", held(OTHER, renewed=None), False, NOW - 5, None, Verdict.STAND_BY
    ),
    Row("missing renewTime, unchanged 15s", held(OTHER, renewed=None), False, NOW - 15, None, Verdict.ACQUIRE, 4),
    Row(
        "missing leaseDurationSeconds: my own duration applies",
        held(OTHER, duration=None),
        False,
        NOW - 14,
        None,
        Verdict.STAND_BY,
    ),
    Row(
        "missing leaseDurationSeconds, unchanged for my duration",
        held(OTHER, duration=None, renewed=NOW - 15),
        False,
        NOW - 15,
        None,
        Verdict.ACQUIRE,
        4,
    ),
    Row(
        "the holder's longer duration is respected",
        held(OTHER, duration=60, renewed=NOW - 30),
        False,
        NOW - 30,
        None,
        Verdict.STAND_BY,
    ),
    Row(
        "missing leaseTransitions counts as 0",
        held(OTHER, transitions=None, renewed=NOW - 30),
        False,
        NOW - 30,
        None,
        Verdict.ACQUIRE,
        1,
    ),
    Row(
        "no observation and no renewTime: wait (the clock starts now)",
        held(OTHER, renewed=None),
        False,
        None,
        None,
        Verdict.STAND_BY,
    ),
    # --- a leader ---
    Row("my own lease, renewed recently: renew", held(ME), True, NOW - 2, NOW - 2, Verdict.RENEW, 3),
    Row(
        "renew deadline passed without a successful renewal",
        held(ME),
        True,
        NOW - 10,
        NOW - 10,
        Verdict.STEP_DOWN,
        reason="renew deadline",
    ),
    Row("just within the renew deadline", held(ME), True, NOW - 9.9, NOW - 9.9, Verdict.RENEW, 3),
    Row("someone else took it", held(OTHER), True, NOW, NOW - 2, Verdict.STEP_DOWN, reason=f"names {OTHER}"),
    Row("released by someone under me", held(None), True, NOW, NOW - 2, Verdict.STEP_DOWN, reason="nobody"),
    Row("the Lease was deleted", None, True, None, NOW - 2, Verdict.STEP_DOWN, reason="deleted"),
    Row("leading but never renewed", held(ME), True, NOW, None, Verdict.STEP_DOWN, reason="never renewed"),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_decide(row: Row) -> None:
    decision = decide(
        current=row.current,
        identity=ME,
        leading=row.leading,
        observed_at=row.observed_at,
        last_renewed_at=row.last_renewed_at,
        now=NOW,
        wall_now=NOW,
        timing=TIMING,
    )
    assert decision.verdict is row.verdict, decision.reason
    assert row.reason in decision.reason
    if row.verdict in (Verdict.ACQUIRE, Verdict.RENEW):
        assert decision.write is not None
        assert decision.write.holder == ME
        assert decision.write.renew_time == NOW
        assert decision.write.duration_seconds == 15
        assert decision.write.transitions == row.transitions
    else:
        assert decision.write is None
    if row.verdict is Verdict.STAND_BY:
        assert decision.retry_in is not None and 0 <= decision.retry_in <= TIMING.retry_period


def test_acquire_time_is_kept_on_renew_and_set_on_takeover() -> None:
    renewing = decide(
        current=held(ME),
        identity=ME,
        leading=True,
        observed_at=NOW,
        last_renewed_at=NOW - 2,
        now=NOW,
        wall_now=NOW,
        timing=TIMING,
    )
    assert renewing.write is not None and renewing.write.acquire_time == NOW - 100
    taking = decide(
        current=held(OTHER, renewed=NOW - 30),
        identity=ME,
        leading=False,
        observed_at=NOW - 30,
        last_renewed_at=None,
        now=NOW,
        wall_now=NOW,
        timing=TIMING,
    )
    assert taking.write is not None and taking.write.acquire_time == NOW


def test_a_standby_looks_again_when_the_lease_can_expire_not_later() -> None:
    decision = decide(
        current=held(OTHER, renewed=NOW - 14.5),
        identity=ME,
        leading=False,
        observed_at=NOW - 14.5,
        last_renewed_at=None,
        now=NOW,
        wall_now=NOW,
        timing=TIMING,
    )
    assert decision.verdict is Verdict.STAND_BY
    assert decision.retry_in == pytest.approx(0.5)


def test_observation_moves_only_when_holder_or_renew_time_changes() -> None:
    first = observe(None, held(OTHER, renewed=100), now=NOW)
    assert first.observed_at == NOW
    same = observe(first, held(OTHER, renewed=100, transitions=9), now=NOW + 7)
    assert same.observed_at == NOW
    renewed = observe(same, held(OTHER, renewed=102), now=NOW + 8)
    assert renewed.observed_at == NOW + 8
    new_holder = observe(renewed, held(ME, renewed=102), now=NOW + 9)
    assert new_holder.observed_at == NOW + 9
    gone = observe(new_holder, None, now=NOW + 10)
    assert gone == Observation(record=None, observed_at=NOW + 10)
    assert observe(gone, None, now=NOW + 11).observed_at == NOW + 10


def test_release_clears_the_holder_and_shortens_the_lease() -> None:
    mine = held(ME)
    handed_over = released(mine, identity=ME, now=NOW)
    assert handed_over is not None
    assert handed_over.holder is None
    assert handed_over.duration_seconds == RELEASED_LEASE_SECONDS
    assert handed_over.transitions == mine.transitions
    assert released(held(OTHER), identity=ME, now=NOW) is None
    assert released(None, identity=ME, now=NOW) is None


def test_timing_for_a_lease_keeps_the_usual_proportions() -> None:
    timing = Timing.for_lease(15)
    assert (timing.lease_duration, timing.renew_deadline, timing.retry_period) == (15, 10, 2)


@pytest.mark.parametrize(
    ("lease", "deadline", "retry"),
    [(15, 15, 2), (15, 10, 10), (10, 15, 2), (15, 10, 0), (15, 10, -1)],
)
def test_timing_refuses_durations_out_of_order(lease: float, deadline: float, retry: float) -> None:
    with pytest.raises(LeadershipConfigError, match="retry period < renew deadline < lease duration"):
        Timing(lease_duration=lease, renew_deadline=deadline, retry_period=retry)


def test_a_standby_whose_clock_runs_ahead_never_takes_over_a_renewed_lease() -> None:
    """The review's case: a standby 18 s ahead watching a leader that renews every 2 s."""
    skew = 18.0
    observation = None
    for step in range(30):
        here = NOW + 2 * step  # this replica's monotonic clock
        record = held(OTHER, renewed=here - skew - 2)  # its wall time, 18 s behind, read 2 s after renewal
        observation = observe(observation, record, now=here)
        decision = decide(
            current=record,
            identity=ME,
            leading=False,
            observed_at=observation.observed_at,
            last_renewed_at=None,
            now=here,
            wall_now=here + 1000,
            timing=TIMING,
        )
        assert decision.verdict is Verdict.STAND_BY, (step, decision.reason)
