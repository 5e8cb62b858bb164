"""When each rule evaluates: one loop per rule, on its pollInterval, or at once when something asks.

A cycle starts every pollInterval (counted from the previous cycle's start; a cycle longer than that is
followed at once by the next), or as soon as a trigger fires.

Why it exists: rules run independently (one slow or failing rule never delays another), and the
agent must react in seconds, not at the next poll, when a watch sees a node go NotReady or an
Alertmanager webhook fires. The scheduler owns the loops, their triggers and each rule's health;
what a cycle does is given to it (`cycle`, `resume`), so it knows nothing of Kubernetes or Kafka.

A loop first resumes the rule's actions left in flight by a previous run (retrying, never giving up
the rule, while the durable state cannot be read), then evaluates forever, and every SWEEP_SECONDS
(measured on the Clock) resumes again whatever is in flight with no running task in this process
(a task that died on a failed write), so no action stays stranded until a restart. A cycle that raises costs
that cycle only: it is recorded, the rule's health says why, and the loop goes on.

The rules can change while the agent runs (AutopilotRules are live objects, agent.runtime.liverules):
`put` starts a new rule's loop, or replaces a changed rule's loop, and `remove` stops one. A loop is
only ever stopped between two cycles, never cancelled mid-cycle: the cycle it is in finishes (its states
written, its actions started), then the loop ends, and a replacing loop starts at once with a cycle of
the new version. Actions already running are separate tasks (agent.runtime.runner) and always run to
their end, with the version of the rule that planned them: cancelling one half-way would leave an
object half-changed. The durable states are keyed by rule name, so a changed rule goes on from its
objects' states, and a removed rule that comes back finds them again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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
        self._rules = {rule.name: rule for rule in rules}
        self._events = {rule.name: asyncio.Event() for rule in rules}

    def event(self, rule: str) -> asyncio.Event:
        return self._events[rule]

    def add(self, rule: Rule) -> None:
        """A new or changed rule; a changed one keeps its flag (a trigger pending for it stays pending)."""
        self._rules[rule.name] = rule
        self._events.setdefault(rule.name, asyncio.Event())

    def remove(self, name: str) -> None:
        self._rules.pop(name, None)
        self._events.pop(name, None)

    def trigger(self, names: Iterable[str] | None = None) -> list[str]:
        """Evaluate the named rules (all when None) now instead of at their next poll."""
        wanted = set(self._events) if names is None else set(names) & set(self._events)
        for name in wanted:
            self._events[name].set()
        return sorted(wanted)

    def trigger_kind(self, kind: TargetKind) -> None:
        self.trigger([rule.name for rule in self._rules.values() if rule.target is kind])


@dataclass(kw_only=True)
class _Loop:
    task: asyncio.Task[None]
    stopping: asyncio.Event
    wake: asyncio.Event
    """The rule's trigger: set to wake a loop that waits for its next poll, so it sees `stopping` at once."""

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()


