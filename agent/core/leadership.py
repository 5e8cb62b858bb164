"""Leader election, decided: given what a Lease says and what this replica remembers, act or stand by.

Two replicas of the agent must never both act. They share one `coordination.k8s.io/v1` Lease; the
one named in `holderIdentity` leads, renewing `renewTime` every retry period. This module is the
decision only (no I/O, no clock: `now` is handed in); agent.runtime.leadership reads and writes the
Lease and runs these decisions in a loop.

The rules, with the same meaning of the three durations as Kubernetes' own leader election:

- retry period < renew deadline < lease duration (15 s, 10 s, 2 s by default; `Timing.for_lease`
  derives the other two from the lease duration in the same proportions);
- a leader renews every retry period. When it has not renewed successfully for a whole renew
  deadline, or the Lease names someone else (or was deleted), it steps down at once. Because the
  renew deadline is shorter than the lease duration, it has stopped before a standby may take over;
- a standby takes over an expired Lease, or one nobody holds (released, or never held). Expiry is
  measured as client-go measures it: on the standby's own monotonic clock, from when it saw the
  Lease last change (holder or renewTime). A full lease duration without a change means the holder
  stopped renewing. The holder's timestamps are another clock's readings and are never compared
  with this one, so no clock skew between replicas can make a healthy Lease look expired; the
  price is that a freshly started standby waits one lease duration before taking over a Lease
  abandoned long ago;
- a missing `leaseDurationSeconds` means this replica's own lease duration; missing
  `leaseTransitions` means 0; a missing Lease is created;
- `leaseTransitions` grows by one each time the holder changes to someone new; re-acquiring one's
  own Lease (a restart under the same identity) is no transition;
- releasing (a leader told to stop) clears the holder and sets a 1 s duration, so a standby takes
  over on its next attempt instead of waiting out the lease.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

RELEASED_LEASE_SECONDS = 1
"""`leaseDurationSeconds` written when a leader releases its Lease."""


class LeadershipConfigError(ValueError):
    """The durations break retry period < renew deadline < lease duration."""


@dataclass(frozen=True, kw_only=True)
class Timing:
    lease_duration: float
    """How long a standby waits, without seeing the Lease change, before taking it over."""
    renew_deadline: float
    """How long a leader keeps trying to renew before it stops acting."""
    retry_period: float
    """How often a leader renews and a standby looks at the Lease."""

    def __post_init__(self) -> None:
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise LeadershipConfigError(
                "leader election needs 0 < retry period < renew deadline < lease duration, got "
                f"{self.retry_period:g}s, {self.renew_deadline:g}s, {self.lease_duration:g}s"
            )

    @classmethod
    def for_lease(cls, lease_duration: float) -> Timing:
        """The renew deadline and retry period in the proportions of the usual 15 s / 10 s / 2 s."""
        return cls(
            lease_duration=lease_duration,
            renew_deadline=lease_duration * 2 / 3,
            retry_period=lease_duration * 2 / 15,
        )


@dataclass(frozen=True, kw_only=True)
class LeaseRecord:
    """The Lease's spec, as plain values (times in epoch seconds); any field may be missing."""

    holder: str | None = None
    duration_seconds: float | None = None
    acquire_time: float | None = None
    renew_time: float | None = None
    transitions: int | None = None

    @property
    def held(self) -> bool:
        return bool(self.holder)


@dataclass(frozen=True, kw_only=True)
class Observation:
    """What a replica remembers of the Lease: its last content and when (on its own clock) that changed."""

    record: LeaseRecord | None
    observed_at: float


def observe(previous: Observation | None, record: LeaseRecord | None, *, now: float) -> Observation:
    """Remember `record`; the observation time moves only when holder or renewTime changed."""
    if previous is not None and _same_ack(previous.record, record):
        return Observation(record=record, observed_at=previous.observed_at)
    return Observation(record=record, observed_at=now)


def _same_ack(before: LeaseRecord | None, after: LeaseRecord | None) -> bool:
    if before is None or after is None:
        return before is after
    return (before.holder, before.renew_time) == (after.holder, after.renew_time)


class Verdict(StrEnum):
    ACQUIRE = "acquire"
    """Write `Decision.write` (create the Lease when there is none): this replica becomes leader if it wins."""
    RENEW = "renew"
    """Write `Decision.write`: the leader keeps its Lease."""
    STAND_BY = "stand-by"
    """Someone else leads; look again later."""
    STEP_DOWN = "step-down"
    """This replica led and must stop acting now."""


@dataclass(frozen=True, kw_only=True)
class Decision:
    verdict: Verdict
    reason: str
    write: LeaseRecord | None = None
    """The record to write, for ACQUIRE and RENEW."""
    retry_in: float | None = None
    """For STAND_BY: seconds until the Lease could expire, at the earliest (never more than a retry period)."""


