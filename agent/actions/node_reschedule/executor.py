"""Executor for `kafka-autopilot.io.action.node/cordon-reschedule`: move Kafka brokers off a failed node.

Every check comes before the first change, and the destructive ones are checked again right before:

1. the node is still gone: Ready is not True and its Lease is older than the grace;
2. its broker pods are known: the pods on the node that match `brokerlabel`, else the rule's selector,
   else those Kafka identifies as brokers (their address is a broker's). Nothing else on the node is
   touched. Each one's broker id must be known (`agent.core.broker_identity`, with the rule's
   `brokerIdentity`): an unknown or ambiguous id holds;
3. Kafka has fenced every one of them: a broker Kafka still sees alive means a control-plane
   partition, and a second broker with the same id must never be started;
4. the min-ISR guard: counting the brokers on every failing node as out, no partition of the moved
   brokers is below `min.insync.replicas` (`min_isr_violations_during_failures`);
5. then cordon, marked as the agent's own (annotations, with the list of pods being moved so a
   restarted agent finishes exactly this move); a node someone else cordoned is only annotated;
6. the node is still gone (again); if not, the agent's cordon is undone and the action holds;
7. force-delete exactly those pods (by uid), or apply the out-of-service taint when the rule asks;
8. delete only the VolumeAttachments of those pods' volumes on that node.
Verify: every moved broker's pod is Running again, as a new pod on another Ready node, and Kafka
lists its broker registered again.

Without a Kafka connection nothing is checked, so nothing is done: the executor holds.
When the node returns, `release_recovered` undoes the agent's cordon and taint (never anyone else's);
it runs every cycle, so it reads nodes and Leases from the watch-fed caches (`watched`). An action's
own reads go to the apiserver: the pods of the failing nodes by `spec.nodeName` field selectors (never
every pod of the cluster), each moved pod by a GET while verifying.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from agent.actions.base import Dependencies, MutationLog, Outcome, OutcomeKind, finished, verified_when
from agent.actions.mutations import (
    AnnotateNode,
    Applier,
    CordonNode,
    DeleteVolumeAttachment,
    ForceDeletePod,
    ReleaseNode,
    TaintNode,
)
from agent.actions.node_reschedule.spec import NODE_RESCHEDULE, NodeRescheduleParams, RescheduleMode
from agent.adapters.clock import Clock
from agent.adapters.errors import NotFoundError
from agent.core.broker_identity import Identified, PodAddress, identify_brokers
from agent.core.engine import PlannedAction
from agent.core.kafka_safety import ClusterView, brokers_seen_alive, min_isr_violations_during_failures
from agent.core.matching import IGNORE_ANNOTATION, TargetObject
from agent.core.rules import LabelSelector, Rule

OUT_OF_SERVICE_TAINT = "node.kubernetes.io/out-of-service"
CORDONED_BY = "kafka-autopilot.io/cordoned-by"
"""On a node the agent cordoned: the rule's name. Only a cordon with this mark is ever undone."""
TAINTED_BY = "kafka-autopilot.io/tainted-by"
"""On a node the agent gave the out-of-service taint: the rule's name."""
MOVING = "kafka-autopilot.io/moving-brokers"
"""On a node the agent is moving brokers off: which pods (with uid, broker id, volumes), as JSON."""


class NodeLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def ready(self) -> str | None: ...

    @property
    def unschedulable(self) -> bool: ...

    @property
    def annotations(self) -> Mapping[str, str]: ...


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

    @property
    def claims(self) -> tuple[str, ...]: ...

    @property
    def annotations(self) -> Mapping[str, str]: ...

    @property
    def address(self) -> PodAddress: ...


class ClaimLike(Protocol):
    @property
    def namespace(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def volume_name(self) -> str | None: ...


class AttachmentLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def node(self) -> str: ...

    @property
    def pv(self) -> str | None: ...


class NodeReader(Protocol):
    async def list_nodes(self) -> Sequence[NodeLike]: ...

    async def node_lease_renew_times(self) -> Mapping[str, float]: ...

    async def list_pods(
        self, *, namespace: str | None = None, label_selector: str | None = None, field_selector: str | None = None
    ) -> Sequence[PodLike]: ...

    async def get_pod(self, *, namespace: str, name: str) -> PodLike: ...

    async def list_pvcs(self) -> Sequence[ClaimLike]: ...

    async def list_volume_attachments(self) -> Sequence[AttachmentLike]: ...


class NodeView(Protocol):
    async def list_nodes(self) -> Sequence[NodeLike]: ...

    async def node_lease_renew_times(self) -> Mapping[str, float]: ...


class KafkaViewer(Protocol):
    async def cluster_view(self) -> ClusterView: ...


@dataclass(frozen=True, kw_only=True)
class MovingBroker:
    """One broker pod the agent is moving, as recorded on the node (what a resumed run finishes)."""

    namespace: str
    name: str
    uid: str
    broker_id: int
    volumes: tuple[str, ...]
    """The PersistentVolumes its claims are bound to."""

    def to_json(self) -> dict[str, object]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
            "broker": self.broker_id,
            "volumes": list(self.volumes),
        }


