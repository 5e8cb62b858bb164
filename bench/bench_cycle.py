"""Benchmark one evaluation cycle of the pure core: 50 rules over 10,000 PVCs, 1,000 brokers, 1,000 nodes.

Why this exists: the design promises one PromQL query per distinct expression per cycle, whatever the
number of objects. What is left is the core's own work: decoding the vectors, joining them to the
objects, testing every condition and stepping the state machine. This benchmark sets that work against
a floor, the time it takes merely to decode the recorded Prometheus answers into Samples, measured in
the same run. A cycle far above its floor points at the core, not at Prometheus.

    .venv/bin/python bench/bench_cycle.py [--runs N] [--seed S]

No Prometheus is involved. The body `/api/v1/query` would return for each distinct expression is
generated once, deterministically (seeded), as JSON bytes in memory: one series per object of the
expression's kind, with a few series missing, a few NaN and a few naming objects that do not exist.
Every cycle decodes those bytes again, as the runtime would. The rules are generated as YAML text and
loaded with the real loader. Each run times the decode floor, a first cycle (no state stored) and a
steady cycle (the same answers one poll later, from the first cycle's states). Only the rules, the
inventory and the recorded bodies are shared between runs; no result is, and within a run only the
states pass from one cycle to the next: those the runtime would store, the ones worth an
AutopilotRuleObject (`ObjectState.worth_keeping`). A quiet object has no stored state and gets none,
so the first cycle differs from the steady one only where objects move (the transitions and plans of
the objects whose conditions hold). The work measured is the real work: every selected object of
every rule is evaluated in both cycles, every condition answered for it (once per selection and
condition, `InventoryIndex.answers`), and every verdict that is not "clear" kept. What is not in the
measured time is building a per-object evaluation record: a cycle's `Evaluations` builds one only
when it is read, as the runtime does for `--audit-evaluations all` or a changed verdict (the summary
line below counts the verdicts, outside the timing). Every rule is given the whole mixed
inventory, indexed once per cycle (`InventoryIndex`), as `run_cycle`'s signature allows, and selects
its own kind. As the runtime's cycle does (agent.runtime.cycle), the steady cycle indexes the
inventory with the first cycle's index as `previous`: the objects are the same, so it keeps their
selections and identity indexes, and joins the new vectors afresh. The first cycle indexes from
nothing.

The Prometheus adapter has no pure "JSON body -> Samples" function (its conversion is a method of the
HTTP client), so `decode` below does the same conversion after `json.loads`.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import random
import resource
import statistics
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import TypeVar

from agent.actions.specs import CATALOG
from agent.core.aliases import KEY_ALIASES
from agent.core.engine import CycleOutcome, distinct_queries, run_cycle, verdicts_by_object
from agent.core.loader import parse_rules
from agent.core.matching import InventoryIndex, TargetObject, broker_object, node_object, pvc_object
from agent.core.rules import Rule, TargetKind
from agent.core.samples import Sample
from agent.core.states import ObjectState, Verdict

SEED = 20240611
T0 = 1_700_000_000.0
"""The first cycle's evaluation time (a Tuesday, 22:13 UTC); the steady cycle runs one poll later."""
POLL_SECONDS = 10.0
GIB = 1024**3

T = TypeVar("T")
States = Mapping[str, Mapping[str, ObjectState]]
"""Rule name -> object key -> state, as the runtime would persist them between cycles."""


# --- the expressions the rules use, and how Prometheus would answer them ---------------------------


@dataclass(frozen=True, kw_only=True)
class ExpressionSpec:
    kind: TargetKind
    labels: str
    """How Prometheus labels the answer's series: kubelet, px, kafka, cluster, ksm or node-exporter."""
    value: Callable[[random.Random], float]
    tests: tuple[tuple[str, tuple[str, ...]], ...]
    """(operator, values) choices; rules rotate through them so that thresholds vary."""
    alias: str | None = None
    key: str | None = None

    @property
    def query(self) -> str:
        return KEY_ALIASES[self.alias] if self.alias else (self.key or "").strip()

    def yaml_key(self) -> str:
        return f"keyAlias: {self.alias}" if self.alias else f"key: {json.dumps(self.key)}"


