"""AutopilotRules as live objects (agent.runtime.liverules) on the fakes, with the fake clock: a rule
added, edited and deleted while the agent runs; its status written only when it changed; an invalid
edit that keeps the last valid version running; a name a rule file uses; Events on the rule, bounded.

The rule is the reference rule under another name (`kafka-live`), on PVC kafka/data-kafka-0 (400Gi,
90% used), with the real cycle, runner and resize executor on the fake cluster.
"""

from __future__ import annotations

import asyncio
import copy
import io
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from fakes import FakeClock, FakeCluster, FakeEvents, FakePrometheus, FakePvc, FakeStateStore
from helpers import REFERENCE_RULE
from shell_support import InMemoryRuleObjects, load_rule

from agent.actions.mutations import LiveApplier
from agent.actions.registry import CATALOG
from agent.actions.volume_resize.executor import VolumeResizeExecutor
from agent.actions.volume_resize.spec import VOLUME_RESIZE
from agent.adapters.errors import KubeError
from agent.adapters.kubernetes.client import EventTarget
from agent.audit.trail import AuditRecord, AuditTrail
from agent.core.quantity import GIB
from agent.core.rules import Rule
from agent.core.samples import Sample
from agent.core.states import RuleState, Transition
from agent.runtime.cycle import RuleCycle
from agent.runtime.events import RuleEvents
from agent.runtime.inventory import Inventory
from agent.runtime.liverules import TEMPORARY_RETRY_SECONDS, ClusterRuleReports, ClusterRuleWatch
from agent.runtime.recorder import Recorder
from agent.runtime.runner import ActionRunner
from agent.runtime.scheduler import Scheduler, Triggers
from agent.runtime.telemetry import Telemetry

FILE_RULE = load_rule(REFERENCE_RULE)
QUERY = FILE_RULE.conditions.expressions[0].query
KEY = "kafka/data-kafka-0"
LIVE = "kafka-live"
POLL = FILE_RULE.poll_interval_seconds


def spec(threshold: str = "95", *, operator: str = "Gt") -> dict[str, Any]:
    """The reference rule's spec, with another threshold (or operator)."""
    document = copy.deepcopy(yaml.safe_load(REFERENCE_RULE)["spec"])
    document["conditions"]["expressions"][0].update(operator=operator, values=[threshold])
    return dict(document)


class World:
    def __init__(self, *, file_rules: tuple[Rule, ...] = ()) -> None:
        self.clock = FakeClock()
        self.cluster = FakeCluster(clock=self.clock)
        self.cluster.add_storage_class("expandable", expandable=True)
        self.cluster.add_pvc(
            FakePvc(namespace="kafka", name="data-kafka-0", requested_bytes=400 * GIB, labels={"app": "kafka"})
        )
        self.prometheus = FakePrometheus()
        self.prometheus.set(
            QUERY, [Sample(labels={"namespace": "kafka", "persistentvolumeclaim": "data-kafka-0"}, value=90.0)]
        )
        self.store = FakeStateStore()
        self.api = InMemoryRuleObjects()
        self.records: list[AuditRecord] = []
        self.reports = ClusterRuleReports(kube=self.api, events=RuleEvents(kube=self.api), clock=self.clock)
        recorder = Recorder(
            trail=AuditTrail(stream=io.StringIO(), listener=self.records.append),
            telemetry=Telemetry(),
            clock=self.clock,
            events=FakeEvents(),
            rule_reporter=self.reports,
        )
        executor = VolumeResizeExecutor(reader=self.cluster, applier=LiveApplier(writer=self.cluster), clock=self.clock)
        self.runner = ActionRunner(
            store=self.store, recorder=recorder, clock=self.clock, catalog=CATALOG, executors={VOLUME_RESIZE: executor}
        )
        cycle = RuleCycle(
            inventory=Inventory(cluster=self.cluster, prometheus=self.prometheus),
            store=self.store,
            runner=self.runner,
            recorder=recorder,
            clock=self.clock,
            catalog=CATALOG,
        )
        self.scheduler = Scheduler(
            rules=list(file_rules),
            cycle=cycle,
            resume=cycle.resume,
            clock=self.clock,
            recorder=recorder,
            telemetry=recorder.telemetry,
            triggers=Triggers(file_rules),
        )
        self.watch = ClusterRuleWatch(
            kube=self.api,
            loops=self.scheduler,
            reports=self.reports,
            recorder=recorder,
            catalog=CATALOG,
            clock=self.clock,
            file_rules={rule.name: rule for rule in file_rules},
        )
        self.tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.tasks = [asyncio.create_task(self.scheduler.run()), asyncio.create_task(self.watch.run())]
        await self.until(lambda: self.watch.synced, what="the first list")

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, *self.runner.running.values(), return_exceptions=True)

    async def until(self, check: Callable[[], object], *, what: str, virtual_seconds: float = 600.0) -> None:
        """Let the loops run until `check()` holds, within `virtual_seconds` of the fake clock."""
        limit = self.clock.monotonic() + virtual_seconds
        for _ in range(100_000):
            if check():
                return
            if self.clock.monotonic() > limit:
                break
            await asyncio.sleep(0)
        pytest.fail(f"not within {virtual_seconds}s of virtual time: {what}")

    async def run_for(self, seconds: float) -> None:
        """Let `seconds` of virtual time pass (the loops' waits move it; the test's own sleeps too)."""
        limit = self.clock.monotonic() + seconds
        while self.clock.monotonic() < limit:
            await self.clock.sleep(0.5)

    def status(self, name: str = LIVE) -> dict[str, Any]:
        return dict(self.api.objects[name].get("status") or {})

    def valid(self, name: str = LIVE) -> dict[str, Any]:
        return dict(next((cond for cond in self.status(name).get("conditions", []) if cond["type"] == "Valid"), {}))

    def cycles(self) -> int:
        return sum(1 for expr, _ in self.prometheus.queries if expr == QUERY)

    def running(self) -> dict[str, Rule]:
        return {rule.name: rule for rule in self.scheduler.current_rules()}


