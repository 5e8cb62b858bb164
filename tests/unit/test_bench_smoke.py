"""The cycle benchmark's workload, run once at a tiny size, so the benchmark cannot rot unnoticed.

Only structural facts are checked (what was decoded, who was evaluated); timing is the benchmark's
business and is never asserted.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType

import pytest
from helpers import load_script

from agent.core.engine import distinct_queries, run_cycle
from agent.core.matching import select_objects
from agent.core.rules import Rule
from agent.core.states import RuleState

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_cycle.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script(BENCH)


@pytest.mark.parametrize(
    "size",
    [
        {"pvcs": 20, "brokers": 0, "nodes": 0, "pvc_rules": 2, "broker_rules": 0, "node_rules": 0},
        {"pvcs": 20, "brokers": 6, "nodes": 6, "pvc_rules": 2, "broker_rules": 2, "node_rules": 2},
    ],
)
def test_one_small_cycle(bench: ModuleType, size: dict[str, int]) -> None:
    workload = bench.build_workload(**size)
    rules_wanted = size["pvc_rules"] + size["broker_rules"] + size["node_rules"]
    assert len(workload.rules) == rules_wanted

    vectors = bench.decode(workload.responses)
    assert list(vectors) == distinct_queries(workload.rules)
    assert sum(len(vector) for vector in vectors.values()) == workload.series_count
    for query, vector in vectors.items():
        recorded = workload.recorded[query]
        assert len(vector) == recorded.series
        assert sum(1 for sample in vector if math.isnan(sample.value)) == recorded.nan
        if vector and vector[0].labels:  # one series per object of the kind, less the missing, plus strangers
            kind = next(rule.target for rule in workload.rules if query in rule_queries(rule))
            of_kind = sum(1 for target in workload.objects if target.kind is kind)
            assert recorded.series == of_kind - recorded.missing + recorded.unmatched

    indexes = bench.Indexes()
    first = bench.run_rules(workload, vectors, states={}, now=bench.T0, indexes=indexes)
    stored = bench.next_states(first, now=bench.T0)
    steady = bench.run_rules(workload, vectors, states=stored, now=bench.T0 + bench.POLL_SECONDS, indexes=indexes)
    afresh = bench.run_rules(workload, vectors, states=stored, now=bench.T0 + bench.POLL_SECONDS)
    assert steady == afresh  # the kept index decides as a new one
    assert all(state.worth_keeping(bench.T0) for states in stored.values() for state in states.values())
    assert sum(map(len, stored.values())) < sum(len(outcome.states) for outcome in first.values())
    for rule in workload.rules:  # one index shared by every rule decides as a private one per rule
        alone = run_cycle(
            rule=rule, objects=workload.objects, vectors=vectors, states={}, now=bench.T0, catalog=bench.CATALOG
        )
        assert alone == first[rule.name]
    for rule in workload.rules:
        selected = {target.key for target in select_objects(rule, workload.objects)}
        assert selected, f"{rule.name} selects nothing at this size"
        for outcomes in (first, steady):
            outcome = outcomes[rule.name]
            assert len(outcome.evaluations) == len(selected)
            assert {evaluation.object for evaluation in outcome.evaluations} == selected
            assert set(outcome.states) == selected
        assert all(state.state is not RuleState.INITIALIZING for state in steady[rule.name].states.values())


def rule_queries(rule: Rule) -> set[str]:
    return {expression.query for expression in rule.conditions.expressions}
