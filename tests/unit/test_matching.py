"""Joining one instant vector per expression to the selected objects, by identity labels.

The expected joins follow the identity-label table in agent.core.matching's docstring:
PVC namespace + persistentvolumeclaim | pvc; broker pod | broker; node node | instance; pool node + pool.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import replace

import pytest

from agent.actions.registry import CATALOG
from agent.audit.trail import cycle_records
from agent.core.engine import CycleOutcome, run_cycle
from agent.core.loader import parse_rules
from agent.core.matching import (
    DEFAULT_IDENTITY_LABELS,
    IdentityIndex,
    InventoryIndex,
    JoinResult,
    TargetObject,
    broker_object,
    identity_labels_for,
    node_object,
    pool_object,
    pvc_object,
    select_objects,
)
from agent.core.operators import Operator
from agent.core.pools import PoolShape
from agent.core.rules import IdentityLabels, LabelSelector, Rule, TargetKind
from agent.core.samples import Sample
from agent.core.states import Verdict
from agent.runtime.cycle import rule_health

GIB = 1024**3
KAFKA = {"app": "kafka"}

PVCS = [
    pvc_object(namespace="kafka", name="data-kafka-0", labels=KAFKA, capacity_bytes=400 * GIB),
    pvc_object(namespace="kafka", name="data-kafka-1", labels=KAFKA, capacity_bytes=400 * GIB),
    pvc_object(namespace="staging", name="data-kafka-0", labels=KAFKA, capacity_bytes=400 * GIB),
]
BROKERS = [
    broker_object(namespace="kafka", pod="kafka-0", broker_id=0, labels=KAFKA),
    broker_object(namespace="kafka", pod="kafka-1", broker_id=1, labels=KAFKA),
    broker_object(namespace="kafka", pod="kafka-2", broker_id=2, labels=KAFKA),
]
NODES = [node_object(name="worker-1", labels={}), node_object(name="worker-2", labels={})]
POOLS = [
    pool_object(
        node="worker-1", pool="0", labels={}, shape=PoolShape(total_bytes=GIB, drive_count=1, drive_size_bytes=GIB)
    ),
    pool_object(node="worker-1", pool="1", labels={}, shape=None),
    pool_object(node="worker-2", pool="0", labels={}, shape=None),
]
OBJECTS = {TargetKind.PVC: PVCS, TargetKind.BROKER: BROKERS, TargetKind.NODE: NODES, TargetKind.STORAGE_POOL: POOLS}


def join(
    kind: TargetKind,
    vector: Sequence[Sample],
    *,
    identity: IdentityLabels | None = None,
    objects: Sequence[TargetObject] | None = None,
) -> JoinResult:
    index = IdentityIndex(
        objects=OBJECTS[kind] if objects is None else objects,
        identity_labels=DEFAULT_IDENTITY_LABELS[kind] if identity is None else identity,
        cluster_wide_applies=kind is TargetKind.BROKER,
    )
    return index.join(vector)


def sample(value: float, **labels: str) -> Sample:
    return Sample(labels=labels, value=value)


# --- object keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "kind", "key", "identity"),
    [
        (
            PVCS[0],
            TargetKind.PVC,
            "kafka/data-kafka-0",
            {"namespace": "kafka", "persistentvolumeclaim": "data-kafka-0", "pvc": "data-kafka-0"},
        ),
        (BROKERS[1], TargetKind.BROKER, "kafka/kafka-1", {"namespace": "kafka", "pod": "kafka-1", "broker": "1"}),
        (NODES[0], TargetKind.NODE, "worker-1", {"node": "worker-1", "instance": "worker-1"}),
        (POOLS[1], TargetKind.STORAGE_POOL, "worker-1/1", {"node": "worker-1", "pool": "1"}),
    ],
)
def test_object_constructors(target: TargetObject, kind: TargetKind, key: str, identity: Mapping[str, str]) -> None:
    assert target.kind is kind
    assert target.key == key
    assert dict(target.identity) == identity


# --- identity joins per target kind -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "vector", "values", "unmatched"),
    [
        pytest.param(
            TargetKind.PVC,
            [sample(85, namespace="kafka", persistentvolumeclaim="data-kafka-0")],
            {"kafka/data-kafka-0": 85},
            0,
            id="pvc by persistentvolumeclaim (kubelet)",
        ),
        pytest.param(
            TargetKind.PVC,
            [sample(70, namespace="kafka", pvc="data-kafka-1", volume="pvc-123")],
            {"kafka/data-kafka-1": 70},
            0,
            id="pvc by pvc label (storage layer)",
        ),
        pytest.param(
            TargetKind.PVC,
            [sample(10, namespace="kafka", pvc="data-kafka-0"), sample(20, namespace="staging", pvc="data-kafka-0")],
            {"kafka/data-kafka-0": 10, "staging/data-kafka-0": 20},
            0,
            id="same claim name in two namespaces",
        ),
        pytest.param(
            TargetKind.PVC,
            [sample(85, namespace="prod", pvc="data-kafka-0")],
            {},
            1,
            id="namespace mismatch does not match",
        ),
        pytest.param(
            TargetKind.PVC,
            [sample(85, pvc="data-kafka-0")],
            {},
            1,
            id="pvc without namespace does not match",
        ),
        pytest.param(
            TargetKind.BROKER,
            [sample(3, namespace="kafka", pod="kafka-1")],
            {"kafka/kafka-1": 3},
            0,
            id="broker by namespace and pod",
        ),
        pytest.param(
            TargetKind.BROKER,
            [sample(4, pod="kafka-2", job="jmx")],
            {"kafka/kafka-2": 4},
            0,
            id="broker by pod",
        ),
        pytest.param(
            TargetKind.BROKER,
            [sample(5, broker="0")],
            {"kafka/kafka-0": 5},
            0,
            id="broker by broker id",
        ),
        pytest.param(
            TargetKind.BROKER,
            [sample(5, namespace="other", pod="kafka-0")],
            {},
            1,
            id="broker pod in another namespace does not match",
        ),
        pytest.param(
            TargetKind.BROKER,
            [sample(5, broker="7")],
            {},
            1,
            id="unknown broker id",
        ),
        pytest.param(
            TargetKind.NODE,
            [sample(0, node="worker-2")],
            {"worker-2": 0},
            0,
            id="node by node",
        ),
        pytest.param(
            TargetKind.NODE,
            [sample(1, instance="worker-1:9100")],
            {"worker-1": 1},
            0,
            id="node by instance with :port",
        ),
        pytest.param(
            TargetKind.NODE,
            [sample(1, instance="worker-2")],
            {"worker-2": 1},
            0,
            id="node by instance without port",
        ),
        pytest.param(
            TargetKind.STORAGE_POOL,
            [sample(71, node="worker-1", pool="1"), sample(20, node="worker-2", pool="0")],
            {"worker-1/1": 71, "worker-2/0": 20},
            0,
            id="pool by node and pool",
        ),
        pytest.param(
            TargetKind.STORAGE_POOL,
            [sample(71, node="worker-3", pool="0")],
            {},
            1,
            id="pool on another node",
        ),
        pytest.param(
            TargetKind.STORAGE_POOL,
            [sample(71, node="worker-1"), sample(72, pool="0")],
            {},
            2,
            id="pool needs both labels",
        ),
    ],
)
def test_identity_join(kind: TargetKind, vector: list[Sample], values: dict[str, float], unmatched: int) -> None:
    result = join(kind, vector)
    assert dict(result.values) == values
    assert result.unmatched_series == unmatched
    assert result.ambiguous_objects == frozenset()


def test_a_single_cluster_wide_series_applies_to_every_broker() -> None:
    result = join(TargetKind.BROKER, [sample(2, job="kafka-controller")])
    assert dict(result.values) == {target.key: 2 for target in BROKERS}
    assert result.unmatched_series == 0
    assert result.no_data == {}


CLUSTER_WIDE_IS_NO_DATA = [kind for kind in TargetKind if kind is not TargetKind.BROKER]


@pytest.mark.parametrize("kind", CLUSTER_WIDE_IS_NO_DATA)
@pytest.mark.parametrize(
    ("vector", "shown"),
    [
        pytest.param([sample(2, job="kafka-controller")], '{job="kafka-controller"}', id="alone"),
        pytest.param(
            [sample(85, namespace="kafka", pvc="data-kafka-0", node="worker-1", pool="0"), sample(90, device="sda")],
            '{device="sda"}',
            id="among named series",
        ),
    ],
)
def test_a_series_without_identity_is_no_data_for_every_pvc_node_and_pool(
    kind: TargetKind, vector: list[Sample], shown: str
) -> None:
    result = join(kind, vector)
    assert dict(result.values) == {}
    assert set(result.no_data) == {target.key for target in OBJECTS[kind]}
    assert all(
        reason.startswith(f"series {shown} carries none of the identity labels") for reason in result.no_data.values()
    ), result.no_data


def test_one_stray_series_no_longer_resizes_every_pvc() -> None:
    """The old join applied a lone series without identity (here `sum(...)` of the wrong expression,
    90% used) to every selected PVC: every volume of the cluster was resized. Now none has data."""
    loaded = rule("", action=RESIZE + '\n      params:\n        scalepercentage: "50"\n        maxsize: "2Ti"')

    def cycle(vector: list[Sample]) -> CycleOutcome:
        vectors = {expression.query: vector for expression in loaded.conditions.expressions}
        return run_cycle(rule=loaded, objects=PVCS, vectors=vectors, states={}, now=1000.0, catalog=CATALOG)

    named = cycle([sample(90, namespace="kafka", persistentvolumeclaim="data-kafka-1")])
    assert [plan.object for plan in named.planned] == ["kafka/data-kafka-1"]  # the rule does resize

    stray = cycle([sample(90)])
    assert stray.planned == ()
    assert {evaluation.verdict for evaluation in stray.evaluations} == {Verdict.NO_DATA}
    assert all("carries none of the identity labels" in stray.notes[target.key] for target in PVCS), stray.notes
    # The reason is where a no-data evaluation is read: its audit record and the rule's health.
    records = [record for record in cycle_records(stray, dry_run=False) if record["event"] == "evaluation"]
    assert len(records) == len(PVCS)
    assert all("series {} carries none of the identity labels" in str(record["reason"]) for record in records)
    assert "no data for 3 of 3 objects" in rule_health(stray)
    assert "carries none of the identity labels" in rule_health(stray)


@pytest.mark.parametrize(
    ("kind", "objects", "vector", "no_data"),
    [
        pytest.param(
            TargetKind.BROKER,
            [
                broker_object(namespace="a", pod="kafka-0", broker_id=0, labels={}),
                broker_object(namespace="b", pod="kafka-0", broker_id=10, labels={}),
                broker_object(namespace="b", pod="kafka-1", broker_id=11, labels={}),
            ],
            [sample(1, pod="kafka-0"), sample(2, pod="kafka-1")],
            {
                "a/kafka-0": "series pod=kafka-0 names 2 objects: a/kafka-0, b/kafka-0",
                "b/kafka-0": "series pod=kafka-0 names 2 objects: a/kafka-0, b/kafka-0",
            },
            id="pod alone across two namespaces",
        ),
        pytest.param(
            TargetKind.BROKER,
            [
                broker_object(namespace="east", pod="kafka-0", broker_id=0, labels={}),
                broker_object(namespace="west", pod="kafka-0", broker_id=0, labels={}),
            ],
            [sample(1, broker="0")],
            {
                "east/kafka-0": "series broker=0 names 2 objects: east/kafka-0, west/kafka-0",
                "west/kafka-0": "series broker=0 names 2 objects: east/kafka-0, west/kafka-0",
            },
            id="broker id alone across two clusters",
        ),
        pytest.param(
            TargetKind.PVC,
            PVCS,
            [sample(1, pvc="data-kafka-0"), sample(2, namespace="kafka", pvc="data-kafka-1")],
            dict.fromkeys(
                ["kafka/data-kafka-0", "staging/data-kafka-0"],
                "series pvc=data-kafka-0 names 2 objects: kafka/data-kafka-0, staging/data-kafka-0",
            ),
            id="pvc alone across two namespaces (identityLabels [pvc])",
        ),
    ],
)
def test_a_series_naming_several_objects_gives_each_no_data_never_the_last(
    kind: TargetKind, objects: list[TargetObject], vector: list[Sample], no_data: dict[str, str]
) -> None:
    identity: IdentityLabels | None = (("pvc",), ("namespace", "pvc")) if kind is TargetKind.PVC else None
    result = join(kind, vector, identity=identity, objects=objects)
    assert dict(result.no_data) == no_data
    assert not set(no_data) & set(result.values)
    assert result.ambiguous_objects == frozenset(no_data)
    assert len(result.values) == len(objects) - len(no_data)


def test_a_broker_of_unknown_identity_is_still_named_by_its_pod() -> None:
    unknown = broker_object(namespace="kafka", pod="kafka-3", broker_id=None, labels={}, identity_problem="why")
    result = join(
        TargetKind.BROKER, [sample(1, namespace="kafka", pod="kafka-3"), sample(2, broker="3")], objects=[unknown]
    )
    assert dict(result.values) == {"kafka/kafka-3": 1}
    assert result.unmatched_series == 1


def test_cluster_wide_series_among_others_is_unmatched() -> None:
    result = join(TargetKind.BROKER, [sample(2), sample(3, pod="kafka-0")])
    assert dict(result.values) == {"kafka/kafka-0": 3}
    assert result.unmatched_series == 1


def test_two_cluster_wide_series_name_no_object() -> None:
    result = join(TargetKind.BROKER, [sample(2, controller="a"), sample(0, controller="b")])
    assert dict(result.values) == {}
    assert result.unmatched_series == 2


def test_empty_vector_gives_no_values() -> None:
    assert join(TargetKind.PVC, []) == JoinResult(values={})


def test_unmatched_series_are_counted() -> None:
    vector = [
        sample(85, namespace="kafka", pvc="data-kafka-0"),
        sample(85, namespace="kafka", pvc="data-zookeeper-0"),
        sample(85, namespace="monitoring", pvc="prometheus-db"),
    ]
    result = join(TargetKind.PVC, vector)
    assert dict(result.values) == {"kafka/data-kafka-0": 85}
    assert result.unmatched_series == 2


@pytest.mark.parametrize(
    "vector",
    [
        pytest.param(
            [sample(85, namespace="kafka", pvc="data-kafka-0"), sample(20, namespace="kafka", pvc="data-kafka-0")],
            id="two series, same labels",
        ),
        pytest.param(
            [
                sample(85, namespace="kafka", persistentvolumeclaim="data-kafka-0"),
                sample(85, namespace="kafka", pvc="data-kafka-0"),
            ],
            id="kubelet and storage layer both",
        ),
        pytest.param(
            [sample(1, namespace="kafka", pvc="data-kafka-0", instance=f"n{n}") for n in range(3)],
            id="three series",
        ),
    ],
)
def test_duplicate_series_make_the_object_ambiguous(vector: list[Sample]) -> None:
    vector = [*vector, sample(50, namespace="kafka", pvc="data-kafka-1")]
    result = join(TargetKind.PVC, vector)
    assert "kafka/data-kafka-0" not in result.values
    assert result.ambiguous_objects == frozenset({"kafka/data-kafka-0"})
    assert dict(result.values) == {"kafka/data-kafka-1": 50}


def test_duplicate_broker_by_pod_and_by_id() -> None:
    result = join(TargetKind.BROKER, [sample(1, pod="kafka-1"), sample(2, broker="1")])
    assert result.ambiguous_objects == frozenset({"kafka/kafka-1"})
    assert dict(result.values) == {}


# --- per-rule identity labels ------------------------------------------------------------------

RULE_TEMPLATE = """\
apiVersion: kafka-autopilot.io/v1alpha1
kind: AutopilotRule
metadata:
  name: {name}