async def test_a_rule_added_edited_and_deleted_while_running_starts_changes_within_a_poll_and_stops() -> None:
    world = World()
    await world.start()
    world.api.apply(LIVE, spec("95"))
    await world.until(lambda: world.status().get("objectsByState") == {"Normal": 1}, what="the first cycle")
    assert world.cluster.writes == []  # 90% is not over 95
    assert world.valid()["status"] == "True" and world.status()["observedGeneration"] == 1
    assert world.status()["objects"] == 1 and "lastEvaluated" in world.status()

    world.cluster.pvcs[KEY].grows_after_sleeps = 3  # the resize is still in flight when the rule is deleted
    edited_at = world.clock.monotonic()
    world.api.apply(LIVE, spec("85"))
    await world.until(
        lambda: (state := world.store.stored(LIVE, KEY).state) and state.state is not RuleState.NORMAL,
        what="a new state",
    )
    assert world.clock.monotonic() - edited_at <= POLL, "the edit is followed within one poll"
    await world.until(lambda: world.cluster.writes, what="the edited rule's resize")
    assert world.status()["observedGeneration"] == 2

    cycles = world.cycles()
    world.api.delete(LIVE)
    await world.until(lambda: LIVE not in world.running(), what="the deleted rule's loop to stop")
    await world.until(lambda: not world.runner.in_flight(), what="the action in flight to finish")
    await world.run_for(10 * POLL)
    assert world.cycles() <= cycles + 1, "at most the cycle it was in, then no more"
    finished = world.store.stored(LIVE, KEY)
    assert finished.last_action is not None and finished.last_action.outcome == "verified"
    assert world.cluster.pvcs[KEY].capacity_bytes == 800 * GIB
    assert world.cluster.writes == [("resize_pvc", KEY)]
    events = [record["event"] for record in world.records if str(record["event"]).startswith("rule-")]
    assert events == ["rule-added", "rule-changed", "rule-removed"]
    assert LIVE not in world.scheduler.health
    await world.stop()


async def test_a_crossing_starts_its_action_before_the_rules_status_is_written() -> None:
    world = World()
    order: list[str] = []
    start, write_status = world.runner.start, world.reports.cycle_recorded

    def starting(*args: Any, **kwargs: Any) -> None:
        order.append("action started")
        start(*args, **kwargs)

    async def writing_status(*args: Any, **kwargs: Any) -> None:
        order.append("status written")
        await write_status(*args, **kwargs)

    world.runner.start = starting  # type: ignore[method-assign]
    world.reports.cycle_recorded = writing_status  # type: ignore[method-assign]
    await world.start()
    world.api.apply(LIVE, spec("80"))  # 90% is over 80 from the first cycle on
    await world.until(lambda: world.cluster.writes, what="the resize")
    assert order[:2] == ["action started", "status written"]
    await world.stop()


