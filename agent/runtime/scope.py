"""Sidecar mode (`kafka-autopilot run --scope-pod NAMESPACE/NAME`): the agent sees one broker pod only.

Run as a container of a Kafka broker pod, the agent must act on that broker and on the volumes that
pod mounts, and on nothing else. So the inventory it reads is narrowed here, before any rule sees
it: the broker target holds the one pod, the PVC target the claims of its volumes. Node and
storage-pool rules act on shared machines, so in this mode they are not run; their health says so.
A sidecar does not use the service mode's watch-fed caches of the cluster (agent.adapters.kubernetes.cache):
its few reads (one pod, the claims of one namespace) stay direct, and its Role grants no cluster-wide
list or watch; only its state objects come from a watch-fed cache.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from agent.adapters.kubernetes import NotFoundError, PodInfo, PvcInfo, StorageClassInfo
from agent.core.rules import LabelSelector, Rule, TargetKind

SCOPE_POD_ENV = "KAFKA_AUTOPILOT_SCOPE_POD"
NOT_RUN_IN_SIDECAR_KINDS = frozenset({TargetKind.NODE, TargetKind.STORAGE_POOL})


class ScopeError(ValueError):
    """A --scope-pod value that is not NAMESPACE/NAME, or an inventory read the scope forbids."""


@dataclass(frozen=True, kw_only=True)
class PodScope:
    namespace: str
    name: str

    @classmethod
    def parse(cls, text: str) -> PodScope:
        namespace, slash, name = text.strip().partition("/")
        if not slash or not namespace or not name or "/" in name:
            raise ScopeError(f"--scope-pod must be NAMESPACE/NAME (the broker pod), got {text!r}")
        return cls(namespace=namespace, name=name)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def not_run_reason(scope: PodScope) -> str:
    return f"not run in sidecar mode (--scope-pod {scope}): node and storage-pool rules act beyond one pod"


def split_rules(rules: Sequence[Rule], scope: PodScope) -> tuple[list[Rule], dict[str, str]]:
    """The rules that run in this scope, and rule name -> why it does not (its health)."""
    running = [rule for rule in rules if rule.target not in NOT_RUN_IN_SIDECAR_KINDS]
    reason = not_run_reason(scope)
    return running, {rule.name: reason for rule in rules if rule.target in NOT_RUN_IN_SIDECAR_KINDS}


class ScopeSource(Protocol):
    """The Kubernetes adapter's reads that the scoped inventory narrows."""

    async def get_pod(self, *, namespace: str, name: str) -> PodInfo: ...

    async def list_pvcs(self, *, namespace: str | None = None) -> list[PvcInfo]: ...

    async def get_pvc(self, *, namespace: str, name: str) -> PvcInfo: ...

    async def namespace_labels(self) -> dict[str, dict[str, str]]: ...

    async def storage_class(self, name: str) -> StorageClassInfo: ...


@dataclass(frozen=True, kw_only=True)
class ScopedInventory:
    """The agent's inventory (and the resize executor's reader), narrowed to one pod.

    Reads are namespaced (the pod, the PVCs of its namespace), so a Role in the Kafka namespace is
    enough: no cluster-wide list of pods or PVCs.
    """

    source: ScopeSource
    scope: PodScope

    async def own_pod(self) -> PodInfo | None:
        try:
            return await self.source.get_pod(namespace=self.scope.namespace, name=self.scope.name)
        except NotFoundError:
            return None

    async def list_pods(self, *, namespace: str | None = None, label_selector: str | None = None) -> list[PodInfo]:
        if namespace not in (None, self.scope.namespace):
            return []
        pod = await self.own_pod()
        if pod is None or (label_selector and not _matches(pod.labels, label_selector)):
            return []
        return [pod]

    async def list_pvcs(self, *, namespace: str | None = None, label_selector: str | None = None) -> list[PvcInfo]:
        """The claims the pod mounts (the rule's selector is applied by the engine, as for every target)."""
        if namespace not in (None, self.scope.namespace):
            return []
        pod = await self.own_pod()
        if pod is None:
            return []
        return mounted_claims(pod, await self.source.list_pvcs(namespace=self.scope.namespace))

    async def get_pvc(self, *, namespace: str, name: str) -> PvcInfo:
        """One claim the pod mounts, as the apiserver has it now; NotFoundError for any other (or none)."""
        pod = await self.own_pod()
        if namespace != self.scope.namespace or pod is None or name not in pod.claims:
            raise NotFoundError(
                f"PersistentVolumeClaim {namespace}/{name} is not mounted by pod {self.scope}",
                server="",
                verb="GET",
                resource="persistentvolumeclaims",
                namespace=namespace,
                name=name,
            )
        return await self.source.get_pvc(namespace=namespace, name=name)

    async def namespace_labels(self) -> dict[str, dict[str, str]]:
        labels = await self.source.namespace_labels()
        return {self.scope.namespace: labels.get(self.scope.namespace, {})}

    async def storage_class(self, name: str) -> StorageClassInfo:
        return await self.source.storage_class(name)

    async def list_nodes(self) -> list[object]:
        raise ScopeError(f"nodes are outside the scope of pod {self.scope}")

    async def node_lease_renew_times(self) -> Mapping[str, float]:
        raise ScopeError(f"node leases are outside the scope of pod {self.scope}")


def mounted_claims(pod: PodInfo, claims: Sequence[PvcInfo]) -> list[PvcInfo]:
    """The claims among `claims` that the pod's volumes mount."""
    mounted = set(pod.claims)
    return [claim for claim in claims if claim.namespace == pod.namespace and claim.name in mounted]


def _matches(labels: Mapping[str, str], selector: str) -> bool:
    """A `labelSelector` string (`a=b,c in (d,e),!f`, as list_pods receives it) against the pod's labels."""
    return LabelSelector.from_query(selector).matches(labels)
