"""Executor for `kafka-autopilot.io.action.node/cordon-reschedule`: move brokers off a failed node.

Plan, re-checked right before every step that cannot be undone:
1. the node is still gone: Ready is not True and its Lease is older than the grace;
2. cordon it;
3. Kafka agrees the node's brokers are gone: none is registered, leads, or sits in an ISR. If Kafka
   still sees one alive, the node has only lost its link to the control plane, and a second broker
   with the same id must never be started: hold, and say why;
4. no partition would drop below min.insync.replicas;
5. the node is still gone (again);
6. force-delete the broker pods (or apply the out-of-service taint), and delete the node's
   VolumeAttachments so the volumes can attach elsewhere.
Verify: every broker pod is Running again, on another node that is Ready.

Without a Kafka connection the guardrails cannot be checked, so the executor holds: it never
force-deletes on a guess.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from agent.actions.base import Dependencies, MutationLog, Outcome, OutcomeKind, finished, verified_when
from agent.actions.mutations import (
    Applier,
    CordonNode,
    DeleteVolumeAttachment,
    ForceDeletePod,
    Mutation,
    TaintNode,
)
from agent.actions.node_reschedule.spec import NODE_RESCHEDULE, NodeRescheduleParams, RescheduleMode
from agent.adapters.clock import Clock
from agent.core.engine import PlannedAction
from agent.core.kafka_safety import ClusterView, brokers_seen_alive, min_isr_violations
from agent.core.matching import TargetObject
from agent.core.rules import Rule

OUT_OF_SERVICE_TAINT = "node.kubernetes.io/out-of-service"


class NodeLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def ready(self) -> str | None: ...

    @property
    def unschedulable(self) -> bool: ...


class PodLike(Protocol):
    @property
    def namespace(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def node(self) -> str | None: ...

    @property
    def phase(self) -> str | None: ...

    @property
    def labels(self) -> Mapping[str, str]: ...

    @property
    def uid(self) -> str: ...


class AttachmentLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def node(self) -> str: ...


class NodeReader(Protocol):
    async def list_nodes(self) -> Sequence[NodeLike]: ...

    async def node_lease_renew_times(self) -> Mapping[str, float]: ...

    async def list_pods(
        self, *, namespace: str | None = None, label_selector: str | None = None
    ) -> Sequence[PodLike]: ...

    async def list_volume_attachments(self) -> Sequence[AttachmentLike]: ...


class KafkaViewer(Protocol):
    async def cluster_view(self) -> ClusterView: ...


def broker_id_of_pod(name: str) -> int | None:
    """A StatefulSet pod's ordinal (`kafka-3` -> 3), which is its broker id in the usual setups."""
    _, _, ordinal = name.rpartition("-")
    return int(ordinal) if ordinal.isdigit() else None


@dataclass
class NodeRescheduleExecutor:
    reader: NodeReader
    kafka: KafkaViewer | None
    applier: Applier
    clock: Clock
    verify_timeout_seconds: float = 180.0
    action: str = NODE_RESCHEDULE

    async def node_still_gone(self, node: str, grace_seconds: int) -> str | None:
        """None while the node is still failed; otherwise why it no longer counts as failed."""
        found = next((n for n in await self.reader.list_nodes() if n.name == node), None)
        if found is None:
            return f"node {node} no longer exists"
        if found.ready == "True":
            return f"node {node} is Ready again"
        renewed = (await self.reader.node_lease_renew_times()).get(node)
        if renewed is not None and self.clock.now() - renewed <= grace_seconds:
            return f"node {node}'s Lease was renewed {self.clock.now() - renewed:.0f}s ago (grace {grace_seconds}s)"
        return None

    async def run(self, *, planned: PlannedAction, target: TargetObject, params: object, rule: Rule) -> Outcome:
        assert isinstance(params, NodeRescheduleParams)
        node = target.name
        log = MutationLog(applier=self.applier)

        def held(reason: str) -> Outcome:
            return Outcome(kind=OutcomeKind.HELD, reason=reason, mutations=tuple(log.done))

        if (why := await self.node_still_gone(node, params.grace_seconds)) is not None:
            return held(f"nothing done: {why}")
        current = next((n for n in await self.reader.list_nodes() if n.name == node), None)
        if current is not None and not current.unschedulable:
            await log.apply(CordonNode(name=node))
        pods = [
            pod
            for pod in await self.reader.list_pods()
            if pod.node == node and params.broker_selector.matches(pod.labels)
        ]
        brokers = {pod.name: broker_id_of_pod(pod.name) for pod in pods}
        if not pods:
            return await finished(log, "no broker pods on the node")
        if self.kafka is None:
            return held("no Kafka connection: cannot confirm the brokers are fenced, so nothing is force-deleted")
        view = await self.kafka.cluster_view()
        ids = [broker for broker in brokers.values() if broker is not None]
        alive = {broker: reasons for broker, reasons in brokers_seen_alive(view, ids).items() if reasons}
        if alive:
            said = "; ".join(f"broker {b}: {', '.join(r)}" for b, r in sorted(alive.items()))
            return held(
                f"Kafka still sees the node's brokers alive ({said}): a control-plane partition, not a node "
                "failure; force-deleting would start a second broker with the same id"
            )
        violations = min_isr_violations(view, removing=frozenset(ids))
        if violations:
            return held("would leave partitions below min.insync.replicas: " + "; ".join(violations[:5]))
        if (why := await self.node_still_gone(node, params.grace_seconds)) is not None:
            return held(f"stopped before deleting pods: {why}")
        for pod in pods:
            step: Mutation
            if params.mode is RescheduleMode.OUT_OF_SERVICE_TAINT:
                step = TaintNode(name=node, key=OUT_OF_SERVICE_TAINT, value="nodeshutdown", effect="NoExecute")
            else:
                step = ForceDeletePod(namespace=pod.namespace, name=pod.name, uid=pod.uid)
            await log.apply(step)
            if params.mode is RescheduleMode.OUT_OF_SERVICE_TAINT:
                break
        if params.delete_volume_attachments:
            for attachment in await self.reader.list_volume_attachments():
                if attachment.node == node:
                    await log.apply(DeleteVolumeAttachment(name=attachment.name))
        names = [pod.name for pod in pods]
        namespaces = {pod.name: pod.namespace for pod in pods}

        async def not_yet_moved() -> str | None:
            ready = {n.name for n in await self.reader.list_nodes() if n.ready == "True"}
            current_pods = {(p.namespace, p.name): p for p in await self.reader.list_pods()}
            missing = []
            for name in names:
                pod = current_pods.get((namespaces[name], name))
                if pod is None or pod.phase != "Running" or pod.node == node or pod.node not in ready:
                    where = f"on {pod.node}, {pod.phase}" if pod is not None else "not recreated yet"
                    missing.append(f"{name} ({where})")
            return ", ".join(missing) if missing else None

        return await verified_when(
            log,
            not_yet_moved,
            clock=self.clock,
            timeout_seconds=self.verify_timeout_seconds,
            reason=f"{', '.join(names)} Running on healthy nodes",
        )


def build_executor(dependencies: Dependencies, applier: Applier) -> NodeRescheduleExecutor:
    """Without Kafka it is still built: it holds, saying the brokers' fencing cannot be confirmed."""
    return NodeRescheduleExecutor(
        reader=dependencies.kube, kafka=dependencies.kafka, applier=applier, clock=dependencies.clock
    )