def moving_record(rule: str, brokers: Sequence[MovingBroker]) -> str:
    return json.dumps({"rule": rule, "pods": [broker.to_json() for broker in brokers]}, sort_keys=True)


def read_moving_record(annotations: Mapping[str, str], *, rule: str) -> list[MovingBroker]:
    """The brokers this rule recorded as moving off the node; [] when none, or the record is unreadable."""
    try:
        record = json.loads(annotations.get(MOVING, "{}"))
        if record.get("rule") != rule:
            return []
        return [
            MovingBroker(
                namespace=str(pod["namespace"]),
                name=str(pod["name"]),
                uid=str(pod["uid"]),
                broker_id=int(pod["broker"]),
                volumes=tuple(str(volume) for volume in pod["volumes"]),
            )
            for pod in record["pods"]
        ]
    except (ValueError, KeyError, TypeError, AttributeError):
        return []


def broker_selector(rule: Rule, params: NodeRescheduleParams) -> LabelSelector | None:
    """Which pods on a node may be brokers: `brokerlabel`, else the rule's selector; None: Kafka says."""
    if params.broker_selector.match_labels or params.broker_selector.match_expressions:
        return params.broker_selector
    if rule.selector.match_labels or rule.selector.match_expressions:
        return rule.selector
    return None


class HoldError(Exception):
    """A check did not pass: hold, with this reason."""