def _percent(rng: random.Random) -> float:
    return min(100.0, rng.betavariate(5, 2) * 100)


def _small_count(rng: random.Random) -> float:
    return float(rng.choice((0, 0, 0, 0, 0, 0, 0, 1, 2, 7)))


PVC_EXPRESSIONS = (
    ExpressionSpec(
        kind=TargetKind.PVC,
        alias="VolumeUsagePercentage",
        labels="kubelet",
        value=_percent,
        tests=(("Gt", ("80",)), ("GtEq", ("85",)), ("Gt", ("90",)), ("InRange", ("75", "95"))),
    ),
    ExpressionSpec(
        kind=TargetKind.PVC,
        alias="PxVolumeUsagePercentage",
        labels="px",
        value=_percent,
        tests=(("Gt", ("70",)), ("Gt", ("82.5",)), ("GtEq", ("88",))),
    ),
    ExpressionSpec(
        kind=TargetKind.PVC,
        key="100 * (kubelet_volume_stats_inodes_used / kubelet_volume_stats_inodes)",
        labels="kubelet",
        value=lambda rng: rng.uniform(0, 100),
        tests=(("Gt", ("90",)), ("NotInRange", ("0", "95"))),
    ),
    ExpressionSpec(
        kind=TargetKind.PVC,
        key="kubelet_volume_stats_available_bytes",
        labels="kubelet",
        value=lambda rng: float(rng.randrange(0, 500) * GIB + rng.randrange(0, GIB)),
        tests=(("Lt", ("50Gi",)), ("LtEq", ("100Gi",)), ("Lt", ("20G",))),
    ),
    ExpressionSpec(
        kind=TargetKind.PVC,
        key="predict_linear(kubelet_volume_stats_available_bytes[6h], 4 * 3600)",
        labels="kubelet",
        value=lambda rng: rng.uniform(-50 * GIB, 400 * GIB),
        tests=(("Lt", ("0",)), ("Lt", ("10Gi",))),
    ),
    ExpressionSpec(
        kind=TargetKind.PVC,
        key="rate(kubelet_volume_stats_used_bytes[15m])",
        labels="kubelet",
        value=lambda rng: rng.expovariate(1 / (512 * 1024)),
        tests=(("Gt", ("1Mi",)), ("Gt", ("2e6",))),
    ),
)

BROKER_EXPRESSIONS = (
    ExpressionSpec(
        kind=TargetKind.BROKER,
        alias="UnderReplicatedPartitions",
        labels="kafka",
        value=_small_count,
        tests=(("Gt", ("0",)), ("GtEq", ("2",))),
    ),
    ExpressionSpec(
        kind=TargetKind.BROKER,
        alias="UnderMinIsrPartitions",
        labels="kafka",
        value=_small_count,
        tests=(("Gt", ("0",)),),
    ),
    ExpressionSpec(
        kind=TargetKind.BROKER,
        alias="IsrShrinkRate",
        labels="kafka",
        value=lambda rng: rng.choice((0.0, 0.0, 0.0, rng.uniform(0, 0.5))),
        tests=(("Gt", ("0.1",)), ("Gt", ("0.05",))),
    ),
    ExpressionSpec(
        kind=TargetKind.BROKER,
        alias="LeaderCountDeviationPercentage",
        labels="kafka",
        value=lambda rng: rng.gauss(0, 8),
        tests=(("Lt", ("-10",)), ("NotInRange", ("-15", "15"))),
    ),
    ExpressionSpec(
        kind=TargetKind.BROKER,
        alias="PreferredReplicaImbalance",
        labels="cluster",
        value=lambda rng: float(rng.randrange(0, 40)),
        tests=(("Gt", ("0",)),),
    ),
    ExpressionSpec(
        kind=TargetKind.BROKER,
        alias="OfflinePartitions",
        labels="cluster",
        value=lambda rng: 0.0,
        tests=(("Gt", ("0",)),),
    ),
)

