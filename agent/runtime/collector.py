"""The periodic garbage collection of AutopilotRuleObjects, so they exist only where there is state.

Why this module exists: a cycle never writes a quiet object's state (`ObjectState.worth_keeping`), but a
stored one outlives its rule, its object, and its history. Each `sweep` lists the stored pairs, asks the
inventory which objects each rule selects now, lets the pure core decide (agent.core.collection), and
deletes each chosen pair on condition that it is still the object it read (the store's `delete`), writing
a `state-collected` audit record for each. Only the leader collects: a replica that does not act
(`acting()` false) skips the sweep. A rule whose inventory cannot be read, or selects nothing, is not
taken as gone (fail closed: an unsynced or empty view never deletes a state); one that raises ends the
sweep, and the next sweep tries again. A delete that loses to another writer is logged and skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from agent.adapters.clock import Clock
from agent.adapters.errors import StateConflictError
from agent.audit.trail import AuditTrail, collected_record
from agent.core.collection import DEFAULT_GRACE_SECONDS, Pair, StoredPair, plan_collection
from agent.core.matching import select_objects
from agent.core.rules import Rule
from agent.runtime.inventory import Inventory

log = structlog.get_logger("kafka-autopilot")

COLLECT_SECONDS = 600.0
"""How often the leader sweeps (`--state-gc-grace` is the grace; this is only how often it looks)."""


class CollectingStore(Protocol):
    """agent.adapters.kubernetes.statestore.StateStore's listing and conditional delete."""

    async def stored_pairs(self) -> list[StoredPair]: ...

    async def delete(self, rule: str, object_key: str) -> bool: ...


@dataclass
class StateCollector:
    store: CollectingStore
    inventory: Inventory
    rules: Callable[[], Sequence[Rule]]
    """The rules run now (AutopilotRules come and go while the agent runs)."""
    trail: AuditTrail
    clock: Clock
    acting: Callable[[], bool]
    """True while this replica acts (it is the leader, or runs alone)."""
    grace_seconds: float = DEFAULT_GRACE_SECONDS
    history_seconds: float = 0
    """How far back the guardrail policy counts action starts (`Policy.history_seconds`)."""
    kept: Callable[[], Collection[str]] = lambda: ()
    """Rules known but not run here (held: a sidecar's scope, no storage API): their states are never gone."""
    gone_since: dict[Pair, float] = field(default_factory=dict)

    async def sweep(self) -> list[Pair]:
        """One collection; returns the pairs deleted."""
        if not self.acting():
            return []
        stored = await self.store.stored_pairs()
        live: dict[str, set[str]] = {}
        unknown: set[str] = set(self.kept())
        for rule in self.rules():
            selected = {target.key for target in select_objects(rule, await self.inventory.objects(rule))}
            if selected:
                live[rule.name] = selected
            else:
                unknown.add(rule.name)
        now = self.clock.now()
        plan = plan_collection(
            stored,
            live=live,
            unknown=unknown,
            gone_since=self.gone_since,
            now=now,
            grace_seconds=self.grace_seconds,
            history_seconds=self.history_seconds,
        )
        self.gone_since = dict(plan.gone_since)
        deleted: list[Pair] = []
        for (name, key), reason in plan.delete.items():
            if not self.acting():  # leadership lost during the sweep
                break
            try:
                await self.store.delete(name, key)
            except StateConflictError as error:
                log.info("state not collected: moved since it was read", rule=name, object=key, why=str(error))
                continue
            self.gone_since.pop((name, key), None)
            deleted.append((name, key))
            self.trail.write(collected_record(rule=name, object_key=key, reason=reason, at=now))
        return deleted


async def collect_forever(collector: StateCollector, clock: Clock, *, every: float = COLLECT_SECONDS) -> None:
    """Sweep every `every` seconds until cancelled; a failed sweep is logged and tried at the next one."""
    while True:
        await clock.sleep(every)
        try:
            deleted = await collector.sweep()
        except Exception as error:  # an unreadable state or inventory: nothing deleted, next sweep tries again
            log.warning("state collection failed", error=f"{type(error).__name__}: {error}")
        else:
            if deleted:
                log.info("states collected", count=len(deleted))