spec:
{spec}  conditions:
    expressions:
      - key: "some_metric"
        operator: Gt
        values: ["0"]
  actions:
    - name: {action}
"""
RESIZE = "openstorage.io.action.volume/resize"
RESTART = "kafka-autopilot.io.action.broker/restart"
RESCHEDULE = "kafka-autopilot.io.action.node/cordon-reschedule"


def rule(spec: str = "", *, action: str = RESIZE, name: str = "r") -> Rule:
    result = parse_rules(RULE_TEMPLATE.format(name=name, spec=spec, action=action), file="rule.yaml", catalog=CATALOG)
    assert result.problems == ()
    (loaded,) = result.rules
    return loaded


def test_default_identity_labels_follow_the_target_kind() -> None:
    assert identity_labels_for(rule()) == (("namespace", "persistentvolumeclaim"), ("namespace", "pvc"))
    assert identity_labels_for(rule(action=RESTART)) == (("namespace", "pod"), ("pod",), ("broker",))


@pytest.mark.parametrize(
    ("spec", "vector", "values", "unmatched"),
    [
        pytest.param(
            "  identityLabels:\n    - [pvc]\n",
            [sample(85, pvc="data-kafka-1", cluster="eu")],
            {"kafka/data-kafka-1": 85},
            0,
            id="pvc label alone",
        ),
        pytest.param(
            "  identityLabels:\n    - [pvc]\n",
            [
                sample(85, namespace="kafka", persistentvolumeclaim="data-kafka-1"),
                sample(85, namespace="kafka", persistentvolumeclaim="data-kafka-2"),
            ],
            {},
            2,
            id="the defaults no longer apply",
        ),
        pytest.param(
            "  identityLabels:\n    - [namespace, persistentvolumeclaim]\n",
            [sample(85, namespace="kafka", pvc="data-kafka-1")],
            {},
            1,
            id="only the kubelet label",
        ),
    ],
)
def test_identity_labels_override(spec: str, vector: list[Sample], values: dict[str, float], unmatched: int) -> None:
    loaded = rule(spec)
    objects = [PVCS[1]]
    result = join(TargetKind.PVC, vector, identity=identity_labels_for(loaded), objects=objects)
    assert dict(result.values) == values
    assert result.unmatched_series == unmatched


def test_a_lone_series_without_the_override_labels_is_no_data_for_every_pvc() -> None:
    loaded = rule("  identityLabels:\n    - [pvc]\n")
    vector = [sample(85, namespace="kafka", persistentvolumeclaim="data-kafka-1")]
    result = join(TargetKind.PVC, vector, identity=identity_labels_for(loaded), objects=PVCS)
    assert dict(result.values) == {}
    assert set(result.no_data) == {target.key for target in PVCS}


def test_identity_override_with_a_label_the_default_table_lacks() -> None:
    loaded = rule("  identityLabels:\n    - [kafka_broker_id]\n", action=RESTART)
    objects = [replace(BROKERS[0], identity={**BROKERS[0].identity, "kafka_broker_id": "100"})]
    result = join(
        TargetKind.BROKER,
        [sample(1, kafka_broker_id="100"), sample(2, pod="kafka-0")],
        identity=identity_labels_for(loaded),
        objects=objects,
    )
    # A series without the override's labels is cluster-wide only when it is alone; here it is unmatched.
    assert dict(result.values) == {"kafka/kafka-0": 1}
    assert result.unmatched_series == 1


# --- selectors -------------------------------------------------------------------------------


def labelled(name: str, labels: Mapping[str, str], namespace_labels: Mapping[str, str] | None = None) -> TargetObject:
    target = pvc_object(namespace="kafka", name=name, labels=labels, capacity_bytes=GIB)
    return replace(target, namespace_labels=namespace_labels or {})


SELECTABLE = [
    labelled("a", {"app": "kafka", "tier": "hot"}, {"team": "data"}),
    labelled("b", {"app": "kafka", "tier": "cold"}, {"team": "web"}),
    labelled("c", {"app": "zookeeper"}, {"team": "data"}),
    labelled("d", {}),
    broker_object(namespace="kafka", pod="kafka-0", broker_id=0, labels={"app": "kafka"}),
]


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        pytest.param("", ["a", "b", "c", "d"], id="no selector: every object of the kind"),
        pytest.param("  selector:\n    matchLabels:\n      app: kafka\n", ["a", "b"], id="matchLabels"),
        pytest.param(
            "  selector:\n    matchLabels:\n      app: kafka\n      tier: hot\n", ["a"], id="matchLabels, all pairs"
        ),
        pytest.param(
            "  selector:\n    matchExpressions:\n      - {key: app, operator: In, values: [kafka, zookeeper]}\n",
            ["a", "b", "c"],
            id="In",
        ),
        pytest.param(
            "  selector:\n    matchExpressions:\n      - {key: tier, operator: NotIn, values: [cold]}\n",
            ["a", "c", "d"],
            id="NotIn matches objects without the label",
        ),
        pytest.param(
            "  selector:\n    matchExpressions:\n      - {key: tier, operator: Exists}\n", ["a", "b"], id="Exists"
        ),
        pytest.param(
            "  selector:\n    matchExpressions:\n      - {key: tier, operator: DoesNotExist}\n",
            ["c", "d"],
            id="DoesNotExist",
        ),
        pytest.param(
            "  selector:\n    matchLabels:\n      app: kafka\n"
            "    matchExpressions:\n      - {key: tier, operator: NotIn, values: [hot]}\n",
            ["b"],
            id="matchLabels and matchExpressions together",
        ),
        pytest.param("  namespaceSelector:\n    matchLabels:\n      team: data\n", ["a", "c"], id="namespaceSelector"),
        pytest.param(
            "  selector:\n    matchLabels:\n      app: kafka\n"
            "  namespaceSelector:\n    matchExpressions:\n      - {key: team, operator: NotIn, values: [data]}\n",
            ["b"],
            id="selector and namespaceSelector",
        ),
        pytest.param(
            "  namespaceSelector:\n    matchExpressions:\n      - {key: team, operator: Exists}\n",
            ["a", "b", "c"],
            id="namespaceSelector Exists",
        ),
    ],
)
def test_select_objects(spec: str, names: list[str]) -> None:
    selected = select_objects(rule(spec), SELECTABLE)
    assert [target.name for target in selected] == names
    assert all(target.kind is TargetKind.PVC for target in selected)


def test_select_objects_keeps_only_the_rules_target_kind() -> None:
    selected = select_objects(rule("  selector:\n    matchLabels:\n      app: kafka\n", action=RESTART), SELECTABLE)
    assert [target.key for target in selected] == ["kafka/kafka-0"]


@pytest.mark.parametrize(
    ("spec", "query"),
    [
        ("  selector:\n    matchLabels:\n      app: kafka\n      tier: data\n", "app=kafka,tier=data"),
        (
            "  selector:\n    matchLabels:\n      app: kafka\n    matchExpressions:\n"
            "      - {key: zone, operator: In, values: [a, b]}\n"
            "      - {key: role, operator: NotIn, values: [test]}\n"
            "      - {key: broker, operator: Exists}\n"
            "      - {key: draining, operator: DoesNotExist}\n",
            "app=kafka,zone in (a,b),role notin (test),broker,!draining",
        ),
        ("", ""),
    ],
    ids=["matchLabels", "every operator", "empty"],
)
def test_a_selector_is_sent_as_the_apis_label_selector_and_read_back(spec: str, query: str) -> None:
    selector = rule(spec).selector
    assert selector.query() == query
    assert LabelSelector.from_query(query) == selector
    labels = {"app": "kafka", "tier": "data", "zone": "b", "role": "prod", "broker": "1"}
    assert LabelSelector.from_query(query).matches(labels)
    assert LabelSelector.from_query(query).matches({**labels, "draining": "yes"}) == ("!draining" not in query)
    assert LabelSelector.from_query("a!=b,c==d").matches({"c": "d"})
    assert not LabelSelector.from_query("a!=b,c==d").matches({"a": "b", "c": "d"})


def test_an_index_of_the_whole_kind_joins_a_selection_as_an_index_of_the_selection_would() -> None:
    """`pod` alone names two brokers of the kind, but one of the selection: that one gets the value."""
    other = broker_object(namespace="other", pod="kafka-0", broker_id=0, labels={"app": "other"})
    brokers = [*BROKERS, other]
    vector = [sample(3.0, pod="kafka-0"), sample(4.0, namespace="kafka", pod="kafka-1"), sample(5.0, pod="gone")]
    whole = IdentityIndex(
        objects=brokers, identity_labels=DEFAULT_IDENTITY_LABELS[TargetKind.BROKER], cluster_wide_applies=True
    )
    selected = BROKERS[:2]

    shared = whole.join(vector, among=selected, members={target.key for target in selected})

    assert shared == join(TargetKind.BROKER, vector, objects=selected)
    assert dict(shared.values) == {"kafka/kafka-0": 3.0, "kafka/kafka-1": 4.0}
    assert whole.join(vector).no_data == {
        "kafka/kafka-0": "series pod=kafka-0 names 2 objects: kafka/kafka-0, other/kafka-0",
        "other/kafka-0": "series pod=kafka-0 names 2 objects: kafka/kafka-0, other/kafka-0",
    }


def test_rules_with_the_same_selectors_share_one_selection_and_join() -> None:
    selector = "  selector:\n    matchLabels:\n      app: kafka\n"
    first, second = rule(selector, name="a"), rule(selector, name="b")
    inventory = InventoryIndex([*PVCS, *BROKERS, *NODES])
    vector = [sample(90.0, namespace="kafka", persistentvolumeclaim="data-kafka-0")]

    one, two = inventory.selection(first), inventory.selection(second)

    assert one is two and [target.key for target in one.objects] == [target.key for target in PVCS]
    assert inventory.join(one, "q", vector) is inventory.join(two, "q", vector)
    assert inventory.join(one, "q", list(vector)) is not inventory.join(one, "q", vector)  # another vector


def test_the_next_snapshot_of_the_same_objects_keeps_its_selections_and_joins_new_vectors_afresh() -> None:
    selector = "  selector:\n    matchLabels:\n      app: kafka\n"
    pvc_rule, node_rule = rule(selector, name="a"), rule(action=RESCHEDULE, name="n")
    first = InventoryIndex([*PVCS, *NODES])
    before, node_before = first.selection(pvc_rule), first.selection(node_rule)
    first.join(before, "q", [sample(90.0, namespace="kafka", persistentvolumeclaim="data-kafka-0")])
    changed_node = replace(NODES[0], labels={"role": "other"})

    second = InventoryIndex([*PVCS, changed_node, *NODES[1:]], previous=first)
    vector = [sample(10.0, namespace="kafka", persistentvolumeclaim="data-kafka-1")]

    assert second.selection(pvc_rule) is before  # the same claims: the same selection and identity index
    assert before.index._resolutions == {}  # the earlier vector is forgotten, not kept alive
    fresh = InventoryIndex(PVCS)
    assert second.join(before, "q", vector) == fresh.join(fresh.selection(pvc_rule), "q", vector)
    assert second.selection(node_rule) is not node_before  # a node's labels changed: selected anew
    assert second.selection(node_rule).objects[0].labels == {"role": "other"}
    assert second.selection(node_rule).index is node_before.index  # its identity did not change
    renamed = replace(NODES[0], name="worker-9", identity={"node": "worker-9", "instance": "worker-9"})
    third = InventoryIndex([*PVCS, renamed, *NODES[1:]], previous=second)
    assert third.selection(node_rule).index is not second.selection(node_rule).index  # another object: indexed anew
    assert third.by_key["worker-9"] is renamed and "worker-0" not in third.by_key  # objects by key: made anew


def test_objects_by_key_are_made_once_per_snapshot_and_kept_while_it_is_the_same() -> None:
    first = InventoryIndex([*PVCS, *NODES])
    assert dict(first.by_key) == {target.key: target for target in [*PVCS, *NODES]}
    assert first.by_key is first.by_key
    assert InventoryIndex([*PVCS, *NODES], previous=first).by_key is first.by_key
    moved = replace(PVCS[0], capacity_bytes=1)
    changed = InventoryIndex([moved, *PVCS[1:], *NODES], previous=first)
    assert changed.by_key is not first.by_key and changed.by_key[moved.key] is moved
    assert InventoryIndex(PVCS, previous=first).by_key.keys() == {target.key for target in PVCS}  # nodes gone


@pytest.mark.parametrize(
    "spec",
    [
        "  selector:\n    matchLabels:\n      app: kafka\n",
        "  selector:\n    matchExpressions:\n      - key: tier\n        operator: In\n        values: [hot, warm]\n",
        "  selector:\n    matchLabels:\n      app: kafka\n  namespaceSelector:\n    matchLabels:\n      env: prod\n",
        "",
    ],
)
def test_a_selection_is_what_each_object_tested_alone_gives_in_the_inventorys_order(spec: str) -> None:
    claims = [
        replace(
            pvc_object(
                namespace=f"ns-{index % 3}",
                name=f"data-{index}",
                labels={"app": ("kafka", "zookeeper")[index % 2], "tier": ("hot", "warm", "cold")[index % 5 % 3]},
                capacity_bytes=None,
            ),
            namespace_labels={"env": "prod" if index % 3 else "dev"},
        )
        for index in range(60)
    ]
    picked = rule(spec, name="sel")

    selected = InventoryIndex([*NODES, *claims]).selection(picked).objects

    one_by_one = [
        target
        for target in claims
        if picked.selector.matches(target.labels)
        and (picked.namespace_selector is None or picked.namespace_selector.matches(target.namespace_labels))
    ]
    assert [target.key for target in selected] == [target.key for target in one_by_one]
    assert select_objects(picked, [*NODES, *claims]) == one_by_one
    assert 0 < len(selected) <= len(claims)


# --- one vector joined to several selections ---------------------------------------------------

RACKED = [
    broker_object(namespace="kafka", pod="kafka-0", broker_id=0, labels={"rack": "a"}),
    broker_object(namespace="kafka", pod="kafka-1", broker_id=1, labels={"rack": "a"}),
    broker_object(namespace="kafka", pod="kafka-2", broker_id=2, labels={"rack": "b"}),
    broker_object(namespace="other", pod="kafka-0", broker_id=0, labels={"rack": "b"}),
]
RACK_A = "  selector:\n    matchLabels:\n      rack: a\n"
BOTH_KAFKA_0 = "series pod=kafka-0 names 2 objects: kafka/kafka-0, other/kafka-0"


def joined_per_selection(vector: Sequence[Sample]) -> tuple[JoinResult, JoinResult]:
    """The vector joined to rack a's brokers, then to every broker, through one inventory (one identity index)."""
    inventory = InventoryIndex(RACKED)
    rack_a = inventory.selection(rule(RACK_A, action=RESTART, name="rack-a"))
    every = inventory.selection(rule(action=RESTART, name="every"))
    assert rack_a.index is every.index
    return inventory.join(rack_a, "q", vector), inventory.join(every, "q", vector)


