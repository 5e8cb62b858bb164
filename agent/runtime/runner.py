"""Runs planned actions: start, execute, finish in one status write, and resume after a restart.

Why it exists: an action outlives the cycle that planned it, and must never run twice for one cause.
So a start is recorded before anything is applied: ActiveActionsInProgress together with an in-flight
record of the exact plan, in one write that fails if another writer moved the state first. Then the
executor runs (plan, apply, verify) and the outcome is stored in one write: the new state, the last
action and the cleared in-flight record together, so no error between two writes can lose a start.

A restarted agent finds the in-flight record (`resume`) and runs the same plan again; executors are
idempotent, so it sees its own change already applied and only verifies. The scheduler calls `resume`
again periodically (a sweep), so a record whose task died in this process (a failed write after the
start) is resumed without a restart. An ActiveActionsPending with no in-flight record and no task (the
start write failed) goes back to Triggered, so the next cycle plans and admits it again.

`stuck()` lists the actions seen in flight with no task of this process for longer than
STUCK_AFTER_SECONDS (one the sweep cannot resume), or Pending that long: the health endpoints show them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import structlog

from agent.actions.base import Executor, Outcome, OutcomeKind, collecting_mutations
from agent.adapters.clock import Clock
from agent.adapters.errors import StateConflictError
from agent.adapters.kubernetes.statuscodec import ActionHistory, InFlight, LastAction, StoredStatus
from agent.core.catalog import Catalog, Declined
from agent.core.engine import PlannedAction, advance
from agent.core.inflight import decode_in_flight, encode_in_flight
from agent.core.matching import TargetObject
from agent.core.rules import Rule
from agent.core.states import ActionFinished, ActionStarted, ObjectState, PlanOutcome, RuleState, StartLost
from agent.runtime.admission import AdmissionLedger
from agent.runtime.approvals import ApprovalFlow
from agent.runtime.recorder import Recorder

log = structlog.get_logger("kafka-autopilot")

ActionKey = tuple[str, str]
"""(rule, object key)"""


class StateStore(Protocol):
    """agent.adapters.kubernetes.statestore.StateStore: durable per-(rule, object) state in the Kubernetes API."""

    async def load(self, rule: str) -> dict[str, ObjectState]: ...

    async def status(self, rule: str, object_key: str) -> StoredStatus: ...

    async def save(self, *, rule: str, object_key: str, object_kind: str, state: ObjectState) -> None: ...

    async def record_in_flight(
        self,
        *,
        rule: str,
        object_key: str,
        object_kind: str,
        action: str,
        requested_at: float,
        detail: Mapping[str, str] | None = None,
        state: ObjectState | None = None,
    ) -> InFlight: ...

    async def in_flight(self, rule: str, object_key: str) -> InFlight | None: ...

    async def action_history(self) -> ActionHistory: ...

    async def clear_in_flight(
        self,
        *,
        rule: str,
        object_key: str,
        object_kind: str,
        state: ObjectState | None = None,
        last_action: LastAction | None = None,
    ) -> None: ...


IN_FLIGHT_STATES = (RuleState.ACTIVE_ACTIONS_PENDING, RuleState.ACTIVE_ACTIONS_IN_PROGRESS)

STUCK_AFTER_SECONDS = 300.0
"""An action in flight with no task of this process (or Pending) for longer than this is reported stuck."""


@dataclass(frozen=True, kw_only=True)
class StuckAction:
    rule: str
    object: str
    state: str
    since: float
    why: str


@runtime_checkable
class UndoesOnRecovery(Protocol):
    """An executor that leaves marks on objects (the node remediation's cordon) and takes them back
    once their cause is gone; the runner asks it every cycle of its rules."""

    async def release_recovered(
        self, *, rule: Rule, params: object, skip: Collection[str] = ()
    ) -> list[tuple[str, Outcome]]: ...


@dataclass
class ActionRunner:
    store: StateStore
    recorder: Recorder
    clock: Clock
    catalog: Catalog
    executors: Mapping[str, Executor]
    dry_run_executors: Mapping[str, Executor] = field(default_factory=dict)
    """The executors again, with the dry-run applier: for rules with `enforcement: dryRun` (if none, held)."""
    approvals: ApprovalFlow | None = None
    admission: AdmissionLedger | None = None
    """With a policy: told when an admitted action ended without acting, so it counts as no start."""
    running: dict[ActionKey, asyncio.Task[None]] = field(default_factory=dict)
    _unowned: dict[ActionKey, StuckAction] = field(default_factory=dict)
    """In-flight states the last sweep found with no task of this process, and since when."""

    def in_flight(self) -> set[ActionKey]:
        return {key for key, task in self.running.items() if not task.done()}

    def executor_for(self, rule: Rule, action: str) -> Executor | None:
        """A rule with `enforcement: dryRun` only ever gets the executors built on the dry-run applier."""
        return (self.dry_run_executors if rule.dry_run else self.executors).get(action)

    def start(self, rule: Rule, planned: PlannedAction, target: TargetObject, *, resumed: bool = False) -> None:
        key = (rule.name, planned.object)
        if key in self.in_flight():
            return
        self.running[key] = asyncio.create_task(
            self.execute(rule, planned, target, resumed=resumed), name=f"action:{key}"
        )

    async def release_recovered(self, rule: Rule, objects: Mapping[str, TargetObject]) -> None:
        """Let the rule's executors undo their own marks where the cause has gone (never on an object
        an action of the rule is running on); each undo is recorded as an action outcome."""
        busy = {key for name, key in self.in_flight() if name == rule.name}
        for action in rule.actions:
            executor = self.executor_for(rule, action.name)
            if not isinstance(executor, UndoesOnRecovery):
                continue
            for key, outcome in await executor.release_recovered(rule=rule, params=action.params, skip=busy):
                planned = PlannedAction(
                    rule=rule.name,
                    object=key,
                    action=action.name,
                    before="recovered, still marked by the agent",
                    after="the agent's own marks undone",
                    at=self.clock.now(),
                )
                log.info("undid the agent's own marks", rule=rule.name, object=key, outcome=outcome.kind.value)
                target = objects.get(key) or TargetObject(kind=rule.target, name=key)
                await self.recorder.action_finished(rule, planned, target, outcome)

    def stuck(self) -> list[StuckAction]:
        """Actions in flight with no task here (or Pending) for longer than STUCK_AFTER_SECONDS."""
        now = self.clock.now()
        running = self.in_flight()
        return [
            found
            for key, found in sorted(self._unowned.items())
            if now - found.since > STUCK_AFTER_SECONDS
            and (key not in running or found.state == RuleState.ACTIVE_ACTIONS_PENDING.value)
        ]

    def cancel_all(self) -> None:
        """Cancel every action in flight, synchronously (losing leadership)."""
        for task in self.running.values():
            task.cancel()

    async def execute(self, rule: Rule, planned: PlannedAction, target: TargetObject, *, resumed: bool = False) -> None:
        """Run one action; an error here (a failed write) is logged, and the sweep picks the object up again."""
        try:
            await self._execute(rule, planned, target, resumed=resumed)
        except Exception as error:
            log.warning(
                "action stopped by an error; the next sweep resumes it",
                rule=rule.name,
                object=planned.object,
                action=planned.action,
                error=f"{type(error).__name__}: {error}",
            )

    async def _execute(self, rule: Rule, planned: PlannedAction, target: TargetObject, *, resumed: bool) -> None:
        state = (await self.store.status(rule.name, planned.object)).state or ObjectState()
        started_at = self.clock.now()
        if not resumed:
            started = advance(rule=rule, object_key=target.key, state=state, event=ActionStarted(), now=started_at)
            try:
                await self.store.record_in_flight(
                    rule=rule.name,
                    object_key=planned.object,
                    object_kind=rule.target.value,
                    action=planned.action,
                    requested_at=started_at,
                    detail=encode_in_flight(planned),
                    state=started.state,
                )
            except StateConflictError as error:
                log.info(
                    "another writer owns this action; not acting", rule=rule.name, object=planned.object, why=str(error)
                )
                return
            state = started.state
            await self.recorder.transitions(rule, target, started.transitions)
        executor = self.executor_for(rule, planned.action)
        if executor is None:
            outcome = Outcome(kind=OutcomeKind.HELD, reason=f"no executor for {planned.action} in this agent yet")
        else:
            with collecting_mutations() as applied:
                try:
                    outcome = await executor.run(
                        planned=planned, target=target, params=params_of(rule, planned.action), rule=rule
                    )
                except Exception as error:  # a failed call is an outcome, not a crash; what it changed is kept
                    outcome = Outcome(
                        kind=OutcomeKind.FAILED, reason=f"{type(error).__name__}: {error}", mutations=tuple(applied)
                    )
        await self.finish(rule, planned, target, state, outcome, started_at=started_at)

    async def finish(
        self,
        rule: Rule,
        planned: PlannedAction,
        target: TargetObject,
        state: ObjectState,
        outcome: Outcome,
        *,
        started_at: float,
    ) -> None:
        """Store the outcome (state, last action, in-flight record cleared) in one write, then record it."""
        now = self.clock.now()
        if outcome.kind is OutcomeKind.DECLINED:
            event: PlanOutcome | ActionFinished = PlanOutcome(declined=Declined(code="Refused", message=outcome.reason))
        else:
            event = ActionFinished(succeeded=outcome.succeeded, reason=outcome.reason)
        result = advance(rule=rule, object_key=target.key, state=state, event=event, now=now)
        await self.store.clear_in_flight(
            rule=rule.name,
            object_key=planned.object,
            object_kind=rule.target.value,
            state=result.state,
            last_action=LastAction(
                name=planned.action,
                before=planned.before,
                after=planned.after,
                started_at=started_at,
                finished_at=now,
                outcome=outcome.kind.value,
            ),
        )
        if self.admission is not None and outcome.kind in (OutcomeKind.HELD, OutcomeKind.DECLINED):
            self.admission.not_acted(planned)
        await self.recorder.transitions(rule, target, result.transitions)
        await self.recorder.action_finished(rule, planned, target, outcome)
        if self.approvals is not None:
            await self.approvals.action_finished(rule, planned=planned, target=target, state=state, outcome=outcome)

    async def resume(
        self, rule: Rule, *, states: Mapping[str, ObjectState], objects: Mapping[str, TargetObject]
    ) -> None:
        """Objects left mid-action with no task of this process (a previous run, or a task that died):
        resume their recorded plan (verify, never re-plan); a Pending whose start was never recorded goes
        back to Triggered for the next cycle. Also notes what is in flight unowned, for `stuck()`."""
        running = self.in_flight()
        now = self.clock.now()
        for pair in [pair for pair in self._unowned if pair[0] == rule.name]:
            seen = states.get(pair[1])
            if seen is None or seen.state not in IN_FLIGHT_STATES:
                del self._unowned[pair]
        for key, state in states.items():
            target = objects.get(key)
            if state.state not in IN_FLIGHT_STATES:
                continue
            pending = state.state is RuleState.ACTIVE_ACTIONS_PENDING
            if (rule.name, key) in running and not pending:
                self._unowned.pop((rule.name, key), None)
                continue
            since = state.since if state.since is not None else now
            self._unowned.setdefault(
                (rule.name, key),
                StuckAction(
                    rule=rule.name,
                    object=key,
                    state=state.state.value,
                    since=since,
                    why="Pending without progress" if pending else "in flight with no running task",
                ),
            )
            if (rule.name, key) in running or target is None:
                continue
            in_flight = await self.store.in_flight(rule.name, key)
            if in_flight is None and pending:
                await self._start_lost(rule, key, target, state)
                continue
            detail = None if in_flight is None else {"action": in_flight.action, **in_flight.detail}
            planned = decode_in_flight(detail, rule=rule, target=target, now=now, catalog=self.catalog)
            if planned is None:
                continue
            log.info("resuming action", rule=rule.name, object=key, action=planned.action)
            self.start(rule, planned, target, resumed=state.state is RuleState.ACTIVE_ACTIONS_IN_PROGRESS)

    async def _start_lost(self, rule: Rule, key: str, target: TargetObject, state: ObjectState) -> None:
        lost = advance(
            rule=rule,
            object_key=key,
            state=state,
            event=StartLost(reason="no in-flight record and no running task"),
            now=self.clock.now(),
        )
        try:
            await self.store.save(rule=rule.name, object_key=key, object_kind=rule.target.value, state=lost.state)
        except StateConflictError as error:
            log.info("state moved by another writer; not replanning", rule=rule.name, object=key, why=str(error))
            return
        self._unowned.pop((rule.name, key), None)
        log.warning("action start lost; planned again at the next cycle", rule=rule.name, object=key)
        await self.recorder.transitions(rule, target, lost.transitions)


def params_of(rule: Rule, action: str) -> Any:
    return next(candidate.params for candidate in rule.actions if candidate.name == action)
