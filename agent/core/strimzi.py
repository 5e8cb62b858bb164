"""Which Strimzi resource owns a PVC's size, and how to grow it there, purely.

Strimzi's cluster operator makes each broker's PVCs from a storage spec: the `KafkaNodePool`'s
`spec.storage` (node-pool clusters), or `Kafka.spec.kafka.storage` (older clusters). A resizer that
patches those PVCs behind its back fights the operator (strimzi #11909); growing the volume in the
storage spec is what the operator then carries out on every PVC of the pool. This module says, with
no I/O:
- whether a PVC is Strimzi's, and then which cluster, pool and JBOD volume it is (`owned_volume`).
  Identity comes from the PVC's labels (`strimzi.io/cluster`, `strimzi.io/pool-name`) and its
  ownerReferences, which must agree; the volume id and node id from the PVC's name, as Strimzi
  documents it: `data-<volume id>-<cluster>-<pool>-<node id>` (JBOD), `data-<cluster>-<pool>-<node id>`
  (one persistent-claim volume), with `kafka` for the pool of an older cluster. Anything else is
  refused with the reason, never guessed;
- which volume of a storage spec that is, and its size (`volume_size`): refused for `ephemeral`
  storage, a JBOD volume id that is not found, or a size that does not parse;
- the merge patch that sets that volume's size (`storage_patch`): the whole `storage` object with
  one size changed, since a merge patch replaces lists whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from agent.core.quantity import QuantityError, format_bytes, parse_bytes

GROUP = "kafka.strimzi.io"
VERSION = "v1beta2"
CLUSTER_LABEL = "strimzi.io/cluster"
POOL_LABEL = "strimzi.io/pool-name"
NODE_POOLS_ANNOTATION = "strimzi.io/node-pools"
OWNER_KINDS = frozenset({"Kafka", "KafkaNodePool", "StrimziPodSet"})
OLDER_CLUSTER_POOL = "kafka"
"""The pod-name part where a pool's name would be, in a cluster without node pools (`my-cluster-kafka-0`)."""


class OwnerLike(Protocol):
    @property
    def kind(self) -> str: ...

    @property
    def name(self) -> str: ...


