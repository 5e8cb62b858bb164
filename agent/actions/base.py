"""What every executor shares: its outcome type, the clock it is given, and the wait-until helper.

An executor turns one planned action into changes, in three steps: plan (re-read the live state and
decide the exact mutations, or decline / hold), apply (hand the mutations to the applier), verify
(poll until the cluster shows the intended result, or give up). Executors are idempotent: run again
after a restart, they find the work done and only verify.

Time comes from the `Clock` handed in, never from the standard library, so tests control it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from agent.actions.mutations import Applier, Mutation
from agent.adapters.clock import Clock
from agent.core.engine import PlannedAction
from agent.core.matching import TargetObject
from agent.core.rules import ActionParams


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

    async def run(self, *, planned: PlannedAction, target: TargetObject, params: ActionParams) -> Outcome: ...


@dataclass
class MutationLog:
    """The mutations one run handed to the applier, for the outcome's audit record."""

    applier: Applier
    done: list[str] = field(default_factory=list)

    async def apply(self, mutation: Mutation) -> None:
        await self.applier.apply(mutation)
        self.done.append(mutation.describe())


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
