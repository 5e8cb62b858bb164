"""What the agent writes per cycle, on the fakes: audit records under each `--audit-evaluations` mode,
state writes (the real StateStore over an in-memory AutopilotRuleObject API) while `for` is waited for,
none for quiet claims, and what the state collector deletes.

The reference rule (resize above 80% usage, maxsize 1Ti) over claims kafka/data-kafka-<i>, each cycle
through the real RuleCycle and Recorder, 2 s apart on the FakeClock (the rule's pollInterval).
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import replace
from typing import cast

import pytest
from fakes import FakeClock, FakeCluster, FakeEvents, FakePrometheus, FakePvc, FakeStateStore
from helpers import REFERENCE_RULE
from shell_support import InMemoryRuleObjects, load_rule

from agent.actions.mutations import LiveApplier
from agent.actions.registry import CATALOG
from agent.actions.volume_resize.executor import VolumeResizeExecutor
from agent.actions.volume_resize.spec import VOLUME_RESIZE
from agent.adapters.kubernetes import KubeClient
from agent.adapters.kubernetes.statestore import StateStore
from agent.audit.evaluations import SUMMARY_HEARTBEAT_SECONDS, EvaluationAudit, EvaluationAuditing
from agent.audit.trail import AuditRecord, AuditTrail, iso_time
from agent.core.collection import StoredPair
from agent.core.quantity import GIB
from agent.core.rules import Rule
from agent.core.samples import Sample
from agent.core.states import ObjectState, RuleState
from agent.runtime.collector import StateCollector
from agent.runtime.cycle import RuleCycle
from agent.runtime.inventory import Inventory
from agent.runtime.recorder import Recorder
from agent.runtime.runner import ActionRunner
from agent.runtime.runner import StateStore as StateStoreProtocol
from agent.runtime.telemetry import Telemetry

TIB = 1024 * GIB
RULE = load_rule(REFERENCE_RULE)
WAITING_RULE = load_rule(REFERENCE_RULE.replace("  conditions:\n", "  conditions:\n    for: 4\n"))
POLL = 2.0


def key(index: int) -> str:
    return f"kafka/data-kafka-{index}"


class World:
    def __init__(
        self, *, claims: int, auditing: str = "changes", rule: Rule = RULE, store: StateStoreProtocol | None = None
    ) -> None:
        self.rule = rule
        self.clock = FakeClock()
        self.cluster = FakeCluster(clock=self.clock)
        self.cluster.add_storage_class("expandable", expandable=True)
        for index in range(claims):
            self.cluster.add_pvc(
                FakePvc(
                    namespace="kafka", name=f"data-kafka-{index}", requested_bytes=400 * GIB, labels={"app": "kafka"}
                )
            )
        self.prometheus = FakePrometheus()
        self.usage_by_claim = dict.fromkeys(range(claims), 50.0)
        self.records: list[AuditRecord] = []
        store = store if store is not None else FakeStateStore()
        recorder = Recorder(
            trail=AuditTrail(stream=io.StringIO(), listener=self.records.append),
            telemetry=Telemetry(),
            clock=self.clock,
            events=FakeEvents(),
            evaluations=EvaluationAudit(auditing=EvaluationAuditing.parse(auditing)),
        )
        executor = VolumeResizeExecutor(reader=self.cluster, applier=LiveApplier(writer=self.cluster), clock=self.clock)
        self.runner = ActionRunner(
            store=store, recorder=recorder, clock=self.clock, catalog=CATALOG, executors={VOLUME_RESIZE: executor}
        )
        self.cycle = RuleCycle(
            inventory=Inventory(cluster=self.cluster, prometheus=self.prometheus),
            store=store,
            runner=self.runner,
            recorder=recorder,
            clock=self.clock,
            catalog=CATALOG,
        )

    def at_maxsize(self, index: int) -> None:
        claim = self.cluster.pvcs[key(index)]
        claim.requested_bytes = claim.capacity_bytes = TIB

    def usage(self, index: int, percent: float | None) -> None:
        """A claim's usage; None: no sample for it (no data)."""
        if percent is None:
            self.usage_by_claim.pop(index, None)
        else:
            self.usage_by_claim[index] = percent

    async def cycles(self, count: int) -> list[list[AuditRecord]]:
        """Run `count` cycles, POLL apart; the records each wrote (actions it started included)."""
        query = self.rule.conditions.expressions[0].query
        written = []
        for _ in range(count):
            self.prometheus.set(
                query,
                [
                    Sample(labels={"namespace": "kafka", "persistentvolumeclaim": f"data-kafka-{index}"}, value=value)
                    for index, value in self.usage_by_claim.items()
                ],
            )
            start = len(self.records)
            await self.cycle(self.rule)
            for task in list(self.runner.running.values()):
                await task
            written.append(self.records[start:])
            self.clock.advance(POLL)
        return written


