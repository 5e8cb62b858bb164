"""Every change the agent can make to a cluster, as data, and the two appliers that carry them out.

Executors never call a client to change something: they describe the change as a Mutation and hand
it to an Applier. The live applier performs it; the dry-run applier only records it in the audit
trail. Which applier each executor gets is decided once, at start-up, so dry-run and live runs take
the same path all the way. After applying, an executor hands its verify step to the applier
(`Applier.after_apply`, through `agent.actions.base.verified`): the live applier runs it, the dry-run
applier answers with what it recorded instead. No executor asks "am I in dry-run?".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

from agent.core.elections import PartitionElection, partition_list
from agent.core.quantity import format_bytes

TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
Result = TypeVar("Result")


@dataclass(frozen=True, kw_only=True)
class ResizePvc:
    namespace: str
    name: str
    new_bytes: int
    annotations: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return f"patch PersistentVolumeClaim {self.namespace}/{self.name}: request {format_bytes(self.new_bytes)}"


@dataclass(frozen=True, kw_only=True)
class GrowOwnerStorage:
    """A merge patch of the storage spec of the operator resource that owns PVCs (a Strimzi
    KafkaNodePool or Kafka): its operator then grows every PVC made from it."""

    group: str
    version: str
    plural: str
    kind: str
    namespace: str
    name: str
    patch: Mapping[str, Any]
    change: str
    """What the patch changes, in words: `volume 0 size 400Gi -> 800Gi (grows pool `brokers` ...)`."""

    def describe(self) -> str:
        return f"patch {self.kind} {self.namespace}/{self.name}: {self.change}"


@dataclass(frozen=True, kw_only=True)
class CordonNode:
    name: str
    annotations: Mapping[str, str] = field(default_factory=dict)
    """Written with the cordon: the agent's mark that the cordon is its own, and what it is moving."""

    def describe(self) -> str:
        return f"cordon Node {self.name}"


@dataclass(frozen=True, kw_only=True)
class AnnotateNode:
    name: str
    annotations: Mapping[str, str]

    def describe(self) -> str:
        return f"annotate Node {self.name} with {', '.join(sorted(self.annotations))}"


@dataclass(frozen=True, kw_only=True)
class ReleaseNode:
    """Undo what the agent did to a node, as far as its marks (annotation -> value it wrote) still say so."""

    name: str
    marks: Mapping[str, str]
    uncordon: bool
    taint_keys: tuple[str, ...] = ()

    def describe(self) -> str:
        undone = (["uncordon"] if self.uncordon else []) + [f"remove taint {key}" for key in self.taint_keys]
        what = " and ".join(undone) or "remove the agent's marks"
        return f"{what} on Node {self.name} (the agent's own, marked {', '.join(sorted(self.marks))})"


@dataclass(frozen=True, kw_only=True)
class TaintNode:
    name: str
    key: str
    value: str
    effect: TaintEffect

    def describe(self) -> str:
        return f"taint Node {self.name} with {self.key}={self.value}:{self.effect}"


@dataclass(frozen=True, kw_only=True)
class ForceDeletePod:
    namespace: str
    name: str
    uid: str

    def describe(self) -> str:
        return f"force-delete Pod {self.namespace}/{self.name} (uid {self.uid})"


@dataclass(frozen=True, kw_only=True)
class DeletePod:
    """A graceful delete (the pod's own termination grace period), only of the pod with `uid`."""

    namespace: str
    name: str
    uid: str

    def describe(self) -> str:
        return f"delete Pod {self.namespace}/{self.name} (uid {self.uid})"


@dataclass(frozen=True, kw_only=True)
class DeleteVolumeAttachment:
    name: str

    def describe(self) -> str:
        return f"delete VolumeAttachment {self.name}"


@dataclass(frozen=True, kw_only=True)
class ElectPreferredLeaders:
    """One Kafka ElectLeaders request (PREFERRED) for these partitions, on behalf of `broker_id`."""

    broker_id: int
    partitions: tuple[tuple[str, int], ...]

    def describe(self) -> str:
        return (
            f"elect preferred leader (broker {self.broker_id}) of {len(self.partitions)} "
            f"partition{'s' if len(self.partitions) != 1 else ''}: {partition_list(self.partitions)}"
        )


class ElectionIncompleteError(Exception):
    """Kafka answered an election, but not every partition is led by its preferred replica."""

    def __init__(self, failures: Sequence[PartitionElection]) -> None:
        super().__init__("; ".join(failure.describe() for failure in failures))
        self.failures = tuple(failures)


@dataclass(frozen=True, kw_only=True)
class ExpandPool:
    """Grow storage pool `uuid` (`pool` on `node`) to `new_bytes` by `operation` (an SDK ResizeOperationType)."""

    uuid: str
    node: str
    pool: str
    current_bytes: int
    new_bytes: int
    operation: str
    drives_added: int = 0
    new_drive_size_bytes: int | None = None

    def describe(self) -> str:
        how = {
            "RESIZE_TYPE_ADD_DISK": f"adding {self.drives_added} drive(s)",
            "RESIZE_TYPE_RESIZE_DISK": "resizing every drive"
            + (f" to {format_bytes(self.new_drive_size_bytes)}" if self.new_drive_size_bytes else ""),
        }.get(self.operation, "as the storage layer chooses")
        return (
            f"expand storage pool {self.node}/{self.pool} (uuid {self.uuid}):"
            f" {format_bytes(self.current_bytes)} -> {format_bytes(self.new_bytes)} by {how} ({self.operation})"
        )


