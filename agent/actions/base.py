"""What every action shares: its outcome type, the `Action` its folder exposes, the dependencies an
executor may be built with, and the helpers to verify and to wait.

An executor turns one planned action into changes, in three steps: plan (re-read the live state and
decide the exact mutations, or decline / hold), apply (hand the mutations to the applier), verify
(poll until the cluster shows the intended result, or give up). Verify runs only when the applier
changed the cluster: every executor goes through `verified`, which lets the applier decide (the
dry-run applier answers DRY_RUN with the recorded mutations). Executors are idempotent: run again
after a restart, they find the work done and only verify. A run that raises after some mutations
(a destructive action failing partway) does not lose them: `collecting_mutations` gives the runner
every mutation applied, for the failed outcome's record.

Time comes from the `Clock` handed in, never from the standard library, so tests control it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from agent.actions.mutations import Applier, Mutation
from agent.adapters.clock import Clock
from agent.core.catalog import ActionSpec
from agent.core.engine import PlannedAction
from agent.core.matching import TargetObject
from agent.core.rules import Rule

if TYPE_CHECKING:  # types only: the catalog of specs (the pure core's bench, the loaders) needs no client library
    from agent.adapters.kafka import KafkaAdmin
    from agent.adapters.kubernetes import KubeClient
    from agent.adapters.storagepools import StoragePoolApi

RECORDED = "dry-run: recorded, nothing changed"


class OutcomeKind(StrEnum):
    VERIFIED = "verified"
    """Applied and the cluster shows the result."""
    DRY_RUN = "dry-run"
    """Planned and recorded by the dry-run applier; nothing changed."""
    DECLINED = "declined"
    """Refused for a reason that will not go away by waiting (e.g. the StorageClass cannot expand)."""
    HELD = "held"
    """Not done now, for a reason that may pass (e.g. Kafka still sees the broker alive)."""
    FAILED = "failed"
    """Applied, but the result did not show in time, or a call failed."""


@dataclass(frozen=True, kw_only=True)
class Outcome:
    kind: OutcomeKind
    reason: str
    mutations: tuple[str, ...] = field(default_factory=tuple)

    @property
    def succeeded(self) -> bool:
        return self.kind in (OutcomeKind.VERIFIED, OutcomeKind.DRY_RUN)


class Executor(Protocol):
    action: str

    async def run(self, *, planned: PlannedAction, target: TargetObject, params: object, rule: Rule) -> Outcome:
        """`params` is of the type the action's spec builds."""
        ...


def broker_id_of(target: TargetObject) -> int | None:
    """The broker id the inventory attached to a KafkaBroker object (from Kafka or the rule), or None."""
    value = target.identity.get("broker", "")
    return int(value) if value.isdigit() else None


@dataclass(frozen=True, kw_only=True)
class Dependencies:
    """What the agent can give an executor; each action's factory takes what it needs."""

    kube: KubeClient
    """The whole cluster (nodes, leases, pods, volume attachments)."""
    inventory: Any
    """The objects rules act on: the Kubernetes client, or a sidecar's scoped view of it (agent.runtime.scope)."""
    kafka: KafkaAdmin | None
    """None without --kafka."""
    pools: StoragePoolApi | None
    """None without --storage-api."""
    clock: Clock
    watched: Any = None
    """The watch-fed caches (agent.adapters.kubernetes.cache.ClusterCaches) for reads made every cycle;
    None in sidecar mode and in tests, where `kube` answers them."""


ExecutorFactory = Callable[[Dependencies, Applier], Executor | None]
"""Builds an action's executor on an applier, or None when a dependency it needs is missing."""


@dataclass(frozen=True, kw_only=True)
class Action:
    """One action, as its folder exposes it: the pure spec and the factory of its executor."""

    spec: ActionSpec
    executor: ExecutorFactory


_applied_in_this_run: ContextVar[list[str] | None] = ContextVar("applied_in_this_run", default=None)


@contextmanager
def collecting_mutations() -> Iterator[list[str]]:
    """Every mutation a MutationLog applies inside the block (in this task and the tasks it starts),
    also when the executor then raises: the runner records them in a failed action's outcome."""
    collected: list[str] = []
    token = _applied_in_this_run.set(collected)
    try:
        yield collected
    finally:
        _applied_in_this_run.reset(token)


@dataclass
class MutationLog:
    """The mutations one run handed to the applier, for the outcome's audit record."""

    applier: Applier
    done: list[str] = field(default_factory=list)

    async def apply(self, mutation: Mutation) -> None:
        await self.applier.apply(mutation)
        self.done.append(mutation.describe())
        collected = _applied_in_this_run.get()
        if collected is not None:
            collected.append(mutation.describe())


async def verified(
    log: MutationLog,
    verify: Callable[[], Awaitable[Outcome]],
    *,
    recorded_reason: str = RECORDED,
) -> Outcome:
    """The outcome once the mutations are applied: `verify()` when they changed the cluster; with the
    dry-run applier, DRY_RUN with `recorded_reason` and the recorded mutations, never verified."""

    def recorded() -> Outcome:
        return Outcome(kind=OutcomeKind.DRY_RUN, reason=recorded_reason, mutations=tuple(log.done))

    return await log.applier.after_apply(verify=verify, recorded=recorded)


async def finished(log: MutationLog, reason: str) -> Outcome:
    """Done with nothing to wait for: VERIFIED with `reason`, or with the dry-run applier, DRY_RUN with it."""

    async def nothing_to_wait_for() -> Outcome:
        return Outcome(kind=OutcomeKind.VERIFIED, reason=reason, mutations=tuple(log.done))

    return await verified(log, nothing_to_wait_for, recorded_reason=reason)


class VerificationFailedError(Exception):
    """Raised by a verify check when the result can no longer come (e.g. the storage layer gave up)."""


async def verified_when(
    log: MutationLog,
    check: Callable[[], Awaitable[str | None]],
    *,
    clock: Clock,
    timeout_seconds: float,
    reason: str,
    interval_seconds: float = 1.0,
) -> Outcome:
    """The outcome once the mutations are applied, verified by polling `check` (None = done, else
    what is missing): VERIFIED with `reason`; FAILED naming the last gap after `timeout_seconds`, or
    at once when the check raises VerificationFailedError; with the dry-run applier, DRY_RUN."""

    async def verify() -> Outcome:
        try:
            gap = await wait_for(check, clock=clock, timeout_seconds=timeout_seconds, interval_seconds=interval_seconds)
        except VerificationFailedError as failed:
            return Outcome(kind=OutcomeKind.FAILED, reason=str(failed), mutations=tuple(log.done))
        if gap is not None:
            return Outcome(
                kind=OutcomeKind.FAILED,
                reason=f"not verified within {timeout_seconds:.0f}s: {gap}",
                mutations=tuple(log.done),
            )
        return Outcome(kind=OutcomeKind.VERIFIED, reason=reason, mutations=tuple(log.done))

    return await verified(log, verify)


async def wait_for(
    check: Callable[[], Awaitable[str | None]],
    *,
    clock: Clock,
    timeout_seconds: float,
    interval_seconds: float = 1.0,
) -> str | None:
    """Poll `check` (None = done, else what is still missing) until done or the timeout; return the last gap."""
    deadline = clock.now() + timeout_seconds
    gap = await check()
    while gap is not None and clock.now() < deadline:
        await clock.sleep(interval_seconds)
        gap = await check()
    return gap
