"""Kafka's own view of the cluster, and the guardrails every broker-affecting action must pass.

Kubernetes can say that a node is NotReady; only Kafka can say whether the brokers on it are gone.
A node that lost its link to the API server may still run a healthy broker that heartbeats to the
KRaft controller, leads partitions and sits in ISRs. Force-deleting its pod would start a second
broker with the same id elsewhere. So before any destructive step, executors take a `ClusterView`
(filled by `agent.adapters.kafka`) and ask these pure functions:

- `brokers_seen_alive`: why Kafka still considers a broker alive; act only on an empty answer;
- `min_isr_violations`: which partitions the step would leave below `min.insync.replicas`;
- `preferred_leader_candidates`: which partitions a preferred-leader election may move.

No I/O, no clock, no asyncio: the view is a snapshot passed in, so every rule here is table-tested.

How Kafka's metadata is read here
---------------------------------
- `brokers_registered` are the brokers a metadata response lists. In KRaft that is the registered,
  *unfenced* brokers: the controller fences a broker whose heartbeats stop for
  `broker.session.timeout.ms`, and from then on it is no longer listed.
- When a broker is fenced, the controller removes it from every ISR and moves leadership away. The
  one exception: when it was a partition's last in-sync replica (and eligible leader replicas are
  off), Kafka keeps it in that ISR so that no out-of-sync replica is elected, and the partition has
  no leader (`leader is None`). Such a stale ISR entry is not a sign of life, and both
  `brokers_seen_alive` and `min_isr_violations` ignore it, as explained on each function.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from agent.core.broker_identity import BrokerEndpoint

__all__ = [
    "ClusterView",
    "PartitionState",
    "brokers_seen_alive",
    "min_isr_violations",
    "min_isr_violations_during_failures",
    "preferred_leader_candidates",
]


@dataclass(frozen=True, kw_only=True)
class PartitionState:
    """One partition as Kafka's metadata describes it.

    `leader` is None when the partition has no leader (Kafka's -1). `replicas` is in assignment
    order, so `replicas[0]` is the preferred leader. `min_insync` is the topic's effective
    `min.insync.replicas` (its own override, else the broker default).
    """

    topic: str
    partition: int
    leader: int | None
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    min_insync: int

    def __post_init__(self) -> None:
        if self.partition < 0:
            raise ValueError(f"{self.topic}: partition {self.partition} is negative")
        if self.min_insync < 1:
            raise ValueError(f"{self.name}: min.insync.replicas {self.min_insync} is below 1")

    @property
    def name(self) -> str:
        """`topic-partition`, as Kafka's tools print it."""
        return f"{self.topic}-{self.partition}"

    @property
    def preferred_leader(self) -> int | None:
        """The first assigned replica, or None for a partition without replicas."""
        return self.replicas[0] if self.replicas else None


@dataclass(frozen=True, kw_only=True)
class ClusterView:
    """A snapshot of Kafka's metadata: the unfenced brokers and every partition of interest."""

    brokers_registered: frozenset[int]
    partitions: tuple[PartitionState, ...]
    endpoints: tuple[BrokerEndpoint, ...] = ()
    """Every broker with the address it advertises: the registered ones, and fenced ones when Kafka
    can say (they keep their registration); what `agent.core.broker_identity` matches pods with."""

    def live_isr(self, partition: PartitionState) -> tuple[int, ...]:
        """The partition's ISR without fenced brokers (those the metadata does not list)."""
        return tuple(b for b in partition.isr if b in self.brokers_registered)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _ids(brokers: Iterable[int]) -> str:
    return "[" + ",".join(str(b) for b in brokers) + "]"


def brokers_seen_alive(view: ClusterView, broker_ids: Iterable[int]) -> dict[int, list[str]]:
    """For each broker in `broker_ids`, the reasons Kafka still sees it alive; [] means gone.

    A broker is seen alive when any of these holds, each giving one reason:

    - it is in `view.brokers_registered`: "registered in cluster metadata";
    - it leads partitions: "leads 3 partitions";
    - it is in ISRs: "in the ISR of 5 partitions". A stale entry (the broker is not registered and
      the partition has no leader, see the module docstring) is not counted: it only keeps the
      partition waiting for that broker's return, which is what a reschedule brings about.

    Only an empty list allows a destructive step on that broker's pod. Every requested broker is
    a key of the result, in the order given (duplicates once).
    """
    seen: dict[int, list[str]] = {}
    for broker in broker_ids:
        if broker in seen:
            continue
        registered = broker in view.brokers_registered
        reasons: list[str] = []
        if registered:
            reasons.append("registered in cluster metadata")
        leads = sum(1 for p in view.partitions if p.leader == broker)
        if leads:
            reasons.append(f"leads {_count(leads, 'partition')}")
        in_isr = sum(1 for p in view.partitions if broker in p.isr and (registered or p.leader is not None))
        if in_isr:
            reasons.append(f"in the ISR of {_count(in_isr, 'partition')}")
        seen[broker] = reasons
    return seen


def min_isr_violations(view: ClusterView, *, removing: frozenset[int], margin: int = 0) -> list[str]:
    """The partitions that taking the brokers in `removing` out of service would leave below
    `min.insync.replicas`, one sentence each, sorted by topic and partition.

    Semantics, per partition:

    - live ISR = the ISR without brokers absent from `view.brokers_registered` (fenced brokers
      serve nothing; Kafka lists one in an ISR only as a leaderless partition's last member);
    - taken = live ISR & `removing`; remaining = live ISR - `removing`;
    - a violation when `taken` is not empty and len(remaining) < min_insync.

    So a broker that is already out of the ISR (dead and fenced, or a lagging follower) changes
    nothing and is never the cause of a violation: rescheduling a fenced broker's pod passes.
    A partition is flagged only when the step itself takes an in-sync replica away and what is
    left is too few: that includes a partition already below its minimum that would lose one
    more in-sync replica (possibly its leader), and the sentence says so. A partition below its
    minimum that the step does not touch is not this step's violation and is not listed.

    `margin` asks for that many in-sync replicas more than `min.insync.replicas` to remain.
    """
    violations: list[str] = []
    for p in sorted(view.partitions, key=lambda p: (p.topic, p.partition)):
        live = view.live_isr(p)
        taken = [b for b in live if b in removing]
        if not taken:
            continue
        remaining = len(live) - len(taken)
        if remaining >= p.min_insync + margin:
            continue
        wanted = f"min.insync.replicas {p.min_insync}" + (f" + margin {margin}" if margin else "")
        sentence = f"{p.name}: ISR {_ids(live)} minus {_ids(taken)} leaves {remaining} < {wanted}"
        if len(live) < p.min_insync:
            sentence += " (already below it before this step)"
        violations.append(sentence)
    return violations


def min_isr_violations_during_failures(view: ClusterView, *, moving: frozenset[int], down: frozenset[int]) -> list[str]:
    """The partitions that a node remediation moving the brokers in `moving` would act on while they
    are below `min.insync.replicas`, counting every broker in `down` as out, one sentence each.

    `down` holds the brokers on **every** node failing at once (`moving` among them), whether Kafka
    has fenced them yet or not: a second failing node whose broker still heartbeats is about to stop
    serving too. Per partition with a replica in `moving`: live = its ISR without fenced brokers and
    without `down`; a violation when len(live) < min_insync. Unlike `min_isr_violations`, a broker
    already out of the ISR still counts here: it is the failure itself that is being measured, so
    the guard fires on a two-node failure that leaves a partition one live replica short, and passes
    a one-node failure that leaves every partition at its minimum or above.
    """
    violations: list[str] = []
    for p in sorted(view.partitions, key=lambda p: (p.topic, p.partition)):
        if not moving.intersection(p.replicas):
            continue
        live = [b for b in view.live_isr(p) if b not in down]
        if len(live) >= p.min_insync:
            continue
        out = sorted(b for b in p.replicas if b in down)
        violations.append(
            f"{p.name}: with brokers {_ids(out)} on failing nodes, {len(live)} live in-sync"
            f" {'replica' if len(live) == 1 else 'replicas'} {_ids(live)} < min.insync.replicas {p.min_insync}"
        )
    return violations


def preferred_leader_candidates(view: ClusterView, *, broker_id: int | None = None) -> list[tuple[str, int]]:
    """The (topic, partition) pairs a preferred-leader election may move, sorted.

    A partition qualifies when its leader is not its preferred replica (`replicas[0]`) and that
    replica is registered and in the ISR: Kafka elects only an unfenced, in-sync preferred replica.
    With `broker_id`, only the partitions whose preferred replica is that broker.
    """
    candidates: list[tuple[str, int]] = []
    for p in view.partitions:
        preferred = p.preferred_leader
        if preferred is None or p.leader == preferred:
            continue
        if broker_id is not None and preferred != broker_id:
            continue
        if preferred in p.isr and preferred in view.brokers_registered:
            candidates.append((p.topic, p.partition))
    return sorted(candidates)