NODE_EXPRESSIONS = (
    ExpressionSpec(
        kind=TargetKind.NODE,
        key='kube_node_status_condition{condition="Ready",status="true"}',
        labels="ksm",
        value=lambda rng: 0.0 if rng.random() < 0.02 else 1.0,
        tests=(("Lt", ("1",)), ("In", ("0",))),
    ),
    ExpressionSpec(
        kind=TargetKind.NODE,
        key="100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)",
        labels="node-exporter",
        value=lambda rng: rng.uniform(10, 99),
        tests=(("Gt", ("95",)), ("GtEq", ("90",))),
    ),
    ExpressionSpec(
        kind=TargetKind.NODE,
        key='1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m]))',
        labels="node-exporter",
        value=lambda rng: rng.uniform(0, 1),
        tests=(("Gt", ("0.9",)), ("Gt", ("0.95",))),
    ),
    ExpressionSpec(
        kind=TargetKind.NODE,
        key='node_filesystem_avail_bytes{mountpoint="/"} / node_filesystem_size_bytes{mountpoint="/"}',
        labels="node-exporter",
        value=lambda rng: rng.uniform(0, 1),
        tests=(("Lt", ("0.05",)), ("LtEq", ("0.1",))),
    ),
)

EXPRESSIONS = PVC_EXPRESSIONS + BROKER_EXPRESSIONS + NODE_EXPRESSIONS


# --- the inventory ------------------------------------------------------------------------------------


def build_objects(rng: random.Random, *, pvcs: int, brokers: int, nodes: int) -> tuple[TargetObject, ...]:
    """PVCs, brokers and nodes with varied labels, as the inventory's watch cache would hold them."""
    objects: list[TargetObject] = []
    sizes = (100 * GIB, 200 * GIB, 400 * GIB, 800 * GIB, 1024 * GIB, 2048 * GIB, 4096 * GIB)
    for index in range(pvcs):
        namespace = f"kafka-{index % 20:02d}"
        labels = {
            "app": "kafka" if rng.random() < 0.9 else "zookeeper",
            "tier": rng.choice(("hot", "warm", "cold")),
            "team": f"t{rng.randrange(10)}",
        }
        if rng.random() < 0.05:
            labels["autopilot"] = "disabled"
        capacity = None if rng.random() < 0.002 else rng.choice(sizes)
        pvc = pvc_object(namespace=namespace, name=f"data-{index:05d}", labels=labels, capacity_bytes=capacity)
        objects.append(replace(pvc, namespace_labels={"env": "prod" if index % 20 < 15 else "staging"}))
    for index in range(brokers):
        cluster = index % 10
        broker = broker_object(
            namespace=f"kafka-c{cluster}",
            pod=f"kafka-{index // 10}",
            broker_id=index // 10,
            labels={"app": "kafka", "cluster": f"c{cluster}", "rack": f"r{index % 3}"},
        )
        objects.append(replace(broker, namespace_labels={"env": "prod" if cluster < 8 else "staging"}))
    for index in range(nodes):
        role = "kafka" if index % 4 else "general"
        objects.append(node_object(name=f"node-{index:04d}", labels={"role": role, "zone": f"z{index % 3}"}))
    return tuple(objects)


# --- the rules ----------------------------------------------------------------------------------------

_PVC_SELECTORS = (
    "",
    "  selector:\n    matchLabels:\n      app: kafka\n",
    "  selector:\n    matchLabels:\n      app: kafka\n      tier: hot\n",
    "  selector:\n    matchExpressions:\n      - key: team\n        operator: In\n        values: [t0, t1, t2]\n",
    "  selector:\n    matchLabels:\n      app: kafka\n    matchExpressions:\n"
    "      - key: autopilot\n        operator: DoesNotExist\n",
    "  selector:\n    matchExpressions:\n      - key: tier\n        operator: NotIn\n        values: [cold]\n"
    "      - key: team\n        operator: Exists\n",
)
_BROKER_SELECTORS = (
    "  selector:\n    matchLabels:\n      app: kafka\n",
    "  selector:\n    matchExpressions:\n      - key: cluster\n        operator: In\n        values: [c0, c1, c2]\n",
    "  selector:\n    matchLabels:\n      rack: r1\n",
)
_NODE_SELECTORS = (
    "",
    "  selector:\n    matchLabels:\n      role: kafka\n",
    "  selector:\n    matchExpressions:\n      - key: zone\n        operator: NotIn\n        values: [z2]\n",
)
_PVC_ACTIONS = (
    '        scalepercentage: "50"\n        maxsize: "2Ti"\n',
    '        scalepercentage: "100"\n        maxsize: "1Ti"\n',
    '        scalepercentage: "20"\n        maxsize: "4Ti"\n        minstep: "50Gi"\n',
)