async def test_the_status_is_written_when_it_changed_and_last_evaluated_at_most_once_a_minute() -> None:
    world = World()
    await world.start()
    world.api.apply(LIVE, spec("95"))
    await world.until(lambda: world.status().get("objects") == 1, what="the first cycle's status")
    assert len(world.api.status_writes) == 2  # Valid when loaded, then the first cycle's objects
    cycles = world.cycles()
    await world.run_for(50)
    assert world.cycles() >= cycles + 20
    assert len(world.api.status_writes) == 2, "nothing changed: no write, however many cycles"
    await world.run_for(70)
    refreshed = len(world.api.status_writes) - 2
    assert 1 <= refreshed <= 2, "lastEvaluated alone: about once a minute"

    world.prometheus.set(
        QUERY, [Sample(labels={"namespace": "kafka", "persistentvolumeclaim": "data-kafka-0"}, value=97.0)]
    )
    world.cluster.pvcs[KEY].grows_after_sleeps = None  # the resize stays in flight: a steady new state
    written = len(world.api.status_writes)
    await world.until(
        lambda: "Normal" not in world.status().get("objectsByState", {"Normal": 1}), what="a new state in the status"
    )
    assert len(world.api.status_writes) == written + 1
    await world.stop()


async def test_an_invalid_edit_keeps_the_last_valid_version_running_and_says_why() -> None:
    world = World()
    await world.start()
    world.api.apply(LIVE, spec("95"))
    await world.until(lambda: LIVE in world.running(), what="the rule to run")
    first = world.running()[LIVE]

    world.api.apply(LIVE, spec("85", operator="Bigger"))
    await world.until(lambda: world.valid().get("status") == "False", what="Valid=False")
    valid = world.valid()
    assert "cluster:autopilotrule/kafka-live" in valid["message"]
    assert "operator" in valid["message"] and "Bigger" in valid["message"]
    assert "still running generation 1" in valid["message"]
    assert world.status()["observedGeneration"] == 2
    assert world.running()[LIVE] is first
    cycles = world.cycles()
    await world.run_for(3 * POLL)
    assert world.cycles() > cycles, "the last valid version keeps running"
    assert world.cluster.writes == []

    world.api.apply("kafka-broken", spec("85", operator="Bigger"))
    await world.until(lambda: world.valid("kafka-broken").get("status") == "False", what="the new rule's Valid")
    assert "kafka-broken" not in world.running()
    assert world.valid("kafka-broken")["message"].endswith("not run")

    world.api.apply(LIVE, spec("85"))
    await world.until(lambda: world.cluster.writes, what="the fixed rule's resize")
    assert world.valid()["status"] == "True"
    await world.stop()


async def test_a_name_a_rule_file_uses_is_an_error_naming_both_and_the_others_keep_working() -> None:
    world = World(file_rules=(FILE_RULE,))
    await world.start()
    world.api.apply(FILE_RULE.name, spec("10"))
    world.api.apply(LIVE, spec("95"))
    await world.until(lambda: world.status().get("objects") == 1, what="the other cluster rule's first cycle")
    await world.until(lambda: world.valid(FILE_RULE.name).get("status") == "False", what="the conflict")
    message = world.valid(FILE_RULE.name)["message"]
    assert f"cluster:autopilotrule/{FILE_RULE.name}:" in message
    assert f"rule file at {FILE_RULE.source}" in message
    assert world.running()[FILE_RULE.name] is FILE_RULE
    assert "objects" not in world.status(FILE_RULE.name)  # never run from the cluster
    assert not [event for event in world.api.events if event[0].name == FILE_RULE.name]

    world.api.delete(FILE_RULE.name)
    await world.run_for(2 * POLL)
    assert world.running()[FILE_RULE.name] is FILE_RULE, "deleting the refused object leaves the file's rule alone"
    await world.stop()


async def test_the_rules_objects_transitions_are_events_on_the_autopilotrule() -> None:
    world = World()
    await world.start()
    world.api.apply(LIVE, spec("85"))
    await world.until(lambda: world.cluster.writes, what="the resize")
    await world.until(lambda: not world.runner.in_flight(), what="the resize to finish")
    await world.run_for(POLL)
    on_rule = [(involved, reason, message) for involved, reason, message, _ in world.api.events]
    assert {involved.kind for involved, _, _ in on_rule} == {"AutopilotRule"}
    assert {involved.uid for involved, _, _ in on_rule} == {world.api.objects[LIVE]["metadata"]["uid"]}
    reasons = [reason for _, reason, _ in on_rule]
    assert reasons[:3] == ["Triggered", "ActiveActionsPending", "ActiveActionsInProgress"]
    assert "ActiveActionsTaken" in reasons
    assert on_rule[0][2].startswith(f"rule: {LIVE}:{KEY} transition from Normal => Triggered")
    await world.stop()


