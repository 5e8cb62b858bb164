"""Join one instant vector per expression to the objects a rule selects.

The agent runs one query per distinct expression per cycle, whatever the number of objects, and then
joins the result to objects by identity labels. Default identity labels per target kind (the first
alternative whose labels a series carries in full is used; a rule may override them with
`spec.identityLabels`):

| target            | identity labels, in order of preference                        |
|-------------------|----------------------------------------------------------------|
| PersistentVolumeClaim | namespace + persistentvolumeclaim, namespace + pvc         |
| KafkaBroker       | namespace + pod, pod, broker (the broker id)                   |
| Node              | node, instance (a trailing :port is ignored)                   |
| StoragePool       | node + pool                                                    |

A series with none of the identity labels is cluster-wide (e.g. `max(...offlinepartitionscount)`):
when it is the vector's only series, it applies to every selected object. Series that name no
selected object are counted as unmatched; two series naming one object make that object "no data"
(the agent does not guess which one is right).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from agent.core.pools import PoolShape
from agent.core.rules import IdentityLabels, Rule, TargetKind
from agent.core.samples import Sample

DEFAULT_IDENTITY_LABELS: Mapping[TargetKind, IdentityLabels] = {
    TargetKind.PVC: (("namespace", "persistentvolumeclaim"), ("namespace", "pvc")),
    TargetKind.BROKER: (("namespace", "pod"), ("pod",), ("broker",)),
    TargetKind.NODE: (("node",), ("instance",)),
    TargetKind.STORAGE_POOL: (("node", "pool"),),
}


@dataclass(frozen=True, kw_only=True)
class TargetObject:
    """An object a rule may act on, as the inventory saw it this cycle."""

    kind: TargetKind
    name: str
    namespace: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    identity: Mapping[str, str] = field(default_factory=dict)
    """Label name -> value under which metrics name this object."""
    capacity_bytes: int | None = None
    """PVC: the size it has been given (spec request); None when unknown."""
    pool: PoolShape | None = None
    owner: str | None = None
    """`Kind/name` of a controlling owner (e.g. a Strimzi KafkaNodePool), if any."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


def pvc_object(
    *,
    namespace: str,
    name: str,
    labels: Mapping[str, str],
    capacity_bytes: int | None,
    owner: str | None = None,
) -> TargetObject:
    identity = {"namespace": namespace, "persistentvolumeclaim": name, "pvc": name}
    return TargetObject(
        kind=TargetKind.PVC,
        name=name,
        namespace=namespace,
        labels=labels,
        identity=identity,
        capacity_bytes=capacity_bytes,
        owner=owner,
    )


def broker_object(*, namespace: str, pod: str, broker_id: int, labels: Mapping[str, str]) -> TargetObject:
    identity = {"namespace": namespace, "pod": pod, "broker": str(broker_id)}
    return TargetObject(
        kind=TargetKind.BROKER,
        name=pod,
        namespace=namespace,
        labels=labels,
        identity=identity,
    )


def node_object(*, name: str, labels: Mapping[str, str]) -> TargetObject:
    return TargetObject(kind=TargetKind.NODE, name=name, labels=labels, identity={"node": name, "instance": name})


def pool_object(*, node: str, pool: str, labels: Mapping[str, str], shape: PoolShape | None) -> TargetObject:
    return TargetObject(
        kind=TargetKind.STORAGE_POOL,
        name=f"{node}/{pool}",
        labels=labels,
        identity={"node": node, "pool": pool},
        pool=shape,
    )


def select_objects(rule: Rule, objects: Sequence[TargetObject]) -> list[TargetObject]:
    """The objects of the rule's target kind that its selector and namespaceSelector match."""
    return [
        candidate
        for candidate in objects
        if candidate.kind is rule.target
        and rule.selector.matches(candidate.labels)
        and (rule.namespace_selector is None or rule.namespace_selector.matches(candidate.namespace_labels))
    ]


@dataclass(frozen=True, kw_only=True)
class JoinResult:
    values: Mapping[str, float]
    """Object key -> sample value, for objects with exactly one matching series."""
    unmatched_series: int = 0
    ambiguous_objects: frozenset[str] = frozenset()


class IdentityIndex:
    """Object lookup by identity label values, built once per rule and cycle, reused per expression."""

    def __init__(self, *, objects: Sequence[TargetObject], identity_labels: IdentityLabels) -> None:
        self.objects = objects
        self.alternatives = identity_labels
        self.every_identity_label = frozenset(label for labels in identity_labels for label in labels)
        self.by_alternative: list[dict[tuple[str, ...], str]] = []
        for labels in identity_labels:
            index: dict[tuple[str, ...], str] = {}
            for candidate in objects:
                if all(label in candidate.identity for label in labels):
                    index[tuple(candidate.identity[label] for label in labels)] = candidate.key
            self.by_alternative.append(index)

    def join(self, vector: Sequence[Sample]) -> JoinResult:
        if len(vector) == 1 and not self.every_identity_label.intersection(vector[0].labels):
            value = vector[0].value
            return JoinResult(values={candidate.key: value for candidate in self.objects})
        values: dict[str, float] = {}
        ambiguous: set[str] = set()
        unmatched = 0
        for sample in vector:
            key = self._lookup(sample.labels)
            if key is None:
                unmatched += 1
            elif key in values or key in ambiguous:
                ambiguous.add(key)
                values.pop(key, None)
            else:
                values[key] = sample.value
        return JoinResult(values=values, unmatched_series=unmatched, ambiguous_objects=frozenset(ambiguous))

    def _lookup(self, labels: Mapping[str, str]) -> str | None:
        for names, index in zip(self.alternatives, self.by_alternative, strict=True):
            if all(name in labels for name in names):
                wanted = tuple(_identity_value(name, labels[name]) for name in names)
                return index.get(wanted)
        return None


def _identity_value(label: str, value: str) -> str:
    if label == "instance" and value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def identity_labels_for(rule: Rule) -> IdentityLabels:
    return rule.identity_labels or DEFAULT_IDENTITY_LABELS[rule.target]
