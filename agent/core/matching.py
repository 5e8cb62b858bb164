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

The join never guesses; every object it gives no value says why (`JoinResult.no_data`):

- a series that names two or more objects (e.g. `pod` alone, with a `kafka-0` in two namespaces;
  `broker` alone across two clusters) gives **each** of them no data, never the last one seen;
- two series naming one object give that object no data;
- a series with none of the identity labels is cluster-wide (e.g. `max(...offlinepartitionscount)`).
  For KafkaBroker rules, when it is the vector's only series, it applies to every selected broker
  (the cluster's state is each broker's concern). For PVCs, nodes and pools a value without identity
  is no data for every object: one stray series must not resize every volume.

Series that name no selected object are counted as unmatched. A broker pod whose broker id is unknown
(`TargetObject.identity_problem`) has no `broker` identity: series naming it by pod still reach it.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import NamedTuple

from agent.core.operators import Answers, Operator, partition
from agent.core.pools import PoolShape
from agent.core.rules import IdentityLabels, Rule, TargetKind
from agent.core.samples import Sample

IGNORE_ANNOTATION = "kafka-autopilot.io/ignore"
"""`"true"` on a PVC, pod or node (or a Strimzi KafkaNodePool): no rule acts on it (agent.core.engine)."""
MAXSIZE_ANNOTATION = "kafka-autopilot.io/maxsize"
"""A quantity on a PVC: its own maxsize, which applies only when lower than the rule's."""

DEFAULT_IDENTITY_LABELS: Mapping[TargetKind, IdentityLabels] = {
    TargetKind.PVC: (("namespace", "persistentvolumeclaim"), ("namespace", "pvc")),
    TargetKind.BROKER: (("namespace", "pod"), ("pod",), ("broker",)),
    TargetKind.NODE: (("node",), ("instance",)),
    TargetKind.STORAGE_POOL: (("node", "pool"),),
}


@dataclass(frozen=True, kw_only=True, slots=True)
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
    annotations: Mapping[str, str] = field(default_factory=dict)
    grown_through: str | None = None
    """PVC: what a resize grows when an operator owns the claim (e.g. "grows pool `brokers` volume 0
    for 4 brokers"), for the plan's preview; None for a claim resized itself."""
    uid: str | None = None
    """The object's uid as the inventory saw it (a broker pod's), so a plan can name exactly that object."""
    identity_problem: str | None = None
    """Why this object's identity (a broker pod's broker id) is unknown: it is evaluated, but every
    action planned on it is held with this reason (agent.core.engine)."""

    key: str = field(init=False, repr=False, compare=False)
    """`namespace/name`, or the name of an object without namespace: made once, read many times a cycle."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.namespace}/{self.name}" if self.namespace else self.name)

    @property
    def ignored(self) -> str | None:
        """Why no rule acts on this object (its ignore annotation), or None."""
        if self.annotations.get(IGNORE_ANNOTATION) == "true":
            return f'annotated {IGNORE_ANNOTATION}: "true": no rule acts on it'
        return None


def pvc_object(
    *,
    namespace: str,
    name: str,
    labels: Mapping[str, str],
    capacity_bytes: int | None,
    annotations: Mapping[str, str] | None = None,
    grown_through: str | None = None,
) -> TargetObject:
    identity = {"namespace": namespace, "persistentvolumeclaim": name, "pvc": name}
    return TargetObject(
        kind=TargetKind.PVC,
        name=name,
        namespace=namespace,
        labels=labels,
        identity=identity,
        capacity_bytes=capacity_bytes,
        annotations=annotations or {},
        grown_through=grown_through,
    )


def broker_object(
    *,
    namespace: str,
    pod: str,
    broker_id: int | None,
    labels: Mapping[str, str],
    identity_problem: str | None = None,
    uid: str | None = None,
) -> TargetObject:
    """A broker pod; `broker_id` None (with the `identity_problem`) when it is not known which broker it runs."""
    if (broker_id is None) == (identity_problem is None):
        raise ValueError("a broker object has either a broker id or the reason it has none")
    identity = {"namespace": namespace, "pod": pod}
    if broker_id is not None:
        identity["broker"] = str(broker_id)
    return TargetObject(
        kind=TargetKind.BROKER,
        name=pod,
        namespace=namespace,
        labels=labels,
        identity=identity,
        identity_problem=identity_problem,
        uid=uid,
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
    """The objects of the rule's target kind that its selector and namespaceSelector match, in their order."""
    return InventoryIndex(objects)._matching(rule)