def _rule_yaml(
    *,
    name: str,
    index: int,
    api_version: str,
    selector: str,
    expressions: Sequence[ExpressionSpec],
    action: str,
    params: str,
) -> str:
    lines = [
        f"apiVersion: {api_version}",
        "kind: AutopilotRule",
        "metadata:",
        f"  name: {name}",
        "spec:",
    ]
    text = "\n".join(lines) + "\n" + selector
    if index % 4 == 3:
        text += "  namespaceSelector:\n    matchLabels:\n      env: prod\n"
    text += f"  pollInterval: {10 + index % 3 * 10}\n  actionsCoolDownPeriod: {('5m', '300', '15m')[index % 3]}\n"
    text += "  enforcement: " + ("required", "required", "dryRun", "approvalRequired", "preferred")[index % 5] + "\n"
    if index % 7 == 6:
        text += '  actionWindow:\n    - days: [Sat, Sun]\n      start: "01:00"\n      end: "05:00"\n'
    text += "  conditions:\n"
    if index % 3 == 2:
        text += "    for: 30s\n"
    if len(expressions) > 1 and index % 2:
        text += "    requiredMatches: 1\n"
    text += "    expressions:\n"
    for position, spec in enumerate(expressions):
        operator, values = spec.tests[(index + position) % len(spec.tests)]
        text += f"      - {spec.yaml_key()}\n        operator: {operator}\n        values: {json.dumps(list(values))}\n"
    text += f"  actions:\n    - name: {action}\n"
    if params:
        text += "      params:\n" + params
    return text


def rules_yaml(*, pvc_rules: int, broker_rules: int, node_rules: int) -> str:
    """The rules as one multi-document YAML text; expressions repeat across rules, so queries dedup."""
    documents = []
    for index in range(pvc_rules):
        chosen = [PVC_EXPRESSIONS[index % len(PVC_EXPRESSIONS)]]
        if index % 3 == 1:
            chosen.append(PVC_EXPRESSIONS[(index + 2) % len(PVC_EXPRESSIONS)])
        documents.append(
            _rule_yaml(
                name=f"bench-pvc-{index:02d}",
                index=index,
                api_version=("kafka-autopilot.io/v1alpha1", "autopilot.libopenstorage.org/v1alpha1")[index % 2],
                selector=_PVC_SELECTORS[index % len(_PVC_SELECTORS)],
                expressions=chosen,
                action="openstorage.io.action.volume/resize",
                params=_PVC_ACTIONS[index % len(_PVC_ACTIONS)],
            )
        )
    for index in range(broker_rules):
        chosen = [BROKER_EXPRESSIONS[index % len(BROKER_EXPRESSIONS)]]
        if index % 2 == 0:
            chosen.append(BROKER_EXPRESSIONS[(index + 1) % len(BROKER_EXPRESSIONS)])
        restart = index % 3 == 0
        documents.append(
            _rule_yaml(
                name=f"bench-broker-{index:02d}",
                index=index,
                api_version="kafka-autopilot.io/v1alpha1",
                selector=_BROKER_SELECTORS[index % len(_BROKER_SELECTORS)],
                expressions=chosen,
                action="kafka-autopilot.io.action." + ("broker/restart" if restart else "kafka/rebalance-leaders"),
                params='        minisrmargin: "1"\n' if restart else f'        batchsize: "{25 * (1 + index % 4)}"\n',
            )
        )
    for index in range(node_rules):
        chosen = [NODE_EXPRESSIONS[index % len(NODE_EXPRESSIONS)]]
        if index % 2:
            chosen.append(NODE_EXPRESSIONS[(index + 1) % len(NODE_EXPRESSIONS)])
        documents.append(
            _rule_yaml(
                name=f"bench-node-{index:02d}",
                index=index,
                api_version="kafka-autopilot.io/v1alpha1",
                selector=_NODE_SELECTORS[index % len(_NODE_SELECTORS)],
                expressions=chosen,
                action="kafka-autopilot.io.action.node/cordon-reschedule",
                params=f'        grace: "{40 + index * 5}"\n        mode: force-delete\n'
                "        brokerlabel: app=kafka\n",
            )
        )
    return "---\n".join(documents)