def test_one_vector_gives_each_selection_its_own_values_ambiguity_and_unmatched_count() -> None:
    vector = [
        sample(3.0, pod="kafka-0"),  # names kafka/kafka-0 and other/kafka-0
        sample(4.0, namespace="kafka", pod="kafka-1"),
        sample(6.0, namespace="other", pod="kafka-0"),  # names other/kafka-0, which the first series names too
        sample(7.0, namespace="kafka", pod="kafka-2"),
        sample(5.0, pod="gone"),
    ]

    rack_a, every = joined_per_selection(vector)

    assert dict(rack_a.values) == {"kafka/kafka-0": 3.0, "kafka/kafka-1": 4.0}
    assert rack_a.ambiguous_objects == frozenset()
    assert dict(rack_a.no_data) == {}
    assert rack_a.unmatched_series == 3
    assert dict(every.values) == {"kafka/kafka-1": 4.0, "kafka/kafka-2": 7.0}
    assert every.ambiguous_objects == frozenset({"kafka/kafka-0", "other/kafka-0"})
    assert dict(every.no_data) == {"kafka/kafka-0": BOTH_KAFKA_0, "other/kafka-0": BOTH_KAFKA_0}
    assert every.unmatched_series == 1
    assert rack_a == join(TargetKind.BROKER, vector, objects=RACKED[:2])
    assert every == join(TargetKind.BROKER, vector, objects=RACKED)


