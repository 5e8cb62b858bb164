"""The runtime's cycle, action runner and scheduler on the fakes: one rule, one PVC, no cluster, no wall-clock waits.

The reference rule (resize by 100% above 80% usage, maxsize 1Ti) against PVC kafka/data-kafka-0 of
400Gi, with the real VolumeResizeExecutor on a LiveApplier writing to the fake cluster.
"""

from __future__ import annotations

import asyncio
import io

import pytest
from fakes import FakeClock, FakeCluster, FakeEvents, FakePrometheus, FakePvc, FakeStateStore
from helpers import REFERENCE_RULE
from shell_support import load_rule, plan

from agent.actions.mutations import LiveApplier
from agent.actions.registry import CATALOG
from agent.actions.volume_resize.executor import VolumeResizeExecutor
from agent.actions.volume_resize.spec import VOLUME_RESIZE
from agent.audit.trail import AuditRecord, AuditTrail
from agent.core.inflight import encode_in_flight
from agent.core.matching import pvc_object
from agent.core.quantity import GIB
from agent.core.samples import Sample
from agent.core.states import ObjectState, RuleState
from agent.runtime.cycle import RuleCycle
from agent.runtime.inventory import Inventory
from agent.runtime.recorder import Recorder
from agent.runtime.runner import ActionRunner
from agent.runtime.scheduler import Scheduler, Triggers
from agent.runtime.telemetry import Telemetry

RULE = load_rule(REFERENCE_RULE)
QUERY = RULE.conditions.expressions[0].query
KEY = "kafka/data-kafka-0"
KIND = RULE.target.value


class World:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.cluster = FakeCluster(clock=self.clock)
        self.cluster.add_storage_class("expandable", expandable=True)
        self.cluster.add_pvc(
            FakePvc(namespace="kafka", name="data-kafka-0", requested_bytes=400 * GIB, labels={"app": "kafka"})
        )
        self.prometheus = FakePrometheus()
        self.store = FakeStateStore()
        self.events = FakeEvents()
        self.records: list[AuditRecord] = []
        executor = VolumeResizeExecutor(reader=self.cluster, applier=LiveApplier(writer=self.cluster), clock=self.clock)
        recorder = Recorder(
            trail=AuditTrail(stream=io.StringIO(), listener=self.records.append),
            telemetry=Telemetry(),
            clock=self.clock,
            events=self.events,
        )
        self.runner = ActionRunner(
            store=self.store,
            recorder=recorder,
            clock=self.clock,
            catalog=CATALOG,
            executors={VOLUME_RESIZE: executor},
        )
        self.cycle = RuleCycle(
            inventory=Inventory(cluster=self.cluster, prometheus=self.prometheus),
            store=self.store,
            runner=self.runner,
            recorder=recorder,
            clock=self.clock,
            catalog=CATALOG,
        )
        self.scheduler = Scheduler(
            rules=[RULE],
            cycle=self.cycle,
            resume=self.cycle.resume,
            clock=self.clock,
            recorder=recorder,
            telemetry=recorder.telemetry,
            triggers=Triggers([RULE]),
        )

    def usage(self, percent: float) -> None:
        self.prometheus.set(
            QUERY, [Sample(labels={"namespace": "kafka", "persistentvolumeclaim": "data-kafka-0"}, value=percent)]
        )

    async def actions_done(self) -> None:
        await asyncio.gather(*self.runner.running.values())


@pytest.fixture
def world() -> World:
    return World()


def actions(records: list[AuditRecord]) -> list[tuple[object, object]]:
    """(outcome, mutations) of every action record."""
    return [
        (record["outcome"], record.get("mutations")) for record in records if str(record["event"]).startswith("action-")
    ]


async def test_a_cycle_over_the_threshold_resizes_once_and_stores_the_outcome(world: World) -> None:
    world.usage(90.0)
    world.cluster.pvcs[KEY].grows_after_sleeps = 2

    health = await world.cycle(RULE)
    await world.actions_done()

    assert health == "ok"
    assert world.cluster.writes == [("resize_pvc", KEY)]
    assert world.cluster.pvcs[KEY].capacity_bytes == 800 * GIB
    stored = world.store.stored(RULE.name, KEY)
    assert stored.in_flight is None
    assert stored.last_action is not None
    assert (stored.last_action.outcome, stored.last_action.before, stored.last_action.after) == (
        "verified",
        "400Gi",
        "800Gi",
    )
    assert stored.state is not None and stored.state.state is RuleState.ACTIVE_ACTIONS_TAKEN
    assert actions(world.records) == [
        ("planned", None),
        ("verified", ["patch PersistentVolumeClaim kafka/data-kafka-0: request 800Gi"]),
    ]
    assert "ActionVerified" in world.events.reasons()
    # the outcome (state, last action, in-flight cleared) is stored in one write
    assert [call for call, _, _ in world.store.writes] == ["save", "record_in_flight", "clear_in_flight"]