@dataclass
class Scheduler:
    rules: Sequence[Rule]
    """The rules at start; `put` and `remove` change them (`current_rules()`)."""
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

    _rules: dict[str, Rule] = field(init=False)
    _not_run: dict[str, str] = field(init=False)
    _loops: dict[str, _Loop] = field(init=False, default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(init=False, default_factory=set)
    """Every loop task not finished yet, stopped ones included (they finish their cycle)."""
    _crashed: asyncio.Future[None] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.health.update(self.not_configured)
        self._rules = {rule.name: rule for rule in self.rules}
        self._not_run = dict(self.not_configured)

    def current_rules(self) -> list[Rule]:
        """The rules run now, by name."""
        return [self._rules[name] for name in sorted(self._rules)]

    def held_rules(self) -> list[str]:
        """The names of the rules known but not run here (`hold`, or not configured)."""
        return sorted(self._not_run)

    @property
    def running(self) -> bool:
        return self._crashed is not None

    async def run(self) -> None:
        """Run every rule until cancelled (or until a loop fails unexpectedly: that error is raised)."""
        self._crashed = asyncio.get_running_loop().create_future()
        self._rules_changed()
        for rule in self.current_rules():
            self._start(rule)
        try:
            await self._crashed
        finally:
            self._crashed = None
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def put(self, rule: Rule) -> None:
        """Run `rule` from now on: a new rule's loop starts; a changed rule's loop is replaced once its
        current cycle is over; the same rule again changes nothing."""
        if self._rules.get(rule.name) == rule:
            return
        self._rules[rule.name] = rule
        self._not_run.pop(rule.name, None)
        self.health.pop(rule.name, None)
        self.triggers.add(rule)
        self._rules_changed()
        if self.running:
            self._start(rule)

    def remove(self, name: str) -> None:
        """Stop the rule's loop after its current cycle; its actions in flight run to their end."""
        self._rules.pop(name, None)
        self._not_run.pop(name, None)
        self.health.pop(name, None)
        self.evaluated_once.discard(name)
        loop = self._loops.pop(name, None)
        if loop is not None:
            loop.stop()
        self.triggers.remove(name)
        self._rules_changed()

    def hold(self, name: str, why: str) -> None:
        """Not run by this agent, and not an error (a sidecar's scope, no storage API): its health says why."""
        self.remove(name)
        self._not_run[name] = why
        self.health[name] = why
        self._rules_changed()

    def _rules_changed(self) -> None:
        if self.running:
            self.telemetry.rules_loaded(self.current_rules(), not_configured=self._not_run)

    def _start(self, rule: Rule) -> None:
        previous = self._loops.get(rule.name)
        if previous is not None:
            previous.stop()
        stopping = asyncio.Event()
        task = asyncio.create_task(
            self._after(previous.task if previous else None, rule, stopping), name=f"rule:{rule.name}"
        )
        self._loops[rule.name] = _Loop(task=task, stopping=stopping, wake=self.triggers.event(rule.name))
        self._tasks.add(task)
        task.add_done_callback(self._loop_ended)

    async def _after(self, previous: asyncio.Task[None] | None, rule: Rule, stopping: asyncio.Event) -> None:
        """The loop of `rule`, once the loop it replaces has finished its cycle."""
        if previous is not None:
            await asyncio.wait([previous])
        if not stopping.is_set():
            await self.rule_loop(rule, stopping=stopping)

    def _loop_ended(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        if self._crashed is not None and not self._crashed.done():
            self._crashed.set_exception(task.exception() or RuntimeError("a rule loop failed"))

    async def rule_loop(self, rule: Rule, *, stopping: asyncio.Event | None = None) -> None:
        """Resume the rule's actions in flight, then one cycle per poll (or trigger) until `stopping` is set."""
        stopping = stopping or asyncio.Event()
        try:
            if await self._resumed(rule, stopping):
                await self._cycles(rule, stopping)
        finally:
            if rule.name not in self._rules and rule.name not in self._not_run:  # removed: its health goes too
                self.health.pop(rule.name, None)
                self.evaluated_once.discard(rule.name)

    async def _resumed(self, rule: Rule, stopping: asyncio.Event) -> bool:
        """Resume the rule's actions left in flight, retrying until it works (True) or the loop stops (a loop
        stopped while it waits to retry ends at once, so a replacing loop never waits for it)."""
        while not stopping.is_set():
            try:
                await self.resume(rule)
                return True
            except Exception as error:  # e.g. the state CRD is not served yet: retry, never give up the rule
                self.health[rule.name] = f"cannot read its durable state yet: {type(error).__name__}: {error}"
                log.warning("resume failed; retrying", rule=rule.name, error=str(error))
                await self.clock.wait(stopping, timeout=min(rule.poll_interval_seconds, RESUME_RETRY_SECONDS))
        return False

    async def _cycles(self, rule: Rule, stopping: asyncio.Event) -> None:
        trigger = self.triggers.event(rule.name)
        swept = self.clock.monotonic()
        while not stopping.is_set():
            if self.clock.monotonic() - swept >= self.sweep_seconds:
                swept = self.clock.monotonic()
                await self.sweep(rule)
            started = self.clock.monotonic()
            await self.cycle_safely(rule)
            if stopping.is_set():
                return
            trigger.clear()
            # pollInterval is from one cycle's start to the next one's, not a pause after each cycle
            elapsed = self.clock.monotonic() - started
            await self.clock.wait(trigger, timeout=max(0.0, rule.poll_interval_seconds - elapsed))

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
        waiting = [name for name in sorted(self._rules) if name not in self.evaluated_once]
        return f"first cycle pending for {', '.join(waiting)}" if waiting else None
