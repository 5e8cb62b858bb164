"""LeaderRebalanceExecutor on a fake Kafka and a fake clock: elect, verify, and every way out.

The world: brokers 0, 1 and 2 registered. Broker 1 (pod kafka/kafka-1) is the preferred leader of
orders-0 (led by 0), orders-1 (led by 2) and payments-0 (which it leads already); broker 0 is the
preferred leader of orders-2. The rule elects in batches of `batchsize`, verifying within 30 s.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from fakes import CrashingApplier, FakeClock, FakeCluster, FakeKafka, RecordingApplier, SimulatedCrash
from shell_support import WALL_BUDGET_SECONDS, load_rule, params, plan, wall_time

from agent.actions.base import Outcome, OutcomeKind
from agent.actions.leader_rebalance.executor import LeaderRebalanceExecutor
from agent.actions.mutations import Applier, ElectPreferredLeaders, LiveApplier
from agent.adapters.kafka import KafkaUnavailableError
from agent.core.elections import PREFERRED_LEADER_NOT_AVAILABLE
from agent.core.engine import PlannedAction
from agent.core.matching import TargetObject, broker_object
from agent.core.rules import Rule

RULE_TEXT = """\
apiVersion: kafka-autopilot.io/v1alpha1
kind: AutopilotRule
metadata:
  name: kafka-leader-rebalance
spec:
  selector:
    matchLabels:
      app: kafka
  conditions:
    expressions:
      - keyAlias: PreferredReplicaImbalance
        operator: Gt
        values: ["0"]
  actions:
    - name: kafka-autopilot.io.action.kafka/rebalance-leaders
      params:
        batchsize: "BATCH"
        timeout: "30"
