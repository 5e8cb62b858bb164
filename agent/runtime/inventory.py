"""What a rule's cycle looks at: the objects of its target kind, and one vector per distinct expression.

Why it exists: the pure engine joins samples to objects by identity labels; something has to turn the
cluster's PVCs, broker pods, nodes and storage pools into `TargetObject`s, and run the queries. That
is this module's only job, so the cycle itself does not know where objects or samples come from.

Samples: one Prometheus query per distinct expression, shared for a second by the rules that evaluate
in that second; or, for `provider: kubernetes` rules, NodeReady / NodeLeaseAgeSeconds /
NodeUnreachableSeconds computed from Nodes and their Leases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from agent.adapters.storagepools import StoragePoolApi
from agent.core.engine import distinct_queries
from agent.core.matching import TargetObject, broker_object, node_object, pool_object, pvc_object
from agent.core.rules import ConditionProvider, Rule, TargetKind
from agent.core.samples import Sample


class QueryClient(Protocol):
    async def query(self, expr: str, *, at: float | None = None) -> Sequence[Sample]: ...


class ClusterReader(Protocol):
    """The reads the inventory needs from the Kubernetes adapter."""

    async def list_pvcs(self) -> Sequence[Any]: ...

    async def namespace_labels(self) -> Mapping[str, Mapping[str, str]]: ...

    async def list_nodes(self) -> Sequence[Any]: ...

    async def node_lease_renew_times(self) -> Mapping[str, float]: ...

    async def list_pods(self, *, namespace: str | None = None, label_selector: str | None = None) -> Sequence[Any]: ...


class StorageApiNotConfiguredError(RuntimeError):
    """A StoragePool rule runs in an agent that was given no storage API."""


QUERY_SHARING_SECONDS = 1.0


@dataclass
class Inventory:
    cluster: ClusterReader
    prometheus: QueryClient
    pools: StoragePoolApi | None = None
    """The storage API (kafka-autopilot run --storage-api); StoragePool rules need it."""
    _query_cache: dict[str, tuple[float, Sequence[Sample]]] = field(default_factory=dict)

    async def objects(self, kind: TargetKind) -> list[TargetObject]:
        if kind is TargetKind.PVC:
            namespaces = await self.cluster.namespace_labels()
            return [
                replace(
                    pvc_object(
                        namespace=claim.namespace,
                        name=claim.name,
                        labels=claim.labels,
                        capacity_bytes=claim.capacity_bytes or claim.requested_bytes,
                    ),
                    namespace_labels=namespaces.get(claim.namespace, {}),
                )
                for claim in await self.cluster.list_pvcs()
            ]
        if kind is TargetKind.NODE:
            return [node_object(name=node.name, labels=node.labels) for node in await self.cluster.list_nodes()]
        if kind is TargetKind.BROKER:
            namespaces = await self.cluster.namespace_labels()
            brokers = []
            for pod in await self.cluster.list_pods():
                ordinal = pod.name.rpartition("-")[2]
                if ordinal.isdigit():
                    brokers.append(
                        replace(
                            broker_object(
                                namespace=pod.namespace, pod=pod.name, broker_id=int(ordinal), labels=pod.labels
                            ),
                            namespace_labels=namespaces.get(pod.namespace, {}),
                        )
                    )
            return brokers
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