@dataclass(frozen=True, kw_only=True)
class Selection:
    """What a rule selects of the inventory, once ignored objects and those a namespace filter keeps out
    are set aside, with its identity index: shared by every rule with the same target and selectors."""

    objects: Sequence[TargetObject]
    keys: AbstractSet[str]
    ordered_keys: tuple[str, ...]
    """The keys of `objects`, in their order."""
    ignored: Mapping[str, str]
    excluded: Mapping[str, str]
    index: IdentityIndex
    """The identity index of every object of the kind: joins through it keep to `objects`."""


class InventoryIndex:
    """The objects of one inventory snapshot, indexed once for every rule evaluated over it.

    Rules with the same target kind and selectors share one selection, rules of one kind (and identity
    labels) one identity index, and rules of one selection each expression's join (`join`): the cost of
    a cycle grows with the distinct selections and queries, not with the rules. Build one per snapshot
    (the objects must not change while it is used); `run_cycle` builds a private one when given a plain
    sequence.

    Given the `previous` snapshot's index, a kind whose objects are the very same (the same instances,
    in the same order: a steady cluster read from watch-fed caches) keeps its selections and identity
    indexes, and a kind whose objects kept their keys and identities (only labels or status moved) its
    identity indexes; the joins are always made again, for the new vectors.
    """

    def __init__(self, objects: Sequence[TargetObject], *, previous: InventoryIndex | None = None) -> None:
        self.objects = objects
        self._by_kind: dict[TargetKind, list[TargetObject]] = {}
        for candidate in objects:
            self._by_kind.setdefault(candidate.kind, []).append(candidate)
        self._selections: dict[tuple[object, ...], Selection] = {}
        self._indexes: dict[tuple[TargetKind, IdentityLabels], IdentityIndex] = {}
        self._groups: dict[TargetKind, list[list[int]]] = {}
        """Per kind, the positions of its objects grouped by (labels, namespace labels)."""
        self._by_key: dict[str, TargetObject] | None = None
        if previous is not None:
            self._keep_unchanged(previous)
        self._joins: dict[tuple[int, str], tuple[Sequence[Sample], JoinResult]] = {}
        self._answers: dict[tuple[int, str, Operator, tuple[str, ...]], tuple[JoinResult, Answers]] = {}

    def _keep_unchanged(self, previous: InventoryIndex) -> None:
        same: set[TargetKind] = set()
        same_identities: set[TargetKind] = set()
        for kind, objects in self._by_kind.items():
            found = previous._by_kind.get(kind, ())
            if len(found) != len(objects):
                continue
            if all(map(operator.is_, found, objects)):
                same.add(kind)
            elif all(
                old.key == new.key and old.identity == new.identity for old, new in zip(found, objects, strict=True)
            ):
                same_identities.add(kind)  # e.g. a claim's status moved: selections change, identities do not
        self._selections = {key: found for key, found in previous._selections.items() if key[0] in same}
        self._groups = {kind: groups for kind, groups in previous._groups.items() if kind in same}
        if same == self._by_kind.keys() == previous._by_kind.keys():
            self._by_key = previous._by_key
        for (kind, labels), index in previous._indexes.items():
            if kind in same or kind in same_identities:
                index.renew(self._by_kind[kind])
                self._indexes[(kind, labels)] = index

    def release_vectors(self) -> None:
        """Forget the vectors joined through this index (its joins, answers and resolutions), keeping what
        the next snapshot may reuse: call it once a cycle is done with it, so that an index kept as the
        next one's `previous` does not hold a cycle's vectors while the next cycle decodes its own."""
        self._joins.clear()
        self._answers.clear()
        for index in self._indexes.values():
            index.release_vectors()

    @property
    def by_key(self) -> Mapping[str, TargetObject]:
        """Every object by its key (made once per snapshot, and kept while the snapshot is the same)."""
        if self._by_key is None:
            self._by_key = {target.key: target for target in self.objects}
        return self._by_key

    def selection(
        self, rule: Rule, *, kept_out: Callable[[str | None], str | None] | None = None, filter_key: object = None
    ) -> Selection:
        """The rule's selection; `kept_out(namespace)` says why a namespace is filtered out (a policy's
        namespaces), and `filter_key` names that filter (the same key must mean the same filter)."""
        labels = identity_labels_for(rule)
        key = (
            rule.target,
            rule.selector.query(),
            None if rule.namespace_selector is None else rule.namespace_selector.query(),
            labels,
            filter_key if kept_out is not None else None,
        )
        found = self._selections.get(key)
        if found is not None:
            return found
        ignored: dict[str, str] = {}
        excluded: dict[str, str] = {}
        kept: list[TargetObject] = []
        for target in self._matching(rule):
            if (why := target.ignored) is not None:
                ignored[target.key] = why
            elif kept_out is not None and (why := kept_out(target.namespace)) is not None:
                excluded[target.key] = why
            else:
                kept.append(target)
        index_key = (rule.target, labels)
        index = self._indexes.get(index_key)
        if index is None:
            index = IdentityIndex(
                objects=self._by_kind.get(rule.target, []),
                identity_labels=labels,
                cluster_wide_applies=rule.target is TargetKind.BROKER,
            )
            self._indexes[index_key] = index
        ordered_keys = tuple([target.key for target in kept])
        found = Selection(
            objects=kept,
            keys=frozenset(ordered_keys),
            ordered_keys=ordered_keys,
            ignored=ignored,
            excluded=excluded,
            index=index,
        )
        self._selections[key] = found
        return found

    def _matching(self, rule: Rule) -> list[TargetObject]:
        """The objects of the rule's kind its selector and namespaceSelector match, in their order: each
        selector tested once per distinct set of labels (and of namespace labels) rather than once per
        object, as most objects of a kind share a few sets."""
        kind = rule.target
        groups = self._groups.get(kind)
        if groups is None:
            grouped: dict[tuple[frozenset[tuple[str, str]], frozenset[tuple[str, str]]], list[int]] = {}
            for position, target in enumerate(self._by_kind.get(kind, ())):
                labels = (frozenset(target.labels.items()), frozenset(target.namespace_labels.items()))
                grouped.setdefault(labels, []).append(position)
            groups = self._groups[kind] = list(grouped.values())
        objects = self._by_kind.get(kind, [])
        namespaces = rule.namespace_selector
        chosen = [
            positions
            for positions in groups
            if rule.selector.matches((first := objects[positions[0]]).labels)
            and (namespaces is None or namespaces.matches(first.namespace_labels))
        ]
        if len(chosen) == 1:
            return [objects[position] for position in chosen[0]]
        return [objects[position] for position in sorted(itertools.chain.from_iterable(chosen))]

    def join(self, selection: Selection, query: str, vector: Sequence[Sample]) -> JoinResult:
        """The vector joined to the selection's objects, once per selection and query while the vector is the same."""
        key = (id(selection), query)
        found = self._joins.get(key)
        if found is not None and found[0] is vector:
            return found[1]
        joined = selection.index.join(vector, among=selection.objects, members=selection.keys)
        self._joins[key] = (vector, joined)
        return joined

    def answers(
        self, selection: Selection, query: str, joined: JoinResult, operator: Operator, values: tuple[str, ...]
    ) -> Answers:
        """Which of the selection's objects the condition holds for, and which it has no data for, over the
        query's join: once per selection and condition, whatever the number of rules testing it."""
        key = (id(selection), query, operator, values)
        found = self._answers.get(key)
        if found is not None and found[0] is joined:
            return found[1]
        answers = partition(operator, values, joined.values, selection.keys)
        self._answers[key] = (joined, answers)
        return answers


