"""When each rule evaluates: one loop per rule, on its pollInterval, or at once when something asks.

Why it exists: rules run independently (one slow or failing rule never delays another), and the
agent must react in seconds, not at the next poll, when a watch sees a node go NotReady or an
Alertmanager webhook fires. The scheduler owns the loops, their triggers and each rule's health;
what a cycle does is given to it (`cycle`, `resume`), so it knows nothing of Kubernetes or Kafka.

A loop first resumes the rule's actions left in flight by a previous run (retrying, never giving up
the rule, while the durable state cannot be read), then evaluates forever, and every SWEEP_SECONDS
(measured on the Clock) resumes again whatever is in flight with no running task in this process
(a task that died on a failed write), so no action stays stranded until a restart. A cycle that raises costs
that cycle only: it is recorded, the rule's health says why, and the loop goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from agent.adapters.clock import Clock
from agent.core.rules import Rule, TargetKind
from agent.runtime.recorder import Recorder
from agent.runtime.telemetry import Telemetry

log = structlog.get_logger("kafka-autopilot")

RESUME_RETRY_SECONDS = 5.0
SWEEP_SECONDS = 60.0
"""How often each rule's loop resumes in-flight actions that have no running task (the sweep)."""


class Triggers:
    """One "evaluate now" flag per rule, set by watches, the webhook and approvals, read by the loops."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self._rules = tuple(rules)
        self._events = {rule.name: asyncio.Event() for rule in rules}

    def event(self, rule: str) -> asyncio.Event:
        return self._events[rule]

    def trigger(self, names: Iterable[str] | None = None) -> list[str]:
        """Evaluate the named rules (all when None) now instead of at their next poll."""
        wanted = set(self._events) if names is None else set(names) & set(self._events)
        for name in wanted:
            self._events[name].set()
        return sorted(wanted)

    def trigger_kind(self, kind: TargetKind) -> None:
        self.trigger([rule.name for rule in self._rules if rule.target is kind])


@dataclass
class Scheduler:
    rules: Sequence[Rule]
    cycle: Callable[[Rule], Awaitable[str]]
    """One cycle of a rule; returns its health: "ok", or what kept it from seeing its objects."""
    resume: Callable[[Rule], Awaitable[None]]
    clock: Clock
    recorder: Recorder
    telemetry: Telemetry
    triggers: Triggers
    not_configured: Mapping[str, str] = field(default_factory=dict)
    """Rules not run here, by name, with why (a sidecar's scope, no storage API): their health, not an error."""
    health: dict[str, str] = field(default_factory=dict)
    evaluated_once: set[str] = field(default_factory=set)
    sweep_seconds: float = SWEEP_SECONDS

    def __post_init__(self) -> None:
        self.health.update(self.not_configured)

    async def run(self) -> None:
        """Run every rule until cancelled."""
        self.telemetry.rules_loaded(self.rules, not_configured=self.not_configured)
        async with asyncio.TaskGroup() as group:
            for rule in self.rules:
                group.create_task(self.rule_loop(rule), name=f"rule:{rule.name}")

    async def rule_loop(self, rule: Rule) -> None:
        while True:
            try:
                await self.resume(rule)
                break
            except Exception as error:  # e.g. the state CRD is not served yet: retry, never give up the rule
                self.health[rule.name] = f"cannot read its durable state yet: {type(error).__name__}: {error}"
                log.warning("resume failed; retrying", rule=rule.name, error=str(error))
                await self.clock.sleep(min(rule.poll_interval_seconds, RESUME_RETRY_SECONDS))
        trigger = self.triggers.event(rule.name)
        swept = self.clock.monotonic()
        while True:
            if self.clock.monotonic() - swept >= self.sweep_seconds:
                swept = self.clock.monotonic()
                await self.sweep(rule)
            await self.cycle_safely(rule)
            trigger.clear()
            await self.clock.wait(trigger, timeout=rule.poll_interval_seconds)

    async def sweep(self, rule: Rule) -> None:
        """Resume the rule's in-flight actions that have no running task; a failure waits for the next sweep."""
        try:
            await self.resume(rule)
        except Exception as error:
            log.warning("sweep of in-flight actions failed", rule=rule.name, error=f"{type(error).__name__}: {error}")

    async def cycle_safely(self, rule: Rule) -> None:
        started = self.clock.monotonic()
        try:
            self.health[rule.name] = await self.cycle(rule)
        except Exception as error:  # one bad cycle must not stop the rule, nor the others
            self.health[rule.name] = f"{type(error).__name__}: {error}"
            self.recorder.cycle_error(rule, error)
        finally:
            healthy = 1.0 if self.health.get(rule.name) == "ok" else 0.0
            self.telemetry.set("kafka_autopilot_rule_healthy", healthy, rule=rule.name)
            self.evaluated_once.add(rule.name)
            elapsed = self.clock.monotonic() - started
            self.telemetry.observe("kafka_autopilot_loop_duration_seconds", elapsed, rule=rule.name)

    def readiness(self) -> str | None:
        waiting = [rule.name for rule in self.rules if rule.name not in self.evaluated_once]
        return f"first cycle pending for {', '.join(waiting)}" if waiting else None