# --- the recorded Prometheus answers ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Recorded:
    """One query's recorded `/api/v1/query` body and what went into it."""

    body: bytes
    series: int
    missing: int
    """Objects of the expression's kind with no series."""
    nan: int
    unmatched: int
    """Series that name no object of the inventory."""


def _prometheus_number(value: float) -> str:
    """A sample value as Prometheus writes it: shortest digits, no exponent, NaN and +Inf spelled out."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = repr(value)
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    return text.removesuffix(".0")


def _series_labels(style: str, target: TargetObject, rng: random.Random) -> dict[str, str]:
    namespace = target.namespace or ""
    if style == "kubelet":
        node = f"node-{rng.randrange(1000):04d}"
        return {
            "endpoint": "https-metrics",
            "instance": f"10.0.{rng.randrange(256)}.{rng.randrange(256)}:10250",
            "job": "kubelet",
            "metrics_path": "/metrics",
            "namespace": namespace,
            "node": node,
            "persistentvolumeclaim": target.name,
            "service": "kube-prometheus-kubelet",
        }
    if style == "px":
        return {
            "instance": f"10.0.{rng.randrange(256)}.{rng.randrange(256)}:9001",
            "job": "portworx",
            "namespace": namespace,
            "pvc": target.name,
            "volumeid": str(rng.randrange(10**17, 10**18)),
        }
    if style == "kafka":
        return {
            "container": "kafka",
            "endpoint": "tcp-prometheus",
            "instance": f"10.1.{rng.randrange(256)}.{rng.randrange(256)}:9404",
            "job": "kafka-jmx",
            "namespace": namespace,
            "pod": target.name,
            "service": "kafka-brokers",
        }
    if style == "ksm":
        return {
            "__name__": "kube_node_status_condition",
            "condition": "Ready",
            "instance": "10.2.0.5:8080",
            "job": "kube-state-metrics",
            "node": target.name,
            "status": "true",
        }
    return {"instance": f"{target.name}:9100", "job": "node-exporter"}


def _stranger(kind: TargetKind, number: int) -> TargetObject:
    """An object Prometheus still reports but the inventory no longer holds (deleted, other cluster)."""
    if kind is TargetKind.PVC:
        return pvc_object(namespace="retired", name=f"data-gone-{number}", labels={}, capacity_bytes=None)
    if kind is TargetKind.BROKER:
        return broker_object(namespace="kafka-old", pod=f"kafka-{number}", broker_id=number, labels={})
    return node_object(name=f"node-retired-{number}", labels={})


def _few(population: int, *, per: int) -> int:
    """One in `per`, and at least one when there is anything at all, so small workloads have oddities too."""
    return max(1, population // per) if population else 0


def record_response(
    rng: random.Random, spec: ExpressionSpec, objects: Sequence[TargetObject], *, now: float
) -> Recorded:
    """The body Prometheus would return for `spec.query`: one series per object, with a few oddities."""
    if spec.labels == "cluster":
        result = [{"metric": {}, "value": [now, _prometheus_number(spec.value(rng))]}] if objects else []
        body = json.dumps(
            {"status": "success", "data": {"resultType": "vector", "result": result}}, separators=(",", ":")
        )
        return Recorded(body=body.encode(), series=len(result), missing=0, nan=0, unmatched=0)
    missing = set(rng.sample(range(len(objects)), _few(len(objects), per=100)))
    present = [target for position, target in enumerate(objects) if position not in missing]
    nan = set(rng.sample(range(len(present)), min(len(present), _few(len(objects), per=200))))
    strangers = [_stranger(spec.kind, number) for number in range(_few(len(objects), per=200))]
    result = []
    for position, target in enumerate(present + strangers):
        value = float("nan") if position in nan else spec.value(rng)
        result.append({"metric": _series_labels(spec.labels, target, rng), "value": [now, _prometheus_number(value)]})
    rng.shuffle(result)
    body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}, separators=(",", ":"))
    return Recorded(
        body=body.encode(), series=len(result), missing=len(missing), nan=len(nan), unmatched=len(strangers)
    )


# --- the workload -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Workload:
    rules: tuple[Rule, ...]
    objects: tuple[TargetObject, ...]
    recorded: Mapping[str, Recorded]
    """Distinct query -> its recorded answer, in first-seen order."""

    @property
    def responses(self) -> Mapping[str, bytes]:
        return {query: recorded.body for query, recorded in self.recorded.items()}

    @property
    def series_count(self) -> int:
        return sum(recorded.series for recorded in self.recorded.values())


def build_workload(
    *,
    pvcs: int = 10_000,
    brokers: int = 1_000,
    nodes: int = 1_000,
    pvc_rules: int = 30,
    broker_rules: int = 12,
    node_rules: int = 8,
    seed: int = SEED,
) -> Workload:
    """Objects, rules (loaded from generated YAML) and one recorded answer per distinct query."""
    rng = random.Random(seed)
    objects = build_objects(rng, pvcs=pvcs, brokers=brokers, nodes=nodes)
    loaded = parse_rules(
        rules_yaml(pvc_rules=pvc_rules, broker_rules=broker_rules, node_rules=node_rules),
        file="bench-rules.yaml",
        catalog=CATALOG,
    )
    if loaded.problems:
        raise RuntimeError("generated rules do not load:\n" + "\n".join(str(problem) for problem in loaded.problems))
    specs = {spec.query: spec for spec in EXPRESSIONS}
    recorded = {}
    for query in distinct_queries(loaded.rules):
        spec = specs[query]
        of_kind = [target for target in objects if target.kind is spec.kind]
        recorded[query] = record_response(rng, spec, of_kind, now=T0 - 0.5)
    return Workload(rules=loaded.rules, objects=objects, recorded=recorded)


# --- one cycle ----------------------------------------------------------------------------------------


def decode(responses: Mapping[str, bytes]) -> dict[str, tuple[Sample, ...]]:
    """Each body into its instant vector, converting labels and values as the Prometheus adapter does."""
    vectors: dict[str, tuple[Sample, ...]] = {}
    for query, body in responses.items():
        document = json.loads(body)
        data = document["data"]
        if document.get("status") != "success" or data.get("resultType") != "vector":
            raise ValueError(f"`{query}`: not a successful instant vector")
        shared: dict[str, str] = {}  # one object per distinct label value, as the adapter
        share = shared.setdefault
        vectors[query] = tuple(
            Sample(
                labels={str(k): share(v, v) if isinstance(v, str) else str(v) for k, v in item["metric"].items()},
                value=float(item["value"][1]),
            )
            for item in data["result"]
        )
    return vectors


class Indexes:
    """A run's last inventory index, passed to its next cycle's as `previous`, as the runtime keeps it."""

    def __init__(self) -> None:
        self.last: InventoryIndex | None = None

    def next(self, objects: Sequence[TargetObject]) -> InventoryIndex:
        self.last = InventoryIndex(objects, previous=self.last)
        return self.last


def run_rules(
    workload: Workload,
    vectors: Mapping[str, Sequence[Sample]],
    *,
    states: States,
    now: float,
    indexes: Indexes | None = None,
) -> dict[str, CycleOutcome]:
    """Every rule over the whole inventory with this cycle's vectors; rule name -> outcome.

    The inventory is indexed once per cycle (`InventoryIndex`, inside the measured time), as the runtime
    does for one snapshot: rules with the same selectors share their selection, identity index and joins.
    With the run's `indexes`, the previous cycle's index is its `previous`."""
    inventory = (indexes or Indexes()).next(workload.objects)
    outcomes = {
        rule.name: run_cycle(
            rule=rule,
            objects=inventory,
            vectors=vectors,
            states=states.get(rule.name, {}),
            now=now,
            catalog=CATALOG,
        )
        for rule in workload.rules
    }
    inventory.release_vectors()  # as the runtime does once its cycle is over
    return outcomes


def cycle(workload: Workload, *, states: States, now: float, indexes: Indexes | None = None) -> dict[str, CycleOutcome]:
    """One full cycle: decode this cycle's answers, then evaluate every rule."""
    return run_rules(workload, decode(workload.responses), states=states, now=now, indexes=indexes)