def events(cycle: list[AuditRecord], event: str) -> list[AuditRecord]:
    return [record for record in cycle if record["event"] == event]


def evaluations_per_cycle(cycles: list[list[AuditRecord]]) -> list[int]:
    return [len(events(cycle, "evaluation")) for cycle in cycles]


async def test_a_steady_claim_writes_one_evaluation_then_none_until_its_verdict_changes() -> None:
    world = World(claims=1)

    steady = await world.cycles(6)
    world.usage(0, 70.0)  # the value moves, the verdict (clear) does not
    moved = await world.cycles(2)
    world.usage(0, 90.0)
    crossed = await world.cycles(1)
    world.usage(0, 50.0)
    back = await world.cycles(1)

    assert evaluations_per_cycle(steady) == [1, 0, 0, 0, 0, 0]
    assert evaluations_per_cycle(moved) == [0, 0]
    ((over,),) = [events(cycle, "evaluation") for cycle in crossed]
    assert (over["object"], over["verdict"], over["values"]) == (
        key(0),
        "holds",
        {RULE.conditions.expressions[0].query: 90.0},
    )
    (under,) = events(back[0], "evaluation")
    assert under["verdict"] == "clear"


async def test_transitions_and_actions_are_written_while_the_verdict_stays_the_same() -> None:
    """With `for: 4`, the claim holds from its first cycle; the state moves on two cycles later, and the
    evaluation is written with it (and in the next cycle, which finds the state the action left)."""
    world = World(claims=1, rule=WAITING_RULE)
    world.usage(0, 90.0)

    cycles = await world.cycles(5)

    assert evaluations_per_cycle(cycles) == [1, 0, 1, 1, 0]
    assert [r["to"] for r in events(cycles[0], "transition")][-1] == "Triggered"
    assert events(cycles[1], "transition") == []
    assert [r["to"] for r in events(cycles[2], "transition")] == [
        "ActiveActionsPending",
        "ActiveActionsInProgress",
        "ActiveActionsTaken",
    ]
    assert [r["event"] for r in cycles[2] if str(r["event"]).startswith("action-")] == [
        "action-planned",
        "action-verified",
    ]


@pytest.mark.parametrize(
    ("auditing", "expected"),
    [
        ("sample:3", [2, 0, 0, 2, 0, 0, 2]),
        ("sample:1", [2] * 7),
        ("all", [2] * 7),
        ("changes", [2, 0, 0, 0, 0, 0, 0]),
    ],
)
async def test_sampling_writes_every_object_every_nth_cycle(auditing: str, expected: list[int]) -> None:
    world = World(claims=2, auditing=auditing)

    assert evaluations_per_cycle(await world.cycles(7)) == expected


async def test_a_change_between_samples_is_written_at_once() -> None:
    world = World(claims=2, auditing="sample:3")

    first = await world.cycles(1)
    world.usage(1, None)
    changed = await world.cycles(1)

    assert evaluations_per_cycle(first) == [2]
    assert [(r["object"], r["verdict"]) for r in events(changed[0], "evaluation")] == [(key(1), "no-data")]


