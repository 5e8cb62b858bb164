"""No stranded action: a failed write between plan and start, a cycle that dies after admitting, or an
action task that died, leaves a state the next cycle or the sweep picks up; stuck ones are reported."""

from __future__ import annotations

import asyncio
import io

import pytest
from fakes import FakeClock, FakeCluster, FakeEvents, FakePrometheus, FakePvc, FakeStateStore
from helpers import REFERENCE_RULE
from shell_support import load_rule

from agent.actions.base import Outcome, OutcomeKind
from agent.actions.mutations import LiveApplier
from agent.actions.registry import CATALOG
from agent.actions.volume_resize.executor import VolumeResizeExecutor
from agent.actions.volume_resize.spec import VOLUME_RESIZE
from agent.adapters.kubernetes.statuscodec import ActionHistory, InFlight
from agent.audit.trail import AuditRecord, AuditTrail
from agent.core.engine import PlannedAction
from agent.core.matching import TargetObject, pvc_object
from agent.core.policy import Policy
from agent.core.quantity import GIB
from agent.core.rules import Rule
from agent.core.samples import Sample
from agent.core.states import ObjectState, RuleState
from agent.runtime.admission import AdmissionLedger
from agent.runtime.cycle import RuleCycle
from agent.runtime.inventory import Inventory
from agent.runtime.recorder import Recorder
from agent.runtime.runner import STUCK_AFTER_SECONDS, ActionRunner
from agent.runtime.server import Endpoints
from agent.runtime.telemetry import Telemetry

RULE = load_rule(REFERENCE_RULE)
QUERY = RULE.conditions.expressions[0].query
KEY = "kafka/data-kafka-0"