def next_states(outcomes: Mapping[str, CycleOutcome], *, now: float) -> States:
    """What the runtime would store after a first cycle: only the states worth an AutopilotRuleObject."""
    return {
        name: {key: state for key, state in outcome.states.items() if state.worth_keeping(now)}
        for name, outcome in outcomes.items()
    }


# --- measuring ----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Timing:
    wall: float
    cpu: float


def timed(work: Callable[[], T]) -> tuple[T, Timing]:
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return result, Timing(wall=time.perf_counter() - wall, cpu=time.process_time() - cpu)


def traced_peak(work: Callable[[], object]) -> int:
    """Peak bytes allocated while `work` runs (tracemalloc; slow, so never in a timed run)."""
    gc.collect()
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def max_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


@dataclass(frozen=True, kw_only=True)
class Run:
    decode: Timing
    first: Timing
    steady: Timing


def one_run(workload: Workload) -> tuple[Run, str, str]:
    """Decode floor, first cycle, steady cycle; only the states outlive a cycle, as in the runtime."""
    indexes = Indexes()
    decode_time = timed(lambda: decode(workload.responses))[1]  # the floor's vectors are not kept
    first, first_time = timed(lambda: cycle(workload, states={}, now=T0, indexes=indexes))
    previous, first_summary = next_states(first, now=T0), _summary(first)
    del first
    steady, steady_time = timed(lambda: cycle(workload, states=previous, now=T0 + POLL_SECONDS, indexes=indexes))
    steady_summary = _summary(steady)
    return Run(decode=decode_time, first=first_time, steady=steady_time), first_summary, steady_summary