def test_a_series_alone_on_its_object_loses_it_to_a_later_series_naming_it_among_others() -> None:
    vector = [sample(8.0, namespace="kafka", pod="kafka-0"), sample(3.0, pod="kafka-0")]

    rack_a, every = joined_per_selection(vector)

    assert dict(rack_a.values) == {}
    assert dict(rack_a.no_data) == {"kafka/kafka-0": "two series name this object"}
    assert rack_a.unmatched_series == 0
    assert dict(every.values) == {}
    assert dict(every.no_data) == {"kafka/kafka-0": BOTH_KAFKA_0, "other/kafka-0": BOTH_KAFKA_0}
    assert every.ambiguous_objects == frozenset({"kafka/kafka-0", "other/kafka-0"})


def test_a_series_alone_on_an_object_of_one_selection_is_unmatched_in_the_other() -> None:
    vector = [sample(7.0, namespace="kafka", pod="kafka-2"), sample(1.0, broker="1")]

    rack_a, every = joined_per_selection(vector)

    assert dict(rack_a.values) == {"kafka/kafka-1": 1.0}
    assert rack_a.unmatched_series == 1
    assert dict(every.values) == {"kafka/kafka-1": 1.0, "kafka/kafka-2": 7.0}
    assert every.unmatched_series == 0