async def test_a_restarted_agent_resumes_the_recorded_resize_without_patching_again(world: World) -> None:
    """The first life patched the PVC and stopped; the store still says ActiveActionsInProgress."""
    target = pvc_object(namespace="kafka", name="data-kafka-0", labels={"app": "kafka"}, capacity_bytes=400 * GIB)
    planned = plan(RULE, target, now=world.clock.now())
    first_life = world.store.replica()
    await first_life.status(RULE.name, KEY)
    await first_life.record_in_flight(
        rule=RULE.name,
        object_key=KEY,
        object_kind=KIND,
        action=planned.action,
        requested_at=world.clock.now(),
        detail=encode_in_flight(planned),
        state=ObjectState(state=RuleState.ACTIVE_ACTIONS_IN_PROGRESS, since=world.clock.now()),
    )
    pvc = world.cluster.pvcs[KEY]
    pvc.requested_bytes, pvc.grows_after_sleeps = 800 * GIB, None  # patched; the volume grows after the restart
    world.clock.after_sleeps(3, lambda: setattr(pvc, "capacity_bytes", 800 * GIB))

    await world.cycle.resume(RULE)
    await world.actions_done()

    assert world.cluster.writes == []
    stored = world.store.stored(RULE.name, KEY)
    assert stored.in_flight is None
    assert stored.last_action is not None and stored.last_action.outcome == "verified"
    assert actions(world.records) == [("verified", [])]


async def test_a_state_moved_by_another_writer_means_no_action(world: World) -> None:
    world.usage(90.0)
    world.store.conflict_on_next_write(RULE.name, KEY)

    await world.cycle(RULE)
    await world.actions_done()

    assert world.runner.running == {}
    assert world.cluster.writes == []
    assert world.store.writes == []


async def test_an_unreachable_prometheus_costs_the_cycle_and_is_said(world: World) -> None:
    world.prometheus.fail()

    await world.scheduler.cycle_safely(RULE)

    assert world.scheduler.health[RULE.name].startswith("PrometheusQueryError: prometheus http://fake-prometheus")
    assert [record["event"] for record in world.records] == ["cycle-error"]
    assert world.cluster.writes == []
    assert world.store.writes == []


async def test_an_ignored_claim_above_the_threshold_is_never_resized_and_said_once(world: World) -> None:
    world.usage(95.0)
    world.cluster.pvcs[KEY].annotations["kafka-autopilot.io/ignore"] = "true"

    for _ in range(3):
        await world.cycle(RULE)
        await world.actions_done()
        world.clock.advance(10)

    assert world.cluster.writes == []
    ignored = [r for r in world.records if r["event"] == "object-ignored"]
    assert [(r["object"], r["reason"]) for r in ignored] == [
        (KEY, 'annotated kafka-autopilot.io/ignore: "true": no rule acts on it')
    ]
    assert not [r for r in world.records if str(r["event"]).startswith("action-")]

    del world.cluster.pvcs[KEY].annotations["kafka-autopilot.io/ignore"]
    await world.cycle(RULE)
    await world.actions_done()

    assert world.cluster.writes == [("resize_pvc", KEY)]


async def test_a_maxsize_annotation_lower_than_the_rules_caps_the_claim(world: World) -> None:
    world.usage(95.0)
    world.cluster.pvcs[KEY].annotations["kafka-autopilot.io/maxsize"] = "600Gi"

    await world.cycle(RULE)
    await world.actions_done()

    assert world.cluster.pvcs[KEY].requested_bytes == 600 * GIB


async def test_a_maxsize_annotation_higher_than_the_rules_does_not_raise_the_cap(world: World) -> None:
    world.usage(95.0)
    world.cluster.pvcs[KEY].requested_bytes = world.cluster.pvcs[KEY].capacity_bytes = 1024 * GIB
    world.cluster.pvcs[KEY].annotations["kafka-autopilot.io/maxsize"] = "4Ti"

    await world.cycle(RULE)
    await world.actions_done()

    assert world.cluster.writes == []
    declined = [r for r in world.records if r["event"] == "action-declined"]
    assert [r["reason"] for r in declined] == ["AtMaxSize: at maxsize 1Ti (current 1Ti)"]
