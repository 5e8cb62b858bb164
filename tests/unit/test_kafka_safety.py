"""Kafka guardrails: when a broker counts as alive, min ISR after a step, preferred-leader candidates."""

from __future__ import annotations

import pytest

from agent.core.kafka_safety import (
    ClusterView,
    PartitionState,
    brokers_seen_alive,
    min_isr_violations,
    min_isr_violations_during_failures,
    preferred_leader_candidates,
)


def part(
    name: str, *, leader: int | None, replicas: tuple[int, ...], isr: tuple[int, ...], min_insync: int = 2
) -> PartitionState:
    topic, _, number = name.rpartition("-")
    return PartitionState(
        topic=topic, partition=int(number), leader=leader, replicas=replicas, isr=isr, min_insync=min_insync
    )


def view(registered: set[int], *partitions: PartitionState) -> ClusterView:
    return ClusterView(brokers_registered=frozenset(registered), partitions=partitions)


HEALTHY = view(
    {0, 1, 2, 3},
    part("orders-0", leader=0, replicas=(0, 1, 2), isr=(0, 1, 2)),
    part("orders-1", leader=1, replicas=(1, 2, 3), isr=(1, 2, 3)),
    part("orders-2", leader=2, replicas=(2, 3, 0), isr=(2, 3, 0)),
    part("orders-3", leader=1, replicas=(3, 1, 2), isr=(1, 2)),
)
# Broker 1 killed and fenced: gone from the metadata, its leadership and ISR slots moved away.
ONE_FENCED = view(
    {0, 2, 3},
    part("orders-0", leader=0, replicas=(0, 1, 2), isr=(0, 2)),
    part("orders-1", leader=2, replicas=(1, 2, 3), isr=(2, 3)),
    part("orders-2", leader=2, replicas=(2, 3, 0), isr=(2, 3, 0)),
    part("orders-3", leader=2, replicas=(3, 1, 2), isr=(2,)),
)
# A partition whose last in-sync replica (1) was fenced: Kafka keeps it in the ISR, without a leader.
LAST_REPLICA_FENCED = view(
    {0, 2},
    part("solo-0", leader=None, replicas=(1,), isr=(1,), min_insync=1),
    part("pair-0", leader=0, replicas=(0, 2), isr=(0, 2)),
)


# --- data model ------------------------------------------------------------------------------


def test_partition_state_is_frozen_and_keyword_only() -> None:
    state = part("orders-7", leader=1, replicas=(1, 2), isr=(1, 2))

    with pytest.raises(AttributeError):
        state.leader = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        PartitionState("t", 0, 1, (1,), (1,), 1)  # type: ignore[misc]
    assert state.name == "orders-7"
    assert state.preferred_leader == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"partition": -1, "min_insync": 1}, "partition -1 is negative"),
        ({"partition": 0, "min_insync": 0}, "t-0: min.insync.replicas 0 is below 1"),
    ],
)
def test_partition_state_rejects_impossible_values(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PartitionState(topic="t", leader=None, replicas=(), isr=(), **kwargs)


def test_live_isr_drops_fenced_brokers() -> None:
    (solo, pair) = LAST_REPLICA_FENCED.partitions

    assert LAST_REPLICA_FENCED.live_isr(solo) == ()
    assert LAST_REPLICA_FENCED.live_isr(pair) == (0, 2)


# --- brokers_seen_alive ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "cluster", "brokers", "expected"),
    [
        (
            "healthy broker: registered, leading, in sync",
            HEALTHY,
            [1],
            {1: ["registered in cluster metadata", "leads 2 partitions", "in the ISR of 3 partitions"]},
        ),
        (
            "follower only, one leadership: singular nouns",
            HEALTHY,
            [0],
            {0: ["registered in cluster metadata", "leads 1 partition", "in the ISR of 2 partitions"]},
        ),
        ("killed and fenced: gone", ONE_FENCED, [1], {1: []}),
        (
            "several brokers, order kept, duplicates once",
            ONE_FENCED,
            [3, 1, 3],
            {3: ["registered in cluster metadata", "in the ISR of 2 partitions"], 1: []},
        ),
        (
            "registered but idle (no partitions): still alive",
            view({5}),
            [5],
            {5: ["registered in cluster metadata"]},
        ),
        (
            "fenced in metadata but still leading (control-plane lag): alive",
            view({0}, part("t-0", leader=4, replicas=(4, 0), isr=(4, 0))),
            [4],
            {4: ["leads 1 partition", "in the ISR of 1 partition"]},
        ),
        (
            "unregistered but in the ISR of a led partition: alive",
            view({0}, part("t-0", leader=0, replicas=(0, 4), isr=(0, 4))),
            [4],
            {4: ["in the ISR of 1 partition"]},
        ),
        ("fenced last ISR member of a leaderless partition: gone", LAST_REPLICA_FENCED, [1], {1: []}),
        (
            "registered last ISR member of a leaderless partition: alive",
            view({1}, part("t-0", leader=None, replicas=(1,), isr=(1,), min_insync=1)),
            [1],
            {1: ["registered in cluster metadata", "in the ISR of 1 partition"]},
        ),
        ("unknown broker id: gone", HEALTHY, [9], {9: []}),
        ("no brokers asked", HEALTHY, [], {}),
    ],
)
def test_brokers_seen_alive(
    case: str, cluster: ClusterView, brokers: list[int], expected: dict[int, list[str]]
) -> None:
    seen = brokers_seen_alive(cluster, brokers)

    assert seen == expected, case
    assert list(seen) == list(expected), case