class FailingStartStore(FakeStateStore):
    """The start write (`record_in_flight`) fails once with an error that is not a conflict."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_start = 1

    async def record_in_flight(self, **kwargs: object) -> InFlight:
        if self.fail_start:
            self.fail_start -= 1
            raise ConnectionError("apiserver unreachable")
        return await super().record_in_flight(**kwargs)  # type: ignore[arg-type]


def build(store: FakeStateStore) -> tuple[FakeClock, FakeCluster, ActionRunner, RuleCycle, list[AuditRecord]]:
    clock = FakeClock()
    cluster = FakeCluster(clock=clock)
    cluster.add_storage_class("expandable", expandable=True)
    cluster.add_pvc(FakePvc(namespace="kafka", name="data-kafka-0", requested_bytes=400 * GIB, labels={"app": "kafka"}))
    cluster.pvcs[KEY].grows_after_sleeps = 1
    prometheus = FakePrometheus()
    prometheus.set(QUERY, [Sample(labels={"namespace": "kafka", "persistentvolumeclaim": "data-kafka-0"}, value=90.0)])
    records: list[AuditRecord] = []
    recorder = Recorder(
        trail=AuditTrail(stream=io.StringIO(), listener=records.append),
        telemetry=Telemetry(),
        clock=clock,
        events=FakeEvents(),
    )
    executor = VolumeResizeExecutor(reader=cluster, applier=LiveApplier(writer=cluster), clock=clock)
    runner = ActionRunner(
        store=store, recorder=recorder, clock=clock, catalog=CATALOG, executors={VOLUME_RESIZE: executor}
    )
    cycle = RuleCycle(
        inventory=Inventory(cluster=cluster, prometheus=prometheus),
        store=store,
        runner=runner,
        recorder=recorder,
        clock=clock,
        catalog=CATALOG,
    )
    return clock, cluster, runner, cycle, records


async def test_a_failed_start_write_leaves_a_state_the_sweep_and_next_cycle_pick_up() -> None:
    store = FailingStartStore()
    clock, cluster, runner, cycle, records = build(store)

    await cycle(RULE)
    await asyncio.gather(*runner.running.values())  # the task ends quietly: the error is logged

    stranded = store.stored(RULE.name, KEY)
    assert stranded.state is not None and stranded.state.state is RuleState.ACTIVE_ACTIONS_PENDING
    assert stranded.in_flight is None and cluster.writes == []

    await cycle.resume(RULE)  # the sweep
    swept = store.stored(RULE.name, KEY).state
    assert swept is not None and swept.state is RuleState.TRIGGERED

    clock.advance(RULE.poll_interval_seconds)
    await cycle(RULE)
    await asyncio.gather(*runner.running.values())
    assert cluster.writes == [("resize_pvc", KEY)]
    done = store.stored(RULE.name, KEY).state
    assert done is not None and done.state is RuleState.ACTIVE_ACTIONS_TAKEN
    assert records and all(record["time"] for record in records)


def test_an_audit_record_without_a_time_is_refused() -> None:
    with pytest.raises(ValueError, match="has no time"):
        AuditTrail(stream=io.StringIO()).write({"event": "action-planned", "time": None})


async def test_an_in_flight_record_whose_task_died_is_resumed_by_the_sweep() -> None:
    store = FakeStateStore()
    _, cluster, runner, cycle, _ = build(store)
    original = store.clear_in_flight
    failures = [ConnectionError("apiserver unreachable")]

    async def clear_once_failing(**kwargs: object) -> None:
        if failures:
            raise failures.pop()
        await original(**kwargs)  # type: ignore[arg-type]

    store.clear_in_flight = clear_once_failing  # type: ignore[method-assign]
    await cycle(RULE)
    await asyncio.gather(*runner.running.values())
    left = store.stored(RULE.name, KEY)
    assert left.in_flight is not None and runner.in_flight() == set()

    await cycle.resume(RULE)
    await asyncio.gather(*runner.running.values())
    finished = store.stored(RULE.name, KEY)
    assert finished.in_flight is None
    assert finished.last_action is not None and finished.last_action.outcome == "verified"
    assert cluster.writes == [("resize_pvc", KEY)]


class NoHistory:
    async def action_history(self) -> ActionHistory:
        return ActionHistory()


async def test_an_admission_whose_cycle_died_no_longer_counts_in_flight() -> None:
    ledger = AdmissionLedger(policy=Policy(name="p", max_concurrent_actions=1), history_source=NoHistory())
    planned = PlannedAction(rule=RULE.name, object=KEY, action=VOLUME_RESIZE, before="", after="", at=0.0)

    async def cycle_that_dies() -> None:
        ledger.admitted(planned, at=0.0)
        raise ConnectionError("the state write failed before the action task was created")

    dying = asyncio.create_task(cycle_that_dies())
    await asyncio.gather(dying, return_exceptions=True)

    async def nothing() -> frozenset[str]:
        return frozenset()

    facts = await ledger.facts(RULE, 1.0, running=set, cordoned_nodes=nothing)
    assert facts.in_flight == 0


async def test_an_action_in_flight_with_no_task_is_reported_stuck_with_rule_object_and_since() -> None:
    store = FakeStateStore()
    clock, _, runner, _, _ = build(store)
    since = clock.now()
    state = ObjectState(state=RuleState.ACTIVE_ACTIONS_IN_PROGRESS, since=since)
    await runner.resume(RULE, states={KEY: state}, objects={})  # its object is not seen: it cannot resume
    assert runner.stuck() == []

    clock.advance(STUCK_AFTER_SECONDS + 1)
    (found,) = runner.stuck()
    assert (found.rule, found.object, found.state, found.since) == (RULE.name, KEY, "ActiveActionsInProgress", since)
    response = await Endpoints(
        telemetry=Telemetry(), readiness=lambda: None, trigger=lambda _: [], stuck=runner.stuck
    ).healthz(None)  # type: ignore[arg-type]
    assert response.status == 200
    assert response.text is not None and f"rule={RULE.name} object={KEY}" in response.text
    assert "since=2024-06-03T12:00:00" in response.text

    await runner.resume(RULE, states={KEY: ObjectState(state=RuleState.NORMAL)}, objects={})
    assert runner.stuck() == []


class HoldingExecutor:
    action = VOLUME_RESIZE

    async def run(self, *, planned: PlannedAction, target: TargetObject, params: object, rule: Rule) -> Outcome:
        return Outcome(kind=OutcomeKind.HELD, reason="Kafka still sees the broker alive")


async def test_a_held_outcome_is_no_start_for_the_policy_rate_limits() -> None:
    store = FakeStateStore()
    clock, _, _, _, _ = build(store)
    ledger = AdmissionLedger(policy=Policy(name="p", max_concurrent_actions=5), history_source=store)
    recorder = Recorder(trail=AuditTrail(stream=io.StringIO()), telemetry=Telemetry(), clock=clock, events=FakeEvents())
    runner = ActionRunner(
        store=store,
        recorder=recorder,
        clock=clock,
        catalog=CATALOG,
        executors={VOLUME_RESIZE: HoldingExecutor()},
        admission=ledger,
    )
    target = pvc_object(namespace="kafka", name="data-kafka-0", labels={"app": "kafka"}, capacity_bytes=400 * GIB)
    planned = PlannedAction(rule=RULE.name, object=KEY, action=VOLUME_RESIZE, before="", after="", at=clock.now())
    await store.save(
        rule=RULE.name,
        object_key=KEY,
        object_kind=RULE.target.value,
        state=ObjectState(state=RuleState.ACTIVE_ACTIONS_PENDING, since=clock.now()),
    )
    ledger.admitted(planned, at=clock.now())
    ledger.settled(planned, started=True)

    await runner.execute(RULE, planned, target)

    async def nothing() -> frozenset[str]:
        return frozenset()

    clock.advance(2)
    facts = await ledger.facts(RULE, clock.now(), running=set, cordoned_nodes=nothing)
    assert (facts.starts, facts.in_flight) == ((), 0)
    last = store.stored(RULE.name, KEY).last_action
    assert last is not None and last.outcome == "held"