async def test_the_summary_counts_verdicts_and_is_said_again_on_a_change_or_once_a_minute() -> None:
    world = World(claims=4)
    world.at_maxsize(1)  # it holds, but is declined: no action runs (nor sleeps on the clock)
    world.usage(1, 95.0)
    world.usage(2, None)
    world.cluster.pvcs[key(3)].annotations["kafka-autopilot.io/ignore"] = "true"
    steady_cycles = int(SUMMARY_HEARTBEAT_SECONDS // POLL)

    steady = await world.cycles(steady_cycles + 1)
    world.usage(0, 90.0)
    world.at_maxsize(0)
    changed = await world.cycles(1)

    summaries = [events(cycle, "evaluation-summary") for cycle in steady]
    assert [len(said) for said in summaries] == [1] + [0] * (steady_cycles - 1) + [1]
    first = summaries[0][0]
    assert (first["rule"], first["object"], first["outcome"]) == ("kafka-resize", None, "summary")
    assert first["counts"] == {"holds": 1, "clear": 1, "no-data": 1}
    assert (first["selected"], first["excluded"], first["ignored"], first["written"]) == (4, 0, 1, 3)
    assert first["cycle_seconds"] == 0.0  # no virtual time passes within a cycle here
    heartbeat = summaries[-1][0]
    assert (heartbeat["counts"], heartbeat["written"]) == (first["counts"], 0)
    (said,) = events(changed[0], "evaluation-summary")
    assert said["counts"] == {"holds": 2, "clear": 0, "no-data": 1}
    written = [r["object"] for r in events(changed[0], "evaluation")]
    assert key(0) in written and said["written"] == len(written)


@pytest.mark.parametrize(("auditing", "per_steady_cycle"), [("all", 1001), ("changes", 0)])
async def test_a_steady_rule_over_a_thousand_claims(auditing: str, per_steady_cycle: int) -> None:
    """Records per cycle for 1,000 steady claims: the first cycle says everything (an evaluation per claim,
    and the summary; a quiet claim has no state to leave Initializing), then `all` repeats each evaluation."""
    world = World(claims=1000, auditing=auditing)

    first, *steady = await world.cycles(5)

    assert Counter(r["event"] for r in first) == {"evaluation": 1000, "evaluation-summary": 1}
    assert [len(cycle) for cycle in steady] == [per_steady_cycle] * 4


FOR_SECONDS = 20
LONG_WAIT_RULE = load_rule(REFERENCE_RULE.replace("  conditions:\n", f"  conditions:\n    for: {FOR_SECONDS}\n"))


async def state_writes_per_cycle(world: World, api: InMemoryRuleObjects, count: int) -> list[int]:
    writes = []
    for _ in range(count):
        before = len(api.status_writes)
        await world.cycles(1)
        writes.append(len(api.status_writes) - before)
    return writes


def planned(world: World) -> list[AuditRecord]:
    return [record for record in world.records if record["event"] == "action-planned"]


async def test_while_for_is_waited_for_the_state_is_written_once_per_real_change() -> None:
    api = InMemoryRuleObjects()
    world = World(claims=1, rule=LONG_WAIT_RULE, store=StateStore(kube=cast(KubeClient, api)))

    assert await state_writes_per_cycle(world, api, 1) == [0]  # quiet: Normal, no AutopilotRuleObject
    world.usage(0, 90.0)
    triggered_at = world.clock.now()
    waiting = await state_writes_per_cycle(world, api, FOR_SECONDS // int(POLL))
    assert planned(world) == []
    await world.cycles(1)

    assert waiting == [1] + [0] * (FOR_SECONDS // int(POLL) - 1)  # Triggered, then only lastHoldingAt moves
    assert [record["time"] for record in planned(world)] == [iso_time(triggered_at + FOR_SECONDS)]


async def test_an_agent_restarted_while_for_is_waited_for_counts_the_unseen_time_as_a_gap() -> None:
    """The stored lastHoldingAt is the Triggered write's: over GAP_POLL_INTERVALS polls old after the restart."""
    api = InMemoryRuleObjects()
    world = World(claims=1, rule=LONG_WAIT_RULE, store=StateStore(kube=cast(KubeClient, api)))
    world.usage(0, 90.0)
    await world.cycles(6)  # Triggered at t0, then holding, unwritten, until t0 + 10 s

    restarted = StateStore(kube=cast(KubeClient, api))
    world.cycle.store = world.runner.store = restarted
    restarted_at = world.clock.now()
    first, *_ = await world.cycles(FOR_SECONDS // int(POLL) + 1)

    (restart,) = events(first, "evaluation")
    assert restart["reason"] == "`for` restarted: no holding sample for 12s (over 4s)"
    assert [record["time"] for record in planned(world)] == [iso_time(restarted_at + FOR_SECONDS)]


async def test_a_kept_last_holding_time_gives_way_to_another_writers_state() -> None:
    api = InMemoryRuleObjects()
    ours, theirs = StateStore(kube=cast(KubeClient, api)), StateStore(kube=cast(KubeClient, api))
    pvc = key(0)
    triggered = ObjectState(state=RuleState.TRIGGERED, since=0.0, active_at=0.0, last_holding_at=0.0)
    await ours.save(rule=RULE.name, object_key=pvc, object_kind="PersistentVolumeClaim", state=triggered)
    holding = replace(triggered, last_holding_at=2.0)
    await ours.save(rule=RULE.name, object_key=pvc, object_kind="PersistentVolumeClaim", state=holding)
    assert len(api.status_writes) == 1
    assert (await ours.load(RULE.name))[pvc] == holding

    await theirs.load(RULE.name)
    normal = ObjectState(state=RuleState.NORMAL, since=3.0)
    await theirs.save(rule=RULE.name, object_key=pvc, object_kind="PersistentVolumeClaim", state=normal)

    assert (await ours.load(RULE.name))[pvc] == normal


# --- AutopilotRuleObjects only where there is state (agent.core.collection, agent.runtime.collector) --------


async def test_a_first_cycle_over_ten_thousand_quiet_claims_writes_no_state() -> None:
    api = InMemoryRuleObjects()
    world = World(claims=10_000, store=StateStore(kube=cast(KubeClient, api)))

    (first,) = await world.cycles(1)

    assert (api.objects, api.status_writes) == ({}, [])
    assert Counter(r["event"] for r in first) == {"evaluation": 10_000, "evaluation-summary": 1}


async def test_the_first_transition_away_from_normal_creates_the_state_object() -> None:
    api = InMemoryRuleObjects()
    store = StateStore(kube=cast(KubeClient, api))
    world = World(claims=3, rule=LONG_WAIT_RULE, store=store)
    await world.cycles(2)
    assert api.objects == {}

    world.usage(1, 90.0)
    await world.cycles(1)

    stored = await store.load(LONG_WAIT_RULE.name)
    assert {object_key: state.state for object_key, state in stored.items()} == {key(1): RuleState.TRIGGERED}
    assert len(api.objects) == 1


NOW = 100_000.0
GRACE = 3600.0


def collector_world() -> tuple[World, InMemoryRuleObjects, StateStore, StateCollector, list[AuditRecord]]:
    api = InMemoryRuleObjects()
    store = StateStore(kube=cast(KubeClient, api))
    world = World(claims=3, store=store)
    world.clock.advance(NOW - world.clock.now())
    collected: list[AuditRecord] = []
    collector = StateCollector(
        store=store,
        inventory=world.cycle.inventory,
        rules=lambda: [world.rule],
        trail=AuditTrail(stream=io.StringIO(), listener=collected.append),
        clock=world.clock,
        acting=lambda: True,
        grace_seconds=GRACE,
    )
    return world, api, store, collector, collected


async def store_states(store: StateStore, states: dict[tuple[str, str], ObjectState]) -> None:
    for (rule, object_key), state in states.items():
        await store.save(rule=rule, object_key=object_key, object_kind="PersistentVolumeClaim", state=state)


async def test_the_collector_deletes_exactly_the_states_no_longer_needed() -> None:
    world, api, store, collector, collected = collector_world()
    triggered = ObjectState(state=RuleState.TRIGGERED, since=NOW - 10, active_at=NOW - 10)
    await store_states(
        store,
        {
            (RULE.name, key(0)): triggered,  # live, in an episode: kept
            (RULE.name, key(1)): ObjectState(state=RuleState.NORMAL, since=NOW - 50),  # nothing counted: collected
            (RULE.name, key(2)): ObjectState(
                state=RuleState.NORMAL, cooldown_until=NOW + 2 * GRACE
            ),  # in cooldown: kept
            (RULE.name, "kafka/deleted-claim"): triggered,  # object gone: collected after the grace
            ("a-removed-rule", key(0)): triggered,  # rule gone: collected after the grace
            (RULE.name, "kafka/deleted-mid-resize"): ObjectState(state=RuleState.ACTIVE_ACTIONS_IN_PROGRESS),
        },
    )

    first = await collector.sweep()
    world.clock.advance(GRACE - 1)
    before_grace = await collector.sweep()
    world.clock.advance(1)
    after_grace = await collector.sweep()

    assert first == [(RULE.name, key(1))]
    assert before_grace == []
    assert sorted(after_grace) == [("a-removed-rule", key(0)), (RULE.name, "kafka/deleted-claim")]
    assert sorted((await store.load(RULE.name)).keys()) == [key(0), key(2), "kafka/deleted-mid-resize"]
    assert [(r["event"], r["object"], r["outcome"]) for r in collected][:1] == [("state-collected", key(1), "deleted")]
    assert collected[0]["reason"] == "back to Normal with no history a policy counts"
    assert sorted(r["reason"] for r in collected[1:]) == [
        f"object kafka/deleted-claim is gone (for {GRACE:.0f}s, grace {GRACE:.0f}s)",
        f"rule a-removed-rule is gone (for {GRACE:.0f}s, grace {GRACE:.0f}s)",
    ]
    assert len(api.deletes) == 3


async def test_a_state_another_writer_moved_after_the_listing_is_not_collected() -> None:
    _, api, store, collector, collected = collector_world()
    await store_states(store, {(RULE.name, key(1)): ObjectState(state=RuleState.NORMAL, since=NOW - 50)})
    theirs = StateStore(kube=cast(KubeClient, api))
    listed = store.stored_pairs

    async def listing_then_another_write() -> list[StoredPair]:
        pairs = await listed()
        await theirs.load(RULE.name)
        triggered = ObjectState(state=RuleState.TRIGGERED, since=NOW, active_at=NOW)
        await theirs.save(rule=RULE.name, object_key=key(1), object_kind="PersistentVolumeClaim", state=triggered)
        return pairs

    store.stored_pairs = listing_then_another_write  # type: ignore[method-assign]
    assert await collector.sweep() == []
    assert (api.deletes, collected) == ([], [])
    assert (await theirs.load(RULE.name))[key(1)].state is RuleState.TRIGGERED


async def test_only_the_acting_replica_collects() -> None:
    _, api, store, collector, collected = collector_world()
    await store_states(store, {(RULE.name, key(1)): ObjectState(state=RuleState.NORMAL, since=NOW - 50)})
    collector.acting = lambda: False

    assert await collector.sweep() == []
    assert (api.deletes, collected, len(api.objects)) == ([], [], 1)