"""
RULE = load_rule(RULE_TEXT.replace("BATCH", "50"))
ONE_AT_A_TIME = load_rule(RULE_TEXT.replace("BATCH", "1"))
TARGET = broker_object(namespace="kafka", pod="kafka-1", broker_id=1, labels={"app": "kafka"})
ELECT_BOTH = "elect preferred leader (broker 1) of 2 partitions: orders-0, orders-1"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def kafka(clock: FakeClock) -> FakeKafka:
    kafka = FakeKafka(clock=clock)
    kafka.registered = {0, 1, 2}
    kafka.add_partition("orders", 0, replicas=[1, 0, 2], leader=0)
    kafka.add_partition("orders", 1, replicas=[1, 2, 0], leader=2)
    kafka.add_partition("orders", 2, replicas=[0, 1, 2], leader=1)
    kafka.add_partition("payments", 0, replicas=[1, 2], leader=1)
    return kafka


def live(kafka: FakeKafka | None) -> LiveApplier:
    return LiveApplier(writer=FakeCluster(), kafka=kafka)


def planned(rule: Rule, clock: FakeClock) -> PlannedAction:
    return plan(rule, TARGET, now=clock.now())


async def execute(
    kafka: FakeKafka | None,
    clock: FakeClock,
    *,
    rule: Rule = RULE,
    applier: Applier | None = None,
    action: PlannedAction | None = None,
    target: TargetObject = TARGET,
) -> Outcome:
    executor = LeaderRebalanceExecutor(kafka=kafka, applier=applier or live(kafka), clock=clock)
    return await executor.run(planned=action or planned(rule, clock), target=target, params=params(rule), rule=rule)


async def test_elects_the_partitions_broker_1_should_lead_and_verifies_in_metadata(
    kafka: FakeKafka, clock: FakeClock
) -> None:
    kafka.shows_after_sleeps = 2

    outcome = await execute(kafka, clock)

    assert outcome == Outcome(
        kind=OutcomeKind.VERIFIED,
        reason="broker 1 leads its 2 preferred partitions again: orders-0, orders-1",
        mutations=(ELECT_BOTH,),
    )
    assert kafka.elections == [(("orders", 0), ("orders", 1))]
    assert kafka.leaders() == {("orders", 0): 1, ("orders", 1): 1, ("orders", 2): 1, ("payments", 0): 1}
    assert clock.sleeps == [1.0, 1.0]


async def test_elects_batch_by_batch(kafka: FakeKafka, clock: FakeClock) -> None:
    outcome = await execute(kafka, clock, rule=ONE_AT_A_TIME)

    assert outcome.kind is OutcomeKind.VERIFIED
    assert outcome.mutations == (
        "elect preferred leader (broker 1) of 1 partition: orders-0",
        "elect preferred leader (broker 1) of 1 partition: orders-1",
    )
    assert kafka.elections == [(("orders", 0),), (("orders", 1),)]


async def test_dry_run_records_the_election_and_moves_no_leader(kafka: FakeKafka, clock: FakeClock) -> None:
    applier = RecordingApplier()
    before = kafka.leaders()

    outcome = await execute(kafka, clock, applier=applier)

    assert outcome == Outcome(
        kind=OutcomeKind.DRY_RUN,
        reason="dry-run: recorded, nothing changed (2 partitions to elect)",
        mutations=(ELECT_BOTH,),
    )
    assert applier.recorded == [ElectPreferredLeaders(broker_id=1, partitions=(("orders", 0), ("orders", 1)))]
    assert (kafka.elections, kafka.leaders()) == ([], before)


async def test_nothing_to_elect_is_verified_without_a_request(kafka: FakeKafka, clock: FakeClock) -> None:
    for key in (("orders", 0), ("orders", 1)):
        kafka.partitions[key] = replace(kafka.partitions[key], leader=1)

    outcome = await execute(kafka, clock)

    assert outcome == Outcome(
        kind=OutcomeKind.VERIFIED, reason="nothing to elect: broker 1 leads every partition it is preferred for"
    )
    assert kafka.elections == []


async def test_held_for_a_broker_object_without_a_broker_id(kafka: FakeKafka, clock: FakeClock) -> None:
    unknown = broker_object(
        namespace="kafka", pod="kafka-1", broker_id=None, labels={"app": "kafka"}, identity_problem="no broker here"
    )

    outcome = await execute(kafka, clock, target=unknown)

    assert outcome == Outcome(kind=OutcomeKind.HELD, reason="kafka/kafka-1: broker id unknown: no broker here")
    assert kafka.views == 0
    assert kafka.elections == []


async def test_the_broker_id_comes_from_the_objects_identity_not_its_pod_name(
    kafka: FakeKafka, clock: FakeClock
) -> None:
    # Pod kafka-0 runs broker 1 (as Kafka's advertised address said): broker 1's partitions are elected.
    renamed = broker_object(namespace="kafka", pod="kafka-0", broker_id=1, labels={"app": "kafka"})

    outcome = await execute(kafka, clock, target=renamed)

    assert outcome.kind is OutcomeKind.VERIFIED, outcome
    assert sorted(p for batch in kafka.elections for p in batch) == [("orders", 0), ("orders", 1)]


async def test_held_without_a_kafka_connection(clock: FakeClock) -> None:
    outcome = await execute(None, clock, applier=RecordingApplier())

    assert outcome == Outcome(
        kind=OutcomeKind.HELD, reason="no Kafka connection: cannot read leadership or elect (--kafka)"
    )


@pytest.mark.parametrize("fenced", [False, True], ids=["out-of-the-isr", "fenced"])
async def test_held_while_the_broker_is_not_yet_electable(kafka: FakeKafka, clock: FakeClock, fenced: bool) -> None:
    for key in (("orders", 0), ("orders", 1)):
        kafka.partitions[key] = replace(kafka.partitions[key], isr=(0, 2))
    if fenced:
        kafka.registered.discard(1)

    outcome = await execute(kafka, clock)

    assert outcome.kind is OutcomeKind.HELD
    assert outcome.reason == (
        "nothing elected: broker 1 is not (yet) an in-sync replica of the partitions it is preferred for "
        "and does not lead: orders-0, orders-1"
    )
    assert kafka.elections == []


async def test_failed_when_the_election_never_shows_in_metadata(kafka: FakeKafka, clock: FakeClock) -> None:
    kafka.shows_after_sleeps = None
    started = clock.now()

    with wall_time() as took:
        outcome = await execute(kafka, clock)

    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.reason == (
        "0 of 2 partitions led by broker 1 again; not led by the preferred replica within 30s: "
        "orders-0 (leader 0, preferred 1), orders-1 (leader 2, preferred 1)"
    )
    assert outcome.mutations == (ELECT_BOTH,)
    assert clock.now() - started == 30.0
    assert took.seconds < WALL_BUDGET_SECONDS


async def test_a_partition_kafka_refuses_is_named_and_the_others_still_verified(
    kafka: FakeKafka, clock: FakeClock
) -> None:
    kafka.refuse[("orders", 1)] = PREFERRED_LEADER_NOT_AVAILABLE

    outcome = await execute(kafka, clock, rule=ONE_AT_A_TIME)

    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.reason == ("1 of 2 partitions led by broker 1 again; orders-1: PREFERRED_LEADER_NOT_AVAILABLE")
    assert len(outcome.mutations) == 2
    assert kafka.leaders()[("orders", 0)] == 1
    assert kafka.leaders()[("orders", 1)] == 2


async def test_an_unreachable_kafka_during_the_election_raises(kafka: FakeKafka, clock: FakeClock) -> None:
    kafka.failures.fail(
        "elect_preferred_leaders", KafkaUnavailableError(bootstrap_servers="kafka:9092", reason="timed out")
    )

    with pytest.raises(KafkaUnavailableError):
        await execute(kafka, clock)

    assert kafka.leaders()[("orders", 0)] == 0


@pytest.mark.parametrize(
    ("rule", "crash_after", "elections"),
    [
        (RULE, 1, [(("orders", 0), ("orders", 1))]),
        (ONE_AT_A_TIME, 1, [(("orders", 0),), (("orders", 1),)]),
        (ONE_AT_A_TIME, 2, [(("orders", 0),), (("orders", 1),)]),
    ],
    ids=["after-the-one-batch", "after-batch-1-of-2", "after-batch-2-of-2"],
)
async def test_resumed_after_a_crash_it_elects_only_what_is_left(
    kafka: FakeKafka, clock: FakeClock, rule: Rule, crash_after: int, elections: list[tuple[tuple[str, int], ...]]
) -> None:
    action = planned(rule, clock)
    crashing = CrashingApplier(applier=live(kafka), crash_after=crash_after)
    with pytest.raises(SimulatedCrash):
        await execute(kafka, clock, rule=rule, applier=crashing, action=action)

    outcome = await execute(kafka, clock, rule=rule, action=action)

    assert outcome.kind is OutcomeKind.VERIFIED
    assert kafka.elections == elections
    assert kafka.leaders()[("orders", 0)] == kafka.leaders()[("orders", 1)] == 1
