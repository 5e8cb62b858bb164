"""The running agent: one asyncio task per rule, evaluating on its pollInterval or at once when a watch
event or an Alertmanager webhook asks, and one task per action in flight.

A cycle of one rule:
1. inventory: the objects of the rule's target kind (PVCs, broker pods, nodes), fresh from the API;
2. samples: one Prometheus query per distinct expression (shared by rules evaluating in the same
   second), or, for `provider: kubernetes`, NodeReady / NodeLeaseAgeSeconds / NodeUnreachableSeconds
   computed from Nodes and Leases;
3. decide: agent.core.engine.run_cycle, pure, with the durable states loaded from the API;
4. record: every evaluation, transition and action as an audit record, a counter, and (for
   transitions and actions) a Kubernetes Event on the object and on the rule's state object;
5. persist the states that changed, then start executors for the planned actions.

With a guardrail policy (agent.core.policy), step 3 also gets the admission facts: the recent action
starts and in-flight records of every rule (one list of AutopilotRuleObjects, at most once a second,
shared by the rules' cycles, and only when the policy has limits that need it), the actions this agent
runs or has just admitted (from memory, until the durable history shows them), and, before a node
action, the cordoned nodes. Objects the policy's namespaces keep out are said so once.

A planned action runs as: persist ActiveActionsInProgress together with an in-flight record of the
exact plan, then executor (plan, apply, verify), then persist the outcome. A restarted agent finds
the in-flight record and resumes the same plan: the executor sees its own change already applied,
so it verifies instead of acting twice.

Query failures, a missing metric, or an unreachable apiserver cost that cycle only: they are
recorded (metric, audit record, rule health) and the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import structlog

from agent.actions.base import Executor, Outcome, OutcomeKind
from agent.adapters.clock import Clock
from agent.adapters.errors import StateConflictError
from agent.adapters.kubernetes.statuscodec import ActionHistory, InFlight, LastAction, StoredStatus
from agent.adapters.storagepools import StoragePoolApi
from agent.audit.trail import (
    AuditRecord,
    AuditTrail,
    action_record,
    cycle_records,
    excluded_record,
    iso_time,
    transition_record,
)
from agent.core.engine import CycleOutcome, PlannedAction, distinct_queries, plan_actions, run_cycle
from agent.core.matching import TargetObject, broker_object, node_object, pool_object, pvc_object
from agent.core.planners import Declined, PoolExpandPlan, ResizePlan, ScaleType
from agent.core.policy import ActionStart, AdmissionFacts, Policy
from agent.core.rules import ConditionProvider, Rule, TargetKind
from agent.core.samples import Sample
from agent.core.states import (
    ActionFinished,
    ActionStarted,
    ObjectState,
    RuleState,
    Step,
    Transition,
    Verdict,
    apply_plan_outcome,
    decide,
)
from agent.runtime.approvals import ApprovalFlow
from agent.runtime.telemetry import Telemetry

log = structlog.get_logger("kafka-autopilot")


class QueryClient(Protocol):
    async def query(self, expr: str, *, at: float | None = None) -> Sequence[Sample]: ...


class Inventory(Protocol):
    """The reads the loop needs from the Kubernetes adapter."""

    async def list_pvcs(self) -> Sequence[Any]: ...

    async def namespace_labels(self) -> Mapping[str, Mapping[str, str]]: ...

    async def list_nodes(self) -> Sequence[Any]: ...

    async def node_lease_renew_times(self) -> Mapping[str, float]: ...

    async def list_pods(self, *, namespace: str | None = None, label_selector: str | None = None) -> Sequence[Any]: ...


class StateStore(Protocol):
    """agent.adapters.kubernetes.statestore.StateStore: durable per-(rule, object) state in the Kubernetes API."""

    async def load(self, rule: str) -> dict[str, ObjectState]: ...

    async def status(self, rule: str, object_key: str) -> StoredStatus: ...

    async def save(
        self,
        *,
        rule: str,
        object_key: str,
        object_kind: str,
        state: ObjectState,
        last_action: LastAction | None = None,
    ) -> None: ...

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
        self, *, rule: str, object_key: str, object_kind: str, state: ObjectState | None = None
    ) -> None: ...


class EventSink(Protocol):
    async def emit(self, *, rule: str, target: TargetObject, reason: str, message: str, warning: bool) -> None: ...


@dataclass
class Agent:
    rules: Sequence[Rule]
    inventory: Inventory
    prometheus: QueryClient
    store: StateStore
    executors: Mapping[str, Executor]
    clock: Clock
    trail: AuditTrail
    telemetry: Telemetry
    events: EventSink | None = None
    dry_run: bool = False
    approvals: ApprovalFlow | None = None
    pools: StoragePoolApi | None = None
    """The storage API (kafka-autopilot run --storage-api); StoragePool rules need it."""
    triggers: dict[str, asyncio.Event] = field(default_factory=dict)
    evaluated_once: set[str] = field(default_factory=set)
    rule_health: dict[str, str] = field(default_factory=dict)
    running_actions: dict[tuple[str, str], asyncio.Task[None]] = field(default_factory=dict)
    _query_cache: dict[str, tuple[float, Sequence[Sample]]] = field(default_factory=dict)
    policy: Policy | None = None
    dry_run_actions: frozenset[str] = frozenset()
    """Actions whose executor got the dry-run applier (the policy's dryRunActions), for the records."""
    dry_run_executors: Mapping[str, Executor] = field(default_factory=dict)
    """The executors again, with the dry-run applier: for rules with `enforcement: dryRun` (if none, held)."""
    _admitted: dict[tuple[str, str], ActionStart] = field(default_factory=dict)
    """Actions admitted by a cycle and not yet seen in the durable history."""
    _starting: set[tuple[str, str]] = field(default_factory=set)
    """Actions admitted by a cycle whose task is not created yet (they count as in flight)."""
    _history: tuple[float, ActionHistory] | None = None
    _history_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _excluded_said: set[tuple[str, str]] = field(default_factory=set)

    # --- the loops ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run every rule until cancelled."""
        for rule in self.rules:
            self.triggers[rule.name] = asyncio.Event()
        self.telemetry.set("kafka_autopilot_rules_loaded", len(self.rules))
        async with asyncio.TaskGroup() as group:
            for rule in self.rules:
                group.create_task(self.rule_loop(rule), name=f"rule:{rule.name}")

    async def rule_loop(self, rule: Rule) -> None:
        trigger = self.triggers[rule.name]
        while True:
            try:
                await self.resume_in_flight(rule)
                break
            except Exception as error:  # e.g. the state CRD is not served yet: retry, never give up the rule
                self.rule_health[rule.name] = f"cannot read its durable state yet: {type(error).__name__}: {error}"
                log.warning("resume failed; retrying", rule=rule.name, error=str(error))
                await self.clock.sleep(min(rule.poll_interval_seconds, 5))
        while True:
            await self.cycle_safely(rule)
            trigger.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(trigger.wait(), timeout=rule.poll_interval_seconds)

    def trigger(self, names: Iterable[str] | None = None) -> list[str]:
        """Evaluate the named rules (all when None) now instead of at their next poll."""
        wanted = set(self.triggers) if names is None else set(names) & set(self.triggers)
        for name in wanted:
            self.triggers[name].set()
        return sorted(wanted)

    def trigger_kind(self, kind: TargetKind) -> None:
        self.trigger([rule.name for rule in self.rules if rule.target is kind])

    def readiness(self) -> str | None:
        waiting = [rule.name for rule in self.rules if rule.name not in self.evaluated_once]
        return f"first cycle pending for {', '.join(waiting)}" if waiting else None

    async def cycle_safely(self, rule: Rule) -> None:
        started = self.clock.now()
        try:
            self.rule_health[rule.name] = await self.cycle(rule)
            self.telemetry.set_labeled(
                "kafka_autopilot_rule_healthy", 1.0 if self.rule_health[rule.name] == "ok" else 0.0, rule=rule.name
            )
        except Exception as error:  # one bad cycle must not stop the rule, nor the others
            self.rule_health[rule.name] = f"{type(error).__name__}: {error}"
            self.telemetry.set_labeled("kafka_autopilot_rule_healthy", 0.0, rule=rule.name)
            self.telemetry.inc("kafka_autopilot_query_errors_total", rule=rule.name)
            log.warning("cycle failed", rule=rule.name, error=str(error))
            self.trail.write(
                {
                    "time": None,
                    "event": "cycle-error",
                    "rule": rule.name,
                    "object": None,
                    "outcome": "error",
                    "reason": f"{type(error).__name__}: {error}",
                    "dry_run": self.dry_run,
                }
            )
        finally:
            self.evaluated_once.add(rule.name)
            self.telemetry.observe("kafka_autopilot_loop_duration_seconds", self.clock.now() - started, rule=rule.name)

    # --- one cycle ---------------------------------------------------------------------------------

    async def cycle(self, rule: Rule) -> str:
        """One cycle; returns the rule's health: "ok", or what kept it from seeing its objects."""
        now = self.clock.now()
        objects = await self.objects_for(rule.target)
        vectors = await self.vectors_for(rule, objects, now)
        states = await self.store.load(rule.name)
        facts = await self.admission_facts(rule, now) if self.policy is not None else None
        outcome = run_cycle(
            rule=rule, objects=objects, vectors=vectors, states=states, now=now, policy=self.policy, facts=facts
        )
        for planned in outcome.planned:  # before the next await: the other rules' cycles must count them
            self._admitted[(rule.name, planned.object)] = ActionStart(
                rule=rule.name, object=planned.object, action=planned.action, at=now
            )
            self._starting.add((rule.name, planned.object))
        await self.record_cycle(rule, outcome, objects)
        conflicted: set[str] = set()
        for key, state in outcome.states.items():
            if state == states.get(key):
                continue
            try:
                await self.store.save(rule=rule.name, object_key=key, object_kind=rule.target.value, state=state)
            except StateConflictError as error:
                conflicted.add(key)
                log.info(
                    "state moved by another writer; not acting this cycle", rule=rule.name, object=key, why=str(error)
                )
        by_key = {target.key: target for target in objects}
        for planned in outcome.planned:
            if planned.object not in conflicted:
                self.start_action(rule, planned, by_key[planned.object])
            else:
                self._admitted.pop((rule.name, planned.object), None)
            self._starting.discard((rule.name, planned.object))
        if self.approvals is not None:
            await self.approvals.after_cycle(self, rule, outcome, before=states, objects=objects, conflicted=conflicted)
        return rule_health(outcome)

    async def admission_facts(self, rule: Rule, now: float) -> AdmissionFacts:
        """What the policy's admission needs: durable history, actions in flight, cordoned nodes."""
        assert self.policy is not None
        policy = self.policy
        history = ActionHistory()
        if policy.history_seconds or policy.max_concurrent_actions is not None:
            history = await self.action_history(now)
        cordoned: frozenset[str] = frozenset()
        if rule.target is TargetKind.NODE and policy.max_cordoned_nodes is not None:
            cordoned = frozenset(node.name for node in await self.inventory.list_nodes() if node.unschedulable)
        # No await from here on: the in-memory part must be current when run_cycle uses it.
        latest: dict[tuple[str, str], float] = {}
        for start in history.starts:
            key = (start.rule, start.object)
            latest[key] = max(start.at, latest.get(key, start.at))
        horizon = now - policy.history_seconds - 60
        for key, start in list(self._admitted.items()):
            if latest.get(key, float("-inf")) >= start.at or start.at < horizon:
                del self._admitted[key]  # the durable history has it, or it no longer counts
        in_flight = (
            {key for key, task in self.running_actions.items() if not task.done()}
            | self._starting
            | set(history.in_flight)
        )
        return AdmissionFacts(
            starts=(*history.starts, *self._admitted.values()), in_flight=len(in_flight), cordoned_nodes=cordoned
        )

    async def action_history(self, now: float) -> ActionHistory:
        """Every rule's action history, listed at most once a second and shared by the rules' cycles;
        what this agent admitted since is added from memory (`_admitted`, `_starting`)."""
        async with self._history_lock:
            if self._history is None or now - self._history[0] >= 1.0:
                self._history = (now, await self.store.action_history())
            return self._history[1]

    async def objects_for(self, kind: TargetKind) -> list[TargetObject]:
        if kind is TargetKind.PVC:
            namespaces = await self.inventory.namespace_labels()
            return [
                replace(
                    pvc_object(
                        namespace=claim.namespace,
                        name=claim.name,
                        labels=claim.labels,
                        capacity_bytes=claim.capacity_bytes or claim.requested_bytes,
                    ),
                    namespace_labels=namespaces.get(claim.namespace, {}),
                )
                for claim in await self.inventory.list_pvcs()
            ]
        if kind is TargetKind.NODE:
            return [node_object(name=node.name, labels=node.labels) for node in await self.inventory.list_nodes()]
        if kind is TargetKind.BROKER:
            namespaces = await self.inventory.namespace_labels()
            brokers = []
            for pod in await self.inventory.list_pods():
                ordinal = pod.name.rpartition("-")[2]
                if ordinal.isdigit():
                    brokers.append(
                        replace(
                            broker_object(
                                namespace=pod.namespace, pod=pod.name, broker_id=int(ordinal), labels=pod.labels
                            ),
                            namespace_labels=namespaces.get(pod.namespace, {}),
                        )
                    )
            return brokers
        if kind is TargetKind.STORAGE_POOL:
            if self.pools is None:
                raise StorageApiNotConfiguredError(
                    "StoragePool rules need the storage API: start the agent with --storage-api URL"
                    " (an OpenStorage SDK REST gateway)"
                )
            return [
                pool_object(node=pool.node, pool=pool.name, labels=pool.labels, shape=pool.shape)
                for pool in await self.pools.list_pools()
            ]
        raise NotImplementedError(f"no inventory for target kind {kind}")

    async def vectors_for(self, rule: Rule, objects: Sequence[TargetObject], now: float) -> dict[str, Sequence[Sample]]:
        if rule.conditions.provider is ConditionProvider.KUBERNETES:
            return await self.node_condition_vectors(now)
        vectors: dict[str, Sequence[Sample]] = {}
        for query in distinct_queries([rule]):
            cached = self._query_cache.get(query)
            if cached is not None and now - cached[0] < 1.0:
                vectors[query] = cached[1]
                continue
            vector = await self.prometheus.query(query, at=now)
            self._query_cache[query] = (now, vector)
            vectors[query] = vector
        return vectors

    async def node_condition_vectors(self, now: float) -> dict[str, Sequence[Sample]]:
        nodes = await self.inventory.list_nodes()
        leases = await self.inventory.node_lease_renew_times()
        ready: list[Sample] = []
        lease_age: list[Sample] = []
        unreachable: list[Sample] = []
        for node in nodes:
            labels = {"node": node.name}
            ready.append(Sample(labels=labels, value=1.0 if node.ready == "True" else 0.0))
            renewed = leases.get(node.name)
            if renewed is not None:
                lease_age.append(Sample(labels=labels, value=max(0.0, now - renewed)))
            since = node.ready_since if node.ready != "True" else None
            unreachable.append(Sample(labels=labels, value=max(0.0, now - since) if since is not None else 0.0))
        return {"NodeReady": ready, "NodeLeaseAgeSeconds": lease_age, "NodeUnreachableSeconds": unreachable}

    async def record_cycle(self, rule: Rule, outcome: CycleOutcome, objects: Sequence[TargetObject]) -> None:
        for record in cycle_records(outcome, dry_run=self.records_dry_run(rule)):
            self.trail.write(record)
        for evaluation in outcome.evaluations:
            self.telemetry.inc("kafka_autopilot_evaluations_total", rule=rule.name, verdict=evaluation.verdict.value)
        if outcome.unmatched_series:
            self.telemetry.inc("kafka_autopilot_unmatched_series_total", outcome.unmatched_series, rule=rule.name)
        by_key = {target.key: target for target in objects}
        for transition in outcome.transitions:
            await self.note_transition(rule, transition, by_key.get(transition.object))
        for declined in outcome.declined:
            outcome_label = "declined-at-maxsize" if declined.code == "AtMaxSize" else "declined"
            self.telemetry.inc(
                "kafka_autopilot_actions_total", rule=rule.name, action=declined.action, outcome=outcome_label
            )
            target = by_key.get(declined.object)
            if target is not None and self.events is not None:
                await self.events.emit(
                    rule=rule.name,
                    target=target,
                    reason="ActionDeclined",
                    message=f"{declined.action} declined: {declined.code}: {declined.reason}",
                    warning=True,
                )
        for planned in outcome.planned:
            self.telemetry.inc(
                "kafka_autopilot_actions_total", rule=rule.name, action=planned.action, outcome="planned"
            )
        entered = {transition.object for transition in outcome.transitions}
        for held in outcome.held:
            self.telemetry.inc("kafka_autopilot_actions_total", rule=rule.name, action=held.action, outcome="throttled")
            target = by_key.get(held.object)
            if held.object not in entered and target is not None and self.events is not None:
                await self.events.emit(  # still held, for another reason (entering the state has its own Event)
                    rule=rule.name,
                    target=target,
                    reason=RuleState.ACTIONS_THROTTLED.value,
                    message=f"{held.action} still held: {held.code}: {held.reason}",
                    warning=False,
                )
        for key, why in outcome.excluded.items():
            if (rule.name, key) not in self._excluded_said:
                self._excluded_said.add((rule.name, key))
                log.info("object not acted on: outside the policy's namespaces", rule=rule.name, object=key, why=why)
                self.trail.write(excluded_record(rule=rule.name, object_key=key, reason=why, at=self.clock.now()))

    async def note_transition(self, rule: Rule, transition: Transition, target: TargetObject | None) -> None:
        self.telemetry.inc(
            "kafka_autopilot_transitions_total",
            rule=rule.name,
            **{"from": transition.from_state.value, "to": transition.to_state.value},
        )
        if target is not None and self.events is not None and transition.from_state is not RuleState.INITIALIZING:
            await self.events.emit(
                rule=rule.name,
                target=target,
                reason=transition.to_state.value,
                message=f"{rule.name}: {transition.from_state} -> {transition.to_state}: {transition.reason}",
                warning=transition.to_state is RuleState.ACTIONS_DECLINED,
            )

    # --- actions -----------------------------------------------------------------------------------

    def start_action(self, rule: Rule, planned: PlannedAction, target: TargetObject) -> None:
        key = (rule.name, planned.object)
        if key in self.running_actions and not self.running_actions[key].done():
            return
        self.running_actions[key] = asyncio.create_task(self.execute(rule, planned, target), name=f"action:{key}")

    async def execute(self, rule: Rule, planned: PlannedAction, target: TargetObject, *, resumed: bool = False) -> None:
        state = (await self.store.status(rule.name, planned.object)).state or ObjectState()
        started_at = self.clock.now()
        if not resumed:
            started = self.decide(rule, target, state, ActionStarted())
            try:
                await self.store.record_in_flight(
                    rule=rule.name,
                    object_key=planned.object,
                    object_kind=rule.target.value,
                    action=planned.action,
                    requested_at=started_at,
                    detail=in_flight_detail(planned),
                    state=started.state,
                )
            except StateConflictError as error:
                log.info(
                    "another writer owns this action; not acting", rule=rule.name, object=planned.object, why=str(error)
                )
                return
            state = started.state
            await self.note_transitions(rule, target, started.transitions)
        executor = self.executor_for(rule, planned.action)
        if executor is None:
            outcome = Outcome(kind=OutcomeKind.HELD, reason=f"no executor for {planned.action} in this agent yet")
        else:
            try:
                outcome = await executor.run(planned=planned, target=target, params=_params(rule, planned.action))
            except Exception as error:  # a failed call is an outcome, not a crash
                outcome = Outcome(kind=OutcomeKind.FAILED, reason=f"{type(error).__name__}: {error}")
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
        now = self.clock.now()
        if outcome.kind is OutcomeKind.DECLINED:
            result = apply_plan_outcome(
                rule=rule.name,
                object_key=planned.object,
                state=state,
                now=now,
                declined=Declined(code="Refused", message=outcome.reason),
            )
        else:
            result = self.decide(
                rule, target, state, ActionFinished(succeeded=outcome.succeeded, reason=outcome.reason)
            )
        await self.store.clear_in_flight(
            rule=rule.name, object_key=planned.object, object_kind=rule.target.value, state=result.state
        )
        await self.store.save(
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
        await self.note_transitions(rule, target, result.transitions)
        record: AuditRecord = action_record(
            planned,
            dry_run=self.records_dry_run(rule, planned.action),
            outcome=outcome.kind.value,
            reason=outcome.reason,
        )
        record["time"] = iso_time(now)
        record["mutations"] = list(outcome.mutations)
        self.trail.write(record)
        self.telemetry.inc(
            "kafka_autopilot_actions_total", rule=rule.name, action=planned.action, outcome=outcome.kind.value
        )
        if self.events is not None:
            await self.events.emit(
                rule=rule.name,
                target=target,
                reason=f"Action{outcome.kind.value.title().replace('-', '')}",
                message=f"{planned.action} {planned.before} -> {planned.after}: {outcome.kind}: {outcome.reason}",
                warning=not outcome.succeeded,
            )
        if self.approvals is not None:
            await self.approvals.action_finished(
                self, rule, planned=planned, target=target, state=state, outcome=outcome
            )

    def records_dry_run(self, rule: Rule, action: str | None = None) -> bool:
        """Whether records about this rule (and action) say dry-run: the one place that combines the
        agent's, the rule's and the policy's per-action dry-run."""
        return self.dry_run or rule.dry_run or (action is not None and action in self.dry_run_actions)

    def executor_for(self, rule: Rule, action: str) -> Executor | None:
        """A rule with `enforcement: dryRun` only ever gets the executors built on the dry-run applier."""
        return (self.dry_run_executors if rule.dry_run else self.executors).get(action)

    def decide(
        self, rule: Rule, target: TargetObject, state: ObjectState, event: ActionStarted | ActionFinished
    ) -> Step:
        return decide(
            rule=rule.name,
            object_key=target.key,
            state=state,
            event=event,
            now=self.clock.now(),
            cooldown_seconds=rule.cooldown_seconds,
            for_seconds=rule.conditions.for_seconds,
        )

    async def note_transitions(self, rule: Rule, target: TargetObject, transitions: Iterable[Transition]) -> None:
        for transition in transitions:
            self.trail.write(transition_record(transition, dry_run=self.records_dry_run(rule)))
            await self.note_transition(rule, transition, target)

    async def resume_in_flight(self, rule: Rule) -> None:
        """Objects a previous run left mid-action: resume their recorded plan (verify, never re-plan)."""
        states = await self.store.load(rule.name)
        pending = [
            key
            for key, state in states.items()
            if state.state in (RuleState.ACTIVE_ACTIONS_PENDING, RuleState.ACTIVE_ACTIONS_IN_PROGRESS)
        ]
        if not pending:
            return
        objects = {target.key: target for target in await self.objects_for(rule.target)}
        for key in pending:
            target = objects.get(key)
            if target is None:
                continue
            in_flight = await self.store.in_flight(rule.name, key)
            detail = None if in_flight is None else {"action": in_flight.action, **in_flight.detail}
            planned = planned_from_in_flight(detail, rule=rule, target=target, now=self.clock.now())
            if planned is None:
                continue
            log.info("resuming action", rule=rule.name, object=key, action=planned.action)
            resumed = states[key].state is RuleState.ACTIVE_ACTIONS_IN_PROGRESS
            self.running_actions[(rule.name, key)] = asyncio.create_task(
                self.execute(rule, planned, target, resumed=resumed)
            )


class StorageApiNotConfiguredError(RuntimeError):
    """A StoragePool rule runs in an agent that was given no storage API."""


def rule_health(outcome: CycleOutcome) -> str:
    """ "ok", or how many selected objects had no data this cycle (a missing or broken metric)."""
    blind = [evaluation.object for evaluation in outcome.evaluations if evaluation.verdict is Verdict.NO_DATA]
    if not outcome.evaluations:
        return "no object selected"
    if blind:
        shown = ", ".join(blind[:3]) + (" ..." if len(blind) > 3 else "")
        seen = len(outcome.evaluations)
        return f"no data for {len(blind)} of {seen} objects ({shown}): missing metric, NaN or a capacity of 0"
    return "ok"


def in_flight_detail(planned: PlannedAction) -> dict[str, str]:
    """What a restarted agent needs to resume exactly this plan (strings, as the status stores them)."""
    detail = {"before": planned.before, "after": planned.after}
    if isinstance(planned.detail, ResizePlan):
        detail.update(
            current_bytes=str(planned.detail.current_bytes),
            target_bytes=str(planned.detail.target_bytes),
            capped=str(planned.detail.capped).lower(),
        )
    if isinstance(planned.detail, PoolExpandPlan):
        detail.update(
            pool_current_bytes=str(planned.detail.current_bytes),
            pool_target_bytes=str(planned.detail.target_bytes),
            scale_type=planned.detail.scale_type.value,
            drives_added=str(planned.detail.drives_added),
            new_drive_size_bytes=str(planned.detail.new_drive_size_bytes),
            capped=str(planned.detail.capped).lower(),
        )
    return detail


def planned_from_in_flight(
    detail: Mapping[str, Any] | None, *, rule: Rule, target: TargetObject, now: float
) -> PlannedAction | None:
    """The exact plan a previous run recorded; without a record, a fresh plan (executors are idempotent)."""
    if detail is None:
        fresh = plan_actions(rule=rule, target=target, now=now)
        return fresh[0] if isinstance(fresh, tuple) and fresh else None
    plan: ResizePlan | PoolExpandPlan | None = None
    if "pool_target_bytes" in detail:
        plan = PoolExpandPlan(
            current_bytes=int(detail["pool_current_bytes"]),
            target_bytes=int(detail["pool_target_bytes"]),
            scale_type=ScaleType(str(detail["scale_type"])),
            drives_added=int(detail.get("drives_added", 0)),
            new_drive_size_bytes=int(detail.get("new_drive_size_bytes", 0)),
            capped=str(detail.get("capped", "false")) == "true",
        )
    elif "target_bytes" in detail:
        plan = ResizePlan(
            current_bytes=int(detail["current_bytes"]),
            target_bytes=int(detail["target_bytes"]),
            capped=str(detail.get("capped", "false")) == "true",
        )
    return PlannedAction(
        rule=rule.name,
        object=target.key,
        action=str(detail["action"]),
        before=str(detail.get("before", "")),
        after=str(detail.get("after", "")),
        at=now,
        detail=plan,
    )


def _params(rule: Rule, action: str) -> Any:
    return next(candidate.params for candidate in rule.actions if candidate.name == action)
