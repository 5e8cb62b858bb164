"""One evaluation cycle of one rule, put together from the runtime's parts.

A cycle:
1. inventory: the objects of the rule's target kind, and one vector per distinct expression
   (agent.runtime.inventory);
2. decide: agent.core.engine.run_cycle, pure, with the durable states loaded from the API and, with a
   guardrail policy, the admission facts (agent.runtime.admission); the objects indexed anew only
   where they changed since the rule's previous cycle (agent.core.matching.InventoryIndex);
3. record: every transition and action (and the evaluations `--audit-evaluations` asks for) as an audit
   record, a counter, and an Event (agent.runtime.recorder; Events are queued, never waited for);
4. persist the states that changed (a quiet object with nothing stored stays without an
   AutopilotRuleObject until it first leaves Normal: `ObjectState.worth_keeping`; the leader's
   agent.runtime.collector deletes those no longer needed); a state another writer moved, or whose
   write failed, is not acted on this cycle (a Pending that was stored all the same is planned again
   by the runner's sweep);
5. start executors for the planned actions (agent.runtime.runner), then follow approvals
   (agent.runtime.approvals), then write the rule's own status when it is an AutopilotRule (after the
   starts: a crossed threshold is acted on before any status write);
6. let executors undo their own marks where the cause has gone (a node back: the agent's cordon);
7. record the rule's evaluation-summary (counts by verdict, cycle time), when due.

The scheduler (agent.runtime.scheduler) decides when a cycle runs; `kafka-autopilot run`
(agent.runtime.main) assembles the parts. Objects the policy's namespaces keep out are said so once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from agent.adapters.clock import Clock
from agent.adapters.errors import StateConflictError
from agent.core.catalog import Catalog
from agent.core.engine import CycleOutcome, run_cycle, touched_states, verdicts_by_object
from agent.core.matching import InventoryIndex
from agent.core.policy import Policy
from agent.core.rules import Rule
from agent.core.states import Verdict
from agent.runtime.admission import AdmissionLedger
from agent.runtime.approvals import ApprovalFlow
from agent.runtime.inventory import Inventory
from agent.runtime.recorder import Recorder
from agent.runtime.runner import IN_FLIGHT_STATES, ActionRunner, StateStore

log = structlog.get_logger("kafka-autopilot")


@dataclass
class RuleCycle:
    inventory: Inventory
    store: StateStore
    runner: ActionRunner
    recorder: Recorder
    clock: Clock
    catalog: Catalog
    policy: Policy | None = None
    admission: AdmissionLedger | None = None
    """Present exactly when there is a policy."""
    approvals: ApprovalFlow | None = None
    _indexes: dict[str, InventoryIndex] = field(default_factory=dict)
    """Each rule's last inventory index: a steady inventory keeps its selections and identity indexes."""

    async def __call__(self, rule: Rule) -> str:
        """One cycle; returns the rule's health: "ok", or what kept it from seeing its objects."""
        began, now = self.clock.monotonic(), self.clock.now()
        objects = await self.inventory.objects(rule)
        vectors = await self.inventory.vectors(rule, now)
        states = await self.store.load(rule.name)
        facts = None
        if self.admission is not None:
            facts = await self.admission.facts(
                rule, now, running=self.runner.in_flight, cordoned_nodes=self.inventory.cordoned_nodes
            )
        index = self._indexes[rule.name] = InventoryIndex(objects, previous=self._indexes.get(rule.name))
        outcome = run_cycle(
            rule=rule,
            objects=index,
            vectors=vectors,
            states=states,
            now=now,
            policy=self.policy,
            facts=facts,
            catalog=self.catalog,
        )
        index.release_vectors()  # kept for the next cycle, without this one's vectors
        if self.admission is not None:
            for planned in outcome.planned:  # before the next await: the other rules' cycles must count them
                self.admission.admitted(planned, at=now)
        conflicted: set[str] = set()
        started: set[str] = set()
        try:
            await self.recorder.cycle(rule, outcome, index.by_key)
            for key, state in touched_states(outcome).items():  # the untouched are UNTOUCHED, stored as nothing
                stored = states.get(key)
                if state == stored or (stored is None and not state.worth_keeping(now)):
                    continue  # unchanged, or quiet with nothing stored: a quiet object has no AutopilotRuleObject
                try:
                    await self.store.save(rule=rule.name, object_key=key, object_kind=rule.target.value, state=state)
                except StateConflictError as error:
                    conflicted.add(key)
                    log.info(
                        "state moved by another writer; not acting this cycle",
                        rule=rule.name,
                        object=key,
                        why=str(error),
                    )
                except Exception as error:  # a failed write costs that object's start, not the other objects'
                    conflicted.add(key)
                    log.warning(
                        "state write failed; not acting this cycle",
                        rule=rule.name,
                        object=key,
                        error=f"{type(error).__name__}: {error}",
                    )
            for planned in outcome.planned:
                if planned.object not in conflicted:
                    self.runner.start(rule, planned, index.by_key[planned.object])
                    started.add(planned.object)
        finally:
            if self.admission is not None:
                for planned in outcome.planned:
                    self.admission.settled(planned, started=planned.object in started)
        if self.approvals is not None:
            await self.approvals.after_cycle(rule, outcome, before=states, objects=index.by_key, conflicted=conflicted)
        await self.recorder.cycle_reported(rule, outcome)
        await self.runner.release_recovered(rule, index.by_key)
        self.recorder.cycle_summary(rule, outcome, selected=len(objects), cycle_seconds=self.clock.monotonic() - began)
        return with_kafka_problem(rule_health(outcome), self.inventory.kafka_unreachable(rule))

    async def resume(self, rule: Rule) -> None:
        """Resume the rule's actions left in flight with no task here (at start-up, and at each sweep)."""
        states = await self.store.load(rule.name)
        objects = {}
        if any(state.state in IN_FLIGHT_STATES for state in states.values()):
            objects = {target.key: target for target in await self.inventory.objects(rule)}
        await self.runner.resume(rule, states=states, objects=objects)  # also forgets what is no longer stuck


def with_kafka_problem(health: str, kafka_problem: str) -> str:
    """A broker rule is unhealthy while Kafka does not answer, whatever its data: its Kafka actions (and,
    without a stated identity, its brokers' identities) wait for it. The other rules are not affected."""
    if not kafka_problem:
        return health
    unhealthy = f"Kafka unreachable: {kafka_problem}"
    return unhealthy if health == "ok" else f"{unhealthy}; {health}"


def rule_health(outcome: CycleOutcome) -> str:
    """ "ok", or how many selected objects had no data this cycle and why (the join's reason when it
    has one: a series naming several objects, or one without identity; else a missing or broken metric)."""
    blind = [key for key, verdict in verdicts_by_object(outcome.evaluations) if verdict is Verdict.NO_DATA]
    if not outcome.evaluations:
        return "no object selected"
    if blind:
        shown = ", ".join(blind[:3]) + (" ..." if len(blind) > 3 else "")
        seen = len(outcome.evaluations)
        reasons = list(dict.fromkeys(outcome.no_data[key] for key in blind if key in outcome.no_data))
        why = "; ".join(reasons[:2]) + (" ..." if len(reasons) > 2 else "")
        return (
            f"no data for {len(blind)} of {seen} objects ({shown}): {why or 'missing metric, NaN or a capacity of 0'}"
        )
    return "ok"