Mutation = (
    ResizePvc
    | GrowOwnerStorage
    | CordonNode
    | AnnotateNode
    | ReleaseNode
    | TaintNode
    | ForceDeletePod
    | DeletePod
    | DeleteVolumeAttachment
    | ElectPreferredLeaders
    | ExpandPool
)


class Applier(Protocol):
    async def apply(self, mutation: Mutation) -> None: ...

    async def after_apply(self, *, verify: Callable[[], Awaitable[Result]], recorded: Callable[[], Result]) -> Result:
        """What follows the mutations: `verify()` when they changed the cluster, else `recorded()`."""
        ...


class ClusterWriter(Protocol):
    """The subset of the Kubernetes adapter the live applier needs (what each call returns is ignored)."""

    async def resize_pvc(
        self, *, namespace: str, name: str, new_bytes: int, annotations: Mapping[str, str]
    ) -> object: ...

    async def patch_custom_object(
        self, *, group: str, version: str, plural: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> object: ...

    async def cordon_node(self, name: str, *, annotations: Mapping[str, str] | None = None) -> object: ...

    async def annotate_node(self, name: str, *, annotations: Mapping[str, str]) -> object: ...

    async def release_node(
        self, name: str, *, marks: Mapping[str, str], uncordon: bool, taint_keys: Sequence[str]
    ) -> object: ...

    async def taint_node(self, *, name: str, key: str, value: str | None, effect: TaintEffect) -> object: ...

    async def force_delete_pod(self, *, namespace: str, name: str, uid: str) -> object: ...

    async def delete_pod(self, *, namespace: str, name: str, uid: str) -> object: ...

    async def delete_volume_attachment(self, name: str) -> object: ...


class KafkaWriter(Protocol):
    """The subset of the Kafka adapter the live applier needs."""

    async def elect_preferred_leaders(self, partitions: Sequence[tuple[str, int]]) -> Sequence[PartitionElection]: ...


class PoolWriter(Protocol):
    """The subset of the storage-pool adapter (agent.adapters.storagepools) the live applier needs."""

    async def resize_pool(
        self, *, uuid: str, size_bytes: int | None = None, percentage: int | None = None, operation: str = ...
    ) -> None: ...


class MissingWriterError(RuntimeError):
    """A mutation reached a live applier that was not given the client it needs (Kafka, storage API)."""


@dataclass
class LiveApplier:
    writer: ClusterWriter
    kafka: KafkaWriter | None = None
    pools: PoolWriter | None = None

    async def after_apply(self, *, verify: Callable[[], Awaitable[Result]], recorded: Callable[[], Result]) -> Result:
        """The mutations changed the cluster: verify them."""
        return await verify()

    async def apply(self, mutation: Mutation) -> None:
        match mutation:
            case ResizePvc():
                await self.writer.resize_pvc(
                    namespace=mutation.namespace,
                    name=mutation.name,
                    new_bytes=mutation.new_bytes,
                    annotations=mutation.annotations,
                )
            case GrowOwnerStorage():
                await self.writer.patch_custom_object(
                    group=mutation.group,
                    version=mutation.version,
                    plural=mutation.plural,
                    namespace=mutation.namespace,
                    name=mutation.name,
                    patch=mutation.patch,
                )
            case CordonNode():
                await self.writer.cordon_node(mutation.name, annotations=mutation.annotations)
            case AnnotateNode():
                await self.writer.annotate_node(mutation.name, annotations=mutation.annotations)
            case ReleaseNode():
                await self.writer.release_node(
                    mutation.name, marks=mutation.marks, uncordon=mutation.uncordon, taint_keys=mutation.taint_keys
                )
            case TaintNode():
                await self.writer.taint_node(
                    name=mutation.name, key=mutation.key, value=mutation.value, effect=mutation.effect
                )
            case ForceDeletePod():
                await self.writer.force_delete_pod(namespace=mutation.namespace, name=mutation.name, uid=mutation.uid)
            case DeletePod():
                await self.writer.delete_pod(namespace=mutation.namespace, name=mutation.name, uid=mutation.uid)
            case DeleteVolumeAttachment():
                await self.writer.delete_volume_attachment(mutation.name)
            case ElectPreferredLeaders():
                if self.kafka is None:
                    raise MissingWriterError(
                        f"cannot {mutation.describe()}: the agent has no Kafka connection (--kafka)"
                    )
                results = await self.kafka.elect_preferred_leaders(mutation.partitions)
                failures = [result for result in results if not result.done]
                if failures:
                    raise ElectionIncompleteError(failures)
            case ExpandPool():
                if self.pools is None:
                    raise MissingWriterError(
                        f"cannot {mutation.describe()}: no storage API (kafka-autopilot run --storage-api URL)"
                    )
                await self.pools.resize_pool(
                    uuid=mutation.uuid, size_bytes=mutation.new_bytes, operation=mutation.operation
                )


@dataclass
class DryRunApplier:
    """Records what would be done; changes nothing."""

    record: Callable[[Mutation], None]

    async def apply(self, mutation: Mutation) -> None:
        self.record(mutation)

    async def after_apply(self, *, verify: Callable[[], Awaitable[Result]], recorded: Callable[[], Result]) -> Result:
        """Nothing changed, so there is nothing to verify: what was recorded is the result."""
        return recorded()