@dataclass(frozen=True, kw_only=True)
class JoinResult:
    values: Mapping[str, float]
    """Object key -> sample value, for objects exactly one series names, and only it."""
    unmatched_series: int = 0
    ambiguous_objects: frozenset[str] = frozenset()
    """Objects named by two series, or sharing a series with another object."""
    no_data: Mapping[str, str] = field(default_factory=dict)
    """Object key -> why the join gave it no value, when the vector had something to say about it."""


Resolution = tuple[Sample, tuple[str, ...], Sequence[str]]
"""A sample, the identity labels it names its object by, and the keys of every indexed object it names."""

IdentityKey = str | tuple[str, ...]
"""What an alternative's identity labels say: the one value when the alternative is one label, else all of them."""


class IdentityAlternative(NamedTuple):
    """One alternative of identity labels, with its objects by what those labels say of them."""

    labels: tuple[str, ...]
    required: frozenset[str]
    series_key: Callable[[Mapping[str, str]], IdentityKey]
    """A series' `IdentityKey`, from labels that carry every one of `labels`."""
    objects: dict[IdentityKey, tuple[str, ...]]
    """`IdentityKey` -> the keys of the objects whose identity says it (tuples of strings, which the garbage
    collector stops tracking: an index of 10,000 objects, kept from cycle to cycle, adds nothing to its
    passes)."""


