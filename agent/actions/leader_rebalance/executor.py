"""Executor for `kafka-autopilot.io.action.kafka/rebalance-leaders`: give a broker back the leadership
of the partitions it is preferred for.

After a broker restart (with `auto.leader.rebalance.enable=false`) the broker leads nothing until an
election moves leadership back. This executor does that for one broker at a time:

Plan: read Kafka's metadata and keep only the partitions whose preferred replica (the first one)
is this broker, is registered and in the ISR, and does not lead now
(`agent.core.kafka_safety.preferred_leader_candidates`). Electing a replica outside the ISR would
fail anyway (PREFERRED_LEADER_NOT_AVAILABLE), so such partitions are named in the reason instead.
Nothing left: a no-op, verified, and the reason says why; held instead when the broker is still
catching up on partitions it should lead (it may be electable at the next trigger).
Apply: ElectLeaders (PREFERRED) in batches of `batchsize` partitions, each batch one
`ElectPreferredLeaders` mutation for the applier. A partition Kafka refuses is reported by name and
error; the other batches still go.
Verify: poll metadata until every elected partition is led by its preferred replica.

Without a Kafka connection nothing can be read or elected, so the action is held.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from agent.actions.base import (
    RECORDED,
    Dependencies,
    MutationLog,
    Outcome,
    OutcomeKind,
    broker_id_of,
    finished,
    verified,
    wait_for,
)
from agent.actions.leader_rebalance.spec import LEADER_REBALANCE, LeaderRebalanceParams
from agent.actions.mutations import Applier, ElectionIncompleteError, ElectPreferredLeaders
from agent.adapters.clock import Clock
from agent.core.elections import batches, partition_list
from agent.core.engine import PlannedAction
from agent.core.kafka_safety import ClusterView, preferred_leader_candidates
from agent.core.matching import TargetObject
from agent.core.rules import Rule


class KafkaViewer(Protocol):
    async def cluster_view(self, *, topics: Sequence[str] | None = None) -> ClusterView: ...


def not_electable(view: ClusterView, *, broker_id: int) -> list[tuple[str, int]]:
    """Partitions preferring `broker_id`, led by another broker, whose preferred replica cannot be
    elected now (fenced, or not in the ISR)."""
    candidates = set(preferred_leader_candidates(view, broker_id=broker_id))
    return sorted(
        (p.topic, p.partition)
        for p in view.partitions
        if p.preferred_leader == broker_id and p.leader != broker_id and (p.topic, p.partition) not in candidates
    )


def not_led_by_preferred(view: ClusterView, partitions: Sequence[tuple[str, int]]) -> list[str]:
    """`t-0 (leader 2)` for each partition of `partitions` whose leader is not its first replica."""
    states = {(p.topic, p.partition): p for p in view.partitions}
    gaps = []
    for key in partitions:
        state = states.get(key)
        if state is None:
            gaps.append(f"{key[0]}-{key[1]} (not in metadata)")
        elif state.leader != state.preferred_leader:
            leader = "none" if state.leader is None else str(state.leader)
            gaps.append(f"{state.name} (leader {leader}, preferred {state.preferred_leader})")
    return gaps


@dataclass
class LeaderRebalanceExecutor:
    kafka: KafkaViewer | None
    applier: Applier
    clock: Clock
    action: str = LEADER_REBALANCE

    async def run(self, *, planned: PlannedAction, target: TargetObject, params: object, rule: Rule) -> Outcome:
        assert isinstance(params, LeaderRebalanceParams)
        broker = broker_id_of(target)
        if broker is None:  # the engine holds such a plan already; this is the executor's own guard
            why = target.identity_problem or "the object carries no broker id"
            return Outcome(kind=OutcomeKind.HELD, reason=f"{target.key}: broker id unknown: {why}")
        if self.kafka is None:
            return Outcome(
                kind=OutcomeKind.HELD, reason="no Kafka connection: cannot read leadership or elect (--kafka)"
            )
        view = await self.kafka.cluster_view()
        candidates = preferred_leader_candidates(view, broker_id=broker)
        stuck = not_electable(view, broker_id=broker)
        stuck_note = (
            f"; not elected, broker {broker} is not an in-sync replica of: {partition_list(stuck)}" if stuck else ""
        )
        log = MutationLog(applier=self.applier)
        if not candidates and stuck:
            return Outcome(
                kind=OutcomeKind.HELD,
                reason=f"nothing elected: broker {broker} is not (yet) an in-sync replica of the partitions it is "
                f"preferred for and does not lead: {partition_list(stuck)}",
            )
        if not candidates:
            return await finished(log, f"nothing to elect: broker {broker} leads every partition it is preferred for")
        refused: dict[tuple[str, int], str] = {}
        for batch in batches(candidates, params.batch_size):
            try:
                await log.apply(ElectPreferredLeaders(broker_id=broker, partitions=batch))
            except ElectionIncompleteError as incomplete:
                log.done.append(ElectPreferredLeaders(broker_id=broker, partitions=batch).describe())
                refused.update({(f.topic, f.partition): f.describe() for f in incomplete.failures})

        async def verify() -> Outcome:
            elected = [key for key in candidates if key not in refused]
            topics = sorted({topic for topic, _ in elected})
            lagging: list[str] = []

            async def not_yet_led() -> str | None:
                lagging[:] = not_led_by_preferred(await self.kafka_view(topics), elected)
                return ", ".join(lagging[:10]) if lagging else None

            if elected:
                await wait_for(not_yet_led, clock=self.clock, timeout_seconds=params.timeout_seconds)
            problems = list(refused.values())
            if lagging:
                problems.append(
                    f"not led by the preferred replica within {params.timeout_seconds}s: {', '.join(lagging[:10])}"
                )
            if problems:
                return Outcome(
                    kind=OutcomeKind.FAILED,
                    reason=f"{len(elected) - len(lagging)} of {len(candidates)} partitions led by broker {broker} "
                    "again; " + "; ".join(problems[:10]) + stuck_note,
                    mutations=tuple(log.done),
                )
            return Outcome(
                kind=OutcomeKind.VERIFIED,
                reason=f"broker {broker} leads its {len(elected)} preferred partitions again: "
                f"{partition_list(elected)}{stuck_note}",
                mutations=tuple(log.done),
            )

        recorded = f"{RECORDED} ({len(candidates)} partitions to elect){stuck_note}"
        return await verified(log, verify, recorded_reason=recorded)

    async def kafka_view(self, topics: Sequence[str]) -> ClusterView:
        assert self.kafka is not None
        return await self.kafka.cluster_view(topics=topics)


def build_executor(dependencies: Dependencies, applier: Applier) -> LeaderRebalanceExecutor | None:
    """None without a Kafka connection: leadership can be neither read nor elected."""
    if dependencies.kafka is None:
        return None
    return LeaderRebalanceExecutor(kafka=dependencies.kafka, applier=applier, clock=dependencies.clock)