class ClaimLike(Protocol):
    @property
    def namespace(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def labels(self) -> Mapping[str, str]: ...

    @property
    def owner_references(self) -> Sequence[OwnerLike]: ...


Claim = TypeVar("Claim", bound=ClaimLike)


@dataclass(frozen=True, kw_only=True)
class NotGrowable:
    """A Strimzi PVC whose size the agent cannot grow safely, and why."""

    reason: str


@dataclass(frozen=True, kw_only=True)
class OwnedVolume:
    """A Strimzi PVC, placed: its cluster, its pool (None: the Kafka resource's storage), its volume and node."""

    namespace: str
    cluster: str
    pool: str | None
    volume_id: int | None
    """The JBOD volume id; None for a single persistent-claim volume."""
    node_id: int

    @property
    def kind(self) -> str:
        return "KafkaNodePool" if self.pool is not None else "Kafka"

    @property
    def plural(self) -> str:
        return "kafkanodepools" if self.pool is not None else "kafkas"

    @property
    def resource_name(self) -> str:
        return self.pool if self.pool is not None else self.cluster

    @property
    def resource(self) -> str:
        """`Kind namespace/name` of the resource whose storage spec sizes this PVC."""
        return f"{self.kind} {self.namespace}/{self.resource_name}"

    @property
    def volume_text(self) -> str:
        return f"volume {self.volume_id}" if self.volume_id is not None else "volume"

    @property
    def volume_key(self) -> tuple[str, str, str | None, int | None]:
        """The same for every claim made from this volume of this storage spec (one per node)."""
        return (self.namespace, self.cluster, self.pool, self.volume_id)

    def grows(self, brokers: int) -> str:
        """What growing it means, for previews and audit records."""
        where = f"pool `{self.pool}`" if self.pool is not None else f"Kafka `{self.cluster}`"
        return f"grows {where} {self.volume_text} for {brokers} broker{'s' if brokers != 1 else ''}"


def owned_volume(claim: ClaimLike) -> OwnedVolume | NotGrowable | None:
    """The Strimzi volume this PVC is, NotGrowable when it is Strimzi's but cannot be placed, None when
    nothing says Strimzi owns it."""
    owners = [owner for owner in claim.owner_references if owner.kind in OWNER_KINDS]
    cluster = claim.labels.get(CLUSTER_LABEL)
    pool = claim.labels.get(POOL_LABEL)
    if not owners and cluster is None and pool is None:
        return None
    shown = ", ".join(f"{owner.kind}/{owner.name}" for owner in owners) or f"{CLUSTER_LABEL} labels"
    if not cluster:
        return NotGrowable(reason=f"owned by {shown} but has no {CLUSTER_LABEL} label: its cluster is unknown")
    for owner in owners:
        expected = {"Kafka": cluster, "KafkaNodePool": pool}.get(owner.kind)
        if owner.kind == "KafkaNodePool" and pool is None:
            return NotGrowable(reason=f"owned by KafkaNodePool/{owner.name} but has no {POOL_LABEL} label")
        if expected is not None and owner.name != expected:
            return NotGrowable(
                reason=f"owned by {owner.kind}/{owner.name} but labelled {CLUSTER_LABEL}={cluster}"
                + (f", {POOL_LABEL}={pool}" if pool is not None else "")
                + ": its owner is ambiguous"
            )
    part = pool if pool is not None else OLDER_CLUSTER_POOL
    named = re.fullmatch(rf"data-(?:(\d+)-)?{re.escape(cluster)}-{re.escape(part)}-(\d+)", claim.name)
    if named is None:
        return NotGrowable(
            reason=f"a Strimzi claim of cluster {cluster} whose name is not Strimzi's "
            f"(data-[<volume id>-]{cluster}-{part}-<node id>): its volume is unknown"
        )
    return OwnedVolume(
        namespace=claim.namespace,
        cluster=cluster,
        pool=pool,
        volume_id=int(named.group(1)) if named.group(1) is not None else None,
        node_id=int(named.group(2)),
    )


def claims_of(volume: OwnedVolume, claims: Iterable[Claim], *, node_ids: Set[int] = frozenset()) -> list[Claim]:
    """The claims among `claims` made from the same volume of the same storage spec (one per node),
    of the nodes `node_ids` only when given (a pool's status.nodeIds: not a removed node's claim)."""
    found = []
    for claim in claims:
        placed = owned_volume(claim) if claim.namespace == volume.namespace else None
        if (
            isinstance(placed, OwnedVolume)
            and placed.volume_key == volume.volume_key
            and (not node_ids or placed.node_id in node_ids)
        ):
            found.append(claim)
    return found


@dataclass(frozen=True, kw_only=True)
class VolumeSize:
    """A persistent-claim volume of a storage spec, and its size."""

    size_bytes: int
    volume: Mapping[str, Any]


def storage_of(volume: OwnedVolume, resource: Mapping[str, Any]) -> Mapping[str, Any] | NotGrowable:
    """The storage spec of `resource` (the KafkaNodePool or Kafka `volume` names) that sizes the volume."""
    metadata = resource.get("metadata") or {}
    spec = resource.get("spec") or {}
    if volume.pool is not None:
        labelled = (metadata.get("labels") or {}).get(CLUSTER_LABEL)
        if labelled != volume.cluster:
            return NotGrowable(
                reason=f"{volume.resource} is labelled {CLUSTER_LABEL}={labelled}, not {volume.cluster}: "
                "not the pool of this claim's cluster"
            )
        storage = spec.get("storage")
    else:
        if (metadata.get("annotations") or {}).get(NODE_POOLS_ANNOTATION) == "enabled":
            return NotGrowable(
                reason=f"{volume.resource} uses node pools but the claim has no {POOL_LABEL} label: its pool is unknown"
            )
        storage = (spec.get("kafka") or {}).get("storage")
    if not isinstance(storage, Mapping):
        return NotGrowable(reason=f"{volume.resource} has no storage spec")
    return storage


def volume_size(volume: OwnedVolume, storage: Mapping[str, Any], *, resource: str) -> VolumeSize | NotGrowable:
    """The volume of the storage spec `volume` names, and its size; NotGrowable with the reason otherwise."""
    kind = storage.get("type")
    if kind == "jbod":
        if volume.volume_id is None:
            return NotGrowable(reason=f"{resource} has JBOD storage but the claim's name carries no volume id")
        volumes = [v for v in storage.get("volumes") or [] if isinstance(v, Mapping)]
        found = [v for v in volumes if _volume_id(v) == volume.volume_id]
        if len(found) != 1:
            return NotGrowable(
                reason=f"JBOD volume id {volume.volume_id} is not found in {resource}"
                if not found
                else f"JBOD volume id {volume.volume_id} is listed twice in {resource}"
            )
        chosen: Mapping[str, Any] = found[0]
    elif volume.volume_id is not None:
        return NotGrowable(
            reason=f"the claim's name carries volume id {volume.volume_id} but {resource} storage "
            f"is type: {kind}, not jbod"
        )
    else:
        chosen = storage
    if chosen.get("type") != "persistent-claim":
        return NotGrowable(
            reason=f"{resource} {volume.volume_text} is type: {chosen.get('type')}: only persistent-claim volumes grow"
        )
    try:
        size = parse_bytes(str(chosen.get("size")))
    except QuantityError as error:
        return NotGrowable(reason=f"{resource} {volume.volume_text} has no size we can read: {error}")
    return VolumeSize(size_bytes=size, volume=chosen)


def _volume_id(volume: Mapping[str, Any]) -> int | None:
    value = volume.get("id", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def storage_patch(
    volume: OwnedVolume, storage: Mapping[str, Any], *, new_bytes: int, resource_version: str | None
) -> dict[str, Any]:
    """The merge patch that sets the volume's size to `new_bytes` and changes nothing else; with the
    `resource_version` read, so a change in between makes the apiserver refuse it (409)."""
    size = format_bytes(new_bytes)
    if volume.volume_id is None:
        grown: dict[str, Any] = {**storage, "size": size}
    else:
        grown = {
            **storage,
            "volumes": [
                {**v, "size": size} if isinstance(v, Mapping) and _volume_id(v) == volume.volume_id else v
                for v in storage.get("volumes") or []
            ],
        }
    spec: dict[str, Any] = {"storage": grown} if volume.pool is not None else {"kafka": {"storage": grown}}
    patch: dict[str, Any] = {"spec": spec}
    if resource_version:
        patch["metadata"] = {"resourceVersion": resource_version}
    return patch