def decide(
    *,
    current: LeaseRecord | None,
    identity: str,
    leading: bool,
    observed_at: float | None,
    last_renewed_at: float | None,
    now: float,
    wall_now: float,
    timing: Timing,
) -> Decision:
    """What this replica does now.

    `current` is the Lease as just read (None: there is none); `observed_at` when this replica saw
    its holder or renewTime last change; `last_renewed_at` when this replica, leading, last wrote
    it successfully; `now` the same monotonic clock's reading. `wall_now` is only written into the
    record (acquireTime, renewTime), as Kubernetes expects, and never compared with anything.
    """
    if leading:
        return _as_leader(
            current, identity=identity, last_renewed_at=last_renewed_at, now=now, wall_now=wall_now, timing=timing
        )
    if current is None:
        return Decision(
            verdict=Verdict.ACQUIRE,
            reason="there is no Lease yet",
            write=LeaseRecord(
                holder=identity,
                duration_seconds=timing.lease_duration,
                acquire_time=wall_now,
                renew_time=wall_now,
                transitions=0,
            ),
        )
    transitions = current.transitions or 0
    if current.holder == identity:
        return Decision(
            verdict=Verdict.ACQUIRE,
            reason="the Lease already names this replica (restarted under the same identity)",
            write=_held_by(
                identity, now=wall_now, timing=timing, transitions=transitions, acquire_time=current.acquire_time
            ),
        )
    if not current.held:
        return Decision(
            verdict=Verdict.ACQUIRE,
            reason="nobody holds the Lease (released or never held)",
            write=_held_by(identity, now=wall_now, timing=timing, transitions=transitions + 1, acquire_time=None),
        )
    expired, why, wait = _expiry(current, observed_at=observed_at, now=now, timing=timing)
    if expired:
        return Decision(
            verdict=Verdict.ACQUIRE,
            reason=f"the Lease of {current.holder} expired: {why}",
            write=_held_by(identity, now=wall_now, timing=timing, transitions=transitions + 1, acquire_time=None),
        )
    return Decision(
        verdict=Verdict.STAND_BY,
        reason=f"{current.holder} holds the Lease: {why}",
        retry_in=min(timing.retry_period, wait),
    )


def _as_leader(
    current: LeaseRecord | None,
    *,
    identity: str,
    last_renewed_at: float | None,
    now: float,
    wall_now: float,
    timing: Timing,
) -> Decision:
    if last_renewed_at is None or now - last_renewed_at >= timing.renew_deadline:
        since = "never renewed" if last_renewed_at is None else f"last renewed {now - last_renewed_at:.1f}s ago"
        return Decision(
            verdict=Verdict.STEP_DOWN,
            reason=f"could not renew the Lease within the renew deadline of {timing.renew_deadline:g}s ({since})",
        )
    if current is None:
        return Decision(verdict=Verdict.STEP_DOWN, reason="the Lease was deleted while this replica led")
    if current.holder != identity:
        holder = current.holder or "nobody"
        return Decision(verdict=Verdict.STEP_DOWN, reason=f"the Lease now names {holder}, not this replica")
    return Decision(
        verdict=Verdict.RENEW,
        reason="leading: renew",
        write=replace(current, duration_seconds=timing.lease_duration, renew_time=wall_now),
    )


def _held_by(identity: str, *, now: float, timing: Timing, transitions: int, acquire_time: float | None) -> LeaseRecord:
    return LeaseRecord(
        holder=identity,
        duration_seconds=timing.lease_duration,
        acquire_time=now if acquire_time is None else acquire_time,
        renew_time=now,
        transitions=transitions,
    )


def _expiry(current: LeaseRecord, *, observed_at: float | None, now: float, timing: Timing) -> tuple[bool, str, float]:
    """(expired, why, seconds until it may expire), from this replica's own observation only."""
    duration = current.duration_seconds if current.duration_seconds and current.duration_seconds > 0 else None
    duration = duration or timing.lease_duration
    if observed_at is None:  # the caller observes before deciding; without it, the clock starts now
        return False, f"not observed yet; waiting a full lease duration ({duration:g}s) from now", duration
    unchanged = now - observed_at
    if unchanged >= duration:
        return True, f"unchanged for {unchanged:.1f}s as seen here (lease duration {duration:g}s)", 0.0
    return False, f"renewed {unchanged:.1f}s ago as seen here (lease duration {duration:g}s)", duration - unchanged


def released(current: LeaseRecord | None, *, identity: str, now: float) -> LeaseRecord | None:
    """The record a leader writes to hand over at once; None when the Lease is not this replica's."""
    if current is None or current.holder != identity:
        return None
    return replace(current, holder=None, duration_seconds=RELEASED_LEASE_SECONDS, renew_time=now)