@pytest.mark.parametrize(
    ("vector", "values", "unmatched", "no_data"),
    [
        pytest.param(
            [sample(1.0, instance="worker-1:9100", job="node-exporter"), sample(2.0, instance="worker-2")],
            {"worker-1": 1.0, "worker-2": 2.0},
            0,
            {},
            id="with and without a port",
        ),
        pytest.param(
            [sample(1.0, instance="worker-1:9100"), sample(2.0, instance="worker-1:9200")],
            {},
            0,
            {"worker-1": "two series name this object"},
            id="two ports of one node",
        ),
        pytest.param(
            [sample(1.0, instance="worker-1:9100:1"), sample(2.0, instance="worker-3:9100")],
            {},
            2,
            {},
            id="two colons are not a port; an unknown node",
        ),
        pytest.param(
            [sample(1.0, instance="worker-9:9100", node="worker-2")],
            {"worker-2": 1.0},
            0,
            {},
            id="node before instance",
        ),
    ],
)
def test_a_node_is_named_by_its_instance_without_the_port(
    vector: list[Sample], values: dict[str, float], unmatched: int, no_data: dict[str, str]
) -> None:
    result = join(TargetKind.NODE, vector)
    assert dict(result.values) == values
    assert result.unmatched_series == unmatched
    assert dict(result.no_data) == no_data