async def test_events_on_the_rule_are_bounded_per_cycle_and_the_rest_summed_up() -> None:
    api = InMemoryRuleObjects()
    events = RuleEvents(kube=api, per_cycle=3)
    rule = EventTarget(
        kind="AutopilotRule", name=LIVE, namespace=None, uid="u1", api_version="kafka-autopilot.io/v1alpha1"
    )
    for number in range(10_000):
        await events.transition(
            rule,
            Transition(
                rule=LIVE,
                object=f"kafka/data-{number}",
                from_state=RuleState.NORMAL,
                to_state=RuleState.TRIGGERED,
                at=0.0,
                reason="",
            ),
        )
    assert len(api.events) == 3
    await events.cycle_end(rule)
    assert len(api.events) == 4
    _, reason, message, kind = api.events[-1]
    assert (reason, kind) == ("Triggered", "Normal")
    assert message.startswith(f"rule: {LIVE}: 9997 more objects transition from Normal => Triggered (kafka/data-3, ")
    await events.transition(
        rule,
        Transition(
            rule=LIVE,
            object=KEY,
            from_state=RuleState.TRIGGERED,
            to_state=RuleState.ACTIONS_DECLINED,
            at=1.0,
            reason="at maxsize",
        ),
    )
    assert api.events[-1][1:] == (
        "ActionsDeclined",
        f"rule: {LIVE}:{KEY} transition from Triggered => ActionsDeclined: at maxsize",
        "Warning",
    )


async def test_while_the_rules_cannot_be_listed_the_agent_is_not_ready_and_lists_again() -> None:
    world = World()
    refusals = [
        KubeError("403 Forbidden", server="fake", verb="GET", resource="autopilotrules", status=403),
        KubeError(
            "429 storage is (re)initializing",
            server="fake",
            verb="GET",
            resource="autopilotrules",
            status=429,
            temporary=True,
        ),
    ]
    listing = world.api.list_custom_objects

    async def list_or_refuse(**kwargs: Any) -> dict[str, Any]:
        if refusals:
            raise refusals.pop()
        return await listing(**kwargs)

    world.api.list_custom_objects = list_or_refuse  # type: ignore[method-assign]
    world.api.apply(LIVE, spec("95"))
    world.tasks = [asyncio.create_task(world.scheduler.run()), asyncio.create_task(world.watch.run())]
    await world.until(lambda: "403" in world.watch.problem, what="the refusal")
    assert "403 Forbidden" in str(world.watch.readiness())
    await world.until(lambda: world.watch.synced, what="the list again")
    assert world.watch.readiness() is None
    assert world.clock.sleeps[:2] == [TEMPORARY_RETRY_SECONDS, world.watch.retry_seconds]
    await world.until(lambda: LIVE in world.running(), what="the rule to run")
    await world.stop()


async def test_a_removed_or_replaced_rule_finishes_the_cycle_it_is_in_and_the_new_version_runs_at_once() -> None:
    clock = FakeClock()
    release = asyncio.Event()
    cycles: list[tuple[str, str]] = []

    async def cycle(rule: Rule) -> str:
        cycles.append((rule.name, rule.conditions.expressions[0].values[0]))
        if len(cycles) == 2:
            await release.wait()  # the second cycle is under way when the rule changes
            cycles.append(("finished", rule.conditions.expressions[0].values[0]))
        return "ok"

    async def resume(_rule: Rule) -> None:
        return None

    def version(threshold: str) -> Rule:
        return load_rule(REFERENCE_RULE.replace('values: ["80"]', f'values: ["{threshold}"]'))

    recorder = Recorder(trail=AuditTrail(stream=io.StringIO()), telemetry=Telemetry(), clock=clock, events=FakeEvents())
    first = version("80")
    scheduler = Scheduler(
        rules=[first],
        cycle=cycle,
        resume=resume,
        clock=clock,
        recorder=recorder,
        telemetry=recorder.telemetry,
        triggers=Triggers([first]),
    )
    running = asyncio.create_task(scheduler.run())
    for _ in range(100):
        await asyncio.sleep(0)
    assert cycles == [(first.name, "80"), (first.name, "80")]
    scheduler.put(version("90"))
    for _ in range(100):
        await asyncio.sleep(0)
    assert len(cycles) == 2, "the new version waits for the cycle under way"
    release.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert cycles[2:4] == [("finished", "80"), (first.name, "90")], "then the new version runs at once"

    scheduler.remove(first.name)
    waited = clock.monotonic()
    for _ in range(100):
        await asyncio.sleep(0)
    assert scheduler.current_rules() == [] and scheduler.readiness() is None
    assert clock.monotonic() - waited <= first.poll_interval_seconds, "a loop waiting for its poll stops at once"
    count = len(cycles)
    await clock.sleep(10 * first.poll_interval_seconds)
    assert len(cycles) == count
    assert not running.done()
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)


async def test_a_dry_run_agent_runs_the_rules_and_leaves_their_status_to_the_live_one() -> None:
    world = World()
    world.reports.write_status = False
    await world.start()
    world.api.apply(LIVE, spec("95"))
    await world.until(lambda: LIVE in world.running() and world.cycles() >= 3, what="cycles of the rule")
    assert world.api.status_writes == []
    await world.stop()
