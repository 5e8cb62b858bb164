"""Preferred-leader elections: batching, what counts as done, and which partitions an executor picks."""

from __future__ import annotations

import pytest

from agent.actions.base import broker_id_of
from agent.actions.leader_rebalance.executor import not_electable, not_led_by_preferred
from agent.actions.mutations import ElectPreferredLeaders
from agent.core.elections import ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE, PartitionElection, batches
from agent.core.kafka_safety import ClusterView, PartitionState, preferred_leader_candidates
from agent.core.matching import broker_object

T = [("t", n) for n in range(7)]


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (50, [tuple(T)]),
        (7, [tuple(T)]),
        (3, [tuple(T[0:3]), tuple(T[3:6]), tuple(T[6:7])]),
        (1, [(item,) for item in T]),
    ],
)
def test_batches_keep_order_and_bound_the_size(size: int, expected: list[tuple[tuple[str, int], ...]]) -> None:
    assert list(batches(T, size)) == expected


def test_no_partitions_give_no_batch_and_a_zero_size_is_refused() -> None:
    assert list(batches([], 5)) == []
    with pytest.raises(ValueError, match="at least 1"):
        list(batches(T, 0))


@pytest.mark.parametrize(
    ("code", "done", "said"),
    [
        (0, True, "t-1: elected"),
        (ELECTION_NOT_NEEDED, True, "t-1: ELECTION_NOT_NEEDED"),
        (PREFERRED_LEADER_NOT_AVAILABLE, False, "t-1: PREFERRED_LEADER_NOT_AVAILABLE (why)"),
        (3, False, "t-1: UNKNOWN_TOPIC_OR_PARTITION (why)"),
        (999, False, "t-1: error code 999 (why)"),
    ],
)
def test_a_partition_result_is_done_only_when_its_preferred_replica_leads(code: int, done: bool, said: str) -> None:
    message = None if code in (0, ELECTION_NOT_NEEDED) else "why"
    result = PartitionElection(topic="t", partition=1, error_code=code, error_message=message)
    assert result.done is done
    assert result.describe() == said


def part(topic: str, n: int, *, leader: int | None, replicas: tuple[int, ...], isr: tuple[int, ...]) -> PartitionState:
    return PartitionState(topic=topic, partition=n, leader=leader, replicas=replicas, isr=isr, min_insync=2)


# Broker 3 restarted: t-0 and t-1 prefer it and it is back in their ISR; t-2 prefers it but it is
# still catching up; t-3 it already leads; u-0 prefers broker 1 and is led by 2.
AFTER_RESTART = ClusterView(
    brokers_registered=frozenset({0, 1, 2, 3}),
    partitions=(
        part("t", 0, leader=0, replicas=(3, 0, 1), isr=(0, 1, 3)),
        part("t", 1, leader=1, replicas=(3, 1, 2), isr=(1, 2, 3)),
        part("t", 2, leader=2, replicas=(3, 2, 0), isr=(2, 0)),
        part("t", 3, leader=3, replicas=(3, 0, 2), isr=(3, 0, 2)),
        part("u", 0, leader=2, replicas=(1, 2, 3), isr=(1, 2, 3)),
    ),
)


def test_the_executor_elects_only_in_sync_preferred_partitions_of_its_broker() -> None:
    assert preferred_leader_candidates(AFTER_RESTART, broker_id=3) == [("t", 0), ("t", 1)]
    assert not_electable(AFTER_RESTART, broker_id=3) == [("t", 2)]
    assert not_electable(AFTER_RESTART, broker_id=0) == []


def test_verification_names_each_partition_still_away_from_its_preferred_replica() -> None:
    assert not_led_by_preferred(AFTER_RESTART, [("t", 0), ("t", 3), ("gone", 0)]) == [
        "t-0 (leader 0, preferred 3)",
        "gone-0 (not in metadata)",
    ]


def test_the_broker_id_comes_from_the_inventory_identity() -> None:
    assert broker_id_of(broker_object(namespace="kafka", pod="kafka-2", broker_id=2, labels={})) == 2


def test_the_mutation_describes_the_partitions_it_elects() -> None:
    many = tuple(("orders", n) for n in range(12))
    assert ElectPreferredLeaders(broker_id=3, partitions=(("t", 0),)).describe() == (
        "elect preferred leader (broker 3) of 1 partition: t-0"
    )
    assert ElectPreferredLeaders(broker_id=3, partitions=many).describe().endswith("orders-9 and 2 more")
