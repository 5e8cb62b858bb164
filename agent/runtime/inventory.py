"""What a rule's cycle looks at: the objects of its target kind, and one vector per distinct expression.

Why it exists: the pure engine joins samples to objects by identity labels; something has to turn the
cluster's PVCs, broker pods, nodes and storage pools into `TargetObject`s, and run the queries. That
is this module's only job, so the cycle itself does not know where objects or samples come from.
The cluster is read through `ClusterReader`: in service mode watch-fed caches, so a steady cycle
sends no LIST to the apiserver; PVCs and pods are asked for with the rule's label selector, which
the caches apply server-side.

Broker objects: the pods the rule's selector matches (asked of the API with that label selector),
each identified by `agent.core.broker_identity.identify_brokers` from the addresses Kafka's brokers
advertise (fenced ones included) and the rule's `spec.brokerIdentity`, never from a pod's name. A pod
whose broker id is unknown is still an object (series naming it by namespace and pod reach it) but
has no `broker` identity and carries the reason; the engine holds every action planned on it. Without
Kafka (no --kafka, or it does not answer) only a stated identity is known.

Samples: one Prometheus query per distinct expression, shared for a second by the rules that evaluate
in that second; or, for `provider: kubernetes` rules, NodeReady / NodeLeaseAgeSeconds /
NodeUnreachableSeconds computed from Nodes and their Leases.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from agent.actions.node_reschedule.spec import NODE_RESCHEDULE
from agent.adapters.errors import KafkaAdminError
from agent.adapters.storagepools import StoragePoolApi
from agent.core import strimzi
from agent.core.broker_identity import BrokerEndpoint, Identified, identify_brokers
from agent.core.engine import distinct_queries
from agent.core.matching import TargetObject, broker_object, node_object, pool_object, pvc_object
from agent.core.rules import ConditionProvider, Rule, TargetKind
from agent.core.samples import Sample

_NO_LABELS: Mapping[str, str] = {}
BuiltClaim = tuple[Any, Mapping[str, str], str | None, TargetObject]
"""A claim's cached record, its namespace's labels and what it grows through, and the object built from them."""


class QueryClient(Protocol):
    async def query(self, expr: str, *, at: float | None = None) -> Sequence[Sample]: ...


class ClusterReader(Protocol):
    """The reads the inventory needs from the Kubernetes adapter: the watch-fed caches
    (agent.adapters.kubernetes.cache.ClusterCaches) in service mode, a sidecar's scoped reads
    (agent.runtime.scope) in sidecar mode."""

    async def list_pvcs(self, *, label_selector: str | None = None) -> Sequence[Any]: ...

    async def namespace_labels(self) -> Mapping[str, Mapping[str, str]]: ...

    async def list_nodes(self) -> Sequence[Any]: ...

    async def node_lease_renew_times(self) -> Mapping[str, float]: ...

    async def list_pods(self, *, namespace: str | None = None, label_selector: str | None = None) -> Sequence[Any]: ...


class BrokerEndpointSource(Protocol):
    """What the inventory asks Kafka (agent.adapters.kafka.KafkaAdmin): every broker's advertised address."""

    async def broker_endpoints(self) -> Sequence[BrokerEndpoint]: ...


def grown_through(claims: Sequence[Any]) -> dict[tuple[str, str], str]:
    """(namespace, name) -> what resizing that claim grows, for the claims Strimzi owns (their pool's
    volume, for as many brokers as it has claims)."""
    placed = {
        (claim.namespace, claim.name): owned
        for claim in claims
        if isinstance(owned := strimzi.owned_volume(claim), strimzi.OwnedVolume)
    }
    brokers = Counter(owned.volume_key for owned in placed.values())
    return {key: owned.grows(brokers[owned.volume_key]) for key, owned in placed.items()}


class StorageApiNotConfiguredError(RuntimeError):
    """A StoragePool rule runs in an agent that was given no storage API."""


