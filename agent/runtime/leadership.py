"""Leader election at run time: hold a Lease so that of several replicas exactly one acts.

agent.core.leadership decides; this module reads and writes the `coordination.k8s.io/v1` Lease
(`KubeClient.read_lease` / `create_lease` / `replace_lease`) and keeps time:

- `acquire()` returns once this replica holds the Lease. Until then it looks every retry period
  (or sooner, when the holder's Lease can expire sooner), standing by. Every write carries the
  resourceVersion just read (or is a create), so of two replicas writing at once the apiserver lets
  one win; the other gets 409 Conflict and goes on standing by.
- `keep(on_lost=...)` renews every retry period and returns (after calling `on_lost` synchronously,
  before any other task runs) the moment this replica must stop acting: it could not renew for a
  whole renew deadline (each request is cut off at the deadline), or the Lease names someone else.
- `release()` hands the Lease over on a clean shutdown (no holder, 1 s duration) so a standby takes
  over at its next look instead of waiting out the lease.

Every change of leadership (acquired, lost, released, and a standby seeing a new leader) is logged
and written to the audit trail as a `leadership` record, and sets the gauge kafka_autopilot_leader.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

import structlog

from agent.adapters.clock import Clock
from agent.adapters.kubernetes import ConflictError, KubeError, LeaseInfo, NotFoundError
from agent.audit.trail import AUDIT_KEYS, AuditRecord, AuditTrail, iso_time
from agent.core.leadership import Decision, LeaseRecord, Observation, Timing, Verdict, decide, observe, released
from agent.runtime.telemetry import Telemetry

log = structlog.get_logger("kafka-autopilot")

EXIT_LEADERSHIP_LOST: Final = 75
"""`kafka-autopilot run --leader-elect` exits with this when it lost the Lease while leading (EX_TEMPFAIL:
Kubernetes restarts the container, which comes back as a fresh standby)."""

LIVE_LEASE_NAME: Final = "kafka-autopilot"
DRY_RUN_LEASE_NAME: Final = "kafka-autopilot-dry-run"


def default_lease_name(*, dry_run: bool) -> str:
    """A dry-run agent elects on a Lease of its own: holding the live one would keep a live agent standing by."""
    return DRY_RUN_LEASE_NAME if dry_run else LIVE_LEASE_NAME


RELEASE_TIMEOUT_SECONDS: Final = 5.0


class LeaseApi(Protocol):
    """The Lease calls of agent.adapters.kubernetes.KubeClient."""

    async def read_lease(self, *, namespace: str, name: str) -> LeaseInfo | None: ...

    async def create_lease(self, *, namespace: str, name: str, record: LeaseRecord) -> LeaseInfo: ...

    async def replace_lease(self, lease: LeaseInfo, record: LeaseRecord) -> LeaseInfo: ...


class LeaseNamespaceMissingError(Exception):
    """The Lease cannot be created: its namespace does not exist."""


@dataclass(frozen=True, kw_only=True)
class ElectionSettings:
    namespace: str
    lease_name: str
    identity: str
    timing: Timing

    @property
    def lease(self) -> str:
        return f"{self.namespace}/{self.lease_name}"


class LeaderElector:
    def __init__(
        self,
        *,
        leases: LeaseApi,
        settings: ElectionSettings,
        clock: Clock,
        trail: AuditTrail | None = None,
        telemetry: Telemetry | None = None,
        dry_run: bool = False,
    ) -> None:
        self._leases = leases
        self.settings = settings
        self._clock = clock
        self._trail = trail
        self._telemetry = telemetry
        self._dry_run = dry_run
        self._observation: Observation | None = None
        self._lease: LeaseInfo | None = None
        self._last_renewed_at: float | None = None
        self._announced_holder: str | None = None
        self._conflicted = False
        self.leading = False
        self.acquired_at: float | None = None
        if telemetry is not None:
            telemetry.set("kafka_autopilot_leader", 0)

    @property
    def holder(self) -> str | None:
        """The holder last seen in the Lease (this replica's identity while it leads)."""
        record = self._observation.record if self._observation else None
        return record.holder if record else None

    # --- the loops -------------------------------------------------------------------------------

    async def acquire(self) -> None:
        """Return once this replica leads; stand by until then."""
        timing = self.settings.timing
        log.info(
            "leader election: standing by until the Lease is free",
            lease=self.settings.lease,
            identity=self.settings.identity,
            lease_duration=timing.lease_duration,
            renew_deadline=timing.renew_deadline,
            retry_period=timing.retry_period,
        )
        while True:
            decision = await self._attempt()
            if self.leading:
                return
            await self._clock.sleep(max(0.05, decision.retry_in or timing.retry_period))

    async def keep(self, *, on_lost: Callable[[str], None] | None = None) -> str:
        """Renew until leadership is lost; then call `on_lost(reason)` at once and return the reason."""
        timing = self.settings.timing
        while True:
            await self._clock.sleep(timing.retry_period)
            decision = await self._attempt()
            if self._conflicted and self.leading:  # someone wrote the Lease under us: look again now
                decision = await self._attempt()
            if decision.verdict is Verdict.STEP_DOWN:
                if on_lost is not None:
                    on_lost(decision.reason)
                self._change("lost", before=self.settings.identity, after=self.holder, reason=decision.reason)
                return decision.reason

    async def release(self) -> bool:
        """Hand the Lease over (clean shutdown); True when it was released now."""
        if not self.leading:
            return False
        self.leading = False
        if self._telemetry is not None:
            self._telemetry.set("kafka_autopilot_leader", 0)
        try:
            async with self._clock.timeout(RELEASE_TIMEOUT_SECONDS):
                lease = await self._leases.read_lease(namespace=self.settings.namespace, name=self.settings.lease_name)
                record = released(
                    lease.record if lease else None, identity=self.settings.identity, now=self._clock.now()
                )
                if lease is None or record is None:
                    return False
                await self._leases.replace_lease(lease, record)
        except (KubeError, TimeoutError) as error:
            log.warning("leader election: could not release the Lease; it expires by itself", error=str(error))
            return False
        self._change("released", before=self.settings.identity, after=None, reason="shutting down: Lease released")
        return True

    # --- one attempt -----------------------------------------------------------------------------

    async def _attempt(self) -> Decision:
        """Read the Lease, decide, and write what the decision says. Never raises KubeError."""
        timing = self.settings.timing
        self._conflicted = False
        now = self._clock.monotonic()
        try:
            async with self._clock.timeout(self._request_budget(now)):
                lease = await self._leases.read_lease(namespace=self.settings.namespace, name=self.settings.lease_name)
        except (KubeError, TimeoutError) as error:
            return self._unreadable(error)
        now = self._clock.monotonic()
        self._observation = observe(self._observation, lease.record if lease else None, now=now)
        self._lease = lease
        decision = decide(
            current=lease.record if lease else None,
            identity=self.settings.identity,
            leading=self.leading,
            observed_at=self._observation.observed_at,
            last_renewed_at=self._last_renewed_at,
            now=now,
            wall_now=self._clock.now(),
            timing=timing,
        )
        if decision.verdict is Verdict.STAND_BY:
            self._note_holder(decision)
            return decision
        if decision.verdict is Verdict.STEP_DOWN:
            self._stop_leading()
            return decision
        assert decision.write is not None
        try:
            async with self._clock.timeout(self._request_budget(now)):
                if lease is None:
                    written = await self._leases.create_lease(
                        namespace=self.settings.namespace, name=self.settings.lease_name, record=decision.write
                    )
                else:
                    written = await self._leases.replace_lease(lease, decision.write)
        except NotFoundError as error:
            if lease is None:
                raise LeaseNamespaceMissingError(
                    f"cannot create the Lease {self.settings.lease}: namespace {self.settings.namespace!r} "
                    "does not exist (create it, or run once with --install-crds, which creates it)"
                ) from error
            log.info("leader election: the Lease went away while writing; looking again", error=str(error))
            return self._unreadable(error)
        except ConflictError as error:
            self._conflicted = True
            log.info(
                "leader election: another replica wrote the Lease first",
                lease=self.settings.lease,
                verdict=decision.verdict.value,
                why=str(error),
            )
            return self._unreadable(error, quiet=True)
        except (KubeError, TimeoutError) as error:
            return self._unreadable(error)
        self._lease = written
        self._observation = observe(self._observation, written.record, now=self._clock.monotonic())
        self._last_renewed_at = now
        if decision.verdict is Verdict.ACQUIRE:
            self._start_leading(decision, before=lease.record.holder if lease else None)
        return decision

    def _request_budget(self, now: float) -> float:
        """How long one request may take: a leader must know by its renew deadline."""
        timing = self.settings.timing
        if self.leading and self._last_renewed_at is not None:
            return max(0.05, timing.renew_deadline - (now - self._last_renewed_at))
        return timing.renew_deadline

    def _unreadable(self, error: BaseException, *, quiet: bool = False) -> Decision:
        """A failed request: a leader steps down once its renew deadline has passed, else tries again."""
        if self.leading:
            decision = decide(
                current=self._lease.record if self._lease else None,
                identity=self.settings.identity,
                leading=True,
                observed_at=self._observation.observed_at if self._observation else None,
                last_renewed_at=self._last_renewed_at,
                now=self._clock.monotonic(),
                wall_now=self._clock.now(),
                timing=self.settings.timing,
            )
            if decision.verdict is Verdict.STEP_DOWN:
                self._stop_leading()
                return decision
        what = str(error) or type(error).__name__
        if isinstance(error, TimeoutError):
            what = "the request timed out"
        if not quiet:
            log.warning("leader election: Lease request failed; trying again", lease=self.settings.lease, error=what)
        return Decision(verdict=Verdict.STAND_BY, reason=f"Lease request failed: {what}", retry_in=None)

    # --- bookkeeping -----------------------------------------------------------------------------

    def _start_leading(self, decision: Decision, *, before: str | None) -> None:
        self.leading = True
        self.acquired_at = self._clock.now()
        if self._telemetry is not None:
            self._telemetry.set("kafka_autopilot_leader", 1)
        self._announced_holder = self.settings.identity
        self._change("acquired", before=before, after=self.settings.identity, reason=decision.reason)

    def _stop_leading(self) -> None:
        self.leading = False
        if self._telemetry is not None:
            self._telemetry.set("kafka_autopilot_leader", 0)

    def _note_holder(self, decision: Decision) -> None:
        holder = self.holder
        if holder != self._announced_holder:
            before, self._announced_holder = self._announced_holder, holder
            self._change("standby", before=before, after=holder, reason=decision.reason)

    def _change(self, outcome: str, *, before: str | None, after: str | None, reason: str) -> None:
        log.info(
            f"leader election: {outcome}",
            lease=self.settings.lease,
            identity=self.settings.identity,
            holder_before=before,
            holder_now=after,
            reason=reason,
        )
        if self._trail is None:
            return
        record: AuditRecord = dict.fromkeys(AUDIT_KEYS)
        record.update(
            {
                "time": iso_time(self._clock.now()),
                "event": "leadership",
                "object": f"lease {self.settings.lease}",
                "from": before,
                "to": after,
                "outcome": outcome,
                "reason": reason,
                "identity": self.settings.identity,
                "dry_run": self._dry_run,
            }
        )
        self._trail.write(record)