@dataclass(frozen=True, kw_only=True)
class ResolvedVector:
    """One vector's samples sorted by what they name, once per index whatever the selections joined to it.

    A sample that alone names one object gives it its value in every selection holding it, and is
    unmatched in the others; only the contested samples need the join's rules replayed per selection.
    """

    vector: Sequence[Sample]
    """Kept so that its id stays its own while the resolution is cached by it."""
    without_identity: list[Sample]
    """The samples with none of the identity labels."""
    sole_values: dict[str, float]
    """Object key -> value, for each sample naming exactly one object that no other sample names."""
    naming_nothing: int
    """Samples that name no indexed object."""
    contested: list[Resolution]
    """In vector order, the samples naming several objects or an object another sample names too."""


class IdentityIndex:
    """Object lookup by identity label values, built once per snapshot of a kind's objects (and kept while
    they keep their keys and identities: `InventoryIndex`'s `previous`), reused per expression.

    `cluster_wide_applies`: a lone series with no identity label applies to every object (KafkaBroker
    rules); otherwise such a series is no data for every object.
    """

    def __init__(
        self,
        *,
        objects: Sequence[TargetObject],
        identity_labels: IdentityLabels,
        cluster_wide_applies: bool = False,
    ) -> None:
        self.objects = objects
        self.alternatives = identity_labels
        self.cluster_wide_applies = cluster_wide_applies
        self.every_identity_label = frozenset(label for labels in identity_labels for label in labels)
        self.by_alternative: list[IdentityAlternative] = []
        self._resolutions: dict[int, ResolvedVector] = {}
        for labels in identity_labels:
            required = frozenset(labels)
            identity_key = _identity_key_reader(labels, of_series=False)
            index: dict[IdentityKey, tuple[str, ...]] = {}
            for candidate in objects:
                if candidate.identity.keys() >= required:
                    said = identity_key(candidate.identity)
                    index[said] = (*index.get(said, ()), candidate.key)
            self.by_alternative.append(
                IdentityAlternative(
                    labels=labels,
                    required=required,
                    series_key=_identity_key_reader(labels, of_series=True),
                    objects=index,
                )
            )

    def join(
        self,
        vector: Sequence[Sample],
        *,
        among: Sequence[TargetObject] | None = None,
        members: AbstractSet[str] | None = None,
    ) -> JoinResult:
        """The vector joined to the indexed objects, or only to `among` (whose keys are `members`), as if
        the index held only those: an index of every object of a kind serves every selection of it."""
        objects = self.objects if among is None else among
        resolved = self._resolved(vector)
        without_identity = resolved.without_identity
        if without_identity and not self.cluster_wide_applies:
            reason = (
                f"series {_shown(without_identity[0].labels)} carries none of the identity labels"
                f" ({_alternatives(self.alternatives)}): a value without identity is not applied to every object"
            )
            return JoinResult(
                values={},
                unmatched_series=len(vector),
                no_data={candidate.key: reason for candidate in objects},
            )
        if len(vector) == 1 and without_identity:
            value = vector[0].value
            return JoinResult(values={candidate.key: value for candidate in objects})
        sole = resolved.sole_values
        if members is None or len(members) == len(self.objects):  # every indexed object is a member
            values = dict(sole)
            unmatched = resolved.naming_nothing
        else:
            values = {key: sole[key] for key in sole.keys() & members}
            unmatched = resolved.naming_nothing + len(sole) - len(values)
        ambiguous: set[str] = set()
        no_data: dict[str, str] = {}
        for sample, names, every in resolved.contested:
            keys = [key for key in every if key in members] if members is not None else every
            if not keys:
                unmatched += 1
            elif len(keys) > 1:
                named = ",".join(f"{name}={_identity_value(name, sample.labels[name])}" for name in names)
                reason = f"series {named} names {len(keys)} objects: {', '.join(sorted(keys))}"
                for key in keys:
                    ambiguous.add(key)
                    values.pop(key, None)
                    no_data.setdefault(key, reason)
            elif keys[0] in values or keys[0] in ambiguous:
                ambiguous.add(keys[0])
                values.pop(keys[0], None)
                no_data.setdefault(keys[0], "two series name this object")
            else:
                values[keys[0]] = sample.value
        return JoinResult(
            values=values, unmatched_series=unmatched, ambiguous_objects=frozenset(ambiguous), no_data=no_data
        )

    def renew(self, objects: Sequence[TargetObject]) -> None:
        """Serve a new snapshot of the same objects (the same keys and identities, in the same order):
        what was resolved of earlier vectors is dropped."""
        self.objects = objects
        self.release_vectors()

    def release_vectors(self) -> None:
        """Forget what was resolved of the vectors joined so far (and so the vectors themselves)."""
        self._resolutions.clear()

    def _resolved(self, vector: Sequence[Sample]) -> ResolvedVector:
        """What each sample of the vector names, sorted (`ResolvedVector`): once per vector."""
        found = self._resolutions.get(id(vector))
        if found is not None and found.vector is vector:
            return found
        without_identity: list[Sample] = []
        uniform = self._named_uniformly(vector)
        if uniform is not None:
            names_by_sample: Sequence[tuple[str, ...]] = [uniform[0]] * len(vector)
            everys = uniform[1]
        else:
            lookups = [self._lookup(sample.labels) for sample in vector]
            names_by_sample = [names for names, _ in lookups]
            everys = [every for _, every in lookups]
            for sample, names in zip(vector, names_by_sample, strict=True):
                if not names and self.every_identity_label.isdisjoint(sample.labels):
                    without_identity.append(sample)
        sole_values: dict[str, float] = {}
        contested_keys: set[str] = set()
        naming_nothing = 0
        for sample, every in zip(vector, everys, strict=True):
            if len(every) == 1:
                if every[0] in sole_values:
                    contested_keys.add(every[0])
                else:
                    sole_values[every[0]] = sample.value
            elif not every:
                naming_nothing += 1
            else:
                contested_keys.update(every)
        contested: list[Resolution] = []
        if contested_keys:
            for sample, names, every in zip(vector, names_by_sample, everys, strict=True):
                if len(every) > 1 or (every and every[0] in contested_keys):
                    contested.append((sample, names, every))
            for key in contested_keys:
                sole_values.pop(key, None)
        found = ResolvedVector(
            vector=vector,
            without_identity=without_identity,
            sole_values=sole_values,
            naming_nothing=naming_nothing,
            contested=contested,
        )
        self._resolutions[id(vector)] = found
        return found

    def _named_uniformly(self, vector: Sequence[Sample]) -> tuple[tuple[str, ...], list[Sequence[str]]] | None:
        """When every sample names its object by the same alternative (the usual vector: one metric, one
        exporter), that alternative's labels and each sample's object keys, looked up in bulk; None when the
        samples differ (then `_lookup` takes them one by one)."""
        labels = [sample.labels for sample in vector]
        for alternative in self.by_alternative:
            try:
                keys = list(map(alternative.series_key, labels))
            except KeyError:  # some sample lacks a label of this alternative: does any carry them all?
                if any(carried.keys() >= alternative.required for carried in labels):
                    return None
                continue
            return alternative.labels, list(map(alternative.objects.get, keys, itertools.repeat(())))
        return None

    def _lookup(self, labels: Mapping[str, str]) -> tuple[tuple[str, ...], Sequence[str]]:
        """The identity labels the series names its object by (`pod`), and the keys of the objects it names."""
        carried = labels.keys()
        for names, required, series_key, index in self.by_alternative:
            if carried >= required:
                return names, index.get(series_key(labels), ())
        return (), ()


def _identity_key_reader(names: tuple[str, ...], *, of_series: bool) -> Callable[[Mapping[str, str]], IdentityKey]:
    """How labels that carry every one of `names` give their `IdentityKey`; a series' `instance` drops its :port."""
    if of_series and "instance" in names:
        if len(names) == 1:
            return lambda labels: _identity_value("instance", labels["instance"])
        return lambda labels: tuple([_identity_value(name, labels[name]) for name in names])
    if not names:
        return lambda labels: ()
    return operator.itemgetter(*names)


def _shown(labels: Mapping[str, str]) -> str:
    return "{" + ",".join(f'{name}="{value}"' for name, value in sorted(labels.items())) + "}"


def _alternatives(alternatives: IdentityLabels) -> str:
    return " | ".join("+".join(labels) for labels in alternatives)


def _identity_value(label: str, value: str) -> str:
    if label == "instance" and value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def identity_labels_for(rule: Rule) -> IdentityLabels:
    return rule.identity_labels or DEFAULT_IDENTITY_LABELS[rule.target]