def test_an_identity_of_several_labels_drops_the_port_of_its_instance_only() -> None:
    exporter = TargetObject(kind=TargetKind.NODE, name="n1", identity={"instance": "10.0.0.1", "job": "node:x"})
    vector = [sample(1.0, instance="10.0.0.1:9100", job="node:x"), sample(2.0, instance="10.0.0.1:9100", job="node")]
    result = join(TargetKind.NODE, vector, identity=(("instance", "job"),), objects=[exporter])
    assert dict(result.values) == {"n1": 1.0}
    assert result.unmatched_series == 1


# --- a vector named by one alternative is looked up in bulk, with the same result ------------------

BULK_CASES = {
    "pvcs by claim": [sample(1.0, namespace="kafka", persistentvolumeclaim=f"data-kafka-{n}") for n in (0, 1, 2)],
    "pvcs by pvc": [sample(2.0, namespace="kafka", pvc="data-kafka-0"), sample(3.0, namespace="x", pvc="y")],
    "both alternatives": [
        sample(1.0, namespace="kafka", persistentvolumeclaim="data-kafka-0"),
        sample(2.0, namespace="kafka", pvc="data-kafka-1"),
    ],
    "a duplicate": [sample(float(n), namespace="kafka", persistentvolumeclaim="data-kafka-0") for n in (1, 2)],
    "one without identity": [sample(1.0, namespace="kafka", persistentvolumeclaim="data-kafka-0"), sample(5.0)],
    "brokers by pod": [sample(1.0, pod="kafka-0"), sample(2.0, pod="kafka-1")],
    "brokers by namespace and pod, then by id": [
        sample(1.0, namespace="kafka", pod="kafka-0"),
        sample(2.0, broker="1"),
    ],
    "nodes by instance": [sample(1.0, instance="worker-1:9100"), sample(2.0, instance="worker-2")],
    "empty": [],
}