# --- min_isr_violations ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "cluster", "removing", "expected"),
    [
        ("nothing removed", HEALTHY, set(), []),
        ("one of three in-sync replicas: 2 left", HEALTHY, {0}, []),
        (
            "the partition already at its minimum",
            HEALTHY,
            {2},
            ["orders-3: ISR [1,2] minus [2] leaves 1 < min.insync.replicas 2"],
        ),
        (
            "two brokers at once",
            HEALTHY,
            {2, 3},
            [
                "orders-1: ISR [1,2,3] minus [2,3] leaves 1 < min.insync.replicas 2",
                "orders-2: ISR [2,3,0] minus [2,3] leaves 1 < min.insync.replicas 2",
                "orders-3: ISR [1,2] minus [2] leaves 1 < min.insync.replicas 2",
            ],
        ),
        ("a fenced broker already out of every ISR changes nothing", ONE_FENCED, {1}, []),
        (
            "a second, live broker after the first was fenced",
            ONE_FENCED,
            {3},
            ["orders-1: ISR [2,3] minus [3] leaves 1 < min.insync.replicas 2"],
        ),
        (
            "already below the minimum and losing its leader: flagged, and said so",
            ONE_FENCED,
            {2},
            [
                "orders-0: ISR [0,2] minus [2] leaves 1 < min.insync.replicas 2",
                "orders-1: ISR [2,3] minus [2] leaves 1 < min.insync.replicas 2",
                "orders-3: ISR [2] minus [2] leaves 0 < min.insync.replicas 2 (already below it before this step)",
            ],
        ),
        ("a fenced last ISR member kept by Kafka is not an in-sync replica to lose", LAST_REPLICA_FENCED, {1}, []),
        ("a lagging follower (3 in orders-3) outside the ISR changes nothing", HEALTHY, {3}, []),
        (
            "min.insync.replicas 1: only the last in-sync replica counts",
            view({0, 1}, part("logs-0", leader=0, replicas=(0, 1), isr=(0, 1), min_insync=1)),
            {0, 1},
            ["logs-0: ISR [0,1] minus [0,1] leaves 0 < min.insync.replicas 1"],
        ),
        (
            "sorted by topic, then partition number (10 after 9)",
            view(
                {0, 1},
                part("b-10", leader=0, replicas=(0, 1), isr=(0, 1)),
                part("a-0", leader=0, replicas=(0, 1), isr=(0, 1)),
                part("b-9", leader=0, replicas=(0, 1), isr=(0, 1)),
            ),
            {1},
            [
                "a-0: ISR [0,1] minus [1] leaves 1 < min.insync.replicas 2",
                "b-9: ISR [0,1] minus [1] leaves 1 < min.insync.replicas 2",
                "b-10: ISR [0,1] minus [1] leaves 1 < min.insync.replicas 2",
            ],
        ),
    ],
)
def test_min_isr_violations(case: str, cluster: ClusterView, removing: set[int], expected: list[str]) -> None:
    assert min_isr_violations(cluster, removing=frozenset(removing)) == expected, case


# --- preferred_leader_candidates -------------------------------------------------------------

