"""The facts a guardrail policy admits actions on, shared by every rule's cycle.

Why it exists: a policy's limits (actions per hour, actions in flight, cordoned nodes) count across
rules, so each cycle must see what the others started, including starts not yet stored. The facts are:
- the durable history: the recent action starts and in-flight records of every rule (one list of
  AutopilotRuleObjects, at most once a second, shared by the rules' cycles);
- what this agent admitted since, from memory, until the durable history shows it;
- the actions running now, derived each time from the runner's tasks, the stored in-flight records
  and the admissions whose cycle is still running (an admission counts only while the cycle task
  that made it is alive, so an exception or a cancellation between admission and start cannot leave
  it counted forever; nothing is kept as a counter or set that could drift or leak);
- before a node action, the cordoned nodes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Set
from dataclasses import dataclass, field
from typing import Protocol

from agent.adapters.kubernetes.statuscodec import ActionHistory
from agent.core.engine import PlannedAction
from agent.core.policy import ActionStart, AdmissionFacts, Policy
from agent.core.rules import Rule, TargetKind

HISTORY_SHARING_SECONDS = 1.0


class HistorySource(Protocol):
    async def action_history(self) -> ActionHistory: ...


ActionKey = tuple[str, str]


@dataclass
class AdmissionLedger:
    policy: Policy
    history_source: HistorySource
    _admitted: dict[ActionKey, ActionStart] = field(default_factory=dict)
    """Actions admitted by a cycle and not yet seen in the durable history."""
    _starting: dict[ActionKey, asyncio.Task[object] | None] = field(default_factory=dict)
    """Actions admitted by a cycle whose action task is not created yet, with the cycle's own task:
    they count as in flight only while that cycle task has not finished."""
    _history: tuple[float, ActionHistory] | None = None
    _history_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def facts(
        self,
        rule: Rule,
        now: float,
        *,
        running: Callable[[], Set[ActionKey]],
        cordoned_nodes: Callable[[], Awaitable[frozenset[str]]],
    ) -> AdmissionFacts:
        history = ActionHistory()
        if self.policy.history_seconds or self.policy.max_concurrent_actions is not None:
            history = await self._durable_history(now)
        cordoned: frozenset[str] = frozenset()
        if rule.target is TargetKind.NODE and self.policy.max_cordoned_nodes is not None:
            cordoned = await cordoned_nodes()
        # No await from here on: the in-memory part must be current when the cycle uses it.
        latest: dict[ActionKey, float] = {}
        for start in history.starts:
            key = (start.rule, start.object)
            latest[key] = max(start.at, latest.get(key, start.at))
        horizon = now - self.policy.history_seconds - 60
        for key, start in list(self._admitted.items()):
            if latest.get(key, float("-inf")) >= start.at or start.at < horizon:
                del self._admitted[key]  # the durable history has it, or it no longer counts
        for key, owner in list(self._starting.items()):
            if owner is None or owner.done():
                del self._starting[key]  # the cycle that admitted it ended without settling it
        in_flight = set(running()) | set(self._starting) | set(history.in_flight)
        return AdmissionFacts(
            starts=(*history.starts, *self._admitted.values()), in_flight=len(in_flight), cordoned_nodes=cordoned
        )

    def admitted(self, planned: PlannedAction, *, at: float) -> None:
        """A cycle admitted `planned` (call before the cycle's next await: the other rules must count it)."""
        key = (planned.rule, planned.object)
        self._admitted[key] = ActionStart(rule=planned.rule, object=planned.object, action=planned.action, at=at)
        self._starting[key] = asyncio.current_task()

    def settled(self, planned: PlannedAction, *, started: bool) -> None:
        """The admitted action's task was created (`started`), or it will not run (a write conflict)."""
        key = (planned.rule, planned.object)
        self._starting.pop(key, None)
        if not started:
            self._admitted.pop(key, None)

    def not_acted(self, planned: PlannedAction) -> None:
        """The admitted action ended without acting (held or declined): it is not a start, and uses up
        no rate limit (the runner stores no start for it either)."""
        key = (planned.rule, planned.object)
        admitted = self._admitted.get(key)
        if admitted is not None and admitted.at <= planned.at:
            del self._admitted[key]

    async def _durable_history(self, now: float) -> ActionHistory:
        async with self._history_lock:
            if self._history is None or now - self._history[0] >= HISTORY_SHARING_SECONDS:
                self._history = (now, await self.history_source.action_history())
            return self._history[1]