@pytest.mark.parametrize("case", list(BULK_CASES))
def test_a_vector_looked_up_in_bulk_joins_as_one_looked_up_sample_by_sample(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    vector = BULK_CASES[case]
    objects = [*PVCS, *BROKERS, *RACKED, *NODES]
    kinds = {TargetKind.PVC, TargetKind.BROKER, TargetKind.NODE}

    def joined() -> list[JoinResult]:
        results = []
        for kind in sorted(kinds):
            of_kind = [target for target in objects if target.kind is kind]
            index = IdentityIndex(
                objects=of_kind,
                identity_labels=DEFAULT_IDENTITY_LABELS[kind],
                cluster_wide_applies=kind is TargetKind.BROKER,
            )
            results.append(index.join(vector))
        return results

    in_bulk = joined()
    monkeypatch.setattr(IdentityIndex, "_named_uniformly", lambda _self, _vector: None)
    assert in_bulk == joined()


def test_a_vector_named_by_one_alternative_is_looked_up_in_bulk_and_a_mixed_one_sample_by_sample() -> None:
    def index(kind: TargetKind) -> IdentityIndex:
        return IdentityIndex(objects=OBJECTS[kind], identity_labels=DEFAULT_IDENTITY_LABELS[kind])

    for case, kind in [("pvcs by claim", TargetKind.PVC), ("pvcs by pvc", TargetKind.PVC)]:
        assert index(kind)._named_uniformly(BULK_CASES[case]) is not None, case
    assert index(TargetKind.NODE)._named_uniformly(BULK_CASES["nodes by instance"]) is not None
    for case in ("both alternatives", "one without identity"):
        assert index(TargetKind.PVC)._named_uniformly(BULK_CASES[case]) is None, case


def test_a_released_index_holds_no_vector_and_still_serves_the_next_snapshot() -> None:
    class Vector(list[Sample]):
        """A vector a weak reference can follow."""

    selector = "  selector:\n    matchLabels:\n      app: kafka\n"
    pvc_rule = rule(selector, name="a")
    inventory = InventoryIndex([*PVCS, *NODES])
    selection = inventory.selection(pvc_rule)
    vector = Vector([sample(90.0, namespace="kafka", persistentvolumeclaim="data-kafka-0")])
    joined = inventory.join(selection, "q", vector)
    inventory.answers(selection, "q", joined, Operator.GT, ("80",))
    followed = weakref.ref(vector)
    del vector
    gc.collect()
    assert followed() is not None, "the join cache holds this cycle's vector"

    inventory.release_vectors()
    gc.collect()
    assert followed() is None, "released: no vector is kept"
    later = InventoryIndex([*PVCS, *NODES], previous=inventory)
    assert later.selection(pvc_rule) is selection
    assert later.join(
        selection, "q", [sample(95.0, namespace="kafka", persistentvolumeclaim="data-kafka-1")]
    ).values == {"kafka/data-kafka-1": 95.0}