def split_storage_pool_rules(rules: Sequence[Rule]) -> tuple[list[Rule], dict[str, str]]:
    """For an agent given no storage API: the rules it runs, and its StoragePool rules, not run (their
    health says why). Not configured is neither an error nor an alert: no cycle fails every poll."""
    running = [rule for rule in rules if rule.target is not TargetKind.STORAGE_POOL]
    why = "not configured: StoragePool rules need the storage API (kafka-autopilot run --storage-api URL)"
    return running, {rule.name: why for rule in rules if rule.target is TargetKind.STORAGE_POOL}


QUERY_SHARING_SECONDS = 1.0


@dataclass
class Inventory:
    cluster: ClusterReader
    prometheus: QueryClient
    pools: StoragePoolApi | None = None
    """The storage API (kafka-autopilot run --storage-api); StoragePool rules need it."""
    kafka: BrokerEndpointSource | None = None
    """Kafka (kafka-autopilot run --kafka); without it a broker's id is known only as a rule states it."""
    _query_cache: dict[str, tuple[float, Sequence[Sample]]] = field(default_factory=dict)
    _kafka_problems: dict[str, str] = field(default_factory=dict)
    _pvc_targets: dict[str, dict[tuple[str, str], BuiltClaim]] = field(default_factory=dict)
    """Per label selector of the PVC rules, each claim's object as last built (`_pvc_target`)."""

    async def objects(self, rule: Rule) -> list[TargetObject]:
        """The objects of the rule's target kind (broker pods: those its selector matches, identified)."""
        kind = rule.target
        if kind is TargetKind.PVC:
            namespaces = await self.cluster.namespace_labels()
            selector = rule.selector.query()
            claims = await self.cluster.list_pvcs(label_selector=selector or None)
            through = grown_through(claims)
            built = self._pvc_targets.setdefault(selector, {})
            if len(built) > 2 * len(claims) + 1000:  # claims deleted: forget their objects
                current = {(claim.namespace, claim.name) for claim in claims}
                built = self._pvc_targets[selector] = {key: made for key, made in built.items() if key in current}
            return [
                _pvc_target(
                    built,
                    claim,
                    namespaces.get(claim.namespace, _NO_LABELS),
                    through.get((claim.namespace, claim.name)),
                )
                for claim in claims
            ]
        if kind is TargetKind.NODE:
            if self.kafka is not None and any(action.name == NODE_RESCHEDULE for action in rule.actions):
                # The reschedule confirms with Kafka that the node's brokers are fenced: without Kafka it
                # would hold, so the rule says so now, not only once a node has failed.
                _, self._kafka_problems[rule.name] = await self.broker_endpoints()
            return [
                replace(node_object(name=node.name, labels=node.labels), annotations=node.annotations)
                for node in await self.cluster.list_nodes()
            ]
        if kind is TargetKind.BROKER:
            return await self.brokers(rule)
        if kind is TargetKind.STORAGE_POOL:
            if self.pools is None:
                raise StorageApiNotConfiguredError(
                    "StoragePool rules need the storage API: start the agent with --storage-api URL"
                    " (an OpenStorage SDK REST gateway)"
                )
            return [
                pool_object(node=pool.node, pool=pool.name, labels=pool.labels, shape=pool.shape)
                for pool in await self.pools.list_pools()
            ]
        raise NotImplementedError(f"no inventory for target kind {kind}")

    async def brokers(self, rule: Rule) -> list[TargetObject]:
        namespaces = await self.cluster.namespace_labels()
        pods = [
            pod
            for pod in await self.cluster.list_pods(label_selector=rule.selector.query() or None)
            if rule.selector.matches(pod.labels)
        ]
        endpoints, kafka_problem = await self.broker_endpoints()
        self._kafka_problems[rule.name] = kafka_problem if self.kafka is not None else ""
        identities = identify_brokers([pod.address for pod in pods], endpoints=endpoints, stated=rule.broker_identity)
        brokers = []
        for pod in pods:
            identity = identities[(pod.namespace, pod.name)]
            if isinstance(identity, Identified):
                target = broker_object(
                    namespace=pod.namespace, pod=pod.name, broker_id=identity.broker_id, labels=pod.labels, uid=pod.uid
                )
            else:
                kafka_only = endpoints is None and not rule.broker_identity.stated
                problem = f"{identity.reason}: {kafka_problem}" if kafka_only else identity.reason
                target = broker_object(
                    namespace=pod.namespace,
                    pod=pod.name,
                    broker_id=None,
                    labels=pod.labels,
                    identity_problem=problem,
                    uid=pod.uid,
                )
            brokers.append(
                replace(target, namespace_labels=namespaces.get(pod.namespace, {}), annotations=pod.annotations)
            )
        return brokers

    def kafka_unreachable(self, rule: Rule) -> str:
        """Why Kafka did not answer the rule's last inventory ("" when it did, or was never asked: no
        --kafka, or neither a broker rule nor a node rule whose reschedule needs Kafka)."""
        return self._kafka_problems.get(rule.name, "")

    async def broker_endpoints(self) -> tuple[Sequence[BrokerEndpoint] | None, str]:
        """Kafka's brokers and their addresses, or None and why Kafka could not say."""
        if self.kafka is None:
            return None, "the agent was started without --kafka"
        try:
            return await self.kafka.broker_endpoints(), ""
        except KafkaAdminError as error:
            return None, str(error)

    async def cordoned_nodes(self) -> frozenset[str]:
        return frozenset(node.name for node in await self.cluster.list_nodes() if node.unschedulable)

    async def vectors(self, rule: Rule, now: float) -> dict[str, Sequence[Sample]]:
        """query -> samples for each of the rule's expressions, at `now`."""
        if rule.conditions.provider is ConditionProvider.KUBERNETES:
            return await self.node_condition_vectors(now)
        vectors: dict[str, Sequence[Sample]] = {}
        for query in distinct_queries([rule]):
            cached = self._query_cache.get(query)
            if cached is not None and now - cached[0] < QUERY_SHARING_SECONDS:
                vectors[query] = cached[1]
                continue
            vector = await self.prometheus.query(query, at=now)
            self._query_cache[query] = (now, vector)
            vectors[query] = vector
        return vectors

    async def node_condition_vectors(self, now: float) -> dict[str, Sequence[Sample]]:
        nodes = await self.cluster.list_nodes()
        leases = await self.cluster.node_lease_renew_times()
        ready: list[Sample] = []
        lease_age: list[Sample] = []
        unreachable: list[Sample] = []
        for node in nodes:
            labels = {"node": node.name}
            ready.append(Sample(labels=labels, value=1.0 if node.ready == "True" else 0.0))
            renewed = leases.get(node.name)
            if renewed is not None:
                lease_age.append(Sample(labels=labels, value=max(0.0, now - renewed)))
            since = node.ready_since if node.ready != "True" else None
            unreachable.append(Sample(labels=labels, value=max(0.0, now - since) if since is not None else 0.0))
        return {"NodeReady": ready, "NodeLeaseAgeSeconds": lease_age, "NodeUnreachableSeconds": unreachable}


def _pvc_target(
    built: dict[tuple[str, str], BuiltClaim], claim: Any, namespace_labels: Mapping[str, str], through: str | None
) -> TargetObject:
    """The claim's object; the one built last cycle while the cache's record, its namespace's labels and
    what it grows through are the same (a steady cycle over 10,000 claims builds none)."""
    key = (claim.namespace, claim.name)
    found = built.get(key)
    if found is not None and found[0] is claim and found[1] == namespace_labels and found[2] == through:
        return found[3]
    target = replace(
        pvc_object(
            namespace=claim.namespace,
            name=claim.name,
            labels=claim.labels,
            capacity_bytes=claim.capacity_bytes or claim.requested_bytes,
            annotations=claim.annotations,
            grown_through=through,
        ),
        namespace_labels=namespace_labels,
    )
    built[key] = (claim, namespace_labels, through, target)
    return target
