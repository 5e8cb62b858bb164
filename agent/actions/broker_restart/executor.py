"""Executor for `kafka-autopilot.io.action.broker/restart`: restart one broker by a graceful delete of its pod.

The target is a KafkaBroker object whose `identity["broker"]` is its id (as the inventory learned it;
without one it holds). Checks first, nothing changed yet:
1. the pod exists and is Running, and Kafka's advertised address (or the rule's `brokerIdentity`)
   says it is that broker;
2. Kafka sees the broker registered (a fenced broker is not restarted: it is already out);
3. taking it out of every ISR would leave each partition at least min.insync.replicas + minisrmargin - 1
   in-sync replicas (`min_isr_violations` with the margin).
Then the pod is deleted gracefully, by uid (its own termination grace period, so the broker shuts down
cleanly). The plan names the pod by the uid the inventory saw, and the runner keeps it in the in-flight
record. Verify: a new pod of that name (another
uid) Running, the broker registered again and back in the ISR of every partition it replicates, within
`verifytimeout`. A run that finds the planned pod replaced, or gone (it cannot tell its own earlier delete,
before a crash, from someone else's), deletes nothing and only verifies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from agent.actions.base import Dependencies, MutationLog, Outcome, OutcomeKind, broker_id_of, verified_when
from agent.actions.broker_restart.spec import BROKER_RESTART, BrokerRestartParams, RestartDecision
from agent.actions.mutations import Applier, DeletePod
from agent.adapters.clock import Clock
from agent.adapters.errors import NotFoundError
from agent.core.broker_identity import Identified, PodAddress, identify_brokers
from agent.core.engine import PlannedAction
from agent.core.kafka_safety import ClusterView, min_isr_violations
from agent.core.matching import TargetObject
from agent.core.rules import Rule

__all__ = ["BrokerRestartExecutor", "build_executor"]


class PodLike(Protocol):
    @property
    def uid(self) -> str: ...

    @property
    def phase(self) -> str | None: ...

    @property
    def address(self) -> PodAddress: ...


class PodReader(Protocol):
    async def get_pod(self, *, namespace: str, name: str) -> PodLike: ...


class KafkaViewer(Protocol):
    async def cluster_view(self) -> ClusterView: ...


def not_back_in_sync(view: ClusterView, broker: int) -> list[str]:
    """The partitions `broker` replicates whose ISR it is not in (yet)."""
    return [
        p.name
        for p in sorted(view.partitions, key=lambda p: (p.topic, p.partition))
        if broker in p.replicas and broker not in p.isr
    ]


@dataclass
class BrokerRestartExecutor:
    reader: PodReader
    kafka: KafkaViewer
    applier: Applier
    clock: Clock
    action: str = BROKER_RESTART

    async def pod(self, namespace: str, name: str) -> PodLike | None:
        try:
            return await self.reader.get_pod(namespace=namespace, name=name)
        except NotFoundError:
            return None

    async def run(self, *, planned: PlannedAction, target: TargetObject, params: object, rule: Rule) -> Outcome:
        assert isinstance(params, BrokerRestartParams)
        log = MutationLog(applier=self.applier)

        def held(reason: str) -> Outcome:
            return Outcome(kind=OutcomeKind.HELD, reason=reason, mutations=tuple(log.done))

        broker = broker_id_of(target)
        if broker is None or target.namespace is None:
            return held(f"{target.key} carries no broker id: nothing restarted")
        namespace, name = target.namespace, target.name
        pod = await self.pod(namespace, name)
        decided = planned.detail if isinstance(planned.detail, RestartDecision) else None
        if decided is None or (pod is not None and pod.uid == decided.pod_uid):
            if pod is None:
                return held(f"pod {target.key} not found: nothing restarted")
            view = await self.kafka.cluster_view()
            if (why := self.unsafe(pod, view=view, broker=broker, params=params, rule=rule)) is not None:
                return held(f"nothing restarted: {why}")
            decided = RestartDecision(pod_uid=pod.uid)
            await log.apply(DeletePod(namespace=namespace, name=name, uid=pod.uid))
        old_uid = decided.pod_uid

        async def not_yet_back() -> str | None:
            current = await self.pod(namespace, name)
            if current is None:
                return f"pod {target.key} not recreated yet"
            if current.uid == old_uid:
                return f"pod {target.key} not replaced yet (still uid {old_uid})"
            if current.phase != "Running":
                return f"pod {target.key} is {current.phase}"
            view = await self.kafka.cluster_view()
            if broker not in view.brokers_registered:
                return f"broker {broker} not registered with Kafka yet"
            lagging = not_back_in_sync(view, broker)
            if lagging:
                return f"broker {broker} not yet back in the ISR of {', '.join(lagging[:10])}"
            return None

        return await verified_when(
            log,
            not_yet_back,
            clock=self.clock,
            timeout_seconds=params.verify_timeout_seconds,
            reason=f"broker {broker} restarted ({target.key} Running again), registered and back in every ISR",
        )

    def unsafe(
        self, pod: PodLike, *, view: ClusterView, broker: int, params: BrokerRestartParams, rule: Rule
    ) -> str | None:
        """Why restarting now is not safe, or None."""
        if pod.phase != "Running":
            return f"pod is {pod.phase}, not Running"
        identity = identify_brokers([pod.address], endpoints=view.endpoints, stated=rule.broker_identity)[
            pod.address.key
        ]
        if not isinstance(identity, Identified):
            return f"cannot confirm the pod is broker {broker}: {identity.reason}"
        if identity.broker_id != broker:
            return f"the pod is broker {identity.broker_id} ({identity.how}), not broker {broker}"
        if broker not in view.brokers_registered:
            return f"Kafka does not list broker {broker} as registered (fenced or gone)"
        violations = min_isr_violations(view, removing=frozenset({broker}), margin=params.min_isr_margin - 1)
        if violations:
            return "would leave partitions below min.insync.replicas: " + "; ".join(violations[:5])
        return None


def build_executor(dependencies: Dependencies, applier: Applier) -> BrokerRestartExecutor | None:
    """None without a Kafka connection: the broker's registration and the ISRs cannot be checked."""
    if dependencies.kafka is None:
        return None
    return BrokerRestartExecutor(
        reader=dependencies.kube,
        kafka=dependencies.kafka,
        applier=applier,
        clock=dependencies.clock,
    )