# After broker 1 came back: it is in sync again but leads nothing (no auto rebalance).
REJOINED = view(
    {0, 1, 2, 3},
    part("orders-0", leader=0, replicas=(0, 1, 2), isr=(0, 2, 1)),
    part("orders-1", leader=2, replicas=(1, 2, 3), isr=(2, 3, 1)),
    part("orders-2", leader=2, replicas=(2, 3, 0), isr=(2, 3, 0)),
    part("orders-3", leader=2, replicas=(3, 1, 2), isr=(2, 1)),
    part("orders-4", leader=3, replicas=(1, 3, 0), isr=(3, 0)),
    part("orders-5", leader=None, replicas=(), isr=()),
)


@pytest.mark.parametrize(
    ("case", "cluster", "broker_id", "expected"),
    [
        ("balanced cluster", HEALTHY, None, []),
        (
            "off-preferred, preferred in sync; orders-3's preferred 3 is not in sync; orders-4's 1 lags",
            REJOINED,
            None,
            [("orders", 1)],
        ),
        ("only those preferred by broker 1", REJOINED, 1, [("orders", 1)]),
        ("broker 3 is preferred only where it is out of sync", REJOINED, 3, []),
        (
            "a fenced preferred replica kept in the ISR cannot be elected",
            view({0}, part("t-0", leader=None, replicas=(1, 0), isr=(1,))),
            None,
            [],
        ),
        (
            "a leaderless partition whose preferred replica is unfenced and in sync",
            view({0, 1}, part("t-0", leader=None, replicas=(1, 0), isr=(1,))),
            None,
            [("t", 0)],
        ),
        (
            "sorted",
            view(
                {0, 1},
                part("b-1", leader=1, replicas=(0, 1), isr=(0, 1)),
                part("a-2", leader=1, replicas=(0, 1), isr=(0, 1)),
                part("a-1", leader=0, replicas=(1, 0), isr=(0, 1)),
            ),
            None,
            [("a", 1), ("a", 2), ("b", 1)],
        ),
    ],
)
def test_preferred_leader_candidates(
    case: str, cluster: ClusterView, broker_id: int | None, expected: list[tuple[str, int]]
) -> None:
    assert preferred_leader_candidates(cluster, broker_id=broker_id) == expected, case


# --- the guard of a node remediation, counting every failing node -------------------------------------


def three_replicas(name: str, *, isr: tuple[int, ...], min_insync: int = 2) -> PartitionState:
    return PartitionState(
        topic=name, partition=0, leader=isr[0] if isr else None, replicas=(1, 2, 3), isr=isr, min_insync=min_insync
    )


@pytest.mark.parametrize(
    ("registered", "isr", "down", "expected"),
    [
        # one node failed: broker 1 fenced, out of the ISR; 2 and 3 are enough
        ({2, 3}, (2, 3), {1}, []),
        # two nodes failed at once: 1 fenced, 2 still heartbeating from its failing node
        (
            {2, 3},
            (2, 3),
            {1, 2},
            ["t-0: with brokers [1,2] on failing nodes, 1 live in-sync replica [3] < min.insync.replicas 2"],
        ),
        # both fenced already
        (
            {3},
            (3,),
            {1, 2},
            ["t-0: with brokers [1,2] on failing nodes, 1 live in-sync replica [3] < min.insync.replicas 2"],
        ),
        # a stale ISR entry of a fenced broker is not a live replica
        (
            {3},
            (2, 3),
            {1},
            ["t-0: with brokers [1] on failing nodes, 1 live in-sync replica [3] < min.insync.replicas 2"],
        ),
    ],
)
def test_the_failure_guard_counts_every_failing_node(
    registered: set[int], isr: tuple[int, ...], down: set[int], expected: list[str]
) -> None:
    view = ClusterView(brokers_registered=frozenset(registered), partitions=(three_replicas("t", isr=isr),))
    assert min_isr_violations_during_failures(view, moving=frozenset({1}), down=frozenset(down)) == expected


def test_the_failure_guard_looks_only_at_partitions_of_the_brokers_it_moves() -> None:
    elsewhere = PartitionState(topic="u", partition=0, leader=None, replicas=(4, 5), isr=(), min_insync=2)
    view = ClusterView(brokers_registered=frozenset({3}), partitions=(elsewhere,))
    assert min_isr_violations_during_failures(view, moving=frozenset({1}), down=frozenset({1, 2})) == []
