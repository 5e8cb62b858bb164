"""From the watch-fed caches to the rule loops: evaluate at once when the cluster changes, and never
before the caches a rule reads have listed once.

Why it exists: a node that goes NotReady, or a broker pod deleted, should not wait for the next poll
of the rules that care; and a rule evaluated on a cache that has not listed yet would decide on an
empty cluster. The caches (agent.adapters.kubernetes.cache) survive `410 Gone` and apiserver
restarts; here their changes only set triggers, and the rule loops do the rest:

- a node whose Ready condition changes: the node rules;
- a pod deleted (of the broker rules' watches): the broker and node rules;
- a cache synced, resynced (its view replaced after a 410) or failed: the rules that read it.

`Gate` wraps a rule's cycle and resume: a cycle whose caches are not synced (or whose watch failed
for good, e.g. 403) does not run, and the rule's health says why; resume waits for them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from agent.adapters.kubernetes import KubeError, NodeInfo
from agent.adapters.kubernetes.cache import CacheChange, ClusterCaches, WatchCache
from agent.core.rules import Rule, TargetKind
from agent.runtime.scheduler import Triggers

_VIEW_CHANGES = frozenset({"SYNCED", "RESYNC", "FAILED"})


def trigger_on_changes(caches: ClusterCaches, triggers: Triggers, rules: Callable[[], Iterable[Rule]]) -> None:
    """Subscribe the triggers to the caches' changes (see the module docstring)."""

    def on_node(change: CacheChange[NodeInfo]) -> None:
        old, new = change.old, change.new
        if (old.ready if old else None) != (new.ready if new else None):
            triggers.trigger_kind(TargetKind.NODE)

    def on_pod(change: CacheChange[Any]) -> None:
        if change.type == "DELETED":
            triggers.trigger_kind(TargetKind.BROKER)
            triggers.trigger_kind(TargetKind.NODE)

    def on_view(cache: WatchCache[Any]) -> Callable[[CacheChange[Any]], None]:
        def changed(change: CacheChange[Any]) -> None:
            if change.type in _VIEW_CHANGES:  # the rules of now: AutopilotRules come and go
                triggers.trigger([rule.name for rule in rules() if cache in caches.needed_by(rule)])

        return changed

    def subscribe(cache: WatchCache[Any]) -> None:
        if cache.kind == "pods":
            cache.subscribe(on_pod)
        if cache.kind == "nodes":
            cache.subscribe(on_node)
        cache.subscribe(on_view(cache))

    for cache in caches.caches():
        subscribe(cache)
    caches.on_added(subscribe)


@dataclass(frozen=True, kw_only=True)
class Gate:
    """A rule's cycle and resume, held until the caches the rule reads are synced."""

    caches: ClusterCaches
    cycle: Callable[[Rule], Awaitable[str]]
    resume: Callable[[Rule], Awaitable[None]]

    async def gated_cycle(self, rule: Rule) -> str:
        """The cycle's health, or why it did not run (a cache not synced, or failed) without running it."""
        problem = self.caches.problem_for(rule)
        if problem is not None:
            return problem
        return await self.cycle(rule)

    async def gated_resume(self, rule: Rule) -> None:
        """Resume once the rule's caches are synced. With a watch failed for good there is nothing to
        resume on: the rule's cycles then say why (`gated_cycle`), and each sweep tries again."""
        for cache in self.caches.needed_by(rule):
            with contextlib.suppress(KubeError):
                await cache.wait_synced()
        if self.caches.problem_for(rule) is None:
            await self.resume(rule)