def _mib(size: float) -> str:
    return f"{size / 2**20:,.1f} MiB"


def _table(rows: Sequence[Sequence[str]], *, numbers: bool = True, indent: str = "  ") -> Iterator[str]:
    """Rows as aligned columns; columns after the first are right-aligned when they hold numbers."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [
            cell.rjust(width) if numbers else cell.ljust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
        ]
        yield (indent + "  ".join(cells)).rstrip()


def _summary(outcomes: Mapping[str, CycleOutcome]) -> str:
    verdicts = Counter(
        verdict for outcome in outcomes.values() for _, verdict in verdicts_by_object(outcome.evaluations)
    )
    no_data, holding = verdicts[Verdict.NO_DATA], verdicts[Verdict.HOLDS]
    transitions = sum(len(outcome.transitions) for outcome in outcomes.values())
    planned = sum(len(outcome.planned) for outcome in outcomes.values())
    previews = sum(len(outcome.previews) for outcome in outcomes.values())
    declined = sum(len(outcome.declined) for outcome in outcomes.values())
    return (
        f"{verdicts.total():,} evaluations ({holding:,} hold, {no_data:,} no data), {transitions:,} transitions, "
        f"{planned:,} planned, {previews:,} previews, {declined:,} declined"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="measured runs after one warm-up (default 5)")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the generated workload")
    options = parser.parse_args(argv)
    if options.runs < 1:
        parser.error("--runs must be at least 1")

    started = time.perf_counter()
    workload = build_workload(seed=options.seed)
    build_seconds = time.perf_counter() - started
    rss_after_build = max_rss_bytes()

    one_run(workload)  # warm-up: imports, caches of the interpreter, first allocations
    runs: list[Run] = []
    first_summary = steady_summary = ""
    for _ in range(options.runs):
        run, first_summary, steady_summary = one_run(workload)
        runs.append(run)
    rss_after_runs = max_rss_bytes()

    decode_peak = traced_peak(lambda: decode(workload.responses))
    first_peak = traced_peak(lambda: cycle(workload, states={}, now=T0))
    indexes = Indexes()
    previous = next_states(cycle(workload, states={}, now=T0, indexes=indexes), now=T0)
    steady_peak = traced_peak(lambda: cycle(workload, states=previous, now=T0 + POLL_SECONDS, indexes=indexes))

    by_kind = {kind: sum(1 for rule in workload.rules if rule.target is kind) for kind in TargetKind}
    objects_by_kind = {kind: sum(1 for target in workload.objects if target.kind is kind) for kind in TargetKind}
    expressions = sum(len(rule.conditions.expressions) for rule in workload.rules)
    recorded = workload.recorded.values()

    def median(pick: Callable[[Run], float]) -> float:
        return statistics.median(pick(run) for run in runs)

    def row(label: str, pick: Callable[[Run], Timing]) -> list[str]:
        walls = [pick(run).wall for run in runs]
        return [
            label,
            f"{statistics.median(walls):.3f}",
            f"{median(lambda run: pick(run).cpu):.3f}",
            f"{min(walls):.3f}",
            f"{max(walls):.3f}",
            f"{median(lambda run: pick(run).wall / run.decode.wall):.2f}x",
            f"{median(lambda run: pick(run).cpu / run.decode.cpu):.2f}x",
        ]

    print("kafka-autopilot bench: one evaluation cycle of the pure core (agent.core.engine.run_cycle)")
    print(
        f"python {platform.python_version()} ({platform.python_implementation()}) on {platform.system()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs; {options.runs} runs after 1 warm-up; seed {options.seed}"
    )
    print()
    print("workload")
    facts = [
        [
            "rules",
            f"{len(workload.rules)} ({by_kind[TargetKind.PVC]} PVC, {by_kind[TargetKind.BROKER]} broker, "
            f"{by_kind[TargetKind.NODE]} node): {expressions} expressions, {len(workload.recorded)} distinct queries",
        ],
        [
            "objects",
            f"{len(workload.objects):,} ({objects_by_kind[TargetKind.PVC]:,} PVC, "
            f"{objects_by_kind[TargetKind.BROKER]:,} broker, {objects_by_kind[TargetKind.NODE]:,} node)",
        ],
        [
            "recorded answers",
            f"{len(workload.recorded)} bodies, {_mib(sum(len(r.body) for r in recorded))}, "
            f"{workload.series_count:,} series ({sum(r.missing for r in recorded):,} objects missing, "
            f"{sum(r.nan for r in recorded):,} NaN, {sum(r.unmatched for r in recorded):,} unmatched)",
        ],
        ["first cycle", first_summary],
        ["steady cycle", steady_summary],
        ["built in", f"{build_seconds:.2f} s (not measured below)"],
    ]
    for line in _table(facts, numbers=False):
        print(line)
    print()
    print(f"time in seconds (median of {options.runs} runs; ratios per run, then median)")
    rows = [
        ["", "wall", "cpu", "wall min", "wall max", "wall/floor", "cpu/floor"],
        row("decode floor (json -> Samples)", lambda run: run.decode),
        row(f"first cycle (decode + {len(workload.rules)} rules)", lambda run: run.first),
        row(f"steady cycle (decode + {len(workload.rules)} rules)", lambda run: run.steady),
    ]
    for line in _table(rows):
        print(line)
    print()
    print("memory")
    memory = [
        ["peak RSS (ru_maxrss) after building", _mib(rss_after_build)],
        ["peak RSS (ru_maxrss) after the runs", _mib(rss_after_runs)],
        ["tracemalloc peak, decode floor", _mib(decode_peak)],
        ["tracemalloc peak, first cycle", _mib(first_peak)],
        ["tracemalloc peak, steady cycle", _mib(steady_peak)],
    ]
    for line in _table(memory, numbers=False):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