@dataclass
class NodeRescheduleExecutor:
    reader: NodeReader
    kafka: KafkaViewer | None
    applier: Applier
    clock: Clock
    verify_timeout_seconds: float = 180.0
    action: str = NODE_RESCHEDULE
    watched: NodeView | None = None
    """The watch-fed nodes and Leases that `release_recovered` reads every cycle (None: `reader`'s).
    An action's own checks read `reader` (the apiserver), fresh."""

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
        node_name = target.name
        log = MutationLog(applier=self.applier)
        nodes = {n.name: n for n in await self.reader.list_nodes()}
        node = nodes.get(node_name)
        recorded = read_moving_record(node.annotations, rule=rule.name) if node is not None else []

        def held(reason: str) -> Outcome:
            return Outcome(kind=OutcomeKind.HELD, reason=reason, mutations=tuple(log.done))

        if (why := await self.node_still_gone(node_name, params.grace_seconds)) is not None:
            return held(f"nothing done: {why}")
        if self.kafka is None:
            return held("no Kafka connection: cannot identify the node's brokers or confirm they are fenced")
        view = await self.kafka.cluster_view()
        pods = await self._pods_on_failing_nodes(node_name, nodes, params)
        try:
            fresh = await self._brokers_to_move(
                node_name, pods, view, rule=rule, params=params, nodes=nodes, recorded=recorded
            )
        except HoldError as hold:
            return held(str(hold))
        still_here = {(p.namespace, p.name, p.uid) for p in pods if p.node == node_name}
        moving = fresh + [b for b in recorded if all((b.namespace, b.name) != (f.namespace, f.name) for f in fresh)]
        if not moving:
            return Outcome(kind=OutcomeKind.VERIFIED, reason="no Kafka broker pods on the node: nothing to do")

        marks: dict[str, str] = {MOVING: moving_record(rule.name, moving)}
        if params.mode is RescheduleMode.OUT_OF_SERVICE_TAINT:
            marks[TAINTED_BY] = rule.name
        ours = node is not None and node.annotations.get(CORDONED_BY) == rule.name
        if node is not None and not (node.unschedulable and node.annotations.get(MOVING) == marks[MOVING]):
            if not node.unschedulable:
                await log.apply(CordonNode(name=node_name, annotations={CORDONED_BY: rule.name, **marks}))
                ours = True
            else:
                await log.apply(AnnotateNode(name=node_name, annotations=marks))
        to_delete = [b for b in moving if (b.namespace, b.name, b.uid) in still_here]
        if to_delete and (why := await self.node_still_gone(node_name, params.grace_seconds)) is not None:
            undo = {**marks, **({CORDONED_BY: rule.name} if ours else {})}
            await log.apply(ReleaseNode(name=node_name, marks=undo, uncordon=ours))
            return held(f"stopped before deleting pods: {why}; the agent's cordon and marks are undone")
        if to_delete and params.mode is RescheduleMode.OUT_OF_SERVICE_TAINT:
            await log.apply(
                TaintNode(name=node_name, key=OUT_OF_SERVICE_TAINT, value="nodeshutdown", effect="NoExecute")
            )
        else:
            for broker in to_delete:
                await log.apply(ForceDeletePod(namespace=broker.namespace, name=broker.name, uid=broker.uid))
        if params.delete_volume_attachments:
            volumes = {volume for broker in moving for volume in broker.volumes}
            for attachment in await self.reader.list_volume_attachments():
                if attachment.node == node_name and attachment.pv in volumes:
                    await log.apply(DeleteVolumeAttachment(name=attachment.name))
        return await verified_when(
            log,
            lambda: self._not_yet_moved(node_name, moving),
            clock=self.clock,
            timeout_seconds=self.verify_timeout_seconds,
            reason=f"{', '.join(b.name for b in moving)} Running on healthy nodes, "
            f"broker{'s' if len(moving) > 1 else ''} {', '.join(str(b.broker_id) for b in moving)} registered",
        )

    async def _pods_on_failing_nodes(
        self, node: str, nodes: Mapping[str, NodeLike], params: NodeRescheduleParams
    ) -> list[PodLike]:
        """The pods on `node` and on every other failing node (the min-ISR guard counts their brokers out),
        asked node by node with a `spec.nodeName` field selector: never every pod of the cluster."""
        leases = await self.reader.node_lease_renew_times()
        failing = {node} | {
            name
            for name, each in nodes.items()
            if each.ready != "True"
            and ((renewed := leases.get(name)) is None or self.clock.now() - renewed > params.grace_seconds)
        }
        return [
            pod
            for name in sorted(failing)
            for pod in await self.reader.list_pods(field_selector=f"spec.nodeName={name}")
        ]

    async def _brokers_to_move(
        self,
        node: str,
        pods: Sequence[PodLike],
        view: ClusterView,
        *,
        rule: Rule,
        params: NodeRescheduleParams,
        nodes: Mapping[str, NodeLike],
        recorded: Sequence[MovingBroker],
    ) -> list[MovingBroker]:
        """The broker pods on `node` to move, once every check has passed; raises HoldError otherwise.

        A pod this rule recorded as moving (same uid) keeps the id it was identified by then, so a resumed
        run checks it like the others even when Kafka no longer lists a fenced broker's address."""
        selector = broker_selector(rule, params)
        leases = await self.reader.node_lease_renew_times()
        failing = {
            name
            for name, each in nodes.items()
            if each.ready != "True"
            and ((renewed := leases.get(name)) is None or self.clock.now() - renewed > params.grace_seconds)
        }
        on_failing = [p for p in pods if p.node in failing and (selector is None or selector.matches(p.labels))]
        identities = identify_brokers(
            [p.address for p in on_failing], endpoints=view.endpoints, stated=rule.broker_identity
        )
        earlier = {(b.namespace, b.name, b.uid): b.broker_id for b in recorded}
        brokers: dict[tuple[str, str], int] = {}
        unknown: list[str] = []
        for pod in (p for p in on_failing if p.node == node):
            identity = identities[(pod.namespace, pod.name)]
            if isinstance(identity, Identified):
                brokers[(pod.namespace, pod.name)] = identity.broker_id
            elif (pod.namespace, pod.name, pod.uid) in earlier:
                brokers[(pod.namespace, pod.name)] = earlier[(pod.namespace, pod.name, pod.uid)]
            elif selector is not None or not identity.not_a_broker:
                unknown.append(f"{pod.namespace}/{pod.name}: {identity.reason}")
        if unknown:
            raise HoldError("broker identity unknown, nothing done: " + "; ".join(unknown))
        if not brokers:
            return []
        ignored = [
            f"{p.namespace}/{p.name}"
            for p in on_failing
            if (p.namespace, p.name) in brokers and p.annotations.get(IGNORE_ANNOTATION) == "true"
        ]
        if ignored:
            raise HoldError(f'{", ".join(ignored)} annotated {IGNORE_ANNOTATION}: "true": nothing done on the node')
        alive = {b: reasons for b, reasons in brokers_seen_alive(view, brokers.values()).items() if reasons}
        if alive:
            said = "; ".join(f"broker {b}: {', '.join(r)}" for b, r in sorted(alive.items()))
            raise HoldError(
                f"Kafka still sees the node's brokers alive ({said}): a control-plane partition, not a node "
                "failure; force-deleting would start a second broker with the same id"
            )
        down = frozenset(i.broker_id for i in identities.values() if isinstance(i, Identified)) | set(brokers.values())
        violations = min_isr_violations_during_failures(view, moving=frozenset(brokers.values()), down=down)
        if violations:
            raise HoldError(
                "would act while partitions are below min.insync.replicas, counting every failing node: "
                + "; ".join(violations[:5])
            )
        volumes = {(c.namespace, c.name): c.volume_name for c in await self.reader.list_pvcs()}
        return [
            MovingBroker(
                namespace=p.namespace,
                name=p.name,
                uid=p.uid,
                broker_id=brokers[(p.namespace, p.name)],
                volumes=tuple(v for claim in p.claims if (v := volumes.get((p.namespace, claim)))),
            )
            for p in pods
            if p.node == node and (p.namespace, p.name) in brokers
        ]

    async def _not_yet_moved(self, node: str, moving: Sequence[MovingBroker]) -> str | None:
        ready = {n.name for n in await self.reader.list_nodes() if n.ready == "True"}
        current = {(b.namespace, b.name): pod for b in moving if (pod := await self._pod(b.namespace, b.name))}
        registered = (await self.kafka.cluster_view()).brokers_registered if self.kafka is not None else None
        missing = []
        for broker in moving:
            pod = current.get((broker.namespace, broker.name))
            if pod is None or pod.uid == broker.uid:
                missing.append(f"{broker.name} (not recreated yet)")
            elif pod.phase != "Running" or pod.node == node or pod.node not in ready:
                missing.append(f"{broker.name} (on {pod.node}, {pod.phase})")
            elif registered is not None and broker.broker_id not in registered:
                missing.append(f"{broker.name} (broker {broker.broker_id} not registered yet)")
        return ", ".join(missing) if missing else None

    async def _pod(self, namespace: str, name: str) -> PodLike | None:
        try:
            return await self.reader.get_pod(namespace=namespace, name=name)
        except NotFoundError:
            return None

    async def release_recovered(
        self, *, rule: Rule, params: object, skip: Collection[str] = ()
    ) -> list[tuple[str, Outcome]]:
        """Undo the agent's own cordon, taint and marks on every node of this rule that is back (Ready,
        Lease fresher than the grace), except the nodes in `skip` (an action of theirs is running).
        Returns (node, outcome) for each node released; a node someone else cordoned keeps its cordon."""
        assert isinstance(params, NodeRescheduleParams)
        released: list[tuple[str, Outcome]] = []
        leases: Mapping[str, float] | None = None
        watched = self.watched or self.reader
        for found in await watched.list_nodes():
            marks = {key: rule.name for key in (CORDONED_BY, TAINTED_BY) if found.annotations.get(key) == rule.name}
            if read_moving_record(found.annotations, rule=rule.name):
                marks[MOVING] = found.annotations[MOVING]
            if not marks or found.ready != "True" or found.name in skip:
                continue
            leases = leases if leases is not None else await watched.node_lease_renew_times()
            renewed = leases.get(found.name)
            if renewed is None or self.clock.now() - renewed > params.grace_seconds:
                continue
            log = MutationLog(applier=self.applier)
            taints = (OUT_OF_SERVICE_TAINT,) if TAINTED_BY in marks else ()
            await log.apply(ReleaseNode(name=found.name, marks=marks, uncordon=CORDONED_BY in marks, taint_keys=taints))
            outcome = await finished(log, f"node {found.name} is back: the agent's own cordon and marks undone")
            released.append((found.name, outcome))
        return released


def build_executor(dependencies: Dependencies, applier: Applier) -> NodeRescheduleExecutor:
    """Without Kafka it is still built: it holds, saying the brokers cannot be identified or confirmed fenced."""
    return NodeRescheduleExecutor(
        reader=dependencies.kube,
        kafka=dependencies.kafka,
        applier=applier,
        clock=dependencies.clock,
        watched=dependencies.watched,
    )
